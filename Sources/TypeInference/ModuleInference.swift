import Arch
import BTF
import KernelSymbols
import KreachSupport

/// Types of a module's globals inferred from the module's own code: its .ko file (the running module's,
/// by build-id), linked in process at made-up addresses so that the instruction decoder and the evidence
/// rules of vmlinux inference (`EvidenceCollector`, `TypeDecision`) read it like kernel text.
///
/// - Every section the module loads (PROGBITS, NOBITS; not debug info) gets its own page-aligned place
///   from `sectionsBase`; every undefined symbol (a vmlinux or other module's function or object) a
///   16-byte stub from `stubsBase`; both inside the top 2 GiB, where the kernel's code model puts
///   modules, so sign-extended 32-bit immediates (R_X86_64_32S) decode as addresses.
/// - The relocations of those sections are applied (`Arch.relocation`: S + A, or S + A - P), so a call
///   to `misc_register` lands on its stub, named, and a `mov $loop_misc, %rdi` holds loop_misc's place.
/// - Prototypes are looked up by name in the BTF given (the module's split BTF reaches vmlinux's too).
/// - A global's extent is its st_size in the .ko's symbol table: exact for the .ko itself (a live kernel
///   offers only the gap to the next kallsyms symbol).
/// - A global the code leaves untyped is typed by the function pointers in its initial data (relocations
///   against functions inside it): the one struct of exactly its size whose function-pointer members hold
///   them, each with the member's prototype, and nothing else at those places.
public final class ModuleTypeInferrer {
    public static let sectionsBase: UInt64 = 0xffff_ffff_c000_0000
    public static let stubsBase: UInt64 = 0xffff_ffff_b000_0000
    /// Bytes of sections linked: 256 MiB (a .ko is at most `KernelFile.moduleObjectLimit`).
    static let linkLimit: UInt64 = 256 << 20
    /// Undefined symbols given a stub: 1 Mi (16 MiB of made-up addresses).
    static let stubLimit = 1 << 20

    public let module: String
    public let elf: ELFFile
    public let btf: BTF
    let symbols: [ELFFile.Symbol]
    let decoder: any InstructionDecoder
    /// Link-time base of each linked section, by section index.
    let bases: [Int: UInt64]
    /// Relocated bytes of each linked PROGBITS section, by section index.
    let linked: [Int: [UInt8]]
    let functions: FunctionIndex
    /// Load addresses of the running module's sections by name (/sys/module/M/sections), when known.
    let loadBases: [String: UInt64]
    /// Relocations of the linked data sections that point at functions: section index → offset → name.
    let functionWords: [Int: [UInt64: String]]
    /// Link-time address of every named function and stub.
    let functionAddress: [String: UInt64]
    private var all: [String: InferredType]?

    /// Links `elf` (the module `module`'s .ko) with prototypes from `btf`.
    public init(module: String, elf: ELFFile, btf: BTF, loadBases: [String: UInt64] = [:]) throws {
        self.module = module
        self.elf = elf
        self.btf = btf
        self.loadBases = loadBases
        let arch = try Arch(elfMachine: elf.machine, source: elf.source)
        decoder = try makeDecoder(for: arch)
        let symbols = try elf.symbols()
        self.symbols = symbols
        // Section spans: NOBITS sections have no file size here; their objects say how far they reach.
        var span: [Int: UInt64] = [:]
        for (i, s) in elf.sections.enumerated() where (s.type == 1 || s.type == 8) && !s.name.hasPrefix(".debug") {
            span[i] = UInt64(s.size)
        }
        for s in symbols where span[Int(s.section)] != nil {
            span[Int(s.section)] = max(span[Int(s.section)] ?? 0, s.value &+ s.size)
        }
        var bases: [Int: UInt64] = [:]
        var next = ModuleTypeInferrer.sectionsBase
        for i in span.keys.sorted() {
            guard let n = span[i], n > 0 else { continue }
            guard n < ModuleTypeInferrer.linkLimit, next - ModuleTypeInferrer.sectionsBase + n < ModuleTypeInferrer.linkLimit else {
                throw KernelImageError(source: elf.source, message: "its sections are larger than \(ModuleTypeInferrer.linkLimit >> 20) MiB")
            }
            bases[i] = next
            next = (next + n + 0x1fff) & ~0xfff
        }
        self.bases = bases
        // Symbol addresses: defined ones in their linked section, undefined ones on stubs.
        var stubs: [String: UInt64] = [:]
        var address = [UInt64?](repeating: nil, count: symbols.count)
        var names: [UInt64: String] = [:]
        for (k, s) in symbols.enumerated() {
            if s.section == 0 {
                guard !s.name.isEmpty, stubs.count < ModuleTypeInferrer.stubLimit else { continue }
                let a = stubs[s.name] ?? ModuleTypeInferrer.stubsBase + UInt64(stubs.count) * 16
                stubs[s.name] = a
                address[k] = a
                names[a] = s.name
            } else if s.section == 0xfff1 {
                address[k] = s.value
            } else if let b = bases[Int(s.section)] {
                address[k] = b &+ s.value
                // Functions by their own names; module_init()/module_exit() aliases give way.
                if s.type == 2, !s.name.isEmpty, names[b &+ s.value] == nil || names[b &+ s.value] == "init_module" || names[b &+ s.value] == "cleanup_module" {
                    names[b &+ s.value] = s.name
                }
            }
        }
        // Apply the relocations of every linked PROGBITS section.
        var linked: [Int: [UInt8]] = [:]
        var words: [Int: [UInt64: String]] = [:]
        let little = arch.byteOrder == .little
        for (i, base) in bases where elf.sections[i].type == 1 {
            var bytes = Array(elf.contents(elf.sections[i]))
            for r in elf.relocations(for: i) {
                guard r.symbol < symbols.count, let s = address[r.symbol], let rel = arch.relocation(r.type), rel.form != .none,
                      r.offset <= UInt64(bytes.count), UInt64(rel.width) <= UInt64(bytes.count) - r.offset else { continue }
                let place = base &+ r.offset
                let value = rel.form == .absolute ? s &+ UInt64(bitPattern: r.addend) : s &+ UInt64(bitPattern: r.addend) &- place
                for b in 0..<rel.width {
                    let shift = UInt64(8 * (little ? b : rel.width - 1 - b))
                    bytes[Int(r.offset) + b] = UInt8(truncatingIfNeeded: value >> shift)
                }
                // A function's address stored in data (against its symbol or its section + addend): an
                // initial function pointer.
                if rel.form == .absolute, rel.width == arch.pointerSize, let name = names[value] {
                    words[i, default: [:]][r.offset] = name
                }
            }
            linked[i] = bytes
        }
        self.linked = linked
        functionWords = words
        functions = FunctionIndex(btf: btf, names: names)
        functionAddress = Dictionary(names.map { ($0.value, $0.key) }, uniquingKeysWith: min)
    }

    /// The .ko's own BTF (its .BTF section, split on `base`); nil when it has none.
    public static func ownBTF(of elf: ELFFile, module: String, base: BTF) throws -> BTF? {
        guard let s = elf.sections.first(where: { $0.name == ".BTF" }), s.size > 0 else { return nil }
        return try BTF(buffer: ByteBuffer(Array(elf.contents(s))), name: module, base: base)
    }

    /// The data objects (STT_OBJECT) of the .ko named `name`.
    func objects(named name: String) -> [Int] {
        symbols.indices.filter { symbols[$0].name == name && symbols[$0].type == 1 && bases[Int(symbols[$0].section)] != nil }
    }

    /// The type of the module's global `name` (its one data object of that name).
    public func infer(named name: String) throws -> InferredType {
        let found = objects(named: name)
        guard !found.isEmpty else { throw KernelImageError(source: elf.source, message: "no data object \(name) in the module's symbol table") }
        guard found.count == 1 else { throw KernelImageError(source: elf.source, message: "\(found.count) data objects are named \(name)") }
        if let known = inferAll()[name] { return known }
        return decide(found[0], [])
    }

    /// Every data object of the module, typed from one pass over all of its code.
    public func inferAll() -> [String: InferredType] {
        if let all { return all }
        // Prototypes by name: the module's own functions and vmlinux's (a split BTF's lookup sees only its own).
        var byName: [String: [TypeID]] = [:]
        for b in [btf, btf.base].compactMap({ $0 }) {
            for id in b.localIDs where (try? b.kind(of: id)) == .function {
                if let n = try? b.name(of: id) { byName[n, default: []].append(id) }
            }
        }
        functions.byName = byName
        // Objects by link-time address, to place evidence.
        let objects = symbols.indices.filter { symbols[$0].type == 1 && bases[Int(symbols[$0].section)] != nil }
            .sorted { place($0) < place($1) }
        let starts = objects.map(place)
        func object(containing a: UInt64) -> (Int, UInt64)? {
            var lo = 0, hi = starts.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if starts[mid] <= a { lo = mid + 1 } else { hi = mid }
            }
            guard lo > 0 else { return nil }
            let k = objects[lo - 1], offset = a - starts[lo - 1]
            return offset < max(symbols[k].size, 1) ? (k, offset) : nil
        }
        var bySymbol: [Int: [Evidence]] = [:]
        let collector = EvidenceCollector(decoder: decoder, functions: functions) { address, kind in
            if let (k, offset) = object(containing: address) { bySymbol[k, default: []].append(Evidence(offset: offset, kind: kind)) }
        }
        for s in symbols where s.type == 2 && s.size > 0 {
            guard let base = bases[Int(s.section)], let bytes = linked[Int(s.section)], s.value <= UInt64(bytes.count),
                  s.size <= UInt64(bytes.count) - s.value else { continue }
            let start = base + s.value
            bytes[Int(s.value)..<Int(s.value + s.size)].withUnsafeBytes { collector.scan($0, range: start..<(start + s.size)) }
        }
        var result: [String: InferredType] = [:]
        var seen: [String: Int] = [:]
        for k in objects {
            seen[symbols[k].name, default: 0] += 1
            result[symbols[k].name] = decide(k, bySymbol[k] ?? [])
        }
        // A name several objects share is not one global.
        for (name, n) in seen where n > 1 { result[name] = nil }
        all = result
        return result
    }

    /// Link-time address of symbol `k`.
    func place(_ k: Int) -> UInt64 { (bases[Int(symbols[k].section)] ?? 0) &+ symbols[k].value }

    /// Where symbol `k` is in the running module, when its section's load address is known; else its
    /// link-time address.
    func address(_ k: Int) -> UInt64 {
        let section = elf.sections[Int(symbols[k].section)].name
        return loadBases[section].map { $0 &+ symbols[k].value } ?? place(k)
    }

    /// The evidence's type (`TypeDecision`), else the struct its initial function pointers say.
    func decide(_ k: Int, _ evidence: [Evidence]) -> InferredType {
        let s = symbols[k]
        let extent: UInt64? = s.size > 0 ? s.size : nil
        let d = TypeDecision(btf: btf, extent: extent, evidence: evidence)
        var type = d.type, note = d.note, candidates = d.candidates
        if type == nil, candidates.isEmpty, let (t, n) = byFunctionPointers(k) {
            type = t
            note = "type inferred from \(n) function pointer\(n == 1 ? "" : "s") in its initial data"
            candidates = [.init(type: t, votes: n, sources: ["\(n) functions with the members' prototypes"])]
        }
        if type != nil { note += "; size \(s.size) from the .ko's symbol table" }
        return InferredType(name: s.name, address: address(k), extent: extent, type: type, note: note,
                            candidates: candidates, evidence: evidence)
    }

    /// Functions stored in symbol `k`'s initial bytes: offset → (function with a BTF prototype).
    func initialFunctions(_ k: Int) -> [UInt64: FunctionIndex.Function]? {
        let s = symbols[k]
        guard let words = functionWords[Int(s.section)] else { return nil }
        var found: [UInt64: FunctionIndex.Function] = [:]
        for (offset, name) in words where offset >= s.value && offset < s.value + s.size {
            guard let at = functionAddress[name], let f = functions.function(at: at) else { return nil }
            found[offset - s.value] = f
        }
        return found
    }

    private var structsBySize: [UInt64: [TypeID]]?

    /// The one named struct of exactly symbol `k`'s size whose function-pointer members hold, each, one of
    /// the functions in its initial data with the member's prototype, every such function so placed (at
    /// least two); with how many.
    func byFunctionPointers(_ k: Int) -> (TypeID, Int)? {
        guard let held = initialFunctions(k), held.count >= 2 else { return nil }
        if structsBySize == nil {
            var index: [UInt64: [TypeID]] = [:]
            for t in btf.localIDs {
                guard (try? btf.kind(of: t)) == .structure, let n = try? btf.name(of: t), !n.isEmpty, let s = try? btf.size(of: t) else { continue }
                index[s, default: []].append(t)
            }
            if let base = btf.base {
                for t in base.localIDs {
                    guard (try? base.kind(of: t)) == .structure, let n = try? base.name(of: t), !n.isEmpty, let s = try? base.size(of: t) else { continue }
                    index[s, default: []].append(t)
                }
            }
            structsBySize = index
        }
        func same(_ a: TypeID, _ b: TypeID) -> Bool { ((try? btf.resolve(a)) ?? a) == ((try? btf.resolve(b)) ?? b) }
        var winners: [TypeID] = []
        for t in structsBySize?[symbols[k].size] ?? [] {
            let slots = Dictionary(btf.functionPointerSlots(of: t).map { ($0.offset, $0.proto) }, uniquingKeysWith: { a, _ in a })
            let fits = held.allSatisfy { offset, f in
                guard let proto = slots[offset], let want = try? btf.prototypeTypes(proto) else { return false }
                let params = want.params.filter { $0 != 0 }
                return params.count == f.parameters.count && same(want.returns, f.returns) && zip(params, f.parameters).allSatisfy(same)
            }
            if fits { winners.append(t) }
        }
        return winners.count == 1 ? (winners[0], held.count) : nil
    }
}

extension BTF {
    /// The function-pointer members of `id` (directly or in nested structs), with their FUNC_PROTO.
    func functionPointerSlots(of id: TypeID) -> [(offset: UInt64, proto: TypeID)] {
        var slots: [(UInt64, TypeID)] = []
        forEachLayoutLeaf(of: id, .init(maxDepth: 4, arrayElements: 0)) { at, _, ty in
            if ty.kind == .pointer, let p = try? resolve(ty.target), (try? kind(of: p)) == .functionProto { slots.append((at, p)) }
            return slots.count < 256
        }
        return slots.map { (offset: $0.0, proto: $0.1) }
    }
}
