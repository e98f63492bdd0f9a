/// include/linux/llist.h: `llist_for_each_entry` over a `struct llist_head` (first) and its
/// `struct llist_node`s (next), ending at NULL; the newest entry first (llist_add pushes at the head).
/// The same NULL-terminated chain as an hlist, so it walks in the kernel too.
enum LListWalker: ContainerWalker {
    static let helper = ContainerHelper.llistForEachEntry
    static let headTypes = ["llist_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        try HListWalker.chain(head: head, first: walk.offset(of: "first", in: "llist_head"), next: walk.offset(of: "next", in: "llist_node"), &walk)
    }
}
