#ifndef CKREACH_H
#define CKREACH_H
#include <stddef.h>

/// glibc's memmem (a GNU extension Swift's Glibc module does not export).
const void *kreach_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);

#endif
