import Foundation
import Glibc
import XCTest
@testable import BPF
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
        XCTAssertGreaterThan(current, 0xffff_0000_0000_0000, "a kernel address")
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
        // 3 chunks and a bit, across the task_struct and beyond: the same bytes as two separate reads.
        let big = try mem.read(current, count: BPFMemory.chunk * 3 + 100)
        XCTAssertEqual(big.count, BPFMemory.chunk * 3 + 100)
        XCTAssertEqual(Array(big[4096..<4196]), try mem.read(current + 4096, count: 100))
        XCTAssertEqual(try mem.read(current, count: 0), [])
        for bad: UInt64 in [0, 0x10, 0xdead_0000_0000] {
            XCTAssertThrowsError(try mem.read(bad, count: 8)) { e in
                XCTAssertEqual((e as? MemoryFault)?.address, bad)
                XCTAssertTrue("\(e)".contains("not a kernel address"), "\(e)")
            }
        }
        // The guard hole at the start of the kernel half is never mapped.
        XCTAssertThrowsError(try mem.read(0xffff_8000_0000_1000, count: 8)) { XCTAssertTrue("\($0)".contains("not mapped"), "\($0)") }
        XCTAssertThrowsError(try mem.read(UInt64.max - 3, count: 8)) { XCTAssertTrue("\($0)".contains("wraps around") || "\($0)".contains("not mapped"), "\($0)") }
    }
}
