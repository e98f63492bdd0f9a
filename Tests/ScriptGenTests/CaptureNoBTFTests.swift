import Foundation
import XCTest
import KernelSource
import KreachTestSupport
@testable import ScriptGen

/// `capture` for a module without BTF (the Debian capture with brd's BTF removed, as DKMS installs modules):
/// the return value as int64 and an argument as the untyped register argN, each with a note that says
/// which feature needs BTF and how to get it.
final class CaptureNoBTFTests: XCTestCase {
    func testUntypedArgumentAndReturnWithoutModuleBTF() throws {
        let dir = try DebianCapture.copy(withoutBTFOf: ["brd"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let builder = CaptureBuilder(kernel: try Kernel(source: .snapshot(dir)), bpftrace: nil)
        let arg = try builder.build(function: "brd_rw_page", name: nil, arg: "1")
        XCTAssertEqual(arg.snippet, "kprobe:brd_rw_page { @brd_rw_page = arg1; }")
        let note = try XCTUnwrap(arg.notes.first { $0.contains("no BTF prototype") }, "\(arg.notes)")
        XCTAssertTrue(note.contains("module brd has no BTF"), note)
        XCTAssertTrue(note.contains("arg1 is stored untyped"), note)
        XCTAssertTrue(note.contains("pahole -J --btf_base VMLINUX_BTF MODULE.ko"), note)
        let ret = try builder.build(function: "brd_rw_page", name: nil, arg: nil)
        XCTAssertEqual(ret.snippet, "kretprobe:brd_rw_page { @brd_rw_page = (int64)retval; }")
        XCTAssertTrue(ret.notes.contains { $0.contains("module brd has no BTF") && $0.contains("read as int64") }, "\(ret.notes)")
        // A parameter name needs BTF; an index past the six register arguments is refused.
        XCTAssertThrowsError(try builder.build(function: "brd_rw_page", name: nil, arg: "sector")) {
            XCTAssertTrue("\($0)".contains("its parameters have no names: give --arg as an index 0-5"), "\($0)")
        }
        XCTAssertThrowsError(try builder.build(function: "brd_rw_page", name: nil, arg: "6"))
        // With brd's BTF (the original capture) the same argument is typed from the prototype (sector_t),
        // and a function BTF leaves out (the clone brd_alloc.isra.0) is said to be left out, not "no BTF".
        let full = CaptureBuilder(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())), bpftrace: nil)
        let typed = try full.build(function: "brd_rw_page", name: nil, arg: "1")
        XCTAssertEqual(typed.snippet, "kprobe:brd_rw_page { @brd_rw_page = (uint64)arg1; }")
        XCTAssertFalse(typed.notes.contains { $0.contains("no BTF prototype") }, "\(typed.notes)")
        let clone = try full.build(function: "brd_alloc", name: nil, arg: "0")
        XCTAssertEqual(clone.snippet, "kprobe:brd_alloc.isra.0 { @brd_alloc = arg0; }")
        XCTAssertTrue(clone.notes.contains { $0.contains("brd's BTF has no FUNC brd_alloc") && !$0.contains("pahole -J") }, "\(clone.notes)")
    }
}
