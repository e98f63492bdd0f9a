import Memory
import BTF
import CKreach
import Glibc
import KernelObject
import KernelSource
import KernelSymbols
import KreachSupport
import Probing
import ScriptGen
import TypeInference

/// One fuzz target: a parser (and what is built on it) fed arbitrary bytes. A harness must return
/// normally on every input; a bad input is expected to end in a thrown error, which is ignored.
enum FuzzTarget: String, CaseIterable {
    case btf, kallsyms, modules, elf, tracepoint, expr, script, image, vmcore, page, typecache, ko

    /// Whether the harness needs the unpacked Debian capture (KREACH_FUZZ_KERNEL).
    var needsCapture: Bool { self == .btf || self == .expr || self == .script || self == .ko }

    func run(_ data: [UInt8], _ context: FuzzContext?) {
        switch self {
        case .btf: Harness.btf(data, context)
        case .kallsyms: Harness.kallsyms(data)
        case .modules: Harness.modules(data)
        case .elf: Harness.elf(data)
        case .tracepoint: Harness.tracepoint(data)
        case .expr: Harness.expression(data, context)
        case .script: Harness.script(data, context)
        case .image: Harness.image(data)
        case .vmcore: Harness.vmcore(data)
        case .page: Harness.page(data)
        case .typecache: Harness.typeCache(data)
        case .ko: Harness.moduleTypes(data, context)
        }
    }
}

/// What the capture-based harnesses share, loaded once: vmlinux BTF (the base of split BTF) and an
/// evaluator over the capture with no kernel memory (as `kreach gen --kernel DIR` has).
final class FuzzContext {
    let kernel: Kernel
    let vmlinux: BTF
    let evaluator: Evaluator

    init(directory: String) throws {
        kernel = try Kernel(source: .snapshot(directory))
        evaluator = try Evaluator(kernel: kernel, memory: UnavailableMemory(reason: "fuzzing: no kernel memory"))
        vmlinux = evaluator.types.vmlinux
        // Load kallsyms and /proc/modules now, not inside the first input.
        _ = try kernel.symbols()
    }
}

enum Harness {
    /// Types decoded and rendered per input: enough to reach every kind, bounded so one input stays fast.
    static let typeLimit = 128

    /// BTF as base BTF, and as split BTF over the capture's vmlinux (how module BTF is read).
    static func btf(_ data: [UInt8], _ context: FuzzContext?) {
        let buffer = ByteBuffer(data)
        if let btf = try? BTF(buffer: buffer, name: "fuzz") { exercise(btf) }
        if let base = context?.vmlinux, let btf = try? BTF(buffer: buffer, name: "fuzz", base: base) { exercise(btf) }
    }

    static func exercise(_ btf: BTF) {
        _ = try? btf.validateAll()
        _ = btf.pointerSize
        // A name lookup in split BTF searches the base's strings (megabytes for vmlinux): a few per input.
        var lookups = 0
        for id in btf.localIDs.prefix(typeLimit) {
            guard let type = try? btf.type(id) else { continue }
            _ = try? btf.renderC(id)
            _ = btf.describe(id)
            _ = try? btf.cDeclaration(id, "x")
            _ = try? btf.size(of: id)
            _ = try? btf.alignment(of: id)
            _ = try? btf.resolve(id)
            _ = try? btf.skipModifiers(id)
            _ = try? btf.rawTarget(id)
            _ = btf.owner(of: id)
            if type.kind == .function { _ = try? btf.prototype(ofFunction: id) }
            if type.kind == .functionProto { _ = try? btf.prototypeTypes(id) }
            if !type.name.isEmpty, lookups < 4 {
                lookups += 1
                _ = btf.lookup(type.name)
            }
        }
    }

    /// /proc/kallsyms text, then the lookups `sym`, `show` and `where` make on it.
    static func kallsyms(_ data: [UInt8]) {
        guard let k = try? Kallsyms(buffer: ByteBuffer(data), source: "fuzz") else { return }
        let table = SymbolTable(kallsyms: k, modules: [])
        _ = k.indexes(matching: Glob("*"))
        _ = k.indexes(matching: Glob("*"), module: Glob("*"))
        for i in 0..<min(k.count, 16) {
            let s = k.symbol(i)
            _ = (s.section, s.baseName, s.isColdFragment, s.isPseudoModule, s.typeLetter)
            _ = k.indexes(named: s.name, module: s.module)
            _ = k.indexes(baseOf: s.name)
            _ = k.indexes(matching: Glob(s.name))
            _ = k.nearest(to: s.address)
            _ = k.nextAddress(after: s.address)
            _ = table.describe(address: s.address &+ 1)
            for query in [s.name, s.choosingForm(), s.addressForm(), s.choosingForm(.backtick), s.moduleName + ":" + s.name, s.name + "*"] {
                _ = try? table.resolve(query)
                if let q = try? SymbolQuery.parse(query) { _ = table.find(q) }
            }
        }
    }

    /// A fixed kallsyms for module address lookups.
    nonisolated(unsafe) static let moduleKallsyms: Kallsyms? = try? Kallsyms(buffer: ByteBuffer(Array("""
        ffffffff81000000 T _stext
        ffffffffc0000000 t brd_alloc\t[brd]
        ffffffffc0001000 d rd_size\t[brd]

        """.utf8)), source: "fixed")

    /// /proc/modules text, and the module ranges the symbol table builds from it.
    static func modules(_ data: [UInt8]) {
        guard let list = try? ModuleList.parse(String(decoding: data, as: UTF8.self), source: "fuzz") else { return }
        for m in list { _ = m.range }
        guard let k = moduleKallsyms else { return }
        let table = SymbolTable(kallsyms: k, modules: list)
        for m in list.prefix(64) {
            _ = table.describe(address: m.address)
            _ = table.describe(address: m.address &+ m.size / 2)
            _ = try? table.resolve(m.name + ":rd_size")
        }
    }

    /// A .ko: sections, symbols, relocations, notes, then what `show`/`where` take from a module object.
    /// A kernel image (bzImage setup header, compressed payload, the vmlinux's segments).
    static func image(_ data: [UInt8]) {
        guard let image = try? KernelImage(file: ByteBuffer(data), source: "fuzz") else { return }
        for s in image.segments.prefix(16) {
            _ = image.bytes(s.range)
            _ = image.word(at: s.address)
            _ = image.word(at: s.range.upperBound &- 4)
        }
    }

    /// A vmcore (ELF, kdump-compressed, flattened): headers, VMCOREINFO, and reads of the addresses its
    /// VMCOREINFO names (page-table walks, page descriptors, each page decompressor), from one scratch file
    /// rewritten per input.
    static func vmcore(_ data: [UInt8]) {
        guard let file = vmcoreFile, ftruncate(file.fd, 0) == 0 else { return }
        let written = data.withUnsafeBytes { pwrite(file.fd, $0.baseAddress, $0.count, 0) }
        guard written == data.count, let dump = try? VMCoreMemory(path: file.path) else { return }
        for (_, address) in dump.info.symbols.sorted(by: { $0.key < $1.key }).prefix(16) {
            _ = try? dump.read(address, count: 16)
            _ = try? dump.readPhysical(address & 0xfff_ffff_f000, count: 8)
        }
        for page in 0..<UInt64(8) { _ = try? dump.readPhysical(page << 12, count: 4096) }
    }

    /// The vmcore target's scratch file (removed at once: reached through /proc/self/fd).
    static let vmcoreFile: (fd: Int32, path: String)? = {
        var template = Array("/tmp/kreach-fuzz-vmcore.XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { return nil }
        unlink(template)
        return (fd, "/proc/self/fd/\(fd)")
    }()

    /// A kdump-compressed page's data: the first byte picks the method (zlib, lzo, snappy, zstd), the rest is
    /// decompressed into one 4 KiB page as `KdumpDump` does.
    static func page(_ data: [UInt8]) {
        guard let selector = data.first else { return }
        let methods = [KREACH_ZLIB, KREACH_LZO, KREACH_SNAPPY, KREACH_ZSTD]
        let input = Array(data.dropFirst())
        var out = [UInt8](repeating: 0, count: 4096)
        var length = 0
        var reason = [CChar](repeating: 0, count: 128)
        _ = input.withUnsafeBytes { i in out.withUnsafeMutableBytes { o in
            kreach_decompress(Int32(methods[Int(selector) % methods.count]), i.baseAddress, i.count, o.baseAddress, o.count, &length, &reason, reason.count)
        } }
        precondition(length <= out.count)
    }

    /// A type cache file, as is and with a valid checksum appended (so inputs reach the entries), read
    /// for the build-id its header names; what decodes must encode and decode to the same entries.
    static func typeCache(_ data: [UInt8]) {
        let id = data.count > 17 ? Array(data[17..<min(data.count, 17 + Int(data[16]))]) : []
        let sum = TypeCacheFormat.checksum(data[...])
        let sealed = data + (0..<8).map { UInt8(sum >> (8 * $0) & 0xff) }
        _ = try? TypeCacheFormat.decode(data, buildID: id, source: "fuzz")
        guard let entries = try? TypeCacheFormat.decode(sealed, buildID: id, source: "fuzz") else { return }
        let again = try? TypeCacheFormat.decode(TypeCacheFormat.encode(buildID: id, entries: Array(entries.values)), buildID: id, source: "fuzz")
        precondition(again == entries, "type cache: encode/decode round trip differs")
    }

    static func elf(_ data: [UInt8]) {
        guard let elf = try? ELFFile(bytes: data, source: "fuzz") else { return }
        _ = elf.buildID
        for (i, section) in elf.sections.enumerated() {
            _ = elf.contents(section)
            _ = elf.relocations(for: i)
            if section.type == 7 { _ = ELFFile.noteDescriptor(Array(elf.contents(section))) }  // SHT_NOTE
        }
        // Each section loaded at its own 1 MiB, as /sys/module/<m>/sections gives them.
        var bases: [String: UInt64] = [:]
        for (i, s) in elf.sections.enumerated() where !s.name.isEmpty { bases[s.name] = 0xffff_ffff_c000_0000 &+ UInt64(i) << 20 }
        guard let object = try? ModuleObject(module: "fuzz", elf: elf, sectionBases: bases) else { return }
        for s in object.symbols.filter({ $0.type == 1 }).prefix(16) {
            _ = object.objects(named: s.name)
            _ = object.size(of: s.name)
        }
        // struct kernel_param (40 bytes: ops at 16, arg at 32) and kernel_param_ops (get at 16) on x86-64.
        _ = object.parameterTypes(paramSize: 40, opsOffset: 16, argOffset: 32, getOffset: 16)
        _ = object.parameterTypes(paramSize: 40, opsOffset: 16, argOffset: 32, getOffset: nil)
    }

    /// A .ko as a snapshot carries it: its `ko/index` line format, then module type inference over it
    /// (`ModuleTypeInferrer`: sections placed, relocations applied, every function decoded, initial function
    /// pointers matched) with the capture's vmlinux BTF for prototypes.
    static func moduleTypes(_ data: [UInt8], _ context: FuzzContext?) {
        _ = try? SnapshotModuleObjects.parseIndex(String(decoding: data.prefix(4096), as: UTF8.self), source: "fuzz")
        guard let context, let elf = try? ELFFile(bytes: data, source: "fuzz"),
              let inferrer = try? ModuleTypeInferrer(module: "fuzz", elf: elf, btf: context.vmlinux) else { return }
        _ = inferrer.inferAll()
    }

    /// A tracepoint's format file, searched as `where TYPE` does.
    static func tracepoint(_ data: [UInt8]) {
        for type in ["struct sk_buff", "int", "const char", "u8"] {
            _ = WhereAnalyzer.tracepointFields(format: data, declaring: type, system: "fuzz", event: "fuzz")
        }
    }

    /// An expression, parsed and evaluated against the capture's metadata (no kernel memory).
    static func expression(_ data: [UInt8], _ context: FuzzContext?) {
        let text = String(decoding: data, as: UTF8.self)
        _ = try? ExpressionParser.parse(text)
        guard let evaluator = context?.evaluator else { return }
        _ = try? evaluator.evaluate(text)
        evaluator.clearWarnings()
    }

    /// A bpftrace script naming kernel globals, expanded against the capture (`kreach gen --kernel DIR`).
    static func script(_ data: [UInt8], _ context: FuzzContext?) {
        guard let context else { return }
        guard let generator = try? ScriptGenerator(kernel: context.kernel, capture: CaptureBuilder(kernel: context.kernel, bpftrace: nil)) else { return }
        _ = try? generator.expand(String(decoding: data, as: UTF8.self), file: "fuzz.bt")
        context.evaluator.clearWarnings()
    }
}
