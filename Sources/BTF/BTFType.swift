import KreachSupport

/// A member of a struct or union (`struct btf_member`).
public struct BTFMember: Sendable, Equatable {
    public let name: String
    public let type: TypeID
    /// Offset from the start of the struct, in bits.
    public let bitOffset: UInt32
    /// Width of a bitfield in bits; 0 for an ordinary member.
    public let bitfieldSize: UInt32
}

/// An enumerator (`struct btf_enum` / `struct btf_enum64`).
public struct BTFEnumerator: Sendable, Equatable {
    public let name: String
    /// The value's 64 bits; read as signed or unsigned per `BTFType.isSigned`.
    public let bits: UInt64
}

/// A function parameter (`struct btf_param`). A last parameter with type 0 and no name means `...`.
public struct BTFParam: Sendable, Equatable {
    public let name: String
    public let type: TypeID
}

/// One variable in a data section (`struct btf_var_secinfo`).
public struct BTFVarSecInfo: Sendable, Equatable {
    public let type: TypeID
    public let offset: UInt32
    public let size: UInt32
}

/// Linkage of FUNC and VAR types (`enum btf_func_linkage`, `enum btf_var_linkage`).
public enum BTFLinkage: Sendable, Equatable {
    case `static`, global, external, other(UInt32)

    init(_ raw: UInt32) {
        switch raw {
        case 0: self = .static
        case 1: self = .global
        case 2: self = .external
        default: self = .other(raw)
        }
    }

    public var label: String {
        switch self {
        case .static: return "static"
        case .global: return "global"
        case .external: return "extern"
        case .other(let v): return "linkage(\(v))"
        }
    }
}

/// A decoded BTF type record. Fields that don't apply to the kind are empty or zero.
public struct BTFType: Sendable {
    public let id: TypeID
    public let kind: BTFKind
    /// The kind number as stored (differs from `kind.rawValue` only for kinds this reader doesn't know).
    public let rawKind: UInt8
    /// "" when anonymous.
    public let name: String
    public let kindFlag: Bool
    public let vlen: Int
    /// `size` for int, struct, union, enum, float, datasec; the referenced type id for the others.
    public let sizeOrType: UInt32
    /// Byte offset of the record in its BTF file.
    public let byteOffset: Int

    /// INT: `BTF_INT_ENCODING` bits (1 signed, 2 char, 4 bool), bit offset and bit count.
    public var intEncoding: UInt8 = 0
    public var intOffset: UInt8 = 0
    public var intBits: UInt8 = 0
    /// ARRAY: element type, index type, number of elements.
    public var arrayElement: TypeID = 0
    public var arrayIndex: TypeID = 0
    public var arrayCount: UInt32 = 0
    public var members: [BTFMember] = []
    public var enumerators: [BTFEnumerator] = []
    public var params: [BTFParam] = []
    public var sectionVariables: [BTFVarSecInfo] = []
    /// FUNC (from vlen) and VAR linkage.
    public var linkage: BTFLinkage = .static
    /// DECL_TAG: -1 for the declaration itself, else the member or parameter index.
    public var componentIndex: Int32 = -1

    public var size: UInt32 { sizeOrType }
    public var target: TypeID { sizeOrType }
    /// ENUM/ENUM64 values are signed (kind_flag), INT has the signed bit.
    public var isSigned: Bool {
        switch kind {
        case .enumeration, .enum64: return kindFlag
        case .int: return intEncoding & 1 != 0
        default: return false
        }
    }
    /// FWD: declared as a union (kind_flag) rather than a struct.
    public var isUnionForward: Bool { kind == .forward && kindFlag }
}

extension BTF {
    /// Decodes type `id`, validating every type id and string offset it refers to.
    public func type(_ id: TypeID) throws(BTFError) -> BTFType {
        if id == 0 {
            return BTFType(id: 0, kind: .unknown, rawKind: 0, name: "void", kindFlag: false, vlen: 0, sizeOrType: 0, byteOffset: 0)
        }
        if id < firstID, let base { return try base.type(id) }
        guard let off = recordOffset(id) else {
            try checkID(id, at: nil, "lookup")
            throw BTFError(objectName, "no type id \(id)")
        }
        let b = buffer
        let info = b.u32(off + 4)
        let rawKind = UInt8((info >> 24) & BTFLayout.kindMask)
        let kind = BTFKind(rawValue: rawKind) ?? .unknown
        let vlen = Int(info & BTFLayout.vlenMask)
        let kindFlag = info >> 31 != 0
        let sizeOrType = b.u32(off + 8)
        var t = BTFType(id: id, kind: kind, rawKind: rawKind, name: try string(at: b.u32(off), usedAt: off),
                        kindFlag: kindFlag, vlen: vlen, sizeOrType: sizeOrType, byteOffset: off)
        let body = off + BTFLayout.typeHeaderSize
        switch kind {
        case .pointer, .typedef, .volatile, .const, .restrict, .typeTag, .variable, .declTag:
            try checkID(sizeOrType, at: off + 8, "\(kind.label) \(id)")
        case .function:
            try checkID(sizeOrType, at: off + 8, "func \(id)")
            guard try self.kind(of: sizeOrType) == .functionProto else {
                throw BTFError(objectName, "func \(id) points at type \(sizeOrType), which is not a func_proto", offset: off + 8)
            }
        case .functionProto:
            try checkID(sizeOrType, at: off + 8, "func_proto \(id) return")
        default:
            break
        }
        switch kind {
        case .int:
            let v = b.u32(body)
            t.intEncoding = UInt8((v >> 24) & 0x0F)
            t.intOffset = UInt8((v >> 16) & 0xFF)
            t.intBits = UInt8(v & 0xFF)
            guard t.intBits > 0, t.intBits <= 128, Int(t.intOffset) + Int(t.intBits) <= Int(sizeOrType) * 8 else {
                throw BTFError(objectName, "int \(id) has \(t.intBits) bits at bit \(t.intOffset) in \(sizeOrType) bytes", offset: body)
            }
        case .array:
            t.arrayElement = b.u32(body)
            t.arrayIndex = b.u32(body + 4)
            t.arrayCount = b.u32(body + 8)
            try checkID(t.arrayElement, at: body, "array \(id) element")
            try checkID(t.arrayIndex, at: body + 4, "array \(id) index")
        case .structure, .union:
            t.members.reserveCapacity(vlen)
            for i in 0..<vlen {
                let m = body + i * 12
                let type = b.u32(m + 4)
                try checkID(type, at: m + 4, "member \(i) of \(kind.label) \(id)")
                let raw = b.u32(m + 8)
                let bitOffset = kindFlag ? raw & 0x00FF_FFFF : raw
                let bitfield = kindFlag ? raw >> 24 : 0
                t.members.append(BTFMember(name: try string(at: b.u32(m), usedAt: m), type: type,
                                           bitOffset: bitOffset, bitfieldSize: bitfield))
            }
        case .enumeration:
            t.enumerators.reserveCapacity(vlen)
            for i in 0..<vlen {
                let e = body + i * 8
                let raw = b.u32(e + 4)
                let bits = kindFlag ? UInt64(bitPattern: Int64(Int32(bitPattern: raw))) : UInt64(raw)
                t.enumerators.append(BTFEnumerator(name: try string(at: b.u32(e), usedAt: e), bits: bits))
            }
        case .enum64:
            t.enumerators.reserveCapacity(vlen)
            for i in 0..<vlen {
                let e = body + i * 12
                let bits = UInt64(b.u32(e + 4)) | UInt64(b.u32(e + 8)) << 32
                t.enumerators.append(BTFEnumerator(name: try string(at: b.u32(e), usedAt: e), bits: bits))
            }
        case .functionProto:
            t.params.reserveCapacity(vlen)
            for i in 0..<vlen {
                let p = body + i * 8
                let type = b.u32(p + 4)
                try checkID(type, at: p + 4, "parameter \(i) of func_proto \(id)")
                t.params.append(BTFParam(name: try string(at: b.u32(p), usedAt: p), type: type))
            }
        case .function:
            t.linkage = BTFLinkage(UInt32(vlen))
        case .variable:
            t.linkage = BTFLinkage(b.u32(body))
        case .dataSection:
            t.sectionVariables.reserveCapacity(vlen)
            for i in 0..<vlen {
                let v = body + i * 12
                let type = b.u32(v)
                try checkID(type, at: v, "variable \(i) of datasec \(id)")
                t.sectionVariables.append(BTFVarSecInfo(type: type, offset: b.u32(v + 4), size: b.u32(v + 8)))
            }
        case .declTag:
            t.componentIndex = Int32(bitPattern: b.u32(body))
        default:
            break
        }
        return t
    }

    /// The first direct member of struct or union `id` named `name` (not one inside an anonymous member),
    /// found by comparing name bytes in place: no other member is decoded (task_struct has hundreds).
    /// Nil when `id` is not a struct or union or has no such member. The member's type id is checked.
    public func directMember(named name: String, of id: TypeID) throws(BTFError) -> BTFMember? {
        if id < firstID, let base { return try base.directMember(named: name, of: id) }
        guard let off = recordOffset(id) else { try checkID(id, at: nil, "lookup"); return nil }
        let info = buffer.u32(off + 4)
        let kind = BTFKind(rawValue: UInt8((info >> 24) & BTFLayout.kindMask)) ?? .unknown
        guard kind == .structure || kind == .union else { return nil }
        let kindFlag = info >> 31 != 0
        let body = off + BTFLayout.typeHeaderSize
        let utf8 = Array(name.utf8)
        guard !utf8.contains(0) else { return nil }
        let found = utf8.withUnsafeBytes { n -> Result<BTFMember?, BTFError> in
            do throws(BTFError) {
                for i in 0..<Int(info & BTFLayout.vlenMask) {
                    let m = body + i * 12
                    guard try string(at: buffer.u32(m), usedAt: m, equals: n) else { continue }
                    let type = buffer.u32(m + 4)
                    try checkID(type, at: m + 4, "member \(i) of \(kind.label) \(id)")
                    let raw = buffer.u32(m + 8)
                    return .success(BTFMember(name: name, type: type, bitOffset: kindFlag ? raw & 0x00FF_FFFF : raw,
                                              bitfieldSize: kindFlag ? raw >> 24 : 0))
                }
                return .success(nil)
            } catch {
                return .failure(error)
            }
        }
        return try found.get()
    }

    /// Decodes every local type; the first malformed one is the error. Used by tests and `kreach type --check`.
    public func validateAll() throws(BTFError) {
        for id in localIDs { _ = try type(id) }
    }
}

extension BTF {
    /// The raw `type`/`size` field of a record, without decoding names (for scans over every type).
    public func rawTarget(_ id: TypeID) throws(BTFError) -> TypeID {
        if id < firstID, let base { return try base.rawTarget(id) }
        guard let off = recordOffset(id) else { try checkID(id, at: nil, "lookup"); return 0 }
        return buffer.u32(off + 8)
    }

    /// A FUNC_PROTO's return type and parameter types, without decoding names.
    public func prototypeTypes(_ proto: TypeID) throws(BTFError) -> (returns: TypeID, params: [TypeID]) {
        if proto < firstID, let base { return try base.prototypeTypes(proto) }
        guard let off = recordOffset(proto) else { try checkID(proto, at: nil, "lookup"); return (0, []) }
        let info = buffer.u32(off + 4)
        guard BTFKind(rawValue: UInt8((info >> 24) & BTFLayout.kindMask)) == .functionProto else {
            throw BTFError(objectName, "type \(proto) is not a func_proto", offset: off)
        }
        let vlen = Int(info & BTFLayout.vlenMask)
        var params: [TypeID] = []
        params.reserveCapacity(vlen)
        for i in 0..<vlen {
            let t = buffer.u32(off + 12 + i * 8 + 4)
            try checkID(t, at: off + 12 + i * 8 + 4, "parameter \(i) of func_proto \(proto)")
            params.append(t)
        }
        let ret = buffer.u32(off + 8)
        try checkID(ret, at: off + 8, "func_proto \(proto) return")
        return (ret, params)
    }
}
