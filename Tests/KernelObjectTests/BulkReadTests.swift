import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// A big object is read in one piece: `show` of `*current` (a task_struct: 3 KiB here, about 10 KiB on
/// distribution kernels) or of this namespace's `struct net` (over 4 KiB) costs one run of the BPF reader
/// (BPFMemory's bulk program), not one per 4 KiB chunk and not one per member. The values are checked
/// against /proc (pid, comm) so the bulk bytes are the object's.
final class BulkReadTests: XCTestCase {
    func testBigObjectsAreOneReaderRun() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON")) }
        let memory = try BPFMemory()
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: memory)
        var options = FormatOptions()
        options.depth = 8
        let fmt = ObjectFormatter(memory: memory, symbols: { nil }, options: options)
        let threadSelf = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")
        for (expression, check) in [("*current", true), ("*current->nsproxy->net_ns", false)] {
            guard case .object(let o) = try ev.evaluate(expression) else { throw FixtureError("\(expression) is not an object") }
            let size = try o.type.size()
            let before = memory.runs
            let json = try fmt.json(o)
            // One read of the whole object (JSON follows no pointer: no char * strings read).
            let pieces = (size + BPFMemory.bulkChunk - 1) / BPFMemory.bulkChunk
            XCTAssertEqual(memory.runs - before, pieces, "\(expression): \(size) bytes")
            let text = try fmt.text(o)
            if check {
                guard case .object(let fields)? = Optional(json), let pid = fields.first(where: { $0.0 == "pid" })?.1,
                      let comm = fields.first(where: { $0.0 == "comm" })?.1 else { throw FixtureError("no pid, comm in \(json)") }
                XCTAssertEqual(pid, .int(Int64(threadSelf.split(separator: "/").last ?? "") ?? -1))
                XCTAssertEqual(comm, .string(try FileBytes.readText("/proc/thread-self/comm")))
                XCTAssertTrue(text.contains(".comm = (char [16])\"\(try FileBytes.readText("/proc/thread-self/comm"))\""), text)
            }
        }
    }
}
