/*
 * check.hpp: check.h's kit for the C++ tests (check.h is C11: its
 * <stdatomic.h> types are not C++20's). The same names and output:
 *
 *   CHECK(cond)              any condition; prints file:line and the expression
 *   CHECK_RC(expr, want)     a coframe status code; prints both codes by name
 *   CHECK_EQ(a, b)           two integers (printed as long long)
 *   WAIT_UNTIL(cond, ms)     poll `cond` until it holds or `ms` milliseconds pass
 *   lockstep_wait(pos, i)    spin (then yield) until another thread's position
 *                            counter reaches `i`: the race tests' lock step
 *   check_init(name), check_failures(), check_summary()
 *                            "<name>: N passed, N failed", the exit status
 *   count_fds(), now_sec(), pause_briefly()
 *
 * It also gives the global names poll_util.h uses (atomic_int and the
 * atomic_load/atomic_store it finds through std::atomic), so that header
 * compiles as C++ after this one.
 */
#ifndef COFRAME_FFI_TESTS_CHECK_HPP
#define COFRAME_FFI_TESTS_CHECK_HPP

#include <dirent.h>
#include <sched.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "coframe.h"

#ifndef CHECK_MAX_REPORTS
#define CHECK_MAX_REPORTS 50
#endif

using std::atomic_int; // poll_util.h's

inline std::atomic<long> check_passed_{ 0 };
inline std::atomic<long> check_failed_{ 0 };
inline const char *check_name_ = "test";

inline void check_init(const char *name)
{
    check_name_ = name;
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
}

inline const char *coro_code_name(int code)
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

inline bool check_fail_report_() { return check_failed_.fetch_add(1) < CHECK_MAX_REPORTS; }

inline bool check_cond_(bool ok, const char *file, int line, const char *expr)
{
    if (ok) {
        check_passed_++;
        return true;
    }
    if (check_fail_report_())
        std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, expr);
    return false;
}

inline bool check_rc_(int got, int want, const char *file, int line, const char *expr)
{
    if (got == want) {
        check_passed_++;
        return true;
    }
    if (check_fail_report_())
        std::fprintf(stderr, "%s:%d: CHECK failed: %s\n    returned %d %s (%s), expected %d %s (%s)\n", file, line,
                     expr, got, coro_code_name(got), coro_strerror(got), want, coro_code_name(want),
                     coro_strerror(want));
    return false;
}

inline bool check_eq_(long long a, long long b, const char *file, int line, const char *ea, const char *eb)
{
    if (a == b) {
        check_passed_++;
        return true;
    }
    if (check_fail_report_())
        std::fprintf(stderr, "%s:%d: CHECK failed: %s == %s\n    left %lld, right %lld\n", file, line, ea, eb, a, b);
    return false;
}

#define CHECK(cond) check_cond_(static_cast<bool>(cond), __FILE__, __LINE__, #cond)
#define CHECK_RC(expr, want) check_rc_((expr), (want), __FILE__, __LINE__, #expr)
#define CHECK_EQ(a, b) check_eq_(static_cast<long long>(a), static_cast<long long>(b), __FILE__, __LINE__, #a, #b)

inline long check_failures() { return check_failed_.load(); }

inline int check_summary()
{
    long p = check_passed_.load(), f = check_failed_.load();
    std::printf("%s: %ld passed, %ld failed\n", check_name_, p, f);
    std::fflush(stdout);
    return f == 0 ? 0 : 1;
}

/* Descriptors open in this process. */
inline int count_fds()
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

inline double now_sec()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline void pause_briefly()
{
    struct timespec ts = { 0, 100000 }; /* 0.1 ms */
    nanosleep(&ts, nullptr);
}

#define WAIT_UNTIL(cond, ms)                                                                       \
    do {                                                                                           \
        double wait_until_end_ = now_sec() + static_cast<double>(ms) / 1000.0;                     \
        while (!(cond) && now_sec() < wait_until_end_)                                             \
            pause_briefly();                                                                       \
    } while (0)

/* The race tests' threads walk a batch in lock step: each waits until the
 * other is done with the previous item. */
inline void lockstep_wait(std::atomic<long> *other, long i)
{
    int spins = 0;
    while (other->load(std::memory_order_acquire) < i)
        if (++spins > 64)
            sched_yield();
}

#endif /* COFRAME_FFI_TESTS_CHECK_HPP */
