import Foundation
import Glibc
import XCTest
import KreachSupport
import KreachTestSupport

/// Options and output forms that had no test: --hex, --depth, bitfield values, rb_root_cached walks, watch's
/// SIGTERM, where/why --json, --limit, capture --arg through bpftrace, the missing-bpftrace message.
/// Oracles: getsockopt, /proc/timer_list, uname, the capture's own lists and bpftool.
final class FeatureCLITests: XCTestCase {
    func requireRoot(_ why: String) throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: \(why)")) }
    }

    func json(_ text: String) throws -> [[String: Any]] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], text)
    }

    // MARK: show --hex, --depth

    func testHexPrintsIntegersInHexAndLeavesStrings() throws {
        try requireRoot("BPF")
        let child = try Child([try kreachBinary(), "show", "--hex", "current->pid", "current->tgid", "current->comm"])
        XCTAssertEqual(try child.wait(timeout: Run.defaultTimeout), 0, child.stderrText)
        // kreach's own process: a single thread, so pid and tgid are the child's pid.
        let hex = "0x" + String(child.pid, radix: 16)
        XCTAssertEqual(child.stdoutText, "(pid_t)\(hex)\n(pid_t)\(hex)\n(char [16])\"kreach\"\n")
        let decimal = try Child([try kreachBinary(), "show", "current->pid"])
        XCTAssertEqual(try decimal.wait(timeout: Run.defaultTimeout), 0)
        XCTAssertEqual(decimal.stdoutText, "(pid_t)\(decimal.pid)\n")
    }

    func testDepthLimitsNesting() throws {
        try requireRoot("BPF")
        let release = unameRelease()
        let one = try runKreach(["show", "--depth", "1", "*current->nsproxy->uts_ns"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertTrue(one.stdout.contains("\t.name = (struct new_utsname){ ... },\n"), one.stdout)
        XCTAssertFalse(one.stdout.contains("sysname"), one.stdout)
        let two = try runKreach(["show", "--depth", "2", "*current->nsproxy->uts_ns"])
        XCTAssertEqual(two.status, 0, two.stderr)
        XCTAssertTrue(two.stdout.contains("\t\t.sysname = (char [65])\"Linux\",\n"), two.stdout)
        XCTAssertTrue(two.stdout.contains("\t\t.release = (char [65])\"\(release)\",\n"), two.stdout)
        let zero = try runKreach(["show", "--depth", "0", "*current->nsproxy->uts_ns"])
        XCTAssertTrue(zero.stdout.hasSuffix(" = { ... }\n"), zero.stdout)
        XCTAssertEqual(try runKreach(["show", "--depth", "-1", "current->pid"]).status, 2)
    }

    // MARK: bitfields in show

    /// struct sock's bitfields sk_no_check_tx/rx (SO_NO_CHECK) and sk_txtime_deadline_mode/report_errors
    /// (SO_TXTIME flags): set differently on two UDP sockets, read back with getsockopt (the kernel's own
    /// answer), and through kreach from its inherited descriptor table.
    func testBitfieldValuesOfALiveSocket() throws {
        try requireRoot("BPF")
        let soNoCheck: Int32 = 11, soTxtime: Int32 = 61  // asm-generic/socket.h
        var sockets: [(fd: Int32, noCheck: Int, flags: UInt32)] = []
        defer { for s in sockets { close(s.fd) } }
        for (noCheck, flags) in [(1, UInt32(1)), (0, UInt32(2))] {  // SOF_TXTIME_DEADLINE_MODE, SOF_TXTIME_REPORT_ERRORS
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)  // no CLOEXEC: kreach inherits it
            XCTAssertGreaterThanOrEqual(fd, 0)
            sockets.append((fd, noCheck, flags))
            var v = Int32(noCheck)
            XCTAssertEqual(setsockopt(fd, SOL_SOCKET, soNoCheck, &v, 4), 0, String(cString: strerror(errno)))
            var txtime: [UInt32] = [UInt32(CLOCK_MONOTONIC), flags]  // struct sock_txtime
            XCTAssertEqual(setsockopt(fd, SOL_SOCKET, soTxtime, &txtime, 8), 0, String(cString: strerror(errno)))
            // The kernel's own view.
            var got = Int32(-1), len = socklen_t(4)
            XCTAssertEqual(getsockopt(fd, SOL_SOCKET, soNoCheck, &got, &len), 0)
            XCTAssertEqual(Int(got), noCheck)
            var gotTxtime: [UInt32] = [0, 0]
            var txLen = socklen_t(8)
            XCTAssertEqual(getsockopt(fd, SOL_SOCKET, soTxtime, &gotTxtime, &txLen), 0)
            XCTAssertEqual(gotTxtime[1], flags)
        }
        var expressions: [String] = []
        var expected: [Int] = []
        for s in sockets {
            let sk = "((struct socket *)current->files->fdt->fd[\(s.fd)]->private_data)->sk->"
            expressions += ["no_check_tx", "no_check_rx", "txtime_deadline_mode", "txtime_report_errors"].map { sk + "sk_" + $0 }
            expected += [s.noCheck, 0, Int(s.flags & 1), Int(s.flags >> 1 & 1)]
        }
        let r = try runKreach(["show", "--json"] + expressions)
        XCTAssertEqual(r.status, 0, r.stderr)
        let values = try json(r.stdout).map { $0["value"] as? Int ?? -1 }
        XCTAssertEqual(values, expected, r.stdout)
    }

    // MARK: rb_root_cached

    /// Three timerfds on CLOCK_BOOTTIME, armed out of order on one CPU: the hrtimer base's timerqueue (an
    /// rb_root_cached) walked in order gives the expiries /proc/timer_list lists for that CPU and clock,
    /// our three in expiry order, the cached leftmost first.
    func testRbRootCachedWalkOfATimerQueue() throws {
        try requireRoot("BPF")
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        // Arm them on one CPU, so they share a per-CPU clock base.
        let libc = LibcExtras()
        let cpu = libc.schedGetcpu()
        var old = [UInt8](repeating: 0, count: 128), one = [UInt8](repeating: 0, count: 128)  // cpu_set_t
        XCTAssertEqual(libc.schedGetaffinity(0, 128, &old), 0)
        one[Int(cpu) / 8] = UInt8(1 << (Int(cpu) % 8))
        XCTAssertEqual(libc.schedSetaffinity(0, 128, &one), 0)
        for seconds in [2000, 1000, 3000] {
            let fd = libc.timerfdCreate(CLOCK_BOOTTIME, 0)
            XCTAssertGreaterThanOrEqual(fd, 0)
            fds.append(fd)
            var spec = itimerspec(it_interval: timespec(), it_value: timespec(tv_sec: seconds, tv_nsec: 0))
            XCTAssertEqual(libc.timerfdSettime(fd, 0, &spec, nil), 0)
        }
        XCTAssertEqual(libc.schedSetaffinity(0, 128, &old), 0)
        func timer(_ fd: Int32) -> String { "((struct timerfd_ctx *)current->files->fdt->fd[\(fd)]->private_data)->t.tmr" }
        let queue = "&\(timer(fds[0])).base->active.rb_root"
        let walk = try runKreach(["show", "--fields", "node.expires", "rbtree_inorder_for_each_entry(struct hrtimer, \(queue), node)"])
        XCTAssertEqual(walk.status, 0, walk.stderr)
        let timerList = String(decoding: try FileBytes.read("/proc/timer_list"), as: UTF8.self)
        // "0xADDR node.expires=N" per entry.
        let entries = walk.stdout.split(separator: "\n").map { $0.split(separator: " ") }
        let addresses = entries.map { String($0[0]) }
        let expiries = entries.compactMap { $0.last.flatMap { UInt64($0.split(separator: "=").last ?? "") } }
        XCTAssertEqual(expiries.count, entries.count, walk.stdout)
        let listed = try XCTUnwrap(Self.timerListExpiries(timerList).first { $0.contains(expiries.first ?? 0) },
                                   "no clock base in /proc/timer_list has \(expiries)")
        XCTAssertEqual(expiries, listed, "the walk against /proc/timer_list")
        XCTAssertEqual(expiries, expiries.sorted(), "in order")
        // Ours, by address: armed 2000 s, 1000 s, 3000 s, so walked as fds[1], fds[0], fds[2].
        let ours = try runKreach(["show", "&" + timer(fds[1]), "&" + timer(fds[0]), "&" + timer(fds[2]), queue.dropFirst() + ".rb_leftmost"])
        XCTAssertEqual(ours.status, 0, ours.stderr)
        let ourAddresses = ours.stdout.split(separator: "\n").map { String($0.split(separator: ")").last ?? "") }
        XCTAssertEqual(addresses.filter { ourAddresses.prefix(3).contains($0) }, Array(ourAddresses.prefix(3)))
        XCTAssertEqual(ourAddresses.last.map { String($0.split(separator: " ").first ?? "") }, addresses.first, "rb_leftmost is the first entry")
    }

    /// /proc/timer_list: each CPU's clock bases, each with its active timers' hard expiries in listed order.
    static func timerListExpiries(_ text: String) -> [[UInt64]] {
        var result: [[UInt64]] = []
        var inBase = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix(" clock ") { result.append([]); inBase = true; continue }
            if line.hasPrefix("cpu: ") || line.hasPrefix("Tick Device") { inBase = false }
            // " # expires at SOFT-HARD nsecs [in ...]"
            if inBase, line.hasPrefix(" # expires at "), let range = line.dropFirst(14).split(separator: " ").first,
               let hard = range.split(separator: "-").last.flatMap({ UInt64($0) }) {
                result[result.count - 1].append(hard)
            }
            if line.hasPrefix("  .expires_next") { inBase = false }
        }
        return result
    }

    // MARK: watch and SIGTERM

    /// The first sample printed is the event to wait for; SIGTERM then ends watch with status 0.
    func testWatchExitsCleanlyOnSIGTERM() throws {
        try requireRoot("BPF")
        let child = try Child([try kreachBinary(), "watch", "--interval", "50ms", "current->pid"])
        try child.waitForOutput(containing: "\n", timeout: Run.defaultTimeout)
        child.signal(SIGTERM)
        XCTAssertEqual(try child.wait(timeout: Run.defaultTimeout), 0, child.stderrText)
        let lines = child.stdoutText.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, child.stdoutText)
        XCTAssertTrue(lines.first?.hasSuffix(" current->pid = \(child.pid)") ?? false, child.stdoutText)
        XCTAssertEqual(child.stderrText, "")
    }

    // MARK: where/why --json, --limit (the Debian capture)

    func debian() throws -> String { try DebianCapture.directory() }

    /// The capture's available_filter_functions as a set of names.
    func filterFunctions() throws -> Set<Substring> {
        Set(try String(contentsOfFile: try debian() + "/available_filter_functions", encoding: .utf8)
            .split(separator: "\n").compactMap { $0.split(separator: " ").first })
    }

    func testWhereJSONAgainstBpftool() throws {
        let dir = try debian()
        let r = try runKreach(["where", "--json", "--kernel", dir, "lockd:struct nlm_file"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try json(r.stdout)
        let traceable = try filterFunctions()
        var expected: [String: String] = [:]  // "module:function" -> detail prefix
        for module in try FileManager.default.contentsOfDirectory(atPath: dir + "/btf") where module != "vmlinux" {
            for f in try BpftoolRawDump(file: dir + "/btf/" + module, base: dir + "/btf/vmlinux").functions(using: "nlm_file") {
                expected["\(module):\(f.function)"] = f.index < 0 ? "returns " : "arg\(f.index) \(f.parameter): "
            }
        }
        let functionRows = rows.filter { ["parameter", "return"].contains($0["kind"] as? String ?? "") }
        XCTAssertEqual(Set(functionRows.map { "\($0["object"] ?? ""):\($0["place"] ?? "")" }), Set(expected.keys))
        for row in functionRows {
            let place = row["place"] as? String ?? ""
            let prefix = expected["\(row["object"] ?? ""):\(place)"] ?? "?"
            XCTAssertTrue((row["detail"] as? String ?? "").hasPrefix(prefix), "\(row)")
            XCTAssertEqual(row["verdict"] as? String == "traceable", traceable.contains(Substring(place)), "\(row)")
            XCTAssertNotNil(row["depth"] as? Int)
        }
    }

    func testWhereLimit() throws {
        let dir = try debian()
        let all = try json(try runKreach(["where", "--json", "--kernel", dir, "lockd:struct nlm_file"]).stdout)
        XCTAssertGreaterThan(all.count, 3)
        let three = try runKreach(["where", "--json", "--limit", "3", "--kernel", dir, "lockd:struct nlm_file"])
        XCTAssertEqual(three.status, 0, three.stderr)
        XCTAssertEqual(try json(three.stdout).map { $0["place"] as? String }, all.prefix(3).map { $0["place"] as? String })
        let text = try runKreach(["where", "--limit", "3", "--kernel", dir, "lockd:struct nlm_file"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertEqual(text.stdout.split(separator: "\n").last, "(\(all.count - 3) more; --limit 0 for all)")
        let unlimited = try runKreach(["where", "--limit", "0", "--kernel", dir, "lockd:struct nlm_file"])
        XCTAssertFalse(unlimited.stdout.contains("more; --limit 0"), unlimited.stdout)
    }

    /// Verdicts of four kinds against the capture's own lists: the kprobe blacklist, available_filter_functions,
    /// kallsyms (clones) and BTF (bpftool).
    func testWhyJSONAgainstTheCapturesLists() throws {
        let dir = try debian()
        let blacklist = Set(try String(contentsOfFile: dir + "/kprobes_blacklist", encoding: .utf8)
            .split(separator: "\n").compactMap { $0.split(separator: "\t").last })
        let traceable = try filterFunctions()
        let kallsyms = Set(try String(contentsOfFile: dir + "/kallsyms", encoding: .utf8)
            .split(separator: "\n").compactMap { $0.split(separator: " ").dropFirst(2).first?.split(separator: "\t").first })
        let rawBTF = try Run.command(["bpftool", "btf", "dump", "file", dir + "/btf/vmlinux", "format", "raw"]).stdout
        func inBTF(_ f: Substring) -> Bool { rawBTF.contains("] FUNC '\(f)' ") }
        let blacklisted = try XCTUnwrap(blacklist.sorted().first { !traceable.contains($0) })
        let names: [Substring] = ["vfs_read", "brd_alloc", "no_such_fn_q", blacklisted]
        XCTAssertTrue(inBTF("vfs_read"), "the BTF oracle sees functions")
        func expected(_ f: Substring) -> String {
            if blacklist.contains(f) { return "blacklisted" }
            if traceable.contains(f) { return "traceable" }
            if !kallsyms.contains(f) && kallsyms.contains(where: { $0.hasPrefix(f + ".isra.") || $0.hasPrefix(f + ".constprop.") || $0.hasPrefix(f + ".part.") }) { return "clone-only" }
            if !kallsyms.contains(f) && !inBTF(f) { return "absent" }
            return "?"
        }
        let r = try runKreach(["why", "--json", "--kernel", dir] + names.map(String.init))
        let rows = try json(r.stdout)
        XCTAssertEqual(rows.map { $0["function"] as? String ?? "" }, names.map(String.init))
        XCTAssertEqual(rows.map { $0["verdict"] as? String ?? "" }, names.map(expected))
        XCTAssertEqual(rows.first?["probes"] as? [String], ["kfunc:vfs_read", "kprobe:vfs_read"])
        XCTAssertEqual(rows.last?["probes"] as? [String], [])
    }

    // MARK: bpftrace

    func testMissingBpftraceIsAOneLineError() throws {
        let r = try Run.command([try kreachBinary(), "run", "-e", "BEGIN { exit(); }"], environment: ["PATH": "/nonexistent"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "kreach: bpftrace is not installed (apt-get install bpftrace)\n")
        XCTAssertEqual(r.stdout, "")
    }

    /// capture --arg: the snippet kreach prints (fentry/kfunc on a kernel without kprobes, kprobe where they
    /// exist), run by bpftrace against a real call: dd reading with a block size only it uses.
    func testCaptureArgSnippetRunsInBpftrace() throws {
        try requireRoot("bpftrace")
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        let r = try runKreach(["capture", "vfs_read", "--arg", "count", "--as", "n"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let snippet = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let kprobes = FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/kprobe")
        if kprobes {
            // Typed from vfs_read's BTF prototype (size_t count), as on every kprobe kernel with BTF.
            XCTAssertEqual(snippet, "kprobe:vfs_read { @n = (uint64)arg2; }")
        } else {
            XCTAssertTrue(["kfunc:vfs_read { @n = (uint64)args->count; }", "fentry:vfs_read { @n = (uint64)args->count; }"].contains(snippet), snippet)
            XCTAssertTrue(r.stderr.contains("no kprobes: using fentry/fexit"), r.stderr)
        }
        // bpftrace checks kfunc/kprobe targets against available_filter_functions; where the kernel refuses to
        // list it (this dev host: EPERM), bpftrace can't attach either, so only the snippet is checked.
        let list = (Host.tracefs() ?? "/sys/kernel/tracing") + "/available_filter_functions"
        let fd = open(list, O_RDONLY)
        guard fd >= 0 else {
            throw XCTSkip(Host.skipReason("bpftrace can't attach here: open \(list): \(String(cString: strerror(errno))); the snippet was checked, not run"))
        }
        close(fd)
        // Only dd's own calls: its last vfs_read is its one read of the input.
        let dd = try XCTUnwrap(["/usr/bin/dd", "/bin/dd"].first { FileManager.default.isExecutableFile(atPath: $0) })
        let program = snippet.replacingOccurrences(of: "vfs_read { ", with: "vfs_read /pid == cpid/ { ")
        let bt = try Run.command(["sh", "-c", "ulimit -l unlimited 2>/dev/null; exec bpftrace -e \"$0\" -c \"$1\"", program,
                                  "\(dd) if=/proc/version of=/dev/null bs=12345 count=1"])
        XCTAssertEqual(bt.status, 0, bt.stderr)
        XCTAssertTrue(bt.stdout.contains("@n: 12345\n"), bt.stdout + bt.stderr)
    }
}

/// glibc functions Swift's Glibc module doesn't import (GNU extensions), looked up with dlsym.
struct LibcExtras {
    let schedGetcpu: @convention(c) () -> Int32
    let schedGetaffinity: @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
    let schedSetaffinity: @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
    let timerfdCreate: @convention(c) (Int32, Int32) -> Int32
    let timerfdSettime: @convention(c) (Int32, Int32, UnsafePointer<itimerspec>, UnsafeMutablePointer<itimerspec>?) -> Int32

    init() {
        func symbol<T>(_ name: String, _: T.Type) -> T {
            guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { fatalError("glibc has no \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        schedGetcpu = symbol("sched_getcpu", (@convention(c) () -> Int32).self)
        schedGetaffinity = symbol("sched_getaffinity", (@convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32).self)
        schedSetaffinity = symbol("sched_setaffinity", (@convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32).self)
        timerfdCreate = symbol("timerfd_create", (@convention(c) (Int32, Int32) -> Int32).self)
        timerfdSettime = symbol("timerfd_settime", (@convention(c) (Int32, Int32, UnsafePointer<itimerspec>, UnsafeMutablePointer<itimerspec>?) -> Int32).self)
    }
}
