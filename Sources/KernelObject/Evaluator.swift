import BPF
import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// Evaluates expressions against the kernel: resolves symbols and their types, follows pointers and
/// members through BTF, reads memory through a `KernelMemory` (which only reads).
///
/// Where a global's type comes from, in order: an explicit cast in the expression; a BTF VAR of that
/// name in the symbol's object (per-CPU variables, and every global on kernels whose BTF carries them);
/// for module globals, the module's parameter table (`struct module`'s kp[]: the param_ops_* of each
/// parameter gives its C type); otherwise the symbol is untyped raw memory whose size comes from the
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
        if case let .container(helper, t, head, member, range) = expr {
            return .entries(try walk(helper, t, head, member, range, source), helper: helper)
        }
        return .object(try eval(expr, source))
    }

    /// Evaluates `field` (a member path such as `pid`, `comm`, `mm->pgd`) against `entry`.
    public func evaluate(field: String, of entry: Object) throws -> Object {
        bindings["__kreach_entry"] = entry
        defer { bindings["__kreach_entry"] = nil }
        let first = field.first.map { $0 == "[" || $0 == "-" } ?? false
        let source = "__kreach_entry" + (first ? "" : ".") + field
        let expr = try ExpressionParser.parse(source, isTypeName: { [weak self] in self?.isTypeName($0) ?? false })
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

    func eval(_ e: Expr, _ source: String) throws -> Object {
        switch e {
        case let .number(n, _):
            return try Object.value(n, type: try unsignedLong)
        case .current:
            let task = try memory.currentTask()
            let query = TypeQuery(module: "vmlinux", kinds: [.structure], name: "task_struct", id: nil)
            guard let t = try types.find(query).first else { throw fail("no struct task_struct in vmlinux BTF", e, source) }
            var o = try Object.value(task, type: .pointer(.btf(t.btf, t.id)))
            o.note = "current"
            return o
        case let .symbol(name, _):
            if let bound = bindings[name] { return bound }
            return try symbolObject(name, e, source, perCPU: false).object
        case let .member(base, name, arrow, _):
            var b = try eval(base, source)
            if arrow {
                guard let target = try pointerTarget(b.type) else {
                    throw fail("'->' needs a pointer, but \(describe(base, source)) is \(b.type.name) (use '.')", e, source)
                }
                b = try deref(b, target, e, source)
            } else if try pointerTarget(b.type) != nil {
                throw fail("\(describe(base, source)) is a pointer (\(b.type.name)): use '->'", e, source)
            }
            return try member(b, name, e, source)
        case let .index(base, index, _):
            let b = try eval(base, source)
            let i = Int64(bitPattern: try eval(index, source).scalar(memory))
            switch try b.type.resolved() {
            case let .array(element, count):
                if i < 0 || i >= Int64(count) { warn("index \(i) is outside \(b.type.name) (\(count) elements)") }
                guard let address = b.address else { throw fail("can't index a computed array", e, source) }
                return Object(type: element, address: offset(address, i, try element.size()))
            case let .pointer(target):
                let p = try b.scalar(memory)
                guard p != 0 else { throw fail("NULL pointer: \(describe(base, source)) is 0", e, source) }
                return Object(type: target, address: offset(p, i, try target.size()))
            default:
                throw fail("can't index \(describe(base, source)), a \(b.type.name)", e, source)
            }
        case let .deref(base, _):
            let b = try eval(base, source)
            guard let target = try pointerTarget(b.type) else {
                throw fail("can't dereference \(describe(base, source)), a \(b.type.name)", e, source)
            }
            return try deref(b, target, e, source)
        case let .addressOf(base, _):
            let b = try eval(base, source)
            guard let address = b.address else { throw fail("\(describe(base, source)) has no address", e, source) }
            guard b.bitfieldSize == 0 else { throw fail("can't take the address of a bitfield", e, source) }
            let type: CType = { if case .untyped = b.type { return .pointer(.btf(types.vmlinux, 0)) } else { return .pointer(b.type) } }()
            return try Object.value(address, type: type)
        case let .negate(base, _):
            let b = try eval(base, source)
            guard b.type.isScalar else { throw fail("can't negate \(b.type.name)", e, source) }
            return try Object.value(0 &- b.scalar(memory), type: b.type)
        case let .cast(t, base, _):
            let target = try resolveType(t, near: Resolver.module(of: base), e, source)
            let b = try eval(base, source)
            return try cast(b, to: target, e, source)
        case let .perCPU(variable, cpu, _):
            guard case let .symbol(name, _) = variable else { throw fail("per_cpu() takes a per-CPU variable's name", variable, source) }
            let (object, symbol) = try symbolObject(name, variable, source, perCPU: true)
            let n = try eval(cpu, source).scalar(memory)
            let offsets = try symbols.resolve("vmlinux:__per_cpu_offset")
            if let nr = try? symbols.resolve("vmlinux:nr_cpu_ids"), let count = try? Object(type: try unsignedLong, address: nr.address).load(memory) {
                let cpus = UInt64(count[0]) | UInt64(count[1]) << 8 | UInt64(count[2]) << 16 | UInt64(count[3]) << 24
                guard n < cpus else { throw fail("CPU \(n) does not exist (nr_cpu_ids is \(cpus))", cpu, source) }
            }
            let base = try Object(type: try unsignedLong, address: offsets.address + n * 8).scalar(memory)
            var o = Object(type: object.type, address: base &+ symbol.address)
            o.note = "per_cpu(\(symbol.name), \(n))"
            return o
        case .container:
            throw fail("a container walk can only be the whole expression", e, source)
        case .opaque:
            throw fail("\(describe(e, source)) can only be evaluated by bpftrace", e, source)
        }
    }

    func offset(_ address: UInt64, _ index: Int64, _ size: Int) -> UInt64 {
        address &+ UInt64(bitPattern: index &* Int64(size))
    }

    func describe(_ e: Expr, _ source: String) -> String {
        let chars = Array(source)
        let r = e.range.clamped(to: 0..<chars.count)
        return String(chars[r])
    }

    func deref(_ b: Object, _ target: CType, _ e: Expr, _ source: String) throws -> Object {
        let p = try b.scalar(memory)
        guard p != 0 else { throw fail("NULL pointer dereference: the pointer is 0", e, source) }
        if case let .btf(_, id) = target, id == 0 { throw fail("can't dereference a void pointer; cast it first", e, source) }
        return Object(type: target, address: p)
    }

    func member(_ b: Object, _ name: String, _ e: Expr, _ source: String) throws -> Object {
        guard let m = try b.type.member(name) else { throw fail(Resolver.noMember(b.type, name, note: b.note), e, source) }
        var o: Object
        if let address = b.address {
            o = Object(type: m.type, address: address + UInt64(m.bitOffset / 8))
        } else if let bytes = b.bytes {
            let start = m.bitOffset / 8
            let size = m.bitfieldSize > 0 ? (m.bitfieldSize + m.bitOffset % 8 + 7) / 8 : try m.type.size()
            guard start + size <= bytes.count else { throw fail("member \(name) lies outside the value", e, source) }
            o = Object(type: m.type, address: nil, bytes: Array(bytes[start..<(start + size)]))
        } else {
            throw fail("internal: no address or bytes", e, source)
        }
        if m.bitfieldSize > 0 {
            o.bitOffset = m.bitOffset % 8
            o.bitfieldSize = m.bitfieldSize
        }
        return o
    }

    func cast(_ b: Object, to target: CType, _ e: Expr, _ source: String) throws -> Object {
        let r = try target.resolved()
        // An untyped symbol takes the cast's type in place (its memory is now read as that type).
        if case .untyped = b.type, let address = b.address {
            let name = b.note.map { String($0.prefix { $0 != " " }) } ?? "the symbol"
            if let w = try Resolver.castWarning(name: name, extent: b.extent, source: b.extentSource, target: target) { warn(w) }
            var o = Object(type: target, address: address)
            o.note = b.note
            return o
        }
        if target.isScalar || { if case .pointer = r { return true } else { return false } }() {
            guard b.type.isScalar else {
                throw fail("can't convert \(b.type.name) to \(target.name) (take its address with '&' to reinterpret it)", e, source)
            }
            return try Object.value(b.scalar(memory), type: target)
        }
        // Aggregates: reinterpret the object's memory, like *(T *)&x.
        guard let address = b.address else { throw fail("can't cast a computed value to \(target.name)", e, source) }
        return Object(type: target, address: address)
    }

    // MARK: - Symbols

    /// The object a global names, typed as well as kreach can (`Resolver.symbol`); a module global without its
    /// .ko is typed from `struct module`'s parameter table in memory when it is a parameter.
    func symbolObject(_ name: String, _ e: Expr, _ source: String, perCPU: Bool) throws -> (object: Object, symbol: KernelSymbol) {
        let g = try resolver.symbol(name, e, source, perCPU: perCPU)
        if g.needsParameterTable, let type = try? parameters.type(of: g.symbol) {
            var o = Object(type: type, address: g.symbol.address)
            o.note = "\(g.symbol.name), a module parameter"
            return (o, g.symbol)
        }
        var o = Object(type: g.type, address: g.symbol.address)
        o.note = g.note
        o.extent = g.extent
        o.extentSource = g.extentSource
        return (o, g.symbol)
    }

    /// How much of an untyped global with a known size is read and shown raw (a cast reads the whole type).
    public static let untypedReadLimit = Resolver.untypedReadLimit

    // MARK: - Containers

    func readPointer(_ address: UInt64) throws -> UInt64 {
        let b = try memory.read(address, count: 8)
        return b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// list_for_each_entry / hlist_for_each_entry / rbtree_inorder_for_each_entry, with cycle
    /// detection and `maxEntries`.
    func walk(_ helper: String, _ t: TypeName, _ headExpr: Expr, _ memberName: String, _ range: Range<Int>, _ source: String) throws -> [Object] {
        let whole = Expr.number(0, range: range)
        let entryType = try resolveType(t, whole, source)
        var name = memberName, index = 0
        if let open = memberName.firstIndex(of: "[") {
            name = String(memberName[..<open])
            index = Int(memberName[memberName.index(after: open)...].dropLast()) ?? 0
        }
        guard let link = try entryType.member(name) else {
            throw ExpressionError.at("\(entryType.name) has no member \(name)", source: source, range: range)
        }
        var linkOffset = UInt64(link.bitOffset / 8)
        if memberName.contains("[") {
            guard case let .array(element, count) = try link.type.resolved(), index < count else {
                throw ExpressionError.at("\(memberName): \(name) is not an array with that many elements", source: source, range: range)
            }
            linkOffset += UInt64(index * (try element.size()))
        }
        var head = try eval(headExpr, source)
        if let target = try pointerTarget(head.type) { head = try deref(head, target, headExpr, source) }
        guard let headAddress = head.address else { throw fail("the list head has no address", headExpr, source) }
        let headType = (try? head.type.record()).flatMap { $0?.1.name } ?? ""
        var entries: [Object] = []
        var seen = Set<UInt64>()
        func add(_ node: UInt64) throws -> Bool {
            guard seen.insert(node).inserted else {
                throw ExpressionError.at("\(helper): the list loops back to 0x\(String(node, radix: 16)) after \(entries.count) entries", source: source, range: range)
            }
            if entries.count >= maxEntries {
                warn("\(helper): stopped after \(maxEntries) entries (--max)")
                return false
            }
            entries.append(Object(type: entryType, address: node &- linkOffset))
            return true
        }
        switch helper {
        case "list_for_each_entry":
            guard headType == "list_head" else { throw fail("list_for_each_entry needs a struct list_head, not \(head.type.name)", headExpr, source) }
            var node = try readPointer(headAddress)
            while node != headAddress {
                guard node != 0 else { throw ExpressionError.at("\(helper): NULL next pointer after \(entries.count) entries", source: source, range: range) }
                guard try add(node) else { break }
                node = try readPointer(node)
            }
        case "hlist_for_each_entry":
            guard headType == "hlist_head" else { throw fail("hlist_for_each_entry needs a struct hlist_head, not \(head.type.name)", headExpr, source) }
            var node = try readPointer(headAddress)
            while node != 0 {
                guard try add(node) else { break }
                node = try readPointer(node)
            }
        default:  // rbtree_inorder_for_each_entry
            guard headType == "rb_root" || headType == "rb_root_cached" else {
                throw fail("rbtree_inorder_for_each_entry needs a struct rb_root, not \(head.type.name)", headExpr, source)
            }
            // rb_node: __rb_parent_color, rb_right, rb_left (offsets from BTF).
            let rbNode = try resolveType(TypeName(module: nil, words: ["struct", "rb_node"], pointers: 0, arrayCount: nil, text: "struct rb_node"), whole, source)
            guard let left = try rbNode.member("rb_left"), let right = try rbNode.member("rb_right") else {
                throw fail("struct rb_node has no rb_left/rb_right", headExpr, source)
            }
            var stack: [UInt64] = []
            var node = try readPointer(headAddress)
            walking: while node != 0 || !stack.isEmpty {
                while node != 0 {
                    guard stack.count < 256 else { throw ExpressionError.at("\(helper): tree deeper than 256 (corrupt?)", source: source, range: range) }
                    stack.append(node)
                    node = try readPointer(node + UInt64(left.bitOffset / 8))
                }
                guard let top = stack.popLast() else { break }
                guard try add(top) else { break walking }
                node = try readPointer(top + UInt64(right.bitOffset / 8))
            }
        }
        return entries
    }
}
