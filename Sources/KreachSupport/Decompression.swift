import CKreach
import Glibc

/// A compressed file format kreach decompresses in process (liblzma, libzstd, zlib): no decompressor is
/// run, so no path ever reaches a shell or another program.
public enum Compression: String, CaseIterable, Sendable {
    case xz, zstd, gzip

    /// The format a file name's suffix says (.xz, .zst, .gz); nil for none.
    public init?(path: String) {
        if path.hasSuffix(".xz") { self = .xz } else if path.hasSuffix(".zst") { self = .zstd } else if path.hasSuffix(".gz") { self = .gzip } else { return nil }
    }

    var code: Int32 {
        switch self {
        case .xz: return Int32(KREACH_XZ)
        case .zstd: return Int32(KREACH_ZSTD)
        case .gzip: return Int32(KREACH_GZIP)
        }
    }
}

extension ByteBuffer {
    /// Reads the regular file at `path` (under `limit`) and, when its name says it is compressed (.xz,
    /// .zst, .gz), decompresses it in process; the decompressed bytes are held to `limit` too, so a
    /// decompression bomb stops at the cap.
    public static func readDecompressing(_ path: String, limit: FileLimit) throws(FileError) -> ByteBuffer {
        let input = try mapOrRead(path, limit: limit)
        guard let format = Compression(path: path) else { return input }
        return try decompress(input, format, source: path, limit: limit)
    }

    /// Decompresses `input` into an anonymous reservation of `limit` bytes (MAP_NORESERVE: backed only
    /// where written). Corrupt, truncated or foreign data is `FileError.badCompression`; more than `limit`
    /// bytes of output is `FileError.tooLarge`.
    public static func decompress(_ input: ByteBuffer, _ format: Compression, source: String, limit: FileLimit) throws(FileError) -> ByteBuffer {
        // One byte more than the cap: output that fills it is over the cap, output of exactly the cap is not.
        let reserve = limit.bytes + 1
        let p = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let storage = p, storage != MAP_FAILED else { throw .system(SystemError("reserve memory for", source, errno: errno)) }
        var length = 0
        var reason = [CChar](repeating: 0, count: 256)
        let status = kreach_decompress(format.code, input.pointer, input.count, storage, reserve, &length, &reason, reason.count)
        if status == KREACH_DECOMPRESS_OK && length <= limit.bytes {
            return ByteBuffer.adopting(storage, count: length, mappedLength: reserve)
        }
        munmap(storage, reserve)
        if status == KREACH_DECOMPRESS_CORRUPT {
            throw .badCompression(path: source, format: format, reason: String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        throw .tooLarge(path: source, limit: FileLimit(limit.kind + ", decompressed,", bytes: limit.bytes))
    }
}

extension Compression {
    /// `bytes` as one zstd frame (libzstd, its default level 3: fast enough for every loaded module under TCG); nil if libzstd fails.
    public static func zstdCompress(_ bytes: UnsafeRawBufferPointer, level: Int32 = 3) -> [UInt8]? {
        let bound = kreach_zstd_bound(bytes.count)
        var out = [UInt8](repeating: 0, count: bound)
        let length = out.withUnsafeMutableBytes { kreach_compress_zstd(bytes.baseAddress, bytes.count, $0.baseAddress, bound, level) }
        guard length > 0 else { return nil }
        out.removeSubrange(length...)
        return out
    }
}
