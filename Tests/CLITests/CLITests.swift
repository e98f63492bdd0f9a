import Foundation
import Glibc
import XCTest
import KreachSupport
import KreachTestSupport

/// Runs the kreach executable next to the test bundle (built by `swift build`/`swift test`), or $KREACH;
/// killed after `timeout` seconds (default: the test helper's), as the unprivileged user nobody (uid/gid 65534)
/// when `asNobody`.
func runKreach(_ args: [String], timeout seconds: Int? = nil, asNobody: Bool = false) throws -> Run.Result {
    let user = asNobody ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
    return try Run.command(user + [try kreachBinary()] + args, timeout: seconds.map(Double.init))
}

/// The kreach executable next to the test bundle, or $KREACH.
func kreachBinary() throws -> String {
    let dir = Bundle.main.bundleURL.path
    var candidates = [dir + "/kreach"]
    if let env = ProcessInfo.processInfo.environment["KREACH"] { candidates.insert(env, at: 0) }
    guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw FixtureError("kreach binary not found in \(dir); run `swift build` first")
    }
    return path
}

/// The kreach binary end to end: output, exit status (0 found, 1 not found/ambiguous/failed, 2 usage),
/// one-line errors on stderr, JSON that parses.
final class CLITests: XCTestCase {
    func kreach(_ args: [String]) throws -> Run.Result { try runKreach(args) }

    func debian() throws -> [String] { ["--kernel", try DebianCapture.directory()] }

    func testSymOnTheCapture() throws {
        let r = try kreach(["sym"] + debian() + ["brd:rd_size", "lockd:nlm_blocked#2", "0xffffffffc0571005", "brd_alloc"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, """
            ffffffffc05740d8 d rd_size\t[brd]
            ffffffffc068b590 d nlm_blocked\t[lockd]
            ffffffffc0571000 t brd_insert_page.part.0+0x5\t[brd]
            ffffffffc05710e0 t brd_alloc.isra.0\t[brd]

            """)
        XCTAssertEqual(r.stderr, "")
    }

    func testAmbiguousSymbolExitsOneAndListsCandidates() throws {
        let r = try kreach(["sym"] + debian() + ["lockd:nlm_blocked"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, r.stderr)
        XCTAssertTrue(lines[0].hasPrefix("kreach: lockd:nlm_blocked is ambiguous: 2 symbols match"), r.stderr)
        // --all lists them instead.
        let all = try kreach(["sym", "--all"] + debian() + ["lockd:nlm_blocked"])
        XCTAssertEqual(all.status, 0)
        XCTAssertEqual(all.stdout.split(separator: "\n").count, 2)
    }

    func testGlobAndJSON() throws {
        let r = try kreach(["sym", "--json"] + debian() + ["brd:rd_*"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(Set(rows.compactMap { $0["name"] as? String }), ["rd_size", "rd_nr"])
        let size = try XCTUnwrap(rows.first { $0["name"] as? String == "rd_size" })
        XCTAssertEqual(size["address"] as? String, "0xffffffffc05740d8")
        XCTAssertEqual(size["module"] as? String, "brd")
        XCTAssertEqual(size["section"] as? String, "data")
        XCTAssertEqual(size["global"] as? Bool, false)
        XCTAssertEqual(size["ordinal"] as? Int, 1)
    }

    func testNotFoundAndUsageErrors() throws {
        let missing = try kreach(["sym"] + debian() + ["no_such_symbol_anywhere"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "kreach: no symbol matches no_such_symbol_anywhere\n")
        let partly = try kreach(["sym"] + debian() + ["brd:rd_size", "nope"])
        XCTAssertEqual(partly.status, 1, "one missing pattern fails the command")
        XCTAssertTrue(partly.stdout.contains("rd_size"))
        XCTAssertEqual(try kreach(["sym"]).status, 2)
        XCTAssertEqual(try kreach(["frobnicate"]).status, 2)
        XCTAssertEqual(try kreach(["type", "--no-such-flag", "x"]).status, 2)
        let badQuery = try kreach(["sym"] + debian() + ["a:b:c"])
        XCTAssertEqual(badQuery.status, 1)
        XCTAssertEqual(badQuery.stderr, "kreach: bad symbol query a:b:c: more than one ':'\n")
        let badKernel = try kreach(["sym", "--kernel", "/nonexistent", "x"])
        XCTAssertEqual(badKernel.status, 1)
        XCTAssertEqual(badKernel.stderr, "kreach: --kernel /nonexistent: not a directory\n")
        XCTAssertEqual(try kreach(["--help"]).status, 0)
        XCTAssertEqual(try kreach(["--version"]).stdout, "0.1.0\n")
    }

    func testTypeOnTheCaptureAsCAndJSON() throws {
        let c = try kreach(["type"] + debian() + ["lockd:struct nlm_file"])
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertTrue(c.stdout.hasPrefix("/* lockd: struct nlm_file, BTF id 100800 */\nstruct nlm_file {\n"), c.stdout)
        XCTAssertTrue(c.stdout.contains("\tstruct mutex f_mutex;                           /*   200    32 */"), c.stdout)
        let j = try kreach(["type", "--json"] + debian() + ["lockd:struct nlm_file", "pid_t"])
        XCTAssertEqual(j.status, 0, j.stderr)
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["object"] as? String }, ["lockd", "vmlinux"])
        XCTAssertEqual((rows[0]["members"] as? [[String: Any]])?.count, 8)
        XCTAssertEqual(rows[1]["resolved"] as? String, "int")
        let funcs = try kreach(["type", "--funcs"] + debian() + ["lockd:nlm_lookup_*"])
        XCTAssertEqual(funcs.stdout, "__be32 nlm_lookup_file(struct svc_rqst *rqstp, struct nlm_file **result, struct nlm_lock *lock); /* lockd */\n")
        let missing = try kreach(["type"] + debian() + ["struct nlm_fil"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)
        let check = try kreach(["type", "--check"] + debian())
        XCTAssertEqual(check.status, 0)
        XCTAssertEqual(check.stdout.split(separator: "\n").count, 21)
    }

    /// A snapshot whose BTF is corrupted: a one-line error naming the byte offset, exit 1.
    func testCorruptBTFInASnapshotIsAOneLineError() throws {
        let source = try DebianCapture.directory()
        let dir = NSTemporaryDirectory() + "kreach-corrupt-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/btf", withIntermediateDirectories: true)
        var bytes = try FileBytes.read(source + "/btf/vmlinux")
        bytes[bytes.count - 1] = 0x41
        try FileBytes.write(bytes, to: dir + "/btf/vmlinux")
        let r = try kreach(["type", "--kernel", dir, "struct task_struct"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "kreach: BTF vmlinux: string section is not NUL-terminated at byte offset \(bytes.count - 1)\n")
        // Garbage kallsyms likewise.
        try FileBytes.write("ffffffff81000000 T _stext\nnot a line\n", to: dir + "/kallsyms")
        let s = try kreach(["sym", "--kernel", dir, "_stext"])
        XCTAssertEqual(s.status, 1)
        XCTAssertEqual(s.stderr, "kreach: \(dir)/kallsyms:2: malformed kallsyms line: expected a hex address and a space\n")
    }

    func testLiveKernel() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms addresses read as zero")) }
        let r = try kreach(["sym", "vfs_read"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try Run.command(["grep", "-m1", " vfs_read$", "/proc/kallsyms"])  // fast even under TCG
        XCTAssertEqual(r.stdout, line.stdout)
        let t = try kreach(["type", "struct task_struct"])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.stdout.contains("\tpid_t pid;"), t.stdout)
        // snapshot, then read it back with --kernel.
        let dir = NSTemporaryDirectory() + "kreach-cli-snap-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let snap = try kreach(["snapshot", dir])
        XCTAssertEqual(snap.status, 0, snap.stderr)
        XCTAssertTrue(snap.stdout.contains("captured "), snap.stdout)
        XCTAssertEqual(try kreach(["sym", "--kernel", dir, "vfs_read"]).stdout, r.stdout)
        XCTAssertEqual(try kreach(["type", "--kernel", dir, "struct task_struct"]).stdout, t.stdout)
    }
}

/// uname -r of this kernel, from uname(2).
func unameRelease() -> String {
    var u = utsname()
    uname(&u)
    return withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// kreach show / watch as a process: exit codes, stderr, JSON.
final class ShowCLITests: XCTestCase {
    func kreach(_ args: [String]) throws -> Run.Result { try runKreach(args) }

    func testShowCurrentAsTheProcessItself() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF")) }
        let r = try kreach(["show", "current->comm", "current->nsproxy->uts_ns->name.release"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "(char [16])\"kreach\"\n(char [65])\"\(unameRelease())\"\n")
        let j = try kreach(["show", "--json", "current->pid", "current->comm"])
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["type"] as? String }, ["pid_t", "char [16]"])
        XCTAssertEqual(rows[1]["value"] as? String, "kreach")
        XCTAssertGreaterThan(rows[0]["value"] as? Int ?? 0, 1)
    }

    func testShowErrorsAndUsage() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF")) }
        let bad = try kreach(["show", "current->no_member", "current->pid"])
        XCTAssertEqual(bad.status, 1, "one bad expression fails the command")
        XCTAssertTrue(bad.stdout.hasPrefix("(pid_t)"), "the good one is still printed")
        XCTAssertEqual(bad.stderr, "kreach: struct task_struct has no member no_member\n  current->no_member\n  ^~~~~~~~~~~~~~~~~~\n")
        XCTAssertEqual(try kreach(["show"]).status, 2)
        XCTAssertEqual(try kreach(["show", "--memory", "floppy", "x"]).status, 2)
        XCTAssertEqual(try kreach(["watch", "--interval", "soon", "x"]).status, 2)
        let snap = try kreach(["show", "--kernel", try DebianCapture.directory(), "brd:rd_size"])
        XCTAssertEqual(snap.status, 1)
        XCTAssertEqual(snap.stderr, "kreach: reading values needs the live kernel or a dump (--core FILE): --kernel snapshots have no memory\n")
    }

    /// /proc/kcore where the kernel has it (stock kernels): the uts name of this process, at the address the BPF
    /// reader gives, read through kcore, against uname. Where it is absent (this dev host), asking for it is a
    /// one-line error, and the skip of the read is printed.
    func testKcoreReaderWhereThereIsOne() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: /proc/kcore and BPF")) }
        guard FileManager.default.fileExists(atPath: "/proc/kcore") else {
            let k = try kreach(["show", "--memory", "kcore", "current->pid"])
            XCTAssertEqual(k.status, 1)
            XCTAssertEqual(k.stderr, "kreach: open /proc/kcore: No such file or directory\n")
            throw XCTSkip(Host.skipReason("this kernel has no /proc/kcore: only its absence was checked"))
        }
        let j = try kreach(["show", "--json", "--memory", "bpf", "current->nsproxy->uts_ns->name"])
        XCTAssertEqual(j.status, 0, j.stderr)
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: Any]])
        let address = try XCTUnwrap(rows.first?["address"] as? String)
        let r = try kreach(["show", "--memory", "kcore", "((struct new_utsname *)\(address))->release"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "(char [65])\"\(unameRelease())\"\n")
        let current = try kreach(["show", "--memory", "kcore", "current->pid"])
        XCTAssertEqual(current.status, 1)
        XCTAssertTrue(current.stderr.contains("current needs the BPF reader"), current.stderr)
    }

    func testWatchPrintsOnceWhenNothingChanges() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF")) }
        let r = try kreach(["watch", "--count", "3", "--interval", "50ms", "current->nsproxy->uts_ns->name.sysname"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stdout)
        XCTAssertTrue(lines.first?.hasSuffix(" current->nsproxy->uts_ns->name.sysname = \"Linux\"") ?? false, r.stdout)
    }
}
