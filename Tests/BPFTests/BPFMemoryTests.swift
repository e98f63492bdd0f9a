import Foundation
import Glibc
import XCTest
import Memory
import BTF
import KernelSource
import KreachSupport
import KreachTestSupport

/// The BPF reader on the live kernel: the test process's own task_struct, read through BTF offsets,
/// against what /proc says about the process.
final class BPFMemoryTests: XCTestCase {
    func memory() throws -> BPFMemory {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: loading BPF programs needs CAP_BPF + CAP_PERFMON")) }
        return try BPFMemory()
    }

    func member(_ btf: BTF, _ type: TypeID, _ name: String) throws -> BTFMember {
        try XCTUnwrap(try btf.type(type).members.first { $0.name == name }, "no member \(name)")
    }

    func testCurrentTaskPidAndComm() throws {
        let mem = try memory()
        let btf = try TypeDatabase(directory: "/sys/kernel/btf").vmlinux
        let task = try XCTUnwrap(btf.lookup("task_struct").first { try btf.kind(of: $0) == .structure })
        let current = try mem.currentTask()
        // In the kernel half (its start depends on 4- or 5-level paging), and in the direct map, which starts at
        // page_offset_base (read from the kernel where kallsyms lists the variable; KASLR moves it).
        XCTAssertGreaterThanOrEqual(current, KernelFacts.kernelHalfStart, "a kernel address")
        if let pageOffsetBase = try KernelFacts.dataSymbol("page_offset_base") {
            let base = try mem.read(pageOffsetBase, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            XCTAssertGreaterThanOrEqual(base, KernelFacts.kernelHalfStart)
            XCTAssertGreaterThanOrEqual(current, base, "task_structs come from the slab, in the direct map")
        } else {
            print("note: kallsyms has no page_offset_base (no data symbols): only the kernel-half bound is checked")
        }
        let pid = try member(btf, task, "pid")
        let bytes = try mem.read(current + UInt64(pid.bitOffset / 8), count: 4)
        // The calling thread: its tid (pid in the kernel's sense) is gettid().
        let threadSelf = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")  // "PID/task/TID"
        XCTAssertEqual(bytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }, Int32(threadSelf.split(separator: "/").last ?? ""))
        let tgid = try member(btf, task, "tgid")
        let tgidBytes = try mem.read(current + UInt64(tgid.bitOffset / 8), count: 4)
        XCTAssertEqual(tgidBytes.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }, getpid())
        let comm = try member(btf, task, "comm")
        let raw = try mem.read(current + UInt64(comm.bitOffset / 8), count: 16)
        let name = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        let procComm = try FileBytes.readText("/proc/thread-self/comm")
        XCTAssertEqual(name, procComm)
    }

    func testLargeReadsAreChunkedAndFaultsAreErrors() throws {
        let mem = try memory()
        let current = try mem.currentTask()
        // 3 chunks and a bit, placed so that current->pid straddles the first chunk boundary and comm lies in a
        // later chunk; the oracle is /proc (the task's tid and comm), not another read.
        let btf = try TypeDatabase(directory: "/sys/kernel/btf").vmlinux
        let task = try XCTUnwrap(btf.lookup("task_struct").first { try btf.kind(of: $0) == .structure })
        let pidOffset = UInt64(try member(btf, task, "pid").bitOffset / 8)
        let commOffset = UInt64(try member(btf, task, "comm").bitOffset / 8)
        let start = current + pidOffset + 2 - UInt64(BPFMemory.chunk)
        let big = try mem.read(start, count: BPFMemory.chunk * 3 + 100)
        XCTAssertEqual(big.count, BPFMemory.chunk * 3 + 100)
        let threadSelf = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")
        let pidAt = BPFMemory.chunk - 2
        let pid = Array(big[pidAt..<pidAt + 4]).withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
        XCTAssertEqual(pid, Int32(threadSelf.split(separator: "/").last ?? ""))
        let commAt = Int(commOffset) - Int(pidOffset) + pidAt
        let comm = String(decoding: big[commAt..<commAt + 16].prefix { $0 != 0 }, as: UTF8.self)
        XCTAssertEqual(comm, try FileBytes.readText("/proc/thread-self/comm"))
        XCTAssertEqual(try mem.read(current, count: 0), [])
        // User-space addresses are refused before any access (-ERANGE).
        for bad: UInt64 in [0, 0x10, 0x7fff_0000_0000] {
            XCTAssertThrowsError(try mem.read(bad, count: 8)) { e in
                XCTAssertEqual((e as? MemoryFault)?.address, bad)
                XCTAssertTrue("\(e)".contains("not a kernel address"), "\(e)")
            }
        }
        // A non-canonical address: refused (-ERANGE up to 6.x, a caught fault -EFAULT on newer kernels).
        XCTAssertThrowsError(try mem.read(0xdead_0000_0000, count: 8)) { XCTAssertEqual(($0 as? MemoryFault)?.address, 0xdead_0000_0000) }
        // The guard hole at the start of the kernel half is never mapped.
        XCTAssertThrowsError(try mem.read(KernelFacts.kernelHalfStart + 0x1000, count: 8)) { XCTAssertTrue("\($0)".contains("not mapped"), "\($0)") }
        XCTAssertThrowsError(try mem.read(UInt64.max - 3, count: 8)) { XCTAssertTrue("\($0)".contains("wraps around") || "\($0)".contains("not mapped"), "\($0)") }
    }

    /// Many reads of one size in one program run per batch (BPFGather): the test thread's task_struct read
    /// as 16-byte pieces at 1,500 addresses (two runs of 1,024), with user, non-canonical and unmapped
    /// addresses among them, gives each piece as a read of its own does, and nil for each bad address.
    func testManyReadsInBatchesAreTheSingleReadsAndFaultsAreNil() throws {
        let mem = try memory()
        let current = try mem.currentTask()
        let bad: [UInt64] = [0x10, 0xdead_0000_0000, KernelFacts.kernelHalfStart + 0x1000]
        // Pieces inside the task_struct (its first 4 KiB at least: BTF says it is bigger).
        var addresses = (0..<1500).map { current + UInt64($0 % 250) * 16 }
        for (k, b) in bad.enumerated() { addresses.insert(b, at: 100 + 600 * k) }
        let single = try addresses.map { a in bad.contains(a) ? nil : try mem.read(a, count: 16) }
        let before = mem.runs
        let many = try mem.read(many: addresses, count: 16)
        XCTAssertEqual(mem.runs - before, 2, "1,503 reads of 16 bytes: two runs of at most 1,024")
        XCTAssertEqual(many.count, addresses.count)
        // The task changes under us only in its counters; pid and comm, the first bytes at their offsets, hold.
        let btf = try TypeDatabase(directory: "/sys/kernel/btf").vmlinux
        let task = try XCTUnwrap(btf.lookup("task_struct").first { try btf.kind(of: $0) == .structure })
        let stable = [UInt64(try member(btf, task, "pid").bitOffset / 8), UInt64(try member(btf, task, "comm").bitOffset / 8)]
        for (k, a) in addresses.enumerated() {
            if bad.contains(a) {
                XCTAssertNil(many[k], "0x\(String(a, radix: 16))")
            } else if stable.contains(where: { (a - current) / 16 == $0 / 16 }) {
                XCTAssertEqual(many[k], single[k], "0x\(String(a, radix: 16))")
            } else {
                XCTAssertEqual(many[k]?.count, 16)
            }
        }
        // Sizes other than 16, and one address alone (a plain read), agree too.
        XCTAssertEqual(try mem.read(many: [current, current], count: 4096).map { $0?.count }, [4096, 4096])
        XCTAssertEqual(try mem.read(many: [current], count: 8), [try mem.read(current, count: 8)])
        XCTAssertEqual(try mem.read(many: [], count: 8).count, 0)
    }

    /// The walks' loop check (AddressSet) answers as a Set does: kernel-like addresses (slab objects 64 bytes
    /// apart, so they crowd the table), repeats, 0, and random words, across several growths.
    func testAddressSetAnswersAsASetDoes() {
        var fast = AddressSet(capacity: 4), slow = Set<UInt64>()
        var rng = SystemRandomNumberGenerator()
        var inputs: [UInt64] = (0..<50_000).map { 0xffff_8881_0000_0000 + UInt64($0 % 30_000) * 64 }
        inputs += (0..<20_000).map { _ in rng.next() }
        inputs += [0, 0, 1, UInt64.max, UInt64.max]
        inputs.shuffle()
        for a in inputs {
            XCTAssertEqual(fast.insert(a).inserted, slow.insert(a).inserted, "0x\(String(a, radix: 16))")
        }
        XCTAssertEqual(fast.count, slow.count)
        for a in slow.prefix(1000) { XCTAssertTrue(fast.contains(a)) }
        XCTAssertFalse(fast.contains(0xffff_8881_0000_0000 + 64 * 30_000))
    }
}
