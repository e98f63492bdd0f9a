import Memory
import Arch
import BTF
import CKreach
import KernelSource
import KernelSymbols
import KreachSupport

/// One place where the kernel exposes a type or a global.
public struct WhereHit {
    /// What kind of place: the raw value is the word `where` prints and `where --json` emits.
    public enum Kind: String, Sendable, CaseIterable {
        /// A function taking the type (`argN`).
        case parameter
        /// A function returning the type.
        case `return`
        /// A compiler clone of a matching function (no BTF FUNC of its own).
        case clone
        /// A function whose code references the global.
        case reference
        /// A raw tracepoint whose `btf_trace_*` prototype carries the type.
        case rawTracepoint = "raw_tracepoint"
        /// A tracepoint whose format has a field of the type.
        case tracepoint

        /// Listing order: most direct first.
        var rank: Int {
            switch self {
            case .parameter, .reference: 0
            case .return: 1
            case .clone: 2
            case .rawTracepoint: 3
            case .tracepoint: 4
            }
        }
    }

    public let kind: Kind
    /// vmlinux or the module.
    public let object: String
    /// The function, tracepoint (system:event) or reference site (func+0xoff).
    public let place: String
    /// Position and declaration, e.g. "arg1 result: struct nlm_file **".
    public let detail: String
    /// Pointer depth to the target (0 by value); for ranking.
    public let depth: Int
    /// The `why` verdict (functions only).
    public let verdict: ProbeVerdict?
    /// A suggested next step (a probe, a capture line).
    public let suggestion: String?
    /// Every reference site in the function (`func+0xoff`), `place` being the first; empty for other kinds.
    public var sites: [String] = []
    /// References only: the static `struct seq_operations` whose `.show` is this function (the .ko's relocation
    /// says so): seq_read calls it once per item its start/next return when the file is read.
    public var seqOperations: String?

    public init(kind: Kind, object: String, place: String, detail: String, depth: Int, verdict: ProbeVerdict?, suggestion: String?, sites: [String] = []) {
        self.kind = kind
        self.object = object
        self.place = place
        self.detail = detail
        self.depth = depth
        self.verdict = verdict
        self.suggestion = suggestion
        self.sites = sites
    }

    /// The function (or tracepoint) without a `+0xoff` site suffix.
    public var function: String { String(place.prefix { $0 != "+" }) }
}

/// Finds where data is exposed: functions taking or returning a type (from BTF prototypes, through
/// pointers, arrays, typedefs and modifiers), tracepoints whose format fields carry it, raw
/// tracepoints whose BTF prototype (`btf_trace_*`) does, and for a module global the functions whose
/// code references it (relocations of the module's .ko), with getters among them.
public final class WhereAnalyzer {
    let kernel: Kernel
    let why: WhyAnalyzer
    public private(set) var notes: [String] = []

    public init(kernel: Kernel, why: WhyAnalyzer) {
        self.kernel = kernel
        self.why = why
    }

    // MARK: - Types

    /// Target named by kind and name: duplicate definitions in module BTF count as the same type.
    struct Target { let kind: BTFKind; let name: String }

    /// Pointer depth from `id` to the target, or nil; memoized per BTF object (-2 unknown, -1 no).
    final class Memo {
        var values: [Int8]
        init(count: Int) { values = [Int8](repeating: -2, count: count) }
    }

    func depth(_ btf: BTF, _ id: TypeID, _ target: Target, _ memo: Memo, _ baseMemo: Memo?) throws -> Int? {
        let m = id < btf.firstID ? (baseMemo ?? memo) : memo
        let slot = Int(id)
        if slot < m.values.count, m.values[slot] != -2 { return m.values[slot] < 0 ? nil : Int(m.values[slot]) }
        var current = id
        var pointers = 0
        var result: Int?
        walk: for _ in 0..<32 {
            if current == 0 { break }
            let kind = try btf.kind(of: current)
            let sameKind = kind == target.kind || (kind == .enum64 && target.kind == .enumeration)
            if sameKind, try btf.name(of: current) == target.name { result = pointers; break }
            switch kind {
            case .pointer: pointers += 1; current = try btf.rawTarget(current)
            case .typedef, .const, .volatile, .restrict, .typeTag: current = try btf.rawTarget(current)
            case .array: current = try btf.type(current).arrayElement
            default: break walk
            }
        }
        if slot < m.values.count { m.values[slot] = result.map { Int8(clamping: $0) } ?? -1 }
        return result
    }

    /// `struct sk_buff`, `lockd:struct nlm_host`, `pid_t`: every function, raw tracepoint and tracepoint.
    public func whereType(_ query: String) throws -> [WhereHit] {
        let types = try kernel.types()
        let target = try targetType(query)
        var hits: [WhereHit] = []
        var clones: [WhereHit] = []
        let objects = try types.allObjects()
        let baseMemo = Memo(count: Int(types.vmlinux.endID))
        for btf in objects {
            let memo = btf === types.vmlinux ? baseMemo : Memo(count: Int(btf.endID))
            for id in btf.localIDs {
                let kind = try btf.kind(of: id)
                if kind == .function {
                    let (ret, params) = try btf.prototypeTypes(try btf.rawTarget(id))
                    var found: [(Int, Int)] = []  // (param index or -1 for return, depth)
                    if let d = try depth(btf, ret, target, memo, btf === types.vmlinux ? nil : baseMemo) { found.append((-1, d)) }
                    for (i, p) in params.enumerated() {
                        if let d = try depth(btf, p, target, memo, btf === types.vmlinux ? nil : baseMemo) { found.append((i, d)) }
                    }
                    guard !found.isEmpty else { continue }
                    let name = try btf.name(of: id)
                    clones += cloneHits(of: name, object: btf.objectName, found: found.map(\.1))
                    let proto = try btf.type(try btf.rawTarget(id))
                    let verdict = why.verdictForBTFFunction(name)
                    for (i, d) in found {
                        if i < 0 {
                            hits.append(WhereHit(kind: .return, object: btf.objectName, place: name, detail: "returns \(btf.describe(ret))",
                                                 depth: d, verdict: verdict, suggestion: verdict.probeable ? "kreach capture \(name)" : nil))
                        } else {
                            let p = proto.params[i]
                            hits.append(WhereHit(kind: .parameter, object: btf.objectName, place: name,
                                                 detail: "arg\(i) \(p.name): \(btf.describe(p.type))", depth: d, verdict: verdict,
                                                 suggestion: verdict.probeable ? "kreach capture \(name) --arg \(i)" : nil))
                        }
                    }
                } else if kind == .typedef, btf === types.vmlinux || btf.owner(of: id) === btf {
                    // Raw tracepoints: typedef void (*btf_trace_NAME)(void *, ARGS...)
                    let name = try btf.name(of: id)
                    guard name.hasPrefix("btf_trace_") else { continue }
                    let ptr = try btf.rawTarget(id)
                    guard try btf.kind(of: ptr) == .pointer else { continue }
                    let proto = try btf.rawTarget(ptr)
                    guard try btf.kind(of: proto) == .functionProto else { continue }
                    let (_, params) = try btf.prototypeTypes(proto)
                    for (i, p) in params.enumerated().dropFirst() {
                        if let d = try depth(btf, p, target, memo, btf === types.vmlinux ? nil : baseMemo) {
                            let tp = String(name.dropFirst("btf_trace_".count))
                            hits.append(WhereHit(kind: .rawTracepoint, object: btf.objectName, place: tp,
                                                 detail: "arg\(i - 1): \(btf.describe(p))", depth: d, verdict: nil,
                                                 suggestion: "rawtracepoint:\(tp)"))
                        }
                    }
                }
            }
        }
        // A clone with its own BTF FUNC (pahole's true_signature) was matched above by its real prototype.
        let named = Set(hits.map(\.place))
        hits += clones.filter { !named.contains($0.place) }
        if clones.contains(where: { !named.contains($0.place) }) {
            notes.append("clones (FUNC.isra.N, FUNC.constprop.N) are listed under their source function's prototype: the compiler may have removed or reordered arguments, so check with `kreach why CLONE` before reading an argument")
        }
        hits += try tracepointFields(matching: target)
        return rank(hits)
    }

    /// The struct, union, enum or typedef a `where` query names. Several definitions of the same kind and
    /// name (a typedef in four modules) are one target: each is listed in a note.
    func targetType(_ query: String) throws -> Target {
        let types = try kernel.types()
        let matches = try types.find(try TypeQuery.parse(query))
        let kinds = try Set(matches.map { m -> BTFKind in let k = try m.btf.kind(of: m.id); return k == .enum64 ? .enumeration : k })
        guard let first = matches.first, kinds.count == 1 else {
            _ = try types.resolve(query)  // throws: not found (with a hint), or ambiguous (listing each candidate)
            throw TypeLookupError.notFound(query, hint: nil)
        }
        let t = try first.btf.type(first.id)
        guard [.structure, .union, .enumeration, .enum64, .typedef].contains(t.kind), !t.name.isEmpty else {
            throw KernelError("\(query) is a \(t.kind.label); where takes a named struct, union, enum or typedef")
        }
        if matches.count > 1 {
            let places = matches.map { m in "\(m.object): \(m.btf.describe(m.id)) = \((try? m.btf.describe(m.btf.rawTarget(m.id))) ?? "?")" }
            notes.append("\(t.kind.label) \(t.name) is defined in \(matches.count) objects, all searched:\n    " + places.joined(separator: "\n    "))
        }
        return Target(kind: t.kind == .enum64 ? .enumeration : t.kind, name: t.name)
    }

    /// Compiler clones of `function` (kallsyms `function.isra.0`, `.constprop.N`, …, not `.cold`): they have
    /// no BTF FUNC of their own, so they are listed under the source function's prototype.
    func cloneHits(of function: String, object: String, found depths: [Int]) -> [WhereHit] {
        guard let table = try? kernel.symbols() else { return [] }
        let k = table.kallsyms
        var hits: [WhereHit] = []
        var seen = Set<String>()
        // The function itself, usually the whole chain, is skipped before building a symbol (whose ordinal
        // numbers the chain).
        for i in k.indexes(baseOf: function) where k.name(i) != function {
            let s = k.symbol(i)
            guard s.isText, !s.isColdFragment, s.moduleName == object, seen.insert(s.name).inserted else { continue }
            let verdict = why.quickVerdict(s.name)
            hits.append(WhereHit(kind: .clone, object: object, place: s.name,
                                 detail: "compiler clone of \(function): its signature may differ from the source's",
                                 depth: depths.min() ?? 0, verdict: verdict,
                                 suggestion: why.probes(for: verdict, function: s.name, btfFunction: false).first))
        }
        return hits
    }

    /// Tracepoints whose format has a field of the target type (`field:struct sk_buff * skb;`).
    func tracepointFields(matching target: Target) throws -> [WhereHit] {
        let root = kernel.path(.events)
        guard let systems = try? FileBytes.list(root) else {
            notes.append("no tracepoint formats (\(root) unreadable): tracepoints not searched")
            return []
        }
        let keyword = target.kind == .structure ? "struct " : target.kind == .union ? "union " : target.kind == .enumeration ? "enum " : ""
        let needle = Array((keyword + target.name).utf8)
        var hits: [WhereHit] = []
        for system in systems {
            guard let events = try? FileBytes.list(root + "/" + system) else { continue }
            for event in events {
                guard let bytes = try? kernel.bytes(.events, at: root + "/\(system)/\(event)/format") else { continue }
                guard contains(bytes, needle) else { continue }
                hits += WhereAnalyzer.tracepointFields(format: bytes, declaring: keyword + target.name, system: system, event: event)
            }
        }
        return hits
    }

    /// The `field:` lines of one tracepoint's format file (events/SYSTEM/EVENT/format) whose declaration's
    /// type is `typeName` (e.g. "struct sk_buff"), as hits.
    public static func tracepointFields(format bytes: [UInt8], declaring typeName: String, system: String, event: String) -> [WhereHit] {
        var hits: [WhereHit] = []
        // isNewline: a CRLF line end is one Character, which splitting on "\n" would not find.
        for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            guard let f = find("field:", in: line), let semi = line[f.upperBound...].firstIndex(of: ";") else { continue }
            let decl: String = line[f.upperBound..<semi].trimming(" \t")
            guard declares(decl, typeName) else { continue }
            let words = decl.split(whereSeparator: { (c: Character) -> Bool in c == " " || c == "*" })
            let fieldName: String = words.last.map { String($0) } ?? decl
            hits.append(WhereHit(kind: .tracepoint, object: "vmlinux", place: "\(system):\(event)", detail: "field \(decl)",
                                 depth: decl.filter { $0 == "*" }.count, verdict: nil, suggestion: "tracepoint:\(system):\(event) { args->\(fieldName) }"))
        }
        return hits
    }

    func contains(_ bytes: [UInt8], _ needle: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { b in
            needle.withUnsafeBytes { n in
                guard let bb = b.baseAddress, let nb = n.baseAddress else { return false }
                return kreach_memmem(bb, b.count, nb, n.count) != nil
            }
        }
    }

    /// Whether a C declaration's type is exactly `typeName` (plus pointers/const), not a longer name.
    static func find(_ needle: String, in text: Substring) -> Range<Substring.Index>? {
        guard let first = needle.first else { return nil }
        var i = text.startIndex
        while let start = text[i...].firstIndex(of: first) {
            if text[start...].hasPrefix(needle) { return start..<text.index(start, offsetBy: needle.count) }
            i = text.index(after: start)
        }
        return nil
    }

    static func declares(_ decl: String, _ typeName: String) -> Bool {
        guard let r = find(typeName, in: Substring(decl)) else { return false }
        let after = decl[r.upperBound...].first
        return after == nil || after == " " || after == "*"
    }

    func rank(_ hits: [WhereHit]) -> [WhereHit] {
        // The numeric part of each key once per hit, not twice per comparison (struct sk_buff has thousands).
        let keys = hits.map { ($0.kind.rank, $0.depth, $0.object == "vmlinux" ? 1 : 0) }
        return hits.indices.sorted { a, b in
            (keys[a].0, keys[a].1, keys[a].2, hits[a].place) < (keys[b].0, keys[b].1, keys[b].2, hits[b].place)
        }.map { hits[$0] }
    }

    // MARK: - Globals

    /// `brd:rd_size`: the module functions whose code references the global, from the .ko's relocations.
    public func whereGlobal(_ query: String) throws -> [WhereHit] {
        guard let colon = query.firstIndex(of: ":"), query[..<colon] != "vmlinux" else {
            throw KernelError("\(query) is a vmlinux global: its references need a scan of kernel text (whereVmlinuxGlobal, with kernel memory)")
        }
        guard case let .name(module?, name, ordinal, address) = try SymbolQuery.parse(query) else {
            throw KernelError("\(query): expected MODULE:NAME (or MODULE:NAME#N, MODULE:NAME@ADDRESS)")
        }
        guard let mo = try kernel.loadModuleObject(module) else {
            throw KernelError("\(module)'s .ko (with the loaded module's build-id) is needed to find references; not found for this kernel")
        }
        let elf = mo.elf
        let symbols = mo.symbols
        var targets = symbols.enumerated().filter { $0.element.name == name && $0.element.type == 1 }
        guard !targets.isEmpty else { throw KernelError("\(module).ko has no data object named \(name)") }
        if targets.count > 1 || ordinal != nil || address != nil {
            // kallsyms picks (#N, @ADDRESS) or lists the candidates with the forms that pick them; the .ko object
            // is then the one loaded at that address.
            let chosen = try kernel.symbols().resolve(query).address
            targets = targets.filter { t in
                let s = t.element
                guard Int(s.section) < elf.sections.count, let base = mo.sectionBases[elf.sections[Int(s.section)].name] else { return false }
                return base &+ s.value == chosen
            }
            guard targets.count == 1 else { throw KernelError("\(query): no data object of \(module).ko is loaded at \(Hex.address(chosen))") }
        }
        let found = try WhereAnalyzer.references(to: targets[0].offset, in: mo)
        let moduleBTF = (try? kernel.types())?.moduleNames.contains(module) ?? false
        if !moduleBTF && !found.functions.isEmpty {
            notes.append("no BTF for module \(module): references come from its .ko; getters and seq_file show functions are marked only where vmlinux BTF has the prototype (\(TypeLookupError.moduleBTFHowTo))")
        }
        var hits: [WhereHit] = []
        let seqShows = seqOperationsLayout().map { WhereAnalyzer.seqShowFunctions(in: mo, size: $0.size, showOffset: $0.show, others: $0.others) } ?? [:]
        for f in found.functions {
            guard let first = f.sites.first else { continue }
            // A BTF prototype, where there is one, must agree: (struct seq_file *, void *).
            let base = Kallsyms.baseName(of: f.name)
            let operations = seqShows[f.name].flatMap { prototype(base, module: module) == nil || isSeqShow(base, module: module) ? $0 : nil }
            hits.append(referenceHit(function: f.name, object: module, place: first, how: f.section, sites: f.sites, seqOperations: operations))
        }
        notes += addressNote(module: module, global: name, uses: found.addressUses)
        return rank(hits)
    }

    public typealias AddressUse = ModuleReferences.AddressUse
    public typealias GlobalReferences = ModuleReferences.GlobalReferences

    /// The functions of `mo` whose code references object `targetIndex` and the uses of its address, from
    /// the .ko's relocations decoded for its architecture (`ModuleReferences`).
    public static func references(to targetIndex: Int, in mo: ModuleObject) throws -> GlobalReferences {
        try ModuleReferences.references(to: targetIndex, in: mo.elf, symbols: mo.symbols, source: "\(mo.module).ko")
    }

    /// The pointer hint, when it applies: only when the global's address is stored or taken somewhere (`uses`),
    /// with that evidence. A global whose every use reads or writes it directly is never reached through a pointer.
    func addressNote(module: String, global: String, uses: [AddressUse]) -> [String] {
        guard !uses.isEmpty else { return [] }
        var stored: [String] = []
        var taken: [String] = []
        for use in uses {
            switch use {
            case let .stored(section): if !stored.contains(section) { stored.append(section) }
            case let .taken(_, site): taken.append(site)
            }
        }
        var evidence: [String] = []
        if !stored.isEmpty { evidence.append("stored in " + stored.joined(separator: ", ")) }
        if !taken.isEmpty { evidence.append("taken at " + taken.prefix(3).joined(separator: ", ") + (taken.count > 3 ? " and \(taken.count - 3) more" : "")) }
        var note = "\(global)'s address is \(evidence.joined(separator: "; ")) (.ko relocations)"
        if stored.contains("__param") {
            note += "; a module parameter: the kernel's param_set_* functions write it through that pointer (/sys/module/\(module)/parameters)"
        }
        return pointerHint(module: module, global: global).map { note + ": " + $0 }
    }

    /// A vmlinux global: the functions whose code references it, from a scan of kernel text (`TextScanner`).
    public func whereVmlinuxGlobal(_ query: String, memory: KernelMemory) throws -> [WhereHit] {
        let table = try kernel.symbols()
        let symbol = try table.resolve(query.hasPrefix("vmlinux:") ? query : "vmlinux:" + query)
        guard symbol.module == nil else { throw KernelError("\(query) is in \(symbol.moduleName): use \(symbol.moduleName):\(symbol.name)") }
        guard !symbol.isText else { throw KernelError("\(symbol.name) is a function; where takes a global or a type") }
        guard let stext = table.kallsyms.indexes(named: "_stext", module: "vmlinux").first,
              let etext = table.kallsyms.indexes(named: "_etext", module: "vmlinux").first else {
            throw KernelError("kallsyms has no _stext/_etext: can't find kernel text")
        }
        // The object's extent is unknown (no ELF for vmlinux): up to the next symbol, at most 4 KiB.
        let next = table.kallsyms.nextAddress(after: symbol.address) ?? (symbol.address + 8)
        let range = symbol.address..<min(next, symbol.address + 4096)
        let text = table.kallsyms.address(stext)..<table.kallsyms.address(etext)
        let found = try TextScanner(memory: memory, arch: try Arch.running()).references(to: range, text: text)
        var hits: [WhereHit] = []
        var seen = Set<String>()
        for h in found {
            guard let (k, off) = table.kallsyms.nearest(to: h.address, moduleRanges: table.moduleRanges) else { continue }
            let fn = table.kallsyms.symbol(k)
            guard fn.isText, seen.insert(fn.name).inserted else { continue }
            hits.append(referenceHit(function: fn.name, object: "vmlinux", place: "\(fn.name)+0x\(String(off, radix: 16))", how: "\(h.kind)"))
        }
        notes.append("vmlinux references come from a byte scan of kernel text (\(text.count >> 20) MiB): RIP-relative and absolute 32-bit forms; a rare random match is possible")
        return rank(hits)
    }

    /// The hit for `function` (a kallsyms name, clone suffix kept), whose code in `object` references a global:
    /// its verdict, its mark (getter, seq_file show function) and the suggestion. One rule for vmlinux and
    /// modules: a getter is read with `kreach capture`, anything else gets `why`'s first probe.
    /// `how`: the text section (module) or the scan's form of the reference (vmlinux).
    /// `seqOperations`: the static seq_operations whose .show the function is (module relocations), if known.
    func referenceHit(function: String, object: String, place: String, how: String, sites: [String] = [], seqOperations: String? = nil) -> WhereHit {
        let verdict = why.quickVerdict(function)
        let base = Kallsyms.baseName(of: function)
        let getter = isGetter(base, module: object)
        let detail: String
        if getter {
            detail = "getter (no pointer arguments, returns a scalar); \(how)"
        } else if let seqOperations {
            detail = "seq_file show function, the .show of seq_operations \(seqOperations): called once per item when its file is read; \(how)"
        } else if isSeqShow(base, module: object) {
            detail = "seq_file show function; \(how)"
        } else {
            detail = how
        }
        let suggestion = getter ? "kreach capture \(function)"
            : why.probes(for: verdict, function: function, btfFunction: hasBTFFunction(function, module: object)).first
        var hit = WhereHit(kind: .reference, object: object, place: place, detail: detail, depth: getter ? 0 : 1,
                           verdict: verdict, suggestion: suggestion, sites: sites)
        hit.seqOperations = seqOperations
        return hit
    }

    /// sizeof(struct seq_operations), the byte offset of its `show` member and those of its other members
    /// (start, stop, next: seq_read calls each, so a real one fills them all), from vmlinux BTF; nil without it.
    func seqOperationsLayout() -> (size: UInt64, show: UInt64, others: [UInt64])? {
        guard let vmlinux = try? kernel.types().vmlinux,
              let id = vmlinux.lookup("seq_operations").first(where: { (try? vmlinux.kind(of: $0)) == .structure }),
              let type = try? vmlinux.type(id), let show = type.members.first(where: { $0.name == "show" }),
              type.members.allSatisfy({ $0.bitfieldSize == 0 && $0.bitOffset % 8 == 0 }) else { return nil }
        return (UInt64(type.size), UInt64(show.bitOffset / 8), type.members.filter { $0.name != "show" }.map { UInt64($0.bitOffset / 8) })
    }

    /// The functions of `mo` that are the `.show` of a static `struct seq_operations` (`size` bytes, `.show` at
    /// `showOffset`), by name, with that object's name: an absolute 64-bit relocation (R_X86_64_64) at the field
    /// naming the function, or its section plus the function's offset. A static seq_operations is how
    /// proc_create_seq() and seq_open() files are made; seq_read then calls .show once for each item .start/.next
    /// return (again for an item that overflowed the buffer). single_open() files build theirs at run time:
    /// not found here. One pass over the data relocations.
    /// `others`: the offsets of the other members (start, stop, next), which must hold functions too: an object
    /// that merely has the size is not taken for one.
    static func seqShowFunctions(in mo: ModuleObject, size: UInt64, showOffset: UInt64, others: [UInt64]) -> [String: String] {
        let symbols = mo.symbols
        // Every pointer field of every object of that size, per section: field offset -> (object start, name).
        var fields: [Int: [UInt64: (start: UInt64, name: String)]] = [:]
        // Functions by (section, offset), for relocations against a section symbol.
        var functions: [Int: [UInt64: String]] = [:]
        for s in symbols {
            if s.type == 1 && s.size == size {
                for offset in others + [showOffset] { fields[Int(s.section), default: [:]][s.value &+ offset] = (s.value, s.name) }
            }
            if s.type == 2 && !s.name.isEmpty { functions[Int(s.section), default: [:]][s.value] = s.name }
        }
        var result: [String: String] = [:]
        for (sectionIndex, holders) in fields where sectionIndex < mo.elf.sections.count {
            // Per object start: the functions its fields hold, by field offset.
            var filled: [UInt64: [UInt64: String]] = [:]
            for r in mo.elf.relocations(for: sectionIndex) where r.type == 1 && r.symbol < symbols.count {
                guard let holder = holders[r.offset] else { continue }
                let s = symbols[r.symbol]
                let function = s.type == 2 ? s.name
                    : s.type == 3 ? functions[Int(s.section)]?[UInt64(bitPattern: Int64(bitPattern: s.value) &+ r.addend)] : nil
                if let function { filled[holder.start, default: [:]][r.offset &- holder.start] = function }
            }
            for (start, byField) in filled where others.allSatisfy({ byField[$0] != nil }) {
                if let show = byField[showOffset], result[show] == nil, let name = holders[start &+ showOffset]?.name { result[show] = name }
            }
        }
        return result
    }

    /// Whether `object`'s own BTF (a module's, or vmlinux's) has a FUNC named exactly `function` (fentry needs one).
    func hasBTFFunction(_ function: String, module object: String) -> Bool {
        guard let types = try? kernel.types() else { return false }
        let btf: BTF
        if object == "vmlinux" {
            btf = types.vmlinux
        } else {
            guard types.moduleNames.contains(object), let m = try? types.module(object) else { return false }
            btf = m
        }
        return btf.lookup(function).contains { (try? btf.kind(of: $0)) == .function && btf.owner(of: $0) === btf }
    }

    /// `function`'s BTF prototype: from the module's BTF when it has one, else from vmlinux BTF (a
    /// module without BTF: only functions vmlinux also declares are found). nil when neither has it.
    func prototype(_ function: String, module: String) -> (BTF, ret: TypeID, params: [TypeID])? {
        guard let types = try? kernel.types() else { return nil }
        var objects = [types.vmlinux]
        if module != "vmlinux", types.moduleNames.contains(module), let btf = try? types.module(module) { objects.insert(btf, at: 0) }
        for btf in objects {
            guard let id = btf.lookup(function).first(where: { (try? btf.kind(of: $0)) == .function }),
                  let proto = try? btf.rawTarget(id), let (ret, params) = try? btf.prototypeTypes(proto) else { continue }
            return (btf, ret, params)
        }
        return nil
    }

    /// A seq_file show function: BTF prototype (struct seq_file *, void *).
    func isSeqShow(_ function: String, module: String) -> Bool {
        guard let (btf, _, params) = prototype(function, module: module), params.count == 2 else { return false }
        // (struct seq_file *, void *): a pointer to the struct, and a pointer to void (type id 0).
        guard (try? btf.kind(of: params[0])) == .pointer, (try? btf.kind(of: params[1])) == .pointer,
              let file = try? btf.rawTarget(params[0]), file != 0, (try? btf.kind(of: file)) == .structure,
              (try? btf.name(of: file)) == "seq_file" else { return false }
        return (try? btf.rawTarget(params[1])) == 0
    }

    /// No pointer parameters and a scalar return (BTF prototype in the module or vmlinux).
    func isGetter(_ function: String, module: String) -> Bool {
        guard let (btf, ret, params) = prototype(function, module: module), ret != 0,
              let retKind = try? btf.kind(of: try btf.resolve(ret)),
              retKind == .int || retKind == .enumeration || retKind == .enum64 else { return false }
        for p in params where p != 0 {
            guard let kind = try? btf.kind(of: try btf.resolve(p)), kind != .pointer else { return false }
        }
        return true
    }

    /// What to try when the code that fills a global reaches it through a pointer (`ksp->ks_data = &g`):
    /// those functions are not references. With the global's BTF type: `where` on that type.
    func pointerHint(module: String, global: String) -> [String] {
        guard let types = try? kernel.types(), types.moduleNames.contains(module), let btf = try? types.module(module),
              let variable = btf.lookup(global).first(where: { (try? btf.kind(of: $0)) == .variable }),
              let type = try? btf.type(variable).target, let resolved = try? btf.resolve(type),
              let kind = try? btf.kind(of: resolved), [.structure, .union].contains(kind) else {
            return ["code that fills \(global) through a pointer (p->data = &\(global)) doesn't reference it: the functions it is passed to take its type; with BTF, `kreach where TYPE` finds them"]
        }
        let typeName = btf.describe(resolved)
        return ["code that fills \(global) through a pointer doesn't reference it: `kreach where '\(module):\(typeName)'` lists the functions that take a \(typeName)"]
    }
}
