import Foundation
import XCTest
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
@testable import Probing

/// Verdicts on the Debian capture, each checked against the lists themselves.
final class WhyTests: XCTestCase {
    func analyzer() throws -> (WhyAnalyzer, Kernel) {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        return (WhyAnalyzer(kernel: kernel), kernel)
    }

    func testEachKindOfVerdict() throws {
        let (a, kernel) = try analyzer()
        let lists = TracingLists(kernel: kernel)
        XCTAssertEqual(try a.why("vfs_read").word, "traceable")
        XCTAssertEqual(try a.why("vfs_read").probes, ["fentry:vfs_read", "kprobe:vfs_read"])
        // A text function not in available_filter_functions (found from the data, not typed by hand).
        let table = try kernel.symbols()
        let aff = try XCTUnwrap(lists.filterFunctions)
        let bl = try XCTUnwrap(lists.blacklist)
        let notrace = try XCTUnwrap((0..<table.kallsyms.count).lazy.map(table.kallsyms.symbol).first {
            $0.isText && $0.module == nil && !aff.contains($0.name) && !bl.contains($0.name) && $0.name == $0.baseName
                && table.kallsyms.indexes(named: $0.name).count == 1 && !$0.name.hasPrefix("_")
        })
        let v = try a.why(notrace.name)
        XCTAssertEqual(v.word, "kprobe-only", "\(notrace.name): \(v.lines)")
        XCTAssertEqual(v.probes, [], "bpftrace refuses functions missing from available_filter_functions")
        XCTAssertEqual(try a.why("asm_exc_divide_error").word, "blacklisted")
        XCTAssertEqual(try a.why("asm_exc_divide_error").probes, [])
        let isra = try a.why("brd_alloc")
        XCTAssertEqual(isra.word, "clone-only")
        XCTAssertEqual(isra.probes, ["kprobe:brd_alloc.isra.0"])
        XCTAssertTrue(isra.lines.contains { $0.hasPrefix("brd_alloc.isra.0.cold: a .cold fragment") })
        XCTAssertEqual(try a.why("brd_insert_page").probes, ["kprobe:brd_insert_page.part.0"])
        XCTAssertEqual(try a.why("brd_alloc.isra.0.cold").word, "cold-fragment")
        XCTAssertEqual(try a.why("no_such_function_xyz").word, "absent")
        XCTAssertEqual(try a.why("rd_size").word, "not-a-function")
    }

    /// A BTF FUNC with no symbol: inlined everywhere. pahole only writes FUNCs that have symbols, so the
    /// case is made from a copy of the capture whose kallsyms lacks vfs_read's line.
    func testBTFFunctionWithoutSymbolIsInlined() throws {
        let source = try DebianCapture.directory()
        let dir = NSTemporaryDirectory() + "kreach-why-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/btf", withDestinationPath: source + "/btf")
        let kallsyms = String(decoding: try FileBytes.read(source + "/kallsyms"), as: UTF8.self)
        let kept = kallsyms.split(separator: "\n").filter { !$0.hasSuffix(" vfs_read") }
        XCTAssertEqual(kept.count, kallsyms.split(separator: "\n").count - 1)
        try FileBytes.write(kept.joined(separator: "\n") + "\n", to: dir + "/kallsyms")
        let v = try WhyAnalyzer(kernel: try Kernel(source: .snapshot(dir))).why("vfs_read")
        XCTAssertEqual(v.word, "inlined")
        XCTAssertTrue(v.lines.contains { $0.hasPrefix("vfs_read has a BTF FUNC in vmlinux") }, "\(v.lines)")
        XCTAssertTrue(v.lines.contains { $0.contains("available_filter_functions unreadable") }, "the weaker conclusion is said")
    }
}
