import Memory

/// include/linux/maple_tree.h: `mt_for_each(TYPE, MT)` over a `struct maple_tree` (a process's VMAs:
/// `mm_struct.mm_mt`, where the kernel has it). Yields every present entry once, with the first index of its
/// range, smallest first, like `mt_for_each` (mt_find): NULL ranges and reserved (internal) entries are skipped.
/// Each `struct maple_node` is read whole.
enum MapleTreeWalker: ContainerWalker {
    static let helper = ContainerHelper.mtForEach
    static let headTypes = ["maple_tree"]
    /// MAPLE_HEIGHT_MAX is 31.
    static let maxDepth = 32

    /// `enum maple_type`: the node type encoded in bits 3–6 of a node pointer (mte_node_type).
    enum NodeType: UInt64 {
        case dense = 0, leaf64, range64, arange64
        var isLeaf: Bool { self == .dense || self == .leaf64 }
    }

    /// MAPLE_NODE_MASK: nodes are 256-byte aligned; the low byte of a node pointer holds its type.
    static let nodeMask: UInt64 = 0xff

    /// The layout of one node type (slots and pivots in `struct maple_node`).
    struct Kind {
        let slots: UInt64, slotCount: Int
        let pivots: UInt64, pivotCount: Int
        /// `maple_metadata.end`: the last used slot, for nodes that keep it.
        let metaEnd: UInt64?
    }

    struct Layout {
        let nodeSize: Int
        let dense: Kind, range: Kind, arange: Kind

        init(_ walk: Walk) throws {
            let r = try walk.offset(of: "mr64", in: "maple_node"), a = try walk.offset(of: "ma64", in: "maple_node")
            let end = try walk.offset(of: "end", in: "maple_metadata")
            func kind(_ s: String, at base: UInt64, meta: Bool) throws -> Kind {
                Kind(slots: base + (try walk.offset(of: "slot", in: s)), slotCount: try walk.arrayCount(of: "slot", in: s),
                     pivots: base + (try walk.offset(of: "pivot", in: s)), pivotCount: try walk.arrayCount(of: "pivot", in: s),
                     metaEnd: meta ? base + (try walk.offset(of: "meta", in: s)) + end : nil)
            }
            range = try kind("maple_range_64", at: r, meta: true)
            arange = try kind("maple_arange_64", at: a, meta: true)
            dense = Kind(slots: try walk.offset(of: "slot", in: "maple_node"), slotCount: try walk.arrayCount(of: "slot", in: "maple_node"),
                         pivots: 0, pivotCount: 0, metaEnd: nil)
            nodeSize = try walk.size(of: "maple_node")
            guard range.slotCount == range.pivotCount + 1, arange.slotCount == arange.pivotCount + 1, nodeSize <= 4096 else {
                throw WalkError.unsupportedLayout(walk.helper, "struct maple_node's slots and pivots are not in the shape this walker knows")
            }
        }
    }

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let root = try walk.pointer(at: head + walk.offset(of: "ma_root", in: "maple_tree"))
        // The root is an encoded node marked MAPLE_ROOT_NODE (bit 1, like an xarray node entry: mte_mk_root).
        if XArrayWalker.Entry.isNode(root) {
            var fetched: [UInt64: [UInt8]] = [:]
            _ = try node(root, min: 0, max: UInt64.max, depth: 0, try Layout(walk), &fetched, &walk)
        } else if root != 0, !XArrayWalker.Entry.isInternal(root) {
            _ = walk.add(entry: root, index: 0)  // a tree of one entry at index 0 keeps it in ma_root
        }
    }

    /// Visits the encoded node `enode` covering [min, max]; false when the walk must stop (`--max`). A node's
    /// children are read at once before the first is visited (`KernelMemory.read(many:)`), kept in `fetched`
    /// by address until then; one that could not be read ahead is read alone (a fault is then reported).
    static func node(_ enode: UInt64, min: UInt64, max: UInt64, depth: Int, _ layout: Layout, _ fetched: inout [UInt64: [UInt8]],
                     _ walk: inout Walk) throws -> Bool {
        guard depth < maxDepth else { throw WalkError.tooDeep(walk.helper, limit: maxDepth) }
        let address = enode & ~nodeMask
        guard let type = NodeType(rawValue: (enode >> 3) & 0xf) else {
            throw WalkError.badNode(walk.helper, node: address, "unknown node type \((enode >> 3) & 0xf)")
        }
        try walk.visit(node: address)
        let bytes = try fetched.removeValue(forKey: address) ?? walk.memory.read(address, count: layout.nodeSize)
        // A node removed from the tree points its parent at itself (ma_dead_node).
        if walk.words(bytes, at: 0, count: 1)[0] & ~nodeMask == address {
            throw WalkError.badNode(walk.helper, node: address, "a dead node (freed while read)")
        }
        let kind: Kind
        switch type {
        case .dense: kind = layout.dense
        case .leaf64, .range64: kind = layout.range
        case .arange64: kind = layout.arange
        }
        let slots = walk.words(bytes, at: Int(kind.slots), count: kind.slotCount)
        let pivots = walk.words(bytes, at: Int(kind.pivots), count: kind.pivotCount)
        // The last used slot (ma_data_end).
        var end = kind.slotCount - 1
        if type == .dense {
            end = Swift.min(end, Int(Swift.min(max &- min, UInt64(end))))
        } else if type == .arange64 || pivots[kind.pivotCount - 1] == 0, let meta = kind.metaEnd {
            end = Int(bytes[Int(meta)])
        } else if pivots[kind.pivotCount - 1] == max {
            end = kind.pivotCount - 1
        }
        guard end < kind.slotCount else { throw WalkError.badNode(walk.helper, node: address, "metadata end \(end) past its \(kind.slotCount) slots") }
        if !type.isLeaf, walk.mode != .user {
            let children = slots[0...end].filter { $0 & ~nodeMask > 4096 }.map { $0 & ~nodeMask }
            // Read ahead only: a reader that fails here leaves each child to its own read (and error).
            if children.count > 1, let reads = try? walk.memory.read(many: children, count: layout.nodeSize) {
                for (child, read) in zip(children, reads) { fetched[child] = read }
            }
        }
        var first = min
        for i in 0...end {
            let last = type == .dense ? first : (i < kind.pivotCount ? pivots[i] : max)
            guard last >= first, last <= max else {
                throw WalkError.badNode(walk.helper, node: address, "pivot \(i) out of order")
            }
            let e = slots[i]
            if type.isLeaf {
                if e != 0, !XArrayWalker.Entry.isInternal(e) {
                    guard walk.add(entry: e, index: first) else { return false }
                }
            } else if e != 0 {
                // Child slots hold encoded nodes (mte_mk_node: the node | its type << 3), not xarray node entries.
                guard e & ~nodeMask > 4096 else { throw WalkError.badNode(walk.helper, node: address, "slot \(i) is not a child node") }
                guard try node(e, min: first, max: last, depth: depth + 1, layout, &fetched, &walk) else { return false }
            }
            if last == max { break }
            first = last + 1
        }
        return true
    }
}
