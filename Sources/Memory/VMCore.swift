import Arch
import CKreach
import Glibc
import KernelSymbols
import KreachSupport

/// A crashed (or dumped) kernel's memory from its vmcore: ELF (kdump's /proc/vmcore as saved, makedumpfile
/// -E, qemu's dump-guest-memory) or kdump-compressed (makedumpfile -c/-l/-p/-z, qemu's -z/-l/-s), seekable
/// or flattened. Virtual addresses go through the dump's own page tables (VMCOREINFO's init_top_pgt or
/// swapper_pg_dir), so direct-map, vmalloc and module addresses alike read what the crashed kernel saw.
public final class VMCoreMemory: KernelMemory {
    public let name = "vmcore"
    public let path: String
    public let info: VMCoreInfo
    public let arch: Arch
    let physical: any PhysicalDump
    let walker: any PageTableWalker
    /// The physical address of the top-level page table, and the number of levels (4, or 5 with LA57).
    public let root: UInt64
    public let levels: Int
    public let pageSize: Int
    /// Virtual page → physical page, or the reason it isn't mapped.
    var translations: [UInt64: Result<UInt64, TranslationFault>] = [:]

    /// The format of the file: what `read` goes through.
    public var format: String { physical.format }

    public init(path: String, arch: Arch = .x86_64) throws {
        self.path = path
        self.arch = arch
        let file = try DumpFile(path: path)
        let magic = try file.read(0, count: min(16, file.size), what: "the file's header")
        if magic.starts(with: [0x7f, 0x45, 0x4c, 0x46]) {
            physical = try ELFDump(file: file)
        } else if magic.starts(with: Array("makedumpfile".utf8)) {
            physical = try KdumpDump(file: try FlattenedFile(file: file))
        } else if magic.starts(with: Array("KDUMP   ".utf8)) {
            physical = try KdumpDump(file: file)
        } else {
            throw VMCoreError.notADump(path: path, magic: magic.isEmpty ? "nothing (an empty file)" : magic.prefix(8).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " "))
        }
        switch physical.machine {
        case .elf(let m) where m != arch.elfMachine:
            throw VMCoreError.wrongArch(path: path, dump: "ELF machine \(m)", expected: "\(arch.name) (ELF machine \(arch.elfMachine))")
        case .uname(let m) where (try? Arch(unameMachine: m))?.elfMachine != arch.elfMachine:
            throw VMCoreError.wrongArch(path: path, dump: "\"\(Terminal.escaped(m, layout: false))\" (the kdump header's utsname.machine)", expected: arch.name)
        default: break
        }
        guard let note = physical.vmcoreinfo else {
            throw VMCoreError.noVMCoreInfo(path: path, hint: "a qemu dump carries it with -device vmcoreinfo and the guest's qemu_fw_cfg module loaded")
        }
        info = try VMCoreInfo(text: String(decoding: note, as: UTF8.self))
        guard let w = arch.pageTables, let imageBase = arch.kernelImageBase else {
            throw VMCoreError.unsupportedArch(path: path, arch: arch.name)
        }
        walker = w
        pageSize = info.pageSize ?? 4096
        guard let top = info.symbols["init_top_pgt"] ?? info.symbols["swapper_pg_dir"] else {
            throw VMCoreError.missingVMCoreInfo(path: path, key: "SYMBOL(init_top_pgt) or SYMBOL(swapper_pg_dir) (the kernel's page tables)")
        }
        guard let physBase = info.physBase ?? physical.physBase else {
            throw VMCoreError.missingVMCoreInfo(path: path, key: "NUMBER(phys_base)")
        }
        guard top >= imageBase else {
            throw VMCoreError.malformed(path: path, what: "the page-table root \(Hex.short(top)) is not in the kernel image")
        }
        root = top &- imageBase &+ physBase
        levels = info.fiveLevelPaging ? 5 : 4
    }

    /// The physical address `address` maps to in the dump's page tables.
    public func translate(_ address: UInt64) throws -> UInt64 {
        let mask = UInt64(pageSize - 1)
        let page = address & ~mask
        if let known = translations[page] { return try known.get() | (address & mask) }
        let result: Result<UInt64, TranslationFault>
        do {
            let p = try walker.translate(page, root: root, levels: levels) { entryAddress in
                let bytes = try physical.read(entryAddress, count: 8)
                return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            }
            result = .success(p)
        } catch let fault as TranslationFault {
            result = .failure(fault)
        }
        if translations.count > 1 << 16 { translations.removeAll(keepingCapacity: true) }
        translations[page] = result
        return try result.get() | (address & mask)
    }

    /// `count` bytes at physical `address` (within one page); a page the dump lacks is a `MissingPage`.
    public func readPhysical(_ address: UInt64, count: Int) throws -> [UInt8] {
        try physical.read(address, count: count)
    }

    public func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var done = 0
        while done < count {
            let (a, overflow) = address.addingReportingOverflow(UInt64(done))
            guard !overflow else { throw MemoryFault(address: address, count: count, reason: "the range wraps around") }
            let inPage = min(count - done, pageSize - Int(a & UInt64(pageSize - 1)))
            do {
                out += try physical.read(try translate(a), count: inPage)
            } catch let fault as TranslationFault {
                throw MemoryFault(address: a, count: inPage, reason: fault.reason)
            } catch let missing as MissingPage {
                throw MemoryFault(address: a, count: inPage, reason: missing.description)
            }
            done += inPage
        }
        return out
    }

    /// What to say about `current` (each CPU's task), filled in by whoever knows the kernel's symbols.
    public var explainCurrent: (() -> String)?

    public func currentTask() throws -> UInt64 {
        throw MemoryError.noCurrentInDump(explainCurrent?() ?? "")
    }
}

/// A physical page the dump doesn't hold: outside every dumped range, or excluded (filtered) by the dumper.
public struct MissingPage: Error, CustomStringConvertible, Sendable {
    public enum Reason: Sendable { case notInDump, excluded, notWritten }
    public let physical: UInt64
    public let reason: Reason
    public var description: String {
        switch reason {
        case .notInDump: return "physical \(Hex.short(physical)) is not in the dump"
        case .excluded: return "physical \(Hex.short(physical)) was excluded from the dump (filtered when it was saved)"
        case .notWritten: return "physical \(Hex.short(physical)) was not written: the dump is incomplete (its header says the dumper stopped early)"
        }
    }
}

/// The architecture a dump's own header names.
enum DumpMachine: Sendable {
    /// ELF e_machine (EM_X86_64 = 62).
    case elf(UInt16)
    /// The kdump header's utsname.machine ("x86_64").
    case uname(String)
}

/// The physical memory a dump holds.
protocol PhysicalDump: AnyObject {
    var format: String { get }
    var machine: DumpMachine { get }
    /// The VMCOREINFO note's bytes, nil without one.
    var vmcoreinfo: [UInt8]? { get }
    /// phys_base from the dump's own header (kdump), when VMCOREINFO lacks it.
    var physBase: UInt64? { get }
    /// `count` bytes at physical `address` (within one page).
    func read(_ address: UInt64, count: Int) throws -> [UInt8]
}

/// A dump file read with pread; every structure read is checked against the file's end.
final class DumpFile {
    let path: String
    let fd: Int32
    let size: Int

    init(path: String) throws {
        self.path = path
        (fd, size) = try ByteBuffer.openRegular(path, limit: FileLimit("vmcore", bytes: Int.max))
    }

    deinit { close(fd) }

    /// `what` names the bytes in an error; it is built only then.
    func read(_ offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
        guard offset <= UInt64(size), UInt64(count) <= UInt64(size) - offset else {
            throw VMCoreError.truncated(path: path, what: what(), offset: offset)
        }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                if n < 0 { throw SystemError("read", path, errno: errno) }
                throw VMCoreError.truncated(path: path, what: what(), offset: offset)
            }
            done += n
        }
        return out
    }
}

/// Positional reads of a dump's logical bytes (a plain file, or a flattened one reassembled).
protocol DumpBytes: AnyObject {
    var path: String { get }
    func read(_ offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8]
}
extension DumpFile: DumpBytes {}

extension Array where Element == UInt8 {
    func le<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(truncatingIfNeeded: self[offset + i]) << (8 * i) }
        return v
    }
    func be<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v = v << 8 | T(truncatingIfNeeded: self[offset + i]) }
        return v
    }
}

/// Recently read pages of a dump by page frame number, at most `limit` of them (all dropped at once when full).
struct PageCache {
    let limit: Int
    var pages: [UInt64: [UInt8]] = [:]

    init(limit: Int) { self.limit = limit }

    /// The page `pfn`: the cached bytes, or `load`'s, kept when it succeeds (a failure is not cached).
    mutating func page(_ pfn: UInt64, load: () throws -> [UInt8]) rethrows -> [UInt8] {
        if let p = pages[pfn] { return p }
        let p = try load()
        if pages.count >= limit { pages.removeAll(keepingCapacity: true) }
        pages[pfn] = p
        return p
    }
}

/// An ELF vmcore: PT_LOAD segments by physical address (qemu writes VirtAddr 0), notes in PT_NOTE.
final class ELFDump: PhysicalDump {
    let format = "ELF"
    let file: DumpFile
    let loads: [ELFFile.Segment]
    let vmcoreinfo: [UInt8]?
    let machine: DumpMachine
    var physBase: UInt64? { nil }
    /// Blocks of `blockSize` bytes read whole from PT_LOAD data: a walk reads a few bytes at a time, often
    /// from the same page (a struct's fields, page-table entries).
    var cache = PageCache(limit: 4096)
    static let blockSize: UInt64 = 4096

    init(file: DumpFile) throws {
        self.file = file
        let header = try file.read(0, count: 64, what: "the ELF header")
        let phoff = header.le(32, as: UInt64.self), phentsize = Int(header.le(54, as: UInt16.self))
        let phnum = Int(header.le(56, as: UInt16.self))
        guard header[4] == 2, header[5] == 1 else { throw VMCoreError.malformed(path: file.path, what: "not a 64-bit little-endian ELF file") }
        machine = .elf(header.le(18, as: UInt16.self))
        guard phnum != 0xffff else { throw VMCoreError.malformed(path: file.path, what: "more than 65534 segments (PN_XNUM) are not supported") }
        guard phentsize >= 56, phoff < 1 << 32 else { throw VMCoreError.malformed(path: file.path, what: "program headers of \(phentsize) bytes at \(phoff)") }
        // At least the 64-byte header, whose e_shnum is cleared: only program headers are read (qemu adds
        // sections past them), and program headers may start inside the header (e_phoff < 64).
        var head = try file.read(0, count: max(64, Int(phoff) + phnum * phentsize), what: "the program headers")
        head[60] = 0; head[61] = 0
        let elf = try ELFFile(bytes: head, source: file.path)
        loads = elf.segments.filter { $0.type == 1 }.sorted { $0.paddr < $1.paddr }
        var info: [UInt8]? = nil
        for note in elf.segments where note.type == 4 {
            guard note.fileSize < 16 << 20 else { throw VMCoreError.malformed(path: file.path, what: "a PT_NOTE of \(note.fileSize) bytes") }
            let bytes = try file.read(note.offset, count: Int(note.fileSize), what: "the PT_NOTE segment")
            if let d = ELFDump.note(named: "VMCOREINFO", in: bytes) { info = d }
        }
        vmcoreinfo = info
    }

    /// The descriptor of the note called `name` in a run of ELF notes.
    static func note(named name: String, in bytes: [UInt8]) -> [UInt8]? {
        var o = 0
        while o + 12 <= bytes.count {
            let namesz = Int(bytes.le(o, as: UInt32.self)), descsz = Int(bytes.le(o + 4, as: UInt32.self))
            let nameStart = o + 12, descStart = nameStart + (namesz + 3) / 4 * 4
            guard namesz <= bytes.count, descsz <= bytes.count, descStart + descsz <= bytes.count else { return nil }
            let noteName = bytes[nameStart..<(nameStart + namesz)].prefix { $0 != 0 }
            if Array(noteName) == Array(name.utf8) { return Array(bytes[descStart..<(descStart + descsz)]) }
            o = descStart + (descsz + 3) / 4 * 4
        }
        return nil
    }

    func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        guard let s = loads.last(where: { $0.paddr <= address }), address - s.paddr < max(s.memorySize, s.fileSize) else {
            throw MissingPage(physical: address, reason: .notInDump)
        }
        let within = address - s.paddr
        guard within + UInt64(count) <= s.fileSize else { throw MissingPage(physical: address, reason: .excluded) }
        // From the cache when the aligned block holding the range lies wholly in the segment's file data; a
        // block that can't be read whole (a truncated file) falls back to reading the range alone, as uncached.
        let block = address & ~(ELFDump.blockSize - 1), start = Int(address - block)
        if block >= s.paddr, block - s.paddr + ELFDump.blockSize <= s.fileSize, start + count <= Int(ELFDump.blockSize),
           let bytes = try? cache.page(block / ELFDump.blockSize, load: {
               try file.read(s.offset + (block - s.paddr), count: Int(ELFDump.blockSize), what: "physical \(Hex.short(block)) (PT_LOAD data)")
           }) {
            return Array(bytes[start..<(start + count)])
        }
        return try file.read(s.offset + within, count: count, what: "physical \(Hex.short(address)) (PT_LOAD data)")
    }
}
