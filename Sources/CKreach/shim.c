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

int kreach_bpf_map_update(int map_fd, const void *key, const void *value) {
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map_fd;
    a.key = (uint64_t)(uintptr_t)key;
    a.value = (uint64_t)(uintptr_t)value;
    a.flags = BPF_ANY;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}

/* In-process decompression of .ko.xz, .ko.zst and .ko.gz, and of kdump-compressed pages (zlib, lzo, snappy,
 * zstd): no decompressor process, no shell. */
#include <lzma.h>
#include <lzo/lzo1x.h>
#include <snappy-c.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>

static int fail(char *err, size_t err_len, const char *what) {
    if (err && err_len) snprintf(err, err_len, "%s", what);
    return KREACH_DECOMPRESS_CORRUPT;
}

static int decompress_xz(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, char *err, size_t err_len) {
    lzma_stream s = LZMA_STREAM_INIT;
    /* Kernel modules are compressed with a 1 MiB dictionary; 128 MiB bounds what a hostile header can ask. */
    if (lzma_stream_decoder(&s, 128u << 20, LZMA_CONCATENATED) != LZMA_OK) return fail(err, err_len, "can't start the xz decoder");
    s.next_in = in;
    s.avail_in = in_len;
    s.next_out = out;
    s.avail_out = out_cap;
    int result;
    for (;;) {
        lzma_ret r = lzma_code(&s, LZMA_FINISH);
        if (r == LZMA_STREAM_END) { result = KREACH_DECOMPRESS_OK; break; }
        if (r == LZMA_OK) {
            if (s.avail_out == 0) { result = KREACH_DECOMPRESS_TOO_LARGE; break; }
            continue;
        }
        if (r == LZMA_BUF_ERROR && s.avail_out == 0) { result = KREACH_DECOMPRESS_TOO_LARGE; break; }
        const char *why = r == LZMA_BUF_ERROR ? "xz data is truncated"
            : r == LZMA_FORMAT_ERROR ? "not xz data"
            : r == LZMA_DATA_ERROR ? "xz data is corrupt"
            : r == LZMA_MEMLIMIT_ERROR ? "xz data needs more than 128 MiB of memory to decompress"
            : r == LZMA_OPTIONS_ERROR ? "xz data uses unsupported options"
            : r == LZMA_MEM_ERROR ? "out of memory decompressing xz data"
            : "xz data could not be decompressed";
        result = fail(err, err_len, why);
        break;
    }
    *out_len = s.total_out;
    lzma_end(&s);
    return result;
}

static int decompress_zstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, char *err, size_t err_len) {
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) return fail(err, err_len, "can't start the zstd decoder");
    /* A 128 MiB window at most (zstd's own default limit), whatever the frame header asks. */
    ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 27);
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_cap, 0 };
    int result;
    for (;;) {
        size_t before_in = ib.pos, before_out = ob.pos;
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            char why[160];
            snprintf(why, sizeof why, "zstd data is corrupt (%s)", ZSTD_getErrorName(r));
            result = fail(err, err_len, why);
            break;
        }
        if (r == 0 && ib.pos == ib.size) { result = KREACH_DECOMPRESS_OK; break; }
        if (ob.pos == ob.size) { result = KREACH_DECOMPRESS_TOO_LARGE; break; }
        if (ib.pos == before_in && ob.pos == before_out) { result = fail(err, err_len, "zstd data is truncated"); break; }
    }
    if (in_len == 0) result = fail(err, err_len, "zstd data is empty");
    *out_len = ob.pos;
    ZSTD_freeDCtx(d);
    return result;
}

/* window_bits 15 + 16: gzip members; 15: one zlib stream (a kdump-compressed page). */
static int decompress_gzip(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, char *err, size_t err_len, int window_bits) {
    if (in_len > UINT32_MAX || out_cap > UINT32_MAX) return fail(err, err_len, "gzip data over 4 GiB");
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, window_bits) != Z_OK) return fail(err, err_len, "can't start the gzip decoder");
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_cap;
    int result;
    for (;;) {
        int r = inflate(&z, Z_FINISH);
        if (r == Z_STREAM_END) {
            if (z.avail_in == 0 || window_bits == 15) { result = KREACH_DECOMPRESS_OK; break; }
            inflateReset(&z);  /* another gzip member follows */
            continue;
        }
        if (r == Z_OK) continue;
        if (r == Z_BUF_ERROR && z.avail_out == 0) { result = KREACH_DECOMPRESS_TOO_LARGE; break; }
        const char *kind = window_bits == 15 ? "zlib" : "gzip";
        char why[64];
        snprintf(why, sizeof why, r == Z_BUF_ERROR ? "%s data is truncated" : r == Z_MEM_ERROR ? "out of memory decompressing %s data" : "%s data is corrupt", kind);
        result = fail(err, err_len, why);
        break;
    }
    *out_len = z.total_out;
    inflateEnd(&z);
    return result;
}

/* One lzo1x block (makedumpfile -l: lzo1x_1_compress of a page), bounds-checked by the _safe decoder. */
static int decompress_lzo(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, char *err, size_t err_len) {
    if (lzo_init() != LZO_E_OK) return fail(err, err_len, "can't start the lzo decoder");
    lzo_uint length = out_cap;
    int r = lzo1x_decompress_safe(in, in_len, out, &length, NULL);
    *out_len = length;
    if (r == LZO_E_OK) return KREACH_DECOMPRESS_OK;
    if (r == LZO_E_OUTPUT_OVERRUN) return KREACH_DECOMPRESS_TOO_LARGE;
    return fail(err, err_len, r == LZO_E_INPUT_OVERRUN ? "lzo data is truncated"
        : r == LZO_E_INPUT_NOT_CONSUMED ? "lzo data has bytes past its end" : "lzo data is corrupt");
}

/* One raw snappy block (makedumpfile -p: snappy_compress of a page); its header states the length. */
static int decompress_snappy(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len, char *err, size_t err_len) {
    size_t length = 0;
    if (snappy_uncompressed_length((const char *)in, in_len, &length) != SNAPPY_OK) return fail(err, err_len, "not snappy data");
    if (length > out_cap) return KREACH_DECOMPRESS_TOO_LARGE;
    if (snappy_uncompress((const char *)in, in_len, (char *)out, &length) != SNAPPY_OK) return fail(err, err_len, "snappy data is corrupt");
    *out_len = length;
    return KREACH_DECOMPRESS_OK;
}

int kreach_decompress(int format, const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len, char *err, size_t err_len) {
    *out_len = 0;
    switch (format) {
    case KREACH_XZ: return decompress_xz(in, in_len, out, out_cap, out_len, err, err_len);
    case KREACH_ZSTD: return decompress_zstd(in, in_len, out, out_cap, out_len, err, err_len);
    case KREACH_GZIP: return decompress_gzip(in, in_len, out, out_cap, out_len, err, err_len, 15 + 16);
    case KREACH_ZLIB: return decompress_gzip(in, in_len, out, out_cap, out_len, err, err_len, 15);
    case KREACH_LZO: return decompress_lzo(in, in_len, out, out_cap, out_len, err, err_len);
    case KREACH_SNAPPY: return decompress_snappy(in, in_len, out, out_cap, out_len, err, err_len);
    default: return fail(err, err_len, "unknown compression");
    }
}

size_t kreach_zstd_bound(size_t in_len) { return ZSTD_compressBound(in_len); }

size_t kreach_compress_zstd(const void *in, size_t in_len, void *out, size_t out_cap, int level) {
    size_t r = ZSTD_compress(out, out_cap, in, in_len, level);
    return ZSTD_isError(r) ? 0 : r;
}
