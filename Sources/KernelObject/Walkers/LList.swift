/// include/linux/llist.h: `llist_for_each_entry` over a `struct llist_head` (first) and its
/// `struct llist_node`s (next), ending at NULL; the newest entry first (llist_add pushes at the head).
enum LListWalker: ContainerWalker {
    static let helper = ContainerHelper.llistForEachEntry
    static let headTypes = ["llist_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let next = try walk.offset(of: "next", in: "llist_node")
        var node = try walk.pointer(at: head + walk.offset(of: "first", in: "llist_head"))
        while node != 0 {
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node + next)
        }
    }
}
