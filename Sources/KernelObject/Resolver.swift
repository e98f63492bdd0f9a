import BTF
import KernelSource
import KernelSymbols
import KreachSupport
import TypeInference

/// A 64-bit value computed at run time, symbolically: `show` computes it against kernel memory, a
/// bpftrace script prints it as bpftrace. Static parts fold to `.constant`.
public indirect enum Value: Equatable, Sendable {
    case constant(UInt64)
    /// `size` bytes (1, 2, 4 or 8) read at the address `Value`, zero- or sign-extended.
    case load(Value, size: Int, signed: Bool)
    case add(Value, Value)
    case scaled(Value, by: Int64)
    case negate(Value)
    /// An integer conversion to `size` bytes (a cast to a narrower integer).
    case convert(Value, size: Int, signed: Bool)
    /// `width` bits from bit `shift` of a value (a bitfield), sign-extended when `signed`.
    case bits(Value, shift: Int, width: Int, signed: Bool)
    /// The current task's `struct task_struct *` (bpf_get_current_task; bpftrace's `curtask`).
    case currentTask
    /// Script text kreach doesn't evaluate (an index such as `$i`, `arg0`), printed as written.
    case opaque(String)

    /// `a + b`, folded when both are constants.
    public static func plus(_ a: Value, _ b: Value) -> Value {
        if case .constant(let x) = a, case .constant(let y) = b { return .constant(x &+ y) }
        if case .constant(0) = b { return a }
        if case .constant(0) = a { return b }
        if case let .add(inner, .constant(x)) = a, case .constant(let y) = b { return .add(inner, .constant(x &+ y)) }
        return .add(a, b)
    }

    /// `a * factor`, folded for constants.
    public static func times(_ a: Value, _ factor: Int64) -> Value {
        if case .constant(let x) = a { return .constant(x &* UInt64(bitPattern: factor)) }
        if factor == 1 { return a }
        return .scaled(a, by: factor)
    }
}

/// Where an untyped global's size comes from.
public enum ExtentSource: Equatable, Sendable {
    /// The module's .ko symbol table: exact.
    case symbolTable
    /// The gap to the next kallsyms symbol: an upper bound, padding included.
    case nextSymbol
}

/// A global as the resolver types it (no memory read).
public struct TypedSymbol {
    public var symbol: KernelSymbol
    public var type: CType
    public var note: String
    /// For untyped globals: the true size when known, and where it comes from.
    public var extent: UInt64?
    public var extentSource: ExtentSource?
    /// A module global with no .ko to type it from: only `struct module`'s parameter table (in memory) can.
    public var needsParameterTable = false
    /// The type was inferred from the kernel's code (`TypeInferrer`): a cast of the global replaces it.
    public var inferred = false
}

/// An expression resolved without memory: its type, and where it lives (`place`, an lvalue's address)
/// or what it is (`value`, an rvalue), as symbolic `Value`s.
public struct Resolved {
    public var type: CType
    public var place: Value?
    public var value: Value?
    /// Bitfields: bit offset from `place` and width.
    public var bitOffset = 0
    public var bitfieldSize = 0
    /// The global the expression starts from, when it is one.
    public var global: TypedSymbol?
    public var note: String?
    /// An untyped global's true size and where it comes from.
    public var extent: UInt64?
    public var extentSource: ExtentSource?
    /// A global as named, with an inferred type: a cast takes its place like on an untyped global.
    public var castReplacesType = false

    public init(type: CType, place: Value? = nil, value: Value? = nil, global: TypedSymbol? = nil, note: String? = nil) {
        self.type = type
        self.place = place
        self.value = value
        self.global = global
        self.note = note
    }
}

/// The run-time steps of a resolution. `show` performs them against kernel memory (`Evaluator`); without
/// steps (a script) they stay symbolic for bpftrace.
public protocol ResolutionSteps: AnyObject {
    /// An object bound to a name (show's `--fields` entry) instead of a kernel global.
    func bound(_ name: String) -> Resolved?
    /// What can be computed now: show reads memory and returns a constant.
    func settle(_ value: Value) throws -> Value
    /// A module global the .ko couldn't type: its type from `struct module`'s parameter table in memory.
    func parameterType(_ symbol: TypedSymbol) -> CType?
}

/// Names to types, memory-free: globals (BTF VAR, per-CPU check, module parameters from the .ko, .ko symbol
/// sizes, the gap to the next kallsyms symbol, functions), type names (base types, bpftrace aliases, typedefs,
/// module types: the global's own module first, then vmlinux; `MODULE:` pins one), and whole expressions
/// (casts, members with bitfields and anonymous members, index, `*`, `&`, `-`, per_cpu, current) to a
/// `Resolved` with symbolic addresses. `Evaluator` adds memory; ScriptGen prints bpftrace.
public final class Resolver {
    public let kernel: Kernel
    public let types: TypeDatabase
    public var symbols: SymbolTable { get throws { try kernel.symbols() } }
    /// Notes for the user (size mismatches of casts).
    public private(set) var warnings: [String] = []

    public init(kernel: Kernel, types: TypeDatabase) {
        self.kernel = kernel
        self.types = types
    }

    public func clearWarnings() { warnings = [] }
    func warn(_ text: String) { if !warnings.contains(text) { warnings.append(text) } }

    func fail(_ message: String, _ e: Expr, _ source: String) -> ExpressionError {
        .at(message, source: source, range: e.range)
    }

    func describe(_ e: Expr, _ source: String) -> String {
        let chars = Array(source)
        let r = e.range.clamped(to: 0..<chars.count)
        return String(chars[r])
    }

    // MARK: - Type names

    static let aliases: [String: String] = [
        "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
        "int8": "s8", "int16": "s16", "int32": "s32", "int64": "s64", "bool": "_Bool",
    ]

    /// Whether `word` (or `MODULE:word`) names a typedef or base type, for the parser to tell `(pid_t)x` from `(x)`.
    /// vmlinux first; other module BTF only when vmlinux has no such name.
    public func isTypeName(_ word: String) -> Bool {
        func named(_ btf: BTF, _ name: String) -> Bool {
            btf.lookup(name).contains { id in
                guard let k = try? btf.kind(of: id) else { return false }
                return k == .typedef || k == .int
            }
        }
        if let colon = word.firstIndex(of: ":") {
            let module = String(word[..<colon]), name = String(word[word.index(after: colon)...])
            guard let btf = try? types.module(module) else { return false }
            return named(btf, name)
        }
        if Resolver.aliases[word] != nil || named(types.vmlinux, word) { return true }
        return types.moduleNames.contains { m in (try? types.module(m)).map { named($0, word) } ?? false }
    }

    /// The BTF int name for C base-type words: `unsigned long` -> `long unsigned int`.
    static func baseTypeName(_ words: [String]) -> String? {
        let set = words
        guard set.allSatisfy({ ["unsigned", "signed", "long", "short", "int", "char"].contains($0) }) else { return nil }
        let unsigned = set.contains("unsigned"), signed = set.contains("signed")
        let longs = set.filter { $0 == "long" }.count
        if set.contains("char") { return unsigned ? "unsigned char" : (signed ? "signed char" : "char") }
        if set.contains("short") { return unsigned ? "short unsigned int" : "short int" }
        if longs == 1 { return unsigned ? "long unsigned int" : "long int" }
        if longs == 2 { return unsigned ? "long long unsigned int" : "long long int" }
        return unsigned ? "unsigned int" : "int"
    }

    /// Resolves a type named in the expression. Without `MODULE:`, `module` (the module of the global the
    /// type is applied to) is searched first, then every object.
    public func resolveType(_ t: TypeName, near module: String? = nil, _ e: Expr, _ source: String) throws -> CType {
        var base: CType
        let words = t.words
        if words == ["void"] {
            base = .btf(types.vmlinux, 0)
        } else if let name = Resolver.baseTypeName(words) ?? (words.count == 1 && words[0] == "_Bool" ? "_Bool" : nil) {
            guard let id = types.vmlinux.lookup(name).first(where: { (try? types.vmlinux.kind(of: $0)) == .int }) else {
                throw fail("no base type \(name) in vmlinux BTF", e, source)
            }
            base = .btf(types.vmlinux, id)
        } else {
            var query = words.joined(separator: " ")
            if words.count == 1, let alias = Resolver.aliases[words[0]] { query = alias }
            if words.count == 1 && !query.contains(" ") { query = "typedef " + query }
            do {
                if let m = t.module {
                    let match = try types.resolve(m + ":" + query)
                    base = .btf(match.btf, match.id)
                } else if let module, module != "vmlinux", types.moduleNames.contains(module),
                          let match = try? types.resolve(module + ":" + query) {
                    base = .btf(match.btf, match.id)
                } else {
                    let match = try types.resolve(query)
                    base = .btf(match.btf, match.id)
                }
            } catch {
                throw fail("\(error)".split(separator: "\n").first.map(String.init) ?? "unknown type \(t.text)", e, source)
            }
        }
        for _ in 0..<t.pointers { base = .pointer(base) }
        if let n = t.arrayCount { base = .array(base, count: n) }
        return base
    }

    /// The module of the first global `e` names (for type lookups near it); nil for vmlinux.
    public static func module(of e: Expr) -> String? {
        var node = e
        for _ in 0..<ExpressionParser.maxDepth {
            switch node {
            case .symbol(let name, _):
                guard let g = try? GlobalName(parsing: name), let m = g.module, m != "vmlinux" else { return nil }
                return m
            case .member(let b, _, _, _), .index(let b, _, _), .deref(let b, _), .addressOf(let b, _), .negate(let b, _),
                 .cast(_, let b, _), .perCPU(let b, _, _), .containerOf(let b, _, _, _):
                node = b
            default:
                return nil
            }
        }
        return nil
    }

    func pointerTarget(_ type: CType) throws -> CType? {
        if case .pointer(let target) = try type.resolved() { return target }
        return nil
    }

    /// `unsigned long` of vmlinux.
    public var unsignedLong: CType {
        get throws {
            guard let id = types.vmlinux.lookup("long unsigned int").first else { throw ExpressionError.plain("vmlinux BTF has no unsigned long") }
            return .btf(types.vmlinux, id)
        }
    }

    // MARK: - Globals

    /// How much of an untyped global with a known size is read and shown raw (a cast reads the whole type).
    public static let untypedReadLimit: UInt64 = 4096

    /// The symbol a global names, with its type as well as kreach can tell without memory.
    public func symbol(_ text: String, _ e: Expr, _ source: String, perCPU: Bool) throws -> TypedSymbol {
        let global: GlobalName
        do { global = try GlobalName(parsing: text) } catch { throw fail(error.description(.colon), e, source) }
        var symbol: KernelSymbol
        var moduleObject: ModuleObject?
        if let (module, bare) = global.inModule, let mo = try kernel.loadModuleObject(module), case let found = mo.objects(named: bare), found.count == 1 {
            symbol = found[0]
            moduleObject = mo
        } else {
            symbol = try resolveWithKallsyms(global, written: text, e, source)
        }
        let object = symbol.moduleName
        // A BTF VAR of that name in the symbol's own object.
        let btf = object == "vmlinux" ? types.vmlinux : (types.moduleNames.contains(object) ? try types.module(object) : nil)
        if let btf {
            for id in btf.lookup(symbol.name) where try btf.kind(of: id) == .variable && btf.owner(of: id) === btf {
                let v = try btf.type(id)
                if try isPerCPUVariable(btf, id) && !perCPU {
                    throw fail("\(symbol.name) is a per-CPU variable: read one CPU's copy with per_cpu(\(text), CPU)", e, source)
                }
                return TypedSymbol(symbol: symbol, type: .btf(btf, v.target), note: symbol.name)
            }
        }
        if perCPU { throw fail("\(symbol.name) is not a per-CPU variable (no BTF VAR in a .data..percpu section)", e, source) }
        if symbol.isText {
            var prototype = ""
            if let btf, let fn = btf.lookup(symbol.baseName).first(where: { (try? btf.kind(of: $0)) == .function }) {
                prototype = ": " + btf.describe(fn)
            }
            return TypedSymbol(symbol: symbol, type: .untyped(size: 0), note: "\(symbol.name) (a function\(prototype))")
        }
        if let moduleObject, let type = try parameterTypeFromObject(moduleObject, symbol.name) {
            return TypedSymbol(symbol: symbol, type: type, note: "\(symbol.name), a module parameter")
        }
        if let (type, note) = dwarfType(of: symbol, in: moduleObject) {
            warn("\(symbol.name) is \(type.name): \(note)")
            var t = TypedSymbol(symbol: symbol, type: type, note: symbol.name)
            t.inferred = true
            return t
        }
        if let moduleObject, let (type, note) = inferredType(of: symbol, in: moduleObject) {
            warn("\(symbol.name) is \(type.name): \(note)")
            var t = TypedSymbol(symbol: symbol, type: type, note: symbol.name)
            t.inferred = true
            return t
        }
        if symbol.module == nil, let (type, note) = inferredType(of: symbol) {
            warn("\(symbol.name) is \(type.name): \(note)")
            var t = TypedSymbol(symbol: symbol, type: type, note: symbol.name)
            t.inferred = true
            return t
        }
        // No type: raw bytes. The size is the .ko symbol table's (exact), else at most the gap to the next
        // kallsyms symbol (padding included); reads are capped (`untypedReadLimit`), and the note says so.
        var extent: UInt64?
        var source: ExtentSource?
        var origin: String
        var readLimit = Resolver.untypedReadLimit
        if let module = symbol.module, let s = moduleObject?.size(of: symbol.name) ?? kernel.moduleSymbolSize(module: module, symbol: symbol.name) {
            extent = s
            source = .symbolTable
            origin = "\(s) bytes from the module's symbol table"
        } else if let next = nextSymbolAddress(after: symbol) {
            extent = next - symbol.address
            source = .nextSymbol
            origin = "at most \(next - symbol.address) bytes, up to the next kallsyms symbol"
            readLimit = 8
        } else {
            origin = "size unknown (no symbol after it)"
        }
        let size = Int(min(extent ?? 8, readLimit))
        if let extent, extent > UInt64(size) { origin += "; showing the first \(size)" }
        var t = TypedSymbol(symbol: symbol, type: .untyped(size: max(size, 1)), note: "\(symbol.name) (no type known; \(origin))")
        t.extent = extent
        t.extentSource = source
        t.needsParameterTable = moduleObject == nil && symbol.module != nil
        return t
    }

    /// The kallsyms symbol of `global` (`written`: the query as the expression gave it, quoted by errors).
    func resolveWithKallsyms(_ global: GlobalName, written: String? = nil, _ e: Expr, _ source: String) throws -> KernelSymbol {
        do { return try symbols.resolve(global.query, text: written ?? global.description) } catch let error as SymbolError {
            // Candidates are listed in the notation the user wrote (scripts need mod`name#N).
            let written: SymbolNotation = describe(e, source).contains("`") ? .backtick : .colon
            throw ExpressionError.at(error.description(written), source: source, range: e.range)
        } catch {
            throw ExpressionError.at("\(error)", source: source, range: e.range)
        }
    }

    /// A parameter's type from the module's .ko relocations (struct kernel_param offsets from BTF).
    func parameterTypeFromObject(_ mo: ModuleObject, _ name: String) throws -> CType? {
        let vmlinux = types.vmlinux
        guard let param = try vmlinux.lookup("kernel_param").first(where: { try vmlinux.kind(of: $0) == .structure }) else { return nil }
        let paramType = CType.btf(vmlinux, param)
        guard let ops = try paramType.member("ops"), let arg = try paramType.member("arg") else { return nil }
        let opsStruct = try vmlinux.lookup("kernel_param_ops").first(where: { try vmlinux.kind(of: $0) == .structure })
        let get = try opsStruct.flatMap { try CType.btf(vmlinux, $0).member("get") }
        let types = mo.parameterTypes(paramSize: try paramType.size(), opsOffset: ops.bitOffset / 8, argOffset: arg.bitOffset / 8,
                                      getOffset: get.map { $0.bitOffset / 8 })
        guard let parameter = types[name] else { return nil }
        let base = parameter == .charp ? "char" : parameter.cName
        guard let id = vmlinux.lookup(base).first(where: { (try? vmlinux.kind(of: $0)) == .int }) else { return nil }
        return parameter == .charp ? .pointer(.btf(vmlinux, id)) : .btf(vmlinux, id)
    }

    func isPerCPUVariable(_ btf: BTF, _ variable: TypeID) throws -> Bool {
        for id in btf.lookup(".data..percpu") where try btf.kind(of: id) == .dataSection {
            if try btf.type(id).sectionVariables.contains(where: { $0.type == variable }) { return true }
        }
        return false
    }

    /// Type inference from the kernel's code, opened on first need (nil with the reason when it can't be:
    /// no kernel image, or one of another build).
    /// Kept per kernel build in the type cache (`CachedInference`).
    private lazy var inference = CachedInference(kernel: kernel)

    /// A vmlinux data symbol's type inferred from the kernel's code, with the note naming the evidence
    /// (and the cache file it was read from).
    func inferredType(of symbol: KernelSymbol) -> (CType, String)? {
        let result = try? inference.infer(named: symbol.name)
        for n in inference.notes { warn(n) }
        guard let result, result.address == symbol.address, let id = result.type else { return nil }
        return (.btf(types.vmlinux, id), result.note + (result.cachedIn.map { "; read from the type cache \($0)" } ?? ""))
    }

    /// A live kernel's global typed by DWARF debug info of its build (`DebugInfoFiles`: a -dbg package, a
    /// .ko that keeps its DWARF), ahead of inference; nil when there is none.
    func dwarfType(of symbol: KernelSymbol, in object: ModuleObject?) -> (CType, String)? {
        guard case .live = kernel.source, let release = try? kernel.release() else { return nil }
        if let object {
            guard let id = object.elf.buildID, let btf = try? moduleInference.btf(of: object.module),
                  let (t, note) = DebugInfoFiles.type(of: symbol.name, files: DebugInfoFiles.module(koPath: object.elf.source), buildID: id, btf: btf)
            else { return nil }
            return (.btf(btf, t), note)
        }
        guard symbol.module == nil, let id = kernel.buildID(),
              let (t, note) = DebugInfoFiles.type(of: symbol.name, files: DebugInfoFiles.vmlinux(release: release), buildID: id, btf: types.vmlinux)
        else { return nil }
        return (.btf(types.vmlinux, t), note)
    }

    /// Type inference from a loaded module's .ko (`CachedModuleInference`).
    private lazy var moduleInference = CachedModuleInference(kernel: kernel)

    /// A module data symbol's type inferred from its .ko's code, with the note naming the evidence.
    func inferredType(of symbol: KernelSymbol, in object: ModuleObject) -> (CType, String)? {
        let result = try? moduleInference.infer(object, named: symbol.name)
        for n in moduleInference.notes { warn(n) }
        guard let result, result.address == symbol.address, let id = result.type, let btf = try? moduleInference.btf(of: object.module) else { return nil }
        return (.btf(btf, id), result.note + (result.cachedIn.map { "; read from the type cache \($0)" } ?? ""))
    }

    func nextSymbolAddress(after symbol: KernelSymbol) -> UInt64? {
        (try? symbols)?.kallsyms.nextAddress(after: symbol.address)
    }

    /// The warning for reading an untyped global (size `extent` from `source`) as `target`; nil when it fits.
    public static func castWarning(name: String, extent: UInt64?, source: ExtentSource?, target: CType) throws -> String? {
        let want = UInt64(try target.size())
        guard let extent, extent > 0 else { return nil }
        if source == .symbolTable, want != extent {
            return "\(name) is \(extent) bytes (module symbol table) but \(target.name) is \(want) bytes"
        }
        if source != .symbolTable, want > extent {
            return "\(target.name) is \(want) bytes but the next kallsyms symbol is \(extent) bytes after \(name): it reads past \(name)"
        }
        return nil
    }

    /// A form that reads an untyped global correctly, for error messages: a struct or typedef named like the
    /// global whose size matches the global's, an integer cast of the global's exact width, or nil.
    public func typedForm(of g: TypedSymbol, written: String, member: String?) -> String? {
        guard let extent = g.extent else { return nil }
        let module = g.symbol.moduleName
        var objects: [BTF] = []
        if module != "vmlinux", let m = try? types.module(module) { objects.append(m) }
        objects.append(types.vmlinux)
        for btf in objects {
            for (kind, name, spelling) in [(BTFKind.structure, g.symbol.name, "struct " + g.symbol.name), (.typedef, g.symbol.name + "_t", g.symbol.name + "_t")] {
                for id in btf.lookup(name) where (try? btf.kind(of: id)) == kind {
                    let t = CType.btf(btf, id)
                    let size = (try? t.size()).map(UInt64.init)
                    let fits = g.extentSource == .symbolTable ? size == extent : (size.map { $0 <= extent && extent - $0 < 8 } ?? false)
                    guard fits else { continue }
                    let first = member ?? (t.memberNames().first ?? "MEMBER")
                    return "((\(spelling))\(written)).\(first)"
                }
            }
        }
        return [1, 2, 4, 8].contains(extent) ? "(uint\(extent * 8))\(written)" : nil
    }

    /// The error for using an untyped global where a type is needed, with a form that works.
    public func untypedError(_ g: TypedSymbol, _ globalExpr: Expr, member: String?, _ source: String) -> ExpressionError {
        let written = describe(globalExpr, source)
        if let form = typedForm(of: g, written: written, member: member) {
            return fail("\(written) has no known type: cast it, e.g. \(form)", globalExpr, source)
        }
        let size = g.extent.map { g.extentSource == .symbolTable ? "\($0) bytes" : "at most \($0) bytes" } ?? "of unknown size"
        return fail("\(written) has no known type and is \(size): cast it to its struct, e.g. ((struct NAME)\(written)).MEMBER", globalExpr, source)
    }

    // MARK: - Expressions

    /// Resolves `e` (parsed from `source`) to a typed, symbolic result; `steps` (show) compute run-time parts now.
    public func resolve(_ e: Expr, _ source: String, steps: ResolutionSteps? = nil) throws -> Resolved {
        self.steps = steps
        defer { self.steps = nil }
        return try resolve(e, source)
    }

    /// The steps of the resolution under way.
    private weak var steps: ResolutionSteps?

    func settle(_ v: Value) throws -> Value { try steps?.settle(v) ?? v }

    /// A pointer about to be followed by `e`: settled, and refused when it is NULL.
    func follow(_ b: Resolved, _ base: Expr, _ e: Expr, _ source: String, indexing: Bool) throws -> Value {
        let p = try settle(try rvalue(b, base, source))
        if case .constant(0) = p {
            throw fail(indexing ? "NULL pointer: \(describe(base, source)) is 0" : "NULL pointer dereference: the pointer is 0", e, source)
        }
        return p
    }

    /// An untyped global used where a type is needed: in a script, an error suggesting a form that works;
    /// show keeps its own messages (nil).
    func untyped(_ b: Resolved, _ base: Expr, member: String?, _ source: String) -> ExpressionError? {
        guard steps == nil, case .untyped = b.type, let g = b.global else { return nil }
        return untypedError(g, base, member: member, source)
    }

    func resolve(_ e: Expr, _ source: String) throws -> Resolved {
        switch e {
        case let .number(n, _):
            return Resolved(type: try unsignedLong, value: .constant(n))
        case .opaque:
            guard let id = types.vmlinux.lookup("long int").first(where: { (try? types.vmlinux.kind(of: $0)) == .int }) else {
                throw fail("no long in vmlinux BTF", e, source)
            }
            guard case .opaque(let text, _) = e else { throw fail("internal", e, source) }
            return Resolved(type: .btf(types.vmlinux, id), value: .opaque(text))
        case .current:
            let query = TypeQuery(module: "vmlinux", kinds: [.structure], name: "task_struct", id: nil)
            guard let t = try types.find(query).first else { throw fail("no struct task_struct in vmlinux BTF", e, source) }
            return Resolved(type: .pointer(.btf(t.btf, t.id)), value: try settle(.currentTask), note: "current")
        case let .symbol(name, _):
            if let bound = steps?.bound(name) { return bound }
            var g = try symbol(name, e, source, perCPU: false)
            if g.needsParameterTable, let type = steps?.parameterType(g) {
                g.type = type
                g.note = "\(g.symbol.name), a module parameter"
                g.extent = nil
                g.extentSource = nil
            }
            var r = Resolved(type: g.type, place: .constant(g.symbol.address), global: g, note: g.note)
            r.extent = g.extent
            r.extentSource = g.extentSource
            r.castReplacesType = g.inferred
            return r
        case let .member(base, name, arrow, _):
            var b = try resolve(base, source)
            if let error = untyped(b, base, member: name, source) { throw error }
            if arrow {
                guard let target = try pointerTarget(b.type) else {
                    throw fail("'->' needs a pointer, but \(describe(base, source)) is \(b.type.name) (use '.')", e, source)
                }
                let p = try follow(b, base, e, source, indexing: false)
                if case let .btf(_, id) = target, id == 0 { throw fail("can't dereference a void pointer; cast it first", e, source) }
                b = Resolved(type: target, place: p)
            } else if try pointerTarget(b.type) != nil {
                throw fail("\(describe(base, source)) is a pointer (\(b.type.name)): use '->'", e, source)
            }
            guard let m = try b.type.member(name) else { throw fail(Resolver.noMember(b.type, name, note: b.note), e, source) }
            guard let place = b.place else { throw fail("can't take member \(name) of a computed value", e, source) }
            var r = Resolved(type: m.type, place: Value.plus(place, .constant(UInt64(m.bitOffset / 8))))
            if m.bitfieldSize > 0 {
                r.bitOffset = m.bitOffset % 8
                r.bitfieldSize = m.bitfieldSize
            }
            return r
        case let .index(base, index, _):
            let b = try resolve(base, source)
            if let error = untyped(b, base, member: nil, source) { throw error }
            let i = try settle(try rvalue(try resolve(index, source), index, source))
            switch try b.type.resolved() {
            case let .array(element, count):
                if case .constant(let n) = i, Int64(bitPattern: n) < 0 || Int64(bitPattern: n) >= Int64(count) {
                    warn("index \(Int64(bitPattern: n)) is outside \(b.type.name) (\(count) elements)")
                }
                guard let place = b.place else { throw fail("can't index a computed array", e, source) }
                return Resolved(type: element, place: Value.plus(place, Value.times(i, Int64(try element.size()))))
            case let .pointer(target):
                let p = try follow(b, base, e, source, indexing: true)
                return Resolved(type: target, place: Value.plus(p, Value.times(i, Int64(try target.size()))))
            default:
                throw fail("can't index \(describe(base, source)), a \(b.type.name)", e, source)
            }
        case let .deref(base, _):
            let b = try resolve(base, source)
            if let error = untyped(b, base, member: nil, source) { throw error }
            guard let target = try pointerTarget(b.type) else {
                throw fail("can't dereference \(describe(base, source)), a \(b.type.name)", e, source)
            }
            let p = try follow(b, base, e, source, indexing: false)
            if case let .btf(_, id) = target, id == 0 { throw fail("can't dereference a void pointer; cast it first", e, source) }
            return Resolved(type: target, place: p)
        case let .addressOf(base, _):
            let b = try resolve(base, source)
            guard let place = b.place else { throw fail("\(describe(base, source)) has no address", e, source) }
            guard b.bitfieldSize == 0 else { throw fail("can't take the address of a bitfield", e, source) }
            let type: CType = { if case .untyped = b.type { return .pointer(.btf(types.vmlinux, 0)) } else { return .pointer(b.type) } }()
            return Resolved(type: type, value: place)
        case let .negate(base, _):
            let b = try resolve(base, source)
            if let error = untyped(b, base, member: nil, source) { throw error }
            guard b.type.isScalar else { throw fail("can't negate \(b.type.name)", e, source) }
            return Resolved(type: b.type, value: .negate(try rvalue(b, base, source)))
        case let .cast(t, base, _):
            let target = try resolveType(t, near: Resolver.module(of: base), e, source)
            let b = try resolve(base, source)
            return try cast(b, to: target, base, e, source)
        case let .perCPU(variable, cpu, _):
            guard case let .symbol(name, _) = variable else { throw fail("per_cpu() takes a per-CPU variable's name", variable, source) }
            let g = try symbol(name, variable, source, perCPU: true)
            let n = try settle(try rvalue(try resolve(cpu, source), cpu, source))
            let offsets = try resolveWithKallsyms(GlobalName(module: "vmlinux", name: "__per_cpu_offset"), variable, source)
            // nr_cpu_ids (unsigned int), when it can be read now.
            if case .constant(let c) = n, let nr = try? symbols.resolve(GlobalName(module: "vmlinux", name: "nr_cpu_ids")),
               case .constant(let cpus)? = try? settle(.load(.constant(nr.address), size: 4, signed: false)) {
                guard c < cpus else { throw fail("CPU \(c) does not exist (nr_cpu_ids is \(cpus))", cpu, source) }
            }
            // __per_cpu_offset is unsigned long[NR_CPUS]: one pointer-sized slot per CPU.
            let slot = Int(types.vmlinux.pointerSize)
            let base = try settle(.load(Value.plus(.constant(offsets.address), Value.times(n, Int64(slot))), size: slot, signed: false))
            var note = "per_cpu(\(g.symbol.name))"
            if case .constant(let c) = n { note = "per_cpu(\(g.symbol.name), \(c))" }
            return Resolved(type: g.type, place: Value.plus(base, .constant(g.symbol.address)), note: note)
        case let .perCPUSum(inner, _):
            return try perCPUSum(inner, e, source)
        case let .containerOf(pointer, t, member, _):
            let target = try resolveType(t, near: Resolver.module(of: pointer), e, source)
            let p = try resolve(pointer, source)
            guard try pointerTarget(p.type) != nil || p.type.isScalar else {
                throw fail("container_of() takes a pointer, not \(p.type.name)", pointer, source)
            }
            var offset = 0
            var inner = target
            for name in member.split(separator: ".") {
                guard let m = try inner.member(String(name)), m.bitfieldSize == 0 else {
                    throw fail("\(inner.name) has no member \(name)", e, source)
                }
                offset += m.bitOffset / 8
                inner = m.type
            }
            return Resolved(type: .pointer(target), value: Value.plus(try rvalue(p, pointer, source), .constant(0 &- UInt64(offset))))
        case .container:
            throw fail("a container walk can only be the whole expression", e, source)
        }
    }

    /// The offset of MEMBER (a member path `a.b`, its last member optionally `[N]`) in the entry type:
    /// entry = node - offset.
    public func linkOffset(_ entryType: CType, _ memberName: String, _ range: Range<Int>, _ source: String) throws -> UInt64 {
        var type = entryType, offset: UInt64 = 0
        for part in memberName.split(separator: ".") {
            var name = String(part), index: Int?
            if let open = name.firstIndex(of: "[") {
                index = Int(name[name.index(after: open)...].dropLast())
                name = String(name[..<open])
            }
            guard let link = try type.member(name) else {
                throw ExpressionError.at("\(type.name) has no member \(name)", source: source, range: range)
            }
            offset += UInt64(link.bitOffset / 8)
            type = link.type
            if let index {
                guard case let .array(element, count) = try type.resolved(), index < count else {
                    throw ExpressionError.at("\(memberName): \(name) is not an array with that many elements", source: source, range: range)
                }
                offset += UInt64(index * (try element.size()))
                type = element
            }
        }
        return offset
    }

    /// `per_cpu_sum(VAR.a.b[i])`: the path read on each possible CPU (`for_each_possible_cpu`: the bits of
    /// `__cpu_possible_mask` below `nr_cpu_ids`, both read now) and added up, like the kernel's per-CPU
    /// counters are summed. Needs memory (show), and data symbols in kallsyms.
    func perCPUSum(_ inner: Expr, _ e: Expr, _ source: String) throws -> Resolved {
        let nr = try resolveWithKallsyms(GlobalName(module: "vmlinux", name: "nr_cpu_ids"), e, source)
        let mask = try resolveWithKallsyms(GlobalName(module: "vmlinux", name: "__cpu_possible_mask"), e, source)
        guard case .constant(let count) = try settle(.load(.constant(nr.address), size: 4, signed: false)) else {
            throw fail("per_cpu_sum() reads nr_cpu_ids from memory: not in a script", e, source)
        }
        guard count > 0, count <= 1 << 16 else { throw fail("nr_cpu_ids is \(count)", e, source) }
        var cpus: [UInt64] = []
        for word in 0..<(count + 63) / 64 {
            guard case .constant(let bits) = try settle(.load(.constant(mask.address + word * 8), size: 8, signed: false)) else {
                throw fail("per_cpu_sum() reads __cpu_possible_mask from memory: not in a script", e, source)
            }
            for b in 0..<UInt64(64) where bits & (1 << b) != 0 && word * 64 + b < count { cpus.append(word * 64 + b) }
        }
        var sum: Value = .constant(0)
        var type: CType?
        for cpu in cpus {
            let r = try resolve(try Resolver.onCPU(inner, cpu, source), source)
            guard r.type.isScalar else { throw fail("per_cpu_sum() adds numbers, not \(r.type.name)", inner, source) }
            type = type ?? r.type
            sum = Value.plus(sum, try rvalue(r, inner, source))
        }
        guard let type else { throw fail("no possible CPU in __cpu_possible_mask", e, source) }
        // Summed in 64 bits: shown as the member's type widened to long or unsigned long.
        let signed = (try? type.record()).flatMap { $0 }.map { $0.1.isSigned } ?? false
        var wide = try unsignedLong
        if (try? type.size()) == 8 { wide = type } else if signed, let id = types.vmlinux.lookup("long int").first { wide = .btf(types.vmlinux, id) }
        return Resolved(type: wide, value: sum, note: "per_cpu_sum over \(cpus.count) possible CPUs")
    }

    /// `path` (members and indices down from a per-CPU variable's name) with the name replaced by
    /// `per_cpu(NAME, cpu)`.
    static func onCPU(_ path: Expr, _ cpu: UInt64, _ source: String) throws -> Expr {
        switch path {
        case let .symbol(_, r): return .perCPU(path, .number(cpu, range: r), range: r)
        case let .member(b, n, arrow, r): return .member(try onCPU(b, cpu, source), n, arrow: arrow, range: r)
        case let .index(b, i, r): return .index(try onCPU(b, cpu, source), i, range: r)
        default:
            throw ExpressionError.at("per_cpu_sum() takes a per-CPU variable's name and members of it (per_cpu_sum(VAR.member))", source: source, range: path.range)
        }
    }

    /// The value of a scalar (integer, enum, bool, pointer): a load of its place, or the value itself.
    public func rvalue(_ r: Resolved, _ e: Expr, _ source: String) throws -> Value {
        if let v = r.value { return v }
        guard let place = r.place else { throw fail("internal: neither place nor value", e, source) }
        if let error = untyped(r, e, member: nil, source) { throw error }
        // show reads an untyped global used as a number as its first bytes (at most 8), as an integer.
        if case .untyped(let size) = r.type, size > 0 { return .load(place, size: min(size, 8), signed: false) }
        guard r.type.isScalar else { throw fail("\(describe(e, source)) is a \(r.type.name), not a number or pointer", e, source) }
        let signed = (try? r.type.record()).flatMap { $0 }.map { $0.1.isSigned } ?? false
        if r.bitfieldSize > 0 {
            let bytes = (r.bitOffset + r.bitfieldSize + 7) / 8
            guard let width = [1, 2, 4, 8].first(where: { $0 >= bytes }) else { throw fail("bitfield spans more than 8 bytes", e, source) }
            return .bits(.load(place, size: width, signed: false), shift: r.bitOffset, width: r.bitfieldSize, signed: signed)
        }
        return .load(place, size: try r.type.size(), signed: signed)
    }

    /// `(target)b`: an untyped global takes the type in place; scalars convert; aggregates reinterpret memory.
    public func cast(_ b: Resolved, to target: CType, _ base: Expr, _ e: Expr, _ source: String) throws -> Resolved {
        let r = try target.resolved()
        // An untyped global takes the cast's type in place (its memory is now read as that type).
        if b.castReplacesType || { if case .untyped = b.type { return true } else { return false } }(), let place = b.place {
            let name = b.global?.symbol.name ?? b.note.map { String($0.prefix { $0 != " " }) } ?? "the symbol"
            if let w = try Resolver.castWarning(name: name, extent: b.extent, source: b.extentSource, target: target) { warn(w) }
            return Resolved(type: target, place: place, global: b.global, note: b.note)
        }
        if target.isScalar || { if case .pointer = r { return true } else { return false } }() {
            guard b.type.isScalar else {
                throw fail("can't convert \(b.type.name) to \(target.name) (take its address with '&' to reinterpret it)", e, source)
            }
            let v = try rvalue(b, base, source)
            let size = try target.size()
            let signed = (try? target.record()).flatMap { $0 }.map { $0.1.isSigned } ?? false
            return Resolved(type: target, value: size < 8 ? .convert(v, size: size, signed: signed) : v)
        }
        // Aggregates: reinterpret the object's memory, like *(T *)&x.
        guard let place = b.place else { throw fail("can't cast a computed value to \(target.name)", e, source) }
        return Resolved(type: target, place: place)
    }

    /// "T has no member N", with a hint.
    static func noMember(_ type: CType, _ name: String, note: String? = nil) -> String {
        var message = "\(type.name) has no member \(name)"
        if case .untyped = type { message = "\(note ?? "this symbol") has no known type, so no member \(name): give one with a cast, e.g. ((struct foo *)&sym)->\(name)" }
        if let close = type.memberNames().map({ ($0, editDistance($0, name)) }).filter({ $0.1 <= 2 }).min(by: { $0.1 < $1.1 })?.0 {
            message += " (did you mean \(close)?)"
        }
        return message
    }

    /// Levenshtein distance, for "did you mean" hints.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a.utf8), y = Array(b.utf8)
        var row = Array(0...y.count)
        for i in 1...max(1, x.count) where !x.isEmpty {
            var prev = row[0]
            row[0] = i
            for j in 1...max(1, y.count) where !y.isEmpty {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (x[i - 1] == y[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return x.isEmpty ? y.count : row[y.count]
    }
}
