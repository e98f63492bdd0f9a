import Foundation
import XCTest
import KernelObject
import KernelSource
import Memory
import KreachTestSupport
@testable import ScriptGen

/// The C definition kreach writes for bpftrace of a module struct with bitfields (lockd's struct nlm_host:
/// h_reclaiming, h_server, h_noresvport, h_inuse are 1-bit fields of a short) against bpftool's C dump of the
/// same BTF: both compiled by the C compiler, which reports every member's byte offset, every bitfield's bits
/// and the size. kreach's definition is compiled over bpftool's vmlinux.h (bpftrace brings vmlinux types itself).
final class CDefinitionBitfieldTests: XCTestCase {
    func testModuleStructWithBitfieldsHasBpftoolsLayout() throws {
        guard Run.available("cc") else { throw XCTSkip(Host.skipReason("no C compiler (cc) to compile the layouts")) }
        let dir = try DebianCapture.directory()
        let kernel = try Kernel(source: .snapshot(dir))
        let g = try ScriptGenerator(kernel: kernel)
        let out = try g.expand("kprobe:nlm_release_host { printf(\"%d\\n\", ((struct nlm_host *)arg0)->h_inuse); }\n", file: "b.bt")
        let definition = try XCTUnwrap(out.components(separatedBy: "}; kprobe:").first) + "};"
        XCTAssertTrue(definition.hasPrefix("struct nlm_host { "), definition)
        XCTAssertTrue(definition.contains(" h_reclaiming:1; "), definition)

        let raw = try BpftoolRawDump(file: dir + "/btf/lockd", base: dir + "/btf/vmlinux")
        let host = try XCTUnwrap(raw.named("nlm_host").flatMap { raw.entries[$0] })
        XCTAssertEqual(host.members.filter { $0.bitfieldSize > 0 }.count, 4)
        // A layout report: size, byte offset of each member, first and last bit of each bitfield.
        var main = "int printf(const char *, ...);\nint main(void) {\n\tstruct nlm_host s;\n\tprintf(\"size %zu\\n\", sizeof s);\n"
        for m in host.members where !m.name.isEmpty {
            if m.bitfieldSize > 0 {
                main += """
                    \t__builtin_memset(&s, 0, sizeof s); s.\(m.name) = -1;
                    \tfor (unsigned i = 0; i < sizeof s * 8; i++) if (((unsigned char *)&s)[i / 8] >> (i % 8) & 1) printf("\(m.name) bit %u\\n", i);

                    """
            } else {
                main += "\tprintf(\"\(m.name) at %zu\\n\", __builtin_offsetof(struct nlm_host, \(m.name)));\n"
            }
        }
        main += "\treturn 0;\n}\n"
        let work = NSTemporaryDirectory() + "kreach-cdef-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        func header(_ argv: [String]) throws -> String {
            let r = try Run.command(["bpftool"] + argv)
            XCTAssertEqual(r.status, 0, r.stderr)
            return r.stdout
        }
        let bpftoolC = try header(["btf", "dump", "file", dir + "/btf/lockd", "-B", dir + "/btf/vmlinux", "format", "c"])
        let vmlinuxC = try header(["btf", "dump", "file", dir + "/btf/vmlinux", "format", "c"])
        func layout(_ name: String, _ source: String) throws -> String {
            try source.write(toFile: "\(work)/\(name).c", atomically: true, encoding: .utf8)
            let cc = try Run.command(["cc", "-w", "-o", "\(work)/\(name)", "\(work)/\(name).c"])
            XCTAssertEqual(cc.status, 0, "\(name): \(cc.stderr.prefix(2000))")
            return try Run.command(["\(work)/\(name)"]).stdout
        }
        let expected = try layout("bpftool", bpftoolC + "\n" + main)
        let actual = try layout("kreach", vmlinuxC + "\n" + definition + "\n" + main)
        XCTAssertTrue(expected.contains("h_reclaiming bit "), expected)
        XCTAssertEqual(actual, expected)
    }
}
