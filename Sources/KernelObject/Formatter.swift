import Memory
import BTF
import KernelSymbols
import KreachSupport

/// How objects are printed.
public struct FormatOptions {
    /// Nesting levels of structs/arrays expanded before `{...}`.
    public var depth = 6 {
        didSet { depth = min(max(0, depth), ExpressionParser.maxDepth) }  // each level recurses once
    }
    /// Integers in hex.
    public var hex = false
    /// Array elements printed at most.
    public var maxElements = 128
    public init() {}
}

/// Prints objects the way drgn does: `(int)16384`, `(char [16])"swapper/0"`,
/// `*(struct nlm_file *)0xffff… = { .f_count = (unsigned int)1, … }`, pointers with `<symbol+0xoff>`.
///
/// It reads memory (the objects, strings behind `char *`) and symbols (to name pointers) itself, and keeps
/// what the user should be told (untyped symbols, arrays cut at `maxElements`) in `notes`, which the
/// caller takes with `takeNotes()`.
public final class ObjectFormatter {
    let memory: KernelMemory
    /// The symbol table, asked for only when a pointer is printed (reading kallsyms is slow); nil: none.
    let symbols: () -> SymbolTable?
    public var options: FormatOptions
    /// Notes gathered since the last `takeNotes()`, each once, in order.
    public private(set) var notes: [String] = []

    public init(memory: KernelMemory, symbols: @escaping () -> SymbolTable?, options: FormatOptions = FormatOptions()) {
        self.memory = memory
        self.symbols = symbols
        self.options = options
    }

    /// A formatter reading through `evaluator`'s memory and symbols.
    public convenience init(evaluator: Evaluator, options: FormatOptions = FormatOptions()) {
        self.init(memory: evaluator.memory, symbols: { [weak evaluator] in try? evaluator?.symbols }, options: options)
    }

    /// The notes gathered so far; clears them.
    public func takeNotes() -> [String] {
        defer { notes = [] }
        return notes
    }

    func note(_ text: String) { if !notes.contains(text) { notes.append(text) } }

    /// One object, with its type, as `kreach show` prints it.
    public func text(_ object: Object) throws -> String {
        let o = try loaded(object)
        if case .untyped = o.type { return try raw(o) }
        let aggregate = try isAggregate(o.type)
        if aggregate, let address = o.address, o.bitfieldSize == 0 {
            return "*(\(CType.pointer(o.type).name))0x\(String(address, radix: 16)) = " + (try value(o, indent: 0, depth: 0))
        }
        return "(\(o.type.name))" + (try value(o, indent: 0, depth: 0))
    }

    /// The value only (no type), on one line: for `--fields` and `watch`.
    public func compact(_ object: Object) throws -> String {
        let o = try loaded(object)
        if case .untyped = o.type { return try raw(o) }
        return try value(o, indent: -1, depth: 0)
    }

    /// Reads the whole object once; members are then slices of its bytes.
    func loaded(_ o: Object) throws -> Object {
        var copy = o
        if copy.bytes == nil {
            if case .untyped(let size) = o.type, size == 0 { return o }
            let size = try o.type.size()
            guard size <= 1 << 20 else { throw ExpressionError.plain("\(o.type.name) is \(size) bytes; print a member instead") }
            copy.bytes = try o.load(memory)
        }
        return copy
    }

    /// Structs, unions and arrays (char arrays print as strings, so they count as scalars here).
    func isAggregate(_ t: CType) throws -> Bool {
        switch try t.resolved() {
        case .array(let element, _):
            if let (_, et) = try element.record(), et.kind == .int, et.size == 1 { return false }
            return true
        case .btf(let b, let id):
            let k = try b.kind(of: id)
            return k == .structure || k == .union
        default: return false
        }
    }

    func sub(_ parent: Object, _ type: CType, bitOffset: Int, bitfieldSize: Int) throws -> Object {
        let start = bitOffset / 8
        let size = bitfieldSize > 0 ? (bitfieldSize + bitOffset % 8 + 7) / 8 : try type.size()
        var o = Object(type: type, address: parent.address.map { $0 + UInt64(start) })
        if let bytes = parent.bytes, start + size <= bytes.count {
            o.bytes = Array(bytes[start..<(start + size)])
        }
        if bitfieldSize > 0 {
            o.bitOffset = bitOffset % 8
            o.bitfieldSize = bitfieldSize
        }
        return o
    }

    /// How `compact` prints a BTF integer (a bool too): decided once per type, so the many values of a walk's
    /// `--fields` skip the type lookups.
    public struct IntegerFormat: Sendable {
        let signed: Bool
        let size: Int
        let isBool: Bool
    }

    /// The format of `type` when it is a BTF integer (through typedefs and qualifiers); nil otherwise.
    public func integerFormat(of type: CType) throws -> IntegerFormat? {
        guard let (_, r) = try type.record(), r.kind == .int, (1...8).contains(r.size) else { return nil }
        return IntegerFormat(signed: r.isSigned, size: Int(r.size), isBool: r.intEncoding & 4 != 0)
    }

    /// An integer's bytes `v` (little-endian, zero-extended), as `compact` prints an object of that type.
    public func compact(_ v: UInt64, as format: IntegerFormat) -> String {
        if format.isBool { return v != 0 ? "true" : "false" }
        return integer(format.signed ? Object.signExtended(v, size: format.size) : v, signed: format.signed, size: format.size)
    }

    func integer(_ v: UInt64, signed: Bool, size: Int) -> String {
        if options.hex { return "0x" + String(size < 8 ? v & ((1 << (UInt64(size) * 8)) - 1) : v, radix: 16) }
        return signed ? String(Int64(bitPattern: v)) : String(v)
    }

    func pointer(_ v: UInt64, to target: CType) -> String {
        var text = "0x" + String(v, radix: 16)
        // <symbol+0xoff> only near a symbol: kallsyms has no sizes, and a far offset names nothing.
        if v != 0, let table = symbols(), let (_, off) = table.kallsyms.nearest(to: v, moduleRanges: table.moduleRanges), off < 0x10000,
           let where_ = table.describe(address: v) {
            text += " <\(where_)>"
        }
        // char *: the string too, when it can be read.
        if v != 0, let (_, t) = try? target.record(), t.kind == .int, t.size == 1,
           let bytes = try? memory.read(v, count: 256) {
            text += " = " + quoted(bytes)
        }
        return text
    }

    func quoted(_ bytes: [UInt8]) -> String {
        var s = "\""
        for b in bytes.prefix(while: { $0 != 0 }) {
            switch b {
            case 0x22: s += "\\\""
            case 0x5c: s += "\\\\"
            case 0x0a: s += "\\n"
            case 0x09: s += "\\t"
            case 0x20...0x7e: s.unicodeScalars.append(UnicodeScalar(b))
            default: s += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
            }
        }
        return s + "\""
    }

    func raw(_ o: Object) throws -> String {
        guard case .untyped(let size) = o.type, let address = o.address else { return "?" }
        if size == 0 { return "(function)0x\(String(address, radix: 16))" + (o.note.map { " <\($0)>" } ?? "") }
        let bytes = try o.load(memory)
        let hex = bytes.prefix(64).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
        var text = "(untyped, \(size) bytes at 0x\(String(address, radix: 16)))" + hex + (bytes.count > 64 ? " ..." : "")
        if [1, 2, 4, 8].contains(size) {
            var v: UInt64 = 0
            for (k, b) in bytes.enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
            text += " = \(v)"
        }
        let name = o.note.map { String($0.prefix { $0 != " " }) } ?? "SYMBOL"
        note("\(o.note ?? "this symbol"): give its type with a cast, e.g. (int)\(name) or (struct foo *)&\(name)")
        return text
    }

    func value(_ o: Object, indent: Int, depth: Int) throws -> String {
        let t = try o.type.resolved()
        switch t {
        case .untyped:
            return try raw(o)
        case .pointer(let target):
            return pointer(try o.scalar(memory), to: target)
        case let .array(element, count):
            let elementSize = try element.size()
            if let (_, et) = try element.record(), et.kind == .int, et.size == 1, (et.intEncoding & 2 != 0 || et.name.hasSuffix("char")) {
                return quoted(o.bytes ?? [])
            }
            if depth >= options.depth { return "{ ... }" }
            var items: [String] = []
            var lastNonZero = -1
            for i in 0..<min(count, options.maxElements) {
                let e = try sub(o, element, bitOffset: i * elementSize * 8, bitfieldSize: 0)
                if e.bytes?.contains(where: { $0 != 0 }) ?? true { lastNonZero = i }
                items.append(try value(e, indent: indent < 0 ? -1 : indent + 1, depth: depth + 1))
            }
            // Like drgn, trailing zero elements are left out.
            items = Array(items.prefix(lastNonZero + 1))
            if count > options.maxElements && lastNonZero == options.maxElements - 1 {
                items.append("...")
                note("\(o.type.name): showing the first \(options.maxElements) of \(count) elements")
            }
            return "{ " + items.joined(separator: ", ") + (items.isEmpty ? "}" : " }")
        case let .btf(btf, id):
            let r = try btf.type(id)
            switch r.kind {
            case .int:
                let v = try o.scalar(memory)
                if r.intEncoding & 4 != 0 { return v != 0 ? "true" : "false" }
                return integer(v, signed: r.isSigned, size: Int(r.size))
            case .enumeration, .enum64:
                let v = try o.scalar(memory)
                if let e = r.enumerators.first(where: { $0.bits == v || (r.size < 8 && $0.bits & ((1 << (UInt64(r.size) * 8)) - 1) == v & ((1 << (UInt64(r.size) * 8)) - 1)) }) {
                    return e.name
                }
                return integer(v, signed: r.isSigned, size: Int(r.size))
            case .float:
                let bytes = o.bytes ?? []
                var v: UInt64 = 0
                for (k, b) in bytes.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
                return r.size == 4 ? String(Float(bitPattern: UInt32(truncatingIfNeeded: v))) : String(Double(bitPattern: v))
            case .structure, .union:
                if depth >= options.depth { return "{ ... }" }
                var lines: [String] = []
                try members(o, r, btf, baseBits: 0, indent: indent, depth: depth, into: &lines)
                if indent < 0 { return "{ " + lines.joined(separator: ", ") + " }" }
                let pad = String(repeating: "\t", count: indent)
                return "{\n" + lines.map { pad + "\t" + $0 + ",\n" }.joined() + pad + "}"
            case .functionProto:
                return "(function)"
            default:
                return "?"
            }
        }
    }

    /// Anonymous members nest at most this deep (malformed BTF could make a cycle of them).
    static let maxAnonymousNesting = 32

    private func members(_ o: Object, _ r: BTFType, _ btf: BTF, baseBits: Int, indent: Int, depth: Int, into lines: inout [String], anonymous: Int = 0) throws {
        guard anonymous < ObjectFormatter.maxAnonymousNesting else {
            throw ExpressionError.plain("\(r.name.isEmpty ? "an anonymous member" : r.name): anonymous members nest deeper than \(ObjectFormatter.maxAnonymousNesting) (malformed BTF?)")
        }
        for m in r.members {
            let bits = baseBits + Int(m.bitOffset)
            let mt = CType.btf(btf, m.type)
            let child = try sub(o, mt, bitOffset: bits, bitfieldSize: Int(m.bitfieldSize))
            if m.name.isEmpty, let (b2, inner) = try mt.record(), inner.kind == .structure || inner.kind == .union {
                // Anonymous struct/union: its members are the parent's, as in C.
                try members(o, inner, b2, baseBits: bits, indent: indent, depth: depth, into: &lines, anonymous: anonymous + 1)
                continue
            }
            let text = try value(child, indent: indent < 0 ? -1 : indent + 1, depth: depth + 1)
            lines.append(".\(m.name) = (\(mt.name))\(text)")
        }
    }

    // MARK: - JSON

    public func json(_ object: Object) throws -> JSON {
        let o = try loaded(object)
        return try jsonValue(o, depth: 0)
    }

    func jsonValue(_ o: Object, depth: Int) throws -> JSON {
        switch try o.type.resolved() {
        case .untyped(let size):
            if size == 0 { return .object([("function", .string(o.note ?? ""))]) }
            let bytes = try o.load(memory)
            return .object([("raw", .string(bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()))])
        case .pointer:
            return .string("0x" + String(try o.scalar(memory), radix: 16))
        case let .array(element, count):
            let elementSize = try element.size()
            if let (_, et) = try element.record(), et.kind == .int, et.size == 1, (et.intEncoding & 2 != 0 || et.name.hasSuffix("char")) {
                return .string(String(decoding: (o.bytes ?? []).prefix { $0 != 0 }, as: UTF8.self))
            }
            if depth >= options.depth { return .null }
            var items: [JSON] = []
            if count > options.maxElements { note("\(o.type.name): showing the first \(options.maxElements) of \(count) elements") }
            for i in 0..<min(count, options.maxElements) {
                items.append(try jsonValue(try sub(o, element, bitOffset: i * elementSize * 8, bitfieldSize: 0), depth: depth + 1))
            }
            return .array(items)
        case let .btf(btf, id):
            let r = try btf.type(id)
            switch r.kind {
            case .int:
                let v = try o.scalar(memory)
                if r.intEncoding & 4 != 0 { return .bool(v != 0) }
                return r.isSigned ? .int(Int64(bitPattern: v)) : .uint(v)
            case .enumeration, .enum64:
                let v = try o.scalar(memory)
                if let e = r.enumerators.first(where: { $0.bits == v }) { return .string(e.name) }
                return r.isSigned ? .int(Int64(bitPattern: v)) : .uint(v)
            case .structure, .union:
                if depth >= options.depth { return .null }
                var fields: [(String, JSON)] = []
                try jsonMembers(o, r, btf, baseBits: 0, depth: depth, into: &fields)
                return .object(fields)
            default:
                return .null
            }
        }
    }

    private func jsonMembers(_ o: Object, _ r: BTFType, _ btf: BTF, baseBits: Int, depth: Int, into fields: inout [(String, JSON)], anonymous: Int = 0) throws {
        guard anonymous < ObjectFormatter.maxAnonymousNesting else {
            throw ExpressionError.plain("\(r.name.isEmpty ? "an anonymous member" : r.name): anonymous members nest deeper than \(ObjectFormatter.maxAnonymousNesting) (malformed BTF?)")
        }
        for m in r.members {
            let bits = baseBits + Int(m.bitOffset)
            let mt = CType.btf(btf, m.type)
            if m.name.isEmpty, let (b2, inner) = try mt.record(), inner.kind == .structure || inner.kind == .union {
                try jsonMembers(o, inner, b2, baseBits: bits, depth: depth, into: &fields, anonymous: anonymous + 1)
                continue
            }
            fields.append((m.name, try jsonValue(try sub(o, mt, bitOffset: bits, bitfieldSize: Int(m.bitfieldSize)), depth: depth + 1)))
        }
    }
}
