import Foundation
import Glibc
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
import TypeInference
import XCTest

/// The inferred-type cache on the Debian 6.1 capture and its kernel image: a cold run writes it, a warm
/// run answers from it without the image; damaged, foreign and unsafe caches are ignored, never trusted.
final class TypeCacheTests: XCTestCase {
    /// A copy of the capture with `notes`: the image's .notes section, the bytes that kernel's
    /// /sys/kernel/notes shows (the capture predates kreach capturing it).
    static func snapshot() throws -> String {
        let dir = try DebianCapture.copy(withoutBTFOf: [])
        made.append(dir)
        let elf = try ELFFile(bytes: try DebianImage.image().bytes, source: DebianImage.path)
        let notes = try XCTUnwrap(elf.sections.first { $0.name == ".notes" })
        try Data(elf.contents(notes)).write(to: URL(fileURLWithPath: dir + "/notes"))
        return dir
    }

    static func scratch(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "kreach-typecache-\(getpid())-\(name)-\(UUID().uuidString)"
        made.append(path)
        return path
    }

    /// Scratch directories and snapshot copies, removed when the class is done.
    nonisolated(unsafe) static var made: [String] = []

    override class func tearDown() {
        for path in made { try? FileManager.default.removeItem(atPath: path) }
        made = []
        cold = nil
    }

    func inference(_ dir: String, root: String?, image: String) throws -> CachedInference {
        let kernel = try Kernel(source: .snapshot(dir))
        kernel.typeCacheRoot = root
        return CachedInference(kernel: kernel, imagePath: image)
    }

    func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    func cacheFile(_ root: String) throws -> String {
        let id = try XCTUnwrap(try DebianImage.image().buildID)
        return root + "/types/" + TypeCacheDirectory.fileName(id)
    }

    /// One cold run on a fresh snapshot copy and cache root, shared: (snapshot, root, cache file, what it inferred, ms).
    nonisolated(unsafe) static var cold: (dir: String, root: String, file: String, asked: [InferredType], ms: Int)?

    func coldRun() throws -> (dir: String, root: String, file: String, asked: [InferredType], ms: Int) {
        if let c = TypeCacheTests.cold { return c }
        let dir = try TypeCacheTests.snapshot(), root = TypeCacheTests.scratch("cold")
        let previous = umask(0o022)
        defer { umask(previous) }
        let start = Date()
        let cold = try inference(dir, root: root, image: DebianImage.path)
        let first = try cold.infer(named: "init_uts_ns")
        let ms = Int(Date().timeIntervalSince(start) * 1000)
        XCTAssertNotNil(first.type, first.note)
        XCTAssertNil(first.cachedIn)
        XCTAssertEqual(cold.notes, [])
        let c = (dir, root, try cacheFile(root), try cold.inferrer().inferredSoFar, ms)
        TypeCacheTests.cold = c
        return c
    }

    /// Cold: inferred from the image, written (dirs 0700, file 0600 under umask 022). Warm: the same answers
    /// with the image path pointing nowhere; a global the cold run never asked still needs the image.
    func testAWarmRunAnswersFromTheCacheWithoutTheImage() throws {
        let (dir, root, file, asked, coldTime) = try coldRun()
        XCTAssertGreaterThan(asked.count, 1, "init_uts_ns asks its holders (init_nsproxy)")
        XCTAssertEqual(mode(root), 0o700)
        XCTAssertEqual(mode(root + "/types"), 0o700)
        XCTAssertEqual(mode(file), 0o600)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root + "/types"), [URL(fileURLWithPath: file).lastPathComponent],
                       "no temporary file is left")

        let warmStart = Date()
        let warm = try inference(dir, root: root, image: "/nonexistent/vmlinuz")
        let again = try warm.infer(named: "init_uts_ns")
        print("type cache: init_uts_ns cold \(coldTime) ms, warm \(Int(Date().timeIntervalSince(warmStart) * 1000)) ms")
        XCTAssertEqual(again.cachedIn, file)
        for expected in asked {
            let got = try warm.infer(named: expected.name)
            XCTAssertEqual(got.type, expected.type, expected.name)
            XCTAssertEqual(got.note, expected.note, expected.name)
            XCTAssertEqual(got.candidates.map(\.type), expected.candidates.map(\.type), expected.name)
            XCTAssertEqual(got.candidates.map(\.sources), expected.candidates.map(\.sources), expected.name)
            XCTAssertEqual(got.cachedIn, file, expected.name)
        }
        XCTAssertThrowsError(try warm.infer(named: "pid_max"), "not cached: needs the (missing) image") { error in
            XCTAssert("\(error)".contains("/nonexistent/vmlinuz"), "\(error)")
        }
        XCTAssertEqual(warm.notes, [])

        // --no-cache: neither read nor written.
        let bypass = try inference(dir, root: nil, image: "/nonexistent/vmlinuz")
        XCTAssertThrowsError(try bypass.infer(named: "init_uts_ns"))
    }

    /// Damaged, truncated, foreign or inconsistent cache files: ignored with a note naming the file, never
    /// answered from; the next inference from the image rewrites the file whole.
    func testABadCacheIsIgnoredWithANote() throws {
        let (dir, _, coldFile, _, _) = try coldRun()
        let root = TypeCacheTests.scratch("bad")
        let good = try FileBytes.read(coldFile)
        let id = try XCTUnwrap(try DebianImage.image().buildID)
        try FileManager.default.createDirectory(atPath: root + "/types", withIntermediateDirectories: true)
        XCTAssertEqual(chmod(root, 0o700), 0)
        XCTAssertEqual(chmod(root + "/types", 0o700), 0)
        let file = try cacheFile(root)
        let entries = try TypeCacheFormat.decode(good, buildID: id, source: file)
        let uts = try XCTUnwrap(entries["init_uts_ns"])
        var renamed = uts
        renamed.typeName = "struct not_this_one"
        var flipped = good
        flipped[good.count / 2] ^= 0x40
        let variants: [(String, [UInt8], String)] = [
            ("a flipped byte", flipped, "checksum mismatch"),
            ("truncated", Array(good.prefix(good.count - 9)), "checksum mismatch"),
            ("empty", [], "not a kreach type cache"),
            ("another build", TypeCacheFormat.encode(buildID: id.map { ~$0 }, entries: Array(entries.values)), "not this kernel's"),
            ("types renamed", TypeCacheFormat.encode(buildID: id, entries: [renamed]), "not this kernel's BTF"),
        ]
        for (label, bytes, reason) in variants {
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let warm = try inference(dir, root: root, image: "/nonexistent/vmlinuz")
            XCTAssertThrowsError(try warm.infer(named: "init_uts_ns"), "\(label): never answered from it")
            XCTAssert(warm.notes.contains { $0.contains(file) && $0.contains(reason) && $0.hasSuffix("ignored") }, "\(label): \(warm.notes)")
        }
        let fresh = try inference(dir, root: root, image: DebianImage.path)
        XCTAssertEqual(try fresh.infer(named: "init_uts_ns").type, uts.type)
        XCTAssertEqual(try TypeCacheFormat.decode(try FileBytes.read(file), buildID: id, source: file)["init_uts_ns"], uts, "rewritten")
    }

    /// A cache directory (ROOT/types, or ROOT) that is a symbolic link, or that another user could write
    /// into, is neither read nor written through.
    func testAnUnsafeCacheDirectoryIsRefused() throws {
        let id: [UInt8] = [1, 2, 3, 4]
        let root = TypeCacheTests.scratch("link"), elsewhere = TypeCacheTests.scratch("target")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: elsewhere + "/types", withIntermediateDirectories: true)
        XCTAssertEqual(chmod(root, 0o700), 0)
        XCTAssertEqual(chmod(elsewhere, 0o700), 0)
        XCTAssertEqual(chmod(elsewhere + "/types", 0o700), 0)
        XCTAssertEqual(symlink(elsewhere + "/types", root + "/types"), 0)
        let planted = TypeCacheFormat.encode(buildID: id, entries: [])
        try Data(planted).write(to: URL(fileURLWithPath: elsewhere + "/types/" + TypeCacheDirectory.fileName(id)))
        let linkedRoot = TypeCacheTests.scratch("linkroot")
        XCTAssertEqual(symlink(elsewhere, linkedRoot), 0)
        for (r, path) in [(root, root + "/types"), (linkedRoot, linkedRoot)] {
            XCTAssertThrowsError(try TypeCacheDirectory.write(root: r, buildID: id, [1])) { error in
                XCTAssertEqual("\(error)", "type cache \(path): is a symbolic link: refused")
            }
            XCTAssertThrowsError(try TypeCacheDirectory.read(root: r, buildID: id)) { error in
                XCTAssertEqual("\(error)", "type cache \(path): is a symbolic link: refused")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: elsewhere + "/types"), [TypeCacheDirectory.fileName(id)])
        XCTAssertEqual(try FileBytes.read(elsewhere + "/types/" + TypeCacheDirectory.fileName(id)), planted, "nothing written through a link")

        // Group- or world-writable: someone else could have planted the file.
        XCTAssertEqual(chmod(elsewhere, 0o777), 0)
        XCTAssertThrowsError(try TypeCacheDirectory.read(root: elsewhere, buildID: id)) { error in
            XCTAssertEqual("\(error)", "type cache \(elsewhere): is writable by others (mode 777): refused")
        }
        XCTAssertEqual(chmod(elsewhere, 0o700), 0)
        XCTAssertEqual(try TypeCacheDirectory.read(root: elsewhere, buildID: id), planted)
    }

    /// A snapshot carrying its kernel's cache (DIR/type-cache, as `kreach snapshot` writes it) answers from
    /// it with no cache directory and no image; a carried cache of another build is ignored with a note.
    func testASnapshotAnswersFromTheCacheItCarries() throws {
        let (_, _, coldFile, _, _) = try coldRun()
        let dir = try TypeCacheTests.snapshot(), root = TypeCacheTests.scratch("empty")
        let carried = dir + "/" + CachedInference.snapshotName
        try Data(try FileBytes.read(coldFile)).write(to: URL(fileURLWithPath: carried))
        let warm = try inference(dir, root: root, image: "/nonexistent/vmlinuz")
        let t = try warm.infer(named: "init_uts_ns")
        XCTAssertEqual(t.cachedIn, carried)
        XCTAssertNotNil(t.type)
        XCTAssertEqual(warm.notes, [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: root), "reading creates no cache directory")

        let id = try XCTUnwrap(try DebianImage.image().buildID)
        let foreign = try TypeCacheFormat.decode(try FileBytes.read(coldFile), buildID: id, source: coldFile)
        try Data(TypeCacheFormat.encode(buildID: id.map { ~$0 }, entries: Array(foreign.values))).write(to: URL(fileURLWithPath: carried))
        let other = try inference(dir, root: root, image: "/nonexistent/vmlinuz")
        XCTAssertThrowsError(try other.infer(named: "init_uts_ns"))
        XCTAssert(other.notes.contains { $0.hasPrefix("type cache \(carried): for build-id ") && $0.hasSuffix("; ignored") }, "\(other.notes)")
    }

    /// An image whose build-id is not the kernel's (/sys/kernel/notes): refused before any inference.
    /// The default root: $KREACH_CACHE_DIR; else /var/cache/kreach for root; for other users, who can't create
    /// that, $XDG_CACHE_HOME/kreach or ~/.cache/kreach. (The effective uid is switched for the check and back.)
    func testTheDefaultCacheRootIsPerUserForOthersThanRoot() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root to switch the effective uid") }
        let names = ["KREACH_CACHE_DIR", "XDG_CACHE_HOME", "HOME"]
        let saved: [(String, String?)] = names.map { name in (name, getenv(name).map { String(cString: $0) }) }
        defer { for (name, value) in saved { if let value { setenv(name, value, 1) } else { unsetenv(name) } } }
        unsetenv("KREACH_CACHE_DIR"); unsetenv("XDG_CACHE_HOME"); setenv("HOME", "/home/someone", 1)
        XCTAssertEqual(Kernel.defaultTypeCacheRoot, "/var/cache/kreach")
        XCTAssertEqual(seteuid(65534), 0)
        let home = Kernel.defaultTypeCacheRoot
        setenv("XDG_CACHE_HOME", "/xdg", 1)
        let xdg = Kernel.defaultTypeCacheRoot
        XCTAssertEqual(seteuid(0), 0)
        XCTAssertEqual(home, "/home/someone/.cache/kreach")
        XCTAssertEqual(xdg, "/xdg/kreach")
        setenv("KREACH_CACHE_DIR", "/chosen", 1)
        XCTAssertEqual(Kernel.defaultTypeCacheRoot, "/chosen")
    }

    func testAnImageOfAnotherBuildIsRefused() throws {
        let dir = try TypeCacheTests.snapshot()
        var notes = try FileBytes.read(dir + "/notes")
        let id = try XCTUnwrap(ELFFile.gnuBuildID(inNotes: notes))
        let at = try XCTUnwrap((0...(notes.count - id.count)).first { Array(notes[$0..<($0 + id.count)]) == id })
        notes[at] ^= 0xff
        try Data(notes).write(to: URL(fileURLWithPath: dir + "/notes"))
        let cold = try inference(dir, root: nil, image: DebianImage.path)
        XCTAssertThrowsError(try cold.infer(named: "init_uts_ns")) { error in
            XCTAssert("\(error)".contains("is another build than the kernel's"), "\(error)")
        }
    }
}
