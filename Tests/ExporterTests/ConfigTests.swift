import XCTest
@testable import Exporter

/// Config validation: the minimal form as written, and each bad config rejected at its line.
final class ConfigTests: XCTestCase {
    func testMinimalFormAsWritten() throws {
        let yaml = """
            metrics:
              - name: loop_max_loop
                help: loop devices the loop module was loaded for
                type: gauge
                expr: loop:max_loop
            """
        let config = try ExporterConfig(yaml: yaml, file: "c.yaml")
        XCTAssertEqual(config.metrics.count, 1)
        let m = config.metrics[0]
        XCTAssertEqual(m.name, "kreach_loop_max_loop")
        XCTAssertEqual(m.type, .gauge)
        XCTAssertEqual(m.source, .expression("loop:max_loop"))
        XCTAssertEqual(m.modules, ["loop"])
        XCTAssertEqual(m.line, 2)
    }

    func testWalkAndLabels() throws {
        let yaml = """
            metrics:
              - name: thread_prio
                help: "a \\\\ help"
                type: counter
                walk: list_for_each_entry(struct task_struct, &current->signal->thread_head, thread_node)
                label_fields: {tid: pid, comm: comm}
                labels: {host_role: db}
                value: prio
            """
        let m = try ExporterConfig(yaml: yaml, file: "c.yaml").metrics[0]
        guard case let .walk(w, value, fields) = m.source else { return XCTFail("not a walk: \(m.source)") }
        XCTAssertTrue(w.hasPrefix("list_for_each_entry("))
        XCTAssertEqual(value, "prio")
        XCTAssertEqual(fields.map(\.0), ["tid", "comm"])
        XCTAssertEqual(m.constantLabels.map(\.0), ["host_role"])
        XCTAssertEqual(m.modules, [])
    }

    func testModuleNames() {
        XCTAssertEqual(ExporterConfig.moduleNames(in: "loop:max_loop + brd`rd_size"), ["loop", "brd"])
        XCTAssertEqual(ExporterConfig.moduleNames(in: "per_cpu(runqueues, 0).nr_running"), [])
        XCTAssertEqual(ExporterConfig.moduleNames(in: "vmlinux:jiffies"), [])
        XCTAssertEqual(ExporterConfig.moduleNames(in: "(struct module *)nfsd:__this_module"), ["nfsd"])
    }

    /// Each bad config: the line the error must name, and a word of its message.
    func testErrorsNameTheLine() {
        let head = "metrics:\n  - name: a\n    help: h\n"
        let cases: [(String, Int, String)] = [
            ("metrics: [\n  {name: a\n", 3, "not valid YAML"),
            ("metric:\n  - name: a\n", 1, "unknown key `metric`"),
            ("metrics: 3\n", 1, "must be a list"),
            (head + "    type: gauge\n", 2, "needs `expr:`"),
            (head + "    type: histogram\n    expr: jiffies\n", 4, "gauge or counter"),
            (head + "    type: gauge\n    expr: jiffies\n    colour: red\n", 6, "unknown key `colour`"),
            (head + "    type: gauge\n    expr: jiffies\n  - name: a\n    help: h\n    type: gauge\n    expr: jiffies\n", 6, "already defined at line 2"),
            ("metrics:\n  - name: 9lives\n    help: h\n    type: gauge\n    expr: x\n", 2, "bad metric name"),
            ("metrics:\n  - name: exporter_up\n    help: h\n    type: gauge\n    expr: x\n", 2, "exporter's own"),
            (head + "    type: gauge\n    expr: x\n    labels: {__name__: y}\n", 6, "bad label name"),
            (head + "    type: gauge\n    walk: list_for_each_entry(struct task_struct, &current->tasks, tasks)\n    label_fields: {pid: pid}\n", 2, "needs `value:`"),
            (head + "    type: gauge\n    expr: x\n    walk: y\n", 2, "not both"),
            ("metrics:\n  - name: a\n    type: gauge\n    expr: x\n", 2, "missing `help:`"),
        ]
        for (yaml, line, word) in cases {
            do {
                _ = try ExporterConfig(yaml: yaml, file: "bad.yaml")
                XCTFail("accepted:\n\(yaml)")
            } catch {
                XCTAssertEqual(error.line, line, "\(error) for:\n\(yaml)")
                XCTAssertTrue(error.description.contains(word), "\(error) lacks \(word)")
                XCTAssertTrue(error.description.hasPrefix("bad.yaml:\(line): "), "\(error)")
            }
        }
    }
}
