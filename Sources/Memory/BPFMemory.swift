import BPF
import CKreach
import Glibc

/// Kernel memory through BPF: a BPF_PROG_TYPE_RAW_TRACEPOINT program that calls
/// bpf_probe_read_kernel into an array map, run synchronously with BPF_PROG_TEST_RUN (never attached).
/// Address, length and mode arrive as the program's u64 context arguments, so one loaded program serves
/// every read; reads larger than a chunk go through a second program with a `bulkChunk` map, loaded on the
/// first such read (a task_struct, an xa_node, a hash table's heads: one run, not one per 4 KiB), and are
/// split in pieces of that size.
public final class BPFMemory: KernelMemory {
    public static let chunk = 4096
    /// Bytes per run of the bulk reader (its map value; each lookup copies all of it, so small reads don't use it).
    public static let bulkChunk = 1 << 16
    public let name = "bpf"
    private let mapFD: Int32
    private let progFD: Int32
    /// The reader for reads above `chunk`: nil until the first one, and when the kernel refused it (`bulkFailed`).
    private var bulk: BPFMemory?
    private var bulkFailed = false
    /// This reader's map value size.
    private let size: Int
    /// Reader program runs (BPF_PROG_TEST_RUN) so far, bulk ones included: what a read cost.
    public private(set) var runs = 0
    /// In-kernel list walk programs loaded so far (BPFListWalk.cached).
    public var listWalks: [BPFListWalk.Key: BPFListWalk] = [:]
    /// Gather programs loaded so far, by read size and batch.
    private var gathers: [[Int]: BPFGather] = [:]
    private var gatherFailed = Set<[Int]>()

    public convenience init() throws {
        try self.init(chunk: BPFMemory.chunk)
    }

    init(chunk: Int) throws {
        size = chunk
        let map = kreach_bpf_array_create(UInt32(chunk), 1, "kreach_read")
        guard map >= 0 else { throw BPFError("create the BPF array map", errno: -map) }
        mapFD = map
        let program = BPFMemory.program(mapFD: map, chunk: chunk)
        var insns = program.map(\.raw)
        var log = [CChar](repeating: 0, count: 1 << 16)
        let prog = insns.withUnsafeMutableBufferPointer { p in
            log.withUnsafeMutableBufferPointer { l in
                kreach_bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT.rawValue, p.baseAddress, UInt32(p.count), "GPL",
                                     l.baseAddress, UInt32(l.count), "kreach_read")
            }
        }
        guard prog >= 0 else {
            close(map)
            let verifier = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let lastLines = verifier.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw BPFError("load the BPF reader program", errno: -prog, detail: lastLines)
        }
        progFD = prog
    }

    deinit {
        close(progFD)
        close(mapFD)
    }

    /// r1 = ctx: args[0] address, args[1] length, args[2] mode (0 read, 1 current task).
    /// Returns bpf_probe_read_kernel's result (0 or -errno); the bytes land in map[0].
    static func program(mapFD: Int32, chunk: Int = chunk) -> [Instruction] {
        var p: [Instruction] = [
            .mov(.r6, .r1),
            .load64(.r7, .r6, 0),          // address
            .load64(.r8, .r6, 8),          // length
            .store32(.r10, -4, 0),         // key = 0
        ]
        p += Instruction.loadMap(.r1, fd: mapFD)
        p += [
            .mov(.r2, .r10),
            .add(.r2, -4),
            .call(BPF_FUNC_map_lookup_elem),
            .jumpEqual(.r0, 0, 13),        // no map value -> -ENOENT
            .mov(.r9, .r0),
            .load64(.r1, .r6, 16),         // mode
            .jumpEqual(.r1, 1, 6),         // -> current task
            .jumpGreater(.r8, Int32(chunk), 11),  // length above the chunk -> -E2BIG
            .mov(.r1, .r9),
            .mov(.r2, .r8),
            .mov(.r3, .r7),
            .call(BPF_FUNC_probe_read_kernel),
            .exit,
            // current task
            .call(BPF_FUNC_get_current_task),
            .store64(.r9, 0, .r0),
            .mov(.r0, 0),
            .exit,
            // errors
            .mov(.r0, -ENOENT),
            .exit,
            .mov(.r0, -E2BIG),
            .exit,
        ]
        return p
    }

    private func run(_ address: UInt64, _ count: Int, mode: UInt64) throws -> Int32 {
        var args: [UInt64] = [address, UInt64(count), mode]
        var retval: UInt32 = 0
        let r = args.withUnsafeMutableBytes { kreach_bpf_prog_test_run(progFD, $0.baseAddress, UInt32($0.count), &retval) }
        runs += 1
        guard r == 0 else { throw BPFError("run the BPF reader (BPF_PROG_TEST_RUN)", errno: -r) }
        return Int32(bitPattern: retval)
    }

    private func fetch(_ count: Int) throws -> [UInt8] {
        var key: UInt32 = 0
        var value = [UInt8](repeating: 0, count: size)
        let r = value.withUnsafeMutableBytes { kreach_bpf_map_lookup(mapFD, &key, $0.baseAddress) }
        guard r == 0 else { throw BPFError("read the BPF array map", errno: -r) }
        return Array(value.prefix(count))
    }

    public func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        if count > size, size == BPFMemory.chunk, let bulk = bulkReader() {
            let before = bulk.runs
            defer { runs += bulk.runs - before }
            return try bulk.read(address, count: count)
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var done = 0
        while done < count {
            let n = min(size, count - done)
            let (a, overflow) = address.addingReportingOverflow(UInt64(done))
            guard !overflow else { throw MemoryFault(address: address, count: count, reason: "the range wraps around") }
            let r = try run(a, n, mode: 0)
            if r != 0 {
                let reason: String
                switch -r {
                case EFAULT: reason = "not mapped (bpf_probe_read_kernel: -EFAULT)"
                case ERANGE: reason = "not a kernel address (bpf_probe_read_kernel: -ERANGE)"
                default: reason = "bpf_probe_read_kernel: \(String(cString: strerror(-r)))"
                }
                throw MemoryFault(address: a, count: n, reason: reason)
            }
            out += try fetch(n)
            done += n
        }
        return out
    }

    /// Reads of one size at many addresses: a BPFGather run per batch (a batch of 64 or 1,024: a tree node's
    /// children, or a walk's entries), its runs counted in `runs`. A read that faulted is nil; where the kernel
    /// refuses the gather program, each address is read alone.
    public func read(many addresses: [UInt64], count: Int) throws -> [[UInt8]?] {
        guard addresses.count > 1, count <= BPFGather.maxSize, count > 0 else { return addresses.map { try? read($0, count: count) } }
        let batch = addresses.count <= 64 ? 64 : BPFGather.maxBatch
        let key = [count, batch]
        if gathers[key] == nil, !gatherFailed.contains(key) {
            do { gathers[key] = try BPFGather(size: count, batch: batch) } catch { gatherFailed.insert(key) }
        }
        guard let gather = gathers[key] else { return addresses.map { try? read($0, count: count) } }
        let before = gather.runs
        defer { runs += gather.runs - before }
        return try gather.read(addresses)
    }

    /// The bulk reader, loaded on first use; nil (reads stay chunked) where the kernel refuses it.
    private func bulkReader() -> BPFMemory? {
        if bulk == nil, !bulkFailed {
            bulk = try? BPFMemory(chunk: BPFMemory.bulkChunk)
            bulkFailed = bulk == nil
        }
        return bulk
    }

    public func currentTask() throws -> UInt64 {
        let r = try run(0, 8, mode: 1)
        guard r == 0 else { throw BPFError("bpf_get_current_task", errno: -r) }
        let bytes = try fetch(8)
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }
}
