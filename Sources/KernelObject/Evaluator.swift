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

    static let aliases: [String: String] = [
        "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
        "int8": "s8", "int16": "s16", "int32": "s32", "int64": "s64", "bool": "_Bool",
    ]

    func isTypeName(_ word: String) -> Bool {
        if Evaluator.aliases[word] != nil { return true }
        return types.vmlinux.lookup(word).contains { (try? types.vmlinux.kind(of: $0)) == .typedef || (try? types.vmlinux.kind(of: $0)) == .int }
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

    /// Resolves a type named in the expression.
    func resolveType(_ t: TypeName, _ e: Expr, _ source: String) throws -> CType {
        var base: CType
        let words = t.words
        if words == ["void"] {
            base = .btf(types.vmlinux, 0)
        } else if let name = Evaluator.baseTypeName(words) ?? (words.count == 1 && words[0] == "_Bool" ? "_Bool" : nil) {
            guard let id = types.vmlinux.lookup(name).first(where: { (try? types.vmlinux.kind(of: $0)) == .int }) else {
                throw fail("no base type \(name) in vmlinux BTF", e, source)
            }
            base = .btf(types.vmlinux, id)
        } else {
            var query = words.joined(separator: " ")
            if words.count == 1, let alias = Evaluator.aliases[words[0]] { query = alias }
            if words.count == 1 && !query.contains(" ") { query = "typedef " + query }
            if let m = t.module { query = m + ":" + query }
            do {
                let match = try types.resolve(query)
                base = .btf(match.btf, match.id)
            } catch {
                throw fail("\(error)".split(separator: "\n").first.map(String.init) ?? "unknown type \(t.text)", e, source)
            }
        }
        for _ in 0..<t.pointers { base = .pointer(base) }
        if let n = t.arrayCount { base = .array(base, count: n) }
        return base
    }

    func pointerTarget(_ type: CType) throws -> CType? {
        if case .pointer(let target) = try type.resolved() { return target }
        return nil
    }

    /// `unsigned long` of vmlinux.
    var unsignedLong: CType {
        get throws {
            guard let id = types.vmlinux.lookup("long unsigned int").first else { throw ExpressionError.plain("vmlinux BTF has no unsigned long") }
            return .btf(types.vmlinux, id)
        }
    }

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
            let target = try resolveType(t, e, source)
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
        guard let m = try b.type.member(name) else {
            let names = b.type.memberNames()
            var message = "\(b.type.name) has no member \(name)"
            if case .untyped = b.type { message = "\(b.note ?? "this symbol") has no known type, so no member \(name): give one with a cast, e.g. ((struct foo *)&sym)->\(name)" }
            if let close = names.map({ ($0, Evaluator.editDistance($0, name)) }).filter({ $0.1 <= 2 }).min(by: { $0.1 < $1.1 })?.0 {
                message += " (did you mean \(close)?)"
            }
            throw fail(message, e, source)
        }
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

    func cast(_ b: Object, to target: CType, _ e: Expr, _ source: String) throws -> Object {
        let r = try target.resolved()
        // An untyped symbol takes the cast's type in place (its memory is now read as that type).
        if case .untyped = b.type, let address = b.address {
            let want = UInt64(try target.size())
            let name = b.note.map { String($0.prefix { $0 != " " }) } ?? "the symbol"
            if let extent = b.extent, extent > 0, b.note?.contains("symbol table") == true, want != extent {
                warn("\(name) is \(extent) bytes (module symbol table) but \(target.name) is \(want) bytes")
            } else if let extent = b.extent, extent > 0, want > extent {
                warn("\(target.name) is \(want) bytes but the next kallsyms symbol is \(extent) bytes after \(name): it reads past \(name)")
            }
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

    /// The object a global names, typed as well as kreach can.
    func symbolObject(_ name: String, _ e: Expr, _ source: String, perCPU: Bool) throws -> (object: Object, symbol: KernelSymbol) {
        var symbol: KernelSymbol
        var moduleObject: ModuleObject?
        if let (module, bare) = Evaluator.moduleQualified(name), let mo = kernel.moduleObject(module) {
            let found = mo.objects(named: bare)
            if found.count == 1 {
                symbol = found[0]
                moduleObject = mo
            } else {
                symbol = try resolveWithKallsyms(name, e, source)
            }
        } else {
            symbol = try resolveWithKallsyms(name, e, source)
        }
        let object = symbol.moduleName
        // A BTF VAR of that name in the symbol's own object.
        let btf = object == "vmlinux" ? types.vmlinux : (types.moduleNames.contains(object) ? try types.module(object) : nil)
        if let btf {
            for id in btf.lookup(symbol.name) where try btf.kind(of: id) == .variable && btf.owner(of: id) === btf {
                let v = try btf.type(id)
                let isPerCPU = try isPerCPUVariable(btf, id)
                if isPerCPU && !perCPU {
                    throw fail("\(symbol.name) is a per-CPU variable: read one CPU's copy with per_cpu(\(name), CPU)", e, source)
                }
                var o = Object(type: .btf(btf, v.target), address: symbol.address)
                o.note = symbol.name
                return (o, symbol)
            }
        }
        if perCPU { throw fail("\(symbol.name) is not a per-CPU variable (no BTF VAR in a .data..percpu section)", e, source) }
        if symbol.isText {
            var prototype = ""
            if let btf, let fn = btf.lookup(symbol.baseName).first(where: { (try? btf.kind(of: $0)) == .function }) {
                prototype = ": " + btf.describe(fn)
            }
            var o = Object(type: .untyped(size: 0), address: symbol.address)
            o.note = "\(symbol.name) (a function\(prototype))"
            return (o, symbol)
        }
        if let moduleObject, let type = try parameterTypeFromObject(moduleObject, symbol.name) {
            var o = Object(type: type, address: symbol.address)
            o.note = "\(symbol.name), a module parameter"
            return (o, symbol)
        }
        if moduleObject == nil, symbol.module != nil, let type = try? parameters.type(of: symbol) {
            var o = Object(type: type, address: symbol.address)
            o.note = "\(symbol.name), a module parameter"
            return (o, symbol)
        }
        // No type: raw bytes. The size is the .ko symbol table's (exact), else at most the gap to the next
        // kallsyms symbol (padding included); reads are capped (`Evaluator.untypedReadLimit`), and the note says so.
        var extent: UInt64?
        var origin: String
        var readLimit = Evaluator.untypedReadLimit
        if let module = symbol.module, let s = moduleObject?.size(of: symbol.name) ?? kernel.moduleSymbolSize(module: module, symbol: symbol.name) {
            extent = s
            origin = "\(s) bytes from the module's symbol table"
        } else if let next = nextSymbolAddress(after: symbol) {
            extent = next - symbol.address
            origin = "at most \(next - symbol.address) bytes, up to the next kallsyms symbol"
            readLimit = 8
        } else {
            origin = "size unknown (no symbol after it)"
        }
        let size = Int(min(extent ?? 8, readLimit))
        if let extent, extent > UInt64(size) { origin += "; showing the first \(size)" }
        var o = Object(type: .untyped(size: max(size, 1)), address: symbol.address)
        o.note = "\(symbol.name) (no type known; \(origin))"
        o.extent = extent
        return (o, symbol)
    }

    func resolveWithKallsyms(_ name: String, _ e: Expr, _ source: String) throws -> KernelSymbol {
        do { return try symbols.resolve(name) } catch let error as SymbolError {
            // Candidates are listed in the notation the user wrote (scripts need mod`name#N).
            let written: SymbolNotation = describe(e, source).contains("`") ? .backtick : .colon
            throw ExpressionError.at(error.description(written), source: source, range: e.range)
        } catch {
            throw ExpressionError.at("\(error)", source: source, range: e.range)
        }
    }

    /// "brd:rd_size" / "brd`rd_size" -> ("brd", "rd_size"); nil for vmlinux, unqualified names and #N/@ADDR choosers.
    static func moduleQualified(_ text: String) -> (String, String)? {
        guard let colon = text.firstIndex(of: ":"), !text.contains("#"), !text.contains("@") else { return nil }
        let module = String(text[..<colon]), name = String(text[text.index(after: colon)...])
        guard module != "vmlinux", !module.isEmpty, !name.isEmpty, !Glob.isPattern(text) else { return nil }
        return (module, name)
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
        guard let typeName = types[name]?.cName else { return nil }
        let base = typeName == "char *" ? "char" : typeName
        guard let id = vmlinux.lookup(base).first(where: { (try? vmlinux.kind(of: $0)) == .int }) else { return nil }
        return typeName == "char *" ? .pointer(.btf(vmlinux, id)) : .btf(vmlinux, id)
    }

    func isPerCPUVariable(_ btf: BTF, _ variable: TypeID) throws -> Bool {
        for id in btf.lookup(".data..percpu") where try btf.kind(of: id) == .dataSection {
            if try btf.type(id).sectionVariables.contains(where: { $0.type == variable }) { return true }
        }
        return false
    }

    /// How much of an untyped global with a known size is read and shown raw (a cast reads the whole type).
    public static let untypedReadLimit: UInt64 = 4096

    func nextSymbolAddress(after symbol: KernelSymbol) -> UInt64? {
        (try? symbols)?.kallsyms.nextAddress(after: symbol.address)
    }

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
