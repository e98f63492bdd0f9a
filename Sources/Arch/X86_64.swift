/// x86-64 (AMD64): EM_X86_64, little-endian, 8-byte pointers, 4- or 5-level page tables.
public struct X86_64: ArchDefinition {
    public init() {}
    public var unameMachines: [String] { ["x86_64"] }
    public var elfMachine: UInt16 { 62 }  // EM_X86_64
    public var pointerSize: Int { 8 }
    public var byteOrder: ByteOrder { .little }
    public var addressSpace: AddressSpace { AddressSpace(widths: [48, 57]) }

    /// The relocation types arch/x86/kernel/module.c (apply_relocate_add) applies to a module.
    public enum RelocationType: UInt32, CaseIterable, Sendable {
        case none = 0, r64 = 1, pc32 = 2, plt32 = 4, gotpcrel = 9, r32 = 10, r32s = 11, pc64 = 24
        case gotpcrelx = 41, rexGotpcrelx = 42

        var name: String {
            switch self {
            case .none: return "R_X86_64_NONE"
            case .r64: return "R_X86_64_64"
            case .pc32: return "R_X86_64_PC32"
            case .plt32: return "R_X86_64_PLT32"
            case .gotpcrel: return "R_X86_64_GOTPCREL"
            case .r32: return "R_X86_64_32"
            case .r32s: return "R_X86_64_32S"
            case .pc64: return "R_X86_64_PC64"
            case .gotpcrelx: return "R_X86_64_GOTPCRELX"
            case .rexGotpcrelx: return "R_X86_64_REX_GOTPCRELX"
            }
        }

        /// In a module the GOT forms are applied like PC32 (the loader patches the displacement to the symbol).
        var form: RelocationForm {
            switch self {
            case .none: return .none
            case .r64, .r32, .r32s: return .absolute
            case .pc32, .plt32, .gotpcrel, .pc64, .gotpcrelx, .rexGotpcrelx: return .pcRelative
            }
        }

        var width: Int {
            switch self {
            case .none: return 0
            case .r64, .pc64: return 8
            default: return 4
            }
        }
    }

    public func relocation(_ type: UInt32) -> Relocation? {
        guard let t = RelocationType(rawValue: type) else { return nil }
        return Relocation(type: type, form: t.form, width: t.width, name: t.name)
    }

    /// The immediate after a RIP-relative disp32: the instruction is [66][REX] opcode ModRM disp32 imm, ModRM
    /// with mod 00 and r/m 101. Its size follows from the opcode before the ModRM byte (Intel SDM vol. 2,
    /// appendix A): group 1 (80-83), shifts (C0/C1), mov (C6/C7 /0), test (F6/F7 /0, /1), imul (69/6B),
    /// 0F BA (bt*), shld/shrd (0F A4/AC). Any other form has no immediate after the field. Without decoding
    /// from the function's start a byte before the opcode can't always be told from a prefix; Debian's
    /// brd, dummy and loop modules agree with objdump (ModuleReferencesTests).
    /// A RIP-relative field (PC32, PLT32) takes the address only in lea (opcode 8D with ModRM mod=00 rm=101
    /// right before the disp32: the one encoding of lea with a RIP-relative operand); a GOT load (GOTPCREL,
    /// GOTPCRELX, REX_GOTPCRELX) and an absolute field (64, 32, 32S: `mov $g, %rdi` under the kernel code
    /// model, or an absolute operand, which kreach doesn't tell apart) may; so does any other type.
    public func mayTakeAddress(_ relocation: Relocation, code: ArraySlice<UInt8>, field: Int) -> Bool {
        guard relocation.type == RelocationType.pc32.rawValue || relocation.type == RelocationType.plt32.rawValue else { return true }
        guard field >= 2, field <= code.count else { return true }
        let at = code.startIndex + field
        return code[at - 2] == 0x8D && code[at - 1] & 0xC7 == 0x05
    }

    public func bytesAfterField(in code: [UInt8], field: Int, width: Int) -> Int {
        guard width == 4, field >= 2, field <= code.count else { return 0 }
        let modrm = code[field - 1]
        guard modrm & 0xc7 == 0x05 else { return 0 }  // not RIP-relative: the field ends the instruction
        let reg = (modrm >> 3) & 7
        let opcode = code[field - 2]
        // A 0F before the opcode is the two-byte escape or the last byte of the previous instruction
        // (jne +0xf is 75 0f). Only the two-byte opcodes that take a RIP-relative ModRM in kernel code are
        // taken as escaped: bt* imm8 (0F BA), shld/shrd imm8 (0F A4/AC), xadd (0F C0/C1, no immediate).
        // 0F C7 /0, 0F 80-83 with a ModRM, 0F C6/F6/F7/69/6B (SSE/MMX) are not, so those are one-byte opcodes.
        if field >= 3 && code[field - 3] == 0x0f {
            switch opcode {
            case 0xba, 0xa4, 0xac: return 1
            case 0xc0, 0xc1: return 0
            default: break
            }
        }
        var before = field - 3
        if before >= 0 && code[before] & 0xf0 == 0x40 { before -= 1 }  // REX
        let immediate = before >= 0 && code[before] == 0x66 ? 2 : 4   // operand-size prefix: imm16
        switch opcode {
        case 0x80, 0x82, 0x83, 0xc0, 0xc1, 0x6b: return 1
        case 0x81, 0x69: return immediate
        case 0xc6: return reg == 0 ? 1 : 0
        case 0xc7: return reg == 0 ? immediate : 0
        case 0xf6: return reg <= 1 ? 1 : 0
        case 0xf7: return reg <= 1 ? immediate : 0
        default: return 0
        }
    }

    /// A 4-byte window: RIP-relative disp32 or a sign-extended imm32.
    public var textReferenceWidth: Int { 4 }

    /// Every 4-byte window taken as a RIP-relative displacement (target = window end + disp32, the common
    /// case with no immediate after it) and as a sign-extended absolute imm32. With a range of a few bytes
    /// the chance of a random match over ~20 MB of text is small (about 0.1 expected per 8-byte target).
    public func textReferences(in bytes: UnsafeRawBufferPointer, at address: UInt64, to range: Range<UInt64>,
                               _ found: (TextReference) -> Void) {
        guard bytes.count >= 4 else { return }
        for i in 0...(bytes.count - 4) {
            let disp = Int64(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: Int32.self)))
            let site = address &+ UInt64(i)
            let rip = UInt64(bitPattern: Int64(bitPattern: site &+ 4) &+ disp)
            if range.contains(rip) { found(TextReference(address: site, kind: .pcRelative)) }
            let absolute = UInt64(bitPattern: disp)
            if range.contains(absolute) { found(TextReference(address: site, kind: .absolute)) }
        }
    }
}
