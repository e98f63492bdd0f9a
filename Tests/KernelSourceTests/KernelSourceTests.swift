import Foundation
import XCTest
import BTF
@testable import KernelSource
import KreachSupport
import KreachTestSupport

/// The kernel abstraction over the Debian capture and the live kernel; snapshot round trips.
final class KernelSourceTests: XCTestCase {
    func debian() throws -> Kernel { try Kernel(source: .snapshot(try DebianCapture.directory())) }

    func testCaptureLayoutIsReadAsAKernel() throws {
        let kernel = try debian()
        XCTAssertEqual(try kernel.release(), DebianCapture.release)
        XCTAssertEqual(try kernel.modules().count, 20)
        XCTAssertEqual(try kernel.symbols().kallsyms.count, 104_676)
        let sections = Dictionary(uniqueKeysWithValues: try kernel.moduleSections("brd"))
        XCTAssertEqual(sections[".text"], 0xffff_ffff_c057_1000)
        let db = try kernel.types()
        XCTAssertEqual(db.moduleNames.count, 20)
        XCTAssertTrue(db.moduleNames.contains("lockd"))
    }

    func testTypeQueriesAcrossVmlinuxAndModules() throws {
        let db = try debian().types()
        let nlm = try db.resolve("lockd:struct nlm_file")
        XCTAssertEqual(nlm.object, "lockd")
        XCTAssertEqual(nlm.id, 100_800)
        // Unpinned: found by searching every module.
        XCTAssertEqual(try db.resolve("struct nlm_file").object, "lockd")
        XCTAssertEqual(try db.resolve("struct task_struct").object, "vmlinux")
        // Pinned to a module, a base type comes from vmlinux, lockd's base.
        XCTAssertEqual(try db.resolve("lockd:struct list_head").object, "vmlinux")
        XCTAssertEqual(try db.resolve("vmlinux:#95").object, "vmlinux")
        XCTAssertThrowsError(try db.resolve("vmlinux:#\(nlm.id)"), "a module id is not a vmlinux id")
        XCTAssertEqual(try db.resolve("lockd:#\(nlm.id)").id, nlm.id)
        XCTAssertEqual(try db.resolve("long unsigned int").object, "vmlinux")
        XCTAssertEqual(try XCTUnwrap(try db.resolve("func vfs_read").btf.type(try db.resolve("func vfs_read").id)).kind, .function)
        XCTAssertEqual(try db.resolve("enum pid_type").btf.describe(try db.resolve("enum pid_type").id), "enum pid_type")
        XCTAssertThrowsError(try db.resolve("struct no_such_struct")) {
            XCTAssertTrue("\($0)".contains("no type matches struct no_such_struct: searched vmlinux and 20 module BTF files"), "\($0)")
        }
        XCTAssertThrowsError(try db.resolve("union task_struct")) { XCTAssertTrue("\($0)".contains("there is a struct task_struct in vmlinux"), "\($0)") }
        XCTAssertThrowsError(try db.resolve("zfs:struct arc_stats")) { XCTAssertTrue("\($0)".contains("no BTF for module zfs"), "\($0)") }
        XCTAssertThrowsError(try db.resolve("lockd:")) { XCTAssertTrue("\($0)".contains("bad type query"), "\($0)") }
        XCTAssertThrowsError(try db.resolve("#x")) { XCTAssertTrue("\($0)".contains("#ID needs a number"), "\($0)") }
    }

    /// A module unloaded after its BTF directory was listed (/sys/kernel/btf/M gone) is left out of a search
    /// across modules, not an error for a type found elsewhere (as for the exporter's walk of `struct module` while
    /// rmmod ran); asking for that module's types by name still says it has none. Any other unreadable module
    /// BTF is still an error.
    func testAModuleWhoseBTFFileWentAwayIsLeftOutOfSearches() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-btf-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.copyItem(atPath: try DebianCapture.directory() + "/btf", toPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try TypeDatabase(directory: dir)
        XCTAssertTrue(db.moduleNames.contains("loop"))
        try FileManager.default.removeItem(atPath: dir + "/loop")
        XCTAssertEqual(try db.resolve("struct task_struct").object, "vmlinux")
        XCTAssertEqual(try db.allObjects().count, db.moduleNames.count, "vmlinux and every module but loop")
        XCTAssertThrowsError(try db.resolve("loop:struct loop_device")) { XCTAssertTrue("\($0)".contains("loop"), "\($0)") }
        // A module BTF file that is there but unreadable as BTF is an error, not left out.
        try Data("not BTF".utf8).write(to: URL(fileURLWithPath: dir + "/brd"))
        XCTAssertThrowsError(try TypeDatabase(directory: dir).resolve("struct task_struct")) { XCTAssertTrue("\($0)".contains("brd"), "\($0)") }
    }

    /// A name defined in more than one object is an error listing each, never a silent pick.
    func testTypeAmbiguityAcrossModulesListsCandidates() throws {
        let db = try debian().types()
        // Find, from the data, a struct name that two module BTFs define on their own.
        var owners: [String: [String]] = [:]
        for btf in try db.allObjects() where btf.objectName != "vmlinux" {
            for id in btf.localIDs where try btf.kind(of: id) == .structure {
                let name = try btf.name(of: id)
                if !name.isEmpty { owners[name, default: []].append(btf.objectName) }
            }
        }
        let (name, objects) = try XCTUnwrap(owners.filter { Set($0.value).count > 1 }.min { $0.key < $1.key })
        XCTAssertThrowsError(try db.resolve("struct \(name)")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("is ambiguous"), text)
            for o in Set(objects) { XCTAssertTrue(text.contains("\(o):#"), "\(text) lacks \(o)") }
        }
        XCTAssertEqual(try db.resolve("\(objects[0]):struct \(name)").object, objects[0])
    }

    func testFunctionGlobAcrossModules() throws {
        let db = try debian().types()
        let lookups = try db.functions(matching: Glob("nlm_lookup*"))
        XCTAssertTrue(lookups.contains { $0.object == "lockd" })
        XCTAssertTrue(try lookups.allSatisfy { try $0.btf.name(of: $0.id).hasPrefix("nlm_lookup") })
        XCTAssertEqual(try db.functions(matching: Glob("brd_*"), module: "brd").map(\.object).first, "brd")
    }

    func testNotASnapshotIsAClearError() throws {
        XCTAssertThrowsError(try Kernel(source: .snapshot("/nonexistent/kreach"))) { XCTAssertTrue("\($0)".contains("not a directory"), "\($0)") }
        XCTAssertThrowsError(try Kernel(source: .snapshot("/proc/self"))) { XCTAssertTrue("\($0)".contains("not a kernel snapshot"), "\($0)") }
    }

    /// `kreach snapshot` of the live kernel, read back: the same symbols and types as the live kernel.
    func testLiveSnapshotRoundTrip() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms addresses and tracefs need root")) }
        let dir = NSTemporaryDirectory() + "kreach-snapshot-test-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try SnapshotCapture(directory: dir).capture()
        XCTAssertGreaterThan(report.files, 10)
        // As root these are always readable: a failure here is a capture bug, not a kernel limitation.
        for path in ["/proc/kallsyms", "/proc/sys/kernel/osrelease", "/proc/sys/kernel/pid_max", "/proc/sys/kernel/kptr_restrict", "/sys/kernel/btf"] {
            XCTAssertFalse(report.failures.contains { $0.0.hasPrefix(path) }, "\(report.failures)")
        }
        XCTAssertEqual(try String(contentsOfFile: dir + "/pid_max", encoding: .utf8),
                       try String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8))
        let live = try Kernel(source: .live)
        let snap = try Kernel(source: .snapshot(dir))
        XCTAssertEqual(try snap.release(), try live.release())
        // vmlinux's own lines: [bpf]/[ftrace] pseudo-module lines come and go as BPF programs load meanwhile.
        func vmlinuxCount(_ k: Kernel) throws -> Int {
            let table = try k.symbols().kallsyms
            return (0..<table.count).reduce(0) { $0 + (table.module($1) == nil ? 1 : 0) }
        }
        XCTAssertEqual(try vmlinuxCount(snap), try vmlinuxCount(live))
        XCTAssertEqual(try FileBytes.read(dir + "/btf/vmlinux"), try FileBytes.read("/sys/kernel/btf/vmlinux"))
        XCTAssertEqual(try snap.types().resolve("struct task_struct").id, try live.types().resolve("struct task_struct").id)
        // Tracepoint formats were captured (tracefs is mounted by the capture when absent).
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/events/sched/sched_switch/format"))
        // Whatever could not be read is listed with its reason, one line each.
        let errors = try String(contentsOfFile: dir + "/capture-errors", encoding: .utf8)
        XCTAssertEqual(errors.split(separator: "\n").count, report.failures.count)
        for (path, reason) in report.failures { XCTAssertTrue(errors.contains("\(path): \(reason)")) }
        XCTAssertEqual(try String(contentsOfFile: dir + "/kreach-snapshot", encoding: .utf8), "kreach-snapshot 1\n")
    }
}
