#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ckreach.h"

const void *kreach_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    return memmem(haystack, haystack_len, needle, needle_len);
}

/* The one entry point into the kernel's bpf() syscall. */
static int sys_bpf(int cmd, union bpf_attr *attr) {
    long r = syscall(__NR_bpf, cmd, attr, sizeof(*attr));
    return r < 0 ? -errno : (int)r;
}

static void copy_name(char dst[BPF_OBJ_NAME_LEN], const char *name) {
    if (name) strncpy(dst, name, BPF_OBJ_NAME_LEN - 1);
}

int kreach_bpf_array_create(uint32_t value_size, uint32_t max_entries, const char *name) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = 4;
    a.value_size = value_size;
    a.max_entries = max_entries;
    copy_name(a.map_name, name);
    return sys_bpf(BPF_MAP_CREATE, &a);
}

int kreach_bpf_prog_load(uint32_t prog_type, const struct bpf_insn *insns, uint32_t insn_count,
                         const char *license, char *log_buf, uint32_t log_size, const char *name) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = prog_type;
    a.insns = (uint64_t)(uintptr_t)insns;
    a.insn_cnt = insn_count;
    a.license = (uint64_t)(uintptr_t)license;
    if (log_buf && log_size) {
        a.log_buf = (uint64_t)(uintptr_t)log_buf;
        a.log_size = log_size;
        a.log_level = 1;
    }
    copy_name(a.prog_name, name);
    return sys_bpf(BPF_PROG_LOAD, &a);
}

int kreach_bpf_prog_test_run(int prog_fd, const void *ctx, uint32_t ctx_size, uint32_t *retval) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.test.prog_fd = (uint32_t)prog_fd;
    a.test.ctx_in = (uint64_t)(uintptr_t)ctx;
    a.test.ctx_size_in = ctx_size;
    int r = sys_bpf(BPF_PROG_TEST_RUN, &a);
    if (r == 0 && retval) *retval = a.test.retval;
    return r;
}

int kreach_bpf_map_lookup(int map_fd, const void *key, void *value) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map_fd;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    return sys_bpf(BPF_MAP_LOOKUP_ELEM, &a);
}
