/*
 * poll_keep.c: waits with CORO_KEEP and coro_fd_forget (docs/API.md
 * "Kept registrations").
 *
 *   stays registered    after a kept wait ends, the descriptor is still in
 *                       the worker's epoll; coro_fd_forget takes it out
 *   remembered          readiness that comes while nobody waits (the
 *                       coroutine sleeps) is not lost: the next kept wait
 *                       returns 0, and the one after, with nothing new,
 *                       times out
 *   writable            a full socket: the kept wait for CORO_WRITABLE times
 *                       out, and returns 0 once a thread drains the peer
 *   reuse               kept, forgotten, closed, and the number reused for a
 *                       new socket (dup2): a kept wait on it sees its data
 *   plain after kept    a wait without CORO_KEEP on a kept descriptor works
 *   two waiters         a second wait on a descriptor a kept wait holds
 *                       (CORO_WRITABLE while the first waits to read) returns
 *                       at once; the first still wakes on its data
 *   busy                coro_fd_forget while a kept wait is in progress:
 *                       CORO_ESTATE, the wait goes on and wakes; afterwards 0
 *   cancel              a coroutine cancelled in a kept wait: its defer runs
 *                       once, and the descriptor can be forgotten at once
 *   migrated            a CORO_SPAWN_MIGRATABLE coroutine's kept wait on one
 *                       worker, then it moves to the other (resumed from
 *                       there) and a kept wait there wakes on new data;
 *                       coro_fd_forget drops both workers' registrations
 *   any runtime         a coroutine of one runtime forgets a descriptor kept
 *                       by another runtime's worker
 *   arguments           coro_fd_forget(-1): CORO_EINVAL; a descriptor never
 *                       waited on, or already forgotten: 0; CORO_KEEP without
 *                       an event: CORO_EINVAL
 *   shutdown            a runtime shut down with kept registrations leaks no
 *                       frame and no descriptor
 *
 * poll_keep --misuse, with COFRAME_CHECK=1: a kept descriptor closed without
 * coro_fd_forget and its number reused for a new socket: the check mode
 * notices (one fstat per kept wait), says so on stderr and registers the
 * new file, so the next kept wait sees its data. (Without the check mode
 * that wait would see no event until its deadline.)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "poll_util.h"

#define MS 1000000LL
#define SEC 1000000000LL

static coro_runtime *rt;
static epoll_set_t pollers; /* the runtime's epolls */
static int regs_known;      /* whether their registrations can be read */

/* ------------------------------------------------------------------ */
/* Running a function in a coroutine                                   */

static void in_coro(void (*fn)(void *), void *arg, const char *what)
{
    run_in_coro(rt, fn, arg, 10000, what);
}

/* Reads until EAGAIN; returns the bytes read. */
static long drain(int fd)
{
    char buf[4096];
    long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        total += n;
    return total;
}

static void put(int fd)
{
    CHECK_EQ(write(fd, "x", 1), 1);
}

static int registered(int fd)
{
    return regs_known ? epoll_has(&pollers, fd) : -1;
}

/* ------------------------------------------------------------------ */

static void stays_and_remembers(void *arg)
{
    int *sv = arg;
    put(sv[1]);
    /* Registered with the data already there: the event still comes. */
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(sv[0]), 1);
    if (regs_known)
        CHECK_EQ(registered(sv[0]), 1); /* kept after the wait */
    /* Data while nobody waits: the worker polls while this one sleeps. */
    put(sv[1]);
    CHECK_RC(coro_sleep_until(coro_now() + 20 * MS), CORO_OK);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(sv[0]), 1);
    /* Nothing new: no stale readiness. */
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 30 * MS), CORO_ETIMEDOUT);
    /* A wait that timed out, then data: the next wait sees it. */
    put(sv[1]);
    CHECK_RC(coro_sleep_until(coro_now() + 20 * MS), CORO_OK);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(sv[0]), 1);
    /* A plain wait on the kept descriptor works as well. */
    put(sv[1]);
    CHECK_RC(coro_wait_fd(sv[0], CORO_READABLE, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(sv[0]), 1);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK);
    if (regs_known)
        CHECK_EQ(registered(sv[0]), 0);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK); /* again: nothing kept */
}

/* Runs fn(sv) in a coroutine on a fresh socketpair sv, then closes it. */
static void on_pair(void (*fn)(void *), const char *what)
{
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    in_coro(fn, sv, what);
    close(sv[0]);
    close(sv[1]);
}

static void test_stays_and_remembers(void)
{
    on_pair(stays_and_remembers, "stays and remembers");
}

/* ------------------------------------------------------------------ */

struct drainer { int fd; int64_t after; };

static void *drain_later(void *arg)
{
    struct drainer *d = arg;
    while (coro_now() < d->after)
        usleep(1000);
    drain(d->fd);
    return NULL;
}

static void writable(void *arg)
{
    int *sv = arg;
    char buf[4096] = { 0 };
    while (write(sv[0], buf, sizeof buf) > 0)
        ;
    CHECK_EQ(errno, EAGAIN);
    CHECK_RC(coro_wait_fd(sv[0], CORO_WRITABLE | CORO_KEEP, coro_now() + 30 * MS), CORO_ETIMEDOUT);
    pthread_t t;
    struct drainer d = { sv[1], coro_now() + 20 * MS };
    REQUIRE(pthread_create(&t, NULL, drain_later, &d) == 0);
    CHECK_RC(coro_wait_fd(sv[0], CORO_WRITABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK(write(sv[0], buf, 1) == 1);
    pthread_join(t, NULL);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK);
}

static void test_writable(void)
{
    on_pair(writable, "writable");
}

/* ------------------------------------------------------------------ */

struct reuse { int fd; int peer; };

static void kept_read(void *arg)
{
    struct reuse *r = arg;
    put(r->peer);
    CHECK_RC(coro_wait_fd(r->fd, CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(r->fd), 1);
}

/* Kept, forgotten (or not: `forget` 0), and the number given to the
 * socket b[0] names; then a kept wait on it. All in one coroutine, so on
 * one worker's poller: the one that kept the first file. */
struct renumber { int a[2], b[2]; int forget; };

static void renumbered(void *arg)
{
    struct renumber *n = arg;
    struct reuse r = { n->a[0], n->a[1] };
    kept_read(&r);
    if (n->forget)
        CHECK_RC(coro_fd_forget(n->a[0]), CORO_OK);
    REQUIRE(dup2(n->b[0], n->a[0]) == n->a[0]);
    r.peer = n->b[1];
    kept_read(&r);
    CHECK_RC(coro_fd_forget(n->a[0]), CORO_OK);
}

static void test_renumbered(int forget, const char *what)
{
    struct renumber n;
    REQUIRE(nb_socketpair(n.a) == 0);
    REQUIRE(nb_socketpair(n.b) == 0);
    n.forget = forget;
    in_coro(renumbered, &n, what);
    close(n.a[0]);
    close(n.a[1]);
    close(n.b[0]);
    close(n.b[1]);
}

static void test_reuse(void)
{
    test_renumbered(1, "reuse after coro_fd_forget");
}

/* ------------------------------------------------------------------ */

struct reader { int fd; atomic_int started; atomic_int rc; };

static void *kept_reader(void *envp)
{
    struct reader *r = *(struct reader **)envp;
    atomic_store(&r->started, 1);
    atomic_store(&r->rc, coro_wait_fd(r->fd, CORO_READABLE | CORO_KEEP, coro_now() + 10 * SEC));
    return NULL;
}

/* Spawns `body` with a pointer to r, for r->fd; 0 or a coframe error. */
static int spawn_reader(void *(*body)(void *), struct reader *r, coro_promise *p)
{
    return coro_spawn(rt, body, &r, sizeof r, NULL, 0, p);
}

static void second_waiter(void *arg)
{
    int fd = *(int *)arg;
    /* Writable at once, while the first coroutine holds the descriptor. */
    CHECK_RC(coro_wait_fd(fd, CORO_WRITABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
}

static void test_two_waiters_and_busy(void)
{
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    struct reader r = { sv[0], 0, 1 };
    coro_promise p;
    REQUIRE_RC(spawn_reader(kept_reader, &r, &p), CORO_OK);
    WAIT_UNTIL(atomic_load(&r.started), 5000);
    /* Once its wait is registered, forgetting is refused. */
    int rc = CORO_OK;
    for (int i = 0; i < 5000 && rc == CORO_OK; i++) {
        rc = coro_fd_forget(sv[0]);
        if (rc == CORO_OK)
            usleep(1000);
    }
    CHECK_RC(rc, CORO_ESTATE);
    in_coro(second_waiter, &sv[0], "a second waiter on a held descriptor");
    CHECK_EQ(atomic_load(&r.rc), 1); /* still waiting */
    put(sv[1]);
    CHECK_RC(coro_await(p, NULL), CORO_OK);
    CHECK_RC(atomic_load(&r.rc), CORO_OK);
    CHECK_EQ(drain(sv[0]), 1);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK);
    if (regs_known)
        CHECK_EQ(registered(sv[0]), 0);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------ */

static atomic_int cancel_defers;

static void count_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&cancel_defers, 1);
}

static void *cancelled_reader(void *envp)
{
    struct reader *r = *(struct reader **)envp;
    coro_defer(count_defer, NULL);
    atomic_store(&r->started, 1);
    atomic_store(&r->rc, coro_wait_fd(r->fd, CORO_READABLE | CORO_KEEP, -1));
    return NULL;
}

static void test_cancel(void)
{
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    struct reader r = { sv[0], 0, 1 };
    coro_promise p;
    REQUIRE_RC(spawn_reader(cancelled_reader, &r, &p), CORO_OK);
    WAIT_UNTIL(atomic_load(&r.started) && (!regs_known || registered(sv[0]) == 1), 5000);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    WAIT_UNTIL(atomic_load(&cancel_defers) == 1, 5000);
    CHECK_EQ(atomic_load(&cancel_defers), 1);
    CHECK_EQ(atomic_load(&r.rc), 1); /* the body never continued */
    /* The wait ended with the cancel: nothing holds the descriptor. */
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK);
    if (regs_known)
        CHECK_EQ(registered(sv[0]), 0);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------ */

static void forget_it(void *arg)
{
    CHECK_RC(coro_fd_forget(*(int *)arg), CORO_OK);
}

/* ------------------------------------------------------------------ */

struct migrated {
    int sv[2];
    atomic_ullong token;  /* X's suspension, for Y */
    atomic_int waiting;   /* X is about to wait on the new worker */
    long tid_before, tid_after;
};

static void mig_park(coro_token t, void *arg)
{
    struct migrated *m = arg;
    atomic_store(&m->token, t.id);
}

/* Migratable: a kept wait, moved by Y's resume, a kept wait again. */
static void *mig_x(void *envp)
{
    struct migrated *m = *(struct migrated **)envp;
    put(m->sv[1]);
    CHECK_RC(coro_wait_fd(m->sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(m->sv[0]), 1);
    m->tid_before = syscall(SYS_gettid);
    if (!CHECK_RC(coro_suspend(mig_park, m), CORO_OK))
        return NULL;
    m->tid_after = syscall(SYS_gettid);
    atomic_store(&m->waiting, 1);
    CHECK_RC(coro_wait_fd(m->sv[0], CORO_READABLE | CORO_KEEP, coro_now() + 5 * SEC), CORO_OK);
    CHECK_EQ(drain(m->sv[0]), 1);
    CHECK_RC(coro_fd_forget(m->sv[0]), CORO_OK);
    return NULL;
}

/* On the other worker, with nothing else queued: its resume moves X here. */
static void *mig_y(void *envp)
{
    struct migrated *m = *(struct migrated **)envp;
    uint64_t t;
    int64_t deadline = coro_now() + 5 * SEC;
    while ((t = atomic_exchange(&m->token, 0)) == 0 && coro_now() < deadline)
        coro_yield();
    if (CHECK(t != 0))
        CHECK_RC(coro_resume((coro_token){ t }), CORO_OK);
    return NULL;
}

static void test_migrated(void)
{
    struct migrated m = { .tid_before = 0, .tid_after = 0 };
    atomic_init(&m.token, 0);
    atomic_init(&m.waiting, 0);
    REQUIRE(nb_socketpair(m.sv) == 0);
    struct migrated *mp = &m;
    coro_promise x, y;
    /* Two spawns in a row go to the two workers (round robin). */
    REQUIRE_RC(coro_spawn(rt, mig_x, &mp, sizeof mp, NULL, CORO_SPAWN_MIGRATABLE, &x), CORO_OK);
    REQUIRE_RC(coro_spawn(rt, mig_y, &mp, sizeof mp, NULL, 0, &y), CORO_OK);
    int64_t deadline = coro_now() + 5 * SEC;
    while (!atomic_load(&m.waiting) && coro_now() < deadline)
        usleep(1000);
    usleep(20000); /* let X's wait begin */
    put(m.sv[1]);
    CHECK_RC(coro_await(x, NULL), CORO_OK);
    CHECK_RC(coro_await(y, NULL), CORO_OK);
    CHECK(m.tid_before != 0 && m.tid_before != m.tid_after); /* it moved */
    if (regs_known)
        CHECK_EQ(registered(m.sv[0]), 0); /* forgotten on both workers */
    close(m.sv[0]);
    close(m.sv[1]);
}

static void test_any_runtime(void)
{
    epoll_snapshot_t before;
    epoll_snapshot(&before);
    coro_runtime *other = NULL;
    coro_config cfg = { sizeof cfg, 1, 0 };
    REQUIRE_RC(coro_runtime_new(&cfg, &other), CORO_OK);
    epoll_set_t other_pollers;
    int known = epoll_find_new(&before, &other_pollers) > 0;
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    struct reuse r = { sv[0], sv[1] };
    run_in_coro(other, kept_read, &r, 10000, "kept by another runtime");
    if (known)
        CHECK_EQ(epoll_has(&other_pollers, sv[0]), 1);
    in_coro(forget_it, &sv[0], "forgotten from this runtime");
    if (known)
        CHECK_EQ(epoll_has(&other_pollers, sv[0]), 0);
    /* Kept again, and left kept: shutdown copes. */
    run_in_coro(other, kept_read, &r, 10000, "kept again");
    CHECK_RC(coro_runtime_shutdown(other), CORO_OK);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK); /* no runtime keeps it now */
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------------ */

static void bad_arguments(void *arg)
{
    int fd = *(int *)arg;
    CHECK_RC(coro_wait_fd(fd, CORO_KEEP, coro_now() + SEC), CORO_EINVAL);
    CHECK_RC(coro_wait_fd(fd, CORO_KEEP | 8, coro_now() + SEC), CORO_EINVAL);
    CHECK_RC(coro_fd_forget(-1), CORO_EINVAL);
    CHECK_RC(coro_fd_forget(fd), CORO_OK); /* never kept */
}

static void test_arguments(void)
{
    int sv[2];
    REQUIRE(nb_socketpair(sv) == 0);
    in_coro(bad_arguments, &sv[0], "arguments");
    bad_arguments(&sv[0]); /* and on a plain thread */
    /* A plain thread's kept wait is an ordinary poll(2). */
    CHECK_RC(coro_wait_fd(sv[0], CORO_WRITABLE | CORO_KEEP, coro_now() + SEC), CORO_OK);
    close(sv[0]);
    close(sv[1]);
}

static void test_misuse(void)
{
    test_renumbered(0, "reuse without coro_fd_forget, COFRAME_CHECK=1");
}

int main(int argc, char **argv)
{
    check_init("poll_keep");
    int misuse = argc > 1 && strcmp(argv[1], "--misuse") == 0;
    if (misuse && !(getenv("COFRAME_CHECK") && strcmp(getenv("COFRAME_CHECK"), "1") == 0)) {
        fprintf(stderr, "poll_keep --misuse needs COFRAME_CHECK=1\n");
        return 2;
    }
    int fds_at_start = count_fds();
    uint64_t frames_at_start = coro_live_frames();
    epoll_snapshot_t before;
    epoll_snapshot(&before);
    coro_config cfg = { sizeof cfg, 2, 0 };
    if (!CHECK_RC(coro_runtime_new(&cfg, &rt), CORO_OK))
        return check_summary();
    regs_known = epoll_find_new(&before, &pollers) > 0 && epoll_count(&pollers) >= 0;
    if (!regs_known)
        printf("poll_keep: cannot read the poller's registrations; not checking them\n");

    if (misuse) {
        test_misuse();
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
        CHECK_EQ(coro_live_frames(), frames_at_start);
        CHECK_EQ(count_fds(), fds_at_start);
        return check_summary();
    }
    test_stays_and_remembers();
    test_writable();
    test_reuse();
    test_two_waiters_and_busy();
    test_cancel();
    test_migrated();
    test_any_runtime();
    test_arguments();

    /* Leave one descriptor kept for shutdown. */
    int sv[2];
    if (CHECK(nb_socketpair(sv) == 0)) {
        struct reuse r = { sv[0], sv[1] };
        in_coro(kept_read, &r, "kept at shutdown");
    }
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    close(sv[0]);
    close(sv[1]);
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(count_fds(), fds_at_start);
    return check_summary();
}
