import BTF
import Foundation
import KernelSymbols
import KernelSource
import KreachSupport
import KreachTestSupport
@testable import TypeInference
import XCTest

/// Module globals typed from the Debian 6.1 capture's loop.ko (Tests/Fixtures/loop-6.1.0-56-amd64.ko.xz,
/// the module the capture had loaded: its .BTF section is the capture's btf/loop), checked against the
/// DWARF of the same build (linux-image-6.1.0-56-amd64-dbg's loop.ko, read with readelf when vendoring).
final class ModuleInferenceTests: XCTestCase {
    static let ko = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/loop-6.1.0-56-amd64.ko.xz").path

    func inferrer() throws -> ModuleTypeInferrer { try ModuleInferenceTests.make() }
    static func make() throws -> ModuleTypeInferrer {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let types = try kernel.types()
        let bytes = try ByteBuffer.readDecompressing(ModuleInferenceTests.ko, limit: FileLimit(".ko", bytes: 16 << 20)).toArray()
        let elf = try ELFFile(bytes: bytes, source: ModuleInferenceTests.ko)
        let own = try XCTUnwrap(try ModuleTypeInferrer.ownBTF(of: elf, module: "loop", base: types.vmlinux))
        XCTAssertEqual(own.describe(own.lookup("loop_device").first ?? 0), try types.module("loop").describe(try types.module("loop").lookup("loop_device").first ?? 0))
        return try ModuleTypeInferrer(module: "loop", elf: elf, btf: own)
    }

    /// What DWARF says loop's globals are, by the name of the type (typedefs and const skipped).
    static let dwarf = ["loop_misc": "struct miscdevice", "loop_ctl_mutex": "struct mutex", "loop_index_idr": "struct idr",
                        "lo_fops": "struct block_device_operations", "loop_mq_ops": "struct blk_mq_ops"]

    /// loop_misc is passed to misc_register(): struct miscdevice, its size the .ko's st_size, the note
    /// naming the call.
    func testLoopMiscIsTheMiscdeviceMiscRegisterTakes() throws {
        let i = try inferrer()
        let t = try i.infer(named: "loop_misc")
        let type = try XCTUnwrap(t.type, t.note)
        XCTAssertEqual(i.btf.describe(type), "struct miscdevice")
        XCTAssertEqual(t.extent, 80)
        XCTAssert(t.candidates.first?.sources.contains("address passed to misc_register() as parameter 1") == true, "\(t.candidates)")
        XCTAssert(t.note.hasPrefix("type inferred from"), t.note)
        XCTAssert(t.note.contains("size 80 from the .ko's symbol table"), t.note)
    }

    /// Every global typed (from code or from its function pointers) is what DWARF says; those listed all are.
    func testTypedLoopGlobalsAreWhatDWARFSays() throws {
        let i = try inferrer()
        let all = i.inferAll()
        for (name, want) in ModuleInferenceTests.dwarf {
            let t = try XCTUnwrap(all[name], name)
            let type = try XCTUnwrap(t.type, "\(name): \(t.note)")
            let resolved = try i.btf.resolve(i.btf.skipModifiers(type))
            XCTAssertEqual(i.btf.describe(resolved), want, "\(name): \(t.note)")
        }
        XCTAssert(all["lo_fops"]?.note.contains("function pointers in its initial data") == true, all["lo_fops"]?.note ?? "")
    }

    /// A .ko whose code is all NOPs yields no evidence, not a wrong type; its function-pointer tables are
    /// still typed by their initial data.
    func testCodeOfNOPsGivesNoCallEvidence() throws {
        var bytes = try ByteBuffer.readDecompressing(ModuleInferenceTests.ko, limit: FileLimit(".ko", bytes: 16 << 20)).toArray()
        let elf = try ELFFile(bytes: bytes, source: "loop.ko")
        for s in elf.sections where s.name.hasSuffix("text") && s.type == 1 {
            for k in s.offset..<(s.offset + s.size) { bytes[k] = 0x90 }
        }
        let garbled = try ELFFile(bytes: bytes, source: "loop.ko")
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let own = try XCTUnwrap(try ModuleTypeInferrer.ownBTF(of: garbled, module: "loop", base: try kernel.types().vmlinux))
        let i = try ModuleTypeInferrer(module: "loop", elf: garbled, btf: own)
        let t = try i.infer(named: "loop_misc")
        XCTAssertNil(t.type, t.note)
        XCTAssertEqual(try i.infer(named: "lo_fops").type.map { own.describe($0) }, "struct block_device_operations")
    }
}
