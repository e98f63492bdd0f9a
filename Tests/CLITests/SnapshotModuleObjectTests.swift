import Foundation
import Glibc
import KreachSupport
import KreachTestSupport
import XCTest

/// A snapshot carrying a loaded module's .ko (`ko/index`, `ko/BUILDID.ko.zst`) answers offline what needs
/// the .ko: `where MOD:GLOBAL` (its relocations) and a parameter's type (its parameter table), for scripts
/// too. Built from the Debian 6.1 capture plus Debian's own brd.ko of that build (Tests/fuzz/corpus/elf),
/// compressed by the zstd tool; oracles: objdump's relocations (Tests/vm/reloc-oracle.py), readelf's build-id,
/// the capture's kallsyms line.
final class SnapshotModuleObjectTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let corpus = root + "/Tests/fuzz/corpus/elf/"
    var scratch = ""

    override func setUpWithError() throws {
        guard Run.available("zstd"), Run.available("readelf"), Run.available("objdump"), Run.available("python3") else {
            throw XCTSkip(Host.skipReason("zstd, readelf, objdump and python3 build the snapshot and are the oracle"))
        }
        scratch = NSTemporaryDirectory() + "kreach-snapko-\(getpid())-\(name.filter { $0.isLetter })"
        try? FileManager.default.removeItem(atPath: scratch)
        try FileManager.default.createDirectory(atPath: scratch + "/ko", withIntermediateDirectories: true)
        // The capture's entries, linked (a snapshot's entries may be links: followed for reading).
        let capture = try DebianCapture.directory()
        for entry in try FileManager.default.contentsOfDirectory(atPath: capture) where !entry.hasPrefix(".") {
            try FileManager.default.createSymbolicLink(atPath: scratch + "/" + entry, withDestinationPath: capture + "/" + entry)
        }
    }

    override func tearDownWithError() throws { if !scratch.isEmpty { try? FileManager.default.removeItem(atPath: scratch) } }

    /// readelf's GNU build-id of an object.
    func buildID(_ path: String) throws -> String {
        let r = try Run.command(["readelf", "-n", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("Build ID:") }, "\(path) has no build-id")
        return String(try XCTUnwrap(line.split(separator: " ").last))
    }

    /// Puts `object` into the snapshot as ko/ID.ko.zst and indexes `module` under ID (`id` overrides the index's).
    func carry(_ object: String, as module: String, file id: String? = nil, index: String? = nil) throws {
        let fileID = try id ?? buildID(object)
        let z = try Run.command(["zstd", "-q", "-f", object, "-o", scratch + "/ko/\(fileID).ko.zst"])
        XCTAssertEqual(z.status, 0, z.stderr)
        try FileBytes.write("\(module) \(index ?? fileID)\n", to: scratch + "/ko/index")
    }

    func testWhereAndParameterTypesOfferTheCarriedKo() throws {
        let brd = SnapshotModuleObjectTests.corpus + "brd.ko"
        try carry(brd, as: "brd")
        let where_ = try runKreach(["where", "--kernel", scratch, "brd:rd_size"], timeout: 120)
        XCTAssertEqual(where_.status, 0, where_.stderr)
        let functions = Set(where_.stdout.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("  "), let plus = line.firstIndex(of: "+") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 2)..<plus])
        })
        let oracle = try Run.command(["python3", SnapshotModuleObjectTests.root + "/Tests/vm/reloc-oracle.py", brd, "rd_size"])
        XCTAssertEqual(oracle.status, 0, oracle.stderr)
        XCTAssertEqual(functions, Set(oracle.stdout.split(separator: "\n").map(String.init)))
        XCTAssertFalse(functions.isEmpty)

        // rd_size is `unsigned long` (param_ops_ulong in brd's __param), at its kallsyms address.
        let kallsyms = try String(contentsOfFile: scratch + "/kallsyms", encoding: .utf8)
        let line = try XCTUnwrap(kallsyms.split(separator: "\n").first { $0.hasSuffix(" rd_size\t[brd]") })
        let gen = try runKreach(["gen", "--kernel", scratch, "-e", "BEGIN { printf(\"%lu\\n\", brd`rd_size); exit(); }"], timeout: 120)
        XCTAssertEqual(gen.status, 0, gen.stderr)
        XCTAssertEqual(gen.stdout.split(separator: "\n").first.map(String.init),
                       "BEGIN { printf(\"%lu\\n\", (*(uint64 *)0x\(line.prefix(16)))); exit(); }")
    }

    /// Without the .ko the same questions have no answer offline (what the carried file adds).
    func testWithoutTheKoWhereSaysItIsNeeded() throws {
        let r = try runKreach(["where", "--kernel", scratch, "brd:rd_size"], timeout: 120)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "kreach: brd's .ko (with the loaded module's build-id) is needed to find references; not found for this kernel\n")
    }

    /// A file whose build-id isn't the one the index records for the module is an error, never used.
    func testAKoOfAnotherBuildIsAnError() throws {
        let brdID = try buildID(SnapshotModuleObjectTests.corpus + "brd.ko")
        let loopID = try buildID(SnapshotModuleObjectTests.corpus + "loop.ko")
        try carry(SnapshotModuleObjectTests.corpus + "loop.ko", as: "brd", file: brdID)
        for args in [["where", "--kernel", scratch, "brd:rd_size"], ["gen", "--kernel", scratch, "-e", "BEGIN { print(brd`rd_size); }"]] {
            let r = try runKreach(args, timeout: 120)
            XCTAssertEqual(r.status, 1, r.stdout)
            XCTAssertTrue(r.stderr.hasPrefix("kreach: \(scratch)/ko/\(brdID).ko.zst: its build-id is \(loopID), not \(brdID), the one ko/index records for the loaded brd: not that module's .ko"), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
    }

    /// A damaged index line is one line naming it; a name can't lead outside ko/.
    func testABadIndexLineIsAnError() throws {
        try carry(SnapshotModuleObjectTests.corpus + "brd.ko", as: "brd", index: "../../etc/passwd")
        let r = try runKreach(["where", "--kernel", scratch, "brd:rd_size"], timeout: 120)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr, "kreach: \(scratch)/ko/index:1: not `MODULE BUILDID`: brd ../../etc/passwd\n")
    }
}
