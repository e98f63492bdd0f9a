import BPF
import CKreach
import Glibc

/// A `struct list_head`-style chain followed inside the kernel: one BPF_PROG_TEST_RUN of a raw_tracepoint
/// program visits up to `batch` nodes, copying each node's address and the chosen fields (fixed offsets
/// from the node, scalars of 1–8 bytes) into an array map, which kreach reads once per batch. The loop is
/// unrolled (no bpf_loop, no back-edges), so the same program loads on every kernel kreach reads through
/// BPF. Read-only: bpf_probe_read_kernel is the only access to kernel memory; the program writes its map.
public final class BPFListWalk {
    /// A field copied per entry: `size` bytes at node + `offset`.
    public struct Field: Sendable, Equatable {
        public let offset: Int32
        public let size: Int
        public init(offset: Int32, size: Int) {
            self.offset = offset
            self.size = size
        }
    }

    /// The nodes a walk visited, in order, and their fields' values decoded from the batches' map values
    /// (no allocation per node: two arrays for the whole walk).
    public struct Visited: Sendable {
        /// The node addresses.
        public private(set) var nodes: [UInt64] = []
        /// `width` values per node, node after node: each field's bytes, little-endian, zero-extended to 64 bits.
        public private(set) var values: [UInt64] = []
        /// Fields per node.
        public let width: Int

        public var count: Int { nodes.count }

        mutating func append(node: UInt64) { nodes.append(node) }
        mutating func append(value: UInt64) { values.append(value) }
    }

    /// How a walk ended.
    public enum End: Sendable, Equatable {
        /// Back at the head (or at `stop`): every node was visited.
        case complete
        /// `maxEntries` nodes visited; more follow.
        case limit
        /// A next pointer was NULL after the entries returned.
        case nullNext
        /// A node seen before: the chain loops back to `node`.
        case loop(node: UInt64)
    }

    /// What ends a chain.
    public enum Ending: Sendable, Hashable {
        /// The node given as `head` (a ring's head; 0 for a NULL-terminated hlist or llist).
        case node
        /// An odd pointer value, the "nulls" marker of an hlist_nulls (`is_a_nulls()`).
        case nulls
    }

    /// Why a walk could not go on: a read at `node` faulted (`MemoryFault` names the address).
    public let nextOffset: Int32
    public let ending: Ending
    public let fields: [Field]
    /// Nodes per program run.
    public let batch: Int
    /// Where each node's bytes go in its record.
    let layout: RecordLayout
    private var stride: Int { layout.stride }
    private let valueSize: Int
    private let mapFD: Int32
    private let progFD: Int32

    /// Walk programs already loaded, by next offset and fields (loading one costs the verifier's time).
    public struct Key: Hashable, Sendable {
        let nextOffset: Int32
        let fields: [Int64]
        let ending: Ending
        let batch: Int
    }

    /// A walker for these offsets from `cache`, loaded and added there when missing.
    /// `batch`: nodes per run (a short program loads fast: hash chains are a node or two long).
    public static func cached(nextOffset: Int32, fields: [Field], ending: Ending = .node, batch: Int = 1024,
                              in cache: inout [Key: BPFListWalk]) throws -> BPFListWalk {
        let key = Key(nextOffset: nextOffset, fields: fields.map { Int64($0.offset) << 8 | Int64($0.size) }, ending: ending, batch: batch)
        if let walk = cache[key] { return walk }
        let walk = try BPFListWalk(nextOffset: nextOffset, fields: fields, ending: ending, batch: batch)
        cache[key] = walk
        return walk
    }

    /// Map value layout: [0] entries written (u64), [8] the node to visit next or the faulting one (u64),
    /// then `batch` records of `stride` bytes: the node address, then the bytes of each read (`RecordLayout`).
    static let header = 16

    /// One node's record: its address, then spans of the node copied by one bpf_probe_read_kernel each. The
    /// fields and the next pointer are sorted by offset and a span takes the next one while it stays within
    /// `window` bytes, so fields that sit together (`i_ino` and `i_size`) cost one helper call, not one each.
    struct RecordLayout: Equatable {
        /// One read: `size` bytes at node + `offset` into record + `position`.
        struct Span: Equatable {
            let offset: Int32
            let size: Int
            let position: Int
        }
        let spans: [Span]
        /// Where each field's bytes start in the record.
        let fieldPositions: [Int]
        /// Where the next pointer's 8 bytes start in the record.
        let nextPosition: Int
        /// Record size, a multiple of 8.
        let stride: Int

        /// Bytes one read may span (a copy of a few words costs less than another helper call).
        static let window = 32

        init(fields: [Field], nextOffset: Int32) {
            // Items: the fields by index, then the next pointer (index fields.count).
            let items = (fields.map { (offset: $0.offset, size: $0.size) } + [(offset: nextOffset, size: 8)])
                .enumerated().sorted { ($0.element.offset, $0.offset) < ($1.element.offset, $1.offset) }
            var spans: [Span] = []
            var itemPositions = [Int](repeating: 0, count: items.count)
            var position = 8
            var start: Int32 = 0, end: Int32 = 0, members: [(index: Int, offset: Int32)] = []
            func close() {
                guard !members.isEmpty else { return }
                spans.append(Span(offset: start, size: Int(end - start), position: position))
                for m in members { itemPositions[m.index] = position + Int(m.offset - start) }
                position += Int(end - start)
                members = []
            }
            for (index, item) in items {
                let itemEnd = item.offset + Int32(item.size)
                if !members.isEmpty && max(end, itemEnd) - start <= Int32(RecordLayout.window) {
                    end = max(end, itemEnd)
                } else {
                    close()
                    start = item.offset
                    end = itemEnd
                }
                members.append((index, item.offset))
            }
            close()
            self.spans = spans
            fieldPositions = Array(itemPositions.prefix(fields.count))
            nextPosition = itemPositions[fields.count]
            stride = (position + 7) & ~7
        }
    }

    /// `nextOffset`: where a node holds the next node's address (list_head.next or .prev).
    public init(nextOffset: Int32, fields: [Field], ending: Ending = .node, batch requested: Int = 1024) throws {
        for f in fields where !(1...8).contains(f.size) {
            throw BPFError("in-kernel walk: a field of \(f.size) bytes (1 to 8 only)", errno: EINVAL)
        }
        self.nextOffset = nextOffset
        self.fields = fields
        self.ending = ending
        let layout = RecordLayout(fields: fields, nextOffset: nextOffset)
        guard layout.stride <= 4096 else {
            throw BPFError("in-kernel walk: \(fields.count) fields take \(layout.stride) bytes per entry (4096 at most)", errno: EINVAL)
        }
        self.layout = layout
        // Each node's code is 7 + 7 per span instructions; jumps reach at most 32767 forward.
        let perNode = 7 + 7 * layout.spans.count
        batch = max(1, min(requested, 30_000 / perNode))
        valueSize = BPFListWalk.header + batch * layout.stride
        let map = kreach_bpf_array_create(UInt32(valueSize), 1, "kreach_walk")
        guard map >= 0 else { throw BPFError("create the BPF walk map", errno: -map) }
        mapFD = map
        do {
            progFD = try BPFListWalk.load(BPFListWalk.program(mapFD: map, layout: layout, ending: ending, batch: batch),
                                          name: "kreach_walk")
        } catch {
            close(map)
            throw error
        }
    }

    deinit {
        close(progFD)
        close(mapFD)
    }

    /// Loads a raw_tracepoint program; a refusal carries the verifier's last lines.
    static func load(_ program: [Instruction], name: String) throws -> Int32 {
        var insns = program.map(\.raw)
        // Without a log first: a verifier log of a long program overflows any buffer (ENOSPC).
        // The verifier gives up with -EAGAIN when a signal arrives meanwhile: try again, a few times.
        var quiet: Int32 = -EAGAIN
        for _ in 0..<5 where quiet == -EAGAIN {
            quiet = insns.withUnsafeMutableBufferPointer { p in
                kreach_bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT.rawValue, p.baseAddress, UInt32(p.count), "GPL", nil, 0, name)
            }
        }
        if quiet >= 0 { return quiet }
        var log = [CChar](repeating: 0, count: 1 << 20)
        let prog = insns.withUnsafeMutableBufferPointer { p in
            log.withUnsafeMutableBufferPointer { l in
                kreach_bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT.rawValue, p.baseAddress, UInt32(p.count), "GPL",
                                     l.baseAddress, UInt32(l.count), name)
            }
        }
        if prog >= 0 { return prog }
        let verifier = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw BPFError("load the BPF walk program", errno: -quiet,
                       detail: verifier.split(separator: "\n").suffix(3).joined(separator: " | "))
    }

    /// Jump targets, fixed up once the program is laid out.
    enum Label { case end, null, fault, full, noValue }

    /// r1 = ctx: args[0] the first node, args[1] the node that ends the walk (the head; unused for `.nulls`).
    /// Returns 0 (reached the end), 1 (batch full), 2 (NULL next), or bpf_probe_read_kernel's -errno.
    static func program(mapFD: Int32, layout: RecordLayout, ending: Ending = .node, batch: Int) -> [Instruction] {
        var p: [Instruction] = [.mov(.r6, .r1), .store32(.r10, -4, 0)]
        var jumps: [(at: Int, to: Label)] = []
        func jump(_ i: Instruction, _ label: Label) {
            jumps.append((p.count, label))
            p.append(i)
        }
        p += Instruction.loadMap(.r1, fd: mapFD)
        p += [.mov(.r2, .r10), .add(.r2, -4), .call(BPF_FUNC_map_lookup_elem)]
        jump(.jumpEqual(.r0, 0, 0), .noValue)
        p += [.mov(.r9, .r0), .load64(.r7, .r6, 0), .load64(.r8, .r6, 8), .store64(.r9, 0, 0)]
        for k in 0..<batch {
            switch ending {
            case .node: jump(.jumpEqual(.r7, .r8, 0), .end)
            case .nulls: jump(.jumpIfAnyBit(.r7, 1, 0), .end)
            }
            jump(.jumpEqual(.r7, 0, 0), .null)
            p += [.mov(.r6, .r9), .add(.r6, Int32(header + k * layout.stride)), .store64(.r6, 0, .r7)]
            for span in layout.spans {
                p += [.mov(.r1, .r6), .add(.r1, Int32(span.position)), .mov(.r2, Int32(span.size)), .mov(.r3, .r7),
                      .add(.r3, span.offset), .call(BPF_FUNC_probe_read_kernel)]
                jump(.jumpNotEqual(.r0, 0, 0), .fault)
            }
            p += [.load64(.r7, .r6, Int16(layout.nextPosition)), .store64(.r9, 0, Int32(k + 1))]
        }
        var targets: [Label: Int] = [:]
        targets[.full] = p.count
        p += [.store64(.r9, 8, .r7), .mov(.r0, 1), .exit]
        targets[.end] = p.count
        p += [.store64(.r9, 8, .r7), .mov(.r0, 0), .exit]
        targets[.null] = p.count
        p += [.store64(.r9, 8, .r7), .mov(.r0, 2), .exit]
        targets[.fault] = p.count
        p += [.store64(.r9, 8, .r7), .exit]
        targets[.noValue] = p.count
        p += [.mov(.r0, -ENOENT), .exit]
        for (at, label) in jumps {
            p[at] = p[at].retargeted(Int16(targets[label, default: at + 1] - at - 1))
        }
        return p
    }

    /// Visits the chain from `first` until it comes back to `head` (or reaches a nulls marker), at most `maxEntries` nodes; a node seen
    /// twice ends the walk as `.loop`. A faulting read throws `MemoryFault` naming the node's field.
    /// Each batch's map value is decoded in place: the node addresses and the fields' values go straight
    /// into `Visited`'s two arrays.
    public func walk(first: UInt64, head: UInt64, maxEntries: Int) throws -> (visited: Visited, end: End) {
        var visited = Visited(width: fields.count)
        var seen = AddressSet(capacity: min(maxEntries, 4096))
        var node = first
        // 8 bytes of slack: the last field of the last record is read as a whole word, then masked.
        var value = [UInt8](repeating: 0, count: valueSize + 8)
        let positions = layout.fieldPositions
        let masks: [UInt64] = fields.map { $0.size == 8 ? ~0 : (1 << UInt64(8 * $0.size)) - 1 }
        while true {
            var args: [UInt64] = [node, head]
            var retval: UInt32 = 0
            let r = args.withUnsafeMutableBytes { kreach_bpf_prog_test_run(progFD, $0.baseAddress, UInt32($0.count), &retval) }
            guard r == 0 else { throw BPFError("run the BPF walk program (BPF_PROG_TEST_RUN)", errno: -r) }
            var key: UInt32 = 0
            let l = value.withUnsafeMutableBytes { kreach_bpf_map_lookup(mapFD, &key, $0.baseAddress) }
            guard l == 0 else { throw BPFError("read the BPF walk map", errno: -l) }
            // Decoded in one pass over the map value; a repeated node or the bound ends the walk there.
            let (last, stop): (UInt64, End?) = value.withUnsafeBytes { raw in
                let count = Int(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)))
                let last = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                for i in 0..<min(count, batch) {
                    let base = BPFListWalk.header + i * stride
                    let address = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base, as: UInt64.self))
                    guard seen.insert(address).inserted else { return (last, .loop(node: address)) }
                    if visited.count >= maxEntries { return (last, .limit) }
                    visited.append(node: address)
                    for k in 0..<positions.count {
                        visited.append(value: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base + positions[k], as: UInt64.self)) & masks[k])
                    }
                }
                return (last, nil)
            }
            if let stop { return (visited, stop) }
            switch Int32(bitPattern: retval) {
            case 0: return (visited, .complete)
            case 1:
                if visited.count >= maxEntries {
                    return (visited, ended(at: last, head: head) ? .complete : .limit)
                }
                node = last
            case 2: return (visited, .nullNext)
            case let e:
                throw MemoryFault(address: last, count: 8, reason: BPFListWalk.reason(-e) + " (node of the in-kernel walk)")
            }
        }
    }

    /// Whether `node` ends the chain.
    func ended(at node: UInt64, head: UInt64) -> Bool {
        switch ending {
        case .node: return node == head
        case .nulls: return node & 1 != 0
        }
    }

    /// bpf_probe_read_kernel's error, in words.
    static func reason(_ errno: Int32) -> String {
        switch errno {
        case EFAULT: return "not mapped (bpf_probe_read_kernel: -EFAULT)"
        case ERANGE: return "not a kernel address (bpf_probe_read_kernel: -ERANGE)"
        default: return "bpf_probe_read_kernel: \(String(cString: strerror(errno)))"
        }
    }
}
