import Foundation
import XCTest
@testable import KernelSymbols
import KreachSupport

/// Text versus data from the kernel's section bounds, on lines of sid's 7.2.13 /proc/kallsyms (captured in
/// the qemu guest): that kernel prints `T` for init_task, init_uts_ns, init_pid_ns and jiffies_64.
final class SectionBoundsTests: XCTestCase {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/kallsyms-debian-7.2.13-sections.txt").path

    func symbol(_ k: Kallsyms, _ name: String) throws -> KernelSymbol {
        k.symbol(try XCTUnwrap(k.indexes(named: name).first, "\(name) in the fixture"))
    }

    func testDataTheKernelPrintsAsTextIsData() throws {
        let text = try String(contentsOfFile: SectionBoundsTests.fixture, encoding: .utf8)
        XCTAssertTrue(text.contains(" T init_task\n"), "the capture has the kernel's own letter")
        let k = try Kallsyms(path: SectionBoundsTests.fixture)
        for name in ["init_task", "init_uts_ns", "init_pid_ns", "jiffies_64"] {
            let s = try symbol(k, name)
            XCTAssertEqual(s.typeLetter, "D", name)
            XCTAssertEqual(s.section, "data", name)
            XCTAssertFalse(s.isText, name)
        }
        // Text stays text (also init text); the other letters are kept.
        for (name, letter) in [("vfs_read", "T"), ("_stext", "T"), ("_sinittext", "T"), ("nr_threads", "B"),
                               ("free_vmap_area_root", "b"), ("cpu_number", "D"), ("__init_begin", "B")] {
            XCTAssertEqual(try symbol(k, name).typeLetter, letter, name)
        }
        XCTAssertTrue(try symbol(k, "vfs_read").isText)
    }

    func testWithoutBoundsTheLetterIsKept() throws {
        // The same lines without the data bounds: no evidence, so the kernel's letter stands.
        let lines = try String(contentsOfFile: SectionBoundsTests.fixture, encoding: .utf8).split(separator: "\n")
            .filter { !$0.hasSuffix(" _sdata") && !$0.hasSuffix(" _edata") }
        let path = NSTemporaryDirectory() + "kreach-sections-\(getpid())"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let k = try Kallsyms(path: path)
        XCTAssertEqual(try symbol(k, "init_task").typeLetter, "T")
        XCTAssertEqual(try symbol(k, "init_uts_ns").typeLetter, "T")
    }
}
