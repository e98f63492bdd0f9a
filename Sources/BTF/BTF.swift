import CKreach
import Glibc
import KreachSupport

/// One BTF object: vmlinux's BTF, or a module's split BTF whose base is vmlinux.
///
/// Parsing walks the type section once, recording where each `struct btf_type` starts (as libbpf
/// does) and building a name index; types are decoded on demand by `type(_:)`. Every length, count,
/// type id and string offset read from the bytes is checked before it is used; a problem is a
/// `BTFError` naming the byte offset. Nothing here knows about the live kernel.
public final class BTF: @unchecked Sendable {
    /// "vmlinux" or the module's name.
    public let objectName: String
    /// The base BTF for split BTF (vmlinux for a module), nil for base BTF.
    public let base: BTF?
    /// The first type id defined by this object (1 for base BTF).
    public let firstID: TypeID
    /// Version flags from the header.
    public let headerLength: Int

    let buffer: ByteBuffer
    let typeStart: Int
    let typeEnd: Int
    let stringStart: Int
    let stringLength: Int
    /// The first string offset that belongs to this object (the base's total string length for split BTF).
    let stringBase: Int
    /// Per-kind sizes from the layout section (newer 32-byte header), indexed by kind number.
    let kindLayout: [(infoSize: Int, elementSize: Int)]?
    /// Byte offset of each local type's `struct btf_type`.
    let typeOffsets: [UInt32]
    /// Open-addressing index keyed by name string offset: local index + 1 per slot, 0 for empty.
    let nameSlots: [UInt32]
    let nameShift: Int
    private var cachedPointerSize: UInt32?
    /// Offsets of names in this object's strings, remembered for split BTF's repeated base lookups.
    private var occurrenceCache: [[UInt8]: [Int]] = [:]

    /// Size of a pointer on the BTF's target (the size of `long`; 8 when the BTF doesn't say), found once.
    public var pointerSize: UInt32 {
        if let base { return base.pointerSize }
        if let cachedPointerSize { return cachedPointerSize }
        let size = BTF.findPointerSize(self)
        cachedPointerSize = size
        return size
    }

    /// Parses BTF bytes. `base` must be given for split BTF (module files in /sys/kernel/btf).
    public init(buffer: ByteBuffer, name: String, base: BTF? = nil) throws(BTFError) {
        self.objectName = name
        self.base = base
        self.buffer = buffer
        let n = buffer.count
        guard n >= BTFLayout.headerMinimum else {
            throw BTFError(name, "file has \(n) bytes, too short for a BTF header (\(BTFLayout.headerMinimum))", offset: 0)
        }
        let magic = buffer.u16(0)
        if magic == BTFLayout.magic.byteSwapped {
            throw BTFError(name, "big-endian BTF is not supported", offset: 0)
        }
        guard magic == BTFLayout.magic else {
            throw BTFError(name, "bad magic 0x\(String(magic, radix: 16)), expected 0xeb9f (not a BTF file)", offset: 0)
        }
        let version = buffer.u8(2)
        guard version == 1 else { throw BTFError(name, "unsupported BTF version \(version)", offset: 2) }
        let hdrLen = Int(buffer.u32(4))
        guard hdrLen >= BTFLayout.headerMinimum, hdrLen <= n else {
            throw BTFError(name, "header length \(hdrLen) is outside 24...\(n)", offset: 4)
        }
        // Header fields past the ones we know must be zero (as libbpf requires).
        let known = hdrLen >= BTFLayout.headerWithLayout ? BTFLayout.headerWithLayout : BTFLayout.headerMinimum
        var i = known
        while i < hdrLen {
            if buffer.u8(i) != 0 { throw BTFError(name, "header has unknown non-zero fields", offset: i) }
            i += 1
        }
        headerLength = hdrLen

        func section(_ field: Int, _ what: String) throws(BTFError) -> (Int, Int) {
            let off = Int(buffer.u32(field)), len = Int(buffer.u32(field + 4))
            let start = hdrLen + off  // u32 + u32 + u32: cannot overflow Int
            guard start <= n, len <= n - start else {
                throw BTFError(name, "\(what) section (offset \(off), length \(len)) runs past the end of the \(n)-byte file", offset: field)
            }
            return (start, len)
        }
        let (tStart, tLen) = try section(8, "type")
        let (sStart, sLen) = try section(16, "string")
        guard (tStart - hdrLen) % 4 == 0 else { throw BTFError(name, "type section is not 4-byte aligned", offset: 8) }
        guard tStart + tLen <= sStart || sStart + sLen <= tStart || tLen == 0 || sLen == 0 else {
            throw BTFError(name, "type and string sections overlap", offset: 8)
        }
        typeStart = tStart
        typeEnd = tStart + tLen
        stringStart = sStart
        stringLength = sLen

        if let base {
            guard base.base == nil else { throw BTFError(name, "base BTF \(base.objectName) is itself split BTF") }
            stringBase = base.stringLength
            firstID = base.firstID + TypeID(base.typeOffsets.count)
        } else {
            stringBase = 0
            firstID = 1
            guard sLen > 0, buffer.u8(sStart) == 0 else {
                throw BTFError(name, "string section must start with an empty string", offset: sStart)
            }
        }
        // A NUL at the very end makes every in-range string offset a terminated string.
        if sLen > 0, buffer.u8(sStart + sLen - 1) != 0 {
            throw BTFError(name, "string section is not NUL-terminated", offset: sStart + sLen - 1)
        }

        if hdrLen >= BTFLayout.headerWithLayout {
            let (lStart, lLen) = try section(24, "layout")
            guard lLen % 4 == 0 else { throw BTFError(name, "layout section length \(lLen) is not a multiple of 4", offset: 28) }
            var entries: [(infoSize: Int, elementSize: Int)] = []
            var p = lStart
            while p < lStart + lLen {
                entries.append((Int(buffer.u8(p)), Int(buffer.u8(p + 1))))
                p += 4
            }
            kindLayout = lLen > 0 ? entries : nil
        } else {
            kindLayout = nil
        }

        typeOffsets = try BTF.walkTypes(buffer, typeStart, typeEnd, kindLayout, firstID, name)
        (nameSlots, nameShift) = BTF.buildNameIndex(buffer: buffer, offsets: typeOffsets)
    }

    /// The most of one BTF file held in memory: 512 MiB (vmlinux BTF is a few MiB).
    public static let fileLimit = FileLimit("BTF", bytes: 512 << 20)

    /// Reads and parses a BTF file (a regular file of at most `fileLimit`).
    public convenience init(path: String, name: String, base: BTF? = nil) throws {
        let bytes = try ByteBuffer.mapOrRead(path, limit: BTF.fileLimit)
        try self.init(buffer: bytes, name: name, base: base)
    }

    /// Bytes after `struct btf_type` for each kind number: a fixed part (-1: unknown kind) and a part per vlen.
    static let fixedExtra: [Int8] = {
        var t = [Int8](repeating: -1, count: 128)
        for k in BTFKind.allCases where k != .unknown {
            switch k {
            case .int, .variable, .declTag: t[Int(k.rawValue)] = 4
            case .array: t[Int(k.rawValue)] = 12
            default: t[Int(k.rawValue)] = 0
            }
        }
        return t
    }()

    static let perElement: [Int8] = {
        var t = [Int8](repeating: 0, count: 128)
        for k in [BTFKind.structure, .union, .dataSection, .enum64] { t[Int(k.rawValue)] = 12 }
        for k in [BTFKind.enumeration, .functionProto] { t[Int(k.rawValue)] = 8 }
        return t
    }()

    /// Records the offset of every type record; checks each record fits in the section.
    private static func walkTypes(_ b: ByteBuffer, _ start: Int, _ end: Int,
                                  _ layout: [(infoSize: Int, elementSize: Int)]?, _ firstID: TypeID,
                                  _ name: String) throws(BTFError) -> [UInt32] {
        var offsets: [UInt32] = []
        offsets.reserveCapacity((end - start) / 24)
        var off = start
        let limit = Int(Int32.max) - Int(firstID)
        let fixedExtra = BTF.fixedExtra, perElement = BTF.perElement
        while off < end {
            let id = Int(firstID) + offsets.count
            guard end - off >= BTFLayout.typeHeaderSize else {
                throw BTFError(name, "type id \(id): truncated record (12 bytes needed, \(end - off) left)", offset: off)
            }
            let info = b.u32(off + 4)
            let kindNumber = Int((info >> 24) & BTFLayout.kindMask)
            let vlen = Int(info & BTFLayout.vlenMask)
            var extra: Int
            let fixed = fixedExtra[kindNumber]
            if fixed >= 0 {
                extra = Int(fixed) + vlen * Int(perElement[kindNumber])
            } else {
                guard let layout, kindNumber < layout.count, kindNumber != 0 else {
                    throw BTFError(name, "type id \(id): unknown kind \(kindNumber) (no layout section describes it)", offset: off + 4)
                }
                extra = layout[kindNumber].infoSize + vlen * layout[kindNumber].elementSize
            }
            guard extra <= end - off - BTFLayout.typeHeaderSize else {
                throw BTFError(name, "type id \(id): kind \(kindNumber) with vlen \(vlen) needs \(extra) more bytes, \(end - off - BTFLayout.typeHeaderSize) left in the type section", offset: off)
            }
            guard offsets.count < limit else { throw BTFError(name, "too many types", offset: off) }
            offsets.append(UInt32(truncatingIfNeeded: off))
            off += BTFLayout.typeHeaderSize + extra
        }
        return offsets
    }

    /// Slot of a string offset in the name index (multiplicative hashing).
    @inline(__always)
    static func slot(ofNameOffset nameOff: UInt32, shift: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(nameOff) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(shift))
    }

    /// Builds the name index: an open-addressing table keyed by each named type's string offset.
    /// Reading the name bytes is left to lookups, which find the offsets a name occurs at.
    private static func buildNameIndex(buffer: ByteBuffer, offsets: [UInt32]) -> (slots: [UInt32], shift: Int) {
        let p = buffer.pointer
        var bits = 4
        while (1 << bits) < offsets.count * 2 { bits += 1 }
        let shift = 64 - bits
        let mask = (1 << bits) - 1
        var slots = [UInt32](repeating: 0, count: 1 << bits)
        slots.withUnsafeMutableBufferPointer { table in
            offsets.withUnsafeBufferPointer { offs in
                for local in 0..<offs.count {
                    let nameOff = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: Int(offs[local]), as: UInt32.self))
                    if nameOff == 0 { continue }
                    var slot = slot(ofNameOffset: nameOff, shift: shift)
                    while table[slot] != 0 { slot = (slot + 1) & mask }
                    table[slot] = UInt32(local + 1)
                }
            }
        }
        return (slots, shift)
    }

    // MARK: - Counts and raw access

    /// Number of types this object defines itself.
    public var localCount: Int { typeOffsets.count }
    /// One past the last valid type id (base types, void and local types included).
    public var endID: TypeID { firstID + TypeID(typeOffsets.count) }
    /// The type ids this object defines.
    public var localIDs: Range<TypeID> { firstID..<endID }

    /// The object (this one or its base) that defines `id`.
    public func owner(of id: TypeID) -> BTF {
        if id < firstID, let base { return base.owner(of: id) }
        return self
    }

    /// Refuses an id past the last type. `what` names the referrer in the error; it is built only then
    /// (this check runs for every member and parameter decoded).
    @inline(__always)
    func checkID(_ id: TypeID, at offset: Int?, _ what: @autoclosure () -> String) throws(BTFError) {
        guard id < endID else {
            throw BTFError(objectName, "\(what()) refers to type id \(id), but only ids below \(endID) exist", offset: offset)
        }
    }

    /// Byte offset of a local type's record, nil for void and for ids of the base.
    func recordOffset(_ id: TypeID) -> Int? {
        guard id >= firstID, id < endID else { return nil }
        return Int(typeOffsets[Int(id - firstID)])
    }

    /// The kind of `id` without decoding the whole record.
    public func kind(of id: TypeID) throws(BTFError) -> BTFKind {
        if id == 0 { return .unknown }
        if id < firstID, let base { return try base.kind(of: id) }
        guard let off = recordOffset(id) else { try checkID(id, at: nil, "lookup"); return .unknown }
        return BTFKind(rawValue: UInt8((buffer.u32(off + 4) >> 24) & BTFLayout.kindMask)) ?? .unknown
    }

    /// The string at a (global) string offset, checked against both string sections.
    public func string(at offset: UInt32, usedAt byteOffset: Int? = nil) throws(BTFError) -> String {
        let off = Int(offset)
        if off < stringBase, let base { return try base.string(at: offset, usedAt: byteOffset) }
        let rel = off - stringBase
        guard rel < stringLength, let s = buffer.cString(at: stringStart + rel, end: stringStart + stringLength) else {
            throw BTFError(objectName, "string offset \(offset) is outside the string section (\(stringBase + stringLength) bytes)", offset: byteOffset)
        }
        return s
    }

    /// Whether the string at a (global) string offset is exactly `name`, compared in place (no String is
    /// made); an offset outside the string sections is the error `string(at:usedAt:)` gives.
    func string(at offset: UInt32, usedAt byteOffset: Int?, equals name: UnsafeRawBufferPointer) throws(BTFError) -> Bool {
        let off = Int(offset)
        if off < stringBase, let base { return try base.string(at: offset, usedAt: byteOffset, equals: name) }
        let rel = off - stringBase
        guard rel >= 0, rel < stringLength else { _ = try string(at: offset, usedAt: byteOffset); return false }
        // The name and its NUL must both lie in the section.
        guard name.count < stringLength - rel else { return false }
        let p = buffer.pointer + stringStart + rel
        guard p.load(fromByteOffset: name.count, as: UInt8.self) == 0 else { return false }
        guard let n = name.baseAddress, !name.isEmpty else { return true }
        return memcmp(p, n, name.count) == 0
    }

    /// The name of `id` ("" when anonymous).
    public func name(of id: TypeID) throws(BTFError) -> String {
        if id == 0 { return "void" }
        if id < firstID, let base { return try base.name(of: id) }
        guard let off = recordOffset(id) else { try checkID(id, at: nil, "lookup"); return "" }
        return try string(at: buffer.u32(off), usedAt: off)
    }

    // MARK: - Name index

    /// Ids of the local types named exactly `name`, in id order (any kind).
    ///
    /// Finds every string offset whose string is `name` (each occurrence of `name\0` in this object's
    /// string section and, for split BTF, the base's), then the types that use those offsets.
    public func lookup(_ name: String) -> [TypeID] {
        guard !name.isEmpty, !name.utf8.contains(0) else { return [] }
        let needle = Array(name.utf8) + [0]
        var found: [TypeID] = []
        if let base { for off in base.occurrences(of: needle) { probe(UInt32(off), into: &found) } }
        for off in occurrences(of: needle) { probe(UInt32(stringBase + off), into: &found) }
        return found.sorted()
    }

    /// Section-relative offsets of `needle` in the strings, remembered (each module asks its base again, and
    /// an expression evaluated again, by `watch` or a walk, looks its types up again).
    func occurrences(of needle: [UInt8]) -> [Int] {
        if let cached = occurrenceCache[needle] { return cached }
        var all: [Int] = []
        forEachOccurrence(of: needle) { all.append($0) }
        occurrenceCache[needle] = all
        return all
    }

    /// Calls `body` with the section-relative offset of every occurrence of `needle` (a name and its NUL).
    func forEachOccurrence(of needle: [UInt8], _ body: (Int) -> Void) {
        let start = buffer.pointer + stringStart
        needle.withUnsafeBytes { n in
            guard let nb = n.baseAddress else { return }
            var from = 0
            while from < stringLength {
                guard let hit = kreach_memmem(start + from, stringLength - from, nb, n.count) else { return }
                let rel = UnsafeRawPointer(hit) - start
                body(rel)
                from = rel + 1
            }
        }
    }

    private func probe(_ nameOff: UInt32, into found: inout [TypeID]) {
        guard nameOff != 0 else { return }
        let mask = nameSlots.count - 1
        var slot = BTF.slot(ofNameOffset: nameOff, shift: nameShift)
        while nameSlots[slot] != 0 {
            let local = Int(nameSlots[slot] - 1)
            if buffer.u32(Int(typeOffsets[local])) == nameOff { found.append(firstID + TypeID(local)) }
            slot = (slot + 1) & mask
        }
    }
}
