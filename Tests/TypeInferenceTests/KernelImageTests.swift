import Foundation
import KreachSupport
import KreachTestSupport
import TypeInference
import XCTest

/// The Debian 6.1.0-56 kernel image the capture was taken from (Tests/Fixtures/vmlinuz-6.1.0-56-amd64,
/// Debian's linux-image-6.1.0-56-amd64 6.1.192-2 /boot/vmlinuz) and its DWARF oracle table.
enum DebianImage {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static let path = fixtures + "/vmlinuz-6.1.0-56-amd64"
    static let table = fixtures + "/types-debian-6.1.0-56-amd64.tsv.xz"

    nonisolated(unsafe) private static var cached: KernelImage?
    static func image() throws -> KernelImage {
        if let cached { return cached }
        let image = try KernelImage(path: path)
        cached = image
        return image
    }

    /// A scratch copy of the image with `change` applied to its bytes.
    static func damaged(_ name: String, _ change: (inout [UInt8]) -> Void) throws -> String {
        var bytes = try FileBytes.read(path, limit: KernelImage.fileLimit)
        change(&bytes)
        let out = NSTemporaryDirectory() + "kreach-image-\(getpid())-\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: out))
        return out
    }
}

final class KernelImageTests: XCTestCase {
    /// The payload decompresses to what scripts/extract-vmlinux's method gives: xz from the first xz magic
    /// in the file, one stream.
    func testPayloadEqualsXZOfTheFirstStream() throws {
        let image = try DebianImage.image()
        let file = try FileBytes.read(DebianImage.path, limit: KernelImage.fileLimit)
        let magic: [UInt8] = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]
        guard let start = (0..<(file.count - magic.count)).first(where: { Array(file[$0..<($0 + 6)]) == magic }) else {
            return XCTFail("no xz stream in \(DebianImage.path)")
        }
        let tail = NSTemporaryDirectory() + "kreach-image-tail-\(getpid()).xz"
        try Data(file[start...]).write(to: URL(fileURLWithPath: tail))
        defer { try? FileManager.default.removeItem(atPath: tail) }
        let child = try Child(["xz", "-dc", "--single-stream", tail])
        XCTAssertEqual(try child.wait(timeout: 120), 0, child.stderrText)
        XCTAssertEqual(child.stdout.count, image.bytes.count)
        XCTAssert(child.stdout == image.bytes, "the decompressed payload differs from xz's")
        XCTAssertEqual(image.machine, 62)
        XCTAssertEqual(image.textAddress, 0xffff_ffff_8100_0000)
    }

    func testTruncatedImageIsAClearError() throws {
        let path = try DebianImage.damaged("truncated") { $0.removeLast($0.count / 2) }
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try KernelImage(path: path)) { error in
            XCTAssert("\(error)".contains("runs past the end"), "\(error)")
        }
    }

    func testWrongMagicIsAClearError() throws {
        let path = try DebianImage.damaged("magic") { $0[0x202] = UInt8(ascii: "X") }
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try KernelImage(path: path)) { error in
            XCTAssert("\(error)".contains("neither a bzImage"), "\(error)")
        }
    }

    func testCorruptPayloadIsAClearError() throws {
        let path = try DebianImage.damaged("corrupt") { bytes in
            for i in stride(from: bytes.count / 2, to: bytes.count / 2 + 4096, by: 7) { bytes[i] ^= 0x5a }
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try KernelImage(path: path)) { error in
            XCTAssert("\(error)".hasPrefix("kernel image \(path): payload"), "\(error)")
        }
    }
}
