import CKreach

/// The instructions the in-kernel walk program (Memory/BPFListWalk) needs beyond the reader's.
extension Instruction {
    /// if dst == src goto +off.
    public static func jumpEqual(_ dst: Register, _ src: Register, _ off: Int16) -> Instruction {
        Instruction(code: jmp | 0x10 | x, dst: dst.number, src: src.number, offset: off, imm: 0)
    }
    /// if dst != imm goto +off.
    public static func jumpNotEqual(_ dst: Register, _ value: Int32, _ off: Int16) -> Instruction {
        Instruction(code: jmp | 0x50 | k, dst: dst.number, src: 0, offset: off, imm: value)
    }
    /// if dst & imm goto +off (BPF_JSET).
    public static func jumpIfAnyBit(_ dst: Register, _ mask: Int32, _ off: Int16) -> Instruction {
        Instruction(code: jmp | 0x40 | k, dst: dst.number, src: 0, offset: off, imm: mask)
    }
    /// *(u64 *)(dst + off) = imm (sign-extended).
    public static func store64(_ dst: Register, _ off: Int16, _ value: Int32) -> Instruction {
        Instruction(code: st | mem | dw, dst: dst.number, src: 0, offset: off, imm: value)
    }
    /// The same jump with another offset (for programs whose jump targets are fixed up after layout).
    public func retargeted(_ off: Int16) -> Instruction {
        Instruction(code: code, dst: dst, src: src, offset: off, imm: imm)
    }
}
