import Foundation
import XCTest
import KreachTestSupport
@testable import ScriptGen

/// `where --trigger`'s counter on the live host: only calls made by the trigger command's process tree
/// count, not a busy process outside it. Oracle: the commands themselves — `sleep` makes exactly one
/// clock_nanosleep, `sh` and `cat` none; the noise process makes at least one while the trigger runs,
/// because the trigger waits (through a FIFO) for the noise process to write after its sleep.
final class TriggerTreeTests: XCTestCase {
    func testOnlyTheTriggersProcessTreeCounts() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: bpftrace needs root")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        guard Host.tracefs().map({ FileManager.default.fileExists(atPath: $0 + "/events/syscalls/sys_enter_clock_nanosleep") }) == true else {
            throw XCTSkip(Host.skipReason("no tracepoint syscalls:sys_enter_clock_nanosleep"))
        }
        let dir = NSTemporaryDirectory() + "kreach-trigger-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // Noise outside the tree: sleep, then hand the trigger a line, forever (at most 60 s).
        let noise = try Child(["timeout", "60", "/bin/sh", "-c", "while :; do sleep 0.001; echo x > \(fifo); done"])
        defer { noise.signal(SIGTERM); _ = try? noise.wait(timeout: 10) }  // its process group is killed on timeout
        let counter = TriggerCounter(bpftrace: try Bpftrace.find())
        let probe = "tracepoint:syscalls:sys_enter_clock_nanosleep"
        let trigger = "timeout 30 cat \(fifo) >/dev/null; timeout 30 cat \(fifo) >/dev/null; sleep 0.01; sleep 0.01; sleep 0.01"
        let run = try XCTUnwrap(try counter.count(probes: [probe], command: trigger).first)
        XCTAssertEqual(run.tree, 3, "three sleeps in the trigger's tree")
        XCTAssertGreaterThan(run.all, run.tree, "the noise process's sleeps are counted system-wide only")
        let baseline = try XCTUnwrap(try counter.count(probes: [probe], command: "true").first)
        XCTAssertEqual(baseline.tree, 0)
    }
}
