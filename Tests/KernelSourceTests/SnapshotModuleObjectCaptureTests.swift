import Foundation
import Glibc
@testable import KernelSource
import KreachSupport
import KreachTestSupport
import XCTest

extension KernelSourceTests {
    /// `kreach snapshot` carries every loaded module's .ko: `ko/index` names each module of /proc/modules with
    /// the build-id readelf finds in /sys/module/M/notes' note, and ko/ID.ko.zst decompressed by the zstd tool is
    /// an ELF file whose readelf build-id is ID and whose bytes are the module's file in /lib/modules
    /// (`modinfo -n`, decompressed by its own tool); directory 0700, files 0600. Needs loaded modules (the 6.1
    /// guest runs it; the dev host has none).
    func testLiveSnapshotCarriesEachLoadedModulesKo() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms addresses need root")) }
        let modules = (try? String(contentsOfFile: "/proc/modules", encoding: .utf8))?.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) } ?? []
        guard !modules.isEmpty else { throw XCTSkip(Host.skipReason("no module is loaded on this kernel (nothing to carry)")) }
        guard Run.available("zstd"), Run.available("readelf"), Run.available("modinfo") else {
            throw XCTSkip(Host.skipReason("zstd, readelf and modinfo are the oracle"))
        }
        let dir = NSTemporaryDirectory() + "kreach-snapshot-ko-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try SnapshotCapture(directory: dir).capture()
        XCTAssertFalse(report.failures.contains { $0.0.hasSuffix(".ko") || $0.0.contains("/notes/") }, "\(report.failures)")
        let index = try String(contentsOfFile: dir + "/ko/index", encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(index.map { $0[0] }.sorted(), modules.sorted())
        var st = stat()
        XCTAssertEqual(lstat(dir + "/ko", &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o700)
        for entry in index {
            let (module, id) = (entry[0], entry[1])
            // The loaded module's build-id: the note file under /sys/module, copied so readelf can read it as notes.
            let note = try FileBytes.read("/sys/module/\(module)/notes/.note.gnu.build-id")
            // NT_GNU_BUILD_ID: namesz 4, descsz, type 3, "GNU\0", then the id.
            let size = Int(note[4]) | Int(note[5]) << 8
            XCTAssertEqual(Array(note[8..<16]), [3, 0, 0, 0, 0x47, 0x4e, 0x55, 0])
            XCTAssertEqual(Hex.string(Array(note[16..<(16 + size)])), id, module)
            let ko = dir + "/ko/\(id).ko.zst"
            XCTAssertEqual(lstat(ko, &st), 0)
            XCTAssertEqual(st.st_mode & 0o7777, 0o600, ko)
            let plain = dir + "/\(module).ko"
            XCTAssertEqual(try Run.command(["zstd", "-q", "-d", ko, "-o", plain]).status, 0)
            let readelf = try Run.command(["readelf", "-n", plain])
            XCTAssertTrue(readelf.stdout.contains("Build ID: \(id)"), "\(module): \(readelf.stdout)")
            let source = try Run.command(["modinfo", "-n", module]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let tool: [String] = source.hasSuffix(".xz") ? ["xz", "-dc"] : source.hasSuffix(".zst") ? ["zstd", "-dc"] : source.hasSuffix(".gz") ? ["gzip", "-dc"] : ["cat"]
            let original = try Run.command(["sh", "-c", "\"$@\" | cmp - \"$0\" && echo same", plain] + tool + [source])
            XCTAssertEqual(original.stdout, "same\n", "\(module): \(source) \(original.stderr)")
            unlink(plain)
        }
    }
}
