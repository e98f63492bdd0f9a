#include "cdwarf.h"
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <dwarf.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/// How many modifiers and typedef-free steps are followed from a variable to its type.
#define MAX_TYPE_DEPTH 16

/// Debug info is read from the file given only: no search for separate debug files.
static int no_debuginfo(Dwfl_Module *m, void **u, const char *n, Dwarf_Addr a, const char *f, const char *d,
                        GElf_Word c, char **p) {
    (void)m; (void)u; (void)n; (void)a; (void)f; (void)d; (void)c; (void)p;
    return -1;
}

static const Dwfl_Callbacks offline_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = no_debuginfo,
    .section_address = dwfl_offline_section_address,
};

static void set_error(char *error, size_t size, const char *message) {
    if (error && size) snprintf(error, size, "%s", message);
}

/// The type DW_AT_type of `die` names, modifiers skipped; 0 when it has none (void).
static int type_of(Dwarf_Die *die, Dwarf_Die *out) {
    Dwarf_Attribute attr;
    if (!dwarf_attr_integrate(die, DW_AT_type, &attr) || !dwarf_formref_die(&attr, out)) return 0;
    for (int depth = 0; depth < MAX_TYPE_DEPTH; depth++) {
        int tag = dwarf_tag(out);
        if (tag != DW_TAG_const_type && tag != DW_TAG_volatile_type && tag != DW_TAG_restrict_type && tag != DW_TAG_atomic_type)
            return 1;
        Dwarf_Die next;
        if (!dwarf_attr_integrate(out, DW_AT_type, &attr) || !dwarf_formref_die(&attr, &next)) return 0;
        *out = next;
    }
    return 0;
}

static int kind_of(int tag) {
    switch (tag) {
    case DW_TAG_structure_type: return KREACH_DWARF_STRUCT;
    case DW_TAG_union_type: return KREACH_DWARF_UNION;
    case DW_TAG_typedef: return KREACH_DWARF_TYPEDEF;
    case DW_TAG_base_type: return KREACH_DWARF_BASE;
    case DW_TAG_enumeration_type: return KREACH_DWARF_ENUM;
    case DW_TAG_pointer_type: return KREACH_DWARF_POINTER;
    case DW_TAG_array_type: return KREACH_DWARF_ARRAY;
    default: return KREACH_DWARF_OTHER;
    }
}

static void describe(Dwarf_Die *type, int32_t *kind, char *name, uint64_t *size) {
    *kind = kind_of(dwarf_tag(type));
    const char *n = dwarf_diename(type);
    snprintf(name, 128, "%s", n ? n : "");
    Dwarf_Word s = 0;
    if (*kind != KREACH_DWARF_ARRAY) {
        int r = dwarf_aggregate_size(type, &s);
        *size = r == 0 ? s : 0;
    }
}

static void fill(Dwarf_Die *var, kreach_dwarf_type *out) {
    memset(out, 0, sizeof *out);
    Dwarf_Die type;
    if (!type_of(var, &type)) { out->kind = KREACH_DWARF_OTHER; return; }
    describe(&type, &out->kind, out->name, &out->size);
    if (out->kind == KREACH_DWARF_POINTER || out->kind == KREACH_DWARF_ARRAY) {
        Dwarf_Die element;
        if (type_of(&type, &element)) describe(&element, &out->element_kind, out->element_name, &out->element_size);
        if (out->kind == KREACH_DWARF_ARRAY) {
            Dwarf_Word s = 0;
            if (dwarf_aggregate_size(&type, &s) == 0) out->size = s;
            Dwarf_Die sub;
            if (dwarf_child(&type, &sub) == 0 && dwarf_tag(&sub) == DW_TAG_subrange_type) {
                Dwarf_Attribute a;
                Dwarf_Word v;
                if (dwarf_attr(&sub, DW_AT_count, &a) && dwarf_formudata(&a, &v) == 0) out->count = v;
                else if (dwarf_attr(&sub, DW_AT_upper_bound, &a) && dwarf_formudata(&a, &v) == 0) out->count = v + 1;
            }
        }
    }
}

int kreach_dwarf_variable_type(const char *path, const char *name, uint64_t max_dies, kreach_dwarf_type *out,
                               uint8_t *build_id, size_t *build_id_size, char *error, size_t error_size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) { set_error(error, error_size, "can't open the file (a symbolic link is not followed)"); return -1; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        set_error(error, error_size, "not a regular file");
        return -1;
    }
    // libdwfl applies a relocatable file's (a .ko's, an object's) relocations to its debug sections.
    Dwfl *dwfl = dwfl_begin(&offline_callbacks);
    if (!dwfl) {
        close(fd);
        set_error(error, error_size, "libdw can't start");
        return -1;
    }
    Dwfl_Module *module = dwfl_report_offline(dwfl, "", path, fd);  // consumes fd on success
    if (!module) close(fd);
    dwfl_report_end(dwfl, NULL, NULL);
    Dwarf_Addr bias;
    Dwarf *dw = module ? dwfl_module_getdwarf(module, &bias) : NULL;
    if (!dw) {
        dwfl_end(dwfl);
        set_error(error, error_size, "no DWARF debug info");
        return -1;
    }
    const void *id = NULL;
    Elf *elf = dwarf_getelf(dw);
    ssize_t id_size = elf ? dwelf_elf_gnu_build_id(elf, &id) : -1;
    if (id_size > 0 && (size_t)id_size <= *build_id_size) {
        memcpy(build_id, id, (size_t)id_size);
        *build_id_size = (size_t)id_size;
    } else {
        *build_id_size = 0;
    }
    int found = 0, result = 0;
    kreach_dwarf_type first, other;
    Dwarf_Die declaration;
    int have_declaration = 0;
    uint64_t visited = 0;
    Dwarf_Off offset = 0, next;
    size_t header;
    while (result == 0 && dwarf_nextcu(dw, offset, &next, &header, NULL, NULL, NULL) == 0) {
        Dwarf_Die cu, child;
        if (dwarf_offdie(dw, offset + header, &cu) && dwarf_child(&cu, &child) == 0) {
            do {
                if (++visited > max_dies) {
                    set_error(error, error_size, "too many DIEs: the walk stopped at its bound");
                    result = -1;
                    break;
                }
                if (dwarf_tag(&child) != DW_TAG_variable) continue;
                const char *n = dwarf_diename(&child);
                if (!n || strcmp(n, name) != 0) continue;
                if (dwarf_hasattr(&child, DW_AT_declaration)) {
                    if (!have_declaration) { declaration = child; have_declaration = 1; }
                    continue;
                }
                if (found == 0) { fill(&child, &first); found = 1; continue; }
                fill(&child, &other);
                if (memcmp(&other, &first, sizeof first) != 0 && found < 64) found++;
            } while (dwarf_siblingof(&child, &child) == 0);
        }
        offset = next;
    }
    if (result == 0 && found == 0 && have_declaration) { fill(&declaration, &first); found = 1; }
    dwfl_end(dwfl);
    if (result < 0) return -1;
    if (found) *out = first;
    return found;
}
