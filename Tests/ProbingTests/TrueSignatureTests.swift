import Foundation
import XCTest
import BTF
import KernelSource
import KreachSupport
import KreachTestSupport
@testable import Probing

/// pahole's true_signature gives a compiler clone (lru_gen_add_folio.constprop.0) a BTF FUNC of its own, with
/// its real prototype. No kernel here has one, so the capture's vmlinux BTF gets one: a FUNC record named after
/// the clone, appended with the source function's prototype (a FUNC is a name and a FUNC_PROTO id), the rest
/// of the file unchanged. `where` then lists the clone once, matched by its own prototype, and not again as a
/// clone listed under its source's.
final class TrueSignatureTests: XCTestCase {
    static let clone = "lru_gen_add_folio.constprop.0"
    /// A vmlinux FUNC with a name as long, unrelated to struct lruvec (its FUNC record is reused).
    static let victim = "compat_arch_setup_additional_pages"

    func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
    func put(_ b: inout [UInt8], _ at: Int, _ v: UInt32) { for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }

    /// A copy of the capture whose vmlinux BTF has a FUNC `clone` with `function`'s prototype. Type ids and the
    /// string section's size must not move (every module's split BTF numbers its types and strings after
    /// vmlinux's), so an unrelated FUNC (`victim`, whose name is at least as long) becomes the clone's: its
    /// name's bytes are overwritten in place (NUL-padded) and its type set to the prototype.
    func captureWithCloneFUNC(of function: String, clone: String, victim: String) throws -> String {
        let dir = try DebianCapture.copy(withoutBTFOf: [])
        let path = dir + "/btf/vmlinux"
        let original = try BTF(path: path, name: "vmlinux")
        let id = try XCTUnwrap(try original.lookup(function).first { try original.kind(of: $0) == .function })
        let proto = try original.rawTarget(id)
        XCTAssertEqual(original.lookup(victim).count, 1, "\(victim) names one type")
        XCTAssertTrue(original.lookup(clone).isEmpty)
        var b = try FileBytes.read(path)
        // struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
        let hdr = Int(u32(b, 4)), typeStart = hdr + Int(u32(b, 8)), typeEnd = typeStart + Int(u32(b, 12)), strStart = hdr + Int(u32(b, 16))
        let needle = [0] + Array(victim.utf8) + [0]
        let at = try XCTUnwrap((strStart..<(b.count - needle.count)).first { b[$0] == 0 && b[$0..<($0 + needle.count)].elementsEqual(needle) })
        let nameOff = UInt32(at + 1 - strStart)
        // struct btf_type of the victim: name_off, info (kind BTF_KIND_FUNC = 12 in bits 24-28), type.
        let records = stride(from: typeStart, to: typeEnd - 12, by: 4).filter { u32(b, $0) == nameOff && (u32(b, $0 + 4) >> 24) & 0x1f == 12 }
        XCTAssertEqual(records.count, 1, "one FUNC record named \(victim)")
        let record = try XCTUnwrap(records.first)
        put(&b, record + 8, proto)
        let name = Array(clone.utf8)
        XCTAssertLessThanOrEqual(name.count, victim.utf8.count)
        for i in 0..<victim.utf8.count { b[at + 1 + i] = i < name.count ? name[i] : 0 }
        try FileManager.default.removeItem(atPath: path)
        try FileBytes.write(b, to: path)
        return dir
    }

    func testACloneWithItsOwnFUNCIsListedOnceByItsPrototype() throws {
        let dir = try captureWithCloneFUNC(of: "lru_gen_add_folio", clone: TrueSignatureTests.clone, victim: TrueSignatureTests.victim)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let kernel = try Kernel(source: .snapshot(dir))
        let vmlinux = try kernel.types().vmlinux
        let funcs = try vmlinux.lookup(TrueSignatureTests.clone).filter { try vmlinux.kind(of: $0) == .function }
        XCTAssertEqual(funcs.count, 1, "the patched BTF reads back with the clone's FUNC")
        let why = WhyAnalyzer(kernel: kernel)
        let a = WhereAnalyzer(kernel: kernel, why: why)
        let hits = try a.whereType("struct lruvec")
        let cloneHits = hits.filter { $0.place == TrueSignatureTests.clone }
        XCTAssertEqual(cloneHits.map(\.kind), [.parameter], "\(cloneHits)")
        let hit = try XCTUnwrap(cloneHits.first)
        XCTAssertTrue(hit.detail.hasSuffix(": struct lruvec *"), hit.detail)
        XCTAssertEqual(hit.verdict, why.verdictForBTFFunction(TrueSignatureTests.clone))
        // The source function is still listed by its own FUNC.
        XCTAssertTrue(hits.contains { $0.place == "lru_gen_add_folio" && $0.kind == .parameter })
        // Without the patch the clone is listed as a clone, under its source's prototype.
        let plain = try WhereAnalyzer(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())), why: why).whereType("struct lruvec")
        XCTAssertEqual(plain.filter { $0.place == TrueSignatureTests.clone }.map(\.kind), [.clone])
    }
}
