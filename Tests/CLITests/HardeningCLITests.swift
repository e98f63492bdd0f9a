import Foundation
import Glibc
import XCTest
import KreachTestSupport

/// Hostile and unlucky inputs end to end: each is one clean error and exit status 1, never a signal, a hang or
/// a wrong answer. Every run is under coreutils `timeout` (exit 124 when it expires).
final class HardeningCLITests: XCTestCase {
    func kreach(_ args: [String], timeout seconds: Int = 120) throws -> Run.Result {
        try Run.command(["timeout", "-k", "5", String(seconds), try kreachBinary()] + args)
    }

    func debian() throws -> String { try DebianCapture.directory() }

    func repeated(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }

    /// A clean failure: status 1 (a signal shows as its number, a timeout as 124), nothing on stdout, and
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
