#ifndef CDWARF_H
#define CDWARF_H
#include <stddef.h>
#include <stdint.h>

/// The kind of a DWARF type, as kreach maps it to BTF (modifiers — const, volatile, restrict, atomic —
/// are skipped; typedefs are kept).
enum {
    KREACH_DWARF_OTHER = 0,
    KREACH_DWARF_STRUCT = 1,
    KREACH_DWARF_UNION = 2,
    KREACH_DWARF_TYPEDEF = 3,
    KREACH_DWARF_BASE = 4,
    KREACH_DWARF_ENUM = 5,
    KREACH_DWARF_POINTER = 6,
    KREACH_DWARF_ARRAY = 7,
};

/// A variable's type: its kind, name ("" for anonymous types and pointers/arrays), byte size; for a
/// pointer or array, `element_*` describe what it points to or holds (one level), and `count` the array's
/// elements (0 when unknown).
typedef struct {
    int32_t kind;
    char name[128];
    uint64_t size;
    int32_t element_kind;
    char element_name[128];
    uint64_t element_size;
    uint64_t count;
} kreach_dwarf_type;

/// Looks up the variable `name` among the top-level DIEs of every compilation unit of the ELF file `path`
/// (its .debug_info), a definition (not a declaration) first. At most `max_dies` top-level DIEs are
/// visited. `build_id` (`*build_id_size` bytes) receives the file's GNU build-id, `*build_id_size` its
/// length (0 when it has none). Returns the number of definitions found with distinct types (0: none; `out` is the first),
/// or -1 with `error` set (no DWARF, unreadable file, the bound reached).
int kreach_dwarf_variable_type(const char *path, const char *name, uint64_t max_dies, kreach_dwarf_type *out,
                               uint8_t *build_id, size_t *build_id_size, char *error, size_t error_size);

#endif
