// Baseline for the BTF benchmark: libbpf's btf__parse on the same file, timed in-process.
// Prints the median wall time of N parses, and of parse + one btf__find_by_name_kind, in microseconds.
#include <bpf/btf.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s BTF-FILE [ITERATIONS]\n", argv[0]); return 2; }
    int n = argc > 2 ? atoi(argv[2]) : 30;
    if (n < 1) n = 1;
    double *t = calloc((size_t)n, sizeof(double));
    double *l = calloc((size_t)n, sizeof(double));
    if (!t || !l) return 1;
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        struct btf *btf = btf__parse(argv[1], NULL);
        if (!btf) { perror("btf__parse"); return 1; }
        clock_gettime(CLOCK_MONOTONIC, &b);
        int id = btf__find_by_name_kind(btf, "task_struct", BTF_KIND_STRUCT);
        struct timespec c;
        clock_gettime(CLOCK_MONOTONIC, &c);
        t[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
        l[i] = (c.tv_sec - a.tv_sec) * 1e6 + (c.tv_nsec - a.tv_nsec) / 1e3;
        if (i == 0) fprintf(stderr, "libbpf: %u types, struct task_struct is id %d\n", btf__type_cnt(btf), id);
        btf__free(btf);
    }
    qsort(t, (size_t)n, sizeof(double), cmp);
    qsort(l, (size_t)n, sizeof(double), cmp);
    printf("libbpf_btf_parse_median_us %.1f\n", t[n / 2]);
    printf("libbpf_btf_parse_lookup_median_us %.1f\n", l[n / 2]);
    free(t);
    free(l);
    return 0;
}
