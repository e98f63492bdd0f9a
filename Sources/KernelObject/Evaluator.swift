import Memory
import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// Evaluates expressions against the kernel: the memory-free `Resolver` types them and gives their places
/// and values as symbolic `Value`s; the evaluator is its `ResolutionSteps` (pointers are read as they are
/// followed, so NULL pointers, CPU numbers and indices are checked against real values) and computes the
/// result through a `KernelMemory` (which only reads).
///
/// Where a global's type comes from, in order: an explicit cast in the expression; a BTF VAR of that
/// name in the symbol's object (per-CPU variables, and every global on kernels whose BTF carries them);
/// for module globals, the module's parameter table (from the .ko's `.rela__param`, memory-free; without the
/// .ko, `struct module`'s kp[] in memory: the param_ops_* of each parameter gives its C type); otherwise the symbol is untyped raw memory whose size comes from the
/// module's .ko symbol table, or is at most the gap to the next kallsyms symbol (reads capped, and said).
public final class Evaluator {
    public let kernel: Kernel
    public let types: TypeDatabase
    /// kallsyms + /proc/modules, read on first use (reading /proc/kallsyms is most of a short run's time).
    public var symbols: SymbolTable { get throws { try kernel.symbols() } }
    public let memory: KernelMemory
    /// Names and types, without memory.
    public let resolver: Resolver
    /// Container walks stop after this many entries (with a warning).
    public var maxEntries = 10_000
    /// Where list walks follow their pointers (in the kernel through BPF, or one read per pointer).
    public var walkMode = WalkMode.auto
    /// Member paths (`pid`, `se.vruntime`) whose values a walk in the kernel copies along with each entry.
    public var walkFields: [String] = []
    /// Field values copied by the last in-kernel walk (`Walk.fieldValues`: one per copied field per entry).
    var prefetched: [UInt64] = []
    /// Where each entry's copied values start in `prefetched`, by the entry's position (`Walk.fieldRows`).
    var prefetchedRows: [Int] = []
    /// The last walk's entries, by position, and their positions by address (made when first asked for).
    var prefetchedEntries: [UInt64] = []
    var prefetchedPositions: [UInt64: Int]?
    /// Values copied per entry (the fields `copiedFields` chose, repeats included).
    var copiedWidth = 0
    /// The copied fields' offsets in the entry, types, sizes and places in an entry's values, by member path.
    var copiedLayout: [String: CopiedField] = [:]
    /// Parsed `--fields` paths (a walk evaluates each once per entry).
    private var fieldExpressions: [String: Expr] = [:]
    /// Notes for the user (size mismatches, truncated walks, untyped symbols), printed on stderr.
    public private(set) var warnings: [String] = []
    /// Names bound to objects (used for `--fields`).
    var bindings: [String: Object] = [:]
    lazy var parameters = ModuleParameters(evaluator: self)

    public init(kernel: Kernel, memory: KernelMemory) throws {
        self.kernel = kernel
        self.types = try kernel.types()
        self.memory = memory
        self.resolver = Resolver(kernel: kernel, types: types)
    }

    public func clearWarnings() { warnings = [] }
    func warn(_ text: String) { if !warnings.contains(text) { warnings.append(text) } }

    /// Parses and evaluates `source`.
    public func evaluate(_ source: String) throws -> Evaluation {
        let expr = try ExpressionParser.parse(source, isTypeName: { [weak self] in self?.isTypeName($0) ?? false })
        if case let .container(helper, t, head, member, count, range) = expr {
            return .entries(try walk(helper, t, head, member, count: count, range, source), helper: helper)
        }
        return .object(try eval(expr, source))
    }

    /// Evaluates `field` (a member path such as `pid`, `comm`, `mm->pgd`) against `entry`.
    public func evaluate(field: String, of entry: Object) throws -> Object {
        bindings["__kreach_entry"] = entry
        defer { bindings["__kreach_entry"] = nil }
        let first = field.first.map { $0 == "[" || $0 == "-" } ?? false
        let source = "__kreach_entry" + (first ? "" : ".") + field
        if let expr = fieldExpressions[source] { return try eval(expr, source) }
        let expr = try ExpressionParser.parse(source, isTypeName: { [weak self] in self?.isTypeName($0) ?? false })
        fieldExpressions[source] = expr
        return try eval(expr, source)
    }

    func fail(_ message: String, _ e: Expr, _ source: String) -> ExpressionError {
        .at(message, source: source, range: e.range)
    }

    // MARK: - Types

    func isTypeName(_ word: String) -> Bool { resolver.isTypeName(word) }

    /// The BTF int name for C base-type words: `unsigned long` -> `long unsigned int`.
    static func baseTypeName(_ words: [String]) -> String? { Resolver.baseTypeName(words) }

    /// Resolves a type named in the expression (`module`: the global it is applied to, searched first).
    func resolveType(_ t: TypeName, near module: String? = nil, _ e: Expr, _ source: String) throws -> CType {
        try resolver.resolveType(t, near: module, e, source)
    }

    func pointerTarget(_ type: CType) throws -> CType? {
        if case .pointer(let target) = try type.resolved() { return target }
        return nil
    }

    /// `unsigned long` of vmlinux.
    var unsignedLong: CType { get throws { try resolver.unsignedLong } }

    // MARK: - Evaluation

    /// Resolves `e` (the resolver does the typing) and computes its address or value against memory.
    func eval(_ e: Expr, _ source: String) throws -> Object {
        defer {
            for w in resolver.warnings { warn(w) }
            resolver.clearWarnings()
        }
        return try object(try resolver.resolve(e, source, steps: self))
    }

    /// A resolved expression as an object: its place or value computed now.
    func object(_ r: Resolved) throws -> Object {
        var o: Object
        if let place = r.place {
            o = Object(type: r.type, address: try compute(place))
        } else if let value = r.value {
            o = try Object.value(try compute(value), type: r.type)
        } else {
            throw ExpressionError.plain("internal: a resolved expression with neither place nor value")
        }
        o.bitOffset = r.bitOffset
        o.bitfieldSize = r.bitfieldSize
        o.note = r.note
        o.extent = r.extent
        o.extentSource = r.extentSource
        return o
    }

    /// An object as the resolver sees it (an lvalue when it has an address).
    func resolved(_ o: Object) -> Resolved {
        var r = Resolved(type: o.type, place: o.address.map { .constant($0) }, note: o.note)
        if o.address == nil, let scalar = try? o.scalar(memory) { r.value = .constant(scalar) }
        r.bitOffset = o.bitOffset
        r.bitfieldSize = o.bitfieldSize
        r.extent = o.extent
        r.extentSource = o.extentSource
        return r
    }

    /// A symbolic value computed against kernel memory.
    public func compute(_ v: Value) throws -> UInt64 {
        switch v {
        case .constant(let c): return c
        case let .load(address, size, signed):
            let bytes = try memory.read(try compute(address), count: size)
            return Evaluator.extend(bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }, size: size, signed: signed)
        case let .add(a, b): return try compute(a) &+ compute(b)
        case let .scaled(a, n): return try compute(a) &* UInt64(bitPattern: n)
        case .negate(let a): return 0 &- (try compute(a))
        case let .convert(a, size, signed): return Evaluator.extend(try compute(a), size: size, signed: signed)
        case let .bits(a, shift, width, signed):
            var x = try compute(a) >> UInt64(shift)
            guard width < 64 else { return x }
            x &= (1 << UInt64(width)) - 1
            if signed && x & (1 << UInt64(width - 1)) != 0 { x |= ~((1 << UInt64(width)) - 1) }
            return x
        case .currentTask: return try memory.currentTask()
        case .opaque(let text): throw ExpressionError.plain("\(text) can only be evaluated by bpftrace")
        }
    }

    /// The low `size` bytes of `v`, zero- or sign-extended.
    static func extend(_ v: UInt64, size: Int, signed: Bool) -> UInt64 {
        guard size > 0 && size < 8 else { return v }
        let bits = UInt64(size) * 8
        let low = v & ((1 << bits) - 1)
        return signed && low & (1 << (bits - 1)) != 0 ? low | ~((1 << bits) - 1) : low
    }

    func describe(_ e: Expr, _ source: String) -> String { resolver.describe(e, source) }

    func deref(_ b: Object, _ target: CType, _ e: Expr, _ source: String) throws -> Object {
        let p = try b.scalar(memory)
        guard p != 0 else { throw fail("NULL pointer dereference: the pointer is 0", e, source) }
        if case let .btf(_, id) = target, id == 0 { throw fail("can't dereference a void pointer; cast it first", e, source) }
        return Object(type: target, address: p)
    }

    func cast(_ b: Object, to target: CType, _ e: Expr, _ source: String) throws -> Object {
        defer {
            for w in resolver.warnings { warn(w) }
            resolver.clearWarnings()
        }
        return try object(try resolver.cast(resolved(b), to: target, e, e, source))
    }

    // MARK: - Symbols

    /// How much of an untyped global with a known size is read and shown raw (a cast reads the whole type).
    public static let untypedReadLimit = Resolver.untypedReadLimit

    // MARK: - Containers

    func readPointer(_ address: UInt64) throws -> UInt64 {
        try memory.pointer(at: address, in: types.vmlinux)
    }

    /// A container walk (Walkers/: one walker per kernel macro): types the entries and the link member,
    /// checks the head's type, and maps walk errors to the expression.
    func walk(_ helper: ContainerHelper, _ t: TypeName?, _ headExpr: Expr, _ memberName: String, count countExpr: Expr? = nil,
              _ range: Range<Int>, _ source: String) throws -> WalkEntries {
        let whole = Expr.number(0, range: range)
        // for_each_cpu and for_each_set_bit yield CPU or bit numbers: unsigned int values.
        let entryType = try t.map { try resolveType($0, whole, source) } ?? resolveType(TypeName(words: ["unsigned", "int"], pointers: 0, text: "unsigned int"), whole, source)
        let linkOffset = helper.arguments == .typeHeadMember ? try resolver.linkOffset(entryType, memberName, range, source) : 0
        let count = try countExpr.map { try walkCount($0, helper, source) }
        var head = try eval(headExpr, source)
        var bitLimit = helper == .forEachCpu ? cpuCount() : count
        var buckets: Int?
        if helper == .forEachSetBit {
            // A pointer is the bitmap's first word (`unsigned long *`): NBITS may go past its target.
            if let target = try pointerTarget(head.type) {
                head = Object(type: target, address: try head.scalar(memory))
            } else if let size = try? head.type.size(), let bits = count, bits > size * 8 {
                throw fail("for_each_set_bit: NBITS \(bits) is past the \(size * 8) bits of \(head.type.name)", countExpr ?? headExpr, source)
            }
            bitLimit = count
        } else if helper == .hashForEach, case let .array(element, length) = try head.type.resolved() {
            // An array of heads (DEFINE_HASHTABLE): its length is the bucket count; BUCKETS may only lower it.
            if let count, count > length {
                throw fail("hash_for_each: BUCKETS \(count) is past the \(length) heads of \(head.type.name)", countExpr ?? headExpr, source)
            }
            buckets = count ?? length
            head = Object(type: element, address: head.address)
        } else {
            if let target = try pointerTarget(head.type) { head = try deref(head, target, headExpr, source) }
            if helper == .hashForEach {
                guard let count else {
                    throw fail("hash_for_each over one head needs the bucket count: hash_for_each(TYPE, HEADS, MEMBER, BUCKETS)", headExpr, source)
                }
                buckets = count
            }
        }
        guard let headAddress = head.address else {
            throw fail("\(helper.macro): \(helper.arguments == .headCount ? "the bitmap" : "the head") has no address (a value, not an object in memory)", headExpr, source)
        }
        let headType = (try? head.type.record()).flatMap { $0?.1.name } ?? ""
        guard helper.headTypes.isEmpty || helper.headTypes.contains(headType) else {
            let wanted = helper.headTypes.map { "struct " + $0 }.joined(separator: " or ")
            throw fail("\(helper.macro) needs a \(wanted)\(helper == .hashForEach ? " (an array of them, or a pointer and BUCKETS)" : ""), not \(head.type.name)", headExpr, source)
        }
        do {
            // A walk that fails leaves no values behind (they would be the previous walk's).
            (prefetched, prefetchedRows, prefetchedEntries, prefetchedPositions) = ([], [], [], nil)
            let copied = helper.arguments == .typeHeadMember || (helper.arguments == .typeHead && !entryType.isScalar)
                ? try copiedFields(of: entryType) : []
            let w = try helper.walk(head: headAddress, headType: headType, linkOffset: linkOffset, memory: memory,
                                    vmlinux: types.vmlinux, maxEntries: maxEntries, mode: walkMode, fields: copied,
                                    bitLimit: bitLimit, buckets: buckets)
            w.warnings.forEach(warn)
            prefetched = w.fieldValues
            prefetchedRows = w.fieldRows
            prefetchedEntries = w.fieldRows.isEmpty ? [] : w.entries
            prefetchedPositions = nil
            if helper.arguments == .typeHeadMember {
                // Chains carry no index; a hash table's entries their bucket.
                return WalkEntries(type: entryType, addresses: w.entries, indices: w.indices)
            }
            if helper.arguments == .typeHead, !entryType.isScalar {
                // Pointers to one struct type: addresses and indices, no Object per entry. Value entries
                // (xa_is_value) are no pointers: left out, with the copied fields' rows kept in step.
                var addresses: [UInt64] = [], indices: [UInt64] = [], rows: [Int] = []
                addresses.reserveCapacity(w.entries.count)
                indices.reserveCapacity(w.entries.count)
                var values = 0
                for (k, e) in w.entries.enumerated() {
                    if e & 1 != 0 {
                        values += 1
                        continue
                    }
                    addresses.append(e)
                    indices.append(k < w.indices.count ? w.indices[k] : 0)
                    if k < w.fieldRows.count { rows.append(w.fieldRows[k]) }
                }
                if values > 0 {
                    warn("\(helper.macro): skipped \(values) value entries (xa_is_value: not pointers; walk with TYPE unsigned long to see them)")
                    prefetchedRows = rows
                    prefetchedEntries = rows.isEmpty ? [] : addresses
                }
                return WalkEntries(type: entryType, addresses: addresses, indices: indices)
            }
            return WalkEntries(try indexedEntries(w, entryType, helper))
        } catch let error as WalkError {
            throw ExpressionError.at(error.description, source: source, range: range)
        }
    }

    /// A walk's count argument (for_each_set_bit's NBITS, hash_for_each's BUCKETS): a number, or an integer
    /// read now, at most the walker's bound.
    func walkCount(_ e: Expr, _ helper: ContainerHelper, _ source: String) throws -> Int {
        let o = try eval(e, source)
        guard o.type.isScalar, (try? pointerTarget(o.type)) == nil else { throw fail("\(helper.macro) takes a number here, not \(o.type.name)", e, source) }
        let v = try o.scalar(memory)
        let limit = helper == .forEachSetBit ? BitmapWalker.maxBits : HashWalker.maxBuckets
        guard v <= UInt64(limit) else {
            throw fail("\(helper.macro): \(Int64(bitPattern: v) < 0 ? String(Int64(bitPattern: v)) : String(v)) is out of range (0 to \(limit))", e, source)
        }
        return Int(v)
    }

    /// nr_cpu_ids: the kernel's (an unsigned int in kallsyms, where data symbols are listed); else, for the live
    /// kernel, one more than the last CPU of /sys/devices/system/cpu/possible (how the kernel sets it); nil if neither.
    func cpuCount() -> Int? {
        if let nr = try? symbols.resolve(GlobalName(module: "vmlinux", name: "nr_cpu_ids")),
           let bytes = try? memory.read(nr.address, count: 4) {
            return Int(littleEndianWord(bytes[...]))
        }
        guard case .live = kernel.source, let possible = try? FileBytes.readText("/sys/devices/system/cpu/possible"),
              let last = possible.split(whereSeparator: { $0 == "," || $0 == "-" }).last.flatMap({ Int($0) }) else { return nil }
        return last + 1
    }

    /// The entries of an indexed walk: for a scalar TYPE (`void *`, `unsigned long`, for_each_cpu's CPU
    /// numbers) each slot's value; otherwise the TYPE object each pointer entry points at (value entries,
    /// `xa_is_value`, are not pointers: skipped, and counted in a note).
    func indexedEntries(_ w: Walk, _ entryType: CType, _ helper: ContainerHelper) throws -> [Object] {
        var out: [Object] = []
        var values = 0
        for (e, index) in zip(w.entries, w.indices) {
            var o: Object
            if entryType.isScalar {
                o = try Object.value(helper.yieldsNumbers ? index : e, type: entryType)
            } else if e & 1 != 0 {
                values += 1
                continue
            } else {
                o = Object(type: entryType, address: e)
            }
            o.index = helper.yieldsNumbers ? nil : index
            out.append(o)
        }
        if values > 0 {
            warn("\(helper.macro): skipped \(values) value entries (xa_is_value: not pointers; walk with TYPE unsigned long to see them)")
        }
        return out
    }
}

/// A `--fields` member an in-kernel walk copies: where it is in the entry, its type and size, and its place
/// among an entry's copied values.
struct CopiedField {
    let offset: UInt64
    let type: CType
    let size: Int
    let index: Int
}

extension Evaluator {
    /// `walkFields` that are plain member paths (names and dots: no pointer to follow) ending in a scalar of
    /// 1–8 bytes outside a bitfield: their offsets in `entryType` and sizes, for an in-kernel walk to copy.
    /// Also keeps each one's offset and type (`copiedLayout`) for `prefetchedField`.
    func copiedFields(of entryType: CType) throws -> [BPFListWalk.Field] {
        let base: UInt64 = 1 << 32
        var out: [BPFListWalk.Field] = []
        copiedLayout = [:]
        for f in walkFields where !f.isEmpty && f.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }) {
            guard let v = try? evaluate(field: f, of: Object(type: entryType, address: base)), let a = v.address,
                  v.bitfieldSize == 0, a >= base, a - base < 1 << 20, let size = try? v.type.size(), (1...8).contains(size),
                  v.type.isScalar else { continue }
            copiedLayout[f] = CopiedField(offset: a - base, type: v.type, size: size, index: out.count)
            out.append(BPFListWalk.Field(offset: Int32(a - base), size: size))
        }
        copiedWidth = out.count
        return out
    }

    /// `field` of `entry` with the bytes the last in-kernel walk copied, or nil when it copied none for it
    /// (then `evaluate(field:of:)` reads it).
    public func prefetchedField(_ field: String, of entry: Object) -> Object? {
        guard let f = copiedLayout[field], let base = entry.address else { return nil }
        if prefetchedPositions == nil {
            prefetchedPositions = Dictionary(prefetchedEntries.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        }
        guard let position = prefetchedPositions?[base], let v = prefetchedValues(at: position)?.dropFirst(f.index).first else { return nil }
        return Object(type: f.type, address: base &+ f.offset, bytes: withUnsafeBytes(of: v.littleEndian) { Array($0.prefix(f.size)) })
    }

    /// The values the last in-kernel walk copied for its entry at `position` (of the entries it returned), one
    /// per copied `walkFields` member in their order (each field's bytes, little-endian, zero-extended), or nil
    /// when it copied none for it.
    public func prefetchedValues(at position: Int) -> ArraySlice<UInt64>? {
        guard position >= 0, position < prefetchedRows.count, prefetchedRows[position] >= 0 else { return nil }
        let row = prefetchedRows[position]
        let width = copiedWidth
        guard width > 0, row + width <= prefetched.count else { return nil }
        return prefetched[row..<row + width]
    }

    /// Copied field `field` of the walk's entry at `position`, whose address is `entry` (nil when none was copied).
    func prefetchedValue(_ field: CopiedField, at position: Int, entry: UInt64) -> UInt64? {
        guard position < prefetchedEntries.count, prefetchedEntries[position] == entry, let values = prefetchedValues(at: position) else { return nil }
        return values[values.startIndex + field.index]
    }
}

/// show's run-time steps: bound names, values read from memory now, module parameter types from memory.
extension Evaluator: ResolutionSteps {
    public func bound(_ name: String) -> Resolved? { bindings[name].map(resolved) }
    public func settle(_ value: Value) throws -> Value { .constant(try compute(value)) }
    public func parameterType(_ symbol: TypedSymbol) -> CType? { (try? parameters.type(of: symbol.symbol)) ?? nil }
}
