import Memory
import BTF

/// The kernel's container-walking macros kreach evaluates (`list_for_each_entry(TYPE, HEAD, MEMBER)` and
/// friends), named as in the kernel headers. Each has a walker in its own file, one per kernel header.
public enum ContainerHelper: String, CaseIterable, Sendable, CustomStringConvertible {
    /// include/linux/list.h
    case listForEachEntry = "list_for_each_entry"
    case listForEachEntryReverse = "list_for_each_entry_reverse"
    /// include/linux/list.h (hlist)
    case hlistForEachEntry = "hlist_for_each_entry"
    /// include/linux/list_nulls.h
    case hlistNullsForEachEntry = "hlist_nulls_for_each_entry"
    /// include/linux/hashtable.h: `hash_for_each(TYPE, TABLE, MEMBER[, BUCKETS])` over an array of hlist or
    /// hlist_nulls heads
    case hashForEach = "hash_for_each"
    /// include/linux/rbtree.h
    case rbtreeInorderForEachEntry = "rbtree_inorder_for_each_entry"
    /// include/linux/llist.h
    case llistForEachEntry = "llist_for_each_entry"
    /// include/linux/xarray.h (radix trees are xarrays since 4.20): `xa_for_each(TYPE, XA)`
    case xaForEach = "xa_for_each"
    /// include/linux/idr.h: `idr_for_each_entry(TYPE, IDR)`
    case idrForEachEntry = "idr_for_each_entry"
    /// include/linux/maple_tree.h: `mt_for_each(TYPE, MT)`
    case mtForEach = "mt_for_each"
    /// include/linux/cpumask.h: `for_each_cpu(MASK)`, the CPU numbers set in a struct cpumask
    case forEachCpu = "for_each_cpu"
    /// include/linux/find.h: `for_each_set_bit(ADDR, NBITS)`, the numbers of the bits set in a bitmap
    case forEachSetBit = "for_each_set_bit"

    /// The macro's name, as written in an expression.
    public var macro: String { rawValue }
    public var description: String { rawValue }

    /// The walker that implements the macro.
    var walker: any ContainerWalker.Type {
        switch self {
        case .listForEachEntry: return ListWalker.self
        case .listForEachEntryReverse: return ListReverseWalker.self
        case .hlistForEachEntry: return HListWalker.self
        case .hlistNullsForEachEntry: return HListNullsWalker.self
        case .hashForEach: return HashWalker.self
        case .rbtreeInorderForEachEntry: return RBTreeWalker.self
        case .llistForEachEntry: return LListWalker.self
        case .xaForEach: return XArrayWalker.self
        case .idrForEachEntry: return IDRWalker.self
        case .mtForEach: return MapleTreeWalker.self
        case .forEachCpu: return CPUMaskWalker.self
        case .forEachSetBit: return BitmapWalker.self
        }
    }

    /// What the macro takes, as written in an expression.
    public enum Arguments: Sendable {
        /// `(TYPE, HEAD, MEMBER)`: entries linked through MEMBER (list_for_each_entry).
        case typeHeadMember
        /// `(TYPE, ROOT)`: the container stores pointers to TYPE, or values of a scalar TYPE, by index (xa_for_each).
        case typeHead
        /// `(MASK)`: the container yields numbers (for_each_cpu).
        case head
        /// `(ADDR, NBITS)`: numbers from the first NBITS bits at ADDR (for_each_set_bit).
        case headCount
    }

    public var arguments: Arguments {
        switch self {
        case .xaForEach, .idrForEachEntry, .mtForEach: return .typeHead
        case .forEachCpu: return .head
        case .forEachSetBit: return .headCount
        default: return .typeHeadMember
        }
    }

    /// Takes a count after its other arguments: NBITS (required), or a hash table's BUCKETS (optional: an
    /// array's length is its own).
    public var takesCount: Bool { self == .forEachSetBit || self == .hashForEach }

    /// Yields numbers (bit or CPU numbers), not entries in memory.
    public var yieldsNumbers: Bool { self == .forEachCpu || self == .forEachSetBit }

    /// Walks some of their chains inside the kernel (BPF), with show's scalar `--fields` copied along.
    var walksInKernel: Bool {
        switch self {
        case .listForEachEntry, .listForEachEntryReverse, .hlistForEachEntry, .hlistNullsForEachEntry, .llistForEachEntry, .hashForEach:
            return true
        default: return false
        }
    }

    /// The byte offset and type of `member` in vmlinux's `struct structure` (a link struct: list_head.next).
    public static func member(_ member: String, in structure: String, vmlinux: BTF) throws -> (offset: UInt64, type: CType) {
        for id in vmlinux.lookup(structure) where (try? vmlinux.kind(of: id)) == .structure {
            if let m = try CType.btf(vmlinux, id).member(member) { return (UInt64(m.bitOffset / 8), m.type) }
        }
        throw WalkError.missingMember(structure: structure, member: member)
    }

    /// The BTF struct names a head may have (`list_head`).
    public var headTypes: [String] { walker.headTypes }

    /// Walks the container whose head (a struct `headType`, one of `headTypes`) is at `head`: the entry
    /// addresses (node - `linkOffset`) in the macro's order, at most `maxEntries`, and notes (a walk cut short).
    /// A loop, a NULL where the container has none, or a tree deeper than 256 is an error.
    public func walk(head: UInt64, headType: String, linkOffset: UInt64, memory: KernelMemory, vmlinux: BTF,
                     maxEntries: Int, mode: WalkMode = .auto) throws -> (entries: [UInt64], warnings: [String]) {
        let w = try walk(head: head, headType: headType, linkOffset: linkOffset, memory: memory, vmlinux: vmlinux,
                         maxEntries: maxEntries, mode: mode, fields: [])
        return (w.entries, w.warnings)
    }

    /// The same walk, also copying `fields` (offsets from the entry, scalars of 1–8 bytes) of each entry of a
    /// list (`Walk.fieldValues`; empty for other containers unless the walk runs in the kernel).
    func walk(head: UInt64, headType: String, linkOffset: UInt64, memory: KernelMemory, vmlinux: BTF,
              maxEntries: Int, mode: WalkMode, fields: [BPFListWalk.Field], bitLimit: Int? = nil, buckets: Int? = nil) throws -> Walk {
        var w = Walk(helper: self, memory: memory, vmlinux: vmlinux, headType: headType, linkOffset: linkOffset, maxEntries: maxEntries)
        w.mode = mode
        w.fields = fields
        w.bitLimit = bitLimit
        w.buckets = buckets
        if mode == .kernel, !walksInKernel {
            throw WalkError.noKernelWalk(self, reader: memory.name)
        }
        try walker.walk(head: head, &w)
        w.gatherFields()
        return w
    }
}

/// Walks one kind of kernel container from the address of its head, yielding the address of each
/// node (the link member inside an entry), in the macro's order.
protocol ContainerWalker {
    static var helper: ContainerHelper { get }
    /// The BTF struct names (without `struct `) the head may have.
    static var headTypes: [String] { get }
    /// Visits the nodes from `head` (a struct of one of `headTypes`, named by `walk.headType`), adding each
    /// to `walk` until the container ends or `walk.add` says to stop.
    static func walk(head: UInt64, _ walk: inout Walk) throws
}

/// Why a walk stopped short: the structure in memory is not a well-formed container.
public enum WalkError: Error, CustomStringConvertible, Equatable {
    /// A node was reached twice.
    case loop(ContainerHelper, node: UInt64, after: Int)
    /// A next pointer was NULL where the container never has one.
    case nullNext(ContainerHelper, after: Int)
    /// An rbtree deeper than `RBTreeWalker.maxDepth`.
    case tooDeep(ContainerHelper, limit: Int)
    /// vmlinux BTF lacks a struct member the walker reads (`struct rb_node` without `rb_left`).
    case missingMember(structure: String, member: String)
    /// `--walk=kernel` where the walker or the memory reader has no in-kernel walk.
    case noKernelWalk(ContainerHelper, reader: String)
    /// A tree node that contradicts its parent (an xa_node's shift, a maple node's type): corrupt, or changed
    /// while read.
    case badNode(ContainerHelper, node: UInt64, String)
    /// vmlinux BTF lacks a struct the walker reads, or has it in a shape the walker does not know.
    case unsupportedLayout(ContainerHelper, String)

    public var description: String {
        switch self {
        case let .loop(h, node, after): return "\(h.macro): the list loops back to 0x\(String(node, radix: 16)) after \(after) entries"
        case let .nullNext(h, after): return "\(h.macro): NULL next pointer after \(after) entries"
        case let .tooDeep(h, limit): return "\(h.macro): tree deeper than \(limit) (corrupt?)"
        case let .missingMember(s, m): return "vmlinux BTF has no struct \(s) with a member \(m)"
        case let .noKernelWalk(h, reader): return "\(h.macro): no in-kernel walk here (memory reader \(reader); list_for_each_entry[_reverse], hlist_for_each_entry, hlist_nulls_for_each_entry, llist_for_each_entry and hash_for_each through bpf only); use --walk=user or auto"
        case let .badNode(h, node, why): return "\(h.macro): bad node at 0x\(String(node, radix: 16)): \(why) (corrupt, or changed while read)"
        case let .unsupportedLayout(h, why): return "\(h.macro): \(why)"
        }
    }
}

/// Where a walk follows its pointers: inside the kernel (one BPF program run per batch of nodes,
/// Memory/BPFListWalk) or one read per pointer from kreach. `auto` walks in the kernel when the reader is BPF.
public enum WalkMode: String, CaseIterable, Sendable {
    case auto, kernel, user
}

/// One walk in progress: the memory, the layout facts, the bounds, and what was collected.
struct Walk {
    let helper: ContainerHelper
    let memory: KernelMemory
    /// vmlinux BTF, for the offsets of the kernel's link structs (list_head.next, rb_node.rb_left, ...).
    let vmlinux: BTF
    /// The head's struct name (one of the walker's `headTypes`).
    let headType: String
    /// Offset of the link member inside an entry: entry = node - linkOffset (container_of).
    let linkOffset: UInt64
    /// Entries collected at most; more stops the walk with a warning.
    let maxEntries: Int
    /// Where the pointers are followed.
    var mode = WalkMode.auto
    /// Bits of a bitmap that count (nr_cpu_ids for a cpumask: the kernel leaves the bits past it undefined;
    /// for_each_set_bit's NBITS).
    var bitLimit: Int?
    /// Heads in a hash table (hash_for_each's BUCKETS, or its array's length).
    var buckets: Int?
    /// Nodes per run of an in-kernel chain walk (BPFListWalk's batch; fewer for a hash table's short chains).
    var chainBatch = 1024
    /// Fields to copy per entry in an in-kernel walk (offsets from the entry).
    var fields: [BPFListWalk.Field] = []
    /// Their values when the walk ran in the kernel (`BPFListWalk.Visited.values`: `fields.count` per entry,
    /// each field's bytes little-endian, zero-extended), for the entries in `fieldRows`.
    private(set) var fieldValues: [UInt64] = []
    /// Where each entry's values start in `fieldValues`, by the entry's position in `entries` (-1: none copied);
    /// entries past its end have none either.
    private(set) var fieldRows: [Int] = []
    private(set) var entries: [UInt64] = []
    /// Each entry's index (xarray index, IDR id, maple range start, hash bucket) for indexed containers; empty otherwise.
    private(set) var indices: [UInt64] = []
    private(set) var warnings: [String] = []
    /// `maxEntries` was reached: the walk stopped (walkers of several chains stop them all).
    private(set) var stopped = false
    private var seen = AddressSet()

    init(helper: ContainerHelper, memory: KernelMemory, vmlinux: BTF, headType: String, linkOffset: UInt64, maxEntries: Int) {
        self.helper = helper
        self.memory = memory
        self.vmlinux = vmlinux
        self.headType = headType
        self.linkOffset = linkOffset
        self.maxEntries = maxEntries
    }

    /// Adds the entry containing `node`; false when `maxEntries` is reached (the walk should stop).
    /// A node seen before is a loop: an error.
    mutating func add(_ node: UInt64) throws -> Bool {
        guard seen.insert(node).inserted else { throw WalkError.loop(helper, node: node, after: entries.count) }
        if entries.count >= maxEntries {
            warnings.append("\(helper.macro): stopped after \(maxEntries) entries (--max)")
            stopped = true
            return false
        }
        entries.append(node &- linkOffset)
        return true
    }

    /// Adds the entries of a chain walked in the kernel (`visited`: nodes and their copied fields' values), until
    /// `maxEntries`; false when it is reached. The walk's only chain needs no seen set of its own here: each node
    /// is in `visited` once (BPFListWalk's); a hash table's chains are checked against each other.
    mutating func add(chain visited: BPFListWalk.Visited) throws -> Bool {
        let before = entries.count
        for node in visited.nodes {
            if helper == .hashForEach { guard seen.insert(node).inserted else { throw WalkError.loop(helper, node: node, after: entries.count) } }
            if entries.count >= maxEntries {
                warnings.append("\(helper.macro): stopped after \(maxEntries) entries (--max)")
                stopped = true
                break
            }
            entries.append(node &- linkOffset)
        }
        let added = entries.count - before
        if visited.width > 0 {
            if fieldRows.count < before { fieldRows += repeatElement(-1, count: before - fieldRows.count) }
            let first = fieldValues.count
            fieldRows += (0..<added).lazy.map { first + $0 * visited.width }
            // The first chain's values are taken as they are (no copy: fewer pages touched).
            if fieldValues.isEmpty && added == visited.count { fieldValues = visited.values } else { fieldValues += visited.values.prefix(added * visited.width) }
        }
        return !stopped
    }

    /// The copied `fields` of every entry, read after the walk in batches (`KernelMemory.read(many:)`, one BPF
    /// run per batch): for the walkers whose pointers kreach follows itself (trees, indexed containers). One read
    /// per entry covers all the fields when they lie within a page, else one per field. An entry that can't be
    /// read (an xarray value entry, a fault) gets no row: the caller's own read then says why. Not with
    /// `--walk user`, whose per-entry reads are the baseline.
    mutating func gatherFields() {
        guard !fields.isEmpty, fieldValues.isEmpty, !entries.isEmpty, mode != .user,
              let low = fields.map({ Int64($0.offset) }).min(), let high = fields.map({ Int64($0.offset) + Int64($0.size) }).max() else { return }
        let readable = entries.map { $0 >= 4096 && $0 & 1 == 0 }
        let addresses = zip(entries, readable).compactMap { $1 ? $0 : nil }
        // Each field's value per readable entry, or nil.
        var columns: [[UInt64?]] = []
        func decode(_ bytes: [UInt8], at position: Int, size: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<size { v |= UInt64(bytes[position + i]) << (8 * UInt64(i)) }
            return v
        }
        // A reader that fails as a whole (not one address) copies nothing: the caller reads each field itself.
        if high - low <= Int64(BPFGather.maxSize) {
            guard let spans = try? memory.read(many: addresses.map { $0 &+ UInt64(bitPattern: low) }, count: Int(high - low)) else { return }
            for f in fields {
                let at = Int(Int64(f.offset) - low)
                columns.append(spans.map { $0.map { decode($0, at: at, size: f.size) } })
            }
        } else {
            for f in fields {
                guard let values = try? memory.read(many: addresses.map { $0 &+ UInt64(bitPattern: Int64(f.offset)) }, count: f.size) else { return }
                columns.append(values.map { $0.map { decode($0, at: 0, size: f.size) } })
            }
        }
        var k = 0
        fieldRows.reserveCapacity(entries.count)
        fieldValues.reserveCapacity(addresses.count * fields.count)
        for ok in readable {
            guard ok else { fieldRows.append(-1); continue }
            let values = columns.compactMap { $0[k] }
            k += 1
            if values.count == fields.count {
                fieldRows.append(fieldValues.count)
                fieldValues += values
            } else {
                fieldRows.append(-1)
            }
        }
    }

    /// In a walk kreach follows itself (a dump, or per-entry reads), `fields` of the entry holding `node`,
    /// as an in-kernel walk copies them; a field that can't be read is left to the caller's own read, which
    /// says why. Called right after `add(node)`: the values go to the last entry's row.
    mutating func copyFields(ofNode node: UInt64) {
        let entry = node &- linkOffset
        guard !fields.isEmpty, let position = entries.indices.last, entries[position] == entry else { return }
        var values: [UInt64] = []
        values.reserveCapacity(fields.count)
        for f in fields {
            guard f.size >= 1, f.size <= 8, let bytes = try? memory.read(entry &+ UInt64(bitPattern: Int64(f.offset)), count: f.size) else { return }
            var value: UInt64 = 0
            for (i, byte) in bytes.enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
            values.append(value)
        }
        if fieldRows.count < position { fieldRows += repeatElement(-1, count: position - fieldRows.count) }
        fieldRows.append(fieldValues.count)
        fieldValues += values
    }

    /// Adds an entry found at `index` of an indexed container (the same pointer may sit at several indices,
    /// so entries are not checked for loops: the walker checks its nodes with `visit`); false when
    /// `maxEntries` is reached.
    mutating func add(entry: UInt64, index: UInt64) -> Bool {
        if entries.count >= maxEntries {
            warnings.append("\(helper.macro): stopped after \(maxEntries) entries (--max)")
            stopped = true
            return false
        }
        entries.append(entry)
        indices.append(index)
        return true
    }

    /// Gives the entries added since the first `from` the index `index` (a hash table's bucket number).
    mutating func index(from: Int, _ index: UInt64) {
        indices += Array(repeating: index, count: entries.count - from)
    }

    /// Records an inner node of a tree; reaching one twice is a loop.
    mutating func visit(node: UInt64) throws {
        guard seen.insert(node).inserted else { throw WalkError.loop(helper, node: node, after: entries.count) }
    }

    /// Nodes visited so far (`visit`).
    var nodesVisited: Int { seen.count }

    mutating func warn(_ text: String) { warnings.append(text) }

    /// The byte offset of `member` in vmlinux's `struct structure`.
    func offset(of member: String, in structure: String) throws -> UInt64 {
        try self.member(member, in: structure).offset
    }

    /// The byte offset and type of `member` in vmlinux's `struct structure`.
    func member(_ member: String, in structure: String) throws -> (offset: UInt64, type: CType) {
        try ContainerHelper.member(member, in: structure, vmlinux: vmlinux)
    }

    /// The size of vmlinux's `struct structure`.
    func size(of structure: String) throws -> Int {
        for id in vmlinux.lookup(structure) where (try? vmlinux.kind(of: id)) == .structure {
            return try CType.btf(vmlinux, id).size()
        }
        throw WalkError.unsupportedLayout(helper, "vmlinux BTF has no struct \(structure)")
    }

    /// The element count of the array `member` of vmlinux's `struct structure` (xa_node.slots).
    func arrayCount(of member: String, in structure: String) throws -> Int {
        guard case .array(_, let count) = try self.member(member, in: structure).type.resolved() else {
            throw WalkError.unsupportedLayout(helper, "struct \(structure).\(member) is not an array")
        }
        return count
    }

    /// `count` little-endian words of `btf.pointerSize` bytes from `bytes` at `offset` (the slots of a node read at once).
    func words(_ bytes: [UInt8], at offset: Int, count: Int) -> [UInt64] {
        let size = Int(vmlinux.pointerSize)
        return (0..<count).map { k in
            let start = min(bytes.count, offset + k * size)
            return littleEndianWord(bytes[start..<min(bytes.count, start + size)])
        }
    }

    /// The pointer stored at `address`.
    func pointer(at address: UInt64) throws -> UInt64 { try memory.pointer(at: address, in: vmlinux) }
}
