/// include/linux/list.h: `struct list_head` rings, `list_for_each_entry` (next) and
/// `list_for_each_entry_reverse` (prev). The head is not an entry.
enum ListWalker: ContainerWalker {
    static let helper = ContainerHelper.listForEachEntry
    static let headTypes = ["list_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        try ring(head: head, link: walk.offset(of: "next", in: "list_head"), &walk)
    }

    /// Follows the pointer at `link` in each list_head from `head` until it comes back to `head`.
    static func ring(head: UInt64, link: UInt64, _ walk: inout Walk) throws {
        var node = try walk.pointer(at: head + link)
        while node != head {
            guard node != 0 else { throw WalkError.nullNext(walk.helper, after: walk.entries.count) }
            guard try walk.add(node) else { return }
            node = try walk.pointer(at: node + link)
        }
    }
}

/// `list_for_each_entry_reverse`: the same ring through `prev`, last entry first.
enum ListReverseWalker: ContainerWalker {
    static let helper = ContainerHelper.listForEachEntryReverse
    static let headTypes = ["list_head"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        try ListWalker.ring(head: head, link: walk.offset(of: "prev", in: "list_head"), &walk)
    }
}
