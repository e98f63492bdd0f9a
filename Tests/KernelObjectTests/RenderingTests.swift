import Foundation
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// ObjectFormatter's notes and ShowRenderer (what `kreach show` prints), on the live kernel.
final class RenderingTests: XCTestCase {
    func evaluator() throws -> Evaluator {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, kallsyms CAP_SYSLOG")) }
        return try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
    }

    func tid() throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last.map(String.init) ?? ""
    }

    /// An array cut at maxElements is said in the formatter's notes (once, taken once), not in the evaluator's.
    func testFormatterReturnsTruncationNote() throws {
        let ev = try evaluator()
        var options = FormatOptions()
        options.maxElements = 2
        let fmt = ObjectFormatter(memory: ev.memory, symbols: { try? ev.symbols }, options: options)
        guard case .object(let rlim) = try ev.evaluate("current->signal->rlim") else { return XCTFail("not an object") }
        // RLIMIT_FSIZE (index 1) is unlimited for this process: the second element is non-zero, so "..." follows.
        let compact = try fmt.compact(rlim)
        XCTAssertTrue(compact.hasSuffix(", ... }"), compact)
        XCTAssertEqual(fmt.takeNotes(), ["struct rlimit [16]: showing the first 2 of 16 elements"])
        _ = try fmt.json(rlim)
        XCTAssertEqual(fmt.takeNotes(), ["struct rlimit [16]: showing the first 2 of 16 elements"])
        XCTAssertEqual(fmt.takeNotes(), [])
        XCTAssertEqual(ev.warnings, [])
    }

    /// Text, JSON, fields of a walk, and an error, as show prints them.
    func testShowRendererTextJSONFieldsAndErrors() throws {
        let ev = try evaluator()
        let fmt = ObjectFormatter(evaluator: ev)
        var renderer = ShowRenderer(evaluator: ev, formatter: fmt)
        let text = renderer.render("current->pid")
        XCTAssertEqual(text.lines, ["(pid_t)" + (try tid())])
        XCTAssertNil(text.error)
        XCTAssertNil(text.json)
        let bad = renderer.render("current->nosuch")
        XCTAssertEqual(bad.lines, [])
        XCTAssertTrue(bad.error.map { "\($0)".contains("struct task_struct has no member nosuch") } ?? false, "\(String(describing: bad.error))")
        // A walk with fields: "ADDRESS pid=N" per entry; from the parent's thread-group leader, this thread is one.
        renderer.fields = ["pid"]
        let walk = renderer.render("list_for_each_entry(struct task_struct, &current->real_parent->group_leader->tasks, tasks)")
        XCTAssertNil(walk.error)
        let current = "0x" + String(try XCTUnwrap(try ev.evaluate("current").objectValue().scalar(ev.memory)), radix: 16)
        XCTAssertTrue(walk.lines.contains("\(current) pid=\(try tid())"), "\(walk.lines.prefix(5))")
        renderer.json = true
        let json = renderer.render("current->pid")
        let pidAddress = "0x" + String(try ev.evaluate("&current->pid").objectValue().scalar(ev.memory), radix: 16)
        XCTAssertEqual(json.json?.compact, "{\"expression\":\"current->pid\",\"type\":\"pid_t\",\"address\":\"\(pidAddress)\",\"value\":\(try tid())}")
        XCTAssertEqual(json.lines, [])
        // The formatter's notes come back with the rendering.
        fmt.options.maxElements = 2
        XCTAssertEqual(renderer.render("current->signal->rlim").notes, ["struct rlimit [16]: showing the first 2 of 16 elements"])
        let walkJSON = renderer.render("list_for_each_entry(struct task_struct, &current->real_parent->group_leader->tasks, tasks)")
        XCTAssertTrue(walkJSON.json?.compact.contains("{\"address\":\"\(current)\",\"fields\":{\"pid\":\(try tid())}}") ?? false)
    }
}
