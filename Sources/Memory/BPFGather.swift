import BPF
import CKreach
import Glibc

/// Many reads of one size in one BPF_PROG_TEST_RUN: kreach writes up to `batch` addresses into its own input
/// map, and one run of a raw_tracepoint program copies `size` bytes from each (bpf_probe_read_kernel) into
/// an output map, with each read's result. A tree walker fetches all of a node's children this way, and a
/// walk the fields of all its entries: a run and two map copies per batch instead of a run and a copy per
/// read. The loop is unrolled (no bpf_loop), so it loads wherever the reader does. Read-only: the program
/// writes only its own map.
public final class BPFGather {
    /// Bytes per read.
    public let size: Int
    /// Reads per run.
    public let batch: Int
    private let inputFD: Int32
    private let outputFD: Int32
    private let progFD: Int32
    /// Program runs so far.
    public private(set) var runs = 0

    /// The largest read (a page); the output map's value holds at most `outputLimit` bytes.
    public static let maxSize = 4096
    static let outputLimit = 1 << 18
    public static let maxBatch = 1024

    /// `batch`: reads per run wanted (fewer when `size` bytes each would pass the output map's limit).
    public init(size: Int, batch requested: Int = maxBatch) throws {
        guard (1...BPFGather.maxSize).contains(size) else {
            throw BPFError("gather reads of \(size) bytes (1 to \(BPFGather.maxSize))", errno: EINVAL)
        }
        self.size = size
        let slot = (size + 7) & ~7
        batch = max(1, min(requested, BPFGather.maxBatch, BPFGather.outputLimit / (8 + slot)))
        let input = kreach_bpf_array_create(UInt32(8 * batch), 1, "kreach_gat_in")
        guard input >= 0 else { throw BPFError("create the BPF gather input map", errno: -input) }
        let output = kreach_bpf_array_create(UInt32(batch * (8 + slot)), 1, "kreach_gat_out")
        guard output >= 0 else {
            close(input)
            throw BPFError("create the BPF gather output map", errno: -output)
        }
        inputFD = input
        outputFD = output
        do {
            progFD = try BPFListWalk.load(BPFGather.program(input: input, output: output, size: size, batch: batch), name: "kreach_gather")
        } catch {
            close(input)
            close(output)
            throw error
        }
    }

    deinit {
        close(progFD)
        close(inputFD)
        close(outputFD)
    }

    /// r1 = ctx: args[0] the number of addresses in the input map (at most `batch`). Output map: `batch` results
    /// (u64: 0 or bpf_probe_read_kernel's -errno), then `batch` slots of `size` rounded up to 8 bytes.
    static func program(input: Int32, output: Int32, size: Int, batch: Int) -> [Instruction] {
        let slot = (size + 7) & ~7
        var p: [Instruction] = [.load64(.r8, .r1, 0), .store32(.r10, -4, 0)]
        var toEnd: [Int] = []
        p += Instruction.loadMap(.r1, fd: input)
        p += [.mov(.r2, .r10), .add(.r2, -4), .call(BPF_FUNC_map_lookup_elem)]
        toEnd.append(p.count)
        p += [.jumpEqual(.r0, 0, 0), .mov(.r7, .r0)]
        p += Instruction.loadMap(.r1, fd: output)
        p += [.mov(.r2, .r10), .add(.r2, -4), .call(BPF_FUNC_map_lookup_elem)]
        toEnd.append(p.count)
        p += [.jumpEqual(.r0, 0, 0), .mov(.r9, .r0)]
        for k in 0..<batch {
            toEnd.append(p.count)
            p += [.jumpEqual(.r8, Int32(k), 0),
                  .mov(.r1, .r9), .add(.r1, Int32(8 * batch + k * slot)), .mov(.r2, Int32(size)),
                  .load64(.r3, .r7, Int16(8 * k)), .call(BPF_FUNC_probe_read_kernel), .store64(.r9, Int16(8 * k), .r0)]
        }
        let end = p.count
        p += [.mov(.r0, 0), .exit]
        for at in toEnd { p[at] = p[at].retargeted(Int16(end - at - 1)) }
        return p
    }

    /// `size` bytes at each address, in order; nil where that read faulted.
    public func read(_ addresses: [UInt64]) throws -> [[UInt8]?] {
        let slot = (size + 7) & ~7
        var out: [[UInt8]?] = []
        out.reserveCapacity(addresses.count)
        var input = [UInt64](repeating: 0, count: batch)
        var value = [UInt8](repeating: 0, count: batch * (8 + slot))
        var start = 0
        while start < addresses.count {
            let n = min(batch, addresses.count - start)
            for k in 0..<n { input[k] = addresses[start + k].littleEndian }
            var key: UInt32 = 0
            let u = input.withUnsafeBytes { kreach_bpf_map_update(inputFD, &key, $0.baseAddress) }
            guard u == 0 else { throw BPFError("write the BPF gather input map", errno: -u) }
            var args: [UInt64] = [UInt64(n)]
            var retval: UInt32 = 0
            let r = args.withUnsafeMutableBytes { kreach_bpf_prog_test_run(progFD, $0.baseAddress, UInt32($0.count), &retval) }
            runs += 1
            guard r == 0 else { throw BPFError("run the BPF gather program (BPF_PROG_TEST_RUN)", errno: -r) }
            let l = value.withUnsafeMutableBytes { kreach_bpf_map_lookup(outputFD, &key, $0.baseAddress) }
            guard l == 0 else { throw BPFError("read the BPF gather output map", errno: -l) }
            value.withUnsafeBytes { raw in
                for k in 0..<n {
                    let status = raw.loadUnaligned(fromByteOffset: 8 * k, as: UInt64.self)
                    if status != 0 {
                        out.append(nil)
                    } else {
                        let base = 8 * batch + k * slot
                        out.append(Array(raw[base..<(base + size)]))
                    }
                }
            }
            start += n
        }
        return out
    }
}
