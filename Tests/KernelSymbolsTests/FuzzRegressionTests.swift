import Foundation
import XCTest
import KernelSymbols
import KreachSupport
import KreachTestSupport

/// What the fuzzer (Tests/fuzz/run elf) found in the .ko reader, kept fixed: inputs from real Debian modules
/// (Tests/fuzz/corpus/elf, see its README) with one field changed as the fuzzer changed it, and the minimised
/// inputs in Tests/fuzz/regressions/elf. Oracle for the untouched modules: modinfo's parmtype lines.
final class FuzzRegressionTests: XCTestCase {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz").path

    func module(_ name: String) throws -> (path: String, bytes: [UInt8]) {
        let path = FuzzRegressionTests.fuzzDirectory + "/corpus/elf/" + name
        return (path, try FileBytes.read(path))
    }

    /// struct kernel_param on x86-64 (40 bytes, ops at 16, arg at 32) and kernel_param_ops (get at 16).
    func parameterTypes(_ bytes: [UInt8]) throws -> [String: String] {
        let elf = try ELFFile(bytes: bytes, source: "test")
        return try ModuleObject(module: "test", elf: elf, sectionBases: [:])
            .parameterTypes(paramSize: 40, opsOffset: 16, argOffset: 32, getOffset: 16).mapValues(\.cName)
    }

    func testParameterTypesMatchModinfo() throws {
        guard Run.available("modinfo") else { throw XCTSkip(Host.skipReason("modinfo (kmod) is not installed")) }
        let btfNames = ["int": "int", "uint": "unsigned int", "ulong": "long unsigned int", "long": "long int",
                        "bool": "_Bool", "charp": "char *", "ushort": "short unsigned int", "short": "short int", "byte": "unsigned char"]
        for name in ["brd.ko", "dummy.ko", "loop.ko"] {
            let (path, bytes) = try module(name)
            let result = try Run.command(["timeout", "10", "modinfo", "-F", "parmtype", path])
            XCTAssertEqual(result.status, 0, result.stderr)
            let expected = result.stdout.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 1).map(String.init) }
            XCTAssertFalse(expected.isEmpty, "\(name): modinfo lists no parameter types")
            let types = try parameterTypes(bytes)
            for pair in expected where pair.count == 2 {
                XCTAssertEqual(types[pair[0]], btfNames[pair[1]], "\(name): parameter \(pair[0]) (modinfo: \(pair[1]))")
            }
        }
    }

    /// A __param relocation whose symbol value plus addend is negative (the fuzzer's "Negative value is not
    /// representable" trap in ModuleObject.parameterTypes): the parameter is skipped, the others still typed.
    func testNegativeParameterOpsAddendIsSkipped() throws {
        var (_, bytes) = try module("loop.ko")
        let elf = try ELFFile(bytes: bytes, source: "loop.ko")
        let rela = try XCTUnwrap(elf.sections.first { $0.name == ".rela__param" })
        // The entry relocating param 0's ops field (offset 16): ops of loop's own in .rodata.
        var patched = false
        for entry in stride(from: rela.offset, to: rela.offset + rela.size, by: 24)
        where bytes[entry..<(entry + 8)].elementsEqual([16, 0, 0, 0, 0, 0, 0, 0]) {
            withUnsafeBytes(of: Int64(-0x1000).littleEndian) { bytes.replaceSubrange((entry + 16)..<(entry + 24), with: $0) }
            patched = true
        }
        XCTAssertTrue(patched, "no relocation of param 0's ops in loop.ko's .rela__param")
        // Param 0 is hw_queue_depth (module_param_cb with loop's own ops, whose .get is param_get_int).
        let original = try parameterTypes(module("loop.ko").bytes)
        XCTAssertEqual(original["hw_queue_depth"], "int")
        var expected = original
        expected["hw_queue_depth"] = nil
        XCTAssertEqual(try parameterTypes(bytes), expected)
    }

    /// A section header with sh_entsize ≥ 2^63 (the fuzzer's "Not enough bits" trap in ELFFile.init): read as is.
    func testHugeSectionEntrySizeIsRead() throws {
        var (_, bytes) = try module("dummy.ko")
        let original = try ELFFile(bytes: bytes, source: "dummy.ko")
        let shoff = (0..<8).reduce(0) { $0 | Int(bytes[40 + $1]) << (8 * $1) }
        for i in 0..<8 { bytes[shoff + 64 + 56 + i] = 0xff }  // section 1's sh_entsize
        let elf = try ELFFile(bytes: bytes, source: "dummy.ko")
        XCTAssertEqual(elf.sections.map(\.name), original.sections.map(\.name))
        XCTAssertEqual(try elf.symbols().count, try original.symbols().count)
    }

    /// Every minimised input the fuzzer saved reads through as the elf harness reads it, without a trap.
    func testSavedInputsReadWithoutTrapping() throws {
        let dir = FuzzRegressionTests.fuzzDirectory + "/regressions/elf"
        let names = try FileBytes.list(dir).sorted()
        XCTAssertFalse(names.isEmpty)
        for name in names {
            guard let elf = try? ELFFile(bytes: try FileBytes.read(dir + "/" + name), source: name) else { continue }
            _ = elf.buildID
            for i in elf.sections.indices { _ = elf.relocations(for: i) }
            _ = try? parameterTypes(try FileBytes.read(dir + "/" + name))
        }
    }
}
