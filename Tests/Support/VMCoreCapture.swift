import Foundation

/// Real qemu dumps of Debian's 6.1.0-56-amd64 guest, cut down to a few pages by
/// Tests/Fixtures/vmcore-extract.py: vmcore.kdump (kdump-compressed, zlib), vmcore.flat (the same,
/// flattened), vmcore.elf (qemu's ELF layout), and fixture.txt (the addresses and the guest's own values).
/// One with 5-level paging (-cpu max), one with 4-level (-cpu max,la57=off), three whose kdump pages are
/// makedumpfile's lzo, snappy and zstd.
public struct VMCoreCapture: Sendable, CustomStringConvertible {
    public let archive: String
    public let label: String

    public static let fiveLevel = VMCoreCapture(file: "vmcore-debian-6.1.0-56-qemu.tar.zst", label: "vmcore-6.1.0-56")
    public static let fourLevel = VMCoreCapture(file: "vmcore-debian-6.1.0-56-qemu-4level.tar.zst", label: "vmcore-6.1.0-56-4level")
    /// Another boot's dump converted by makedumpfile -d 31 with -l, -p, -z: its kdump files hold makedumpfile's
    /// own lzo, snappy, zstd pages.
    public static let makedumpfileLZO = VMCoreCapture(file: "vmcore-debian-6.1.0-56-makedumpfile-lzo.tar.zst", label: "vmcore-6.1.0-56-lzo")
    public static let makedumpfileSnappy = VMCoreCapture(file: "vmcore-debian-6.1.0-56-makedumpfile-snappy.tar.zst", label: "vmcore-6.1.0-56-snappy")
    public static let makedumpfileZstd = VMCoreCapture(file: "vmcore-debian-6.1.0-56-makedumpfile-zstd.tar.zst", label: "vmcore-6.1.0-56-zstd")
    public static let all = [fiveLevel, fourLevel, makedumpfileLZO, makedumpfileSnappy, makedumpfileZstd]

    init(file: String, label: String) {
        archive = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/" + file).path
        self.label = label
    }

    public var description: String { label }

    nonisolated(unsafe) private static var unpacked: [String: String] = [:]
    private static let lock = NSLock()

    public func directory() throws -> String {
        VMCoreCapture.lock.lock()
        defer { VMCoreCapture.lock.unlock() }
        if let dir = VMCoreCapture.unpacked[label] { return dir }
        let dir = try DebianCapture.unpack(archive, label: label)
        VMCoreCapture.unpacked[label] = dir
        return dir
    }

    /// fixture.txt: name → its fields.
    public func facts() throws -> [String: [String]] {
        let text = try String(contentsOfFile: try directory() + "/fixture.txt", encoding: .utf8)
        var facts: [String: [String]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            if let name = f.first { facts[name] = Array(f.dropFirst()) }
        }
        return facts
    }

    /// A hex field of fixture.txt.
    public func hex(_ name: String, _ field: Int = 0) throws -> UInt64 {
        guard let f = try facts()[name], field < f.count, let v = UInt64(f[field], radix: 16) else {
            throw FixtureError("\(label) fixture.txt has no hex field \(field) for \(name)")
        }
        return v
    }

    /// A decimal field of fixture.txt.
    public func number(_ name: String, _ field: Int = 0) throws -> Int {
        guard let f = try facts()[name], field < f.count, let v = Int(f[field]) else {
            throw FixtureError("\(label) fixture.txt has no number field \(field) for \(name)")
        }
        return v
    }
}
