import Foundation
import Glibc
import XCTest
import KreachSupport
import KreachTestSupport

/// `kreach export` on the live kernel: served over HTTP (curl, with a timeout), values checked against /proc.
final class ExportCLITests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        guard geteuid() == 0 else { throw XCTSkip("reading kernel memory needs root") }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-export-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ text: String) throws -> String {
        let path = dir + "/c.yaml"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }

    func testServesMetricsOverHTTP() throws {
        guard Run.available("curl") else { throw XCTSkip("curl not installed") }
        let config = try write("""
            metrics:
              - name: tgid
                help: the exporter's process id, read through current
                type: gauge
                expr: current->tgid
              - name: thread_prio
                help: priority of each exporter thread
                type: gauge
                walk: list_for_each_entry(struct task_struct, &current->signal->thread_head, thread_node)
                label_fields: {tid: pid, comm: comm}
                value: prio
              - name: loop_max_loop
                help: "absent on hosts without the loop module: no series, no error"
                type: gauge
                expr: loop:max_loop
            """)
        let child = try Child([try kreachBinary(), "export", "--config", config, "--web.listen-address", "127.0.0.1:0"])
        defer { child.signal(SIGKILL); _ = try? child.wait(timeout: 10) }
        try child.waitForOutput(containing: "/metrics\n", timeout: Run.defaultTimeout)
        guard let url = child.stdoutText.split(separator: " ").last.map({ $0.trimming("\n") }) else { return XCTFail(child.stdoutText) }
        let r = try Run.command(["curl", "-sS", "--max-time", "30", "-D", "-", String(url)], timeout: 40)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Content-Type: text/plain; version=0.0.4"), r.stdout)
        XCTAssertTrue(r.stdout.contains("\nkreach_tgid \(child.pid)\n"), r.stdout)
        // Oracle: the threads in /proc/PID/task, with their comm.
        let tids = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/task")
        XCTAssertFalse(tids.isEmpty)
        for tid in tids {
            let comm = try String(contentsOfFile: "/proc/\(child.pid)/task/\(tid)/comm", encoding: .utf8).trimming("\n")
            XCTAssertTrue(r.stdout.contains("kreach_thread_prio{tid=\"\(tid)\",comm=\"\(comm)\"} "), "\(tid) \(comm): \(r.stdout)")
        }
        let modules = (try? String(contentsOfFile: "/proc/modules", encoding: .utf8)) ?? ""
        if !modules.split(separator: "\n").contains(where: { $0.hasPrefix("loop ") }) {
            XCTAssertFalse(r.stdout.contains("\nkreach_loop_max_loop"), r.stdout)
            XCTAssertTrue(r.stdout.contains("kreach_exporter_read_errors_total{metric=\"kreach_loop_max_loop\"} 0"), r.stdout)
        }
        XCTAssertTrue(r.stdout.contains("\nkreach_exporter_up 1\n"), r.stdout)
        // The landing page, and nothing else.
        let landing = try Run.command(["curl", "-sS", "--max-time", "30", String(url.dropLast("metrics".count))], timeout: 40)
        XCTAssertTrue(landing.stdout.contains("<a href=\"/metrics\">"), landing.stdout)
        let other = try Run.command(["curl", "-s", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", String(url) + "/../../x"], timeout: 40)
        XCTAssertEqual(other.stdout, "404")
        if Run.available("promtool") {
            let body = r.stdout.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            let lint = try Run.command(["promtool", "check", "metrics"], stdin: body, timeout: 60)
            XCTAssertEqual(lint.status, 0, lint.stdout + lint.stderr)
        }
    }

    func testCheckConfigAndTextfile() throws {
        let good = try write("metrics:\n  - name: tgid\n    help: h\n    type: gauge\n    expr: current->tgid\n")
        let ok = try runKreach(["export", "--config", good, "--check-config"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let out = dir + "/kreach.prom"
        let once = try runKreach(["export", "--config", good, "--textfile", out])
        XCTAssertEqual(once.status, 0, once.stderr)
        let text = try String(contentsOfFile: out, encoding: .utf8)
        XCTAssertTrue(text.contains("# TYPE kreach_tgid gauge\nkreach_tgid "), text)
        let bad = try write("metrics:\n  - name: tgid\n    help: h\n    type: summary\n    expr: current->tgid\n")
        let rejected = try runKreach(["export", "--config", bad, "--check-config"])
        XCTAssertEqual(rejected.status, 1)
        XCTAssertEqual(rejected.stderr, "kreach: \(bad):4: `type` must be gauge or counter, not `summary`\n")
    }
}
