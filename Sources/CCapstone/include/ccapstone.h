#ifndef CCAPSTONE_H
#define CCAPSTONE_H
#include <stddef.h>
#include <stdint.h>

/// What one instruction does with kernel addresses, flattened from Capstone's detail so that Swift sees
/// no unions. Registers are numbered by family (the 64-bit register and its 32/16/8-bit parts are one):
/// x86-64 hardware numbers 0..15 (rax rcx rdx rbx rsp rbp rsi rdi r8..r15), -1 for none.
enum {
    KREACH_FACT_OTHER = 0,     ///< nothing about an address; `written` says what it clobbers
    KREACH_FACT_ADDRESS = 1,   ///< reg = address (lea reg, [rip+d]; mov reg, imm)
    KREACH_FACT_LOAD = 2,      ///< reg = *(width *)address, extension says how it widens
    KREACH_FACT_STORE = 3,     ///< *(width *)address = src_reg (or an immediate when src_reg is -1)
    KREACH_FACT_ACCESS = 4,    ///< *(width *)address read or written otherwise (cmp, add, inc, test...)
    KREACH_FACT_CALL = 5,      ///< direct call to address
    KREACH_FACT_JUMP = 6,      ///< direct unconditional jump to address (a tail call when outside the function)
    KREACH_FACT_BARRIER = 7,   ///< control does not fall through (ret, indirect jmp, ud2, int3)
    KREACH_FACT_CALL_INDIRECT = 8, ///< call through a register or memory
    KREACH_FACT_MOVE = 9,      ///< reg = src_reg (register to register, 64-bit)
};
enum { KREACH_EXT_NONE = 0, KREACH_EXT_ZERO = 1, KREACH_EXT_SIGN = 2 };

typedef struct {
    int32_t kind;
    int32_t reg;
    int32_t src_reg;
    int32_t width;       ///< bytes of the memory access
    int32_t extension;
    int32_t indexed;     ///< the address is a base added to a register (an array element), not the exact place
    int32_t locked;      ///< a LOCK-prefixed (atomic) read-modify-write
    uint64_t address;
    uint32_t written;    ///< bit per register family this instruction writes
    uint32_t size;       ///< bytes of the instruction
} kreach_fact;

/// A Capstone handle for x86-64 with detail on; NULL when Capstone can't open one.
void *kreach_x86_open(void);
void kreach_x86_close(void *handle);
/// Decodes the instruction at code[0, size) (at `address`) into *out; 0 when the bytes are no instruction.
size_t kreach_x86_step(void *handle, const uint8_t **code, size_t *size, uint64_t *address, kreach_fact *out);

#endif
