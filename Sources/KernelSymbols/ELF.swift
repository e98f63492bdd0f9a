import KreachSupport

/// A malformed ELF file.
public struct ELFError: Error, CustomStringConvertible, Sendable {
    public let source: String
    public let message: String
    public var description: String { "ELF \(source): \(message)" }
}

/// A minimal, bounds-checked ELF64 little-endian reader: section headers, the symbol table, and
/// program headers (for /proc/kcore). Every offset and count is checked against the file's size.
public struct ELFFile {
    public struct Section { public let name: String; public let type: UInt32; public let offset: Int; public let size: Int; public let link: Int; public let info: Int; public let entrySize: Int }
    public struct Symbol { public let name: String; public let value: UInt64; public let size: UInt64; public let type: UInt8; public let binding: UInt8; public let section: UInt16 }
    public struct Relocation { public let offset: UInt64; public let symbol: Int; public let type: UInt32; public let addend: Int64 }
    public struct Segment { public let type: UInt32; public let offset: UInt64; public let vaddr: UInt64; public let fileSize: UInt64; public var paddr: UInt64 = 0; public var memorySize: UInt64 = 0 }

    public let source: String
    /// `e_machine` (EM_X86_64 = 62): `Arch(elfMachine:source:)` says what it means.
    public let machine: UInt16
    let bytes: [UInt8]
    public let sections: [Section]
    public let segments: [Segment]

    public init(bytes: [UInt8], source: String) throws(ELFError) {
        self.source = source
        self.bytes = bytes
        guard bytes.count >= 64, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw ELFError(source: source, message: "not an ELF file")
        }
        guard bytes[4] == 2, bytes[5] == 1 else { throw ELFError(source: source, message: "not 64-bit little-endian ELF") }
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * UInt64($1)) } }
        machine = UInt16(u16(18))
        func table(_ offset: UInt64, _ count: Int, _ entry: Int, _ what: String) throws(ELFError) -> Int {
            guard offset <= UInt64(bytes.count), entry > 0, count <= bytes.count / entry,
                  Int(offset) + count * entry <= bytes.count else {
                throw ELFError(source: source, message: "\(what) table (offset \(offset), \(count) × \(entry)) runs past the end (\(bytes.count) bytes)")
            }
            return Int(offset)
        }
        // Program headers.
        var segments: [Segment] = []
        let phnum = u16(56), phentsize = u16(54)
        if phnum > 0 {
            let ph = try table(u64(32), phnum, phentsize, "program header")
            guard phentsize >= 56 else { throw ELFError(source: source, message: "program header entries of \(phentsize) bytes") }
            for i in 0..<phnum {
                let o = ph + i * phentsize
                segments.append(Segment(type: u32(o), offset: u64(o + 8), vaddr: u64(o + 16), fileSize: u64(o + 32),
                                        paddr: u64(o + 24), memorySize: u64(o + 40)))
            }
        }
        self.segments = segments
        // Section headers.
        var raw: [(nameOff: Int, Section)] = []
        let shnum = u16(60), shentsize = u16(58), shstrndx = u16(62)
        if shnum > 0 {
            let sh = try table(u64(40), shnum, shentsize, "section header")
            guard shentsize >= 64 else { throw ELFError(source: source, message: "section header entries of \(shentsize) bytes") }
            for i in 0..<shnum {
                let o = sh + i * shentsize
                let off = u64(o + 24), size = u64(o + 32)
                let type = u32(o + 4)
                // SHT_NOBITS (8) occupies no file bytes.
                if type != 8 {
                    guard off <= UInt64(bytes.count), size <= UInt64(bytes.count) - off else {
                        throw ELFError(source: source, message: "section \(i) (offset \(off), size \(size)) runs past the end")
                    }
                }
                raw.append((Int(u32(o)), Section(name: "", type: type, offset: Int(min(off, UInt64(bytes.count))),
                                                 size: type == 8 ? 0 : Int(size), link: Int(u32(o + 40)), info: Int(u32(o + 44)), entrySize: Int(clamping: u64(o + 56)))))
            }
        }
        var sections: [Section] = []
        let names = shstrndx < raw.count ? raw[shstrndx].1 : nil
        for (nameOff, s) in raw {
            var name = ""
            if let names { name = ELFFile.string(bytes, names.offset, names.size, nameOff) ?? "" }
            sections.append(Section(name: name, type: s.type, offset: s.offset, size: s.size, link: s.link, info: s.info, entrySize: s.entrySize))
        }
        self.sections = sections
    }

    static func string(_ bytes: [UInt8], _ start: Int, _ size: Int, _ offset: Int) -> String? {
        guard offset >= 0, offset < size else { return nil }
        var end = start + offset
        while end < start + size && bytes[end] != 0 { end += 1 }
        guard end < start + size else { return nil }
        return String(decoding: bytes[(start + offset)..<end], as: UTF8.self)
    }

    /// Every entry of .symtab in table order (index i is symbol i; unnamed ones have name ""),
    /// with names from its linked string table.
    public func symbols() throws(ELFError) -> [Symbol] {
        guard let symtab = sections.first(where: { $0.type == 2 }) else { return [] }
        guard symtab.link < sections.count else { throw ELFError(source: source, message: "symbol table links a missing string table") }
        let strtab = sections[symtab.link]
        let entry = 24
        var result: [Symbol] = []
        result.reserveCapacity(symtab.size / entry)
        var o = symtab.offset
        while o + entry <= symtab.offset + symtab.size {
            let nameOff = Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24
            let info = bytes[o + 4]
            let shndx = UInt16(bytes[o + 6]) | UInt16(bytes[o + 7]) << 8
            let value = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[o + 8 + $1]) << (8 * UInt64($1)) }
            let size = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[o + 16 + $1]) << (8 * UInt64($1)) }
            let name = ELFFile.string(bytes, strtab.offset, strtab.size, nameOff) ?? ""
            result.append(Symbol(name: name, value: value, size: size, type: info & 0xf, binding: info >> 4, section: shndx))
            o += entry
        }
        return result
    }

    /// RELA entries that apply to section `target` (from the SHT_RELA section whose sh_info is `target`).
    public func relocations(for target: Int) -> [Relocation] {
        var result: [Relocation] = []
        for rela in sections where rela.type == 4 && rela.info == target {
            var o = rela.offset
            while o + 24 <= rela.offset + rela.size {
                func u64(_ p: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[p + $1]) << (8 * UInt64($1)) } }
                let info = u64(o + 8)
                result.append(Relocation(offset: u64(o), symbol: Int(info >> 32), type: UInt32(truncatingIfNeeded: info), addend: Int64(bitPattern: u64(o + 16))))
                o += 24
            }
        }
        return result
    }

    /// The contents of a section (empty for NOBITS).
    public func contents(_ section: Section) -> ArraySlice<UInt8> {
        bytes[section.offset..<(section.offset + section.size)]
    }

    /// The GNU build-id (NT_GNU_BUILD_ID descriptor) from .note.gnu.build-id, if present.
    public var buildID: [UInt8]? {
        guard let note = sections.first(where: { $0.name == ".note.gnu.build-id" }) else { return nil }
        return ELFFile.noteDescriptor(Array(contents(note)))
    }

    /// NT_GNU_BUILD_ID's descriptor (type 3, name "GNU") among the notes in `bytes`: a vmlinux's .notes
    /// section, or /sys/kernel/notes, which holds that section of the running kernel. At most 64 notes.
    public static func gnuBuildID(inNotes bytes: [UInt8]) -> [UInt8]? {
        func u32(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24 }
        var at = 0
        for _ in 0..<64 {
            guard at + 12 <= bytes.count else { return nil }
            let namesz = u32(at), descsz = u32(at + 4), type = u32(at + 8)
            guard namesz < 256, descsz < 1 << 16 else { return nil }
            let name = at + 12, desc = name + (namesz + 3) / 4 * 4, end = desc + (descsz + 3) / 4 * 4
            guard desc + descsz <= bytes.count else { return nil }
            if type == 3 && namesz == 4 && Array(bytes[name..<(name + 4)]) == [0x47, 0x4e, 0x55, 0] && descsz > 0 {
                return Array(bytes[desc..<(desc + descsz)])
            }
            at = end
        }
        return nil
    }

    /// One NT_GNU_BUILD_ID note holding `id`, as /sys/kernel/notes shows it.
    public static func gnuBuildIDNote(_ id: [UInt8]) -> [UInt8] {
        func u32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(v >> (8 * $0) & 0xff) } }
        return u32(4) + u32(id.count) + u32(3) + [0x47, 0x4e, 0x55, 0] + id + [UInt8](repeating: 0, count: (4 - id.count % 4) % 4)
    }

    /// The descriptor of the first note in `bytes` (namesz, descsz, type, name padded to 4, desc).
    public static func noteDescriptor(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 12 else { return nil }
        func u32(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24 }
        let namesz = u32(0), descsz = u32(4)
        let start = 12 + (namesz + 3) / 4 * 4
        guard namesz < 256, descsz < 1024, start + descsz <= bytes.count else { return nil }
        return Array(bytes[start..<(start + descsz)])
    }
}
