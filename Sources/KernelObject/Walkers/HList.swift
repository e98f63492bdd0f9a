/// include/linux/list.h: `hlist_for_each_entry` over a `struct hlist_head` (first) and its
/// `struct hlist_node`s (next), ending at NULL.
enum HListWalker: ContainerWalker {
    static let helper = ContainerHelper.hlistForEachEntry
    static let headTypes = ["hlist_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let next = try walk.offset(of: "next", in: "hlist_node")
        var node = try walk.pointer(at: head + walk.offset(of: "first", in: "hlist_head"))
        while node != 0 {
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node + next)
        }
    }
}
