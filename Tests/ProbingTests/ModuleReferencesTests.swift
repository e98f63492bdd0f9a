import Foundation
import KernelSymbols
import KreachSupport
import KreachTestSupport
import Probing
import XCTest

/// A module's references to its data objects from its relocations, decoded through `Arch`, against
/// Tests/vm/reloc-oracle.py (objdump -dr and readelf, the instruction's real end) on Debian's brd, dummy
/// and loop .ko files (Tests/fuzz/corpus/elf).
final class ModuleReferencesTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func testEveryDataObjectMatchesTheObjdumpOracle() throws {
        guard Run.available("objdump"), Run.available("readelf"), Run.available("python3") else {
            throw XCTSkip(Host.skipReason("objdump, readelf and python3 are the oracle"))
        }
        var compared = 0, referenced = 0
        for name in ["brd.ko", "dummy.ko", "loop.ko"] {
            let path = ModuleReferencesTests.root + "/Tests/fuzz/corpus/elf/" + name
            let elf = try ELFFile(bytes: try FileBytes.read(path, limit: FileLimit("test .ko", bytes: 64 << 20)), source: name)
            let symbols = try elf.symbols()
            var seen: [String: Int] = [:]
            for (i, s) in symbols.enumerated() where s.type == 1 && !s.name.isEmpty {  // STT_OBJECT
                seen[s.name, default: 0] += 1
                let functions = try ModuleReferences.functions(referencing: i, in: elf, symbols: symbols, source: name)
                let mine = functions.map(\.name)
                let oracle = try Run.command(["python3", ModuleReferencesTests.root + "/Tests/vm/reloc-oracle.py", path, s.name, String(seen[s.name]!)])
                XCTAssertEqual(oracle.status, 0, oracle.stderr)
                let expected = oracle.stdout.split(separator: "\n").map(String.init)
                XCTAssertEqual(Set(mine), Set(expected), "\(name): \(s.name) at \(functions.flatMap(\.sites))")
                XCTAssertEqual(mine.count, Set(mine).count, "one entry per function")
                compared += 1
                if !mine.isEmpty { referenced += 1 }
            }
        }
        print("note: \(compared) data objects compared, \(referenced) referenced from code")
        XCTAssertGreaterThan(referenced, 10)
    }
}
