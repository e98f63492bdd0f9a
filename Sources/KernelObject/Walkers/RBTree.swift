/// include/linux/rbtree.h: `rbtree_inorder_for_each_entry` (drgn's name; the kernel has
/// rbtree_postorder_for_each_entry_safe and rb_first/rb_next) over a `struct rb_root` or
/// `struct rb_root_cached`, smallest key first. Iterative, with an explicit stack bounded by `maxDepth`.
enum RBTreeWalker: ContainerWalker {
    static let helper = ContainerHelper.rbtreeInorderForEachEntry
    static let headTypes = ["rb_root", "rb_root_cached"]
    /// A red-black tree of 2^64 nodes is at most 128 deep; deeper is corrupt memory.
    static let maxDepth = 256

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        // rb_root_cached embeds the rb_root (rb_root) next to the cached leftmost node.
        let root = walk.headType == "rb_root_cached" ? head + (try walk.offset(of: "rb_root", in: "rb_root_cached")) : head
        let left = try walk.offset(of: "rb_left", in: "rb_node"), right = try walk.offset(of: "rb_right", in: "rb_node")
        var stack: [UInt64] = []
        var node = try walk.pointer(at: root + walk.offset(of: "rb_node", in: "rb_root"))
        while node != 0 || !stack.isEmpty {
            while node != 0 {
                guard stack.count < maxDepth else { throw WalkError.tooDeep(walk.helper, limit: maxDepth) }
                stack.append(node)
                node = try walk.pointer(at: node + left)
            }
            guard let top = stack.popLast() else { return }
            guard try walk.add(top) else { return }
            node = try walk.pointer(at: top + right)
        }
    }
}
