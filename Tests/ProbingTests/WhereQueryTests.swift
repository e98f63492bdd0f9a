import Foundation
import XCTest
import Memory
import KernelSource
import KreachSupport
import KreachTestSupport
@testable import Probing

/// `where`'s reading of its target (type or global) and its choice of probes for --trigger.
final class WhereQueryTests: XCTestCase {
    /// On the Debian capture, checked against its BTF (bpftool) and kallsyms: a name with a space is a type;
    /// a bare name BTF has as a type and kallsyms lacks is a type; one both have (struct boot_params and the
    /// boot_params symbol) is a global; MODULE:NAME and MODULE`NAME are module globals.
    func testTypeOrGlobal() throws {
        let dir = try DebianCapture.directory()
        let kernel = try Kernel(source: .snapshot(dir))
        let dump = try BpftoolRawDump(file: dir + "/btf/vmlinux")
        let kallsyms = Set(try String(contentsOfFile: dir + "/kallsyms", encoding: .utf8).split(separator: "\n").compactMap { $0.split(separator: " ").dropFirst(2).first })
        XCTAssertNotNil(dump.named("pid_t", kind: "TYPEDEF"))
        XCTAssertFalse(kallsyms.contains("pid_t"))
        XCTAssertNotNil(dump.named("boot_params"))
        XCTAssertTrue(kallsyms.contains("boot_params"))
        XCTAssertTrue(kallsyms.contains("pid_max"))
        XCTAssertEqual(WhereQuery("struct nlm_file", kernel: kernel), .type("struct nlm_file"))
        XCTAssertEqual(WhereQuery("lockd:struct nlm_host", kernel: kernel), .type("lockd:struct nlm_host"))
        XCTAssertEqual(WhereQuery("pid_t", kernel: kernel), .type("pid_t"))
        XCTAssertEqual(WhereQuery("boot_params", kernel: kernel), .vmlinuxGlobal("boot_params"))
        XCTAssertEqual(WhereQuery("pid_max", kernel: kernel), .vmlinuxGlobal("pid_max"))
        XCTAssertEqual(WhereQuery("vmlinux:pid_max", kernel: kernel), .vmlinuxGlobal("pid_max"))
        XCTAssertEqual(WhereQuery("brd:rd_size", kernel: kernel), .moduleGlobal("brd:rd_size"))
        XCTAssertEqual(WhereQuery("brd`rd_size", kernel: kernel), .moduleGlobal("brd:rd_size"))
        // A vmlinux global's references come from kernel text: a snapshot says so, without opening memory.
        let analyzer = WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel))
        var opened = false
        XCTAssertThrowsError(try analyzer.hits(for: .vmlinuxGlobal("pid_max"), memory: { opened = true; return try BPFMemory() })) {
            XCTAssertEqual($0 as? WhereQueryError, .vmlinuxGlobalNeedsLiveKernel)
        }
        XCTAssertFalse(opened)
    }

    /// --trigger probes: traceable functions among parameter/return/reference hits, by exact name (a site
    /// `f+0x1c` probes `f`), each once, in order, at most the limit; other kinds and verdicts are left out.
    func testTriggerProbes() {
        func hit(_ kind: WhereHit.Kind, _ place: String, _ verdict: ProbeVerdict?) -> WhereHit {
            WhereHit(kind: kind, object: "vmlinux", place: place, detail: "", depth: 1, verdict: verdict, suggestion: nil)
        }
        let hits = [hit(.parameter, "a", .traceable), hit(.tracepoint, "sched:x", nil), hit(.return, "b", .inlined),
                    hit(.reference, "c+0x1c", .traceable), hit(.reference, "a+0x8", .traceable), hit(.return, "d", .traceable),
                    hit(.parameter, "e", .traceable)]
        XCTAssertEqual(WhereAnalyzer.triggerProbes(hits, limit: 10), ["kprobe:a", "kprobe:c", "kprobe:d", "kprobe:e"])
        XCTAssertEqual(WhereAnalyzer.triggerProbes(hits, limit: 2), ["kprobe:a", "kprobe:c"])
    }
}
