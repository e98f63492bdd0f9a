#include "ccapstone.h"
#include <capstone/capstone.h>
#include <stdlib.h>
#include <string.h>

typedef struct { csh cs; cs_insn *insn; } kreach_x86;

void *kreach_x86_open(void) {
    kreach_x86 *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &h->cs) != CS_ERR_OK) { free(h); return NULL; }
    cs_option(h->cs, CS_OPT_DETAIL, CS_OPT_ON);
    h->insn = cs_malloc(h->cs);
    if (!h->insn) { cs_close(&h->cs); free(h); return NULL; }
    return h;
}

void kreach_x86_close(void *handle) {
    kreach_x86 *h = handle;
    if (!h) return;
    cs_free(h->insn, 1);
    cs_close(&h->cs);
    free(h);
}

/// The register family (hardware number) of a general-purpose register; -1 for others.
static int family(x86_reg r) {
    switch (r) {
    case X86_REG_RAX: case X86_REG_EAX: case X86_REG_AX: case X86_REG_AL: case X86_REG_AH: return 0;
    case X86_REG_RCX: case X86_REG_ECX: case X86_REG_CX: case X86_REG_CL: case X86_REG_CH: return 1;
    case X86_REG_RDX: case X86_REG_EDX: case X86_REG_DX: case X86_REG_DL: case X86_REG_DH: return 2;
    case X86_REG_RBX: case X86_REG_EBX: case X86_REG_BX: case X86_REG_BL: case X86_REG_BH: return 3;
    case X86_REG_RSP: case X86_REG_ESP: case X86_REG_SP: case X86_REG_SPL: return 4;
    case X86_REG_RBP: case X86_REG_EBP: case X86_REG_BP: case X86_REG_BPL: return 5;
    case X86_REG_RSI: case X86_REG_ESI: case X86_REG_SI: case X86_REG_SIL: return 6;
    case X86_REG_RDI: case X86_REG_EDI: case X86_REG_DI: case X86_REG_DIL: return 7;
    case X86_REG_R8: case X86_REG_R8D: case X86_REG_R8W: case X86_REG_R8B: return 8;
    case X86_REG_R9: case X86_REG_R9D: case X86_REG_R9W: case X86_REG_R9B: return 9;
    case X86_REG_R10: case X86_REG_R10D: case X86_REG_R10W: case X86_REG_R10B: return 10;
    case X86_REG_R11: case X86_REG_R11D: case X86_REG_R11W: case X86_REG_R11B: return 11;
    case X86_REG_R12: case X86_REG_R12D: case X86_REG_R12W: case X86_REG_R12B: return 12;
    case X86_REG_R13: case X86_REG_R13D: case X86_REG_R13W: case X86_REG_R13B: return 13;
    case X86_REG_R14: case X86_REG_R14D: case X86_REG_R14W: case X86_REG_R14B: return 14;
    case X86_REG_R15: case X86_REG_R15D: case X86_REG_R15W: case X86_REG_R15B: return 15;
    default: return -1;
    }
}

/// Whether a displacement is a kernel address (the top 2 GiB, where x86-64 kernels and modules live).
static int kernel_address(int64_t v) { return v >= -(int64_t)0x80000000LL && v < -(int64_t)0x1000000LL; }

/// The absolute address a memory operand names, when it names one: RIP-relative, or a kernel address as
/// displacement (absolute or indexed). Segment-relative (per-CPU) operands name none.
static int memory_address(const cs_insn *insn, const cs_x86_op *op, uint64_t *address, int *indexed) {
    if (op->mem.segment != X86_REG_INVALID) return 0;
    if (op->mem.base == X86_REG_RIP) {
        *address = insn->address + insn->size + (uint64_t)op->mem.disp;
        *indexed = op->mem.index != X86_REG_INVALID;
        return 1;
    }
    if (kernel_address(op->mem.disp)) {
        *address = (uint64_t)op->mem.disp;
        *indexed = op->mem.base != X86_REG_INVALID || op->mem.index != X86_REG_INVALID;
        return 1;
    }
    return 0;
}

size_t kreach_x86_step(void *handle, const uint8_t **code, size_t *size, uint64_t *address, kreach_fact *out) {
    kreach_x86 *h = handle;
    memset(out, 0, sizeof *out);
    out->reg = out->src_reg = -1;
    if (!cs_disasm_iter(h->cs, code, size, address, h->insn)) return 0;
    const cs_insn *insn = h->insn;
    const cs_x86 *x = &insn->detail->x86;
    out->size = insn->size;
    out->locked = x->prefix[0] == X86_PREFIX_LOCK;
    for (int i = 0; i < insn->detail->regs_write_count; i++) {
        int f = family(insn->detail->regs_write[i]);
        if (f >= 0) out->written |= 1u << f;
    }
    for (int i = 0; i < x->op_count; i++) {
        const cs_x86_op *op = &x->operands[i];
        if (op->type == X86_OP_REG && (op->access & CS_AC_WRITE)) {
            int f = family(op->reg);
            if (f >= 0) out->written |= 1u << f;
        }
    }
    switch (insn->id) {
    case X86_INS_CALL:
        if (x->op_count == 1 && x->operands[0].type == X86_OP_IMM) {
            out->kind = KREACH_FACT_CALL;
            out->address = (uint64_t)x->operands[0].imm;
        } else {
            out->kind = KREACH_FACT_CALL_INDIRECT;
        }
        return insn->size;
    case X86_INS_JMP:
        if (x->op_count == 1 && x->operands[0].type == X86_OP_IMM) {
            out->kind = KREACH_FACT_JUMP;
            out->address = (uint64_t)x->operands[0].imm;
        } else {
            out->kind = KREACH_FACT_BARRIER;
        }
        return insn->size;
    case X86_INS_RET: case X86_INS_UD2: case X86_INS_INT3:
        out->kind = KREACH_FACT_BARRIER;
        return insn->size;
    default: break;
    }
    if (x->op_count != 2) {
        // One memory operand alone (inc, dec, neg, not, setcc...): an access of its width.
        if (x->op_count == 1 && x->operands[0].type == X86_OP_MEM) {
            int indexed = 0;
            if (memory_address(insn, &x->operands[0], &out->address, &indexed)) {
                out->kind = KREACH_FACT_ACCESS;
                out->width = x->operands[0].size;
                out->indexed = indexed;
            }
        }
        return insn->size;
    }
    const cs_x86_op *dst = &x->operands[0], *src = &x->operands[1];
    int indexed = 0;
    uint64_t a = 0;
    switch (insn->id) {
    case X86_INS_LEA:
        if (dst->type == X86_OP_REG && dst->size == 8 && memory_address(insn, src, &a, &indexed) && !indexed) {
            out->kind = KREACH_FACT_ADDRESS;
            out->reg = family(dst->reg);
            out->address = a;
        }
        return insn->size;
    case X86_INS_MOV: case X86_INS_MOVABS: case X86_INS_MOVZX: case X86_INS_MOVSX: case X86_INS_MOVSXD:
        if (dst->type == X86_OP_REG && src->type == X86_OP_IMM && dst->size == 8 && kernel_address(src->imm)) {
            out->kind = KREACH_FACT_ADDRESS;
            out->reg = family(dst->reg);
            out->address = (uint64_t)src->imm;
        } else if (dst->type == X86_OP_REG && src->type == X86_OP_MEM && memory_address(insn, src, &a, &indexed)) {
            out->kind = KREACH_FACT_LOAD;
            out->reg = family(dst->reg);
            out->address = a;
            out->indexed = indexed;
            out->width = src->size;
            out->extension = insn->id == X86_INS_MOVZX ? KREACH_EXT_ZERO
                           : (insn->id == X86_INS_MOVSX || insn->id == X86_INS_MOVSXD) ? KREACH_EXT_SIGN : KREACH_EXT_NONE;
        } else if (dst->type == X86_OP_MEM && memory_address(insn, dst, &a, &indexed)) {
            out->kind = KREACH_FACT_STORE;
            out->address = a;
            out->indexed = indexed;
            out->width = dst->size;
            out->src_reg = src->type == X86_OP_REG ? family(src->reg) : -1;
        } else if (dst->type == X86_OP_REG && src->type == X86_OP_REG && dst->size == 8 && src->size == 8) {
            out->kind = KREACH_FACT_MOVE;
            out->reg = family(dst->reg);
            out->src_reg = family(src->reg);
        }
        return insn->size;
    default:
        // Two operands, one of them a global in memory (cmp, add, test, and, or, xchg, cmpxchg...).
        for (int i = 0; i < 2; i++) {
            if (x->operands[i].type == X86_OP_MEM && memory_address(insn, &x->operands[i], &a, &indexed)) {
                out->kind = KREACH_FACT_ACCESS;
                out->address = a;
                out->indexed = indexed;
                out->width = x->operands[i].size;
            }
        }
        return insn->size;
    }
}
