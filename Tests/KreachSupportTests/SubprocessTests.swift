import Foundation
import Glibc
import KreachSupport
import XCTest

/// The one spawn helper (bpftrace, the trigger counter, the test suite's Child): argument lists passed
/// verbatim with no shell, exit codes and signals, its own process group killed on timeout.
final class SubprocessTests: XCTestCase {
    func testTimeoutKillsTheProcessGroup() throws {
        let marker = NSTemporaryDirectory() + "kreach-subprocess-timeout-\(getpid())"
        defer { unlink(marker) }
        let start = Monotonic.now
        // The shell starts a grandchild that would outlive it, then hangs.
        XCTAssertThrowsError(try Subprocess.run(["sh", "-c", "sleep 300 & echo $! > \(marker); exec sleep 300"], timeout: 1)) {
            XCTAssertEqual($0 as? SpawnError, .timedOut("sh", seconds: 1))
            XCTAssertEqual("\($0)", "sh did not finish within 1 s: its process group was killed")
        }
        XCTAssertLessThan(Monotonic.now - start, 30)
        let grandchild = try XCTUnwrap(pid_t(try String(contentsOfFile: marker, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(grandchild, SIGKILL) }  // if it survived, don't leave it behind
        // SIGKILL to the group is delivered before kill() returns; the grandchild is then gone or a zombie.
        var gone = false
        let deadline = Monotonic.now + 10
        while !gone && Monotonic.now < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(grandchild)/stat", encoding: .utf8)) ?? ""
            gone = stat.isEmpty || stat.contains(") Z ")
            if !gone { sched_yield() }
        }
        XCTAssertTrue(gone, "the grandchild \(grandchild) survived the timeout")
    }

    func testExitCodesAndSignals() throws {
        XCTAssertEqual(try Subprocess.run(["true"]).status, .exited(0))
        XCTAssertEqual(try Subprocess.run(["sh", "-c", "exit 3"]).status, .exited(3))
        let killed = try Subprocess.run(["sh", "-c", "kill -TERM $$"]).status
        XCTAssertEqual(killed, .signaled(SIGTERM))
        XCTAssertEqual(killed.code, 128 + SIGTERM)
        // A child we stop ourselves.
        let child = try Subprocess(["sleep", "300"], stdout: .null)
        XCTAssertNil(try child.poll())
        child.signal(SIGKILL)
        XCTAssertEqual(try child.wait(), .signaled(SIGKILL))
    }

    /// Spaces, quotes, `$`, globs and `;` reach the program as they are: no shell word-splits or expands them.
    func testArgumentsArePassedVerbatimWithoutAShell() throws {
        let arguments = ["a b", "it's", "\"quoted\"", "$HOME", "*", "; echo injected", "", "back\\slash", "tab\there"]
        let out = try Subprocess.run(["printf", "[%s]\\n"] + arguments)
        XCTAssertEqual(out.status, .exited(0))
        XCTAssertEqual(out.stdoutText, arguments.map { "[\($0)]\n" }.joined())
    }

    func testInputOutputAndErrorStreams() throws {
        let input = Array("line one\nline two\n".utf8)
        let cat = try Subprocess.run(["cat"], input: input)
        XCTAssertEqual(cat.stdout, input)
        let err = try Subprocess.run(["sh", "-c", "echo out; echo err >&2"])
        XCTAssertEqual(err.stdoutText, "out\n")
        XCTAssertEqual(err.stderrText, "err\n")
        // More than a pipe holds, on both streams at once: no deadlock.
        let big = try Subprocess.run(["sh", "-c", "head -c 1000000 /dev/zero; head -c 300000 /dev/zero >&2"], timeout: 60)
        XCTAssertEqual(big.stdout.count, 1_000_000)
        XCTAssertEqual(big.stderr.count, 300_000)
        XCTAssertEqual(try Subprocess.run(["sh", "-c", "echo $KREACH_SUBPROCESS_TEST"], environment: ["KREACH_SUBPROCESS_TEST": "x"]).stdoutText, "x\n")
    }

    /// In its own process group the child leads it; otherwise it is in ours (Ctrl-C reaches it).
    func testProcessGroup() throws {
        let ownStat = try Subprocess.run(["cat", "/proc/self/stat"], ownProcessGroup: true).stdoutText
        let ownPid = Int(ownStat.split(separator: " ")[0])
        let ownGroup = Int(ownStat.split(separator: ")").last?.split(separator: " ")[2] ?? "")
        XCTAssertNotNil(ownPid)
        XCTAssertEqual(ownGroup, ownPid, "leads its own group")
        let sharedStat = try Subprocess.run(["cat", "/proc/self/stat"], ownProcessGroup: false).stdoutText
        XCTAssertEqual(Int(sharedStat.split(separator: ")").last?.split(separator: " ")[2] ?? ""), Int(getpgrp()))
    }

    func testAMissingProgramIsAOneLineError() throws {
        XCTAssertThrowsError(try Subprocess(["kreach-no-such-program"])) {
            XCTAssertEqual("\($0)", "can't run kreach-no-such-program: not found on PATH")
        }
        XCTAssertThrowsError(try Subprocess(["/nonexistent/kreach"])) {
            XCTAssertEqual("\($0)", "can't run /nonexistent/kreach: No such file or directory")
        }
        XCTAssertThrowsError(try Subprocess([])) { XCTAssertEqual($0 as? SpawnError, .noProgram) }
    }
}
