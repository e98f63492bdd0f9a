import Glibc

/// The CPU architecture of a kernel: pointer size, byte order, ELF machine, address space, the meaning of
/// module relocations and how kernel text refers to data. Chosen from an ELF header's `e_machine` (vmlinux,
/// a .ko) or the running kernel (`uname(2)`'s machine). Each architecture is one file conforming to
/// `ArchDefinition` (X86_64.swift), listed in `Arch.known`.
public struct Arch: Sendable, CustomStringConvertible {
    public let definition: any ArchDefinition

    /// Every architecture kreach knows. A new one is a file with its `ArchDefinition` and a line here.
    public static let known: [any ArchDefinition] = [X86_64()]

    public static let x86_64 = Arch(X86_64())

    public init(_ definition: any ArchDefinition) { self.definition = definition }

    /// The architecture of an ELF file's `e_machine` (`source` names the file for the error).
    public init(elfMachine: UInt16, source: String) throws(ArchError) {
        guard let d = Arch.known.first(where: { $0.elfMachine == elfMachine }) else {
            throw .unknownELFMachine(elfMachine, source: source)
        }
        self.init(d)
    }

    /// The architecture `uname -m` names ("x86_64").
    public init(unameMachine: String) throws(ArchError) {
        guard let d = Arch.known.first(where: { $0.unameMachines.contains(unameMachine) }) else {
            throw .unknownMachine(unameMachine)
        }
        self.init(d)
    }

    /// The running kernel's architecture, from uname(2).
    public static func running() throws(ArchError) -> Arch {
        var u = utsname()
        guard uname(&u) == 0 else { throw .uname(errno) }
        let machine = withUnsafeBytes(of: u.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return try Arch(unameMachine: machine)
    }

    public var name: String { definition.unameMachines[0] }
    public var elfMachine: UInt16 { definition.elfMachine }
    public var pointerSize: Int { definition.pointerSize }
    public var byteOrder: ByteOrder { definition.byteOrder }
    public var addressSpace: AddressSpace { definition.addressSpace }
    public var description: String { name }

    /// A pointer-sized value from its bytes in the architecture's byte order (`bytes.count` must be `pointerSize`).
    public func pointer(_ bytes: some Collection<UInt8>) throws(ArchError) -> UInt64 {
        guard bytes.count == pointerSize else { throw .pointerBytes(bytes.count, expected: pointerSize, arch: name) }
        return byteOrder.unsigned(bytes)
    }

    /// The meaning of relocation `type` in this architecture's modules; nil for a type the kernel's module
    /// loader refuses (such a module never loads).
    public func relocation(_ type: UInt32) -> Relocation? { definition.relocation(type) }

    /// The address a relocation in code refers to, from the relocated symbol's value and the addend; nil
    /// when the relocation carries no address.
    /// `code` is the relocated section's bytes and `field` the relocation's offset in it: the instruction
    /// around the field says where it ends.
    public func referencedAddress(_ relocation: Relocation, symbolValue: UInt64, addend: Int64,
                                  code: [UInt8], field: Int) -> UInt64? {
        definition.referencedAddress(relocation, symbolValue: symbolValue, addend: addend, code: code, field: field)
    }

    /// Whether a code relocation may take the object's address (lea, an immediate, a GOT load) instead of
    /// reading or writing the object.
    public func mayTakeAddress(_ relocation: Relocation, code: ArraySlice<UInt8>, field: Int) -> Bool {
        definition.mayTakeAddress(relocation, code: code, field: field)
    }

    /// Bytes a text reference spans: a scan of text in chunks overlaps them by this minus one.
    public var textReferenceWidth: Int { definition.textReferenceWidth }

    /// Every position of `bytes` (kernel text at `address`) whose bytes, read as a reference, point into
    /// `range`. Decodes no instructions: a hit means "these bytes point there".
    public func textReferences(in bytes: UnsafeRawBufferPointer, at address: UInt64, to range: Range<UInt64>,
                               _ found: (TextReference) -> Void) {
        definition.textReferences(in: bytes, at: address, to: range, found)
    }
}

/// What an architecture file provides (see `Arch`).
public protocol ArchDefinition: Sendable {
    /// `uname -m` spellings, the canonical first ("x86_64").
    var unameMachines: [String] { get }
    /// ELF `e_machine` (include/uapi/linux/elf-em.h: EM_X86_64 = 62).
    var elfMachine: UInt16 { get }
    /// `sizeof(void *)` in the kernel.
    var pointerSize: Int { get }
    var byteOrder: ByteOrder { get }
    var addressSpace: AddressSpace { get }
    /// The relocation types the kernel's module loader applies (apply_relocate_add), by number.
    func relocation(_ type: UInt32) -> Relocation?
    func referencedAddress(_ relocation: Relocation, symbolValue: UInt64, addend: Int64, code: [UInt8], field: Int) -> UInt64?
    /// Bytes of the instruction after a PC-relative field at `field` in `code` (an immediate operand): the
    /// CPU computes the displacement from the instruction's end. 0 when the field ends it.
    func bytesAfterField(in code: [UInt8], field: Int, width: Int) -> Int
    /// Whether the code relocation `relocation` at `field` in `code` may put the object's address in a register
    /// or memory (a pointer is made) rather than read or write the object in place.
    func mayTakeAddress(_ relocation: Relocation, code: ArraySlice<UInt8>, field: Int) -> Bool
    var textReferenceWidth: Int { get }
    func textReferences(in bytes: UnsafeRawBufferPointer, at address: UInt64, to range: Range<UInt64>,
                        _ found: (TextReference) -> Void)
}

extension ArchDefinition {
    /// S + A for absolute forms. A PC-relative field holds S + A - P, relative to the place P; the CPU adds
    /// it to the instruction's end, which is the field's end plus `bytesAfterField` (an immediate operand).
    public func referencedAddress(_ relocation: Relocation, symbolValue: UInt64, addend: Int64,
                                  code: [UInt8], field: Int) -> UInt64? {
        let base = Int64(bitPattern: symbolValue) &+ addend
        switch relocation.form {
        case .none: return nil
        case .absolute: return UInt64(bitPattern: base)
        case .pcRelative:
            let end = relocation.width + bytesAfterField(in: code, field: field, width: relocation.width)
            return UInt64(bitPattern: base &+ Int64(end))
        }
    }

    public func bytesAfterField(in code: [UInt8], field: Int, width: Int) -> Int { 0 }
}

/// Byte order of an architecture's data.
public enum ByteOrder: Sendable {
    case little, big

    /// An unsigned integer from at most 8 bytes in this order.
    func unsigned(_ bytes: some Collection<UInt8>) -> UInt64 {
        switch self {
        case .little: return bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
        case .big: return bytes.reduce(0) { $0 << 8 | UInt64($1) }
        }
    }
}

/// The kernel's virtual address space.
public struct AddressSpace: Sendable, Equatable {
    /// Virtual address widths the kernel can run with, smallest first (x86-64: 48 bits with 4-level page
    /// tables, 57 with 5-level, CONFIG_X86_5LEVEL on LA57 hardware).
    public let widths: [Int]

    /// The lowest kernel address with `width`-bit virtual addresses: kernel addresses are the upper half,
    /// the sign extension of bit `width - 1`.
    public func kernelStart(width: Int) -> UInt64 { ~UInt64(0) << UInt64(width - 1) }

    /// Whether `address` is a kernel address at some supported width.
    public func isKernelAddress(_ address: UInt64) -> Bool {
        widths.contains { address >= kernelStart(width: $0) }
    }
}

/// How a relocation's value is computed (ELF: S the symbol, A the addend, P the place relocated).
public enum RelocationForm: Sendable, Equatable {
    /// S + A: the field holds the address.
    case absolute
    /// S + A - P: the field holds a displacement from the place.
    case pcRelative
    /// No value (R_X86_64_NONE).
    case none
}

/// One relocation type of an architecture.
public struct Relocation: Sendable, Equatable, CustomStringConvertible {
    /// The ELF constant's number.
    public let type: UInt32
    public let form: RelocationForm
    /// Bytes of the field it patches.
    public let width: Int
    /// The ELF constant's name ("R_X86_64_PC32"), for messages.
    public let name: String
    public init(type: UInt32, form: RelocationForm, width: Int, name: String) {
        self.type = type
        self.form = form
        self.width = width
        self.name = name
    }
    public var description: String { name }
}

/// Bytes of kernel text that point into a range.
public struct TextReference: Sendable, Equatable {
    public enum Kind: Sendable, Equatable, CustomStringConvertible {
        /// A displacement from the end of the field (x86-64 RIP-relative).
        case pcRelative
        /// The address itself (a sign-extended 32-bit immediate on x86-64).
        case absolute
        public var description: String { self == .pcRelative ? "pc-relative" : "absolute" }
    }
    /// Where the bytes are.
    public let address: UInt64
    public let kind: Kind
    public init(address: UInt64, kind: Kind) {
        self.address = address
        self.kind = kind
    }
}

/// An architecture kreach doesn't know, or the running one not found.
public enum ArchError: Error, CustomStringConvertible, Equatable {
    case unknownELFMachine(UInt16, source: String)
    case unknownMachine(String)
    case uname(Int32)
    case pointerBytes(Int, expected: Int, arch: String)

    public var description: String {
        let supported = Arch.known.map { $0.unameMachines[0] }.joined(separator: ", ")
        switch self {
        case let .unknownELFMachine(m, source):
            return "\(source): ELF machine \(m) is not an architecture kreach supports (\(supported))"
        case .unknownMachine(let m):
            return "the kernel runs on \(m), not an architecture kreach supports (\(supported))"
        case .uname(let e): return "uname: \(String(cString: strerror(e)))"
        case let .pointerBytes(n, expected, arch): return "a pointer on \(arch) is \(expected) bytes, not \(n)"
        }
    }
}
