/*
 * many.c: 100,000 coroutines (20,000 on a 32-bit target) alive and suspended at once on one runtime
 * with the default config and default (64 KiB) stacks, then all resumed and
 * awaited. Prints the peak RSS (VmHWM) and RSS per coroutine, and the
 * number of memory mappings at the peak: guard pages must not split the
 * stack arena, so this runs under the default vm.max_map_count (65530).
 *
 * usage: many [count]
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "check.h"

#define TIMEOUT_MS 120000

/* 100,000 stacks take 6.8 GB of address space: a 32-bit process has 3. */
static long n = sizeof(void *) >= 8 ? 100000 : 20000;
static coro_token *tokens;
static atomic_long suspended;
static atomic_long finished;

/* "VmHWM:   123456 kB" -> 123456 (KiB); -1 if missing. */
static long proc_status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t len = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            v = strtol(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long count_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    long lines = 0;
    int c;
    while ((c = getc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    return lines;
}

static void store_token(coro_token t, void *arg)
{
    long i = (long)(intptr_t)arg;
    tokens[i] = t;
    atomic_fetch_add(&suspended, 1); /* publishes tokens[i] */
}

static atomic_long bad_suspend;

static void *body(void *envp)
{
    long i = *(long *)envp;
    int rc = coro_suspend(store_token, (void *)(intptr_t)i);
    if (rc != CORO_OK) {
        if (atomic_fetch_add(&bad_suspend, 1) == 0)
            CHECK_RC(rc, CORO_OK);
        return NULL;
    }
    atomic_fetch_add(&finished, 1);
    return (void *)(intptr_t)(i + 1);
}

int main(int argc, char **argv)
{
    check_init("many");
    if (argc > 1)
        n = atol(argv[1]);
    if (n < 1) {
        fprintf(stderr, "usage: %s [count]\n", argv[0]);
        return 2;
    }
    tokens = calloc((size_t)n, sizeof *tokens);
    coro_promise *promises = calloc((size_t)n, sizeof *promises);
    if (!tokens || !promises) {
        fprintf(stderr, "many: out of memory for %ld handles\n", n);
        return 2;
    }
    uint64_t frames_at_start = coro_live_frames();
    long rss_start = proc_status_kib("VmRSS");

    coro_runtime *rt = NULL;
    CHECK_RC(coro_runtime_new(NULL, &rt), CORO_OK); /* default config */
    if (!rt)
        return check_summary();

    double t0 = now_sec();
    long spawned = 0;
    for (; spawned < n; spawned++) {
        int rc = coro_spawn(rt, body, &spawned, sizeof spawned, NULL, 0, &promises[spawned]);
        if (rc != CORO_OK) {
            CHECK_RC(rc, CORO_OK);
            fprintf(stderr, "many: spawn %ld of %ld failed\n", spawned + 1, n);
            break;
        }
    }
    WAIT_UNTIL(atomic_load(&suspended) == spawned, TIMEOUT_MS);
    double t1 = now_sec();
    CHECK_EQ(atomic_load(&suspended), spawned);
    long maps_at_peak = count_mappings();
    CHECK_EQ(coro_live_frames(), frames_at_start + (uint64_t)spawned);
    CHECK_EQ(atomic_load(&finished), 0);

    long bad_resume = 0, bad_await = 0, bad_result = 0;
    long ready = atomic_load(&suspended);
    for (long i = 0; i < ready; i++)
        bad_resume += coro_resume(tokens[i]) != CORO_OK;
    for (long i = 0; i < spawned; i++) {
        void *res = NULL;
        if (coro_await(promises[i], &res) != CORO_OK)
            bad_await++;
        else if ((intptr_t)res != i + 1)
            bad_result++;
    }
    double t2 = now_sec();
    CHECK_EQ(atomic_load(&bad_suspend), 0);
    CHECK_EQ(bad_resume, 0);
    CHECK_EQ(bad_await, 0);
    CHECK_EQ(bad_result, 0);
    CHECK_EQ(atomic_load(&finished), spawned);
    CHECK_EQ(spawned, n);

    long hwm = proc_status_kib("VmHWM");
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), frames_at_start);

    double per_coro_kib = spawned ? (double)(hwm - rss_start) / (double)spawned : 0.0;
    printf("many: %ld coroutines suspended at once; spawn+suspend %.2f s, resume+await %.2f s\n",
           spawned, t1 - t0, t2 - t1);
    printf("many: peak RSS (VmHWM) %.1f MiB, %.2f KiB per coroutine; %ld memory mappings at the "
           "peak\n",
           (double)hwm / 1024.0, per_coro_kib, maps_at_peak);
    /* Stacks are reserved lazily: a suspended coroutine must not cost its whole stack. */
    CHECK(per_coro_kib < 32.0);
    CHECK(maps_at_peak < 65530);
    free(tokens);
    free(promises);
    return check_summary();
}
