/*
 * poll_misuse.c: the poller's edges and misuses (coro_wait_fd,
 * coro_sleep_until, coro_now; DESIGN.md section 4, docs/API.md "Poller and
 * deadlines").
 *
 *   invalid fds         -1, a closed fd, a huge fd: CORO_EINVAL at once
 *                       (deadline set in case it would hang), in a coroutine
 *                       and on a plain thread
 *   bad events          0, 4, 8, high bits: CORO_EINVAL; 3 (both) is fine
 *   deadlines           a wait on a silent fd returns CORO_ETIMEDOUT, never
 *                       before its deadline; coro_sleep_until returns 0, never
 *                       before; a passed deadline with a silent fd returns
 *                       CORO_ETIMEDOUT at once (with a ready fd: 0)
 *   cancel-returns      coro_cancel_async on a coroutine in coro_wait_fd or
 *                       coro_sleep_until: the wait returns CORO_ECANCELED and
 *                       every later wait, sleep or yield too, at once
 *   default cancel      the defers run before coro_cancel_async returns, the
 *                       fd is already deregistered when they run (they may
 *                       close it), and the body never continues
 *   two waiters         one READABLE and one WRITABLE on the same fd both wake
 *                       (each on its own event); two READABLE both wake
 *   peer reset          SO_LINGER {1,0} + close: the waiter wakes, recv fails
 *                       with ECONNRESET, send with EPIPE/ECONNRESET, no SIGPIPE
 *   plain thread        coro_wait_fd blocks in poll(2), with a deadline;
 *                       on a worker outside a coroutine: CORO_ESTATE
 *   EMFILE              RLIMIT_NOFILE lowered to 64 under the echo server
 *                       (c-examples/echo_server.c): accept hits EMFILE, the
 *                       server backs off and keeps echoing on the connections
 *                       it has; with the limit restored it accepts the rest
 *
 * usage: poll_misuse [--no-emfile]
 *   --no-emfile skips the EMFILE part (valgrind keeps descriptors of its own
 *   and virtualizes RLIMIT_NOFILE: raising the limit back does not work
 *   under it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "echo.h"
#include "poll_util.h"

#define MS 1000000LL
#define SEC 1000000000LL

static coro_runtime *rt;
static epoll_set_t pollers; /* the runtime's epolls, for registration checks */
static int idle_regs;   /* its registrations when no wait is in progress */

/* ------------------------------------------------------------------ */
/* Running a function in a coroutine                                   */

/* Runs fn(arg) in a coroutine; a check fails if it does not end within `ms`. */
static void in_coro(void (*fn)(void *), void *arg, long ms, const char *what)
{
    run_in_coro(rt, fn, arg, ms, what);
}

/* ------------------------------------------------------------------ */
/* Invalid descriptors and events                                      */

static void invalid_fds(void *arg)
{
    (void)arg;
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    close(sv[0]); /* sv[0] is now a closed descriptor */
    int64_t t = coro_now();
    CHECK_RC(coro_wait_fd(-1, CORO_READABLE, t + SEC), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(-1, CORO_WRITABLE, -1), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(INT_MIN, CORO_READABLE, t + SEC), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, t + SEC), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE | CORO_WRITABLE, -1), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(1 << 20, CORO_READABLE, t + SEC), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(INT_MAX, CORO_WRITABLE, -1), CORO_EINVAL);
    /* A passed deadline only looks (poll with timeout 0): still EINVAL. */
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, 0), CORO_EINVAL);
    CHECK(coro_now() - t < SEC / 2); /* at once, not at the deadline */
    close(sv[1]);
}

static void check_bad_events(int fd)
{
    static const uint32_t bad[] = { 0, 4, 8, 1 | 8, 2 | 4, 0x80000000u, 0xffffffffu };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!CHECK_RC(coro_wait_fd(fd, bad[i], coro_now() + SEC), CORO_EINVAL))
            fprintf(stderr, "    events 0x%x\n", bad[i]);
    /* Both events on a writable fd: ready at once. */
    CHECK_RC(coro_wait_fd(fd, CORO_READABLE | CORO_WRITABLE, coro_now() + SEC), CORO_OK);
    CHECK_RC(coro_wait_fd(fd, CORO_WRITABLE, -1), CORO_OK);
}

static void bad_events(void *arg)
{
    check_bad_events(*(int *)arg);
}

static void test_invalid(void)
{
    in_coro(invalid_fds, NULL, 5000, "invalid fds in a coroutine");
    invalid_fds(NULL); /* the same on a plain thread */
    int sv[2];
    if (!CHECK(nb_socketpair(sv) == 0))
        return;
    in_coro(bad_events, &sv[0], 5000, "bad events in a coroutine");
    check_bad_events(sv[0]);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------ */
/* Deadlines                                                           */

static void deadlines(void *arg)
{
    (void)arg;
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    static const int64_t waits_ms[] = { 1, 7, 20, 60 };
    for (size_t i = 0; i < sizeof waits_ms / sizeof waits_ms[0]; i++) {
        int64_t deadline = coro_now() + waits_ms[i] * MS;
        CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, deadline), CORO_ETIMEDOUT);
        int64_t after = coro_now();
        if (!CHECK(after >= deadline))
            fprintf(stderr, "    wait_fd returned %lld ns before its deadline\n",
                    (long long)(deadline - after));
        CHECK(after < deadline + 2 * SEC);

        deadline = coro_now() + waits_ms[i] * MS;
        CHECK_RC(coro_sleep_until(deadline), CORO_OK);
        after = coro_now();
        if (!CHECK(after >= deadline))
            fprintf(stderr, "    sleep_until returned %lld ns before its deadline\n",
                    (long long)(deadline - after));
        CHECK(after < deadline + 2 * SEC);
    }
    /* Passed deadlines: at once. A silent fd times out, a ready one is ready. */
    int64_t t = coro_now();
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, t), CORO_ETIMEDOUT);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, 0), CORO_ETIMEDOUT);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, t - SEC), CORO_ETIMEDOUT);
    CHECK_RC(coro_sleep_until(0), CORO_OK);
    CHECK_RC(coro_sleep_until(t - SEC), CORO_OK);
    CHECK_RC(coro_wait_fd(sv[0], CORO_WRITABLE, 0), CORO_OK);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, 0), CORO_OK);
    CHECK(coro_now() - t < 200 * MS);
    /* The far future is a deadline like any other. */
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, INT64_MAX), CORO_OK);
    close(sv[0]);
    close(sv[1]);
}

static void test_deadlines(void)
{
    in_coro(deadlines, NULL, 10000, "deadlines");
}

/* ------------------------------------------------------------------ */
/* Cancellation in a wait                                              */

enum wait_kind { WAIT_FD, WAIT_FD_DEADLINE, SLEEP_FOREVER, SLEEP_DEADLINE };
static const char *const wait_names[] = { "coro_wait_fd(fd, READABLE, -1)",
                                          "coro_wait_fd(fd, READABLE, now + 10 s)",
                                          "coro_sleep_until(-1)", "coro_sleep_until(now + 10 s)" };

struct waiter {
    enum wait_kind kind;
    int fd, peer;
    atomic_int waiting;   /* about to wait */
    atomic_int continued; /* the body ran past the wait */
    atomic_int defers;
    atomic_int registered_in_defer; /* epoll_has(fd) when the defer ran */
    atomic_int fd_open_in_defer;
    int rc_wait, rc_fd, rc_sleep, rc_yield, rc_forever;
    int64_t after_ns; /* how long the later waits took */
};

static int do_wait(struct waiter *w)
{
    switch (w->kind) {
    case WAIT_FD: return coro_wait_fd(w->fd, CORO_READABLE, -1);
    case WAIT_FD_DEADLINE: return coro_wait_fd(w->fd, CORO_READABLE, coro_now() + 10 * SEC);
    case SLEEP_FOREVER: return coro_sleep_until(-1);
    default: return coro_sleep_until(coro_now() + 10 * SEC);
    }
}

static void waiter_defer(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->registered_in_defer, epoll_has(&pollers, w->fd));
    atomic_store(&w->fd_open_in_defer, fcntl(w->fd, F_GETFD) != -1);
    close(w->fd); /* safe: the poller no longer watches it */
    atomic_fetch_add(&w->defers, 1);
}

static void *waiter_body(void *envp)
{
    struct waiter *w = *(struct waiter **)envp;
    coro_defer(waiter_defer, w);
    atomic_store(&w->waiting, 1);
    w->rc_wait = do_wait(w);
    /* Default mode: never here. Cancel-returns mode: every later wait. */
    int64_t t = coro_now();
    w->rc_fd = coro_wait_fd(w->peer, CORO_WRITABLE, -1); /* writable, yet cancelled */
    w->rc_sleep = coro_sleep_until(coro_now() + 10 * SEC);
    w->rc_yield = coro_yield();
    w->rc_forever = coro_sleep_until(-1);
    w->after_ns = coro_now() - t;
    atomic_store(&w->continued, 1);
    return NULL;
}

static void cancel_in_wait(enum wait_kind kind, uint32_t flags)
{
    const char *mode = flags & CORO_SPAWN_CANCEL_RETURNS ? "cancel-returns" : "default";
    struct waiter w = { .kind = kind, .rc_wait = 1000 };
    struct waiter *wp = &w;
    int sv[2];
    if (!CHECK(nb_socketpair(sv) == 0))
        return;
    w.fd = sv[0];
    w.peer = sv[1];
    coro_promise p;
    if (!CHECK_RC(coro_spawn(rt, waiter_body, &wp, sizeof wp, NULL, flags, &p), CORO_OK))
        return;
    WAIT_UNTIL(atomic_load(&w.waiting), 5000);
    if (kind == WAIT_FD || kind == WAIT_FD_DEADLINE)
        WAIT_UNTIL(epoll_has(&pollers, w.fd) == 1, 5000);
    sleep_ms(10); /* parked, surely */
    CHECK_EQ(atomic_load(&w.continued), 0);

    CHECK_RC(coro_cancel_async(p), CORO_OK);
    if (flags & CORO_SPAWN_CANCEL_RETURNS) {
        WAIT_UNTIL(atomic_load(&w.continued) && atomic_load(&w.defers) == 1, 5000);
        if (!CHECK(atomic_load(&w.continued)))
            fprintf(stderr, "    %s, %s mode: the wait never returned\n", wait_names[kind], mode);
        if (!CHECK_RC(w.rc_wait, CORO_ECANCELED))
            fprintf(stderr, "    %s, %s mode\n", wait_names[kind], mode);
        CHECK_RC(w.rc_fd, CORO_ECANCELED);
        CHECK_RC(w.rc_sleep, CORO_ECANCELED);
        CHECK_RC(w.rc_yield, CORO_ECANCELED);
        CHECK_RC(w.rc_forever, CORO_ECANCELED);
        if (!CHECK(w.after_ns < SEC / 2))
            fprintf(stderr, "    the waits after the cancel took %lld ms\n",
                    (long long)(w.after_ns / MS));
    } else {
        /* The coroutine was suspended: its defers ran before cancel returned. */
        if (!CHECK_EQ(atomic_load(&w.defers), 1))
            fprintf(stderr, "    %s, default mode: defers had not run when coro_cancel_async "
                            "returned\n",
                    wait_names[kind]);
        /* Its end is closed: EPIPE (MSG_NOSIGNAL: this test keeps SIGPIPE fatal). */
        CHECK(send(sv[1], "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
        sleep_ms(20);
        if (!CHECK_EQ(atomic_load(&w.continued), 0))
            fprintf(stderr, "    %s, default mode: the body continued (rc %d)\n",
                    wait_names[kind], w.rc_wait);
    }
    WAIT_UNTIL(atomic_load(&w.defers) >= 1, 5000);
    CHECK_EQ(atomic_load(&w.defers), 1);
    CHECK_EQ(atomic_load(&w.fd_open_in_defer), 1);
    /* The wait was over (its registration gone) before the defers ran. */
    if (pollers.n > 0 && !CHECK_EQ(atomic_load(&w.registered_in_defer), 0))
        fprintf(stderr, "    %s, %s mode: the fd was still registered when the defer ran\n",
                wait_names[kind], mode);
    if (pollers.n > 0)
        CHECK_EQ(epoll_count(&pollers), idle_regs);
    close(sv[1]);
}

static void test_cancel(void)
{
    for (int k = WAIT_FD; k <= SLEEP_DEADLINE; k++) {
        cancel_in_wait((enum wait_kind)k, CORO_SPAWN_CANCEL_RETURNS);
        cancel_in_wait((enum wait_kind)k, 0);
    }
}

/* ------------------------------------------------------------------ */
/* Two waiters on one descriptor                                       */

struct fd_wait {
    int fd;
    uint32_t events;
    atomic_int rc; /* 1000 until it returns */
    atomic_int waiting;
};

static void *fd_wait_body(void *envp)
{
    struct fd_wait *w = *(struct fd_wait **)envp;
    atomic_store(&w->waiting, 1);
    atomic_store(&w->rc, coro_wait_fd(w->fd, w->events, coro_now() + 10 * SEC));
    return NULL;
}

static int spawn_fd_wait(struct fd_wait *w, coro_promise *p)
{
    atomic_store(&w->rc, 1000);
    return coro_spawn(rt, fd_wait_body, &w, sizeof w, NULL, 0, p);
}

static void test_two_waiters(void)
{
    int fds_before = count_fds();
    int sv[2];
    if (!CHECK(nb_socketpair(sv) == 0))
        return;
    /* Fill sv[0]'s way out, so it is neither readable nor writable. */
    char buf[4096] = { 0 };
    while (write(sv[0], buf, sizeof buf) > 0) {
    }
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);

    struct fd_wait r = { sv[0], CORO_READABLE, 0, 0 }, w = { sv[0], CORO_WRITABLE, 0, 0 };
    coro_promise pr, pw;
    if (!CHECK_RC(spawn_fd_wait(&r, &pr), CORO_OK) || !CHECK_RC(spawn_fd_wait(&w, &pw), CORO_OK))
        return;
    WAIT_UNTIL(atomic_load(&r.waiting) && atomic_load(&w.waiting), 5000);
    if (pollers.n > 0) {
        WAIT_UNTIL(epoll_count(&pollers) == idle_regs + 2, 5000);
        CHECK_EQ(epoll_count(&pollers), idle_regs + 2); /* on one worker, the second through a dup */
    }
    sleep_ms(20);
    CHECK_EQ(atomic_load(&r.rc), 1000);
    CHECK_EQ(atomic_load(&w.rc), 1000);

    CHECK(write(sv[1], "x", 1) == 1); /* sv[0] readable */
    WAIT_UNTIL(atomic_load(&r.rc) != 1000, 5000);
    CHECK_RC(atomic_load(&r.rc), CORO_OK);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&w.rc), 1000); /* still not writable */

    while (read(sv[1], buf, sizeof buf) > 0) { /* drain: sv[0] writable */
    }
    WAIT_UNTIL(atomic_load(&w.rc) != 1000, 5000);
    CHECK_RC(atomic_load(&w.rc), CORO_OK);
    CHECK_RC(coro_await(pr, NULL), CORO_OK);
    CHECK_RC(coro_await(pw, NULL), CORO_OK);

    /* Two readers of one descriptor: one byte wakes both. */
    struct fd_wait r1 = { sv[1], CORO_READABLE, 0, 0 }, r2 = { sv[1], CORO_READABLE, 0, 0 };
    if (!CHECK_RC(spawn_fd_wait(&r1, &pr), CORO_OK) ||
        !CHECK_RC(spawn_fd_wait(&r2, &pw), CORO_OK))
        return;
    WAIT_UNTIL(atomic_load(&r1.waiting) && atomic_load(&r2.waiting), 5000);
    if (pollers.n > 0)
        WAIT_UNTIL(epoll_count(&pollers) == idle_regs + 2, 5000);
    sleep_ms(10);
    CHECK(write(sv[0], "y", 1) == 1);
    WAIT_UNTIL(atomic_load(&r1.rc) != 1000 && atomic_load(&r2.rc) != 1000, 5000);
    CHECK_RC(atomic_load(&r1.rc), CORO_OK);
    CHECK_RC(atomic_load(&r2.rc), CORO_OK);
    CHECK_RC(coro_await(pr, NULL), CORO_OK);
    CHECK_RC(coro_await(pw, NULL), CORO_OK);

    if (pollers.n > 0)
        CHECK_EQ(epoll_count(&pollers), idle_regs);
    close(sv[0]);
    close(sv[1]);
    CHECK_EQ(count_fds(), fds_before); /* the dups were closed */
}

/* Again on a one-worker runtime: there both waits register in one epoll,
 * so the second goes through a dup of the descriptor, which must be closed
 * when its wait ends. */
static void test_two_waiters_one_worker(void)
{
    coro_runtime *saved_rt = rt;
    epoll_set_t saved_pollers = pollers;
    int saved_idle = idle_regs;
    epoll_snapshot_t eps;
    epoll_snapshot(&eps);
    rt = check_runtime(1);
    if (rt) {
        CHECK(epoll_find_new(&eps, &pollers) != 0); /* 1, or -1 without kcmp */
        idle_regs = epoll_count(&pollers);
        if (pollers.n > 0)
            CHECK_EQ(idle_regs, 1); /* one worker: its waker */
        test_two_waiters();
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    }
    rt = saved_rt;
    pollers = saved_pollers;
    idle_regs = saved_idle;
}

/* ------------------------------------------------------------------ */
/* A peer that resets                                                  */

/* A connected TCP pair over loopback: *client, *server (non-blocking). */
static int tcp_pair(int *client, int *server)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*client < 0 || connect(*client, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    *server = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    close(l);
    return *server < 0 ? -1 : 0;
}

struct reset_wait {
    int fd;
    atomic_int waiting, done;
    int rc, recv_ret, recv_errno, send_ret, send_errno;
};

static void *reset_body(void *envp)
{
    struct reset_wait *w = *(struct reset_wait **)envp;
    atomic_store(&w->waiting, 1);
    w->rc = coro_wait_fd(w->fd, CORO_READABLE, coro_now() + 10 * SEC);
    char c;
    errno = 0;
    w->recv_ret = (int)recv(w->fd, &c, 1, 0);
    w->recv_errno = errno;
    errno = 0;
    w->send_ret = (int)send(w->fd, "z", 1, MSG_NOSIGNAL);
    w->send_errno = errno;
    atomic_store(&w->done, 1);
    return NULL;
}

static void test_reset(void)
{
    int c = -1, s = -1;
    if (!CHECK(tcp_pair(&c, &s) == 0))
        return;
    struct reset_wait w = { .fd = s };
    struct reset_wait *wp = &w;
    coro_promise p;
    if (!CHECK_RC(coro_spawn(rt, reset_body, &wp, sizeof wp, NULL, 0, &p), CORO_OK))
        return;
    WAIT_UNTIL(atomic_load(&w.waiting), 5000);
    if (pollers.n > 0)
        WAIT_UNTIL(epoll_has(&pollers, s) == 1, 5000);
    sleep_ms(10);
    struct linger lg = { 1, 0 };
    CHECK(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    close(c); /* sends RST */
    WAIT_UNTIL(atomic_load(&w.done), 5000);
    CHECK(atomic_load(&w.done));
    CHECK_RC(w.rc, CORO_OK); /* the error counts as ready */
    CHECK_EQ(w.recv_ret, -1);
    if (!CHECK_EQ(w.recv_errno, ECONNRESET))
        fprintf(stderr, "    recv errno %d (%s)\n", w.recv_errno, strerror(w.recv_errno));
    CHECK_EQ(w.send_ret, -1);
    CHECK(w.send_errno == EPIPE || w.send_errno == ECONNRESET);
    CHECK_RC(coro_await(p, NULL), CORO_OK);
    close(s);
}

/* ------------------------------------------------------------------ */
/* Plain threads, and a worker outside a coroutine                     */

struct thread_wait {
    int fd;
    int rc;
    int64_t waited;
};

static void *thread_waits(void *arg)
{
    struct thread_wait *t = arg;
    int64_t t0 = coro_now();
    t->rc = coro_wait_fd(t->fd, CORO_READABLE, -1); /* blocks in poll(2) */
    t->waited = coro_now() - t0;
    return NULL;
}

struct worker_probe {
    int fd;
    atomic_int rc_wait, rc_sleep;
    token_box box;
};

static void probe_on_suspend(coro_token t, void *arg)
{
    struct worker_probe *w = arg;
    /* A worker thread, outside any coroutine: must not block the worker. */
    atomic_store(&w->rc_wait, coro_wait_fd(w->fd, CORO_READABLE, coro_now() + SEC));
    atomic_store(&w->rc_sleep, coro_sleep_until(coro_now() + MS));
    token_box_put(t, &w->box);
}

static void *probe_body(void *envp)
{
    struct worker_probe *w = *(struct worker_probe **)envp;
    coro_suspend(probe_on_suspend, w);
    return NULL;
}

static void test_plain_thread(void)
{
    int sv[2];
    if (!CHECK(nb_socketpair(sv) == 0))
        return;
    int64_t deadline = coro_now() + 30 * MS;
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, deadline), CORO_ETIMEDOUT);
    CHECK(coro_now() >= deadline);
    deadline = coro_now() + 1 * MS;
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, deadline), CORO_ETIMEDOUT);
    CHECK(coro_now() >= deadline);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, 0), CORO_ETIMEDOUT);
    CHECK_RC(coro_wait_fd(sv[0], CORO_WRITABLE, coro_now() + SEC), CORO_OK);
    deadline = coro_now() + 20 * MS;
    CHECK_RC(coro_sleep_until(deadline), CORO_OK);
    CHECK(coro_now() >= deadline);
    CHECK_RC(coro_sleep_until(-1), CORO_EINVAL); /* would sleep forever */

    /* Another thread blocks with no deadline until we write. */
    struct thread_wait tw = { sv[0], 1000, 0 };
    pthread_t th;
    if (CHECK(pthread_create(&th, NULL, thread_waits, &tw) == 0)) {
        sleep_ms(30);
        CHECK(write(sv[1], "x", 1) == 1);
        pthread_join(th, NULL);
        CHECK_RC(tw.rc, CORO_OK);
        CHECK(tw.waited >= 20 * MS);
    }
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, coro_now() + SEC), CORO_OK);

    /* On a worker, outside a coroutine (an on_suspend callback). */
    struct worker_probe probe = { .fd = sv[0] };
    struct worker_probe *pp = &probe;
    atomic_store(&probe.rc_wait, 1000);
    coro_promise p;
    if (CHECK_RC(coro_spawn(rt, probe_body, &pp, sizeof pp, NULL, 0, &p), CORO_OK)) {
        coro_token t = token_box_take(&probe.box, 5000);
        CHECK_RC(atomic_load(&probe.rc_wait), CORO_ESTATE);
        CHECK_RC(atomic_load(&probe.rc_sleep), CORO_ESTATE);
        CHECK_RC(coro_resume(t), CORO_OK);
        CHECK_RC(coro_await(p, NULL), CORO_OK);
    }

    /* A regular file cannot be polled: always ready, in a coroutine too. */
    int f = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (CHECK(f >= 0)) {
        CHECK_RC(coro_wait_fd(f, CORO_READABLE, coro_now() + SEC), CORO_OK);
        in_coro(bad_events, &f, 5000, "a regular file"); /* it is "writable" too */
        close(f);
    }
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------ */
/* EMFILE under the echo server                                        */

#define EARLY 4
#define LATE 80
#define LIMIT 64

/* A non-blocking connection to 127.0.0.1:port on `fd` (from this plain thread). */
static int connect_to(int fd, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return 0;
    if (errno != EINPROGRESS || coro_wait_fd(fd, CORO_WRITABLE, coro_now() + 5 * SEC) != CORO_OK)
        return -1;
    int err = 0;
    socklen_t len = sizeof err;
    return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
}

static int send_msg(int fd, const char *msg)
{
    return send(fd, msg, strlen(msg), MSG_NOSIGNAL) == (ssize_t)strlen(msg) ? 0 : -1;
}

/* Reads strlen(msg) bytes within `ms` and compares them with msg. */
static int expect_echo(int fd, const char *msg, long ms)
{
    size_t n = strlen(msg), got = 0;
    char buf[128];
    int64_t deadline = coro_now() + ms * MS;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (coro_wait_fd(fd, CORO_READABLE, deadline) != CORO_OK)
                return -1;
        } else {
            return -1;
        }
    }
    return memcmp(buf, msg, n) == 0 ? 0 : -1;
}

static int roundtrip(int fd, const char *msg)
{
    return send_msg(fd, msg) == 0 && expect_echo(fd, msg, 5000) == 0 ? 0 : -1;
}

static echo_server *test_emfile(void)
{
    struct rlimit old;
    if (!CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0))
        return NULL;
    if (raise_nofile(512) < 512) {
        printf("poll_misuse: the open-file limit is below 512; skipping the EMFILE test\n");
        return NULL;
    }
    int fds_before = count_fds();
    echo_server *srv = NULL;
    if (!CHECK(echo_server_start(rt, "127.0.0.1", 0, 0, &srv) == 0))
        return NULL;
    int port = echo_server_port(srv);
    echo_server_stats st;

    int early[EARLY], late[LATE];
    for (int i = 0; i < EARLY; i++) {
        early[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(early[i] >= 0 && connect_to(early[i], port) == 0);
        CHECK(roundtrip(early[i], "hello") == 0);
    }
    /* The late clients' sockets live above the limit-to-be, so only the
     * server's accept() runs out of descriptors. */
    for (int i = 0; i < LATE; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        late[i] = fcntl(fd, F_DUPFD_CLOEXEC, 300);
        close(fd);
        CHECK(late[i] >= 300);
    }
    struct rlimit lim = old;
    lim.rlim_cur = LIMIT;
    if (!CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0))
        return srv;
    /* No count_fds() or fopen() from here on: they need a descriptor too. */
    for (int i = 0; i < LATE; i++)
        CHECK(connect_to(late[i], port) == 0); /* completed by the kernel's backlog */
    WAIT_UNTIL((echo_server_get_stats(srv, &st), st.emfile > 0), 5000);
    echo_server_get_stats(srv, &st);
    CHECK(st.emfile > 0);
    long accepted = st.accepted;
    CHECK(accepted > EARLY && accepted < EARLY + LATE);
    printf("poll_misuse: with RLIMIT_NOFILE %d the server accepted %ld connections, then "
           "accept failed with EMFILE\n",
           LIMIT, accepted);

    /* The server keeps serving what it has. */
    for (int i = 0; i < EARLY; i++)
        CHECK(roundtrip(early[i], "still there") == 0);
    CHECK(roundtrip(late[0], "accepted before EMFILE") == 0);
    /* The last one waits in the backlog: no echo yet. */
    CHECK(send_msg(late[LATE - 1], "queued") == 0);
    CHECK(expect_echo(late[LATE - 1], "queued", 100) != 0);
    /* It backs off and retries: a few tries per 5 ms, not a busy loop. */
    echo_server_get_stats(srv, &st);
    long e1 = st.emfile;
    sleep_ms(100);
    echo_server_get_stats(srv, &st);
    long tries = st.emfile - e1;
    CHECK(tries >= 2 && tries <= 60);
    printf("poll_misuse: EMFILE %ld times so far (%ld in 100 ms); the open connections still "
           "echo\n",
           st.emfile, tries);

    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    WAIT_UNTIL((echo_server_get_stats(srv, &st), st.accepted == EARLY + LATE), 5000);
    echo_server_get_stats(srv, &st);
    CHECK_EQ(st.accepted, EARLY + LATE);
    CHECK(expect_echo(late[LATE - 1], "queued", 5000) == 0); /* served at last */
    CHECK(roundtrip(late[LATE - 1], "and again") == 0);
    CHECK_EQ(st.spawn_failures, 0);

    /* A reset ends its connection only. */
    struct linger lg = { 1, 0 };
    CHECK(setsockopt(early[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    close(early[0]);
    WAIT_UNTIL((echo_server_get_stats(srv, &st), st.resets >= 1), 5000);
    echo_server_get_stats(srv, &st);
    CHECK_EQ(st.resets, 1);
    CHECK(roundtrip(early[1], "after a reset") == 0);

    for (int i = 1; i < EARLY; i++)
        close(early[i]);
    for (int i = 0; i < LATE; i++)
        close(late[i]);
    WAIT_UNTIL((echo_server_get_stats(srv, &st), st.open == 0), 5000);
    echo_server_get_stats(srv, &st);
    CHECK_EQ(st.open, 0);
    CHECK_EQ(st.closed, EARLY + LATE);
    CHECK_EQ(st.errors, 0);
    echo_server_stop(srv);
    CHECK_EQ(count_fds(), fds_before);
    return srv; /* freed once the runtime is shut down */
}

int main(int argc, char **argv)
{
    check_init("poll_misuse");
    int emfile = !(argc > 1 && strcmp(argv[1], "--no-emfile") == 0);
    int fds_at_start = count_fds();
    uint64_t frames_at_start = coro_live_frames();
    epoll_snapshot_t eps;
    epoll_snapshot(&eps);
    rt = check_runtime(2);
    if (!rt)
        return check_summary();
    epoll_find_new(&eps, &pollers);
    idle_regs = epoll_count(&pollers);
    if (pollers.n <= 0 || idle_regs < 0)
        printf("poll_misuse: cannot read the poller's registrations; not checking them\n");

    test_invalid();
    test_deadlines();
    test_cancel();
    test_two_waiters();
    test_two_waiters_one_worker();
    test_reset();
    test_plain_thread();
    echo_server *srv = emfile ? test_emfile() : NULL;

    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    echo_server_free(srv);
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(count_fds(), fds_at_start); /* the runtime's own descriptors too */
    return check_summary();
}
