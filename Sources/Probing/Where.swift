import BPF
import BTF
import CKreach
import KernelSource
import KernelSymbols
import KreachSupport

/// One place where the kernel exposes a type or a global.
public struct WhereHit {
    /// parameter, return, raw_tracepoint, tracepoint, reference
    public let kind: String
    /// vmlinux or the module.
    public let object: String
    /// The function, tracepoint (system:event) or reference site (func+0xoff).
    public let place: String
    /// Position and declaration, e.g. "arg1 result: struct nlm_file **".
    public let detail: String
    /// Pointer depth to the target (0 by value); for ranking.
    public let depth: Int
    /// The `why` verdict in one word (functions only).
    public let verdict: String?
    /// A suggested next step (a probe, a capture line).
    public let suggestion: String?
    /// Every reference site in the function (`func+0xoff`), `place` being the first; empty for other kinds.
    public var sites: [String] = []

    public init(kind: String, object: String, place: String, detail: String, depth: Int, verdict: String?, suggestion: String?, sites: [String] = []) {
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
                            hits.append(WhereHit(kind: "return", object: btf.objectName, place: name, detail: "returns \(btf.describe(ret))",
                                                 depth: d, verdict: verdict, suggestion: verdict.probeable ? "kreach capture \(name)" : nil))
                        } else {
                            let p = proto.params[i]
                            hits.append(WhereHit(kind: "parameter", object: btf.objectName, place: name,
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
                            hits.append(WhereHit(kind: "raw_tracepoint", object: btf.objectName, place: tp,
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
            hits.append(WhereHit(kind: "clone", object: object, place: s.name,
                                 detail: "compiler clone of \(function): its signature may differ from the source's",
                                 depth: depths.min() ?? 0, verdict: verdict, suggestion: verdict.probeable ? "kprobe:\(s.name)" : nil))
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
            let decl: String = line[f.upperBound..<semi].trimmingCharacters()
            guard declares(decl, typeName) else { continue }
            let words = decl.split(whereSeparator: { (c: Character) -> Bool in c == " " || c == "*" })
            let fieldName: String = words.last.map { String($0) } ?? decl
            hits.append(WhereHit(kind: "tracepoint", object: "vmlinux", place: "\(system):\(event)", detail: "field \(decl)",
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
        let order = ["parameter": 0, "return": 1, "reference": 0, "clone": 2, "raw_tracepoint": 3, "tracepoint": 4]
        // The numeric part of each key once per hit, not twice per comparison (struct sk_buff has thousands).
        let keys = hits.map { ((order[$0.kind] ?? 9), $0.depth, $0.object == "vmlinux" ? 1 : 0) }
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
        guard let mo = kernel.moduleObject(module) else {
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
        let (targetIndex, target) = targets[0]
        let range = target.value..<(target.value + max(target.size, 1))
        // One hit per function, its sites folded in (module_init()/module_exit() aliases give way to the real name).
        var byFunction: [String: (section: String, sites: [String])] = [:]
        var order: [String] = []
        for (sectionIndex, section) in elf.sections.enumerated() where section.name.hasPrefix(".text") || section.name.hasPrefix(".init.text") || section.name.hasPrefix(".exit.text") {
            for r in elf.relocations(for: sectionIndex) where r.symbol < symbols.count {
                let s = symbols[r.symbol]
                var hit = r.symbol == targetIndex
                if !hit && s.type == 3 && s.section == target.section {  // section symbol + addend
                    // PC-relative: the displacement ends the instruction in the common case, so the target is
                    // S + A + 4. An immediate after it (cmpl $1, x(%rip)) would shift that; without decoding
                    // instructions kreach doesn't guess, so such a reference can be missed, never invented.
                    let pcRelative: Set<UInt32> = [2, 4, 9, 41, 42]    // PC32, PLT32, GOTPCREL, GOTPCRELX, REX_GOTPCRELX
                    let bias: Int64 = pcRelative.contains(r.type) ? 4 : 0
                    hit = range.contains(UInt64(bitPattern: Int64(bitPattern: s.value) &+ r.addend &+ bias))
                }
                guard hit else { continue }
                let containing = symbols.filter { $0.type == 2 && Int($0.section) == sectionIndex && r.offset >= $0.value && r.offset < $0.value + max($0.size, 1) }
                guard let fn = containing.first(where: { $0.name != "init_module" && $0.name != "cleanup_module" }) ?? containing.first else { continue }
                let site = "\(fn.name)+0x\(String(r.offset - fn.value, radix: 16))"
                if byFunction[fn.name] == nil { order.append(fn.name); byFunction[fn.name] = (section.name, []) }
                if byFunction[fn.name]?.sites.contains(site) == false { byFunction[fn.name]?.sites.append(site) }
            }
        }
        let moduleBTF = (try? kernel.types())?.moduleNames.contains(module) ?? false
        if !moduleBTF && !order.isEmpty {
            notes.append("no BTF for module \(module): references come from its .ko; getters and seq_file show functions are marked only where vmlinux BTF has the prototype (\(TypeLookupError.moduleBTFHowTo))")
        }
        var hits: [WhereHit] = []
        for name in order {
            guard let (sectionName, sites) = byFunction[name], let first = sites.first else { continue }
            let verdict = why.quickVerdict(name)
            let base = Kallsyms.baseName(of: name)
            let getter = isGetter(base, module: module)
            let seqShow = isSeqShow(base, module: module)
            hits.append(WhereHit(kind: "reference", object: module, place: first,
                                 detail: getter ? "getter (no pointer arguments, returns a scalar)" : (seqShow ? "seq_file show function (prints it to a /proc or debugfs file)" : sectionName),
                                 depth: getter ? 0 : 1, verdict: verdict,
                                 suggestion: getter ? "kreach capture \(name)" : (verdict.probeable ? "kprobe:\(name)" : nil), sites: sites))
        }
        notes += pointerHint(module: module, global: name)
        return rank(hits)
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
        let found = try TextScanner(memory: memory).references(to: range, text: text)
        var hits: [WhereHit] = []
        var seen = Set<String>()
        for h in found {
            guard let (k, off) = table.kallsyms.nearest(to: h.address, moduleRanges: table.moduleRanges) else { continue }
            let fn = table.kallsyms.symbol(k)
            guard fn.isText, seen.insert(fn.name).inserted else { continue }
            let verdict = why.quickVerdict(fn.name)
            let getter = isGetter(fn.baseName, module: "vmlinux")
            let seqShow = isSeqShow(fn.baseName, module: "vmlinux")
            hits.append(WhereHit(kind: "reference", object: "vmlinux", place: "\(fn.name)+0x\(String(off, radix: 16))",
                                 detail: getter ? "getter (no pointer arguments, returns a scalar); \(h.kind)" : (seqShow ? "seq_file show function; \(h.kind)" : h.kind),
                                 depth: getter ? 0 : 1, verdict: verdict,
                                 suggestion: getter ? "kreach capture \(fn.name)" : (verdict == "traceable" ? "kprobe:\(fn.name)" : nil)))
        }
        notes.append("vmlinux references come from a byte scan of kernel text (\(text.count >> 20) MiB): RIP-relative and absolute 32-bit forms; a rare random match is possible")
        return rank(hits)
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
        return btf.describe(params[0]) == "struct seq_file *" && btf.describe(params[1]) == "void *"
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

extension String {
    public var probeable: Bool { self == "traceable" || self == "kprobe-only" || self == "clone-only" || self == "fentry-unconfirmed" }
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
