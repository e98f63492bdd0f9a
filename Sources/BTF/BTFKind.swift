/// A BTF type id. 0 is `void`; split BTF continues the numbering of its base.
public typealias TypeID = UInt32

/// BTF_KIND_* from include/uapi/linux/btf.h.
public enum BTFKind: UInt8, Sendable, CaseIterable {
    case unknown = 0      // BTF_KIND_UNKN
    case int = 1          // BTF_KIND_INT
    case pointer = 2      // BTF_KIND_PTR
    case array = 3        // BTF_KIND_ARRAY
    case structure = 4    // BTF_KIND_STRUCT
    case union = 5        // BTF_KIND_UNION
    case enumeration = 6  // BTF_KIND_ENUM
    case forward = 7      // BTF_KIND_FWD
    case typedef = 8      // BTF_KIND_TYPEDEF
    case volatile = 9     // BTF_KIND_VOLATILE
    case const = 10       // BTF_KIND_CONST
    case restrict = 11    // BTF_KIND_RESTRICT
    case function = 12    // BTF_KIND_FUNC
    case functionProto = 13  // BTF_KIND_FUNC_PROTO
    case variable = 14    // BTF_KIND_VAR
    case dataSection = 15 // BTF_KIND_DATASEC
    case float = 16       // BTF_KIND_FLOAT
    case declTag = 17     // BTF_KIND_DECL_TAG
    case typeTag = 18     // BTF_KIND_TYPE_TAG
    case enum64 = 19      // BTF_KIND_ENUM64

    /// The name used in queries, JSON and bpftool-style listings.
    public var label: String {
        switch self {
        case .unknown: return "unknown"
        case .int: return "int"
        case .pointer: return "ptr"
        case .array: return "array"
        case .structure: return "struct"
        case .union: return "union"
        case .enumeration: return "enum"
        case .forward: return "fwd"
        case .typedef: return "typedef"
        case .volatile: return "volatile"
        case .const: return "const"
        case .restrict: return "restrict"
        case .function: return "func"
        case .functionProto: return "func_proto"
        case .variable: return "var"
        case .dataSection: return "datasec"
        case .float: return "float"
        case .declTag: return "decl_tag"
        case .typeTag: return "type_tag"
        case .enum64: return "enum64"
        }
    }

    /// Modifiers and typedefs: kinds that only point at another type.
    public var isAlias: Bool {
        switch self {
        case .typedef, .volatile, .const, .restrict, .typeTag: return true
        default: return false
        }
    }
}

/// Raw encoding facts of the format (include/uapi/linux/btf.h).
enum BTFLayout {
    static let magic: UInt16 = 0xEB9F
    static let headerMinimum = 24            // struct btf_header up to str_len
    static let headerWithLayout = 32         // + layout_off, layout_len
    static let typeHeaderSize = 12           // struct btf_type
    static let vlenMask: UInt32 = 0x00FF_FFFF   // BTF_INFO_VLEN: 24 bits since the vlen/kind widening
    static let kindMask: UInt32 = 0x7F           // BTF_INFO_KIND: 7 bits since the widening
    static let maxChain = 64                 // typedef/modifier chain and nesting cap
}
