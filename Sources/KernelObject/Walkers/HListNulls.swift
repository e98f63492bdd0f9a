import BPF
import Memory

/// include/linux/list_nulls.h: `hlist_nulls_for_each_entry` over a `struct hlist_nulls_head` (first) and
/// its `struct hlist_nulls_node`s (next). The list ends at a "nulls" marker, an odd pointer value
/// (`is_a_nulls()`: bit 0 set; the rest is the list's own value, e.g. a TCP ehash bucket number).
/// Inside the kernel when the reader is BPF (the chain walk of BPFListWalk with the nulls end test).
enum HListNullsWalker: ContainerWalker {
    static let helper = ContainerHelper.hlistNullsForEachEntry
    static let headTypes = ["hlist_nulls_head"]

    /// `is_a_nulls()`.
    static func isNulls(_ pointer: UInt64) -> Bool { pointer & 1 != 0 }

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let next = try walk.offset(of: "next", in: "hlist_nulls_node")
        try chain(from: walk.pointer(at: head + walk.offset(of: "first", in: "hlist_nulls_head")), next: next, &walk)
    }

    /// Follows the chain from its first node (or nulls marker) to the nulls marker; a NULL on the way is an error.
    static func chain(from first: UInt64, next: UInt64, _ walk: inout Walk) throws {
        var node = first
        if walk.mode != .user, let bpf = walk.memory as? BPFMemory {
            do {
                return try ListWalker.chain(first: node, end: nil, link: next, bpf, &walk)
            } catch let error as BPFError where walk.mode == .auto && walk.entries.isEmpty {
                _ = error
            }
        }
        guard walk.mode != .kernel else { throw WalkError.noKernelWalk(walk.helper, reader: walk.memory.name) }
        while !isNulls(node) {
            guard node != 0 else { throw WalkError.nullNext(walk.helper, after: walk.entries.count) }
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node &+ next)
        }
    }
}
