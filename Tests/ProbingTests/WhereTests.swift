import Foundation
import XCTest
import Arch
import Memory
import BTF
import KernelSource
import KreachSupport
import KreachTestSupport
@testable import Probing

final class WhereTests: XCTestCase {
    func analyzer() throws -> (WhereAnalyzer, Kernel) {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        return (WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel)), kernel)
    }

    /// The memoized BTF walk against bpftool's raw dump of every module's BTF: functions whose return or
    /// parameter type is `struct nlm_file` or pointers to it (through const/volatile), followed id by id in
    /// the dump (a callback that takes the struct, like nlm_traverse_files's, is not a match).
    func testModuleTypeMatchesPrototypeText() throws {
        let (a, _) = try analyzer()
        let hits = try a.whereType("lockd:struct nlm_file")
        let found = Set(hits.filter { $0.kind == .parameter || $0.kind == .return }.map { "\($0.object):\($0.place)" })
        let dir = try DebianCapture.directory()
        var expected = Set<String>()
        for module in try FileManager.default.contentsOfDirectory(atPath: dir + "/btf") where module != "vmlinux" {
            let dump = try BpftoolRawDump(file: dir + "/btf/" + module, base: dir + "/btf/vmlinux")
            for f in dump.functions(using: "nlm_file") { expected.insert("\(module):\(f.function)") }
        }
        XCTAssertFalse(expected.isEmpty)
        XCTAssertEqual(found, expected)
        let lookup = try XCTUnwrap(hits.first { $0.place == "nlm_lookup_file" })
        XCTAssertEqual(lookup.detail, "arg1 result: struct nlm_file **")
        XCTAssertEqual(lookup.depth, 2)
        XCTAssertEqual(lookup.verdict, .traceable)
        XCTAssertEqual(lookup.suggestion, "kreach capture nlm_lookup_file --arg 1")
        // Most direct first: single pointers before double.
        let depths = hits.filter { $0.kind == .parameter }.map(\.depth)
        XCTAssertEqual(depths, depths.sorted())
    }

    func testVmlinuxTypeFunctionsReturnsAndRawTracepoints() throws {
        let (a, _) = try analyzer()
        let hits = try a.whereType("struct sk_buff")
        XCTAssertTrue(hits.contains { $0.kind == .parameter && $0.place == "kfree_skb_reason" && $0.detail.hasPrefix("arg0 skb: struct sk_buff *") })
        XCTAssertTrue(hits.contains { $0.kind == .return && $0.place == "__alloc_skb" && $0.detail == "returns struct sk_buff *" })
        XCTAssertTrue(hits.contains { $0.kind == .rawTracepoint && $0.place == "kfree_skb" && $0.suggestion == "rawtracepoint:kfree_skb" })
        XCTAssertTrue(hits.contains { $0.kind == .parameter && $0.object == "dummy" && $0.place == "dummy_xmit" }, "module functions too")
        // Functions that take a struct containing an sk_buff by pointer are not matches.
        XCTAssertFalse(hits.contains { $0.detail.contains("sk_buff_head") })
        XCTAssertThrowsError(try a.whereType("int")) { XCTAssertTrue("\($0)".contains("where takes a named struct"), "\($0)") }
    }

    func testTracepointFieldsAreFound() throws {
        let (a, _) = try analyzer()
        // sched_switch's format has `char prev_comm[16]`...; a struct-typed field from the data itself:
        let dir = try DebianCapture.directory()
        let out = try Run.command(["sh", "-c", "grep -l 'field:struct [a-z_]* \\*' \(dir)/events/*/*/format | head -1"])
        let file = out.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(file.isEmpty, "the capture (a frozen fixture) has struct-typed tracepoint fields")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.contains("field:struct ") && $0.contains("*") })
        let structName = String(line.split(separator: " ").drop { $0 != "field:struct" && !$0.hasSuffix("field:struct") }.dropFirst().first ?? "")
        let hits = try a.whereType("struct " + structName)
        let parts = file.split(separator: "/")
        let event = "\(parts[parts.count - 3]):\(parts[parts.count - 2])"
        XCTAssertTrue(hits.contains { $0.kind == .tracepoint && $0.place == event }, "\(event) for struct \(structName)")
    }

    func testGlobalsNeedTheModuleObject() throws {
        let (a, _) = try analyzer()
        XCTAssertThrowsError(try a.whereGlobal("brd:rd_size")) { XCTAssertTrue("\($0)".contains("brd's .ko (with the loaded module's build-id) is needed"), "\($0)") }
        XCTAssertThrowsError(try a.whereGlobal("pid_max")) { XCTAssertTrue("\($0)".contains("scan of kernel text"), "\($0)") }
    }
}

/// The text scanner on the live kernel: calls are RIP-relative rel32s, so scanning for references to a
/// function's entry finds its callers. ksys_read calls vfs_read (fs/read_write.c).
final class TextScanTests: XCTestCase {
    func testCallersOfVfsReadIncludeKsysRead() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF")) }
        let kernel = try Kernel(source: .live)
        let table = try kernel.symbols()
        let vfsRead = try table.resolve("vmlinux:vfs_read")
        guard let s = table.kallsyms.indexes(named: "_stext", module: "vmlinux").first,
              let e = table.kallsyms.indexes(named: "_etext", module: "vmlinux").first else { return XCTFail("no _stext/_etext") }
        let memory = try BPFMemory()
        let hits = try TextScanner(memory: memory, arch: try Arch.running()).references(to: vfsRead.address..<(vfsRead.address + 1),
                                                               text: table.kallsyms.address(s)..<table.kallsyms.address(e))
        let callers = Set(hits.compactMap { h in table.kallsyms.nearest(to: h.address, moduleRanges: [:]).map { table.kallsyms.name($0.index) } })
        XCTAssertTrue(callers.contains("ksys_read"), "\(callers.sorted().prefix(20))")
        XCTAssertTrue(hits.contains { $0.kind == .pcRelative })
        XCTAssertLessThan(callers.count, 100, "a handful of callers, not noise")
    }
}
