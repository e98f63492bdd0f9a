import Foundation
import Glibc
import KernelSource
import KreachSupport
import KreachTestSupport
import XCTest

/// Files put where kernel files are expected: FIFOs, devices and oversized files are refused at once with
/// a one-line message naming the file, its kind and why; live kernel files (all regular) still read.
final class FileSafetyTests: XCTestCase {
    /// A snapshot directory whose entries link to the Debian capture's, with `btf/` a real directory of
    /// links, so any one file can be replaced.
    func linkedCapture() throws -> String {
        let source = try DebianCapture.directory()
        let dir = NSTemporaryDirectory() + "kreach-files-\(getpid())-\(name.filter { $0.isLetter })"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/btf", withIntermediateDirectories: true)
        for entry in try FileBytes.list(source) where entry != "btf" {
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + entry, withDestinationPath: source + "/" + entry)
        }
        for entry in try FileBytes.list(source + "/btf") {
            try FileManager.default.createSymbolicLink(atPath: dir + "/btf/" + entry, withDestinationPath: source + "/btf/" + entry)
        }
        return dir
    }

    enum Bad: CaseIterable { case fifo, characterDevice, oversized }

    /// Replaces `file` in `dir` with a bad file; `cap` is the cap of its kind (an oversized file is one
    /// byte more, sparse).
    func plant(_ bad: Bad, at path: String, cap: Int) throws {
        try? FileManager.default.removeItem(atPath: path)
        switch bad {
        case .fifo: XCTAssertEqual(mkfifo(path, 0o600), 0)
        case .characterDevice: try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "/dev/zero")
        case .oversized:
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            XCTAssertGreaterThanOrEqual(fd, 0)
            XCTAssertEqual(ftruncate(fd, off_t(cap + 1)), 0)
            close(fd)
        }
    }

    func expected(_ bad: Bad, path: String, kind: String, cap: String) -> String {
        switch bad {
        case .fifo: return "\(path): \(kind) is a FIFO, not a regular file"
        case .characterDevice: return "\(path): \(kind) is a character device, not a regular file"
        case .oversized: return "\(path): \(kind) is larger than its \(cap) cap"
        }
    }

    /// kallsyms, /proc/modules, vmlinux and module BTF: the command fails with one line (exit 1), at once.
    func testBadFilesWhereKernelFilesAreExpectedAreOneLineErrors() throws {
        let cases: [(file: String, kind: KernelFile, command: [String])] = [
            ("kallsyms", .kallsyms, ["sym", "vfs_read"]),
            ("modules", .modules, ["sym", "vfs_read"]),
            ("btf/vmlinux", .btf, ["type", "struct task_struct"]),
            ("btf/lockd", .btf, ["type", "lockd:struct nlm_file"]),
        ]
        let dir = try linkedCapture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try DebianCapture.directory()
        for (file, kind, command) in cases {
            for bad in Bad.allCases {
                let path = dir + "/" + file
                try plant(bad, at: path, cap: kind.limit.bytes)
                let r = try runKreach(command + ["--kernel", dir], timeout: 60)
                XCTAssertEqual(r.status, 1, "\(file) \(bad): \(r.stdout)")
                XCTAssertEqual(r.stderr, "kreach: " + expected(bad, path: path, kind: kind.limit.kind, cap: kind.limit.sizeLabel) + "\n", "\(file) \(bad)")
                try FileManager.default.removeItem(atPath: path)
                try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: source + "/" + file)
            }
        }
    }

    /// The tracing lists only qualify `why`'s answer: a bad one is named in a note, and `why` still answers.
    func testBadTracingListsAreNamedInWhy() throws {
        let dir = try linkedCapture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (file, kind) in [("available_filter_functions", KernelFile.availableFilterFunctions), ("kprobes_blacklist", .kprobesBlacklist)] {
            for bad in Bad.allCases {
                let path = dir + "/" + file
                try plant(bad, at: path, cap: kind.limit.bytes)
                let r = try runKreach(["why", "--kernel", dir, "vfs_read"], timeout: 60)
                XCTAssertEqual(r.status, 0, "\(file) \(bad): \(r.stderr)")
                XCTAssertTrue(r.stdout.contains("(" + expected(bad, path: path, kind: kind.limit.kind, cap: kind.limit.sizeLabel) + ")"), "\(file) \(bad): \(r.stdout)")
                try FileManager.default.removeItem(atPath: path)
            }
        }
    }

    /// A tracepoint format that is a FIFO is skipped by `where` (which searches every format), not waited on.
    func testFIFOTracepointFormatDoesNotHangWhere() throws {
        let source = try DebianCapture.directory()
        let dir = try linkedCapture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.removeItem(atPath: dir + "/events")
        try FileManager.default.createDirectory(atPath: dir + "/events/syscalls", withIntermediateDirectories: true)
        for event in try FileBytes.list(source + "/events/syscalls") {
            try FileManager.default.createSymbolicLink(atPath: dir + "/events/syscalls/" + event, withDestinationPath: source + "/events/syscalls/" + event)
        }
        let r0 = try runKreach(["where", "--kernel", dir, "struct msqid_ds"], timeout: 120)
        XCTAssertEqual(r0.status, 0, r0.stderr)
        XCTAssertTrue(r0.stdout.contains("syscalls:sys_enter_msgctl"), r0.stdout)
        try FileManager.default.removeItem(atPath: dir + "/events/syscalls/sys_enter_msgctl")
        try FileManager.default.createDirectory(atPath: dir + "/events/syscalls/sys_enter_msgctl", withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(dir + "/events/syscalls/sys_enter_msgctl/format", 0o600), 0)
        let r = try runKreach(["where", "--kernel", dir, "struct msqid_ds"], timeout: 120)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr, "kreach: nothing found that exposes struct msqid_ds\n")
    }

    /// The cap holds for files without a size too (/proc, /sys), and a file of exactly the cap is read.
    func testCapOnFilesWithAndWithoutASize() throws {
        let dir = NSTemporaryDirectory() + "kreach-cap-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let limit = FileLimit("test file", bytes: 100)
        try FileBytes.write([UInt8](repeating: 0x41, count: 100), to: dir + "/exact")
        XCTAssertEqual(try ByteBuffer.read(dir + "/exact", limit: limit).count, 100)
        XCTAssertEqual(try ByteBuffer.mapOrRead(dir + "/exact", limit: limit).count, 100)
        try FileBytes.write([UInt8](repeating: 0x41, count: 101), to: dir + "/over")
        XCTAssertThrowsError(try ByteBuffer.read(dir + "/over", limit: limit)) { XCTAssertEqual($0 as? FileError, .tooLarge(path: dir + "/over", limit: limit)) }
        XCTAssertThrowsError(try ByteBuffer.mapOrRead(dir + "/over", limit: limit)) { XCTAssertEqual($0 as? FileError, .tooLarge(path: dir + "/over", limit: limit)) }
        // /proc/self/maps has st_size 0 and is longer than 100 bytes; read to its end under a larger cap.
        XCTAssertThrowsError(try ByteBuffer.read("/proc/self/maps", limit: limit)) { XCTAssertEqual($0 as? FileError, .tooLarge(path: "/proc/self/maps", limit: limit)) }
        XCTAssertGreaterThan(try ByteBuffer.read("/proc/self/maps", limit: .text).count, 100)
        // A directory and a device are refused before any read.
        XCTAssertThrowsError(try FileBytes.read(dir)) { XCTAssertEqual($0 as? FileError, .notRegular(path: dir, kind: "file", type: .directory)) }
        XCTAssertThrowsError(try FileBytes.readText("/dev/null")) { XCTAssertEqual($0 as? FileError, .notRegular(path: "/dev/null", kind: "text file", type: .characterDevice)) }
    }

    /// Every live kernel file kreach reads is a regular file under its cap (the regular-file rule needs no
    /// exception for /proc, /sys, tracefs, debugfs or securityfs).
    func testLiveKernelFilesAreRegularFilesUnderTheirCaps() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: kallsyms, debugfs and tracefs need root")) }
        _ = Host.tracefs()
        let kernel = try Kernel(source: .live)
        var read: [String] = []
        /// Reads a file as kreach would; a failing read (EPERM under lockdown, EIO) is not what this test
        /// is about, a refusal (not regular, over the cap) is.
        func check(_ file: KernelFile, _ path: String, _ name: String) {
            do {
                _ = try kernel.buffer(file, at: path)
                read.append(name)
            } catch {
                if case .system(let e) = error { print("note: \(e)") } else { XCTFail("\(error)") }
            }
        }
        for file in KernelFile.allCases where ![.btf, .events, .moduleDirectory].contains(file) {
            let path = kernel.path(file)
            guard FileBytes.exists(path) else {
                print("note: \(path) absent on this kernel")
                continue
            }
            check(file, path, path)
        }
        for name in try FileBytes.list(kernel.path(.btf)) {
            check(.btf, kernel.path(.btf) + "/" + name, name)
        }
        if let systems = try? FileBytes.list(kernel.path(.events)), let system = systems.first(where: { FileBytes.exists(kernel.path(.events) + "/\($0)/enable") && $0 != "ftrace" }) {
            for event in try FileBytes.list(kernel.path(.events) + "/" + system) where FileBytes.exists(kernel.path(.events) + "/\(system)/\(event)/format") {
                check(.events, kernel.path(.events) + "/\(system)/\(event)/format", event)
            }
        }
        for module in try FileBytes.list(kernel.path(.moduleDirectory)) {
            for part in ["parameters", "sections", "notes"] {
                let dir = kernel.path(.moduleDirectory) + "/\(module)/\(part)"
                guard let names = try? FileBytes.list(dir) else { continue }
                for name in names where !FileBytes.isDirectory(dir + "/" + name) {
                    var st = stat()
                    guard stat(dir + "/" + name, &st) == 0, st.st_mode & 0o444 != 0 else { continue }
                    check(.moduleDirectory, dir + "/" + name, name)
                }
            }
        }
        XCTAssertTrue(read.contains("/proc/kallsyms"), "\(read)")
        XCTAssertTrue(read.contains("vmlinux"), "\(read)")
        print("read \(read.count) live kernel files")
    }

    /// A damaged btf/ in a snapshot is reported as what it is, not as a kernel without BTF.
    func testDamagedBTFDirectoryIsReportedAsWhatItIs() throws {
        let source = try DebianCapture.directory()
        let dir = try linkedCapture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let btf = dir + "/btf"
        func type() throws -> String {
            let r = try runKreach(["type", "--kernel", dir, "struct task_struct"], timeout: 60)
            XCTAssertEqual(r.status, 1, r.stdout)
            XCTAssertFalse(r.stderr.contains("CONFIG_DEBUG_INFO_BTF"), r.stderr)
            return r.stderr
        }
        try FileManager.default.removeItem(atPath: btf + "/vmlinux")
        XCTAssertEqual(try type(), "kreach: no vmlinux BTF in \(btf) (No such file or directory), though the directory exists\n")
        try FileManager.default.createSymbolicLink(atPath: btf + "/vmlinux", withDestinationPath: dir + "/nowhere")
        XCTAssertEqual(try type(), "kreach: open \(btf)/vmlinux: No such file or directory\n")
        try FileManager.default.removeItem(atPath: btf + "/vmlinux")
        try FileManager.default.createDirectory(atPath: btf + "/vmlinux", withIntermediateDirectories: false)
        XCTAssertEqual(try type(), "kreach: \(btf)/vmlinux: BTF is a directory, not a regular file\n")
        try FileManager.default.removeItem(atPath: btf)
        XCTAssertEqual(try type(), "kreach: no BTF: stat \(btf): No such file or directory\n")
        try FileBytes.write("", to: btf)
        XCTAssertEqual(try type(), "kreach: no BTF: \(btf) is a regular file, not a directory of BTF files\n")
        // Unreadable: root reads anything, so the reader is nobody.
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: can't run kreach as another user")) }
        try FileManager.default.removeItem(atPath: btf)
        try FileManager.default.createDirectory(atPath: btf, withIntermediateDirectories: false)
        try FileBytes.write(try FileBytes.read(source + "/btf/vmlinux", limit: KernelFile.btf.limit), to: btf + "/vmlinux")
        XCTAssertEqual(chmod(btf + "/vmlinux", 0), 0)
        for path in [dir, btf] { XCTAssertEqual(chmod(path, 0o755), 0) }
        let r = try runKreach(["type", "--kernel", dir, "struct task_struct"], timeout: 60, asNobody: true)
        XCTAssertEqual(r.status, 1, r.stdout)
        XCTAssertEqual(r.stderr, "kreach: open \(btf)/vmlinux: Permission denied\n")
    }
}
