import Foundation
import XCTest
import KreachTestSupport

/// `kreach run` with walk statements, end to end through bpftrace on the live host: the bound's note on
/// stdout, and after a program the BPF verifier refuses (nested walks whose iterations multiply past its
/// 8192-jump limit) a hint on stderr saying what to lower.
final class WalkRunCLITests: XCTestCase {
    func requireBpftrace() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: bpftrace")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
    }

    func testABoundedWalkNotesWhereItStopped_AVerifierRefusalGetsAHint() throws {
        try requireBpftrace()
        // The task list from bpftrace's own task: at least init_task and pid 1 besides it, so 2 entries stop it.
        let ok = try runKreach(["run", "-e", "BEGIN { list_for_each_entry(struct task_struct, &current->tasks, tasks, $t, 2) { printf(\"task %d\\n\", $t->pid); } exit(); }"],
                               timeout: 60)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let lines = ok.stdout.split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.hasPrefix("task ") }.count, 2, ok.stdout)
        XCTAssertEqual(lines.filter { $0.hasPrefix("kreach: note:") }, ["kreach: note: list_for_each_entry stopped after 2 entries"], ok.stdout)
        XCTAssertFalse(ok.stderr.contains("verifier"), ok.stderr)

        // 100 x 100 iterations, each with conditional jumps: past what the verifier follows, on any kernel.
        let nested = "BEGIN { list_for_each_entry(struct task_struct, &current->tasks, tasks, $t, 100) { "
            + "list_for_each_entry(struct task_struct, &current->tasks, tasks, $u, 100) { @n = count(); } } exit(); }"
        let refused = try runKreach(["run", "-e", nested], timeout: 60)
        XCTAssertNotEqual(refused.status, 0, refused.stdout)
        XCTAssertTrue(refused.stderr.hasSuffix("kreach: note: if bpftrace could not load the program, a walk's loop may be past the BPF verifier's limits: lower its MAX (default 1024) or nest fewer walks\n"),
                      refused.stderr)
    }
}
