import Foundation
import Glibc
import XCTest
import KreachTestSupport

/// Hostile and unlucky inputs end to end: each is one clean error and exit status 1, never a signal, a hang or
/// a wrong answer. Every run is under coreutils `timeout` (exit 124 when it expires).
final class HardeningCLITests: XCTestCase {
    func kreach(_ args: [String], timeout seconds: Int = 120) throws -> Run.Result {
        try Run.command(["timeout", "-k", "5", String(seconds), try kreachBinary()] + args)
    }

    func debian() throws -> String { try DebianCapture.directory() }

    func repeated(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }

    /// A clean failure: status 1 (a signal shows as its number, a timeout as 124), nothing on stdout, and
    /// stderr starting with `first`.
    func assertCleanError(_ r: Run.Result, _ first: String, lines: Int? = nil, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, "status \(r.status); stderr: \(r.stderr.prefix(300))", line: line)
        XCTAssertEqual(r.stdout, "", line: line)
        XCTAssertTrue(r.stderr.hasPrefix(first), "stderr: \(r.stderr.prefix(300))", line: line)
        if let lines { XCTAssertEqual(r.stderr.split(separator: "\n").count, lines, r.stderr, line: line) }
    }

    // MARK: - 1. Depth

    func testDeepExpressionsAreOneErrorNotACrash() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("show reads kernel memory: needs root")) }
        let tooDeep = "kreach: expression nested deeper than 256 levels\n"
        for expr in [repeated("*", 3000) + "current", "current" + repeated("->real_parent", 3000),
                     repeated("(", 10_000) + "1" + repeated(")", 10_000), repeated("(int)", 3000) + "1",
                     "current->comm" + repeated("[0]", 3000)] {
            assertCleanError(try kreach(["show", expr]), tooDeep, lines: 3)
        }
        // Up to the limit it still works: 250 parents of the current task end at init's parent, pid 0.
        let deep = try kreach(["show", "current" + repeated("->real_parent", 250) + "->pid"])
        XCTAssertEqual(deep.status, 0, deep.stderr)
        XCTAssertEqual(deep.stdout, "(pid_t)0\n")
    }

    func testDeepScriptChainIsOneError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-h9-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("deep.bt").path
        try Data("BEGIN { @ = (int32)`pid_max\(repeated(".a", 3000)) }\n".utf8).write(to: URL(fileURLWithPath: script))
        let r = try kreach(["gen", "--kernel", try debian(), script])
        assertCleanError(r, "kreach: \(script):1:20: expression nested deeper than 256 levels\n", lines: 3)
    }
}
