import Foundation
import Glibc
import XCTest
import KreachTestSupport

/// Hostile and unlucky inputs end to end: each is one clean error and exit status 1, never a signal, a hang or
/// a wrong answer. Every run is under the test helper's timeout (the process group is killed and the test fails).
final class HardeningCLITests: XCTestCase {
    func kreach(_ args: [String], timeout seconds: Int? = nil) throws -> Run.Result {
        try runKreach(args, timeout: seconds)
    }

    func debian() throws -> String { try DebianCapture.directory() }

    func repeated(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }

    /// A clean failure: status 1 (a signal shows as its number), nothing on stdout, and
    /// stderr starting with `first`.
    func assertCleanError(_ r: Run.Result, _ first: String, lines: Int? = nil, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, "status \(r.status); stderr: \(r.stderr.prefix(300))", line: line)
        XCTAssertEqual(r.stdout, "", line: line)
        XCTAssertTrue(r.stderr.hasPrefix(first), "stderr: \(r.stderr.prefix(300))", line: line)
        if let lines { XCTAssertEqual(r.stderr.split(separator: "\n").count, lines, r.stderr, line: line) }
    }

    // MARK: - 1. Depth

    func testDeepExpressionsAreOneErrorNotACrash() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("show reads kernel memory: needs root")) }
        let tooDeep = "kreach: expression nested deeper than 256 levels\n"
        for expr in [repeated("*", 3000) + "current", "current" + repeated("->real_parent", 3000),
                     repeated("(", 10_000) + "1" + repeated(")", 10_000), repeated("(int)", 3000) + "1",
                     "current->comm" + repeated("[0]", 3000)] {
            assertCleanError(try kreach(["show", expr]), tooDeep, lines: 3)
        }
        // Up to the limit it still works: 250 parents of the current task end at init's parent, pid 0.
        let deep = try kreach(["show", "current" + repeated("->real_parent", 250) + "->pid"])
        XCTAssertEqual(deep.status, 0, deep.stderr)
        XCTAssertEqual(deep.stdout, "(pid_t)0\n")
    }

    func testDeepScriptChainIsOneError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-h9-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("deep.bt").path
        try Data("BEGIN { @ = (int32)`pid_max\(repeated(".a", 3000)) }\n".utf8).write(to: URL(fileURLWithPath: script))
        let r = try kreach(["gen", "--kernel", try debian(), script])
        assertCleanError(r, "kreach: \(script):1:20: expression nested deeper than 256 levels\n", lines: 3)
    }

    // MARK: - 5. Every form a message suggests works

    /// The capture's own kallsyms lines for NAME in MODULE, in file order: the oracle for #N and @ADDRESS.
    func kallsymsAddresses(_ dir: String, name: String, module: String) throws -> [String] {
        let text = try String(contentsOfFile: dir + "/kallsyms", encoding: .utf8)
        return text.split(separator: "\n").filter { $0.hasSuffix(" \(name)\t[\(module)]") }.map { String($0.prefix(16)) }
    }

    /// The forms an ambiguity message offers: `-> FORM or FORM` on each candidate line, with the line's address.
    func offeredForms(_ stderr: String) -> [(address: String, forms: [String])] {
        stderr.split(separator: "\n").compactMap { line in
            guard let arrow = line.range(of: "   -> ") else { return nil }
            let address = String(line.drop { $0 == " " }.prefix(16))
            return (address, line[arrow.upperBound...].components(separatedBy: " or "))
        }
    }

    func testChoosersWorkInScriptsWithTheFormsTheMessageOffers() throws {
        let dir = try debian()
        let addresses = try kallsymsAddresses(dir, name: "nlm_blocked", module: "lockd")
        XCTAssertEqual(addresses.count, 2, "the capture's lockd has two nlm_blocked")
        func gen(_ reference: String) throws -> Run.Result {
            try kreach(["gen", "--kernel", dir, "-e", "BEGIN { @x = (uint64)\(reference); }"])
        }
        // Written by hand: #N, @ADDRESS with and without 0x.
        for (k, address) in addresses.enumerated() {
            for form in ["lockd`nlm_blocked#\(k + 1)", "lockd`nlm_blocked@\(address)", "lockd`nlm_blocked@0x\(address)"] {
                let r = try gen(form)
                XCTAssertEqual(r.status, 0, "\(form): \(r.stderr)")
                XCTAssertTrue(r.stdout.hasPrefix("BEGIN { @x = (uint64)(*(uint64 *)0x\(address)); }\n"), "\(form): \(r.stdout)")
            }
        }
        // The ambiguity error in a script offers script forms, and each picks its own line's symbol.
        let ambiguous = try gen("lockd`nlm_blocked")
        assertCleanError(ambiguous, "kreach: -e:1:22: lockd`nlm_blocked is ambiguous: 2 symbols match; choose one with MODULE`NAME#N", lines: 5)
        let offered = offeredForms(ambiguous.stderr)
        XCTAssertEqual(offered.map(\.address), addresses)
        for (address, forms) in offered {
            XCTAssertEqual(forms.count, 2)
            for form in forms {
                XCTAssertTrue(form.hasPrefix("lockd`"), form)
                let r = try gen(form)
                XCTAssertEqual(r.status, 0, "\(form): \(r.stderr)")
                XCTAssertTrue(r.stdout.hasPrefix("BEGIN { @x = (uint64)(*(uint64 *)0x\(address)); }\n"), "\(form): \(r.stdout)")
            }
        }
        // A position or an address that picks nothing says what exists.
        assertCleanError(try gen("lockd`nlm_blocked#3"), "kreach: -e:1:22: no symbol matches lockd:nlm_blocked#3: 2 symbols named nlm_blocked in lockd: #1, #2\n")
        assertCleanError(try gen("lockd`nlm_blocked#x"), "kreach: -e:1:39: expected a position after '#' (NAME#N, from 1)\n")
        // capture probes a function by name: a chooser is refused, not answered with "no such function".
        assertCleanError(try kreach(["capture", "--kernel", dir, "lockd`nlmsvc_lock#2"]),
                         "kreach: lockd`nlmsvc_lock#2: capture takes a function's bare name ('`' picks one symbol, which a probe by name can't)\n")
    }

    func testSymTakesTheFormsItsMessageOffers() throws {
        let dir = try debian()
        let addresses = try kallsymsAddresses(dir, name: "nlm_blocked", module: "lockd")
        let ambiguous = try kreach(["sym", "--kernel", dir, "lockd:nlm_blocked"])
        assertCleanError(ambiguous, "kreach: lockd:nlm_blocked is ambiguous: 2 symbols match; choose one with MODULE:NAME#N (Nth in kallsyms order) or MODULE:NAME@ADDRESS (MODULE`NAME#N in bpftrace scripts)\n", lines: 3)
        let offered = offeredForms(ambiguous.stderr)
        XCTAssertEqual(offered.map(\.address), addresses)
        for (address, forms) in offered {
            // The colon forms offered, and the DTrace spelling of each (what scripts take) too.
            for form in forms + forms.map({ $0.replacingOccurrences(of: ":", with: "`") }) {
                let r = try kreach(["sym", "--kernel", dir, form])
                XCTAssertEqual(r.status, 0, "\(form): \(r.stderr)")
                XCTAssertEqual(r.stdout, "\(address) d nlm_blocked\t[lockd]\n", form)
            }
        }
    }

    /// On the live kernel: a vmlinux name kallsyms lists twice, read with every form the ambiguity offers
    /// (colon and DTrace spellings), each landing on its own kallsyms line's address.
    func testShowTakesTheFormsItsMessageOffers() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("show reads kernel memory and kallsyms addresses: needs root")) }
        // /proc files report size 0: read to the end.
        let data = try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/kallsyms")).readDataToEndOfFile()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0.split(separator: " ") }
        var seen: [Substring: Int] = [:]
        var duplicate: Substring?
        for f in lines where f.count == 3 && !f[2].contains(".") && !f[2].hasPrefix("__pfx_") {
            seen[f[2], default: 0] += 1
            if seen[f[2]] == 2 { duplicate = f[2]; break }
        }
        guard let name = duplicate else { throw XCTSkip(Host.skipReason("no vmlinux symbol name appears twice in /proc/kallsyms")) }
        let addresses = lines.filter { $0.count == 3 && $0[2] == name }.map { String($0[0]) }
        let ambiguous = try kreach(["show", String(name)])
        XCTAssertEqual(ambiguous.status, 1, ambiguous.stderr)
        let offered = offeredForms(ambiguous.stderr)
        XCTAssertEqual(offered.map(\.address), addresses)
        for (address, forms) in offered {
            let trimmed = String(address.drop { $0 == "0" })
            for form in forms + forms.map({ $0.replacingOccurrences(of: ":", with: "`") }) {
                let r = try kreach(["show", form])
                XCTAssertEqual(r.status, 0, "\(form): \(r.stderr)")
                XCTAssertTrue(r.stdout.contains("0x" + trimmed), "\(form): \(r.stdout)")
            }
        }
    }
}

/// A copy of the Debian capture to damage, removed when `test` ends.
func scratchCapture(_ test: XCTestCase) throws -> String {
    let dir = NSTemporaryDirectory() + "kreach-scratch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.copyItem(atPath: try DebianCapture.directory(), toPath: dir)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// CRLF and empty inputs: a capture converted to CRLF line ends answers exactly as the original; an empty
/// kallsyms is refused.
final class LineEndCLITests: XCTestCase {
    func kreach(_ args: [String]) throws -> Run.Result {
        try runKreach(args)
    }

    /// A copy of the Debian capture with every text file (all but btf/) converted to CRLF, made once.
    nonisolated(unsafe) static var crlfCopy: String?

    func crlfCapture() throws -> String {
        if let dir = LineEndCLITests.crlfCopy { return dir }
        let original = try DebianCapture.directory()
        let dir = NSTemporaryDirectory() + "kreach-crlf-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.copyItem(atPath: original, toPath: dir)
        let files = try XCTUnwrap(FileManager.default.enumerator(atPath: dir)).compactMap { $0 as? String }
        var converted = 0
        for file in files where !file.hasPrefix("btf") && !file.hasPrefix(".") {
            let path = dir + "/" + file
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            var out = Data(capacity: bytes.count + bytes.count / 16)
            for b in bytes {
                if b == 10 { out.append(13) }
                out.append(b)
            }
            try out.write(to: URL(fileURLWithPath: path))
            converted += 1
        }
        XCTAssertGreaterThan(converted, 1000, "kallsyms, modules, tracing lists, tracepoint formats, module sections")
        LineEndCLITests.crlfCopy = dir
        return dir
    }

    override class func tearDown() {
        if let dir = crlfCopy { try? FileManager.default.removeItem(atPath: dir) }
        super.tearDown()
    }

    /// Each command's output on the CRLF copy is the original's, and the original's answers are the capture's
    /// own facts (its kallsyms line, available_filter_functions, tracepoint formats).
    func testCRLFCaptureAnswersLikeTheOriginal() throws {
        let original = try DebianCapture.directory(), crlf = try crlfCapture()
        let kallsyms = try String(contentsOfFile: original + "/kallsyms", encoding: .utf8)
        let vfsRead = try XCTUnwrap(kallsyms.split(separator: "\n").first { $0.hasSuffix(" vfs_read") })
        let filterFunctions = try String(contentsOfFile: original + "/available_filter_functions", encoding: .utf8)
        XCTAssertTrue(filterFunctions.split(separator: "\n").contains("vfs_read"), "the capture's list has vfs_read")
        let blacklist = try String(contentsOfFile: original + "/kprobes_blacklist", encoding: .utf8)
        XCTAssertTrue(blacklist.split(separator: "\n").contains { $0.hasSuffix("\tdo_int3") }, "the capture's blacklist has do_int3")
        let format = try String(contentsOfFile: original + "/events/filelock/break_lease_block/format", encoding: .utf8)
        XCTAssertTrue(format.contains("field:struct file_lock * fl_blocker;"), "the oracle: break_lease_block's format")
        let cases: [([String], Int32, (String) -> Void)] = [
            (["sym", "vfs_read"], 0, { XCTAssertEqual($0, vfsRead + "\n") }),
            (["sym", "lockd:nlm_blocked#2", "0xffffffffc0571005"], 0, { XCTAssertEqual($0.split(separator: "\n").count, 2, $0) }),
            (["why", "vfs_read"], 0, { XCTAssertTrue($0.hasPrefix("vfs_read: traceable\n"), $0) }),
            (["why", "nlmsvc_lock"], 0, { XCTAssertTrue($0.hasPrefix("nlmsvc_lock: traceable\n"), $0) }),
            (["why", "do_int3"], 1, { XCTAssertTrue($0.hasPrefix("do_int3: blacklisted\n"), $0) }),
            (["where", "struct file_lock"], 0, { XCTAssertTrue($0.contains("\n  filelock:break_lease_block  field struct file_lock * fl_blocker  "), $0) }),
            (["type", "lockd:struct nlm_file"], 0, { XCTAssertTrue($0.contains("struct nlm_file {"), $0) }),
        ]
        for (args, status, check) in cases {
            let want = try kreach(args + ["--kernel", original]), got = try kreach(args + ["--kernel", crlf])
            XCTAssertEqual(want.status, status, "\(args) on the original: \(want.stderr)")
            check(want.stdout)
            XCTAssertEqual(got.status, want.status, "\(args) on CRLF: \(got.stderr)")
            XCTAssertEqual(got.stdout, want.stdout, "\(args) on CRLF")
            XCTAssertEqual(got.stderr, want.stderr.replacingOccurrences(of: original, with: crlf), "\(args) on CRLF")
        }
    }

    /// A CRLF script: comments end at CRLF line ends, and errors name bpftrace's line numbers.
    func testCRLFScript() throws {
        let crlf = try crlfCapture()
        let script = "// brd`nor_this\r\nBEGIN {\r\n\t@x = brd`rd_size + 1;\r\n}\r\n"
        let r = try kreach(["gen", "--kernel", crlf, "-e", script])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").first, "kreach: -e:3:7: brd`rd_size has no known type: cast it, e.g. (uint64)brd`rd_size")
        let ok = try kreach(["gen", "--kernel", crlf, "-e", script.replacingOccurrences(of: "@x = brd", with: "@x = (uint64)brd")])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.hasPrefix("// brd`nor_this\nBEGIN {\n\t@x = (uint64)(*(uint64 *)0xffffffffc05740d8) + 1;\n}\n"), ok.stdout)
    }

    func testEmptyKallsymsIsRefused() throws {
        let dir = try scratchCapture(self)
        try Data().write(to: URL(fileURLWithPath: dir + "/kallsyms"))
        let message = "kreach: \(dir)/kallsyms: no symbols: kallsyms is empty (a truncated capture?); a kernel always lists thousands\n"
        for args in [["why", "vfs_read"], ["sym", "vfs_read"], ["sym", "0xffffffffc0571005"]] {
            let r = try kreach(args + ["--kernel", dir])
            XCTAssertEqual(r.status, 1, "\(args): \(r.stdout)")
            XCTAssertEqual(r.stderr, message, "\(args)")
            XCTAssertEqual(r.stdout, "", "\(args)")
        }
    }

    /// An empty available_filter_functions is "unknown", never "every function is notrace".
    func testEmptyFilterFunctionsIsUnknownNotKprobeOnly() throws {
        let dir = try scratchCapture(self)
        try Data().write(to: URL(fileURLWithPath: dir + "/available_filter_functions"))
        let r = try kreach(["why", "vfs_read", "--kernel", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("note: available_filter_functions unreadable (\(dir)/available_filter_functions lists no function (empty or truncated))"), r.stdout)
        XCTAssertFalse(r.stdout.contains("not in available_filter_functions"), r.stdout)
    }
}

/// Bytes echoed from input never reach the terminal raw: control characters (ESC, BEL, CR, NUL, DEL, C1) are
/// escaped as \xNN, in errors and in names printed from a capture; /proc/modules errors say which file.
final class EchoCLITests: XCTestCase {
    func kreach(_ args: [String]) throws -> Run.Result {
        try runKreach(args)
    }

    /// A copy of the capture whose kallsyms ends with `extra` (raw bytes), and optionally another modules file.
    func capture(kallsymsExtra extra: [UInt8], modules: String? = nil) throws -> String {
        let dir = try scratchCapture(self)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: dir + "/kallsyms"))
        handle.seekToEndOfFile()
        handle.write(Data(extra))
        handle.closeFile()
        if let modules { try Data(modules.utf8).write(to: URL(fileURLWithPath: dir + "/modules")) }
        return dir
    }

    /// No C0 control but newline and tab, no DEL, no C1 control.
    func assertTerminalSafe(_ text: String, _ what: String, line: UInt = #line) {
        let bad = text.unicodeScalars.filter { s in
            s != "\n" && s != "\t" && (s.value < 0x20 || (s.value >= 0x7f && s.value < 0xa0))
        }
        XCTAssertTrue(bad.isEmpty, "\(what) has raw controls \(bad.map { String($0.value, radix: 16) }): \(text.debugDescription)", line: line)
    }

    func testControlBytesInCaptureNamesAreEscaped() throws {
        // One line per hostile byte sequence: ESC sequence, BEL, NUL, a lone CR, invalid UTF-8, C1 CSI (U+009B), DEL.
        let names: [[UInt8]] = [Array("evil\u{1b}[2J".utf8), Array("evil\u{07}bell".utf8), [101, 118, 105, 108, 0, 110],
                                [101, 118, 105, 108, 13, 99, 114], [101, 118, 105, 108, 0xff, 0xfe], [101, 118, 105, 108, 0xc2, 0x9b, 109],
                                [101, 118, 105, 108, 0x7f]]
        var extra: [UInt8] = []
        for (k, name) in names.enumerated() { extra += Array("ffffffffb80001\(k)0 t ".utf8) + name + [10] }
        // The same hostile name twice: the ambiguity lists it.
        extra += Array("ffffffffb8000200 t dup\u{1b}]0;x\u{07}\nffffffffb8000210 t dup\u{1b}]0;x\u{07}\n".utf8)
        let dir = try capture(kallsymsExtra: extra)
        let listed = try kreach(["sym", "--kernel", dir, "evil*"])
        XCTAssertEqual(listed.status, 0, listed.stderr)
        assertTerminalSafe(listed.stdout, "sym output")
        XCTAssertEqual(listed.stdout, """
            ffffffffb8000100 t evil\\x1b[2J
            ffffffffb8000110 t evil\\x07bell
            ffffffffb8000120 t evil\\x00n
            ffffffffb8000130 t evil\\x0dcr
            ffffffffb8000140 t evil\u{fffd}\u{fffd}
            ffffffffb8000150 t evil\\x9bm
            ffffffffb8000160 t evil\\x7f

            """)
        let ambiguous = try kreach(["sym", "--kernel", dir, "dup*"])
        XCTAssertEqual(ambiguous.status, 0)
        assertTerminalSafe(ambiguous.stdout, "sym output")
        let dup = try kreach(["sym", "--kernel", dir, "vmlinux:dup\u{1b}]0;x\u{07}"])
        XCTAssertEqual(dup.status, 1)
        assertTerminalSafe(dup.stderr, "ambiguity")
        XCTAssertTrue(dup.stderr.hasPrefix("kreach: vmlinux:dup\\x1b]0;x\\x07 is ambiguous: 2 symbols match"), dup.stderr)
        XCTAssertTrue(dup.stderr.contains("\n  ffffffffb8000210 t dup\\x1b]0;x\\x07\t[vmlinux]   -> vmlinux:dup\\x1b]0;x\\x07#2"), dup.stderr)
        // Arguments echoed in errors.
        let missing = try kreach(["sym", "--kernel", dir, "nosuch\u{1b}[2J\r\u{07}"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "kreach: no symbol matches nosuch\\x1b[2J\\x0d\\x07\n")
        let why = try kreach(["why", "--kernel", dir, "nosuch\u{1b}[2J"])
        assertTerminalSafe(why.stdout, "why output")
        XCTAssertTrue(why.stdout.hasPrefix("nosuch\\x1b[2J: absent\n"), why.stdout)
    }

    func testControlBytesInScriptsAndExpressionsAreEscaped() throws {
        let dir = try DebianCapture.directory()
        let r = try kreach(["gen", "--kernel", dir, "-e", "BEGIN { @x = brd`rd_size; printf(\"\u{1b}[2J\u{07}\"); }"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, """
            kreach: -e:1:14: brd`rd_size has no known type: cast it, e.g. (uint64)brd`rd_size
              BEGIN { @x = brd`rd_size; printf("\\x1b[2J\\x07"); }
                           ^~~~~~~~~~~

            """)
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("show reads kernel memory: needs root")) }
        let show = try kreach(["show", "current->comm\u{1b}[2J"])
        XCTAssertEqual(show.status, 1)
        XCTAssertEqual(show.stderr, "kreach: unexpected character '\\x1b'\n  current->comm\\x1b[2J\n               ^~~~\n")
    }

    func testModulesErrorsNameTheModulesFile() throws {
        let dir = try capture(kallsymsExtra: [], modules: "brd 16384 0 - Live 0xffffffffc0571000\nloop 32768\u{1b}[2J\n")
        let r = try kreach(["sym", "--kernel", dir, "brd:rd_size"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "kreach: \(dir)/modules:2: malformed /proc/modules line: expected at least 6 fields, found 2\n")
        let bad = try capture(kallsymsExtra: [], modules: "brd 16384 0 - Live 0xfffffffzc0571000\u{1b}\n")
        let b = try kreach(["sym", "--kernel", bad, "brd:rd_size"])
        XCTAssertEqual(b.stderr, "kreach: \(bad)/modules:1: malformed /proc/modules line: bad address 0xfffffffzc0571000\\x1b\n")
    }
}

/// A name listed 100,000 times (kallsyms and available_filter_functions): lookups stay linear. Not a timing test:
/// the timeout is far above the linear time (about a second) and far below the quadratic one (over an hour).
final class DuplicateCLITests: XCTestCase {
    func kreach(_ args: [String]) throws -> Run.Result {
        try runKreach(args)
    }

    func testHundredThousandDuplicates() throws {
        let dir = NSTemporaryDirectory() + "kreach-dups-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let n = 100_000
        let address = { (k: Int) in String(format: "%016lx", 0xffff_ffff_b900_0000 + UInt64(k) * 16) }
        var kallsyms = "ffffffff81000000 T _stext\n"
        for k in 0..<n { kallsyms += address(k) + " t many_dups\n" }
        kallsyms += "ffffffffc0000000 d many_dups\t[mod_a]\nffffffffc0000010 d many_dups\t[mod_a]\n"
        try Data(kallsyms.utf8).write(to: URL(fileURLWithPath: dir + "/kallsyms"))
        try Data(String(repeating: "many_dups\n", count: n).utf8).write(to: URL(fileURLWithPath: dir + "/available_filter_functions"))
        try Data(String(repeating: "0xffffffff81000000-0xffffffff81000010\tblacklisted_dup\n", count: n).utf8)
            .write(to: URL(fileURLWithPath: dir + "/kprobes_blacklist"))
        // why also reads vmlinux BTF: the capture's.
        try FileManager.default.createDirectory(atPath: dir + "/btf", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try DebianCapture.directory() + "/btf/vmlinux", toPath: dir + "/btf/vmlinux")

        let all = try kreach(["sym", "--all", "--kernel", dir, "many_dups"])
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertEqual(all.stdout.split(separator: "\n").count, n + 2)
        let picked = try kreach(["sym", "--kernel", dir, "many_dups#\(n)", "vmlinux`many_dups@\(address(77_777))", "mod_a:many_dups#2", "_stext"])
        XCTAssertEqual(picked.status, 0, picked.stderr)
        XCTAssertEqual(picked.stdout, """
            \(address(n - 1)) t many_dups
            \(address(77_777)) t many_dups
            ffffffffc0000010 d many_dups\t[mod_a]
            ffffffff81000000 T _stext

            """)
        let ambiguous = try kreach(["sym", "--kernel", dir, "vmlinux:many_dups"])
        XCTAssertEqual(ambiguous.status, 1)
        XCTAssertTrue(ambiguous.stderr.hasPrefix("kreach: vmlinux:many_dups is ambiguous: \(n) symbols match"), ambiguous.stderr)
        XCTAssertEqual(ambiguous.stderr.split(separator: "\n").count, 1 + 50 + 1)
        let why = try kreach(["why", "--kernel", dir, "many_dups"])
        XCTAssertEqual(why.status, 0, why.stderr)
        XCTAssertTrue(why.stdout.hasPrefix("many_dups: traceable\n"), String(why.stdout.prefix(200)))
    }
}
