import Foundation
import Glibc

/// The real capture of Debian 12's stock kernel 6.1.0-56-amd64 (brd, loop, nfsd, lockd, dummy loaded),
/// unpacked once per machine into a cache directory.
public enum DebianCapture {
    public static let release = "6.1.0-56-amd64"
    /// Tests/Fixtures/debian-6.1.0-56-amd64.tar.zst, found relative to this source file.
    public static let archive: String = {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/debian-6.1.0-56-amd64.tar.zst").path
    }()

    nonisolated(unsafe) private static var unpacked: String?
    private static let lock = NSLock()

    /// The directory holding the unpacked capture (kallsyms, modules, btf/, …). Fails the test run
    /// loudly if the archive or tar/zstd is missing: these tests never skip.
    public static func directory() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let unpacked { return unpacked }
        let dir = try unpack(archive, label: release)
        unpacked = dir
        return dir
    }

    /// Unpacks a fixture archive once per machine (keyed by `label` and the archive's size).
    public static func unpack(_ archive: String, label: String) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: archive)
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        let dir = NSTemporaryDirectory() + "kreach-fixture-\(label)-\(size)"
        if !FileManager.default.fileExists(atPath: dir + "/.complete") {
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let result = try Run.command(["tar", "--zstd", "-xf", archive, "-C", dir])
            guard result.status == 0 else {
                throw FixtureError("unpacking \(archive) failed (needs tar and zstd): \(result.stderr)")
            }
            guard FileManager.default.createFile(atPath: dir + "/.complete", contents: Data()) else {
                throw FixtureError("can't write \(dir)/.complete")
            }
        }
        return dir
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Facts about the machine the tests run on.
public enum Host {
    public static var isRoot: Bool { getuid() == 0 }

    /// Prints why a live test does not run (the only allowed reason to skip: privilege or an absent tool).
    public static func skipReason(_ reason: String, file: String = #file, function: String = #function) -> String {
        let line = "SKIP \(function): \(reason)"
        print(line)
        return line
    }

    /// Mounts tracefs (and debugfs) when absent, as root; returns the tracefs path or nil.
    public static func tracefs() -> String? {
        for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] where FileManager.default.fileExists(atPath: p + "/events") { return p }
        guard isRoot else { return nil }
        _ = try? Run.command(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        _ = try? Run.command(["mount", "-t", "debugfs", "nodev", "/sys/kernel/debug"])
        return FileManager.default.fileExists(atPath: "/sys/kernel/tracing/events") ? "/sys/kernel/tracing" : nil
    }
}
