import Foundation
import Glibc
import KernelSource
import KreachSupport
import KreachTestSupport
import XCTest

/// .ko.xz, .ko.zst and .ko.gz are decompressed in process: files made by the real xz, zstd and gzip tools
/// come back byte for byte, whatever the path holds; damaged input is one line; a bomb stops at the cap.
final class DecompressionTests: XCTestCase {
    var scratch = ""
    /// A file name a shell would run code from, were it ever quoted into a command.
    let hostile = "mod 'x$(touch SENTINEL1)' `touch SENTINEL2` \"$(touch SENTINEL3)\";touch SENTINEL4.ko"

    override func setUpWithError() throws {
        scratch = NSTemporaryDirectory() + "kreach-decompress-\(getpid())-\(name.filter { $0.isLetter })"
        try? FileManager.default.removeItem(atPath: scratch)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: scratch) }

    /// Compresses `file` with the real tool (argument list, no shell), keeping the original.
    func compress(_ file: String, _ format: Compression) throws -> String {
        let argv: [String]
        switch format {
        case .xz: argv = ["xz", "-k", "-f", "--check=crc32", "--lzma2=dict=1MiB", file]  // as the kernel's Makefile does
        case .zstd: argv = ["zstd", "-q", "-k", "-f", "-19", file]
        case .gzip: argv = ["gzip", "-k", "-f", "-9", file]
        }
        guard Run.available(argv[0]) else { throw XCTSkip(Host.skipReason("\(argv[0]) is not installed (apt-get install xz-utils zstd gzip)")) }
        let r = try Run.command(["timeout", "120"] + argv)
        XCTAssertEqual(r.status, 0, r.stderr)
        return file + [Compression.xz: ".xz", .zstd: ".zst", .gzip: ".gz"][format, default: ""]
    }

    /// A real ELF file: a shared library kreach itself links.
    func realELF() throws -> [UInt8] {
        for candidate in ["/usr/lib/x86_64-linux-gnu/liblzma.so.5", "/lib/x86_64-linux-gnu/liblzma.so.5", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
        where FileBytes.exists(candidate) {
            let bytes = try FileBytes.read(candidate)
            XCTAssertEqual(Array(bytes.prefix(4)), [0x7f, 0x45, 0x4c, 0x46])
            return bytes
        }
        throw XCTSkip(Host.skipReason("no liblzma.so.5 or libc.so.6 to use as a real ELF file"))
    }

    func testRealCompressedFilesComeBackByteForByteWhateverThePath() throws {
        let original = try realELF()
        let file = scratch + "/" + hostile
        try FileBytes.write(original, to: file)
        for format in Compression.allCases {
            let compressed = try compress(file, format)
            XCTAssertEqual(Compression(path: compressed), format)
            let bytes = try ByteBuffer.readDecompressing(compressed, limit: KernelFile.moduleObjectLimit)
            XCTAssertEqual(bytes.count, original.count, "\(format)")
            XCTAssertTrue(bytes.toArray() == original, "\(format): bytes differ")
        }
        // Nothing in the name ran: no sentinel anywhere a shell would have made one.
        for dir in [scratch, FileManager.default.currentDirectoryPath, "/"] {
            for n in 1...4 { XCTAssertFalse(FileBytes.exists(dir + "/SENTINEL\(n)"), "\(dir)/SENTINEL\(n)") }
        }
        // An uncompressed .ko is read as it is.
        XCTAssertTrue(try ByteBuffer.readDecompressing(file, limit: KernelFile.moduleObjectLimit).toArray() == original)
    }

    func testCorruptTruncatedOrForeignInputIsAOneLineError() throws {
        let original = try realELF()
        let file = scratch + "/m.ko"
        try FileBytes.write(original, to: file)
        for format in Compression.allCases {
            let good = try FileBytes.read(try compress(file, format))
            let name = [Compression.xz: "xz", .zstd: "zstd", .gzip: "gzip"][format, default: ""]
            func failure(_ bytes: [UInt8]) throws -> FileError? {
                let path = scratch + "/bad.ko." + (format == .zstd ? "zst" : format == .xz ? "xz" : "gz")
                try? FileManager.default.removeItem(atPath: path)
                try FileBytes.write(bytes, to: path)
                do {
                    _ = try ByteBuffer.readDecompressing(path, limit: KernelFile.moduleObjectLimit)
                    return nil
                } catch {
                    XCTAssertEqual("\(error)".split(separator: "\n").count, 1, "\(error)")
                    XCTAssertTrue("\(error)".hasPrefix(path + ": "), "\(error)")
                    return error
                }
            }
            guard case let .badCompression(_, f, reason)? = try failure(Array(good.prefix(good.count / 2))) else { return XCTFail("\(format): truncated accepted") }
            XCTAssertEqual(f, format)
            XCTAssertEqual(reason, "\(name) data is truncated")
            var flipped = good
            for i in stride(from: good.count / 3, to: good.count / 3 + 64, by: 1) { flipped[i] ^= 0x55 }
            guard case let .badCompression(_, _, corrupt)? = try failure(flipped) else { return XCTFail("\(format): corrupt accepted") }
            XCTAssertTrue(corrupt.hasPrefix("\(name) data is corrupt"), "\(format): \(corrupt)")
            guard case let .badCompression(_, _, foreign)? = try failure(Array("not compressed at all\n".utf8)) else { return XCTFail("\(format): foreign accepted") }
            XCTAssertTrue(foreign.hasPrefix(format == .xz ? "not xz data" : "\(name) data is"), "\(format): \(foreign)")
        }
    }

    /// 16 MiB of zeros compress to a few KiB: decompressed under a 1 MiB cap they stop at the cap; exactly
    /// 1 MiB is accepted.
    func testDecompressionBombStopsAtTheCap() throws {
        let cap = FileLimit("module object", bytes: 1 << 20)
        for (size, accepted) in [(16 << 20, false), (1 << 20, true), ((1 << 20) + 1, false)] {
            let file = scratch + "/zeros-\(size).ko"
            let fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            XCTAssertGreaterThanOrEqual(fd, 0)
            XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
            close(fd)
            for format in Compression.allCases {
                let compressed = try compress(file, format)
                XCTAssertLessThan(try FileBytes.read(compressed).count, 64 << 10, "\(format)")
                if accepted {
                    XCTAssertEqual(try ByteBuffer.readDecompressing(compressed, limit: cap).count, size, "\(format)")
                } else {
                    XCTAssertThrowsError(try ByteBuffer.readDecompressing(compressed, limit: cap), "\(format) \(size)") {
                        XCTAssertEqual("\($0)", "\(compressed): module object, decompressed, is larger than its 1 MiB cap")
                    }
                }
            }
        }
    }

    /// The running kernel's own compressed modules, when it has some: the same bytes as `xz -dc` / `zstd -dc`
    /// give, and each an ELF file.
    func testRunningKernelsCompressedModulesDecompressAsTheToolsDo() throws {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let tree = "/lib/modules/" + release
        guard FileBytes.isDirectory(tree) else { throw XCTSkip(Host.skipReason("no \(tree): this kernel has no module tree")) }
        let dep = String(decoding: try FileBytes.read(tree + "/modules.dep", limit: KernelFile.moduleDependenciesLimit), as: UTF8.self)
        var checked = 0
        for format in [Compression.xz, .zstd] {
            let suffix = format == .xz ? ".ko.xz:" : ".ko.zst:"
            for line in dep.split(separator: "\n").filter({ $0.contains(suffix) }).prefix(5) {
                let path = tree + "/" + line[..<(line.firstIndex(of: ":") ?? line.endIndex)]
                // The tool decompresses a copy next to itself (m.ko.xz -> m.ko).
                let copy = scratch + "/m" + suffix.dropLast()
                try? FileManager.default.removeItem(atPath: copy)
                try? FileManager.default.removeItem(atPath: scratch + "/m.ko")
                try FileBytes.write(try FileBytes.read(path, limit: KernelFile.moduleObjectLimit), to: copy)
                let tool = try Run.command(["timeout", "120", format == .xz ? "xz" : "zstd", "-d", "-q", "-k", copy])
                XCTAssertEqual(tool.status, 0, tool.stderr)
                let bytes = try ByteBuffer.readDecompressing(path, limit: KernelFile.moduleObjectLimit).toArray()
                XCTAssertTrue(bytes == (try FileBytes.read(scratch + "/m.ko", limit: KernelFile.moduleObjectLimit)), path)
                XCTAssertEqual(Array(bytes.prefix(4)), [0x7f, 0x45, 0x4c, 0x46], path)
                checked += 1
            }
        }
        if checked == 0 { throw XCTSkip(Host.skipReason("\(tree) has no .ko.xz or .ko.zst modules")) }
    }
}
