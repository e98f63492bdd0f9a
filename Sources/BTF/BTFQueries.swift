/// Type-level questions: what an alias resolves to, sizes, alignment, C declarations.
///
/// Every walk is capped at `BTFLayout.maxChain` steps, so a cycle in malformed BTF is an error,
/// never a hang or a stack overflow.
extension BTF {
    /// Follows typedefs and modifiers (const, volatile, restrict, type_tag) to the underlying type.
    public func resolve(_ id: TypeID) throws(BTFError) -> TypeID {
        var current = id
        for _ in 0..<BTFLayout.maxChain {
            let kind = try kind(of: current)
            guard kind.isAlias else { return current }
            current = try type(current).target
        }
        throw BTFError(objectName, "typedef/modifier chain from type \(id) is longer than \(BTFLayout.maxChain) (a loop?)",
                       offset: owner(of: id).recordOffset(id))
    }

    /// Follows only modifiers (not typedefs): what a `const foo_t` is, keeping the typedef's name.
    public func skipModifiers(_ id: TypeID) throws(BTFError) -> TypeID {
        var current = id
        for _ in 0..<BTFLayout.maxChain {
            switch try kind(of: current) {
            case .const, .volatile, .restrict, .typeTag: current = try type(current).target
            default: return current
            }
        }
        throw BTFError(objectName, "modifier chain from type \(id) is too long (a loop?)", offset: owner(of: id).recordOffset(id))
    }

    /// Size of a pointer on the BTF's target: the size of `long`, 8 when the BTF doesn't say.
    static func findPointerSize(_ root: BTF) -> UInt32 {
        for id in root.lookup("long unsigned int") {
            if let t = try? root.type(id), t.kind == .int { return t.size }
        }
        return 8
    }

    /// The error for a walk that went deeper than any real type nests.
    func tooDeep(_ id: TypeID) -> BTFError {
        BTFError(objectName, "type \(id) nests deeper than \(BTFLayout.maxChain) (a loop?)", offset: owner(of: id).recordOffset(id))
    }

    /// Size in bytes of an object of type `id`.
    public func size(of id: TypeID) throws(BTFError) -> UInt64 {
        try size(of: id, depth: 0)
    }

    private func size(of id: TypeID, depth: Int) throws(BTFError) -> UInt64 {
        guard depth < BTFLayout.maxChain else { throw tooDeep(id) }
        let t = try type(id)
        switch t.kind {
        case .int, .structure, .union, .enumeration, .enum64, .float, .dataSection: return UInt64(t.size)
        case .pointer: return UInt64(pointerSize)
        case .typedef, .volatile, .const, .restrict, .typeTag, .variable: return try size(of: t.target, depth: depth + 1)
        case .array:
            let element = try size(of: t.arrayElement, depth: depth + 1)
            let (total, overflow) = element.multipliedReportingOverflow(by: UInt64(t.arrayCount))
            guard !overflow else { throw BTFError(objectName, "array \(id) size overflows", offset: t.byteOffset) }
            return total
        case .unknown where id == 0: return 0
        default:
            throw BTFError(objectName, "\(t.kind.label) \(describe(id)) has no size", offset: t.byteOffset)
        }
    }

    /// Alignment in bytes, inferred the way pahole does: natural alignment of the members, 1 when packed.
    public func alignment(of id: TypeID) throws(BTFError) -> UInt64 {
        try alignment(of: id, depth: 0)
    }

    private func alignment(of id: TypeID, depth: Int) throws(BTFError) -> UInt64 {
        guard depth < BTFLayout.maxChain else { throw tooDeep(id) }
        let t = try type(id)
        switch t.kind {
        case .int, .float, .enumeration, .enum64:
            return UInt64(max(1, min(t.size, pointerSize * 2)))
        case .pointer: return UInt64(pointerSize)
        case .typedef, .volatile, .const, .restrict, .typeTag, .variable: return try alignment(of: t.target, depth: depth + 1)
        case .array: return try alignment(of: t.arrayElement, depth: depth + 1)
        case .structure, .union:
            var align: UInt64 = 1
            for m in t.members {
                let a = try alignment(of: m.type, depth: depth + 1)
                if m.bitfieldSize == 0 && (UInt64(m.bitOffset) % (a * 8)) != 0 { return 1 }  // packed
                align = max(align, a)
            }
            if UInt64(t.size) % align != 0 { return 1 }
            return align
        default: return 1
        }
    }

    /// "struct task_struct", "int", "char *", "(id 1234)" for a short human description.
    public func describe(_ id: TypeID) -> String {
        (try? cDeclaration(id, "")) ?? "(type id \(id))"
    }

    /// A C declaration of `declarator` with type `id`: `cDeclaration(ptr-to-char, "p")` is `char *p`.
    public func cDeclaration(_ id: TypeID, _ declarator: String) throws(BTFError) -> String {
        try cDeclaration(id, declarator, depth: 0)
    }

    private func cDeclaration(_ id: TypeID, _ declarator: String, depth: Int) throws(BTFError) -> String {
        guard depth < BTFLayout.maxChain else { throw tooDeep(id) }
        func named(_ base: String) -> String { declarator.isEmpty ? base : base + " " + declarator }
        if id == 0 { return named("void") }
        let t = try type(id)
        switch t.kind {
        case .int, .float, .typedef:
            return named(t.name)
        case .structure, .union, .enumeration, .enum64:
            let keyword = t.kind == .union ? "union" : (t.kind == .structure ? "struct" : "enum")
            return named(t.name.isEmpty ? "\(keyword) {...}" : "\(keyword) \(t.name)")
        case .forward:
            return named((t.isUnionForward ? "union " : "struct ") + t.name)
        case .pointer:
            let targetKind = try kind(of: try skipModifiers(t.target))
            var d = "*" + declarator
            if targetKind == .array || targetKind == .functionProto { d = "(" + d + ")" }
            return try cDeclaration(t.target, d, depth: depth + 1)
        case .array:
            let d = declarator + "[\(t.arrayCount)]"
            return try cDeclaration(t.arrayElement, d, depth: depth + 1)
        case .const, .volatile, .restrict:
            let qualifier = t.kind == .const ? "const" : (t.kind == .volatile ? "volatile" : "restrict")
            let targetKind = try kind(of: t.target)
            if targetKind == .pointer {
                return try cDeclaration(t.target, qualifier + (declarator.isEmpty ? "" : " " + declarator), depth: depth + 1)
            }
            return qualifier + " " + (try cDeclaration(t.target, declarator, depth: depth + 1))
        case .typeTag:
            return try cDeclaration(t.target, declarator, depth: depth + 1)
        case .functionProto:
            let params = try parameterList(t, depth: depth)
            return try cDeclaration(t.target, declarator + "(" + params + ")", depth: depth + 1)
        case .function:
            let proto = try type(t.target)
            let params = try parameterList(proto, depth: depth, names: true)
            return try cDeclaration(proto.target, t.name + "(" + params + ")", depth: depth + 1)
        case .variable:
            return try cDeclaration(t.target, t.name, depth: depth + 1)
        case .dataSection:
            return "SEC(\"\(t.name)\")"
        case .declTag:
            return "__attribute__((btf_decl_tag(\"\(t.name)\")))"
        case .unknown:
            return named("/* unknown kind \(t.rawKind) */")
        }
    }

    private func parameterList(_ proto: BTFType, depth: Int, names: Bool = true) throws(BTFError) -> String {
        if proto.params.isEmpty { return "void" }
        var parts: [String] = []
        for (i, p) in proto.params.enumerated() {
            if p.type == 0 && i == proto.params.count - 1 { parts.append("..."); continue }
            parts.append(try cDeclaration(p.type, names ? p.name : "", depth: depth + 1))
        }
        return parts.joined(separator: ", ")
    }

    /// The function prototype of FUNC `id` as one C line, e.g. `int nlm_lookup_file(struct svc_rqst *rqstp, ...)`.
    public func prototype(ofFunction id: TypeID) throws(BTFError) -> String {
        try cDeclaration(id, "")
    }
}
