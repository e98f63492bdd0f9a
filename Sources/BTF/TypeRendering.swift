import KreachSupport

/// Renders a type's full definition as C with member offsets and sizes (like `pahole -C`), or as JSON.
extension BTF {
    /// The definition of `id` as C. Structs and unions list members with `/* offset size */`
    /// (bitfields: `/* offset:bit size */`), holes and a summary line; anonymous members are expanded inline.
    public func renderC(_ id: TypeID) throws(BTFError) -> String {
        let t = try type(id)
        var out = ""
        switch t.kind {
        case .structure, .union:
            try renderComposite(t, indent: 1, baseBits: 0, into: &out, depth: 0)
            let size = UInt64(t.size)
            let cachelines = (size + 63) / 64
            out += "\n\t/* size: \(size), cachelines: \(cachelines), members: \(t.members.count)"
            let align = try alignment(of: id)
            if align == 1 && t.members.count > 1 { out += ", packed" }
            out += " */\n};"
        case .enumeration, .enum64:
            out += (t.name.isEmpty ? "enum {" : "enum \(t.name) {") + "\n"
            for e in t.enumerators {
                let value = t.isSigned ? String(Int64(bitPattern: e.bits)) : String(e.bits)
                out += "\t\(e.name) = \(value),\n"
            }
            out += "}; /* size: \(t.size) */"
        case .typedef:
            let underlying = try resolve(id)
            out += "typedef \(try cDeclaration(t.target, t.name));"
            out += " /* \(describe(underlying))"
            if let size = try? size(of: id) { out += ", size: \(size)" }
            out += " */"
        case .function:
            out += try cDeclaration(id, "") + "; /* \(t.linkage.label) */"
        case .variable:
            out += try cDeclaration(id, "") + ";"
            if let size = try? size(of: t.target) { out += " /* size: \(size), \(t.linkage.label) */" }
        case .dataSection:
            out += "SEC(\"\(t.name)\") /* size: \(t.size), variables: \(t.sectionVariables.count) */ {\n"
            for v in t.sectionVariables {
                out += "\t" + (try cDeclaration(v.type, "")) + "; /* \(v.offset) \(v.size) */\n"
            }
            out += "};"
        case .int:
            var traits: [String] = []
            if t.intEncoding & 1 != 0 { traits.append("signed") }
            if t.intEncoding & 2 != 0 { traits.append("char") }
            if t.intEncoding & 4 != 0 { traits.append("bool") }
            out += "\(t.name); /* int, size: \(t.size), bits: \(t.intBits)" + (traits.isEmpty ? "" : ", " + traits.joined(separator: ", ")) + " */"
        default:
            out += try cDeclaration(id, "") + ";"
            if let size = try? size(of: id) { out += " /* \(t.kind.label), size: \(size) */" }
        }
        return out
    }

    private func renderComposite(_ t: BTFType, indent: Int, baseBits: UInt64, into out: inout String, depth: Int) throws(BTFError) {
        guard depth < BTFLayout.maxChain else {
            throw BTFError(objectName, "anonymous members of type \(t.id) nest deeper than \(BTFLayout.maxChain)", offset: t.byteOffset)
        }
        let keyword = t.kind == .union ? "union" : "struct"
        out += t.name.isEmpty ? "\(keyword) {\n" : "\(keyword) \(t.name) {\n"
        let tabs = String(repeating: "\t", count: indent)
        var endBits: UInt64 = baseBits
        for m in t.members {
            let bits = baseBits + UInt64(m.bitOffset)
            if t.kind == .structure && bits / 8 > (endBits + 7) / 8 && m.bitfieldSize == 0 {
                out += "\n\(tabs)/* XXX \(bits / 8 - (endBits + 7) / 8) bytes hole, try to pack */\n\n"
            }
            let memberType = try resolve(m.type)
            let memberTypeInfo = try type(memberType)
            let size = try self.size(of: m.type)
            if m.name.isEmpty && (memberTypeInfo.kind == .structure || memberTypeInfo.kind == .union) && memberTypeInfo.name.isEmpty {
                out += tabs
                try renderComposite(memberTypeInfo, indent: indent + 1, baseBits: bits, into: &out, depth: depth + 1)
                out += tabs + "};"
                out += BTF.column(tabs.count * 8 + 2, "/* \(BTF.pad(bits / 8, 5)) \(BTF.pad(size, 5)) */") + "\n"
            } else {
                var decl = try cDeclaration(m.type, m.name)
                if m.bitfieldSize > 0 { decl += ":\(m.bitfieldSize)" }
                let comment: String
                if m.bitfieldSize > 0 {
                    let unitBits = max(size * 8, 8)
                    let unitStart = bits / unitBits * unitBits
                    comment = "/* \(BTF.pad(unitStart / 8, 5)):\(BTF.pad(bits - unitStart, 2)) \(BTF.pad(size, 4)) */"
                } else {
                    comment = "/* \(BTF.pad(bits / 8, 5)) \(BTF.pad(size, 5)) */"
                }
                out += tabs + decl + ";" + BTF.column(tabs.count * 8 + decl.count + 1, comment) + "\n"
            }
            let memberEnd = m.bitfieldSize > 0 ? bits + UInt64(m.bitfieldSize) : bits + size * 8
            if t.kind == .structure { endBits = max(endBits, memberEnd) }
        }
        if depth == 0 && t.kind == .structure {
            let tail = UInt64(t.size) * 8
            let used = (endBits - baseBits + 7) / 8
            if tail / 8 > used { out += "\n\t/* padding: \(tail / 8 - used) */\n" }
        }
    }

    static func pad(_ v: UInt64, _ width: Int) -> String {
        let s = String(v)
        return String(repeating: " ", count: max(0, width - s.count)) + s
    }

    /// Spaces to put `comment` at column 48 (at least one space), counting a tab as 8.
    static func column(_ used: Int, _ comment: String) -> String {
        String(repeating: " ", count: max(1, 56 - used)) + comment
    }

    /// The type as JSON (schema in docs/json.md).
    public func json(_ id: TypeID) throws(BTFError) -> JSON {
        let t = try type(id)
        var fields: [(String, JSON)] = [
            ("object", .string(owner(of: id).objectName)),
            ("id", .uint(UInt64(id))),
            ("kind", .string(t.kind.label)),
            ("name", .string(t.name)),
        ]
        if let size = try? size(of: id) { fields.append(("size", .uint(size))) }
        switch t.kind {
        case .structure, .union:
            fields.append(("align", .uint(try alignment(of: id))))
            var members: [JSON] = []
            for m in t.members {
                var mf: [(String, JSON)] = [
                    ("name", .string(m.name)),
                    ("type", .string(describe(m.type))),
                    ("type_id", .uint(UInt64(m.type))),
                    ("offset", .uint(UInt64(m.bitOffset / 8))),
                    ("bit_offset", .uint(UInt64(m.bitOffset))),
                ]
                if m.bitfieldSize > 0 { mf.append(("bitfield_size", .uint(UInt64(m.bitfieldSize)))) }
                if let size = try? size(of: m.type) { mf.append(("size", .uint(size))) }
                members.append(.object(mf))
            }
            fields.append(("members", .array(members)))
        case .enumeration, .enum64:
            fields.append(("signed", .bool(t.isSigned)))
            fields.append(("values", .array(t.enumerators.map { e in
                .object([("name", .string(e.name)),
                         ("value", t.isSigned ? .int(Int64(bitPattern: e.bits)) : .uint(e.bits))])
            })))
        case .typedef, .const, .volatile, .restrict, .typeTag, .pointer:
            fields.append(("type", .string(describe(t.target))))
            fields.append(("type_id", .uint(UInt64(t.target))))
            if t.kind == .typedef {
                let r = try resolve(id)
                fields.append(("resolved", .string(describe(r))))
                fields.append(("resolved_id", .uint(UInt64(r))))
            }
        case .array:
            fields.append(("element", .string(describe(t.arrayElement))))
            fields.append(("element_id", .uint(UInt64(t.arrayElement))))
            fields.append(("count", .uint(UInt64(t.arrayCount))))
        case .function:
            let proto = try type(t.target)
            fields.append(("linkage", .string(t.linkage.label)))
            fields.append(("prototype", .string(try cDeclaration(id, ""))))
            fields.append(("return", .string(describe(proto.target))))
            fields.append(("return_id", .uint(UInt64(proto.target))))
            fields.append(("params", .array(proto.params.map { p in
                .object([("name", .string(p.name)), ("type", .string(p.type == 0 ? "..." : describe(p.type))),
                         ("type_id", .uint(UInt64(p.type)))])
            })))
        case .variable:
            fields.append(("type", .string(describe(t.target))))
            fields.append(("type_id", .uint(UInt64(t.target))))
            fields.append(("linkage", .string(t.linkage.label)))
        case .int:
            fields.append(("bits", .uint(UInt64(t.intBits))))
            fields.append(("signed", .bool(t.intEncoding & 1 != 0)))
        default:
            break
        }
        fields.append(("c", .string(try renderC(id))))
        return .object(fields)
    }
}
