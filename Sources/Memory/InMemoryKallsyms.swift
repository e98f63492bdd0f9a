import KreachSupport

/// The kernel's own symbol table as its image holds it (kernel/kallsyms.c, scripts/kallsyms.c), read through
/// kernel memory the way drgn's kallsyms finder does: kallsyms_num_syms names, each a length byte (two when
/// the first has bit 7 set) and indices into kallsyms_token_table (at kallsyms_token_index[i]); the first
/// decoded character is the symbol's type letter. Addresses are kallsyms_offsets[i] from
/// kallsyms_relative_base: with CONFIG_KALLSYMS_ABSOLUTE_PERCPU a non-negative offset is an absolute per-CPU
/// address and a negative one is base − 1 − offset; without it every offset is unsigned from the base; kernels
/// without kallsyms_relative_base (7.x) store each offset from its own entry (`Addressing`).
public struct InMemoryKallsyms: Sendable {
    public struct Symbol: Sendable, Equatable {
        public let address: UInt64
        public let letter: Character
        public let name: String
    }
    public let symbols: [Symbol]
    /// How kallsyms_offsets encode addresses (scripts/kallsyms.c over the years).
    public enum Addressing: Sendable, CustomStringConvertible {
        /// CONFIG_KALLSYMS_ABSOLUTE_PERCPU: a non-negative offset is the address, a negative one base − 1 − offset.
        case absolutePercpu
        /// kallsyms_relative_base + the offset as unsigned.
        case baseRelative
        /// No kallsyms_relative_base (7.x): each offset is from its own entry's address.
        case placeRelative
        public var description: String {
            switch self {
            case .absolutePercpu: return "absolute per-CPU"
            case .baseRelative: return "relative to kallsyms_relative_base"
            case .placeRelative: return "place-relative"
            }
        }
    }
    /// Which addressing the offsets use (told from kallsyms_relative_base's presence and the offsets' signs,
    /// checked against VMCOREINFO's _stext).
    public let addressing: Addressing

    /// The tables' addresses: VMCOREINFO's SYMBOL()s (kernels since 6.0, and backports).
    public struct Tables: Sendable {
        public let names, numSyms, tokenTable, tokenIndex, offsets: UInt64
        /// The variable holding the base of the offsets; nil on kernels that dropped it (7.x: offsets are
        /// from _text, `text`).
        public let relativeBase: UInt64?
        /// _text: VMCOREINFO's SYMBOL(_stext), which x86-64's linker script puts at the same address.
        public let text: UInt64?
        public init?(_ symbols: [String: UInt64]) {
            guard let n = symbols["kallsyms_names"], let c = symbols["kallsyms_num_syms"],
                  let tt = symbols["kallsyms_token_table"], let ti = symbols["kallsyms_token_index"],
                  let o = symbols["kallsyms_offsets"] else { return nil }
            names = n; numSyms = c; tokenTable = tt; tokenIndex = ti; offsets = o
            relativeBase = symbols["kallsyms_relative_base"]
            text = symbols["_stext"]
            if relativeBase == nil && text == nil { return nil }
        }

        /// Tables at known addresses (found by searching the image: `search(memory:text:)`).
        public init(names: UInt64, numSyms: UInt64, tokenTable: UInt64, tokenIndex: UInt64, offsets: UInt64, relativeBase: UInt64?, text: UInt64?) {
            self.names = names; self.numSyms = numSyms; self.tokenTable = tokenTable; self.tokenIndex = tokenIndex
            self.offsets = offsets; self.relativeBase = relativeBase; self.text = text
        }
    }

    /// At most this many symbols (a corrupt count is an error, not a huge allocation).
    static let maxSymbols = 4 << 20

    public init(memory: any KernelMemory, tables t: Tables) throws {
        func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
        let count = Int(u32(try memory.read(t.numSyms, count: 4), 0))
        guard count > 0, count <= InMemoryKallsyms.maxSymbols else {
            throw MemoryError.unavailable("kallsyms_num_syms is \(count): not a kallsyms table")
        }
        let base: UInt64
        if let variable = t.relativeBase {
            base = try memory.read(variable, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        } else {
            base = 0  // place-relative offsets need no base
        }
        let offsets = try memory.read(t.offsets, count: 4 * count)
        let indexBytes = try memory.read(t.tokenIndex, count: 512)
        let tokenIndex = (0..<256).map { Int(indexBytes[2 * $0]) | Int(indexBytes[2 * $0 + 1]) << 8 }
        // The token table ends before the token index in the image (scripts/kallsyms.c emits it just before).
        let tableSize = t.tokenIndex > t.tokenTable && t.tokenIndex - t.tokenTable < 1 << 16 ? Int(t.tokenIndex - t.tokenTable) : (tokenIndex.max() ?? 0) + 256
        let tokenTable = try memory.read(t.tokenTable, count: tableSize)
        let tokens: [[UInt8]] = tokenIndex.map { start in
            guard start < tokenTable.count else { return [] }
            return Array(tokenTable[start...].prefix { $0 != 0 })
        }
        // The names: read in chunks as decoding advances.
        var names: [UInt8] = []
        var namesBase = t.names
        var position = 0
        func byte() throws -> UInt8 {
            if position >= names.count {
                names = try memory.read(namesBase, count: 1 << 16)
                namesBase += UInt64(names.count)
                position = 0
            }
            position += 1
            return names[position - 1]
        }
        var raw: [(Int32, Character, String)] = []
        raw.reserveCapacity(count)
        var negative = 0
        for i in 0..<count {
            var length = Int(try byte())
            if length & 0x80 != 0 { length = (length & 0x7f) | Int(try byte()) << 7 }
            var text: [UInt8] = []
            for _ in 0..<length { text += tokens[Int(try byte())] }
            guard let first = text.first else { throw MemoryError.unavailable("kallsyms: symbol \(i) has an empty name") }
            let offset = Int32(bitPattern: u32(offsets, 4 * i))
            if offset < 0 { negative += 1 }
            raw.append((offset, Character(Unicode.Scalar(first)), String(decoding: text.dropFirst(), as: UTF8.self)))
        }
        let addressing: Addressing = t.relativeBase == nil ? .placeRelative : negative > count / 2 ? .absolutePercpu : .baseRelative
        self.addressing = addressing
        symbols = raw.enumerated().map { (i, entry) in
            let (offset, letter, name) = entry
            let address: UInt64
            switch addressing {
            case .absolutePercpu: address = offset >= 0 ? UInt64(offset) : base &- 1 &- UInt64(bitPattern: Int64(offset))
            case .baseRelative: address = base &+ UInt64(UInt32(bitPattern: offset))
            case .placeRelative: address = t.offsets &+ UInt64(4 * i) &+ UInt64(bitPattern: Int64(offset))
            }
            return Symbol(address: address, letter: letter, name: name)
        }
        // The kernel's own check: _stext decodes to VMCOREINFO's SYMBOL(_stext).
        if let stext = t.text, let decoded = symbols.first(where: { $0.name == "_stext" }), decoded.address != stext {
            throw MemoryError.unavailable("kallsyms: _stext decodes to \(Hex.short(decoded.address)) (\(addressing)), VMCOREINFO says \(Hex.short(stext)): unknown kallsyms_offsets encoding")
        }
    }
}
