/// include/linux/list_nulls.h: `hlist_nulls_for_each_entry` over a `struct hlist_nulls_head` (first) and
/// its `struct hlist_nulls_node`s (next). The list ends at a "nulls" marker, an odd pointer value
/// (`is_a_nulls()`: bit 0 set; the rest is the list's own value, e.g. a TCP ehash bucket number).
enum HListNullsWalker: ContainerWalker {
    static let helper = ContainerHelper.hlistNullsForEachEntry
    static let headTypes = ["hlist_nulls_head"]

    /// `is_a_nulls()`.
    static func isNulls(_ pointer: UInt64) -> Bool { pointer & 1 != 0 }

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let next = try walk.offset(of: "next", in: "hlist_nulls_node")
        var node = try walk.pointer(at: head + walk.offset(of: "first", in: "hlist_nulls_head"))
        while !isNulls(node) {
            guard node != 0 else { throw WalkError.nullNext(walk.helper, after: walk.entries.count) }
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node + next)
        }
    }
}
