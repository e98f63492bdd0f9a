import CKreach
import KreachSupport

/// makedumpfile's flattened format (what makedumpfile -F and qemu's compressed dumps write to a pipe): a
/// 4096-byte header ("makedumpfile", type 1), then records of a big-endian (offset, size) pair and `size`
/// bytes to place at `offset` of the seekable dump, ended by (-1, -1). Reassembled on the fly: one scan of
/// the record headers, then reads go to the records covering the requested range.
final class FlattenedFile: DumpBytes {
    struct Record { let offset: UInt64; let size: UInt64; let fileOffset: UInt64 }
    let file: DumpFile
    let records: [Record]
    var path: String { file.path }
    static let headerSize: UInt64 = 4096

    init(file: DumpFile) throws {
        self.file = file
        let header = try file.read(0, count: 32, what: "the flattened header")
        guard header.be(16, as: Int64.self) == 1 else {
            throw VMCoreError.malformed(path: file.path, what: "flattened header type \(header.be(16, as: Int64.self)), not 1 (TYPE_FLAT_HEADER)")
        }
        var records: [Record] = []
        var at = FlattenedFile.headerSize
        while true {
            let h = try file.read(at, count: 16, what: "a flattened record header (no end marker)")
            let offset = h.be(0, as: Int64.self), size = h.be(8, as: Int64.self)
            if offset == -1 && size == -1 { break }
            guard offset >= 0, size >= 0, UInt64(size) <= UInt64(file.size) - min(UInt64(file.size), at + 16) else {
                throw VMCoreError.truncated(path: file.path, what: "a flattened record of \(size) bytes", offset: at)
            }
            records.append(Record(offset: UInt64(offset), size: UInt64(size), fileOffset: at + 16))
            at += 16 + UInt64(size)
        }
        // Later records win where they overlap (a header rewritten at the end): a stable sort keeps file order.
        self.records = records.enumerated().sorted { ($0.element.offset, $0.offset) < ($1.element.offset, $1.offset) }.map(\.element)
    }

    func read(_ offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var covered = [Bool](repeating: false, count: count)
        let end = offset + UInt64(count)
        // The first record that could overlap: records are sorted by offset and none is larger than the file.
        var lo = 0, hi = records.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if records[mid].offset + records[mid].size <= offset && records[mid].offset + UInt64(file.size) <= offset { lo = mid + 1 } else { hi = mid }
        }
        for r in records[lo...] {
            if r.offset >= end { break }
            let s = max(r.offset, offset), e = min(r.offset + r.size, end)
            guard s < e else { continue }
            let bytes = try file.read(r.fileOffset + (s - r.offset), count: Int(e - s), what: what())
            out.replaceSubrange(Int(s - offset)..<Int(e - offset), with: bytes)
            for i in Int(s - offset)..<Int(e - offset) { covered[i] = true }
        }
        guard !covered.contains(false) else { throw VMCoreError.truncated(path: file.path, what: what(), offset: offset) }
        return out
    }
}

/// The kdump-compressed format (makedumpfile's diskdump.h): a `disk_dump_header` ("KDUMP   "), a
/// `kdump_sub_header` (phys_base, VMCOREINFO's place), two bitmaps of max_mapnr bits (pages that are RAM;
/// pages that were dumped), then one `page_desc` per dumped page in pfn order and the pages' data.
final class KdumpDump: PhysicalDump {
    let file: any DumpBytes
    let blockSize: Int
    let maxPFN: UInt64
    let ramBitmap: [UInt8]
    let dumpedBitmap: [UInt8]
    /// Dumped pages before each 64-page group (index = pfn / 64): the page_desc index of a pfn.
    let dumpedBefore: [UInt32]
    let descriptorsOffset: UInt64
    let vmcoreinfo: [UInt8]?
    let physBase: UInt64?
    let format: String
    let machine: DumpMachine
    /// disk_dump_header.status has DUMP_DH_COMPRESSED_INCOMPLETE: makedumpfile stopped early (a full disk),
    /// so page descriptors past what it wrote are zero.
    let incomplete: Bool
    var cache = PageCache(limit: 4096)

    /// page_desc.flags (diskdump_mod.h DUMP_DH_COMPRESSED_*): how one page was compressed.
    enum Method: UInt32, CustomStringConvertible {
        case zlib = 0x1, lzo = 0x2, snappy = 0x4, zstd = 0x20
        /// Every DUMP_DH_COMPRESSED_* bit (DUMP_DH_COMPRESSED_INCOMPLETE, 0x8, is a header flag).
        static let all: UInt32 = 0x27

        /// The one method `flags` names; nil for an uncompressed page or for several bits at once.
        init?(flags: UInt32) { self.init(rawValue: flags & Method.all) }

        var description: String {
            switch self {
            case .zlib: return "zlib"
            case .lzo: return "lzo"
            case .snappy: return "snappy"
            case .zstd: return "zstd"
            }
        }

        var code: Int32 {
            switch self {
            case .zlib: return Int32(KREACH_ZLIB)
            case .lzo: return Int32(KREACH_LZO)
            case .snappy: return Int32(KREACH_SNAPPY)
            case .zstd: return Int32(KREACH_ZSTD)
            }
        }
    }

    init(file: any DumpBytes) throws {
        self.file = file
        let path = file.path
        let h = try file.read(0, count: 464, what: "the kdump header")
        guard h.starts(with: Array("KDUMP   ".utf8)) else {
            throw VMCoreError.notADump(path: path, magic: String(decoding: h.prefix(8), as: UTF8.self))
        }
        let version = h.le(8, as: Int32.self)
        // disk_dump_header: signature[8], header_version, new_utsname (6 × 65: machine at 12 + 4 × 65), timestamp, status.
        machine = .uname(String(decoding: h[272..<337].prefix { $0 != 0 }, as: UTF8.self))
        incomplete = h.le(424, as: UInt32.self) & 0x8 != 0
        blockSize = Int(h.le(428, as: Int32.self))
        let subHeaderBlocks = Int(h.le(432, as: Int32.self)), bitmapBlocks = Int(h.le(436, as: UInt32.self))
        guard blockSize >= 4096, blockSize <= 1 << 20, blockSize & (blockSize - 1) == 0, subHeaderBlocks >= 0, subHeaderBlocks < 1 << 20 else {
            throw VMCoreError.malformed(path: path, what: "kdump header: block size \(blockSize), \(subHeaderBlocks) sub-header blocks")
        }
        let sub = try file.read(UInt64(blockSize), count: 104, what: "the kdump sub-header")
        physBase = sub.le(0, as: UInt64.self)
        var maxPFN = UInt64(h.le(440, as: UInt32.self))
        if version >= 6 { maxPFN = sub.le(96, as: UInt64.self) }
        self.maxPFN = maxPFN
        let infoOffset = sub.le(32, as: UInt64.self), infoSize = sub.le(40, as: UInt64.self)
        if version >= 3 && infoOffset != 0 && infoSize > 0 {
            guard infoSize < 1 << 20 else { throw VMCoreError.malformed(path: path, what: "a VMCOREINFO of \(infoSize) bytes") }
            vmcoreinfo = try file.read(infoOffset, count: Int(infoSize), what: "the VMCOREINFO")
        } else { vmcoreinfo = nil }
        let bitmapBytes = Int(maxPFN + 7) / 8
        let bitmapOffset = UInt64((1 + subHeaderBlocks) * blockSize)
        let half = bitmapBlocks * blockSize / 2
        guard bitmapBytes <= half, half < 1 << 32 else {
            throw VMCoreError.malformed(path: path, what: "kdump bitmaps of \(half) bytes for \(maxPFN) pages")
        }
        ramBitmap = try file.read(bitmapOffset, count: bitmapBytes, what: "the kdump RAM bitmap")
        dumpedBitmap = try file.read(bitmapOffset + UInt64(half), count: bitmapBytes, what: "the kdump dumped-page bitmap")
        var before: [UInt32] = []
        before.reserveCapacity(bitmapBytes / 8 + 1)
        var total: UInt32 = 0
        for group in stride(from: 0, to: bitmapBytes, by: 8) {
            before.append(total)
            for b in dumpedBitmap[group..<min(group + 8, bitmapBytes)] { total += UInt32(b.nonzeroBitCount) }
        }
        dumpedBefore = before
        descriptorsOffset = UInt64((1 + subHeaderBlocks + bitmapBlocks) * blockSize)
        format = file is FlattenedFile ? "kdump-compressed (flattened)" : "kdump-compressed"
    }

    func bit(_ map: [UInt8], _ pfn: UInt64) -> Bool { pfn < maxPFN && map[Int(pfn / 8)] & (1 << (pfn % 8)) != 0 }

    func page(_ pfn: UInt64) throws -> [UInt8] { try cache.page(pfn) { try load(pfn) } }

    /// Page `pfn` from the file, decompressed.
    func load(_ pfn: UInt64) throws -> [UInt8] {
        let physical = pfn * UInt64(blockSize)
        guard bit(ramBitmap, pfn) || bit(dumpedBitmap, pfn) else { throw MissingPage(physical: physical, reason: .notInDump) }
        guard bit(dumpedBitmap, pfn) else { throw MissingPage(physical: physical, reason: .excluded) }
        var index = UInt64(dumpedBefore[Int(pfn / 64)])
        for p in (pfn / 64 * 64)..<pfn where bit(dumpedBitmap, p) { index += 1 }
        let d = try file.read(descriptorsOffset + index * 24, count: 24, what: "the page descriptor of pfn \(pfn)")
        let offset = d.le(0, as: UInt64.self), size = Int(d.le(8, as: UInt32.self)), flags = d.le(12, as: UInt32.self)
        if incomplete && offset == 0 && size == 0 { throw MissingPage(physical: physical, reason: .notWritten) }
        guard size > 0, size <= blockSize else {
            throw VMCoreError.malformed(path: file.path, what: "pfn \(pfn): a page of \(size) bytes")
        }
        let data = try file.read(offset, count: size, what: "the data of pfn \(pfn)")
        var bytes: [UInt8]
        if let method = Method(flags: flags) {
            // Each method's library (zlib's uncompress, lzo1x_decompress_safe, snappy_uncompress, one zstd frame).
            bytes = [UInt8](repeating: 0, count: blockSize)
            var length = 0
            var reason = [CChar](repeating: 0, count: 128)
            let status = data.withUnsafeBytes { i in bytes.withUnsafeMutableBytes { o in
                kreach_decompress(method.code, i.baseAddress, i.count, o.baseAddress, o.count, &length, &reason, reason.count)
            } }
            guard status == KREACH_DECOMPRESS_OK, length == blockSize else {
                let why = status == KREACH_DECOMPRESS_TOO_LARGE ? "more than a page" : status == KREACH_DECOMPRESS_OK ? "\(length) bytes" : String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                throw VMCoreError.malformed(path: file.path, what: "pfn \(pfn): \(method) page does not decompress to a page (\(why))")
            }
        } else if flags & Method.all == 0 {
            guard size == blockSize else { throw VMCoreError.malformed(path: file.path, what: "pfn \(pfn): an uncompressed page of \(size) bytes") }
            bytes = data
        } else {
            throw VMCoreError.malformed(path: file.path, what: "pfn \(pfn): page descriptor flags \(Hex.short(UInt64(flags))) name more than one compression")
        }
        return bytes
    }

    func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        let within = Int(address % UInt64(blockSize))
        precondition(within + count <= blockSize)
        return Array(try page(address / UInt64(blockSize))[within..<(within + count)])
    }
}
