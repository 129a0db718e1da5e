/*
 * check.h: the tiny assertion kit of coframe's C tests.
 *
 *   CHECK(cond)              any condition; prints file:line and the expression
 *   CHECK_RC(expr, want)     a coframe status code; prints both codes by name
 *                            and coro_strerror() of each
 *   CHECK_EQ(a, b)           two integers (printed as long long)
 *   REQUIRE(cond)            CHECK, and `return` from the current function on
 *   REQUIRE_RC(expr, want)   failure (use in void test functions)
 *   WAIT_UNTIL(cond, ms)     poll `cond` until it holds or `ms` milliseconds pass
 *   CHECK_FRAMES_BACK_TO(base, ms)
 *                            wait until coro_live_frames() is `base` again, check it
 *   check_runtime(workers)   a runtime with that many workers (0: one per CPU),
 *                            its creation checked; NULL if it failed
 *   lockstep_wait(pos, i)    spin (then yield) until another thread's position
 *                            counter reaches `i`: the race tests' lock step
 *   check_summary()          prints "<name>: N passed, N failed", returns the
 *                            process exit status (0 only if nothing failed)
 *   count_fds()              descriptors open in this process (/proc/self/fd)
 *   proc_status_kb(field)    a "<field>: N kB" line of /proc/self/status
 *                            (VmRSS, VmSize), -1 if absent
 *
 * Checks may run on any thread (inside coroutines, on foreign threads): the
 * counters are atomics. Only the first CHECK_MAX_REPORTS failures are
 * printed, so a broken stress loop cannot flood the log.
 */
#ifndef COFRAME_FFI_TESTS_CHECK_H
#define COFRAME_FFI_TESTS_CHECK_H

#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include "coframe.h"

#ifndef CHECK_MAX_REPORTS
#define CHECK_MAX_REPORTS 50
#endif

static atomic_long check_passed_;
static atomic_long check_failed_;
static const char *check_name_ = "test";

static inline void check_init(const char *name)
{
    check_name_ = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* "CORO_ESTALE" for -2, and so on; "?" for anything else. */
static inline const char *coro_code_name(int code)
{
    switch (code) {
    case CORO_OK: return "CORO_OK";
    case CORO_EINVAL: return "CORO_EINVAL";
    case CORO_ESTALE: return "CORO_ESTALE";
    case CORO_ESTATE: return "CORO_ESTATE";
    case CORO_ECANCELED: return "CORO_ECANCELED";
    case CORO_ETIMEDOUT: return "CORO_ETIMEDOUT";
    case CORO_ENOMEM: return "CORO_ENOMEM";
    case CORO_ELOCKHELD: return "CORO_ELOCKHELD";
    case CORO_ESHUTDOWN: return "CORO_ESHUTDOWN";
    case CORO_EIO: return "CORO_EIO";
    case CORO_EBUSY: return "CORO_EBUSY";
    case CORO_ECLOSED: return "CORO_ECLOSED";
    case CORO_PENDING: return "CORO_PENDING";
    default: return "?";
    }
}

static inline const char *check_strerror_(int code)
{
    const char *s = coro_strerror(code);
    return s ? s : "(coro_strerror returned NULL)";
}

static inline int check_fail_report_(void)
{
    return atomic_fetch_add(&check_failed_, 1) < CHECK_MAX_REPORTS;
}

static inline int check_cond_(int ok, const char *file, int line, const char *expr)
{
    if (ok) {
        atomic_fetch_add(&check_passed_, 1);
        return 1;
    }
    if (check_fail_report_())
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
    return 0;
}

static inline int check_rc_(int got, int want, const char *file, int line, const char *expr)
{
    if (got == want) {
        atomic_fetch_add(&check_passed_, 1);
        return 1;
    }
    if (check_fail_report_())
        fprintf(stderr, "%s:%d: CHECK failed: %s\n    returned %d %s (%s), expected %d %s (%s)\n",
                file, line, expr, got, coro_code_name(got), check_strerror_(got), want,
                coro_code_name(want), check_strerror_(want));
    return 0;
}

static inline int check_eq_(long long a, long long b, const char *file, int line, const char *ea,
                            const char *eb)
{
    if (a == b) {
        atomic_fetch_add(&check_passed_, 1);
        return 1;
    }
    if (check_fail_report_())
        fprintf(stderr, "%s:%d: CHECK failed: %s == %s\n    left %lld, right %lld\n", file, line, ea,
                eb, a, b);
    return 0;
}

#define CHECK(cond) check_cond_(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_RC(expr, want) check_rc_((expr), (want), __FILE__, __LINE__, #expr)
#define CHECK_EQ(a, b) check_eq_((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
#define REQUIRE(cond) do { if (!CHECK(cond)) return; } while (0)
#define REQUIRE_RC(expr, want) do { if (!CHECK_RC(expr, want)) return; } while (0)

/* Counts a failure that was already described by the caller. */
static inline void check_fail_msg(const char *file, int line, const char *msg)
{
    if (check_fail_report_())
        fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, msg);
}

static inline long check_failures(void)
{
    return atomic_load(&check_failed_);
}

static inline int check_summary(void)
{
    long p = atomic_load(&check_passed_), f = atomic_load(&check_failed_);
    printf("%s: %ld passed, %ld failed\n", check_name_, p, f);
    fflush(stdout);
    return f == 0 ? 0 : 1;
}

/* The process, as /proc shows it. */
static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static inline long proc_status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t len = strlen(field);
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            kb = atol(line + len + 1);
            break;
        }
    if (f)
        fclose(f);
    return kb;
}

/* Time and waiting. */
static inline double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline void pause_briefly(void)
{
    struct timespec ts = { 0, 100000 }; /* 0.1 ms */
    nanosleep(&ts, NULL);
}

/* Polls `cond` until true or `ms` elapsed. Follow it with a CHECK(cond). */
#define WAIT_UNTIL(cond, ms)                                                                       \
    do {                                                                                           \
        double wait_until_end_ = now_sec() + (double)(ms) / 1000.0;                                \
        while (!(cond) && now_sec() < wait_until_end_)                                             \
            pause_briefly();                                                                       \
    } while (0)

/* Frames a test made are gone once it ends. */
#define CHECK_FRAMES_BACK_TO(base, ms)                                                             \
    do {                                                                                           \
        WAIT_UNTIL(coro_live_frames() == (base), (ms));                                            \
        CHECK_EQ(coro_live_frames(), (base));                                                      \
    } while (0)

static inline coro_runtime *check_runtime(uint32_t workers)
{
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = workers, .stack_size = 0 };
    coro_runtime *r = NULL;
    CHECK_RC(coro_runtime_new(&cfg, &r), CORO_OK);
    return r;
}

/* The race tests' threads walk a batch in lock step: each waits until the
 * other is done with the previous item. */
static inline void lockstep_wait(atomic_long *other, long i)
{
    int spins = 0;
    while (atomic_load_explicit(other, memory_order_acquire) < i)
        if (++spins > 64)
            sched_yield();
}

/*
 * A token mailbox: the usual `on_suspend` callback stores the token of the
 * suspension into the box its `arg` points at; the test takes it out.
 */
typedef struct token_box {
    _Atomic uint64_t id; /* 0: empty */
} token_box;

static inline void token_box_put(coro_token t, void *arg)
{
    token_box *box = arg;
    atomic_store(&box->id, t.id);
}

/* Waits up to `ms` for a token; returns a zeroed token on timeout. */
static inline coro_token token_box_take(token_box *box, long ms)
{
    WAIT_UNTIL(atomic_load(&box->id) != 0, ms);
    coro_token t = { atomic_exchange(&box->id, 0) };
    return t;
}

/* An order log: defers, drops and bodies append one letter each. */
typedef struct order_log {
    char buf[128];
    atomic_int n;
} order_log;

static inline void order_log_add(order_log *log, char c)
{
    int i = atomic_fetch_add(&log->n, 1);
    if (i < (int)sizeof log->buf - 1)
        log->buf[i] = c;
}

static inline void order_log_reset(order_log *log)
{
    memset(log->buf, 0, sizeof log->buf);
    atomic_store(&log->n, 0);
}

#define CHECK_LOG(log, want)                                                                       \
    do {                                                                                           \
        if (!CHECK(strcmp((log)->buf, (want)) == 0))                                               \
            fprintf(stderr, "    order log is \"%s\", expected \"%s\"\n", (log)->buf, (want));     \
    } while (0)

#endif /* COFRAME_FFI_TESTS_CHECK_H */
