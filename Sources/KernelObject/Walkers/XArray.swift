import Memory

/// include/linux/xarray.h: `xa_for_each(TYPE, XA)` over a `struct xarray` (radix trees are xarrays since
/// 4.20: `struct radix_tree_root` is `#define`d to it, and `address_space.i_pages` is one). Yields every present
/// entry with its index, smallest first, like the kernel's `xa_for_each` (xas_find): NULL, sibling, retry and
/// zero entries are skipped; a multi-index entry once, at its first index; value entries (`xa_is_value`) are
/// entries too. Each `struct xa_node` is read whole (one read for its slots), and a node's child nodes all at
/// once before the first is visited (`KernelMemory.read(many:)`: one BPF run for up to 64 nodes).
enum XArrayWalker: ContainerWalker {
    static let helper = ContainerHelper.xaForEach
    static let headTypes = ["xarray"]
    /// Levels below the head: 64-bit indices in chunks of at least 4 bits (XA_CHUNK_SHIFT, 6 unless
    /// CONFIG_BASE_SMALL) need at most 16.
    static let maxDepth = 16

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        try entries(xarray: head, indexBase: 0, &walk)
    }

    /// Walks the xarray at `xarray`, adding `indexBase` to every index (an IDR's `idr_base`).
    static func entries(xarray: UInt64, indexBase: UInt64, _ walk: inout Walk) throws {
        let layout = try Layout(walk)
        let root = try walk.pointer(at: xarray + walk.offset(of: "xa_head", in: "xarray"))
        if Entry.isNode(root) {
            var fetched: [UInt64: [UInt8]] = [:]
            _ = try node(Entry.node(root), base: 0, expectedShift: nil, depth: 0, indexBase: indexBase, layout, &fetched, &walk)
        } else if root != 0, !Entry.isInternal(root) {
            _ = walk.add(entry: root, index: indexBase)  // a single entry at index 0 lives in xa_head itself
        }
    }

    /// The xarray's encoding of slot values (xarray.h: xa_is_internal, xa_is_node, xa_is_sibling, xa_is_value).
    enum Entry {
        /// Internal entries have the low two bits 10.
        static func isInternal(_ e: UInt64) -> Bool { e & 3 == 2 }
        /// A pointer to a child `struct xa_node` (internal, above 4096).
        static func isNode(_ e: UInt64) -> Bool { isInternal(e) && e > 4096 }
        static func node(_ e: UInt64) -> UInt64 { e - 2 }
        /// `xa_mk_sibling(offset)`: an internal entry whose value is a slot number (a multi-index entry's tail).
        static func isSibling(_ e: UInt64, chunk: Int) -> Bool { isInternal(e) && e < UInt64(chunk - 1) << 2 | 2 }
    }

    /// Offsets and sizes of `struct xa_node` from vmlinux BTF.
    struct Layout {
        let shift: UInt64, slots: UInt64
        /// XA_CHUNK_SIZE: slots per node; XA_CHUNK_SHIFT: its log2.
        let chunk: Int, chunkShift: Int

        init(_ walk: Walk) throws {
            shift = try walk.offset(of: "shift", in: "xa_node")
            slots = try walk.offset(of: "slots", in: "xa_node")
            chunk = try walk.arrayCount(of: "slots", in: "xa_node")
            guard chunk >= 2, chunk.nonzeroBitCount == 1 else {
                throw WalkError.unsupportedLayout(walk.helper, "struct xa_node.slots has \(chunk) slots, not a power of two")
            }
            chunkShift = chunk.trailingZeroBitCount
        }
    }

    /// Visits the node at `address` covering indices from `base`: its entries in slot order, its children
    /// depth-first. False when the walk must stop (`--max`). `fetched`: nodes read ahead, by address (a
    /// node's bytes are taken out when it is visited; one that could not be read ahead is read alone, and a
    /// fault is then reported as such).
    static func node(_ address: UInt64, base: UInt64, expectedShift: Int?, depth: Int, indexBase: UInt64,
                     _ layout: Layout, _ fetched: inout [UInt64: [UInt8]], _ walk: inout Walk) throws -> Bool {
        guard depth < maxDepth else { throw WalkError.tooDeep(walk.helper, limit: maxDepth) }
        try walk.visit(node: address)
        // Each entry sits under at most maxDepth nodes (plus a margin for nodes holding only reserved
        // entries): more is garbage read as nodes.
        let limit = walk.maxEntries > Int.max / (2 * maxDepth) ? Int.max : walk.maxEntries * maxDepth + 4096
        guard walk.nodesVisited <= limit else {
            throw WalkError.badNode(walk.helper, node: address, "more than \(limit) nodes for at most \(walk.maxEntries) entries")
        }
        let size = Int(walk.vmlinux.pointerSize)
        let nodeSize = Int(layout.slots) + layout.chunk * size
        let bytes = try fetched.removeValue(forKey: address) ?? walk.memory.read(address, count: nodeSize)
        let shift = Int(bytes[Int(layout.shift)])
        if let expectedShift, shift != expectedShift {
            throw WalkError.badNode(walk.helper, node: address, "shift \(shift) where its parent implies \(expectedShift)")
        }
        guard shift < 64, shift % layout.chunkShift == 0 else {
            throw WalkError.badNode(walk.helper, node: address, "shift \(shift) is not a multiple of \(layout.chunkShift) below 64")
        }
        let slots = walk.words(bytes, at: Int(layout.slots), count: layout.chunk)
        let children = shift > 0 ? slots.filter(Entry.isNode).map(Entry.node) : []
        // Read ahead only: a reader that fails here leaves each child to its own read (and error).
        if children.count > 1, walk.mode != .user, let reads = try? walk.memory.read(many: children, count: nodeSize) {
            for (child, read) in zip(children, reads) { fetched[child] = read }
        }
        for (slot, e) in slots.enumerated() where e != 0 {
            let index = base &+ UInt64(slot) << UInt64(shift)
            if Entry.isNode(e) {
                guard shift > 0 else { throw WalkError.badNode(walk.helper, node: address, "a child node below a leaf (shift 0)") }
                guard try node(Entry.node(e), base: index, expectedShift: shift - layout.chunkShift, depth: depth + 1,
                               indexBase: indexBase, layout, &fetched, &walk) else { return false }
            } else if !Entry.isInternal(e) {
                // Pointer or value entry (internal ones: sibling, retry, zero, are skipped like xas_find does).
                guard walk.add(entry: e, index: index &+ indexBase) else { return false }
            }
        }
        return true
    }
}

/// include/linux/idr.h: `idr_for_each_entry(TYPE, IDR)` over a `struct idr`: the xarray `idr_rt`, each id
/// being its index plus `idr_base` (idr_init_base).
enum IDRWalker: ContainerWalker {
    static let helper = ContainerHelper.idrForEachEntry
    static let headTypes = ["idr"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let base = try walk.memory.read(head + walk.offset(of: "idr_base", in: "idr"), count: 4)
        try XArrayWalker.entries(xarray: head + walk.offset(of: "idr_rt", in: "idr"), indexBase: littleEndianWord(base[...]), &walk)
    }
}
