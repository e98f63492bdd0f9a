import BPF
import Memory

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
        if walk.mode != .user, let bpf = walk.memory as? BPFMemory {
            do {
                return try inKernel(head: head, link: link, bpf, &walk)
            } catch let error as BPFError where walk.mode == .auto && walk.entries.isEmpty {
                // The kernel refused the walk program (or its run): per-entry reads, below.
                _ = error
            }
        }
        guard walk.mode != .kernel else { throw WalkError.noKernelWalk(walk.helper, reader: walk.memory.name) }
        var node = try walk.pointer(at: head + link)
        while node != head {
            guard node != 0 else { throw WalkError.nullNext(walk.helper, after: walk.entries.count) }
            guard try walk.add(node) else { return }
            walk.copyFields(ofNode: node)
            node = try walk.pointer(at: node &+ link)
        }
    }
}

extension ListWalker {
    /// The ring followed inside the kernel (Memory/BPFListWalk), a batch of nodes per program run; kreach
    /// keeps the seen set and the bound on the addresses it gets back.
    static func inKernel(head: UInt64, link: UInt64, _ bpf: BPFMemory, _ walk: inout Walk) throws {
        try chain(first: walk.pointer(at: head + link), end: head, link: link, bpf, &walk)
    }

    /// Follows the pointer at `link` from `first` until `end` (the head of a ring; 0 for an hlist, whose
    /// NULL is then its end; nil for an hlist_nulls, which ends at an odd "nulls" value) inside the kernel;
    /// NULL before a non-zero `end` is an error.
    static func chain(first: UInt64, end head: UInt64?, link: UInt64, _ bpf: BPFMemory, _ walk: inout Walk) throws {
        // Field offsets from the node: entry + offset = node - linkOffset + offset.
        let fields = walk.fields.map { BPFListWalk.Field(offset: $0.offset &- Int32(truncatingIfNeeded: walk.linkOffset), size: $0.size) }
        let chain = try BPFListWalk.cached(nextOffset: Int32(link), fields: fields, ending: head == nil ? .nulls : .node,
                                           batch: walk.chainBatch, in: &bpf.listWalks)
        let (visited, end) = try chain.walk(first: first, head: head ?? 0, maxEntries: walk.maxEntries + 1)
        guard try walk.add(chain: visited) else { return }
        switch end {
        case .complete, .limit: return
        case .loop(let node): throw WalkError.loop(walk.helper, node: node, after: walk.entries.count)
        case .nullNext: throw WalkError.nullNext(walk.helper, after: walk.entries.count)
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
