import Glibc
import XCTest
@testable import KernelSymbols
import KreachSupport
import KreachTestSupport

/// kallsyms parsing and queries on the Debian capture (modules, data symbols, duplicates, clones) and
/// on the live kernel; oracles are the files themselves (line counts, fnmatch, brute-force scans).
final class KallsymsTests: XCTestCase {
    nonisolated(unsafe) static var cached: (Kallsyms, SymbolTable, String)?

    func capture() throws -> (kallsyms: Kallsyms, table: SymbolTable, text: String) {
        if let cached = KallsymsTests.cached { return cached }
        let dir = try DebianCapture.directory()
        let k = try Kallsyms(path: dir + "/kallsyms")
        let modules = try ModuleList.parse(String(decoding: try FileBytes.read(dir + "/modules"), as: UTF8.self), source: "modules")
        let text = String(decoding: try FileBytes.read(dir + "/kallsyms"), as: UTF8.self)
        let result = (k, SymbolTable(kallsyms: k, modules: modules), text)
        KallsymsTests.cached = result
        return result
    }

    func testEveryLineIsParsedWithItsFields() throws {
        let (k, _, text) = try capture()
        let lines = text.split(separator: "\n")
        XCTAssertEqual(k.count, lines.count)
        XCTAssertEqual(k.count, 104_676)
        // Every line, field by field: the parsed fields put back together give the line's exact text.
        var mismatches: [String] = []
        for (i, line) in lines.enumerated() {
            var rebuilt = Hex.address(k.address(i)) + " " + String(UnicodeScalar(k.typeLetter(i))) + " " + k.name(i)
            if let m = k.module(i) { rebuilt += "\t[" + m + "]" }
            if rebuilt != line { mismatches.append("line \(i + 1): \(line) parsed as \(rebuilt)") }
        }
        XCTAssertEqual(mismatches.count, 0, mismatches.prefix(5).joined(separator: "\n"))
        // Modules, in order of first appearance, are exactly those named in the file.
        let named = Set(lines.compactMap { l -> String? in
            guard let open = l.firstIndex(of: "[") else { return nil }
            return String(l[l.index(after: open)..<l.index(before: l.endIndex)])
        })
        XCTAssertEqual(Set(k.moduleNames.dropFirst()), named)
        XCTAssertTrue(named.isSuperset(of: ["brd", "loop", "lockd", "nfsd", "dummy", "sunrpc"]))
    }

    func testDuplicateNamesAreAnErrorListingEveryCandidate() throws {
        let (_, table, _) = try capture()
        for query in ["nlm_blocked", "lockd:nlm_blocked"] {
            XCTAssertThrowsError(try table.resolve(query)) { error in
                guard case let .ambiguous(_, candidates) = error as? SymbolError else { return XCTFail("\(error)") }
                XCTAssertEqual(candidates.map(\.address), [0xffff_ffff_c068_b0e0, 0xffff_ffff_c068_b590])
                XCTAssertEqual(candidates.map(\.module), ["lockd", "lockd"])
                let text = "\(error)"
                XCTAssertTrue(text.contains("lockd:nlm_blocked#1 or lockd:nlm_blocked@ffffffffc068b0e0"), text)
                XCTAssertTrue(text.contains("lockd:nlm_blocked#2 or lockd:nlm_blocked@ffffffffc068b590"), text)
            }
        }
        XCTAssertEqual(try table.resolve("lockd:nlm_blocked#2").address, 0xffff_ffff_c068_b590)
        XCTAssertEqual(try table.resolve("lockd:nlm_blocked@ffffffffc068b0e0").ordinal, 1)
        XCTAssertEqual(try table.resolve("nlm_blocked@0xffffffffc068b590").address, 0xffff_ffff_c068_b590)
        XCTAssertThrowsError(try table.resolve("lockd:nlm_blocked#3")) { XCTAssertTrue("\($0)".contains("no symbol matches")) }
        XCTAssertThrowsError(try table.resolve("lockd:nlm_blocked@ffffffffc0000000"))
    }

    func testModulePinningAndNotFoundHints() throws {
        let (_, table, _) = try capture()
        let rdSize = try table.resolve("brd:rd_size")
        XCTAssertEqual(rdSize.module, "brd")
        XCTAssertEqual(rdSize.section, "data")
        XCTAssertFalse(rdSize.isGlobal)
        XCTAssertEqual(try table.resolve("vmlinux:pid_max").module, nil)
        XCTAssertThrowsError(try table.resolve("loop:rd_size")) { XCTAssertTrue("\($0)".contains("rd_size exists in brd"), "\($0)") }
        XCTAssertThrowsError(try table.resolve("zfs:arc_c")) { XCTAssertTrue("\($0)".contains("module zfs is not loaded"), "\($0)") }
        XCTAssertThrowsError(try table.resolve("lockd:*")) { XCTAssertTrue("\($0)".contains("a glob names many symbols")) }
        for bad in ["", ":x", "lockd:", "a:b:c", "x#0", "x#y", "x@zz"] {
            XCTAssertThrowsError(try SymbolQuery.parse(bad), bad) { XCTAssertTrue("\($0)".hasPrefix("bad symbol query"), "\($0)") }
        }
    }

    func testClonesAreFoundUnderTheirBaseName() throws {
        let (_, table, _) = try capture()
        XCTAssertEqual(Kallsyms.baseName(of: "brd_alloc.isra.0.cold"), "brd_alloc")
        XCTAssertEqual(Kallsyms.baseName(of: "brd_insert_page.part.0"), "brd_insert_page")
        XCTAssertEqual(Kallsyms.baseName(of: "foo.constprop.12"), "foo")
        XCTAssertEqual(Kallsyms.baseName(of: "__already_done.3"), "__already_done")
        XCTAssertEqual(Kallsyms.baseName(of: "name.with.dots"), "name.with.dots")
        // brd_alloc exists only as a clone and its .cold fragment: the entry point is the answer.
        let alloc = try table.resolve("brd_alloc")
        XCTAssertEqual(alloc.name, "brd_alloc.isra.0")
        XCTAssertEqual(Set(table.find(.name(module: nil, name: "brd_alloc", ordinal: nil, address: nil)).map(\.name)),
                       ["brd_alloc.isra.0", "brd_alloc.isra.0.cold"])
        XCTAssertEqual(try table.resolve("brd_insert_page").name, "brd_insert_page.part.0")
        // The verbatim name still works.
        XCTAssertEqual(try table.resolve("brd_alloc.isra.0.cold").name, "brd_alloc.isra.0.cold")
    }

    func testGlobsMatchWhatFnmatchMatches() throws {
        let (k, table, _) = try capture()
        for (module, pattern) in [(nil, "nlm_*"), ("lockd", "*"), ("lockd", "nlm_[bf]*"), (nil, "brd_?o*"), ("*", "rd_size"), ("b?d", "*")] as [(String?, String)] {
            let ours = Set(table.find(.glob(module: module, pattern: pattern)).map(\.index))
            var oracle = Set<Int>()
            for i in 0..<k.count {
                let moduleName = k.module(i) ?? "vmlinux"
                if let module, fnmatch(module, moduleName, 0) != 0 { continue }
                if fnmatch(pattern, k.name(i), 0) == 0 { oracle.insert(i) }
            }
            XCTAssertEqual(ours, oracle, "\(module ?? ""):\(pattern)")
            XCTAssertFalse(ours.isEmpty, "\(module ?? ""):\(pattern)")
        }
    }

    func testNearestSymbolAgreesWithABruteForceScan() throws {
        let (k, table, _) = try capture()
        var rng = UInt64(0x5eed)
        let addresses = (0..<k.count).filter { k.typeLetter($0) != UInt8(ascii: "A") && k.address($0) != 0 }.map(k.address)
        var checked = 0
        for _ in 0..<400 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            let a = addresses[Int(rng >> 33) % addresses.count] &+ (rng & 0xff)
            guard let (index, offset) = k.nearest(to: a, moduleRanges: table.moduleRanges) else { continue }
            // No symbol (other than absolute ones) lies strictly between the answer and the address.
            XCTAssertLessThanOrEqual(k.address(index), a)
            XCTAssertEqual(k.address(index) + offset, a)
            let found = k.address(index)
            let between = addresses.withUnsafeBufferPointer { all in  // a plain scan (fast enough in debug builds)
                var n = 0
                for x in all where x > found && x <= a { n += 1 }
                return n
            }
            XCTAssertEqual(between, 0, "\(Hex.address(a)): \(k.name(index)) but \(between) closer")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 350)
        // Inside brd's text: brd_insert_page.part.0 is the first brd function.
        XCTAssertEqual(table.describe(address: 0xffff_ffff_c057_1005), "brd_insert_page.part.0+0x5 [brd]")
        XCTAssertNil(k.nearest(to: 0x1000, moduleRanges: table.moduleRanges))
        // Past the end of vmlinux and outside every module: no answer rather than a far-away symbol.
        let end = try XCTUnwrap(k.indexes(named: "_end").first.map(k.address))
        XCTAssertNil(k.nearest(to: end + 0x10, moduleRanges: table.moduleRanges))
    }

    func testMalformedKallsymsAreErrorsWithLineNumbers() throws {
        func parse(_ text: String) throws -> Kallsyms { try Kallsyms(buffer: ByteBuffer(Array(text.utf8)), source: "k") }
        let good = "ffffffff81000000 T _stext\nffffffffc0571000 t brd_x\t[brd]\n"
        XCTAssertEqual(try parse(good).count, 2)
        XCTAssertEqual(try parse(String(good.dropLast())).count, 2, "a missing final newline is fine")
        let cases: [(String, String)] = [
            ("ffffffff81000000 T _stext\nzzzz T x\n", "k:2: malformed kallsyms line: expected a hex address"),
            ("ffffffff81000000 T\n", "k:1: malformed"),
            ("ffffffff81000000 TT x\n", "k:1: malformed kallsyms line: expected a type letter"),
            ("ffffffff81000000  x\n", "k:1: malformed"),
            ("1ffffffff81000000 T x\n", "address longer than 16 hex digits"),
            ("ffffffff81000000 T x\t[brd\n", "unterminated or empty [module]"),
            ("ffffffff81000000 T x\t[]\n", "unterminated or empty [module]"),
            ("ffffffff81000000 T x\tbrd\n", "expected [module] after the tab"),
            ("ffffffff81000000 T x\t[brd] junk\n", "unexpected text after the module"),
            ("ffffffff81000000 T " + String(repeating: "n", count: 513) + "\n", "longer than 512 bytes"),
            ("\n", "k:1: malformed"),
        ]
        for (text, message) in cases {
            XCTAssertThrowsError(try parse(text), message) { XCTAssertTrue("\($0)".contains(message), "\($0) vs \(message)") }
        }
        XCTAssertEqual(try parse("ffffffff81000000 T " + String(repeating: "n", count: 512) + "\n").name(0).count, 512)
        // Addresses: every hex digit in either case at every position of 16 (read 8 bytes at a time), and 8-digit
        // addresses (a 32-bit kernel), agree with the standard library's parse; any other byte among them is an error.
        let addresses = ["0123456789abcdef", "fedcba9876543210", "0123456789ABCDEF", "FEDCBA9876543210", "fFfFfFfF8100aAbB",
                         "ffffffff81000000", "0000000000000001", "c0ffee00", "9"]
        let parsed = try parse(addresses.map { $0 + " T x\n" }.joined())
        XCTAssertEqual((0..<parsed.count).map { parsed.address($0) }, addresses.map { UInt64($0, radix: 16) })
        for position in 0..<16 {
            for bad: UInt8 in [0x10, 0x2F, 0x3A, 0x40, 0x47, 0x60, 0x67, 0x20, 0x09, 0xC0, 0xE6] {
                var line = Array("ffffffff81000000 T x\n".utf8)
                line[position] = bad
                XCTAssertThrowsError(try Kallsyms(buffer: ByteBuffer(line), source: "k"), "byte \(bad) at \(position)") {
                    XCTAssertTrue("\($0)".contains("k:1: malformed kallsyms line"), "\($0)")
                }
            }
        }
        // kptr_restrict: every address zero.
        XCTAssertThrowsError(try parse("0000000000000000 T _stext\n0000000000000000 t x\t[brd]\n")) { error in
            XCTAssertEqual(error as? SymbolError, .addressesHidden(source: "k"))
            XCTAssertTrue("\(error)".contains("kptr_restrict"), "\(error)")
        }
        // Random corruption of real lines: errors or a parse, never a crash.
        let (_, _, text) = try capture()
        var bytes = Array(text.utf8.prefix(200_000))
        var rng: UInt64 = 99
        for _ in 0..<300 {
            rng = rng &* 6364136223846793005 &+ 1
            bytes[Int(rng >> 40) % bytes.count] = UInt8(truncatingIfNeeded: rng >> 20)
            _ = try? Kallsyms(buffer: ByteBuffer(bytes), source: "fuzz")
        }
    }

    func testModulesFile() throws {
        let dir = try DebianCapture.directory()
        let modules = try ModuleList.parse(String(decoding: try FileBytes.read(dir + "/modules"), as: UTF8.self), source: "modules")
        XCTAssertEqual(modules.count, 20)
        let lockd = try XCTUnwrap(modules.first { $0.name == "lockd" })
        XCTAssertEqual(lockd.size, 131_072)
        XCTAssertEqual(lockd.users, 1)
        XCTAssertEqual(lockd.usedBy, ["nfsd"])
        XCTAssertEqual(lockd.state, "Live")
        XCTAssertEqual(lockd.address, 0xffff_ffff_c067_3000)
        XCTAssertEqual(try XCTUnwrap(modules.first { $0.name == "sunrpc" }).usedBy, ["nfsd", "auth_rpcgss", "nfs_acl", "lockd"])
        XCTAssertEqual(try ModuleList.parse("zfs 6000 0 - Live 0xffffffffc1000000 (POE)\n", source: "m").first?.taints, "POE")
        XCTAssertThrowsError(try ModuleList.parse("brd 20480 0 -\n", source: "m")) { XCTAssertTrue("\($0)".contains("m:1: malformed"), "\($0)") }
        XCTAssertThrowsError(try ModuleList.parse("brd x 0 - Live 0x0\n", source: "m"))
        XCTAssertThrowsError(try ModuleList.parse("brd 1 0 - Live 0xzz\n", source: "m"))
    }

    func testLiveKallsyms() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: /proc/kallsyms addresses read as zero")) }
        let k = try Kallsyms(path: "/proc/kallsyms")
        XCTAssertGreaterThan(k.count, 10_000)
        let table = SymbolTable(kallsyms: k, modules: [])
        let vfsRead = try table.resolve("vfs_read")
        XCTAssertTrue(vfsRead.isText)
        // The same line, read independently.
        let text = String(decoding: try FileBytes.read("/proc/kallsyms"), as: UTF8.self)
        XCTAssertTrue(text.contains("\(Hex.address(vfsRead.address)) \(vfsRead.typeLetter) vfs_read\n"))
    }

    /// While a BPF program is loaded, kallsyms has real `[bpf]` and `[__builtin__ftrace]` pseudo-module lines.
    func testLivePseudoModulesFromARunningBPFProgram() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        guard Host.tracefs() != nil else { throw XCTSkip(Host.skipReason("tracefs can't be mounted")) }
        // BEGIN runs once every probe is attached, so its line is the event: the programs are loaded by then.
        let bt = try Child(["sh", "-c", "ulimit -l unlimited 2>/dev/null; exec bpftrace -e 'BEGIN { printf(\"ready\\n\"); } tracepoint:syscalls:sys_enter_getppid { @c = count(); }'"])
        defer { bt.signal(SIGKILL); _ = try? bt.wait(timeout: Run.defaultTimeout) }
        try bt.waitForOutput(containing: "ready\n", timeout: Run.defaultTimeout)
        let k = try Kallsyms(path: "/proc/kallsyms")
        let pseudo = (0..<k.count).filter { k.module($0) != nil }.map(k.symbol).filter(\.isPseudoModule)
        let bpf = pseudo.filter { $0.module == "bpf" }
        XCTAssertFalse(bpf.isEmpty, "no [bpf] symbol while bpftrace runs: \(bt.stdoutText) \(bt.stderrText)")
        XCTAssertTrue(bpf.allSatisfy { $0.name.hasPrefix("bpf_") && $0.isText }, "\(bpf.map(\.name))")
    }
}
