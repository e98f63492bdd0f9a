import Foundation
import XCTest
import KernelSource
import Memory
import KreachTestSupport
@testable import KernelObject

/// Untyped globals on the Debian capture: the size reported is the true extent, reads are capped and
/// the note says so; casts are checked against the true extent.
final class UntypedSizeTests: XCTestCase {
    func evaluator() throws -> Evaluator {
        try Evaluator(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())), memory: UnavailableMemory(reason: "snapshot"))
    }

    /// The gap from `name` to the next higher kallsyms address, computed from the capture's text.
    func gapToNextSymbol(_ name: String) throws -> UInt64 {
        let text = try String(contentsOfFile: try DebianCapture.directory() + "/kallsyms", encoding: .utf8)
        var addresses: [UInt64] = []
        var own: UInt64?
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 3, let a = UInt64(f[0], radix: 16) else { continue }
            addresses.append(a)
            if f[2] == Substring(name) && f.count == 3 { own = a }
        }
        let mine = try XCTUnwrap(own)
        return try XCTUnwrap(addresses.filter { $0 > mine }.min()) - mine
    }

    func testVmlinuxExtentIsTheGapToTheNextSymbol() throws {
        let ev = try evaluator()
        let gap = try gapToNextSymbol("init_uts_ns")
        XCTAssertEqual(gap, 432)
        guard case .object(let o) = try ev.evaluate("init_uts_ns") else { return XCTFail("not an object") }
        XCTAssertEqual(o.extent, gap)
        let note = try XCTUnwrap(o.note)
        XCTAssertTrue(note.contains("at most \(gap) bytes, up to the next kallsyms symbol"), note)
        XCTAssertTrue(note.contains("showing the first 8"), note)
        XCTAssertEqual(try o.type.size(), 8)
        // struct uts_namespace fits: no warning; a struct larger than the gap is flagged.
        ev.clearWarnings()
        guard case .object(let cast) = try ev.evaluate("(struct uts_namespace)init_uts_ns") else { return XCTFail("not an object") }
        XCTAssertEqual(UInt64(try cast.type.size()), gap)
        XCTAssertEqual(ev.warnings, [])
        _ = try ev.evaluate("(struct task_struct)init_uts_ns")
        XCTAssertTrue(ev.warnings.contains { $0.contains("reads past init_uts_ns") }, "\(ev.warnings)")
    }

    /// A size from a module's symbol table: the warning compares the cast with the true size, not the
    /// capped read (an exact cast of a 33,456-byte object is silent).
    func testSymbolTableExtentIsComparedUncapped() throws {
        let ev = try evaluator()
        guard case .object(let uts) = try ev.evaluate("init_uts_ns") else { return XCTFail("not an object") }
        var big = Object(type: .untyped(size: 4096), address: uts.address)
        big.note = "arc_stats (no type known; 432 bytes from the module's symbol table)"
        big.extent = 432
        big.extentSource = .symbolTable
        let expr = try ExpressionParser.parse("x", isTypeName: { _ in false })
        let target = try ev.resolveType(TypeName(module: nil, words: ["struct", "uts_namespace"], pointers: 0, arrayCount: nil, text: "struct uts_namespace"), expr, "x")
        _ = try ev.cast(big, to: target, expr, "x")
        XCTAssertEqual(ev.warnings, [], "an exact-size cast of a capped read is not a mismatch")
        big.extent = 440
        _ = try ev.cast(big, to: target, expr, "x")
        XCTAssertEqual(ev.warnings, ["arc_stats is 440 bytes (module symbol table) but struct uts_namespace is 432 bytes"])
    }
}
