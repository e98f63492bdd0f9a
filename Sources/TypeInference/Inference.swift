import Arch
import BTF
import KernelSymbols
import Glibc
import KernelSource
import KreachSupport

/// What type inference concluded about one global.
public struct InferredType: Sendable {
    /// A type the evidence supports, with how many pieces of evidence point at it and what they are.
    public struct Candidate: Sendable {
        /// The type in vmlinux BTF (typedef names kept).
        public let type: TypeID
        public let votes: Int
        /// Short descriptions of the evidence ("passed to init_waitqueue_head() as 1st parameter").
        public let sources: [String]
    }
    public let name: String
    public let address: UInt64
    /// Bytes to the next kallsyms symbol (the only size a live kernel tells).
    public let extent: UInt64?
    /// The type, when the evidence agrees and fits the extent.
    public let type: TypeID?
    /// One line naming the evidence ("type inferred from 14 call sites").
    public let note: String
    /// Every candidate, most supported first.
    public let candidates: [Candidate]
    /// All evidence found (none when read from `TypeCache`).
    public let evidence: [Evidence]
    /// The cache file it was read from, when it was.
    public var cachedIn: String? = nil
}

/// Types of vmlinux globals inferred from the kernel image's code (`KernelImage`) through BTF prototypes,
/// for a kernel whose kallsyms lists data symbols. Addresses in kallsyms are the running (KASLR-slid)
/// ones; the image's are link-time ones: `slide` is the difference, from `_text`.
public final class TypeInferrer {
    /// The version of the inference rules: `TypeCache` keeps what they decided under it, so a change
    /// that can change a decision must increment it.
    public static let rulesVersion: UInt32 = 2

    public let image: KernelImage
    public let kallsyms: Kallsyms
    public let btf: BTF
    public let arch: Arch
    /// Running address minus link-time address.
    public let slide: UInt64
    /// Link-time ranges of code: `_stext`–`_etext` and `_sinittext`–`_einittext`.
    public let textRanges: [Range<UInt64>]
    let decoder: any InstructionDecoder
    /// Sorted link-time function starts and their names.
    let starts: [UInt64]
    let functions: FunctionIndex
    var outerIndex: [TypeID: [TypeID]]?
    /// Function-pointer members of every struct by offset and prototype (`functionPointerType`).
    lazy var functionSlotIndex = FunctionSlotIndex(btf: btf)
    /// Structs and unions a typedef names (spinlock_t → struct spinlock).
    lazy var typedefTargets: Set<TypeID> = Set(btf.localIDs.compactMap { t in
        guard (try? btf.kind(of: t)) == .typedef, let r = try? btf.resolve(t), let k = try? btf.kind(of: r),
              k == .structure || k == .union else { return nil }
        return r
    })

    /// The inferrer for `kernel`: its kallsyms, vmlinux BTF and image (`imagePath`, else a snapshot's own
    /// `vmlinuz` — a snapshot never borrows this machine's /boot —, else /boot/vmlinuz-RELEASE), refused
    /// when its build-id is not the kernel's (/sys/kernel/notes).
    public static func open(_ kernel: Kernel, imagePath: String? = nil) throws -> TypeInferrer {
        let path: String
        if let imagePath {
            path = imagePath
        } else if case .snapshot(let dir) = kernel.source {
            path = dir + "/vmlinuz"
        } else {
            path = "/boot/vmlinuz-" + (try kernel.release())
        }
        let image = try KernelImage(path: path)
        if let want = kernel.buildID(), let have = image.buildID, want != have {
            throw KernelImageError(source: path, message: "is another build than the kernel's: build-id \(Hex.string(have)), the kernel's \(Hex.string(want))")
        }
        return try TypeInferrer(image: image, kallsyms: try kernel.symbols().kallsyms, btf: try kernel.types().vmlinux)
    }

    public init(image: KernelImage, kallsyms: Kallsyms, btf: BTF) throws {
        self.image = image
        self.kallsyms = kallsyms
        self.btf = btf
        arch = try Arch(elfMachine: image.machine, source: image.source)
        decoder = try makeDecoder(for: arch)
        func symbol(_ name: String) throws -> UInt64 {
            guard let i = kallsyms.indexes(named: name, module: "vmlinux").first else {
                throw KernelImageError(source: image.source, message: "kallsyms has no \(name), needed to place the image")
            }
            return kallsyms.address(i)
        }
        slide = try symbol("_text") &- image.textAddress
        var ranges: [Range<UInt64>] = []
        for (start, end) in [("_stext", "_etext"), ("_sinittext", "_einittext")] {
            let s = try symbol(start) &- slide, e = try symbol(end) &- slide
            guard s < e, image.bytes(s..<e) != nil else {
                throw KernelImageError(source: image.source,
                                       message: "\(start)–\(end) of kallsyms is not in the image: the image is not the running kernel's")
            }
            ranges.append(s..<e)
        }
        textRanges = ranges
        // Function starts: vmlinux text symbols inside those ranges.
        var names: [UInt64: String] = [:]
        for i in 0..<kallsyms.count where kallsyms.module(i) == nil {
            let letter = kallsyms.typeLetter(i)
            guard letter == UInt8(ascii: "T") || letter == UInt8(ascii: "t") else { continue }
            let a = kallsyms.address(i) &- slide
            guard ranges.contains(where: { $0.contains(a) }), names[a] == nil else { continue }
            names[a] = kallsyms.name(i)
        }
        starts = names.keys.sorted()
        functions = FunctionIndex(btf: btf, names: names)
        try checkImageMatches()
    }

    /// The image must be the running kernel's: direct calls in its code must land on the starts of the
    /// functions kallsyms lists (sampled over the text; at least 90% of at most 2,000 calls).
    func checkImageMatches() throws {
        guard starts.count > 16 else {
            throw KernelImageError(source: image.source, message: "kallsyms lists no functions in the image's text")
        }
        let known = Set(starts)
        var calls = 0, landed = 0
        let stride = max(1, starts.count / 400)
        for n in Swift.stride(from: 0, to: starts.count - 1, by: stride) where calls < 2000 {
            let range = starts[n]..<starts[n + 1]
            guard range.count < 1 << 16, textRanges.contains(where: { $0.contains(range.lowerBound) }) else { continue }
            image.bytes(range)?.withUnsafeBytes { raw in
                decoder.decode(raw, at: range.lowerBound) { _, fact, _ in
                    if case .call(let target) = fact, textRanges.contains(where: { $0.contains(target) }) {
                        calls += 1
                        if known.contains(target) { landed += 1 }
                    }
                    return true
                }
            }
        }
        guard calls >= 20, landed * 10 >= calls * 9 else {
            throw KernelImageError(source: image.source,
                                   message: "is not the running kernel's image: \(landed) of \(calls) calls in its code land on functions kallsyms lists")
        }
    }

    /// The link-time range of the function containing `address`.
    func function(containing address: UInt64) -> Range<UInt64>? {
        var lo = 0, hi = starts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if starts[mid] <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let start = starts[lo - 1]
        guard let text = textRanges.first(where: { $0.contains(start) }) else { return nil }
        let end = lo < starts.count ? min(starts[lo], text.upperBound) : text.upperBound
        return start..<end
    }

    /// A vmlinux data symbol kallsyms lists: its index, running address and extent.
    public struct DataSymbol: Sendable {
        public let index: Int
        public let name: String
        public let address: UInt64
        public let extent: UInt64?
    }

    /// The data symbol (kallsyms letters d, b, r in either case) at or below running `address`.
    func dataSymbol(containing address: UInt64) -> (index: Int, offset: UInt64)? {
        guard let (i, offset) = kallsyms.nearest(to: address), kallsyms.module(i) == nil else { return nil }
        switch kallsyms.typeLetter(i) | 0x20 {
        case UInt8(ascii: "d"), UInt8(ascii: "b"), UInt8(ascii: "r"): return (i, offset)
        default: return nil
        }
    }

    public func dataSymbol(named name: String) throws -> DataSymbol { try TypeInferrer.dataSymbol(named: name, in: kallsyms) }

    /// The one vmlinux data symbol of kallsyms named `name` (no kernel image needed).
    public static func dataSymbol(named name: String, in kallsyms: Kallsyms) throws -> DataSymbol {
        let found = kallsyms.indexes(named: name, module: "vmlinux").filter {
            let l = kallsyms.typeLetter($0) | 0x20
            return l == UInt8(ascii: "d") || l == UInt8(ascii: "b") || l == UInt8(ascii: "r")
        }
        guard let i = found.first else { throw KernelImageError(source: "kallsyms", message: "no vmlinux data symbol \(name)") }
        guard found.count == 1 else {
            throw KernelImageError(source: "kallsyms", message: "\(found.count) vmlinux data symbols are named \(name)")
        }
        return describe(i, in: kallsyms)
    }

    /// Every vmlinux data symbol kallsyms lists.
    public func dataSymbols() -> [DataSymbol] {
        (0..<kallsyms.count).filter { i in
            guard kallsyms.module(i) == nil else { return false }
            let l = kallsyms.typeLetter(i) | 0x20
            return l == UInt8(ascii: "d") || l == UInt8(ascii: "b") || l == UInt8(ascii: "r")
        }.map(describe)
    }

    func describe(_ i: Int) -> DataSymbol { TypeInferrer.describe(i, in: kallsyms) }

    static func describe(_ i: Int, in kallsyms: Kallsyms) -> DataSymbol {
        let a = kallsyms.address(i)
        return DataSymbol(index: i, name: kallsyms.name(i), address: a, extent: kallsyms.nextAddress(after: a).map { $0 - a })
    }

    // MARK: One global

    /// Infers the type of one global: finds the code that refers to it (every text position whose bytes,
    /// as a reference, point into it), decodes the functions holding those positions, and decides.
    public func infer(_ symbol: DataSymbol) -> InferredType { infer(symbol, depth: 0) }

    private var memo: [Int: InferredType] = [:]

    /// Every global `infer` has typed so far (those it asked along the way too), for `TypeCache`.
    public var inferredSoFar: [InferredType] { Array(memo.values) }
    private var inProgress = Set<Int>()

    func infer(_ symbol: DataSymbol, depth: Int) -> InferredType {
        if let known = memo[symbol.index] { return known }
        inProgress.insert(symbol.index)
        defer { inProgress.remove(symbol.index) }
        let result = inferUncached(symbol, depth: depth)
        memo[symbol.index] = result
        return result
    }

    private func inferUncached(_ symbol: DataSymbol, depth: Int) -> InferredType {
        let link = symbol.address &- slide
        let size = max(symbol.extent ?? 1, 1)
        let target = link..<(link &+ size)
        var ranges: [Range<UInt64>] = []
        if depth == 0 {
            var referencing = Set<UInt64>()
            for text in textRanges {
                guard let bytes = image.bytes(text) else { continue }
                bytes.withUnsafeBytes { raw in
                    arch.textReferences(in: raw, at: text.lowerBound, to: target) { hit in
                        if let f = function(containing: hit.address), referencing.insert(f.lowerBound).inserted { ranges.append(f) }
                    }
                }
            }
        } else {
            // Holders: several globals' references, from one scan of the text for all of them.
            ranges = referenceIndex()[symbol.index] ?? []
        }
        var evidence: [Evidence] = []
        let collector = EvidenceCollector(decoder: decoder, functions: functions) { address, kind in
            if target.contains(address) { evidence.append(Evidence(offset: address - link, kind: kind)) }
        }
        for f in ranges {
            image.bytes(f)?.withUnsafeBytes { collector.scan($0, range: f) }
        }
        // Typed globals whose initial value points here, when the code alone doesn't type it.
        let fromCode = decide(symbol, evidence)
        if fromCode.type == nil && depth < TypeInferrer.maxHolderDepth {
            var asked = Set<Int>()
            for (holder, at) in holders(of: target) where !inProgress.contains(holder.index) {
                guard asked.count < TypeInferrer.maxHolders || asked.contains(holder.index) else { break }
                asked.insert(holder.index)
                let h = infer(describe(holder.index), depth: depth + 1)
                guard let ht = h.type else { continue }
                for slot in pointerSlots(of: ht) where slot.offset == holder.offset {
                    evidence.append(Evidence(offset: at - link, kind: .storedIn(holder: h.name, at: slot.offset, type: slot.pointee)))
                }
            }
            return decide(symbol, evidence)
        }
        return fromCode
    }

    private var references: [Int: [Range<UInt64>]]?

    /// The functions whose code refers to each vmlinux data symbol (by kallsyms index), from one scan of
    /// the text (every reference `Arch.textReferences` finds into the image's data); built on first use.
    func referenceIndex() -> [Int: [Range<UInt64>]] {
        if let references { return references }
        var found: [Int: [Range<UInt64>]] = [:]
        let data = (textRanges.map(\.upperBound).min() ?? 0)..<(image.segments.map { $0.range.upperBound }.max() ?? 0)
        let width = arch.textReferenceWidth
        for text in textRanges {
            guard let bytes = image.bytes(text) else { continue }
            bytes.withUnsafeBytes { raw in
                arch.textReferences(in: raw, at: text.lowerBound, to: data) { hit in
                    let at = Int(hit.address - text.lowerBound)
                    let field = Int64(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self)))
                    let address = hit.kind == .pcRelative ? hit.address &+ UInt64(width) &+ UInt64(bitPattern: field) : UInt64(bitPattern: field)
                    guard let (i, _) = dataSymbol(containing: address &+ slide), let f = function(containing: hit.address),
                          found[i]?.last != f else { return }
                    found[i, default: []].append(f)
                }
            }
        }
        // One entry per function (a function refers to a global many times, not always in a row).
        for (i, list) in found where list.count > 1 {
            var seen = Set<UInt64>()
            found[i] = list.filter { seen.insert($0.lowerBound).inserted }
        }
        references = found
        return found
    }

    /// How many holders deep `infer` asks when code leaves a global untyped (init_uts_ns ← init_nsproxy ←
    /// init_task, which its code types).
    static let maxHolderDepth = 2
    /// How many distinct holders of one global are asked.
    static let maxHolders = 4

    /// Data symbols whose initial bytes (the image's data) hold an address inside link-time `target`, at
    /// 8-byte aligned places: (the holder and offset into it, the address held).
    func holders(of target: Range<UInt64>) -> [(holder: (index: Int, offset: UInt64), address: UInt64)] {
        var found: [((Int, UInt64), UInt64)] = []
        for s in image.segments {
            image.bytes.withUnsafeBytes { raw in
                let base = s.offset
                var o = (8 - s.address % 8) % 8
                while o + 8 <= UInt64(s.size) {
                    let w = raw.loadUnaligned(fromByteOffset: base + Int(o), as: UInt64.self)
                    if target.contains(w), let (i, off) = dataSymbol(containing: s.address + o &+ slide), found.count < 64 {
                        found.append(((i, off), w))
                    }
                    o += 8
                }
            }
        }
        return found.map { (holder: (index: $0.0.0, offset: $0.0.1), address: $0.1) }
    }

    private var slotCache: [TypeID: [(offset: UInt64, pointee: TypeID)]] = [:]

    /// Every pointer inside an object of type `id` (through structs, unions and arrays), with its offset
    /// and what it points to (`FunctionIndex.pointee` rules). At most 4096 per type.
    func pointerSlots(of id: TypeID) -> [(offset: UInt64, pointee: TypeID)] {
        if let known = slotCache[id] { return known }
        var slots: [(UInt64, TypeID)] = []
        btf.forEachLayoutLeaf(of: id, .init(maxDepth: TypeDecision.maxDepth, arrayElements: 256)) { at, r, ty in
            if ty.kind == .pointer, let p = functions.pointee(of: r) { slots.append((at, p)) }
            return slots.count < 4096
        }
        let result = slots.map { (offset: $0.0, pointee: $0.1) }
        slotCache[id] = result
        return result
    }

    // MARK: Every global

    /// Infers every vmlinux data symbol at once: one pass decoding all of the image's text.
    public func inferAll() -> [InferredType] {
        functions.indexAll()
        var byAddress: [UInt64: [Evidence.Kind]] = [:]
        let collector = EvidenceCollector(decoder: decoder, functions: functions) { address, kind in
            byAddress[address, default: []].append(kind)
        }
        for (n, start) in starts.enumerated() {
            guard let text = textRanges.first(where: { $0.contains(start) }) else { continue }
            let end = n + 1 < starts.count ? min(starts[n + 1], text.upperBound) : text.upperBound
            image.bytes(start..<end)?.withUnsafeBytes { collector.scan($0, range: start..<end) }
        }
        var bySymbol: [Int: [Evidence]] = [:]
        for (address, kinds) in byAddress {
            guard let (i, offset) = dataSymbol(containing: address &+ slide) else { continue }
            for k in kinds { bySymbol[i, default: []].append(Evidence(offset: offset, kind: k)) }
        }
        var results: [Int: InferredType] = [:]
        for i in bySymbol.keys { results[i] = decide(describe(i), bySymbol[i] ?? []) }
        // Globals the code doesn't type: the functions in their initial data.
        for s in dataSymbols() where results[s.index] == nil {
            let r = decide(s, [])
            if r.type != nil { results[s.index] = r }
        }
        // Rounds of pointers held by typed globals' initial values, for what the code left untyped.
        var pushed = Set<Int>()
        for _ in 0..<TypeInferrer.maxHolderDepth {
            var added: [Int: [Evidence]] = [:]
            for (i, r) in results where r.type != nil && !pushed.contains(i) {
                pushed.insert(i)
                guard let t = r.type else { continue }
                let link = r.address &- slide
                for slot in pointerSlots(of: t) {
                    guard let w = image.word(at: link + slot.offset), let (j, offset) = dataSymbol(containing: w &+ slide),
                          j != i, results[j]?.type == nil else { continue }
                    added[j, default: []].append(Evidence(offset: offset, kind: .storedIn(holder: r.name, at: slot.offset, type: slot.pointee)))
                }
            }
            guard !added.isEmpty else { break }
            for (j, more) in added {
                bySymbol[j, default: []].append(contentsOf: more)
                results[j] = decide(describe(j), bySymbol[j] ?? [])
            }
        }
        return results.keys.sorted().compactMap { results[$0] }
    }

    // MARK: Deciding

    /// Chooses a type from the evidence, or none with ranked candidates (see `TypeDecision`).
    func decide(_ symbol: DataSymbol, _ evidence: [Evidence]) -> InferredType {
        let d = TypeDecision(btf: btf, extent: symbol.extent, evidence: evidence)
        var type = d.type, note = d.note
        // The code's types must be the one the initial data says or inside it at offset 0, and what the
        // code passes from inside the global must be members of it.
        let code = (d.type.map { [$0] } ?? d.candidates.map(\.type)).compactMap { try? btf.resolve($0) }
        if let fp = functionPointerType(symbol, accept: { s in
            let inner = d.atOffsetZero(s)
            return code.allSatisfy({ $0 == s || inner.contains($0) }) && d.insideConflict(s, evidence) == nil
        }) {
            type = fp.type
            note = "type inferred from \(fp.matches) function\(fp.matches == 1 ? "" : "s") of its prototype\(fp.matches == 1 ? "" : "s") in its initial data (\(fp.example))"
                + (code.isEmpty ? "" : " and \(code.count) use\(code.count == 1 ? "" : "s") in code")
        } else if let head = selfLinkedListHead(symbol), code.allSatisfy({ $0 == head }) || !evidence.contains(where: {
            if case .access = $0.kind { return false } else { return true }   // loads alone: not an integer
        }),
                  d.insideConflict(head, evidence) == nil {
            type = head
            note = "type inferred from its initial data: an empty list_head (both pointers to itself)"
        } else if let t = type, let r = try? btf.resolve(t), let outer = wrapper(of: r, symbol: symbol) {
            type = outer
            note += "; \(btf.describe(outer)) around it by its initial data and size"
        }
        return InferredType(name: symbol.name, address: symbol.address, extent: symbol.extent, type: type,
                            note: note, candidates: d.candidates, evidence: evidence)
    }
}

extension TypeInferrer {
    /// `struct list_head`, for a global of 16 to 31 bytes whose initial words both hold its own address
    /// (`LIST_HEAD(name)`: an empty list); loads of its first word alone would make it an integer.
    func selfLinkedListHead(_ symbol: DataSymbol) -> TypeID? {
        let link = symbol.address &- slide
        guard let extent = symbol.extent, extent >= 16, extent < 32, image.word(at: link) == link,
              image.word(at: link + 8) == link else { return nil }
        return btf.lookup("list_head").first { (try? btf.kind(of: $0)) == .structure && (try? btf.size(of: $0)) == 16 }
    }

    /// Structs and unions by the (resolved) type of their member at offset 0, built once: who wraps what.
    func outerTypes(of id: TypeID) -> [TypeID] {
        if outerIndex == nil {
            var index: [TypeID: [TypeID]] = [:]
            for t in btf.localIDs {
                guard let k = try? btf.kind(of: t), k == .structure || k == .union, let ty = try? btf.type(t) else { continue }
                _ = typedefTargets
                for m in ty.members where m.bitOffset == 0 && m.bitfieldSize == 0 {
                    if let r = try? btf.resolve(m.type) { index[r, default: []].append(t) }
                    if k == .structure { break }
                }
            }
            outerIndex = index
        }
        return outerIndex?[id] ?? []
    }

    /// The type that wraps `winner` for this global, when its initial bytes or the BTF say which (see
    /// `TypeDecision`'s wrapper rule); nil to keep `winner`.
    ///
    /// - Function pointers: a wrapper whose own function-pointer members (past `winner`) hold, in the
    ///   image's data, functions whose BTF prototypes equal the members' (none holding anything else) —
    ///   `struct device_attribute` around `struct attribute` by its `show`/`store`. The most matches wins;
    ///   a tie keeps `winner`.
    /// - Otherwise the one wrapper of the same size that a typedef names (`spinlock_t` around
    ///   `raw_spinlock_t`), when there is exactly one.
    func wrapper(of winner: TypeID, symbol: DataSymbol) -> TypeID? {
        guard let k = try? btf.kind(of: winner), k == .structure || k == .union, let size = try? btf.size(of: winner),
              let name = try? btf.name(of: winner), !name.isEmpty else { return nil }
        // Named wrappers, through anonymous ones, three levels out.
        // Levels count named types: an anonymous union in between (spinlock's) adds none.
        var outers: [(id: TypeID, level: Int)] = []
        var frontier: [(TypeID, Int)] = [(winner, 0)]
        for _ in 1...4 {
            var next: [(TypeID, Int)] = []
            for (t, level) in frontier {
                for o in outerTypes(of: t) where !outers.contains(where: { $0.id == o }) {
                    guard let s = try? btf.size(of: o), symbol.extent.map({ s <= $0 }) ?? (s == size) else { continue }
                    if let n = try? btf.name(of: o), !n.isEmpty {
                        if level < 3 { outers.append((o, level + 1)); next.append((o, level + 1)) }
                    } else {
                        next.append((o, level))
                    }
                }
            }
            frontier = next
        }
        guard !outers.isEmpty else { return nil }
        let link = symbol.address &- slide
        var best: (id: TypeID, matches: Int)?
        var tie = false
        for (o, _) in outers {
            guard let m = functionPointerMatches(o, at: link, from: size) else { continue }
            if m > (best?.matches ?? 0) { best = (o, m); tie = false } else if m > 0 && m == best?.matches { tie = true }
        }
        if let best, !tie { return best.id }
        let plain = outers.filter { o in
            o.level == 1 && (try? btf.size(of: o.id)) == size && typedefTargets.contains(o.id)
        }
        return plain.count == 1 ? plain[0].id : nil
    }

    /// How many function-pointer members of `id` hold (at link-time `address` in the image) a function
    /// with the member's prototype; nil when one holds something else (not zero, not such a function).
    func functionPointerMatches(_ id: TypeID, at address: UInt64, from start: UInt64 = 0) -> Int? {
        var matches = 0
        for slot in functionSlots(of: id) where slot.offset >= start {
            guard let w = image.word(at: address + slot.offset) else { return nil }
            if w == 0 { continue }
            guard let f = functions.function(at: w), let want = try? btf.prototypeTypes(slot.proto) else { return nil }
            func same(_ a: TypeID, _ b: TypeID) -> Bool { ((try? btf.resolve(a)) ?? a) == ((try? btf.resolve(b)) ?? b) }
            let params = want.params.filter { $0 != 0 }
            guard params.count == f.parameters.count, same(want.returns, f.returns),
                  zip(params, f.parameters).allSatisfy(same) else { return nil }
            matches += 1
        }
        return matches
    }

    /// The function-pointer members of `id` (directly or in nested structs), with their FUNC_PROTO.
    func functionSlots(of id: TypeID) -> [(offset: UInt64, proto: TypeID)] { btf.functionPointerSlots(of: id) }
}
