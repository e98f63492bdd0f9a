import Foundation
import XCTest
import KernelObject
import KernelSource
import KreachTestSupport
@testable import ScriptGen

/// Every expression form of `kreach show` (walkers aside) in a script, expanded against the Debian 6.1 capture
/// without any memory reader. Expected addresses come from the capture's kallsyms file and member offsets
/// from bpftool's raw BTF dump, never from kreach.
final class ScriptExpressionTests: XCTestCase, CaptureOracle {
    /// The capture's kallsyms addresses by `module:name`, in file order.
    static let symbols: [String: [UInt64]] = {
        var table: [String: [UInt64]] = [:]
        guard let dir = try? DebianCapture.directory(), let text = try? String(contentsOfFile: dir + "/kallsyms", encoding: .utf8) else { return table }
        for line in text.split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 3, let a = UInt64(f[0], radix: 16) else { continue }
            let module = f.count > 3 ? String(f[3].dropFirst().dropLast()) : "vmlinux"
            table[module + ":" + f[2], default: []].append(a)
        }
        return table
    }()
    nonisolated(unsafe) static let vmlinux: BpftoolRawDump? = (try? DebianCapture.directory()).flatMap { try? BpftoolRawDump(file: $0 + "/btf/vmlinux") }

    func generator() throws -> ScriptGenerator {
        try ScriptGenerator(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())))
    }

    /// The text `expression` becomes in `BEGIN { @x = EXPRESSION; }`.
    func expand(_ expression: String, _ g: ScriptGenerator? = nil) throws -> String {
        let out = try (g ?? generator()).expand("BEGIN { @x = \(expression); }", file: "t.bt")
        let first = String(out.split(separator: "\n")[0])
        guard let body = first.range(of: "BEGIN { @x = "), first.hasSuffix("; }") else { return first }
        return String(first[body.upperBound...].dropLast(3))
    }

    func testCastOfAnUntypedModuleGlobalToAStructThenMember() throws {
        let misc = try address("loop:loop_misc")
        let minor = try offset("miscdevice", "minor"), name = try offset("miscdevice", "name")
        XCTAssertEqual(try expand("((struct miscdevice)loop`loop_misc).minor"), "(*(int32 *)\(hex(misc + minor)))")
        // A module-qualified type: loop's BTF, then vmlinux (its base).
        XCTAssertEqual(try expand("((loop:struct miscdevice)loop`loop_misc).minor"), "(*(int32 *)\(hex(misc + minor)))")
        // &, a pointer cast and ->: a char * stays a pointer value; the user writes str().
        XCTAssertEqual(try expand("str(((struct miscdevice *)&loop`loop_misc)->name)"), "str((*(uint64 *)\(hex(misc + name))))")
    }

    func testLoadsThroughPointersNest() throws {
        let misc = try address("loop:loop_misc")
        let fops = try offset("miscdevice", "fops"), owner = try offset("file_operations", "owner")
        let task = try address("vmlinux:init_task")
        let parent = try offset("task_struct", "parent"), pid = try offset("task_struct", "pid")
        // A pointer to a vmlinux struct keeps its type, so the script's own '->' works through bpftrace's BTF.
        let ownerLoad = owner == 0 ? "(*(uint64 *)(*(uint64 *)\(hex(misc + fops))))" : "(*(uint64 *)((*(uint64 *)\(hex(misc + fops))) + \(hex(owner))))"
        XCTAssertEqual(try expand("((struct miscdevice *)&loop`loop_misc)->fops->owner"), "((struct module *)\(ownerLoad))")
        // `const struct file_operations *`: bpftrace's casts take neither const nor typedef names.
        XCTAssertEqual(try expand("((struct miscdevice *)&loop`loop_misc)->fops"), "((struct file_operations *)(*(uint64 *)\(hex(misc + fops))))")
        XCTAssertEqual(try expand("((struct task_struct *)&`init_task)->parent->pid"),
                       "(*(int32 *)((*(uint64 *)\(hex(task + parent))) + \(hex(pid))))")
        // *p
        let children = try offset("task_struct", "children")
        XCTAssertEqual(try expand("*((struct task_struct)`init_task).children.next"), "(*(struct list_head *)(*(uint64 *)\(hex(task + children))))")
        XCTAssertEqual(try expand("(*((struct task_struct *)&`init_task)).pid"), "(*(int32 *)\(hex(task + pid)))")
        // -n and &x
        XCTAssertEqual(try expand("-((struct task_struct)`init_task).pid"), "(-(*(int32 *)\(hex(task + pid))))")
        XCTAssertEqual(try expand("&((struct task_struct)`init_task).pid"), hex(task + pid))
    }

    func testMemberPathsThroughStructsAndArraysWithConstantAndOpaqueIndices() throws {
        let task = try address("vmlinux:init_task")
        let comm = try offset("task_struct", "comm"), mask = try offset("task_struct", "cpus_mask"), bits = try offset("cpumask", "bits")
        XCTAssertEqual(try expand("((struct task_struct)`init_task).comm"), "str(\(hex(task + comm)), 16)")
        XCTAssertEqual(try expand("((struct task_struct)`init_task).cpus_mask.bits[1]"), "(*(uint64 *)\(hex(task + mask + bits + 8)))")
        XCTAssertEqual(try expand("((struct task_struct)`init_task).cpus_mask.bits[$i]"), "(*(uint64 *)(\(hex(task + mask + bits)) + (($i) * 8)))")
        XCTAssertEqual(try expand("((struct task_struct)`init_task).cpus_mask.bits[arg0 + 1]"), "(*(uint64 *)(\(hex(task + mask + bits)) + ((arg0 + 1) * 8)))")
        XCTAssertEqual(try expand("((struct task_struct)`init_task).comm[@m[1]]"), "(*(int8 *)(\(hex(task + comm)) + (@m[1])))")
        // A bitfield: the byte holding it, shifted and masked (offsets from bpftool).
        let d = try XCTUnwrap(ScriptExpressionTests.vmlinux)
        let t = try XCTUnwrap(d.entries[try XCTUnwrap(d.named("task_struct"))])
        let bf = try XCTUnwrap(t.members.first { $0.name == "sched_reset_on_fork" })
        XCTAssertEqual(bf.bitfieldSize, 1)
        XCTAssertEqual(try expand("((struct task_struct)`init_task).sched_reset_on_fork"),
                       "(((*(uint8 *)\(hex(task + UInt64(bf.bitOffset / 8)))) >> \(bf.bitOffset % 8)) & 0x1)")
    }

    func testPerCPUCurrentAndTypedefs() throws {
        let offsets = try address("vmlinux:__per_cpu_offset"), rq = try address("vmlinux:runqueues")
        let running = try offset("rq", "nr_running")
        XCTAssertEqual(try expand("per_cpu(`runqueues, 1).nr_running"), "(*(uint32 *)((*(uint64 *)\(hex(offsets + 8))) + \(hex(rq + running))))")
        XCTAssertEqual(try expand("per_cpu(`runqueues, $cpu).nr_running"),
                       "(*(uint32 *)((*(uint64 *)(\(hex(offsets)) + (($cpu) * 8))) + \(hex(rq + running))))")
        // current is the probed task: bpftrace's curtask.
        let files = try address("lockd:nlm_files"), first = try offset("hlist_head", "first"), pid = try offset("task_struct", "pid")
        XCTAssertEqual(first, 0)
        XCTAssertEqual(try expand("((struct hlist_head *)&lockd`nlm_files)[current->pid].first"),
                       "((struct hlist_node *)(*(uint64 *)(\(hex(files)) + ((*(int32 *)(((uint64)curtask) + \(hex(pid)))) * 8))))")
        // Typedefs: vmlinux's, pinned; a module's own (nfsd's clientid_t), pinned or found from the global's module.
        XCTAssertEqual(try expand("(vmlinux:pid_t)`pid_max"), "(*(int32 *)\(hex(try address("vmlinux:pid_max"))))")
        let nfsd = try BpftoolRawDump(file: try DebianCapture.directory() + "/btf/nfsd", base: try DebianCapture.directory() + "/btf/vmlinux")
        let clientid = try XCTUnwrap(nfsd.entries.first { $0.value.kind == "TYPEDEF" && $0.value.name == "clientid_t" })
        let anon = try XCTUnwrap(nfsd.entries[try XCTUnwrap(clientid.value.target)])
        let clID = UInt64(try XCTUnwrap(anon.members.first { $0.name == "cl_id" }).bitOffset / 8)
        let net = try address("nfsd:nfsd_net_id")
        XCTAssertEqual(try expand("((nfsd:clientid_t *)&nfsd`nfsd_net_id)->cl_id"), "(*(uint32 *)\(hex(net + clID)))")
        XCTAssertEqual(try expand("((clientid_t *)&nfsd`nfsd_net_id)->cl_id"), "(*(uint32 *)\(hex(net + clID)))")
    }

    func testChoosersAndIntegerCasts() throws {
        let second = try address("lockd:nlm_blocked", 1)
        XCTAssertEqual(try expand("(uint64)lockd`nlm_blocked#2"), "(uint64)(*(uint64 *)\(hex(second)))")
        XCTAssertEqual(try expand("(uint64)lockd`nlm_blocked@\(String(second, radix: 16))"), "(uint64)(*(uint64 *)\(hex(second)))")
        XCTAssertEqual(try expand("((struct list_head *)&lockd`nlm_blocked#2)->next"), "((struct list_head *)(*(uint64 *)\(hex(second))))")
        // A module parameter the .ko can't type here (the capture has no .ko files): read as the cast says, and said.
        let g = try generator()
        XCTAssertEqual(try expand("(uint64)brd`rd_size", g), "(uint64)(*(uint64 *)\(hex(try address("brd:rd_size"))))")
        XCTAssertTrue(g.notes.contains { $0.hasPrefix("brd`rd_size is a parameter of brd: its C type comes from brd's .ko") }, "\(g.notes)")
        // A bpftrace integer cast of a typed value stays bpftrace's own conversion.
        let misc = try address("loop:loop_misc")
        XCTAssertEqual(try expand("(uint64)((struct miscdevice)loop`loop_misc).minor"), "(uint64)(*(int32 *)\(hex(misc)))")
    }

    func testModuleStructPointerGetsItsDefinition() throws {
        let g = try generator()
        let files = try address("lockd:nlm_files")
        let out = try g.expand("BEGIN { @x = (lockd:struct nlm_file *)lockd`nlm_files; }", file: "t.bt")
        XCTAssertTrue(out.hasPrefix("struct nlm_file { "), out)
        XCTAssertTrue(out.contains("BEGIN { @x = ((struct nlm_file *)(*(uint64 *)\(hex(files)))); }"), out)
        XCTAssertTrue(g.notes.contains { $0.contains("points to struct nlm_file from lockd's BTF") }, "\(g.notes)")
        // With the member named, kreach resolves the read itself (offset from bpftool's dump of lockd's BTF).
        let lockd = try BpftoolRawDump(file: try DebianCapture.directory() + "/btf/lockd", base: try DebianCapture.directory() + "/btf/vmlinux")
        XCTAssertEqual(try expand("((lockd:struct nlm_file *)lockd`nlm_files)->f_count"),
                       "(*(uint32 *)((*(uint64 *)\(hex(files))) + \(hex(try offset("nlm_file", "f_count", dump: lockd)))))")
    }

    /// Unsupported forms: a caret and a form that works, never an integer cast that reads the wrong bytes.
    func testErrorsSuggestFormsThatWork() throws {
        func message(_ script: String) throws -> String {
            var text = ""
            XCTAssertThrowsError(try generator().expand(script, file: "e.bt")) { text = "\($0)" }
            return text
        }
        // A struct-sized untyped global with no struct of its name: its size, and a struct cast.
        let loop = try message("BEGIN { @x = loop`loop_misc.minor; }")
        XCTAssertTrue(loop.hasPrefix("e.bt:1:14: loop`loop_misc has no known type and is at most 80 bytes: cast it to its struct, e.g. ((struct NAME)loop`loop_misc).MEMBER\n"), loop)
        XCTAssertTrue(loop.hasSuffix("\n               ^~~~~~~~~~~~~~"), loop)
        XCTAssertFalse(try message("BEGIN { @x = loop`loop_misc; }").contains("uint"))
        XCTAssertFalse(try message("BEGIN { @x = `bpf_struct_ops; }").contains("uint"))
        // A struct named like the global, of the global's size: suggested with the member asked for; it works.
        let pool = try message("BEGIN { @x = sunrpc`svc_pool_map.npools; }")
        XCTAssertTrue(pool.hasPrefix("e.bt:1:14: sunrpc`svc_pool_map has no known type: cast it, e.g. ((struct svc_pool_map)sunrpc`svc_pool_map).npools\n"), pool)
        let sunrpc = try BpftoolRawDump(file: try DebianCapture.directory() + "/btf/sunrpc", base: try DebianCapture.directory() + "/btf/vmlinux")
        XCTAssertEqual(try expand("((struct svc_pool_map)sunrpc`svc_pool_map).npools"),
                       "(*(uint32 *)\(hex(try address("sunrpc:svc_pool_map") + (try offset("svc_pool_map", "npools", dump: sunrpc)))))")
        // An 8-byte global: the matching integer width.
        XCTAssertTrue(try message("BEGIN { @x = brd`rd_size; }").contains("cast it, e.g. (uint64)brd`rd_size"))
        // Other forms kreach refuses, with the caret where the problem is.
        let bitfield = try message("BEGIN { @x = &((struct task_struct)`init_task).sched_reset_on_fork; }")
        XCTAssertTrue(bitfield.hasPrefix("e.bt:1:14: can't take the address of a bitfield"), bitfield)
        let moduleStruct = try message("BEGIN { @x = (lockd:struct nlm_file)lockd`nlm_files; }")
        XCTAssertTrue(moduleStruct.contains("from lockd's BTF: name one of its members (.member)"), moduleStruct)
        let arrow = try message("BEGIN { @x = ((struct task_struct)`init_task)->pid; }")
        XCTAssertTrue(arrow.contains("'->' needs a pointer") && arrow.contains("(use '.')"), arrow)
        let noMember = try message("BEGIN { @x = ((struct task_struct)`init_task).pdi; }")
        XCTAssertTrue(noMember.hasPrefix("e.bt:1:15: struct task_struct has no member pdi (did you mean "), noMember)
        let index = try message("BEGIN { @x = ((struct hlist_head *)&lockd`nlm_files)[`pid_max]; }")
        XCTAssertTrue(index.hasPrefix("e.bt:1:54: `pid_max has no known type"), index)
    }

    /// The printed forms run in bpftrace on this host: nested loads, offsets, str(ADDR, N), struct pointer casts,
    /// conversions, bit masks, curtask, opaque indices. Addresses are live ones bpftrace itself reports
    /// (`curtask->nsproxy`: the init_nsproxy every root-namespace task shares), values checked against uname.
    func testPrintedFormsRunInBpftrace() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: bpftrace needs root")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        func bpftrace(_ program: String) throws -> String {
            let r = try Run.command(["sh", "-c", "ulimit -l unlimited 2>/dev/null; exec bpftrace -e \"$0\"", program])
            XCTAssertEqual(r.status, 0, "\(program): \(r.stderr)")
            return r.stdout
        }
        let nsproxy = try bpftrace("BEGIN { printf(\"%lu\\n\", (uint64)curtask->nsproxy); exit(); }")
        let proxy = try XCTUnwrap(nsproxy.split(separator: "\n").compactMap { UInt64($0) }.first, nsproxy)
        let types = try Kernel(source: .live).types()
        let ns = try types.resolve("struct nsproxy"), uts = try types.resolve("struct uts_namespace"), name = try types.resolve("struct new_utsname")
        func member(_ m: TypeMatch, _ n: String) throws -> UInt64 {
            UInt64(try XCTUnwrap(try m.btf.type(m.id).members.first { $0.name == n }).bitOffset / 8)
        }
        let utsNS = Value.load(Value.plus(.constant(proxy), .constant(try member(ns, "uts_ns"))), size: 8, signed: false)
        let release = Value.plus(Value.plus(utsNS, .constant(try member(uts, "name"))), .constant(try member(name, "release")))
        let first = Value.load(release, size: 1, signed: false)
        let expressions = [
            "str(\(ScriptGenerator.text(release)), 65)",
            ScriptGenerator.text(first),
            ScriptGenerator.text(.bits(first, shift: 0, width: 8, signed: false)),
            ScriptGenerator.text(.convert(.negate(.negate(first)), size: 1, signed: false)),
            ScriptGenerator.text(.load(Value.plus(release, Value.times(.opaque("$i"), 1)), size: 1, signed: false)),
            "((struct uts_namespace *)\(ScriptGenerator.text(utsNS)))->name.release",
            ScriptGenerator.text(.load(Value.plus(.currentTask, .constant(0)), size: 8, signed: false)),
        ]
        let program = "BEGIN { $i = 0; printf(\"%s|%d|%d|%d|%d|%s|%lu\\n\", \(expressions.joined(separator: ", "))); exit(); }"
        let out = try bpftrace(program)
        let kernelRelease = try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let c = Int(kernelRelease.utf8.first ?? 0)
        XCTAssertTrue(out.contains("\(kernelRelease)|\(c)|\(c)|\(c)|\(c)|\(kernelRelease)|"), "\(program)\n\(out)")
    }
}
