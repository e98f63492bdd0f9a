import CKreach

/// A BPF register (r0–r10).
public struct Register: Sendable, Equatable {
    public let number: UInt8
    public static let r0 = Register(number: 0), r1 = Register(number: 1), r2 = Register(number: 2)
    public static let r3 = Register(number: 3), r4 = Register(number: 4), r5 = Register(number: 5)
    public static let r6 = Register(number: 6), r7 = Register(number: 7), r8 = Register(number: 8)
    public static let r9 = Register(number: 9), r10 = Register(number: 10)
}

/// One `struct bpf_insn`. The constructors name the instruction classes of include/uapi/linux/bpf.h.
public struct Instruction: Sendable, Equatable {
    public let code: UInt8
    public let dst: UInt8
    public let src: UInt8
    public let offset: Int16
    public let imm: Int32

    // Opcode pieces (BPF_CLASS | BPF_SIZE/BPF_OP | BPF_MODE/BPF_SRC).
    static let ld: UInt8 = 0x00, ldx: UInt8 = 0x01, st: UInt8 = 0x02, stx: UInt8 = 0x03
    static let jmp: UInt8 = 0x05, alu64: UInt8 = 0x07
    static let w: UInt8 = 0x00, dw: UInt8 = 0x18
    static let imm: UInt8 = 0x00, mem: UInt8 = 0x60
    static let k: UInt8 = 0x00, x: UInt8 = 0x08

    /// dst = src (64-bit).
    public static func mov(_ dst: Register, _ src: Register) -> Instruction {
        Instruction(code: alu64 | 0xb0 | x, dst: dst.number, src: src.number, offset: 0, imm: 0)
    }
    /// dst = imm (sign-extended to 64 bits).
    public static func mov(_ dst: Register, _ value: Int32) -> Instruction {
        Instruction(code: alu64 | 0xb0 | k, dst: dst.number, src: 0, offset: 0, imm: value)
    }
    /// dst += imm.
    public static func add(_ dst: Register, _ value: Int32) -> Instruction {
        Instruction(code: alu64 | 0x00 | k, dst: dst.number, src: 0, offset: 0, imm: value)
    }
    /// dst = *(u64 *)(src + off).
    public static func load64(_ dst: Register, _ src: Register, _ off: Int16) -> Instruction {
        Instruction(code: ldx | mem | dw, dst: dst.number, src: src.number, offset: off, imm: 0)
    }
    /// *(u64 *)(dst + off) = src.
    public static func store64(_ dst: Register, _ off: Int16, _ src: Register) -> Instruction {
        Instruction(code: stx | mem | dw, dst: dst.number, src: src.number, offset: off, imm: 0)
    }
    /// *(u32 *)(dst + off) = imm.
    public static func store32(_ dst: Register, _ off: Int16, _ value: Int32) -> Instruction {
        Instruction(code: st | mem | w, dst: dst.number, src: 0, offset: off, imm: value)
    }
    /// dst = map (ld_imm64 with BPF_PSEUDO_MAP_FD): two instruction slots.
    public static func loadMap(_ dst: Register, fd: Int32) -> [Instruction] {
        [Instruction(code: ld | imm | dw, dst: dst.number, src: UInt8(BPF_PSEUDO_MAP_FD), offset: 0, imm: fd),
         Instruction(code: 0, dst: 0, src: 0, offset: 0, imm: 0)]
    }
    /// if dst == imm goto +off.
    public static func jumpEqual(_ dst: Register, _ value: Int32, _ off: Int16) -> Instruction {
        Instruction(code: jmp | 0x10 | k, dst: dst.number, src: 0, offset: off, imm: value)
    }
    /// if dst > imm (unsigned) goto +off.
    public static func jumpGreater(_ dst: Register, _ value: Int32, _ off: Int16) -> Instruction {
        Instruction(code: jmp | 0x20 | k, dst: dst.number, src: 0, offset: off, imm: value)
    }
    /// Call a kernel helper (BPF_FUNC_*).
    public static func call(_ helper: bpf_func_id) -> Instruction {
        Instruction(code: jmp | 0x80, dst: 0, src: 0, offset: 0, imm: Int32(helper.rawValue))
    }
    public static let exit = Instruction(code: jmp | 0x90, dst: 0, src: 0, offset: 0, imm: 0)

    public var raw: bpf_insn {
        var i = bpf_insn()
        i.code = code
        i.dst_reg = dst
        i.src_reg = src
        i.off = offset
        i.imm = imm
        return i
    }
}
