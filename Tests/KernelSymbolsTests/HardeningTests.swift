import XCTest
@testable import KernelSymbols
import KreachSupport

/// Names kallsyms lists many times: one index slot and one chain per base name, ordinals (#N) per module and
/// exact name, in kallsyms order.
final class DuplicateNameTests: XCTestCase {
    func parse(_ text: String) throws -> Kallsyms { try Kallsyms(buffer: ByteBuffer(Array(text.utf8)), source: "k") }

    func testInterleavedDuplicatesKeepOrderAndOrdinals() throws {
        // foo in vmlinux, its clones, foo in two modules, and unrelated names, interleaved.
        var lines: [String] = []
        var expected: [(name: String, module: String?, ordinal: Int)] = []
        var counts: [String: Int] = [:]
        let shapes: [(String, String?)] = [("foo", nil), ("foo.isra.0", nil), ("foo", "mod_a"), ("bar", nil), ("foo", "mod_b"),
                                          ("foo.cold", nil), ("foo", "mod_a"), ("foobar", nil)]
        for k in 0..<3000 {
            let (name, module) = shapes[k % shapes.count]
            lines.append(String(format: "%016lx t %@", 0xffff_ffff_8100_0000 + UInt64(k) * 16, name) + (module.map { "\t[\($0)]" } ?? ""))
            let key = (module ?? "vmlinux") + ":" + name
            counts[key, default: 0] += 1
            expected.append((name, module, counts[key]!))
        }
        let k = try parse(lines.joined(separator: "\n") + "\n")
        let chain = k.indexes(baseOf: "foo")
        XCTAssertEqual(chain, (0..<3000).filter { expected[$0].name.hasPrefix("foo") && expected[$0].name != "foobar" }, "every foo* clone, in kallsyms order")
        XCTAssertEqual(k.indexes(named: "foo", module: "mod_a").count, counts["mod_a:foo"])
        XCTAssertEqual(k.indexes(named: "bar").count, counts["vmlinux:bar"])
        // Ordinals asked in reverse order (the cache fills a chain at once, whichever symbol comes first).
        for i in (0..<3000).reversed() {
            let s = k.symbol(i)
            XCTAssertEqual(s.name, expected[i].name)
            XCTAssertEqual(s.module, expected[i].module)
            XCTAssertEqual(s.ordinal, expected[i].ordinal, "symbol \(i) \(s.name) [\(s.moduleName)]")
        }
        let table = SymbolTable(kallsyms: k, modules: [])
        let last = try table.resolve("mod_a:foo#\(counts["mod_a:foo"]!)")
        XCTAssertEqual(last.index, (0..<3000).last { expected[$0] == ("foo", "mod_a", counts["mod_a:foo"]!) })
    }

    func testAmbiguityListsAtMostFiftyCandidates() throws {
        let text = (0..<1000).map { String(format: "%016lx t dup\n", 0xffff_ffff_8100_0000 + UInt64($0) * 16) }.joined()
        let table = SymbolTable(kallsyms: try parse(text), modules: [])
        XCTAssertThrowsError(try table.resolve("dup")) { error in
            let lines = "\(error)".split(separator: "\n")
            XCTAssertEqual(lines.count, 1 + SymbolError.listedCandidates + 1)
            XCTAssertTrue(lines[0].hasPrefix("dup is ambiguous: 1000 symbols match"), String(lines[0]))
            XCTAssertEqual(lines.last, "  … and 950 more (kreach sym --all lists every one)")
        }
    }
}
