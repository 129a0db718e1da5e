/*
 * poll_shutdown.c: coro_runtime_shutdown with thousands of coroutines
 * parked in the poller.
 *
 *   N coroutines wait for their own socketpair end to become readable
 *   (never written; half with no deadline, half with one 10-100 s away),
 *   N coroutines sleep until a random deadline 10-100 s away.
 *
 * Every tenth one of each kind is spawned with CORO_SPAWN_CANCEL_RETURNS:
 * its wait must return CORO_ECANCELED, and so must a second wait, at once;
 * then it returns. The others (default mode) must never continue past their
 * wait. Each has a defer that counts, per coroutine; a waiter's defer also
 * closes its descriptor (and a sample of them checks that the poller had
 * already deregistered it).
 *
 * Then coro_runtime_shutdown, which must not wait for the deadlines, and
 * afterwards:
 *   - every defer ran exactly once; no default-mode body continued;
 *   - coro_live_frames() is back to its starting value;
 *   - the kept promises answer CORO_ESTALE;
 *   - once the test closed its own ends, the process has exactly the
 *     descriptors it had before the runtime existed (the waiters' ends were
 *     closed by the defers, the runtime's epoll and eventfd by shutdown).
 *
 * usage: poll_shutdown [waiters [sleepers]]     (default 5,000 and 5,000)
 */
#define _GNU_SOURCE
#include <unistd.h>

#include "check.h"
#include "poll_util.h"

#define TIMEOUT_MS 30000
#define SEC 1000000000LL

enum kind { FD_WAITER, SLEEPER };

struct slot {
    int kind;
    int fd;          /* FD_WAITER: the end it waits on (closed by its defer) */
    int peer;        /* FD_WAITER: the other end (closed by the test) */
    int cancel_returns;
    int64_t deadline;
    coro_promise promise;
    atomic_int defers;
    atomic_int continued;   /* the body ran past its first wait */
    atomic_int first_rc, second_rc;
    atomic_int registered_in_defer; /* epoll_has(&pollers, fd) inside the defer */
};

static struct slot *slots;
static atomic_int parked;  /* coroutines about to wait */
static atomic_long defers_run;
static epoll_set_t pollers;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void on_defer(void *arg)
{
    struct slot *s = arg;
    if (s->kind == FD_WAITER) {
        /* A sample checks the order: the wait ended (deregistered) first. */
        if ((s - slots) % 500 == 0)
            atomic_store(&s->registered_in_defer, epoll_has(&pollers, s->fd));
        close(s->fd);
    }
    atomic_fetch_add(&s->defers, 1);
    atomic_fetch_add(&defers_run, 1);
}

static void *body(void *envp)
{
    struct slot *s = &slots[*(int *)envp];
    if (coro_defer(on_defer, s) != CORO_OK)
        atomic_store(&s->first_rc, 100);
    atomic_fetch_add(&parked, 1);
    int rc = s->kind == FD_WAITER ? coro_wait_fd(s->fd, CORO_READABLE, s->deadline)
                                  : coro_sleep_until(s->deadline);
    /* Default mode: never here (nothing is written, no deadline is near). */
    atomic_store(&s->first_rc, rc);
    atomic_store(&s->continued, 1);
    int64_t t = coro_now();
    rc = s->kind == FD_WAITER ? coro_wait_fd(s->fd, CORO_READABLE, t + 60 * SEC)
                              : coro_sleep_until(t + 60 * SEC);
    atomic_store(&s->second_rc, rc);
    return NULL;
}

int main(int argc, char **argv)
{
    check_init("poll_shutdown");
    long waiters = argc > 1 ? atol(argv[1]) : 5000;
    long sleepers = argc > 2 ? atol(argv[2]) : 5000;
    if (waiters < 0 || sleepers < 0 || waiters + sleepers < 1) {
        fprintf(stderr, "usage: %s [waiters [sleepers]]\n", argv[0]);
        return 2;
    }
    long fit = (raise_nofile(2 * waiters + 64) - 64) / 2;
    if (fit < waiters) {
        printf("poll_shutdown: the open-file limit allows %ld waiters, not %ld\n", fit, waiters);
        waiters = fit;
    }
    long n = waiters + sleepers;
    slots = calloc((size_t)n, sizeof *slots);
    if (!slots)
        return 2;

    int fds_at_start = count_fds();
    uint64_t frames_at_start = coro_live_frames();
    epoll_snapshot_t eps;
    epoll_snapshot(&eps);
    coro_runtime *rt = NULL;
    CHECK_RC(coro_runtime_new(NULL, &rt), CORO_OK);
    if (!rt)
        return check_summary();
    epoll_find_new(&eps, &pollers);
    int idle_regs = epoll_count(&pollers);

    int64_t t0 = coro_now();
    for (int i = 0; i < n; i++) {
        struct slot *s = &slots[i];
        s->kind = i < waiters ? FD_WAITER : SLEEPER;
        s->cancel_returns = i % 10 == 9;
        s->fd = s->peer = -1;
        int64_t far = t0 + 10 * SEC + (int64_t)(next_rand() % (uint64_t)(90 * SEC));
        if (s->kind == FD_WAITER) {
            int sv[2];
            if (!CHECK(nb_socketpair(sv) == 0))
                return check_summary();
            s->fd = sv[0];
            s->peer = sv[1];
            s->deadline = i % 2 ? far : -1;
        } else {
            s->deadline = far;
        }
        atomic_store(&s->first_rc, 1000);  /* "never set" */
        atomic_store(&s->second_rc, 1000);
        atomic_store(&s->registered_in_defer, -2);
        int rc = coro_spawn(rt, body, &i, sizeof i, NULL,
                            s->cancel_returns ? CORO_SPAWN_CANCEL_RETURNS : 0, &s->promise);
        if (!CHECK_RC(rc, CORO_OK))
            return check_summary();
    }
    WAIT_UNTIL(atomic_load(&parked) == n, TIMEOUT_MS);
    CHECK_EQ(atomic_load(&parked), n);
    if (idle_regs >= 0) {
        WAIT_UNTIL(epoll_count(&pollers) == idle_regs + waiters, TIMEOUT_MS);
        CHECK_EQ(epoll_count(&pollers), idle_regs + waiters);
    }
    sleep_ms(50); /* the sleepers park too (their timers are invisible from here) */

    long early = 0;
    for (int i = 0; i < n; i++)
        early += atomic_load(&slots[i].continued);
    CHECK_EQ(early, 0); /* nothing ready, no deadline due: nobody woke */
    CHECK_EQ(atomic_load(&defers_run), 0);

    double ts = now_sec();
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    double shutdown_s = now_sec() - ts;
    CHECK(shutdown_s < 8.0); /* the earliest deadline is 10 s away: it did not wait for them */

    long bad_defers = 0, continued_default = 0, cr_ok = 0, cr_bad = 0, sampled = 0, still_reg = 0;
    for (int i = 0; i < n; i++) {
        struct slot *s = &slots[i];
        if (atomic_load(&s->defers) != 1) {
            if (bad_defers++ < 10)
                fprintf(stderr, "poll_shutdown: coroutine %d (%s%s): defer ran %d times\n", i,
                        s->kind == FD_WAITER ? "waiter" : "sleeper",
                        s->cancel_returns ? ", cancel-returns" : "", atomic_load(&s->defers));
        }
        if (s->cancel_returns) {
            if (atomic_load(&s->first_rc) == CORO_ECANCELED &&
                atomic_load(&s->second_rc) == CORO_ECANCELED) {
                cr_ok++;
            } else if (cr_bad++ < 10) {
                fprintf(stderr, "poll_shutdown: cancel-returns coroutine %d: waits returned %d, %d "
                                "(want CORO_ECANCELED twice)\n",
                        i, atomic_load(&s->first_rc), atomic_load(&s->second_rc));
            }
        } else if (atomic_load(&s->continued)) {
            if (continued_default++ < 10)
                fprintf(stderr, "poll_shutdown: default-mode coroutine %d continued (rc %d)\n", i,
                        atomic_load(&s->first_rc));
        }
        int reg = atomic_load(&s->registered_in_defer);
        if (reg != -2 && pollers.n > 0) {
            sampled++;
            still_reg += reg != 0;
        }
        if (i < 5)
            CHECK_RC(coro_await(s->promise, NULL), CORO_ESTALE);
        if (s->peer >= 0)
            close(s->peer);
    }
    CHECK_EQ(bad_defers, 0);
    CHECK_EQ(continued_default, 0);
    CHECK_EQ(cr_bad, 0);
    CHECK_EQ(atomic_load(&defers_run), n);
    CHECK_EQ(still_reg, 0);
    CHECK_EQ(coro_live_frames(), frames_at_start);
    int fds_now = count_fds();
    CHECK_EQ(fds_now, fds_at_start);

    printf("poll_shutdown: %ld fd waiters and %ld sleepers parked; coro_runtime_shutdown took "
           "%.0f ms\n",
           waiters, sleepers, shutdown_s * 1e3);
    printf("poll_shutdown: %ld defers ran for %ld coroutines (%ld cancel-returns coroutines saw "
           "CORO_ECANCELED twice, %ld default-mode ones continued)\n",
           atomic_load(&defers_run), n, cr_ok, continued_default);
    printf("poll_shutdown: live frames %llu (at start %llu); open descriptors %d (before the "
           "runtime %d); %ld sampled defers found their fd still registered\n",
           (unsigned long long)coro_live_frames(), (unsigned long long)frames_at_start, fds_now,
           fds_at_start, still_reg);
    free(slots);
    return check_summary();
}
