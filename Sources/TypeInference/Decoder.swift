import Arch
import CCapstone

/// What one instruction does with kernel addresses, in terms every architecture shares: the input of
/// type inference. Registers are numbered by the architecture's decoder (`InstructionDecoder`).
public enum Fact: Sendable, Equatable {
    /// reg = address.
    case address(reg: Int, address: UInt64)
    /// reg = the `width`-byte value at `address`; `signed` true for sign extension, false for zero
    /// extension, nil when the load doesn't widen. `indexed`: an element of an array based there.
    case load(reg: Int, address: UInt64, width: Int, signed: Bool?, indexed: Bool)
    /// The `width` bytes at `address` = `source` (nil for an immediate).
    case store(address: UInt64, width: Int, source: Int?, indexed: Bool)
    /// The `width` bytes at `address` read or changed otherwise (compare, add, test...); `locked`: an
    /// atomic read-modify-write.
    case access(address: UInt64, width: Int, indexed: Bool, locked: Bool)
    /// reg = source.
    case move(reg: Int, source: Int)
    /// A direct call.
    case call(UInt64)
    /// A direct unconditional jump (a tail call when it leaves the function).
    case jump(UInt64)
    /// A call through a register or memory.
    case indirectCall
    /// Control doesn't continue with the next instruction (return, indirect jump, trap).
    case barrier
    /// Nothing about addresses.
    case other
}

/// Decodes machine code into `Fact`s: one conformance per architecture (x86-64 through Capstone today;
/// arm64 is a file with its own mapping).
public protocol InstructionDecoder: AnyObject {
    /// Argument registers of the kernel's calling convention, in parameter order.
    var argumentRegisters: [Int] { get }
    /// Registers a call may change (caller-saved, including the return register).
    var callClobbered: [Int] { get }
    /// The return-value register.
    var returnRegister: Int { get }
    /// Decodes the instructions of `code` (at `address`) in order, calling `body` with each instruction's
    /// address, the fact, and the registers it writes (bit per register); stops at bytes that are no
    /// instruction or when `body` returns false.
    func decode(_ code: UnsafeRawBufferPointer, at address: UInt64,
                _ body: (_ address: UInt64, _ fact: Fact, _ written: UInt32) -> Bool)
}

public struct DecoderError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The decoder for `arch`.
public func makeDecoder(for arch: Arch) throws -> any InstructionDecoder {
    switch arch.elfMachine {
    case X86_64().elfMachine: return try X86_64Decoder()
    default: throw DecoderError(description: "type inference can't decode \(arch.name) code yet")
    }
}

/// x86-64 through Capstone: System V argument registers rdi, rsi, rdx, rcx, r8, r9 (hardware numbers 7,
/// 6, 2, 1, 8, 9); caller-saved rax, rcx, rdx, rsi, rdi, r8–r11.
public final class X86_64Decoder: InstructionDecoder {
    let handle: UnsafeMutableRawPointer
    public let argumentRegisters = [7, 6, 2, 1, 8, 9]
    public let callClobbered = [0, 1, 2, 6, 7, 8, 9, 10, 11]
    public let returnRegister = 0

    public init() throws {
        guard let h = kreach_x86_open() else { throw DecoderError(description: "Capstone can't open an x86-64 disassembler") }
        handle = h
    }
    deinit { kreach_x86_close(handle) }

    public func decode(_ code: UnsafeRawBufferPointer, at address: UInt64,
                       _ body: (UInt64, Fact, UInt32) -> Bool) {
        guard let start = code.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(start)
        var remaining = code.count
        var pc = address
        var f = kreach_fact()
        while remaining > 0 {
            let at = pc
            guard kreach_x86_step(handle, &cursor, &remaining, &pc, &f) > 0 else { return }
            let fact: Fact
            switch Int(f.kind) {
            case Int(KREACH_FACT_ADDRESS): fact = f.reg >= 0 ? .address(reg: Int(f.reg), address: f.address) : .other
            case Int(KREACH_FACT_LOAD):
                let signed: Bool? = f.extension == KREACH_EXT_SIGN ? true : f.extension == KREACH_EXT_ZERO ? false : nil
                fact = f.reg >= 0 ? .load(reg: Int(f.reg), address: f.address, width: Int(f.width), signed: signed, indexed: f.indexed != 0) : .other
            case Int(KREACH_FACT_STORE):
                fact = .store(address: f.address, width: Int(f.width), source: f.src_reg >= 0 ? Int(f.src_reg) : nil, indexed: f.indexed != 0)
            case Int(KREACH_FACT_ACCESS): fact = .access(address: f.address, width: Int(f.width), indexed: f.indexed != 0, locked: f.locked != 0)
            case Int(KREACH_FACT_MOVE): fact = f.reg >= 0 && f.src_reg >= 0 ? .move(reg: Int(f.reg), source: Int(f.src_reg)) : .other
            case Int(KREACH_FACT_CALL): fact = .call(f.address)
            case Int(KREACH_FACT_JUMP): fact = .jump(f.address)
            case Int(KREACH_FACT_CALL_INDIRECT): fact = .indirectCall
            case Int(KREACH_FACT_BARRIER): fact = .barrier
            default: fact = .other
            }
            if !body(at, fact, f.written) { return }
        }
    }
}
