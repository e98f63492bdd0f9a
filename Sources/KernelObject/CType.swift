import BTF

/// A C type as expressions use it: a BTF type of some object, or a pointer/array built on one
/// (a cast can name `struct foo **` even when BTF has no such pointer type), or no type at all.
public indirect enum CType {
    case btf(BTF, TypeID)
    case pointer(CType)
    case array(CType, count: Int)
    /// A symbol whose type is unknown: `size` bytes of raw memory.
    case untyped(size: Int)

    /// `void` of vmlinux's BTF.
    static func void(_ btf: BTF) -> CType { .btf(btf, 0) }

    /// Skips typedefs and modifiers and turns BTF pointers and arrays into `.pointer`/`.array`.
    public func resolved() throws -> CType {
        guard case let .btf(btf, id) = self else { return self }
        let r = try btf.resolve(id)
        let t = try btf.type(r)
        switch t.kind {
        case .pointer: return .pointer(.btf(btf, t.target))
        case .array: return .array(.btf(btf, t.arrayElement), count: Int(t.arrayCount))
        default: return .btf(btf, r)
        }
    }

    /// The resolved BTF record, when the type is a BTF type (after resolution).
    public func record() throws -> (BTF, BTFType)? {
        guard case let .btf(btf, id) = try resolved() else { return nil }
        return (btf, try btf.type(id))
    }

    public func size() throws -> Int {
        switch self {
        case .btf(let btf, let id):
            if id == 0 { return 1 }  // void: GNU C's sizeof(void), for pointer arithmetic
            return Int(try btf.size(of: id))
        case .pointer(let target):
            // The size of `long` in the BTF the pointed-to type belongs to (BTF.pointerSize, as libbpf decides it).
            guard let btf = target.btf else { throw ExpressionError.plain("a pointer to untyped memory has no BTF to take the pointer size from") }
            return Int(btf.pointerSize)
        case .array(let element, let count):
            let (total, overflow) = try element.size().multipliedReportingOverflow(by: count)
            guard !overflow else { throw ExpressionError.plain("array size overflows") }
            return total
        case .untyped(let size): return size
        }
    }

    /// The C spelling, e.g. `struct task_struct *`, `char [16]`, `int`.
    public var name: String { declaration("") }

    public func declaration(_ declarator: String) -> String {
        switch self {
        case .btf(let btf, let id):
            return (try? btf.cDeclaration(id, declarator)) ?? "(type id \(id))"
        case .pointer(let target):
            if case .array = target { return target.declaration("(*" + declarator + ")") }
            if case let .btf(btf, id) = target, let kind = try? btf.kind(of: btf.skipModifiers(id)),
               kind == .functionProto || kind == .array {
                return target.declaration("(*" + declarator + ")")
            }
            return target.declaration("*" + declarator)
        case .array(let element, let count):
            return element.declaration(declarator + "[\(count)]")
        case .untyped(let size):
            return "(untyped, \(size) bytes)" + (declarator.isEmpty ? "" : " " + declarator)
        }
    }

    /// The BTF the type belongs to (for building related types); nil for untyped.
    var btf: BTF? {
        switch self {
        case .btf(let b, _): return b
        case .pointer(let t), .array(let t, _): return t.btf
        case .untyped: return nil
        }
    }

    var isPointer: Bool { if case .pointer = (try? resolved()) ?? self { return true } else { return false } }

    /// Integer-like (int, enum, bool, pointer).
    public var isScalar: Bool {
        guard let r = try? resolved() else { return false }
        switch r {
        case .pointer: return true
        case .btf(let b, let id):
            guard let k = try? b.kind(of: id) else { return false }
            return k == .int || k == .enumeration || k == .enum64
        default: return false
        }
    }

    /// A member by name, looking through anonymous struct/union members the way C does.
    /// Returns the member's type and its bit offset from the start of this type.
    func member(_ name: String) throws -> (type: CType, bitOffset: Int, bitfieldSize: Int)? {
        guard let (btf, t) = try record(), t.kind == .structure || t.kind == .union else { return nil }
        return try BTFMemberSearch.find(name, in: t, btf: btf, depth: 0)
    }

    /// Member names, for "did you mean" hints.
    func memberNames() -> [String] {
        guard let (_, t) = try? record() else { return [] }
        return t.members.map(\.name).filter { !$0.isEmpty }
    }
}

enum BTFMemberSearch {
    static func find(_ name: String, in t: BTFType, btf: BTF, depth: Int) throws -> (type: CType, bitOffset: Int, bitfieldSize: Int)? {
        guard depth < 32 else { return nil }
        for m in t.members {
            if m.name == name { return (.btf(btf, m.type), Int(m.bitOffset), Int(m.bitfieldSize)) }
        }
        for m in t.members where m.name.isEmpty {
            let inner = try btf.type(try btf.resolve(m.type))
            guard inner.kind == .structure || inner.kind == .union else { continue }
            if let found = try find(name, in: inner, btf: btf, depth: depth + 1) {
                return (found.type, Int(m.bitOffset) + found.bitOffset, found.bitfieldSize)
            }
        }
        return nil
    }
}
