import BTF
import Foundation
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
import TypeInference
import XCTest

/// Variables' types read from DWARF with libdw and mapped to BTF by name and size.
final class DWARFTypesTests: XCTestCase {
    /// linux-image-6.1.0-56-amd64-dbg, extracted by the VM suite's cache (not on CI: skipped there).
    static let root = "/var/cache/kreach-vm/dbg/root/usr/lib/debug"
    static let dbg = root + "/lib/modules/6.1.0-56-amd64"

    /// A C file compiled with -g here: the compiler's own DWARF, mapped to the capture's vmlinux BTF.
    func testCompiledDWARFMapsToBTFByNameAndSize() throws {
        let dir = NSTemporaryDirectory() + "kreach-dwarf-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = """
            struct list_head { struct list_head *next, *prev; };
            typedef struct { int counter; } atomic_t;
            struct list_head head_of_things;
            const volatile atomic_t counted;
            unsigned int plain;
            struct { int a; } anonymous;
            struct list_head *pointer;
            struct idr { char c; } idr_of_another_size;
            """
        try source.write(toFile: dir + "/t.c", atomically: true, encoding: .utf8)
        let compiled = try Run.command(["clang", "-g", "-O0", "-c", dir + "/t.c", "-o", dir + "/t.o"], timeout: 60)
        XCTAssertEqual(compiled.status, 0, compiled.stderr)
        let btf = try Kernel(source: .snapshot(try DebianCapture.directory())).types().vmlinux
        func mapped(_ name: String) throws -> String? {
            let t = try XCTUnwrap(try DWARFTypes.variable(name, in: dir + "/t.o").type, name)
            return t.btfType(in: btf).map { btf.describe($0) }
        }
        XCTAssertEqual(try mapped("head_of_things"), "struct list_head")
        XCTAssertEqual(try mapped("counted"), "atomic_t")
        XCTAssertEqual(try mapped("plain"), "unsigned int")
        XCTAssertNil(try mapped("anonymous"))
        XCTAssertNil(try mapped("pointer"))
        // The name is not enough: a 1-byte struct idr is not vmlinux's.
        XCTAssertEqual(try DWARFTypes.variable("idr_of_another_size", in: dir + "/t.o").type?.spelling, "struct idr")
        XCTAssertNil(try mapped("idr_of_another_size"))
        XCTAssertNil(try DWARFTypes.variable("no_such_variable", in: dir + "/t.o").type)
        // A linked file has a build-id: DebugInfoFiles takes its DWARF only for that build.
        let linked = try Run.command(["clang", "-g", "-shared", "-nostdlib", "-fPIC", "-Wl,--build-id", dir + "/t.c", "-o", dir + "/t.so"], timeout: 60)
        XCTAssertEqual(linked.status, 0, linked.stderr)
        let id = try DWARFTypes.variable("plain", in: dir + "/t.so").buildID
        XCTAssertEqual(id.count, 20)
        XCTAssertEqual(DebugInfoFiles.type(of: "head_of_things", files: [dir + "/absent", dir + "/t.so"], buildID: id, btf: btf).map { btf.describe($0.0) },
                       "struct list_head")
        XCTAssertNil(DebugInfoFiles.type(of: "head_of_things", files: [dir + "/t.so"], buildID: id.map { $0 ^ 1 }, btf: btf))
        XCTAssertEqual(DebugInfoFiles.module(koPath: "/lib/modules/R/kernel/m.ko.xz"), ["/usr/lib/debug/lib/modules/R/kernel/m.ko"])
        XCTAssertEqual(DebugInfoFiles.module(koPath: "/lib/modules/R/updates/dkms/m.ko"), ["/usr/lib/debug/lib/modules/R/updates/dkms/m.ko", "/lib/modules/R/updates/dkms/m.ko"])
        XCTAssertThrowsError(try DWARFTypes.variable("plain", in: dir + "/t.c"))
        XCTAssertThrowsError(try DWARFTypes.variable("plain", in: dir))
    }

    /// The -dbg package's vmlinux and loop.ko: types as the DWARF of the build says (checked with readelf
    /// --debug-dump=info), build-ids the capture's and the loop.ko fixture's.
    func testDebianDbgPackage() throws {
        let vmlinux = DWARFTypesTests.root + "/boot/vmlinux-6.1.0-56-amd64", loop = DWARFTypesTests.dbg + "/kernel/drivers/block/loop.ko"
        guard FileManager.default.fileExists(atPath: vmlinux), FileManager.default.fileExists(atPath: loop) else {
            throw XCTSkip(Host.skipReason("no linux-image-6.1.0-56-amd64-dbg extracted at \(DWARFTypesTests.dbg)"))
        }
        let btf = try Kernel(source: .snapshot(try DebianCapture.directory())).types().vmlinux
        // readelf's build-id of the file: the oracle of what DWARFTypes reads.
        func readelfBuildID(_ path: String) throws -> String? {
            let r = try Run.command(["readelf", "-n", path], timeout: 60)
            return r.stdout.split(separator: "\n").first { $0.contains("Build ID:") }.map { String($0.split(separator: " ").last ?? "") }
        }
        let vmlinuxID = try XCTUnwrap(try readelfBuildID(vmlinux))
        let start = Date()
        for (name, want) in [("init_task", "struct task_struct"), ("init_uts_ns", "struct uts_namespace"), ("pid_max", "int"), ("jiffies_64", "u64")] {
            let (type, id) = try DWARFTypes.variable(name, in: vmlinux)
            let t = try XCTUnwrap(type, name)
            XCTAssertEqual(t.btfType(in: btf).map { btf.describe($0) }, want, name)
            XCTAssertEqual(Hex.string(id), vmlinuxID)
        }
        print("4 vmlinux lookups: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        let (misc, id) = try DWARFTypes.variable("loop_misc", in: loop)
        XCTAssertEqual(misc?.spelling, "struct miscdevice")
        XCTAssertEqual(misc?.size, 80)
        let ko = try ByteBuffer.readDecompressing(ModuleInferenceTests.ko, limit: FileLimit(".ko", bytes: 16 << 20)).toArray()
        XCTAssertEqual(id, try ELFFile(bytes: ko, source: "loop.ko").buildID)
        XCTAssertEqual(Hex.string(id), try readelfBuildID(loop))
        // Through DebugInfoFiles, as the resolver asks for loop.ko.xz.
        let elf = try ELFFile(bytes: ko, source: "loop.ko")
        let own = try XCTUnwrap(try ModuleTypeInferrer.ownBTF(of: elf, module: "loop", base: btf))
        let files = DebugInfoFiles.module(koPath: "/lib/modules/6.1.0-56-amd64/kernel/drivers/block/loop.ko.xz", root: DWARFTypesTests.root)
        XCTAssertEqual(DebugInfoFiles.type(of: "loop_misc", files: files, buildID: id, btf: own).map { own.describe($0.0) }, "struct miscdevice")
    }
}
