import BPF
import Memory

/// include/linux/list.h: `hlist_for_each_entry` over a `struct hlist_head` (first) and its
/// `struct hlist_node`s (next), ending at NULL.
enum HListWalker: ContainerWalker {
    static let helper = ContainerHelper.hlistForEachEntry
    static let headTypes = ["hlist_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        try chain(head: head, first: walk.offset(of: "first", in: "hlist_head"), next: walk.offset(of: "next", in: "hlist_node"), &walk)
    }

    /// Follows a NULL-terminated chain: the pointer at `first` in the head, then the one at `next` in each node
    /// (hlist, llist); inside the kernel when the reader is BPF.
    static func chain(head: UInt64, first: UInt64, next: UInt64, _ walk: inout Walk) throws {
        try chain(from: walk.pointer(at: head + first), next: next, &walk)
    }

    /// The same chain from its first node (`node`, NULL for an empty one).
    static func chain(from first: UInt64, next: UInt64, _ walk: inout Walk) throws {
        var node = first
        if walk.mode != .user, let bpf = walk.memory as? BPFMemory {
            // In the kernel: the chain ends at NULL, the `end` no node equals.
            do {
                return try ListWalker.chain(first: node, end: 0, link: next, bpf, &walk)
            } catch let error as BPFError where walk.mode == .auto && walk.entries.isEmpty {
                _ = error
            }
        }
        guard walk.mode != .kernel else { throw WalkError.noKernelWalk(walk.helper, reader: walk.memory.name) }
        while node != 0 {
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node &+ next)
        }
    }
}
