import Foundation
import Glibc
import XCTest
import KreachTestSupport

/// The test suite's own subprocess helper: a hung child fails the test with a message naming it, and its
/// whole process group is gone afterwards.
final class RunHelperTests: XCTestCase {
    func testTimeoutKillsTheProcessGroupAndNamesTheCommand() throws {
        let marker = NSTemporaryDirectory() + "kreach-run-timeout-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let start = Date()
        // The shell starts a grandchild that would outlive it, prints, then hangs.
        XCTAssertThrowsError(try Run.command(["sh", "-c", "sleep 300 & echo $! > \(marker); echo started; exec sleep 300"], timeout: 1)) { e in
            let t = e as? TimeoutError
            XCTAssertNotNil(t, "\(e)")
            XCTAssertTrue("\(e)".hasPrefix("timed out after 1 s (process group killed): sh -c sleep 300 &"), "\(e)")
            XCTAssertEqual(t?.stdout, "started\n")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 30)
        let grandchild = try XCTUnwrap(pid_t(try String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(grandchild, SIGKILL) }  // if it survived, don't leave it behind
        // Killed with its group (SIGKILL is delivered before kill() returns; the init process reaps it).
        var gone = false
        let deadline = Date().addingTimeInterval(10)
        while !gone && Date() < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(grandchild)/stat", encoding: .utf8)) ?? ""
            gone = stat.isEmpty || stat.contains(") Z ")
            if !gone { sched_yield() }
        }
        XCTAssertTrue(gone, "the grandchild \(grandchild) survived the timeout")
    }

    func testStatusOutputAndInput() throws {
        let r = try Run.command(["sh", "-c", "cat; echo err >&2; exit 3"], stdin: "in\n")
        XCTAssertEqual(r.status, 3)
        XCTAssertEqual(r.stdout, "in\n")
        XCTAssertEqual(r.stderr, "err\n")
        XCTAssertEqual(try Run.command(["sh", "-c", "kill -TERM $$"]).status, 128 + SIGTERM)
        XCTAssertEqual(try Run.command(["sh", "-c", "echo $KREACH_RUN_TEST"], environment: ["KREACH_RUN_TEST": "x"]).stdout, "x\n")
    }
}
