#ifndef CKREACH_H
#define CKREACH_H
#include <stddef.h>
#include <stdint.h>
#include <linux/bpf.h>

/// glibc's memmem (a GNU extension Swift's Glibc module does not export).
const void *kreach_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

/// The bpf() syscall shim. Each returns >= 0 on success (an fd or 0), or -errno.
/// BPF_MAP_CREATE of a BPF_MAP_TYPE_ARRAY.
int kreach_bpf_array_create(uint32_t value_size, uint32_t max_entries, const char *name);
/// BPF_PROG_LOAD; the verifier's log goes to log_buf (may be NULL).
int kreach_bpf_prog_load(uint32_t prog_type, const struct bpf_insn *insns, uint32_t insn_count,
                         const char *license, char *log_buf, uint32_t log_size, const char *name);
/// BPF_PROG_TEST_RUN with only a context (raw_tracepoint programs take their u64 args this way).
int kreach_bpf_prog_test_run(int prog_fd, const void *ctx, uint32_t ctx_size, uint32_t *retval);
/// BPF_MAP_LOOKUP_ELEM.
int kreach_bpf_map_lookup(int map_fd, const void *key, void *value);
/// BPF_MAP_UPDATE_ELEM (BPF_ANY) of one of kreach's own maps (the gather reader's list of addresses).
int kreach_bpf_map_update(int map_fd, const void *key, const void *value);

/// Formats for kreach_decompress.
/// KREACH_LZO (lzo1x, one block) and KREACH_SNAPPY (raw snappy, one block) are kdump-compressed pages.
enum { KREACH_XZ = 1, KREACH_ZSTD = 2, KREACH_GZIP = 3, KREACH_ZLIB = 4, KREACH_LZO = 5, KREACH_SNAPPY = 6 };
/// kreach_decompress results.
enum { KREACH_DECOMPRESS_OK = 0, KREACH_DECOMPRESS_CORRUPT = -1, KREACH_DECOMPRESS_TOO_LARGE = -2 };
/// Decompresses all of in[0, in_len) (concatenated streams/frames/members too) into out[0, out_cap) with
/// liblzma, libzstd, zlib, liblzo2 or libsnappy. KREACH_DECOMPRESS_OK with the length in *out_len; TOO_LARGE when the output
/// does not fit in out_cap; CORRUPT (corrupt, truncated, not that format) with a reason in err.
int kreach_decompress(int format, const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len, char *err, size_t err_len);
/// The upper bound of kreach_compress_zstd's output for in_len bytes (ZSTD_compressBound).
size_t kreach_zstd_bound(size_t in_len);
/// Compresses in[0, in_len) into one zstd frame in out[0, out_cap) at `level`; the frame's length, or 0 on failure.
size_t kreach_compress_zstd(const void *in, size_t in_len, void *out, size_t out_cap, int level);

#endif
