import BTF
import KernelSymbols

/// One thing the kernel's code says about a global, at `offset` bytes into it.
public struct Evidence: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// The global's address (plus `offset`) is passed as parameter `parameter` of `function`, whose
        /// BTF prototype makes that a pointer to `type`.
        case addressArgument(function: String, parameter: Int, type: TypeID)
        /// The global's value is passed as parameter `parameter` of `function`, of BTF type `type`.
        case valueArgument(function: String, parameter: Int, type: TypeID)
        /// The value `function` returns (BTF type `type`) is stored into the global.
        case returnedValue(function: String, type: TypeID)
        /// The global's address (plus `offset`) is the initial value of `holder` + `at` (the image's data),
        /// a pointer to `type` there by `holder`'s own type.
        case storedIn(holder: String, at: UInt64, type: TypeID)
        /// A plain load, store or read-modify-write of `width` bytes; `signed` true for a sign-extending
        /// load, false for a zero-extending one, nil when the access doesn't widen; `locked`: atomic.
        case access(width: Int, signed: Bool?, indexed: Bool, locked: Bool)
    }
    public let offset: UInt64
    public let kind: Kind
}

/// Walks decoded code and turns what it does with data addresses into `Evidence`, through the BTF
/// prototypes of the functions it calls.
///
/// Registers are followed within straight-line code only: a value is forgotten at a barrier, at any jump,
/// when an instruction writes its register, at calls (caller-saved registers), and after
/// `maxAge` instructions, so that code reached from elsewhere doesn't lend it registers it didn't set.
struct EvidenceCollector {
    static let maxAge = 24

    /// What a register holds.
    enum Value {
        case address(UInt64)
        case loaded(UInt64, width: Int)
        case returned(function: String, type: TypeID)
    }

    let decoder: any InstructionDecoder
    let functions: FunctionIndex
    /// Where evidence for an address goes: `record(address, evidence-without-offset)`.
    let record: (UInt64, Evidence.Kind) -> Void

    /// Collects evidence from the function `name` whose code is `code` at link-time `range`.
    func scan(_ code: UnsafeRawBufferPointer, range: Range<UInt64>) {
        var regs = [(Value, Int)?](repeating: nil, count: 32)
        var step = 0
        func value(_ r: Int) -> Value? {
            guard r >= 0, r < regs.count, let (v, at) = regs[r], step - at <= EvidenceCollector.maxAge else { return nil }
            return v
        }
        func set(_ r: Int, _ v: Value?) {
            guard r >= 0, r < regs.count else { return }
            regs[r] = v.map { ($0, step) }
        }
        func clearAll() { for i in regs.indices { regs[i] = nil } }
        func call(_ target: UInt64) {
            guard let f = functions.function(at: target) else { return }
            for (i, reg) in decoder.argumentRegisters.prefix(f.parameters.count).enumerated() {
                switch value(reg) {
                case .address(let a):
                    if let pointee = functions.pointee(of: f.parameters[i]) {
                        record(a, .addressArgument(function: f.name, parameter: i, type: pointee))
                    }
                case let .loaded(a, width):
                    if width == functions.size(of: f.parameters[i]) {
                        record(a, .valueArgument(function: f.name, parameter: i, type: f.parameters[i]))
                    }
                default: break
                }
            }
            for r in decoder.callClobbered { set(r, nil) }
            if f.returns != 0 { set(decoder.returnRegister, .returned(function: f.name, type: f.returns)) }
        }
        decoder.decode(code, at: range.lowerBound) { _, fact, written in
            step += 1
            for r in 0..<32 where written & (1 << UInt32(r)) != 0 { regs[r] = nil }
            switch fact {
            case let .address(reg, a):
                set(reg, .address(a))
            case let .load(reg, a, width, signed, indexed):
                record(a, .access(width: width, signed: signed, indexed: indexed, locked: false))
                set(reg, indexed ? nil : .loaded(a, width: width))
            case let .store(a, width, source, indexed):
                record(a, .access(width: width, signed: nil, indexed: indexed, locked: false))
                if !indexed, let source, case let .returned(function, type)? = value(source), width == functions.size(of: type) {
                    record(a, .returnedValue(function: function, type: type))
                }
            case let .access(a, width, indexed, locked):
                record(a, .access(width: width, signed: nil, indexed: indexed, locked: locked))
            case let .move(reg, source):
                set(reg, value(source))
            case .call(let target):
                call(target)
            case .jump(let target):
                if !range.contains(target) { call(target) }
                clearAll()
            case .indirectCall:
                for r in decoder.callClobbered { set(r, nil) }
            case .barrier:
                clearAll()
            case .other:
                break
            }
            return true
        }
    }
}

/// The kernel's functions by link-time address, with their BTF prototypes (by name, from vmlinux BTF).
final class FunctionIndex {
    struct Function {
        let name: String
        let parameters: [TypeID]
        let returns: TypeID
    }
    let btf: BTF
    /// Function start (link time) → kallsyms name, for every text symbol of the image's text.
    let names: [UInt64: String]
    private var prototypes: [String: Function?] = [:]
    private var sizes: [TypeID: UInt64?] = [:]
    private var pointees: [TypeID: TypeID?] = [:]
    /// BTF FUNC ids by name, built on first use of a whole-kernel pass (nil: look names up one by one).
    var byName: [String: [TypeID]]?

    init(btf: BTF, names: [UInt64: String]) {
        self.btf = btf
        self.names = names
    }

    /// Names looked up in BTF one by one so far: past `maxLookups`, `indexAll` (each lookup searches
    /// BTF's strings; the index costs about as much as a few dozen of them).
    private var lookups = 0
    static let maxLookups = 32

    /// The BTF FUNCs named `name`.
    private func functionIDs(named name: String) -> [TypeID] {
        if byName == nil {
            lookups += 1
            if lookups > FunctionIndex.maxLookups { indexAll() }
        }
        return byName.map { $0[name] ?? [] } ?? btf.lookup(name)
    }

    /// Indexes every BTF FUNC by name (one pass over the types; worth it when most functions are asked).
    func indexAll() {
        var all: [String: [TypeID]] = [:]
        for id in btf.localIDs where (try? btf.kind(of: id)) == .function {
            if let n = try? btf.name(of: id) { all[n, default: []].append(id) }
        }
        byName = all
    }

    /// The function starting at `address` with a BTF prototype; nil for clones (.isra, .constprop: their
    /// parameters differ from the source's), unnamed or unknown functions, and names BTF gives several
    /// prototypes (static functions of one name in different files: which one is at `address` is unknown).
    func function(at address: UInt64) -> Function? {
        guard let name = names[address], !name.contains(".") else { return nil }
        if let known = prototypes[name] { return known }
        var found: Function?
        var signature: [TypeID]?
        for id in functionIDs(named: name) {
            guard let t = try? btf.type(id), t.kind == .function,
                  let proto = try? btf.prototypeTypes(t.target) else { continue }
            let f = Function(name: name, parameters: proto.params.filter { $0 != 0 }, returns: proto.returns)
            let s = ([f.returns] + f.parameters).map { (try? btf.resolve($0)) ?? $0 }
            if let signature {
                if s != signature { found = nil; break }
            } else {
                (found, signature) = (f, s)
            }
        }
        prototypes[name] = found
        return found
    }

    /// Every distinct prototype BTF gives functions named like the one at `address` (resolved: return
    /// type, then parameters); empty for clones and unknown names.
    func signatures(at address: UInt64) -> [[TypeID]] {
        guard let name = names[address], !name.contains(".") else { return [] }
        var found: [[TypeID]] = []
        for id in functionIDs(named: name) {
            guard let t = try? btf.type(id), t.kind == .function, let proto = try? btf.prototypeTypes(t.target) else { continue }
            let s = ([proto.returns] + proto.params.filter { $0 != 0 }).map { $0 == 0 ? 0 : (try? btf.resolve($0)) ?? $0 }
            if !found.contains(s) { found.append(s) }
        }
        return found
    }

    /// Size of a value of type `id` (nil when it has none).
    func size(of id: TypeID) -> Int? {
        if let known = sizes[id] { return known.map(Int.init) }
        let s = try? btf.size(of: id)
        sizes[id] = s
        return s.map(Int.init)
    }

    /// What a pointer type points to (modifiers skipped, typedefs kept); nil for non-pointers, void *,
    /// function pointers and pointers to one-byte integers (`u8 *`, `char *`: any buffer is passed as one).
    func pointee(of id: TypeID) -> TypeID? {
        if let known = pointees[id] { return known }
        var result: TypeID?
        if let r = try? btf.resolve(id), let t = try? btf.type(r), t.kind == .pointer,
           let target = try? btf.skipModifiers(t.target), target != 0,
           let r = try? btf.resolve(target), let k = try? btf.kind(of: r), k != .functionProto, k != .forward,
           !(k == .int && (try? btf.size(of: r)) == 1) {
            result = target
        }
        pointees[id] = result
        return result
    }
}
