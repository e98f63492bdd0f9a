import Memory

/// A typed value: either an object in kernel memory (an lvalue with an address) or a computed value
/// (its bytes), like drgn's Object.
public struct Object {
    public let type: CType
    /// Where the object lives in kernel memory; nil for computed values.
    public let address: UInt64?
    /// The bytes of a computed value (little-endian), or of an object already read.
    public var bytes: [UInt8]?
    /// For bitfield members: the bit offset from `address` and the width.
    public var bitOffset = 0
    public var bitfieldSize = 0
    /// Where the object came from, for messages ("brd:rd_size", "module parameter of type int").
    public var note: String?
    /// An untyped symbol's true size (its .ko symbol table size, or the gap to the next kallsyms symbol),
    /// which may exceed what is read (`type`'s size); nil when unknown.
    public var extent: UInt64?
    /// Where `extent` comes from (exact from a symbol table, or an upper bound).
    public var extentSource: ExtentSource?
    /// An entry's index in an indexed container walk (xarray index, IDR id, maple range start); nil otherwise.
    public var index: UInt64?

    public init(type: CType, address: UInt64?, bytes: [UInt8]? = nil) {
        self.type = type
        self.address = address
        self.bytes = bytes
    }

    static func value(_ v: UInt64, type: CType) throws -> Object {
        let size = max(1, min(8, try type.size()))
        return Object(type: type, address: nil, bytes: withUnsafeBytes(of: v.littleEndian) { Array($0.prefix(size)) })
    }

    /// The object's bytes, reading kernel memory when needed.
    func load(_ memory: KernelMemory) throws -> [UInt8] {
        if let bytes { return bytes }
        guard let address else { throw ExpressionError.plain("internal: object with neither address nor value") }
        let size = try type.size()
        if bitfieldSize > 0 {
            let first = bitOffset / 8, last = (bitOffset + bitfieldSize + 7) / 8
            return try memory.read(address + UInt64(first), count: last - first)
        }
        return try memory.read(address, count: size)
    }

    /// The value of a scalar (integer, enum, bool, pointer): zero- or sign-extended to 64 bits.
    func scalar(_ memory: KernelMemory) throws -> UInt64 {
        let raw = try load(memory)
        var v: UInt64 = 0
        for (k, b) in raw.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
        let signed = (try? type.record()).flatMap { $0 }.map { $0.1.isSigned } ?? false
        if bitfieldSize > 0 {
            v >>= UInt64(bitOffset % 8)
            let width = UInt64(bitfieldSize)
            if width < 64 {
                v &= (1 << width) - 1
                if signed && v & (1 << (width - 1)) != 0 { v |= ~((1 << width) - 1) }
            }
            return v
        }
        return signed ? Object.signExtended(v, size: min(8, raw.count)) : v
    }

    /// `v`, the `size` bytes of a signed integer zero-extended, sign-extended to 64 bits.
    static func signExtended(_ v: UInt64, size: Int) -> UInt64 {
        guard size > 0 && size < 8 && v & (1 << (UInt64(size) * 8 - 1)) != 0 else { return v }
        return v | ~((1 << (UInt64(size) * 8)) - 1)
    }
}

/// What an expression produced: one object, or the entries a container helper walked.
public enum Evaluation {
    case object(Object)
    case entries(WalkEntries, helper: ContainerHelper)
}

/// The entries of a container walk, by position. A chain's or a tree's entries are one type at many addresses:
/// each `Object` is made when asked for, so a walk of a million entries holds their addresses, not a million
/// objects. Indexed walks of scalar slots (for_each_cpu's numbers, xarray values) keep the objects they made.
public struct WalkEntries: RandomAccessCollection {
    enum Storage {
        /// One entry type; each entry's address, and its index (xarray index, bucket) where the walk has one.
        case uniform(type: CType, addresses: [UInt64], indices: [UInt64])
        case objects([Object])
    }
    let storage: Storage

    init(type: CType, addresses: [UInt64], indices: [UInt64]) { storage = .uniform(type: type, addresses: addresses, indices: indices) }
    init(_ objects: [Object]) { storage = .objects(objects) }

    public var startIndex: Int { 0 }
    public var endIndex: Int {
        switch storage {
        case .uniform(_, let addresses, _): return addresses.count
        case .objects(let objects): return objects.count
        }
    }

    public subscript(position: Int) -> Object {
        switch storage {
        case let .uniform(type, addresses, indices):
            var o = Object(type: type, address: addresses[position])
            o.index = position < indices.count ? indices[position] : nil
            return o
        case .objects(let objects):
            return objects[position]
        }
    }
}
