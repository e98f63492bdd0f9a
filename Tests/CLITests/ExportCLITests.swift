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

    /// Starts `kreach export` on a free loopback port; returns the child and its metrics URL.
    func startExporter(_ config: String) throws -> (Child, String) {
        let child = try Child([try kreachBinary(), "export", "--config", config, "--web.listen-address", "127.0.0.1:0"])
        try child.waitForOutput(containing: "/metrics\n", timeout: Run.defaultTimeout)
        guard let url = child.stdoutText.split(separator: "\n").first?.split(separator: " ").last.map(String.init) else {
            throw FixtureError("no URL in: \(child.stdoutText)")
        }
        return (child, url)
    }

    func curl(_ url: String) throws -> String {
        let r = try Run.command(["curl", "-sS", "--max-time", "30", url], timeout: 40)
        guard r.status == 0 else { throw FixtureError("curl \(url): \(r.stderr)") }
        return r.stdout
    }

    /// SIGHUP reloads the config (a bad one is refused on one line, the old one kept); SIGTERM and SIGINT
    /// close the listener and exit 0.
    func testReloadsOnSIGHUPAndStopsOnSIGTERMAndSIGINT() throws {
        guard Run.available("curl") else { throw XCTSkip("curl not installed") }
        let tgid = "metrics:\n  - name: tgid\n    help: h\n    type: gauge\n    expr: current->tgid\n"
        for stopSignal in [SIGTERM, SIGINT] {
            let config = try write(tgid)
            let (child, url) = try startExporter(config)
            defer { child.signal(SIGKILL); _ = try? child.wait(timeout: 10) }
            XCTAssertTrue(try curl(url).contains("\nkreach_tgid \(child.pid)\n"))
            if stopSignal == SIGTERM {
                // A second exporter on the same address: one line, exit 1.
                let address = String(url.dropFirst("http://".count).dropLast("/metrics".count))
                let second = try runKreach(["export", "--config", config, "--web.listen-address", address])
                XCTAssertEqual(second.status, 1)
                XCTAssertEqual(second.stderr, "kreach: can't listen on \(address): Address already in use\n")
                _ = try write(tgid + "  - name: tgid_again\n    help: h\n    type: gauge\n    expr: current->tgid\n")
                child.signal(SIGHUP)
                try child.waitForOutput(containing: "reloaded \(config): 2 metrics\n", timeout: Run.defaultTimeout)
                XCTAssertTrue(try curl(url).contains("\nkreach_tgid_again \(child.pid)\n"))
                _ = try write("metrics:\n  - name: tgid\n    help: h\n    type: summary\n    expr: current->tgid\n")
                child.signal(SIGHUP)
                try child.waitForError(containing: "\n", timeout: Run.defaultTimeout)
                XCTAssertEqual(child.stderrText, "kreach export: config not reloaded, still serving the previous one: \(config):4: `type` must be gauge or counter, not `summary`\n")
                XCTAssertTrue(try curl(url).contains("\nkreach_tgid_again \(child.pid)\n"), "the previous config is still served")
            }
            child.signal(stopSignal)
            XCTAssertEqual(try child.wait(timeout: Run.defaultTimeout), 0, child.stderrText)
            XCTAssertTrue(child.stdoutText.hasSuffix("stopping on \(stopSignal == SIGTERM ? "SIGTERM" : "SIGINT")\n"), child.stdoutText)
            // The listener is closed: a new connection is refused.
            let refused = try Run.command(["curl", "-sS", "--max-time", "30", url], timeout: 40)
            XCTAssertEqual(refused.status, 7, "curl exit 7 is 'failed to connect': \(refused.stdout) \(refused.stderr)")
        }
    }

    /// A metric whose read fails is counted at every scrape and written to stderr (the journal under systemd)
    /// once, with its name, not at every scrape. Address 0 is never mapped in the kernel.
    func testLogsAReadErrorOnce() throws {
        guard Run.available("curl") else { throw XCTSkip("curl not installed") }
        let config = try write("metrics:\n  - name: null_read\n    help: h\n    type: gauge\n    expr: \"*(int *)0\"\n")
        let (child, url) = try startExporter(config)
        defer { child.signal(SIGKILL); _ = try? child.wait(timeout: 10) }
        for scrape in 1...3 {
            let text = try curl(url)
            XCTAssertTrue(text.contains("\nkreach_exporter_read_errors_total{metric=\"kreach_null_read\"} \(scrape)\n"), text)
            XCTAssertFalse(text.contains("\nkreach_null_read "), text)
        }
        child.signal(SIGTERM)
        XCTAssertEqual(try child.wait(timeout: Run.defaultTimeout), 0, child.stderrText)
        let logged = child.stderrText.split(separator: "\n").filter { $0.hasPrefix("kreach export: kreach_null_read: ") }
        XCTAssertEqual(logged.count, 1, child.stderrText)
    }

    /// A real Prometheus (Debian's package) scrapes the exporter every second; its query API returns the
    /// values the kernel gives: the exporter's pid (current->tgid) and its parent's, through a pointer
    /// (oracle: PPid in /proc/PID/status). Both need no data symbol in kallsyms (the dev host has none;
    /// per_cpu() needs __per_cpu_offset) and hold on stock kernels.
    func testPrometheusScrapesTheExporter() throws {
        guard Run.available("prometheus") else { throw XCTSkip("prometheus not installed (Debian package prometheus; Tests/run installs it)") }
        guard Run.available("curl") else { throw XCTSkip("curl not installed") }
        let config = try write("""
            metrics:
              - name: tgid
                help: the exporter's process id, read through current
                type: gauge
                expr: current->tgid
              - name: parent_tgid
                help: the exporter's parent process id, through current->real_parent
                type: gauge
                expr: current->real_parent->tgid
                labels: {relation: parent}
            """)
        let (exporter, url) = try startExporter(config)
        defer { exporter.signal(SIGKILL); _ = try? exporter.wait(timeout: 10) }
        let target = String(url.dropFirst("http://".count).dropLast("/metrics".count))
        let port = try freeLoopbackPort()
        let prometheusConfig = dir + "/prometheus.yml"
        try """
            global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
            scrape_configs:
              - job_name: kreach
                static_configs: [{targets: ['\(target)']}]
            """.write(toFile: prometheusConfig, atomically: false, encoding: .utf8)
        let prometheus = try Child(["prometheus", "--config.file", prometheusConfig, "--storage.tsdb.path", dir + "/data",
                                    "--web.listen-address", "127.0.0.1:\(port)"])
        defer { prometheus.signal(SIGKILL); _ = try? prometheus.wait(timeout: 30) }
        try prometheus.waitForError(containing: "Server is ready to receive web requests", timeout: Run.defaultTimeout)
        let api = "http://127.0.0.1:\(port)/api/v1/"
        // Bounded polling of the API: the target is up, then each query has a sample.
        let health = try poll("target health up") { () -> Bool? in
            let targets = try json(try curl(api + "targets"))
            let active = ((targets["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]]) ?? []
            return active.first?["health"] as? String == "up" ? true : nil
        }
        XCTAssertTrue(health)
        func query(_ q: String) throws -> String {
            try poll("a sample of \(q)") { () -> String? in
                let answer = try json(try curl(api + "query?query=" + q))
                let result = ((answer["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
                return (result.first?["value"] as? [Any])?.last as? String
            }
        }
        XCTAssertEqual(try query("kreach_tgid"), String(exporter.pid))
        let status = try String(contentsOfFile: "/proc/\(exporter.pid)/status", encoding: .utf8)
        let ppid = status.split(separator: "\n").first { $0.hasPrefix("PPid:") }.map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) }
        XCTAssertEqual(try query("kreach_parent_tgid%7Brelation=%22parent%22%7D"), ppid)
        XCTAssertEqual(try query("kreach_exporter_up"), "1")
    }

    /// `body` again until it gives a value: tries 250 ms apart, for at most Run.defaultTimeout (120 s; more
    /// under TCG through $KREACH_TEST_TIMEOUT).
    func poll<T>(_ what: String, _ body: () throws -> T?) throws -> T {
        let tries = Int(Run.defaultTimeout * 4)
        for _ in 0..<tries {
            if let v = try body() { return v }
            _ = Glibc.poll(nil, 0, 250)
        }
        throw FixtureError("prometheus: no \(what) after \(tries) polls (\(Int(Run.defaultTimeout)) s)")
    }

    func json(_ text: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw FixtureError("not a JSON object: \(text)")
        }
        return object
    }

    /// A loopback TCP port nobody listens on now (bound to port 0, then released).
    func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw FixtureError("bind 127.0.0.1:0: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
