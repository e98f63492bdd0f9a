import KernelSymbols
import KreachSupport

/// A kernel image that can't be used: not a bzImage or vmlinux, a damaged header, a payload that doesn't
/// decompress to an ELF file.
public struct KernelImageError: Error, CustomStringConvertible, Sendable, Equatable {
    public let source: String
    public let message: String
    public init(source: String, message: String) {
        self.source = source
        self.message = message
    }
    public var description: String { "kernel image \(source): \(message)" }
}

/// The kernel's own image on disk (`/boot/vmlinuz-RELEASE`): the bzImage's compressed payload decompressed
/// in process to the vmlinux ELF it holds (or a vmlinux ELF as is), its loadable segments readable by
/// link-time address. A running kernel freed its init code; the image still has it, and its data holds
/// the initial values of every global (function pointers in ops tables) at link-time addresses.
public struct KernelImage: Sendable {
    /// A vmlinuz file: 128 MiB.
    public static let fileLimit = FileLimit("kernel image", bytes: 128 << 20)
    /// A decompressed vmlinux: 1 GiB.
    public static let payloadLimit = FileLimit("kernel image payload", bytes: 1 << 30)

    /// One PT_LOAD segment: `bytes[offset..<offset+size]` is memory at `address` (link time).
    public struct Segment: Sendable {
        public let address: UInt64
        public let offset: Int
        public let size: Int
        public var range: Range<UInt64> { address..<(address + UInt64(size)) }
    }

    public let source: String
    /// `e_machine` of the vmlinux.
    public let machine: UInt16
    /// The vmlinux ELF file's bytes.
    public let bytes: [UInt8]
    /// Loadable segments at kernel addresses, by address (x86-64's per-CPU segment, linked at 0, is left out).
    public let segments: [Segment]
    /// The vmlinux's GNU build-id (NT_GNU_BUILD_ID in its note sections), which the running kernel shows
    /// in /sys/kernel/notes.
    public let buildID: [UInt8]?
    /// Link-time address of the first kernel segment: `_text` on x86-64.
    public var textAddress: UInt64 { segments.first?.address ?? 0 }

    /// Reads a vmlinuz (bzImage) or vmlinux file at `path`.
    public init(path: String) throws {
        let file = try ByteBuffer.mapOrRead(path, limit: KernelImage.fileLimit)
        try self.init(file: file, source: path)
    }

    /// An image from the bytes of a vmlinuz or vmlinux file.
    public init(file: ByteBuffer, source: String) throws {
        let vmlinux = try KernelImage.payload(of: file, source: source)
        try self.init(vmlinux: vmlinux, source: source)
    }

    init(vmlinux: [UInt8], source: String) throws {
        let elf: ELFFile
        do { elf = try ELFFile(bytes: vmlinux, source: source) } catch {
            throw KernelImageError(source: source, message: "the payload is not a vmlinux: \(error.message)")
        }
        self.source = source
        self.machine = elf.machine
        self.bytes = vmlinux
        buildID = elf.sections.lazy.filter { $0.type == 7 }.compactMap { ELFFile.gnuBuildID(inNotes: Array(elf.contents($0))) }.first
        // PT_LOAD segments at kernel addresses (the top half), within the file.
        var segments: [Segment] = []
        for s in elf.segments where s.type == 1 && s.vaddr >> 63 == 1 && s.fileSize > 0 {
            guard s.offset <= UInt64(vmlinux.count), s.fileSize <= UInt64(vmlinux.count) - s.offset,
                  s.vaddr &+ s.fileSize > s.vaddr else {
                throw KernelImageError(source: source, message: "segment at \(Hex.address(s.vaddr)) runs past the end of the vmlinux")
            }
            segments.append(Segment(address: s.vaddr, offset: Int(s.offset), size: Int(s.fileSize)))
        }
        guard !segments.isEmpty else { throw KernelImageError(source: source, message: "the vmlinux has no loadable kernel segment") }
        self.segments = segments.sorted { $0.address < $1.address }
    }

    /// The bytes at link-time `range`, when one segment holds all of them.
    public func bytes(_ range: Range<UInt64>) -> ArraySlice<UInt8>? {
        guard let s = segments.last(where: { $0.address <= range.lowerBound }),
              range.upperBound <= s.address + UInt64(s.size) else { return nil }
        let start = s.offset + Int(range.lowerBound - s.address)
        return bytes[start..<(start + range.count)]
    }

    /// The little-endian 64-bit word at link-time `address`.
    public func word(at address: UInt64) -> UInt64? {
        guard let b = bytes(address..<(address + 8)) else { return nil }
        return b.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    // MARK: bzImage

    /// x86 boot protocol (Documentation/arch/x86/boot.rst): the setup header's magic "HdrS" at 0x202,
    /// setup_sects at 0x1f1, payload_offset/payload_length at 0x248/0x24c (protocol 2.08+), relative to the
    /// protected-mode code after the (setup_sects + 1) 512-byte setup sectors.
    static func payload(of file: ByteBuffer, source: String) throws -> [UInt8] {
        let b = file.bytes
        if b.count >= 4 && b[0] == 0x7f && b[1] == 0x45 && b[2] == 0x4c && b[3] == 0x46 { return Array(b) }
        func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        guard b.count >= 0x250, u32(0x202) == 0x5372_6448 else {
            throw KernelImageError(source: source, message: "neither a bzImage (no \"HdrS\" setup header) nor a vmlinux ELF file")
        }
        let version = u16(0x206)
        guard version >= 0x208 else {
            throw KernelImageError(source: source, message: "boot protocol \(version >> 8).\(version & 0xff) predates payload_offset (2.08)")
        }
        let setupSectors = b[0x1f1] == 0 ? 4 : Int(b[0x1f1])
        let start = (setupSectors + 1) * 512 + u32(0x248)
        let length = u32(0x24c)
        guard start < b.count, length >= 8, length <= b.count - start else {
            throw KernelImageError(source: source, message: "payload (offset \(start), \(length) bytes) runs past the end of the \(b.count)-byte file")
        }
        let payload = UnsafeRawBufferPointer(rebasing: b[start..<(start + length)])
        let format: Compression
        var streamLength = length
        switch (payload[0], payload[1], payload[2], payload[3]) {
        case (0xfd, 0x37, 0x7a, 0x58): format = .xz; streamLength -= 4    // arch/x86/boot/compressed: size_append
        case (0x28, 0xb5, 0x2f, 0xfd): format = .zstd; streamLength -= 4
        case (0x1f, 0x8b, _, _): format = .gzip
        default:
            let magic = payload.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
            throw KernelImageError(source: source, message: "payload compression with magic \(magic) is not one kreach decompresses (xz, zstd, gzip)")
        }
        let compressed = ByteBuffer(Array(payload.prefix(streamLength)))
        let out: ByteBuffer
        do { out = try ByteBuffer.decompress(compressed, format, source: source, limit: payloadLimit) } catch {
            throw KernelImageError(source: source, message: "payload: \(error.reason)")
        }
        if format != .gzip {
            let p = payload.count - 4
            let appended = Int(payload[p]) | Int(payload[p + 1]) << 8 | Int(payload[p + 2]) << 16 | Int(payload[p + 3]) << 24
            guard appended == out.count else {
                throw KernelImageError(source: source, message: "payload decompressed to \(out.count) bytes, its trailer says \(appended)")
            }
        }
        return out.toArray()
    }
}
