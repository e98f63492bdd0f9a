import Foundation
import XCTest
import KernelObject
import KernelSource
import Memory
import KreachTestSupport
@testable import ScriptGen

/// Script expansion and capture snippets against the Debian capture (addresses and BTF of a real
/// 6.1 kernel with brd, loop, lockd), and bpftrace itself on the live host.
final class ScriptGenTests: XCTestCase {
    func generator() throws -> ScriptGenerator {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        return try ScriptGenerator(kernel: kernel)
    }

    func testGlobalsAreFoldedToTypedReads() throws {
        let g = try generator()
        let out = try g.expand("""
            // brd`not_this in a comment
            BEGIN { printf("brd`nor_this %d %d\\n", (uint64)brd`rd_size, (int32)loop`max_loop); }
            kprobe:x /(uint64)`pid_max > 0/ { @s = (int32)`init_uts_ns; }
            """, file: "t.bt")
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines[0], "// brd`not_this in a comment")
        XCTAssertEqual(lines[1], #"BEGIN { printf("brd`nor_this %d %d\n", (uint64)(*(uint64 *)0xffffffffc05740d8), (int32)(*(int32 *)0xffffffffc05c60b4)); }"#)
        XCTAssertTrue(lines[2].hasPrefix("kprobe:x /(uint64)(*(uint64 *)0xffffffff"), String(lines[2]))
        // Lines stay where they were; the guard comes after, for both modules.
        XCTAssertTrue(out.contains(#"tracepoint:module:module_free /str(args->name) == "brd" || str(args->name) == "loop"/ {"#), out)
    }

    func testUntypedWithoutCastAndUnknownNamesAreFileLineColumnErrors() throws {
        let g = try generator()
        XCTAssertThrowsError(try g.expand("BEGIN {\n\t@x = brd`rd_size + 1;\n}\n", file: "s.bt")) { e in
            XCTAssertEqual("\(e)", "s.bt:2:7: brd`rd_size has no known type: cast it, e.g. (uint64)brd`rd_size\n  \t@x = brd`rd_size + 1;\n  \t     ^~~~~~~~~~~")
        }
        XCTAssertThrowsError(try g.expand("BEGIN { @x = lockd`nlm_blocked; }", file: "s.bt")) { e in
            XCTAssertTrue("\(e)".hasPrefix("s.bt:1:14: lockd`nlm_blocked is ambiguous"), "\(e)")
        }
        XCTAssertThrowsError(try g.expand("BEGIN { @x = `; }", file: "s.bt")) { e in
            XCTAssertTrue("\(e)".hasPrefix("s.bt:1:14: expected a global's name after '`'"), "\(e)")
        }
    }

    func testCaptureDirective() throws {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let g = try ScriptGenerator(kernel: kernel,
                                capture: CaptureBuilder(kernel: kernel, bpftrace: nil))
        let out = try g.expand("// x\n@kreach.capture(vfs_read, reads)\nEND { print(@reads); }\n", file: "c.bt")
        XCTAssertEqual(out, "// x\nkretprobe:vfs_read { @reads = (int64)retval; }\nEND { print(@reads); }\n")
        XCTAssertThrowsError(try g.expand("\n@kreach.capture(no_such_fn_xyz)\n", file: "c.bt")) {
            XCTAssertTrue("\($0)".hasPrefix("c.bt:2:1: no_such_fn_xyz: no such function"), "\($0)")
        }
        XCTAssertThrowsError(try g.expand("@kreach.capture(vfs_read\n", file: "c.bt")) {
            XCTAssertTrue("\($0)".hasPrefix("c.bt:1:1: unterminated @kreach.capture("), "\($0)")
        }
    }

    func testModuleStructDefinitionsKeepLinesAndLayout() throws {
        let g = try generator()
        let out = try g.expand("#!/usr/bin/env bpftrace\nkprobe:nlm_release_file { printf(\"%d\\n\", ((struct nlm_file *)arg1)->f_count); }\n", file: "d.bt")
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3, "no line added")
        XCTAssertEqual(lines[0], "#!/usr/bin/env bpftrace")
        XCTAssertTrue(lines[1].hasPrefix("struct nlm_file { struct hlist_node f_list; struct nfs_fh f_handle; char __kreach_pad0[6]; struct file *f_file[2]; struct nlm_share *f_shares; struct list_head f_blocks; unsigned int f_locks; unsigned int f_count; struct mutex f_mutex; }; kprobe:nlm_release_file"), String(lines[1]))
        // vmlinux structs are bpftrace's own business.
        XCTAssertEqual(try g.expand("BEGIN { printf(\"%d\", sizeof(struct task_struct)); }", file: "d.bt"), "BEGIN { printf(\"%d\", sizeof(struct task_struct)); }")
    }

    func testCaptureSnippets() throws {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let b = CaptureBuilder(kernel: kernel, bpftrace: nil)
        XCTAssertEqual(try b.build(function: "vfs_read", name: "reads", arg: nil).snippet, "kretprobe:vfs_read { @reads = (int64)retval; }")
        XCTAssertEqual(try b.build(function: "nlm_lookup_file", name: nil, arg: "lock").snippet, "kprobe:nlm_lookup_file { @nlm_lookup_file = arg2; }")
        XCTAssertEqual(try b.build(function: "nlm_lookup_file", name: nil, arg: "0").snippet, "kprobe:nlm_lookup_file { @nlm_lookup_file = arg0; }")
        let clone = try b.build(function: "brd_alloc", name: nil, arg: nil)
        XCTAssertEqual(clone.snippet, "kretprobe:brd_alloc.isra.0 { @brd_alloc = (int64)retval; }")
        XCTAssertTrue(clone.notes.contains { $0.contains("clone brd_alloc.isra.0") })
        XCTAssertThrowsError(try b.build(function: "no_such_function_at_all", name: nil, arg: nil)) {
            XCTAssertTrue("\($0)".contains("inlined into every caller, or a macro"), "\($0)")
        }
        XCTAssertThrowsError(try b.build(function: "nlm_lookup_file", name: nil, arg: "nope")) {
            XCTAssertTrue("\($0)".contains("has no argument nope; its parameters: struct svc_rqst * rqstp"), "\($0)")
        }
    }

    /// bpftrace itself, on this host: a script without globals runs; its errors name the user's file.
    func testRunOnTheLiveHost() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: bpftrace needs root")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        let bt = try Bpftrace.find()
        XCTAssertEqual(bt.version.major, 0)
        XCTAssertGreaterThanOrEqual(bt.version.minor, 17)
        let kreach = Bundle.main.bundleURL.path + "/kreach"
        let ok = try Run.command(["sh", "-c", "ulimit -l unlimited 2>/dev/null; exec \(kreach) run -e 'BEGIN { printf(\"%d\\n\", 6 * 7); exit(); }'"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("42\n"), ok.stdout)
        let dir = NSTemporaryDirectory() + "kreachtest-bt-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "// line 1\nBEGIN {\n  printf(\"%d\\n\", ) ;\n}\n".write(toFile: dir + "/err.bt", atomically: true, encoding: .utf8)
        let bad = try Run.command([kreach, "run", dir + "/err.bt"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains(dir + "/err.bt:3"), bad.stderr)
        XCTAssertFalse(bad.stderr.contains("/tmp/kreach-"), "the temporary file's name is never shown: \(bad.stderr)")
        // `pid_max`: a data symbol in vmlinux on distribution kernels (6.1, 6.12), absent where kallsyms has no
        // data symbols (this dev host) or where it moved into the pid namespace (7.x). Decided from /proc/kallsyms.
        let script = "BEGIN { printf(\"%d\\n\", (int32)`pid_max); exit(); }"
        let r = try Run.command(["sh", "-c", "ulimit -l unlimited 2>/dev/null; exec \"$0\" run -e \"$1\"", kreach, script])
        if try KernelFacts.hasDataSymbol("pid_max") {
            XCTAssertEqual(r.status, 0, r.stderr)
            let procValue = try String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertTrue(r.stdout.split(separator: "\n").contains(Substring(procValue)), "pid_max \(procValue) not in: \(r.stdout)")
        } else {
            print("note: vmlinux has no data symbol pid_max here: checking the error instead")
            XCTAssertEqual(r.status, 1)
            XCTAssertTrue(r.stderr.hasPrefix("kreach: -e:1:31: no symbol matches vmlinux:pid_max"), r.stderr)
        }
    }
}
