import Foundation
import Glibc
import KreachSupport
import KreachTestSupport
import TypeInference
import XCTest

/// `kreach snapshot DIR` writes only into a directory it creates (or an empty one the user owns), never
/// through a symbolic link, with modes 0700/0600, and refuses a capture whose addresses are hidden.
final class SnapshotSecurityTests: XCTestCase {
    var scratch = ""

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "kreach-snapsec-\(getpid())-\(name.filter { $0.isLetter })"
        try? FileManager.default.removeItem(atPath: scratch)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
        XCTAssertEqual(chmod(scratch, 0o755), 0)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: scratch) }

    func contents(_ path: String) throws -> [UInt8] { try FileBytes.read(path) }

    /// A planted `DIR/kallsyms -> target` (the reported attack): error, target and link untouched.
    func testPlantedSymlinkInTheDirectoryIsNeverFollowed() throws {
        let target = scratch + "/target"
        try FileBytes.write("precious\n", to: target)
        let dir = scratch + "/snap"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: dir + "/kallsyms", withDestinationPath: target)
        let r = try runKreach(["snapshot", dir], timeout: 120)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr, "kreach: \(dir) is not empty (kreach writes only into a directory it creates, or an empty one you own)\n")
        XCTAssertEqual(try contents(target), Array("precious\n".utf8))
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/kallsyms"), target)
        XCTAssertEqual(try FileBytes.list(dir), ["kallsyms"])
    }

    /// The snapshot carries /sys/kernel/notes (the build-id) and the live kernel's inferred-type cache,
    /// byte for byte; with none cached (or --no-cache), it says so and carries none.
    func testTheKernelsNotesAndTypeCacheAreCarried() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms addresses read as zero")) }
        let notes = try contents("/sys/kernel/notes")
        // NT_GNU_BUILD_ID: namesz 4, descsz 20 (SHA-1), type 3, "GNU\0".
        let header: [UInt8] = [4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, 0x47, 0x4e, 0x55, 0]
        let at = try XCTUnwrap((0...(max(notes.count - header.count - 20, 0))).first { Array(notes[$0..<($0 + header.count)]) == header },
                               "/sys/kernel/notes has no 20-byte GNU build-id note")
        let id = Array(notes[(at + 16)..<(at + 36)])
        let root = scratch + "/cache"
        let cache = TypeCacheFormat.encode(buildID: id, entries: [])
        try TypeCacheDirectory.write(root: root, buildID: id, cache)

        let dir = scratch + "/snap"
        let r = try runKreach(["snapshot", dir, "--cache-dir", root], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try contents(dir + "/notes"), notes)
        XCTAssertEqual(try contents(dir + "/" + CachedInference.snapshotName), cache)
        var st = stat()
        XCTAssertEqual(lstat(dir + "/" + CachedInference.snapshotName, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)

        for (label, args) in [("none cached", ["--cache-dir", scratch + "/empty"]), ("--no-cache", ["--no-cache"])] {
            let other = scratch + "/snap-" + label.filter { $0.isLetter }
            let r = try runKreach(["snapshot", other] + args, timeout: 120)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: other + "/" + CachedInference.snapshotName), label)
            XCTAssertEqual(r.stdout.contains("note: no type cache carried: no type of this kernel was inferred yet"), label == "none cached", r.stdout)
        }
    }

    /// DIR itself a symbolic link to an empty directory: refused, nothing written there.
    func testDirectoryThatIsASymlinkIsRefused() throws {
        let elsewhere = scratch + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: scratch + "/snap", withDestinationPath: elsewhere)
        let r = try runKreach(["snapshot", scratch + "/snap"], timeout: 120)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr, "kreach: \(scratch)/snap is a symbolic link, not a directory (kreach writes only into a directory it creates, or an empty one you own)\n")
        XCTAssertEqual(try FileBytes.list(elsewhere), [])
        // A regular file in its place likewise.
        try FileBytes.write("x", to: scratch + "/file")
        let f = try runKreach(["snapshot", scratch + "/file"], timeout: 120)
        XCTAssertEqual(f.status, 1, f.stdout)
        XCTAssertEqual(f.stderr, "kreach: \(scratch)/file is a regular file, not a directory (kreach writes only into a directory it creates, or an empty one you own)\n")
        XCTAssertEqual(try contents(scratch + "/file"), [0x78])
    }

    /// Below the directory, every creation is O_EXCL|O_NOFOLLOW relative to its descriptor: an entry that
    /// appears in the meantime (a file or a link to a file or directory elsewhere) is an error, left as it was.
    func testPrivateDirectoryNeverWritesThroughALinkOrOverAFile() throws {
        let target = scratch + "/target"
        try FileBytes.write("precious\n", to: target)
        let outside = scratch + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: false)
        let dir = scratch + "/snap"
        let out = try PrivateDirectory(creating: dir)
        try FileManager.default.createSymbolicLink(atPath: dir + "/kallsyms", withDestinationPath: target)
        try FileManager.default.createSymbolicLink(atPath: dir + "/events", withDestinationPath: outside)
        try FileBytes.write("mine\n", to: dir + "/modules")
        XCTAssertThrowsError(try out.create("kallsyms", Array("overwritten\n".utf8))) {
            XCTAssertEqual($0 as? PrivateDirectoryError, .system(SystemError("create", dir + "/kallsyms", errno: EEXIST)))
        }
        XCTAssertThrowsError(try out.create("modules", Array("overwritten\n".utf8))) {
            XCTAssertEqual($0 as? PrivateDirectoryError, .system(SystemError("create", dir + "/modules", errno: EEXIST)))
        }
        XCTAssertThrowsError(try out.create("events/sched/format", [1])) {
            XCTAssertEqual($0 as? PrivateDirectoryError, .system(SystemError("open directory", dir + "/events", errno: ENOTDIR)))
        }
        XCTAssertThrowsError(try out.makeDirectory("events/sched")) {
            XCTAssertEqual($0 as? PrivateDirectoryError, .system(SystemError("open directory", dir + "/events", errno: ENOTDIR)))
        }
        XCTAssertEqual(try contents(target), Array("precious\n".utf8))
        XCTAssertEqual(try contents(dir + "/modules"), Array("mine\n".utf8))
        XCTAssertEqual(try FileBytes.list(outside), [])
        for bad in ["../escape", "a/../../escape", "/abs", "a//b", ".", ""] {
            XCTAssertThrowsError(try out.create(bad, [1])) { XCTAssertEqual($0 as? PrivateDirectoryError, .badName(bad)) }
        }
        XCTAssertFalse(FileBytes.exists(scratch + "/escape"))
        try out.create("btf/vmlinux", [1, 2])
        XCTAssertEqual(try contents(dir + "/btf/vmlinux"), [1, 2])
    }

    /// An existing directory is taken only when empty and the user's own; it is then made 0700.
    func testExistingDirectoryMustBeEmptyAndOwned() throws {
        let dir = scratch + "/snap"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        XCTAssertEqual(chmod(dir, 0o777), 0)
        _ = try PrivateDirectory(creating: dir)
        var st = stat()
        XCTAssertEqual(stat(dir, &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o700)
        try FileBytes.write("", to: dir + "/left-over")
        XCTAssertThrowsError(try PrivateDirectory(creating: dir)) { XCTAssertEqual($0 as? PrivateDirectoryError, .notEmpty(path: dir)) }
        XCTAssertThrowsError(try PrivateDirectory(creating: scratch + "/no/parent")) {
            XCTAssertEqual($0 as? PrivateDirectoryError, .system(SystemError("create directory", scratch + "/no/parent", errno: ENOENT)))
        }
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: can't make a directory owned by someone else")) }
        let theirs = scratch + "/theirs"
        try FileManager.default.createDirectory(atPath: theirs, withIntermediateDirectories: false)
        XCTAssertEqual(chown(theirs, 65534, 65534), 0)
        XCTAssertThrowsError(try PrivateDirectory(creating: theirs)) { XCTAssertEqual($0 as? PrivateDirectoryError, .notOwned(path: theirs, owner: 65534)) }
    }

    /// A real snapshot under umask 0: the directory and every directory in it 0700, every file 0600, no links.
    func testSnapshotIsPrivateWhateverTheUmask() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms addresses are hidden, snapshot refuses")) }
        let dir = scratch + "/snap"
        let old = umask(0)
        let r = try runKreach(["snapshot", dir], timeout: 300)
        umask(old)
        XCTAssertEqual(r.status, 0, r.stderr)
        var files = 0, directories = 0
        var wrong: [String] = []
        var pending = [dir]
        while let current = pending.popLast() {
            var st = stat()
            XCTAssertEqual(lstat(current, &st), 0)
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                if st.st_mode & 0o7777 != 0o700 { wrong.append(current) }
                directories += 1
                pending += try FileBytes.list(current).map { current + "/" + $0 }
            case S_IFREG:
                if st.st_mode & 0o7777 != 0o600 { wrong.append(current) }
                files += 1
            default:
                wrong.append(current)
            }
        }
        XCTAssertEqual(wrong.count, 0, "\(wrong.count) entries not 0700 directories or 0600 files, e.g. \(wrong.prefix(3))")
        XCTAssertGreaterThan(files, 10)
        XCTAssertGreaterThan(directories, 2)
        XCTAssertTrue(r.stdout.contains("captured \(files) files"), "\(files) files; \(r.stdout)")
    }

    /// Captured as nobody, kallsyms reads all zeros: an error naming why, exit 1, and no directory.
    func testUnprivilegedSnapshotIsRefused() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: can't run kreach as nobody")) }
        // The kernel decides what nobody sees (kptr_restrict, perf_event_paranoid): ask it.
        let head = try Run.command(["timeout", "30", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "head", "-n", "1", "/proc/kallsyms"])
        XCTAssertEqual(head.status, 0, head.stderr)
        guard head.stdout.prefix(while: { $0 != " " }).allSatisfy({ $0 == "0" }) else {
            throw XCTSkip(Host.skipReason("nobody sees kallsyms addresses on this kernel (kptr_restrict=0 and perf_event_paranoid<=1): nothing to refuse"))
        }
        let dir = scratch + "/snap"
        XCTAssertEqual(chmod(scratch, 0o777), 0)
        let r = try runKreach(["snapshot", dir], timeout: 120, asNobody: true)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertTrue(r.stderr.hasPrefix("kreach: no snapshot written: /proc/kallsyms: every symbol address reads as 0"), r.stderr)
        XCTAssertTrue(r.stderr.contains("CAP_SYSLOG") && r.stderr.contains("kptr_restrict"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertFalse(FileBytes.exists(dir))
    }
}
