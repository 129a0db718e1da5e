/*
 * What the C benches share: their options, the clock and the one JSON
 * line each prints (the median of the repetitions and every sample), in
 * the shape benches/run.py reads.
 */
#ifndef COFRAME_BENCH_H
#define COFRAME_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints {"bench":..., "iters":..., "ns_per_op": median, "samples": [...]};
 * at most 64 samples. */
static void report(const char *bench, uint64_t iters, double *s, int reps)
{
    double sorted[64];
    memcpy(sorted, s, sizeof(double) * (size_t)reps);
    qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
    double med = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
    printf("{\"bench\":\"%s\",\"iters\":%llu,\"ns_per_op\":%.4f,\"samples\":[", bench,
           (unsigned long long)iters, med);
    for (int i = 0; i < reps; i++)
        printf("%s%.3f", i ? "," : "", s[i]);
    printf("]}\n");
    fflush(stdout);
}

struct bench_args {
    uint64_t iters; /* --iters N (default 100,000) */
    int reps;       /* --reps R, 1 to 63 (default 5) */
    int workers;    /* --workers W (default 2; cbench: 0 is one per CPU) */
};

/* The options after the mode (argv[1]). */
static struct bench_args bench_args(int argc, char **argv)
{
    struct bench_args a = { .iters = 100000, .reps = 5, .workers = 2 };
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--iters"))
            a.iters = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps"))
            a.reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--workers"))
            a.workers = atoi(argv[i + 1]);
    }
    if (a.reps < 1)
        a.reps = 1;
    if (a.reps > 63)
        a.reps = 63;
    if (a.iters < 1)
        a.iters = 1;
    return a;
}

#endif
