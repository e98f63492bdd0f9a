import XCTest
import KreachSupport
import KreachTestSupport
@testable import Exporter

/// The text exposition format: escapes, families without samples left out, and promtool's verdict.
final class TextFormatTests: XCTestCase {
    let families = [
        Family(name: "kreach_a", help: "back\\slash and\nnewline", type: .gauge,
               samples: [Sample(labels: [("comm", "quote\" \\ \n")], value: "-5"), Sample(labels: [("comm", "b")], value: "18446744073709551615")]),
        Family(name: "kreach_gone", help: "module unloaded", type: .gauge, samples: []),
        Family(name: "kreach_c_total", help: "a counter", type: .counter, samples: [Sample(labels: [], value: "3")]),
    ]

    func testRender() {
        XCTAssertEqual(TextFormat.render(families), """
            # HELP kreach_a back\\\\slash and\\nnewline
            # TYPE kreach_a gauge
            kreach_a{comm="quote\\" \\\\ \\n"} -5
            kreach_a{comm="b"} 18446744073709551615
            # HELP kreach_c_total a counter
            # TYPE kreach_c_total counter
            kreach_c_total 3

            """)
        XCTAssertEqual(TextFormat.float(.infinity), "+Inf")
        XCTAssertEqual(TextFormat.float(0.25), "0.25")
    }

    /// promtool (Debian's prometheus package) lints the rendered text.
    func testPromtoolAcceptsOutput() throws {
        guard Run.available("promtool") else { throw XCTSkip("promtool not installed (apt-get install prometheus)") }
        let r = try Run.command(["promtool", "check", "metrics"], stdin: TextFormat.render(families), timeout: 60)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        // And it can fail: a malformed sample line.
        let bad = try Run.command(["promtool", "check", "metrics"], stdin: "# TYPE x gauge\nx{a=\"b} 1\n", timeout: 60)
        XCTAssertNotEqual(bad.status, 0)
    }

    func testTextfileIsReplacedAtomically() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-textfile-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/kreach.prom"
        try TextFile.write("old\n", to: path)
        try TextFile.write(TextFormat.render(families), to: path)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), TextFormat.render(families))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["kreach.prom"])  // no temp left
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0
        XCTAssertEqual(mode, 0o644)
        // A symlink planted at the temp name is not followed.
        let temp = dir + "/.kreach.prom.\(getpid()).tmp"
        try FileManager.default.createSymbolicLink(atPath: temp, withDestinationPath: dir + "/elsewhere")
        XCTAssertThrowsError(try TextFile.write("x\n", to: path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/elsewhere"))
    }
}
