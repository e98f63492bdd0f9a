import Foundation
import XCTest
import BTF
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
@testable import Probing

/// `where` on the Debian capture as distributions build modules: module BTF absent (a DKMS module), a
/// typedef defined in several modules, compiler clones without a BTF FUNC of their own.
final class NoBTFTests: XCTestCase {
    func analyzer(_ dir: String) throws -> (WhereAnalyzer, Kernel) {
        let kernel = try Kernel(source: .snapshot(dir))
        return (WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel)), kernel)
    }

    /// Getter and seq_file marks consult the module's BTF when it has one and vmlinux's otherwise; a
    /// module without BTF is never an error. Oracle: the BTF files themselves (bpftool-free: the kind of
    /// the FUNC named in the module's BTF file, which the copy no longer has).
    func testMarksWithoutModuleBTFFallBackToVmlinux() throws {
        let (full, _) = try analyzer(try DebianCapture.directory())
        // lockd's nlm_lookup_file has a BTF FUNC in lockd's BTF only: a prototype with module BTF, none without.
        XCTAssertNotNil(full.prototype("nlm_lookup_file", module: "lockd"))
        let dir = try DebianCapture.copy(withoutBTFOf: ["lockd"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (bare, kernel) = try analyzer(dir)
        XCTAssertFalse(try kernel.types().moduleNames.contains("lockd"))
        XCTAssertNil(bare.prototype("nlm_lookup_file", module: "lockd"))
        XCTAssertFalse(bare.isGetter("nlm_lookup_file", module: "lockd"))
        XCTAssertFalse(bare.isSeqShow("nlm_lookup_file", module: "lockd"))
        // A function vmlinux declares is still found for the module (vmlinux BTF is the fallback).
        let proto = try XCTUnwrap(bare.prototype("seq_puts", module: "lockd"))
        XCTAssertTrue(proto.0 === (try kernel.types().vmlinux))
        // The vmlinux scan's marks: a seq_file show function of vmlinux.
        XCTAssertTrue(bare.isSeqShow("loadavg_proc_show", module: "vmlinux"))
        // Types still resolve in the modules that have BTF, and lockd's types are gone, not an abort.
        let hits = try bare.whereType("struct file_lock")
        XCTAssertFalse(hits.isEmpty)
        XCTAssertFalse(hits.contains { $0.object == "lockd" })
        XCTAssertTrue(try full.whereType("struct file_lock").contains { $0.object == "lockd" })
    }

    /// A global filled through a pointer isn't referenced by the filling code: the note says what to try.
    /// lockd has BTF but (6.1) no VAR for its statics, brd has none at all: both get the generic hint.
    func testPointerHintWithoutAVariableType() throws {
        let dir = try DebianCapture.copy(withoutBTFOf: ["brd"])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, _) = try analyzer(dir)
        for (module, global) in [("brd", "rd_size"), ("lockd", "nlm_blocked")] {
            let hint = a.pointerHint(module: module, global: global)
            XCTAssertEqual(hint.count, 1)
            XCTAssertTrue(hint[0].contains("code that fills \(global) through a pointer"), hint[0])
        }
    }

    /// A typedef defined in several modules (rpc_action: auth_rpcgss, nfsd, sunrpc, each its own copy) is
    /// one target, every definition named in a note; before, it was "ambiguous". Oracle: the module BTF
    /// files that define a TYPEDEF rpc_action, found by a byte search of each file's string section.
    func testTypedefDefinedInSeveralModulesIsOneTarget() throws {
        let dir = try DebianCapture.directory()
        let (a, kernel) = try analyzer(dir)
        var defining: [String] = []
        for btf in try kernel.types().allObjects() {
            if try btf.lookup("rpc_action").contains(where: { try btf.kind(of: $0) == .typedef && btf.owner(of: $0) === btf }) {
                defining.append(btf.objectName)
            }
        }
        XCTAssertGreaterThan(defining.count, 1, "the capture defines rpc_action in several modules")
        let hits = try a.whereType("rpc_action")
        XCTAssertTrue(hits.contains { $0.kind == .parameter && $0.object == "sunrpc" && $0.place == "rpc_sleep_on" && $0.detail.hasPrefix("arg2 action: rpc_action") })
        let note = try XCTUnwrap(a.notes.first { $0.contains("rpc_action is defined in \(defining.count) objects") }, "\(a.notes)")
        for m in defining { XCTAssertTrue(note.contains("\(m): rpc_action = void (*)(struct rpc_task *)"), note) }
        // Different kinds under one name stay an error listing each.
        XCTAssertThrowsError(try a.whereType("no_such_type_kreach")) { XCTAssertTrue("\($0)".contains("no type matches"), "\($0)") }
    }

    /// Compiler clones (lru_gen_add_folio.constprop.0) have no BTF FUNC: they are listed under their source
    /// function's prototype, with a note. Oracle: kallsyms text symbols whose base name is a BTF FUNC taking
    /// a struct lruvec * (from the rendered prototype text) and that have no FUNC of their own.
    func testClonesOfMatchingFunctionsAreListed() throws {
        let dir = try DebianCapture.directory()
        let (a, kernel) = try analyzer(dir)
        let vmlinux = try kernel.types().vmlinux
        let k = try kernel.symbols().kallsyms
        var expected = Set<String>()
        for id in vmlinux.localIDs where try vmlinux.kind(of: id) == .function {
            let proto = try vmlinux.type(try vmlinux.type(id).target)
            let rendered = [vmlinux.describe(proto.target)] + proto.params.map { vmlinux.describe($0.type) }
            guard rendered.contains(where: { $0.hasPrefix("struct lruvec *") }) else { continue }
            let name = try vmlinux.name(of: id)
            for i in k.indexes(baseOf: name) {
                let s = k.symbol(i)
                if s.isText, s.module == nil, s.name != name, !s.name.contains(".cold"), vmlinux.lookup(s.name).isEmpty { expected.insert(s.name) }
            }
        }
        XCTAssertFalse(expected.isEmpty)
        let hits = try a.whereType("struct lruvec")
        XCTAssertEqual(Set(hits.filter { $0.kind == .clone }.map(\.place)), expected)
        let clone = try XCTUnwrap(hits.first { $0.place == "lru_gen_add_folio.constprop.0" })
        XCTAssertTrue(clone.detail.contains("signature may differ"), clone.detail)
        XCTAssertTrue(a.notes.contains { $0.contains("clones") })
    }
}
