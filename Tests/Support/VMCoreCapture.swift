import Foundation

/// A real qemu dump of Debian's 6.1.0-56-amd64 guest (5-level paging), cut down to a few pages by
/// Tests/Fixtures/vmcore-extract.py: vmcore.kdump (kdump-compressed, zlib), vmcore.flat (the same,
/// flattened), vmcore.elf (qemu's ELF layout), and fixture.txt (the addresses and the guest's own values).
public enum VMCoreCapture {
    public static let archive: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/vmcore-debian-6.1.0-56-qemu.tar.zst").path
    }()

    nonisolated(unsafe) private static var unpacked: String?
    private static let lock = NSLock()

    public static func directory() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let unpacked { return unpacked }
        let dir = try DebianCapture.unpack(archive, label: "vmcore-6.1.0-56")
        unpacked = dir
        return dir
    }

    /// fixture.txt: name → its fields.
    public static func facts() throws -> [String: [String]] {
        let text = try String(contentsOfFile: try directory() + "/fixture.txt", encoding: .utf8)
        var facts: [String: [String]] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            if let name = f.first { facts[name] = Array(f.dropFirst()) }
        }
        return facts
    }

    /// A hex field of fixture.txt.
    public static func hex(_ name: String, _ field: Int = 0) throws -> UInt64 {
        guard let f = try facts()[name], field < f.count, let v = UInt64(f[field], radix: 16) else {
            throw FixtureError("fixture.txt has no hex field \(field) for \(name)")
        }
        return v
    }
}
