/*
 * foreign.c: foreign frames (coro_spawn_frame) from C, as hand-written state
 * machines: the API a C++20 or any other compiler-built coroutine uses, with
 * nothing of C++ in the way.
 *
 *   basics     a frame that yields three times and returns a value: each
 *              yield answers CORO_PENDING, coro_frame_resumed then 0; until
 *              resume returns the thread runs no coroutine (a second
 *              suspending call answers CORO_ESTATE, coro_self_id 0); defers
 *              run before destroy, destroy once, after the result
 *   waits      a pipe read (readable after another thread writes), a wait
 *              that times out, a sleep that lasts its time
 *   await      a foreign frame awaits a stackful child (value through
 *              coro_frame_resumed), a stackful coroutine awaits a foreign
 *              frame, a plain thread awaits one
 *   cancel     parked in coro_suspend, cancelled by its promise: destroy
 *              runs at once, resume never again; the memory destroy gave
 *              back (coro_frame_free) stays readable until the token is
 *              consumed
 *   returns    CORO_SPAWN_CANCEL_RETURNS: a cancelled sleep resumes the
 *              frame with CORO_ECANCELED, which then returns; its await
 *              says CORO_ECANCELED
 *   mutex      4 foreign frames and 4 stackful coroutines on 2 workers take
 *              one coro_mutex, yielding while they hold it: counter exact
 *   chan       a rendezvous channel between foreign senders and stackful
 *              receivers, and the other way round: every item once
 *   misuse     coro_cond_wait and the blocking-style I/O calls (coro_read,
 *              coro_accept, coro_connect) in a foreign frame, bad spawns,
 *              coro_frame_resumed outside one, coro_strerror(CORO_PENDING)
 *   shutdown   frames parked in each kind of wait (sleep, coro_suspend, mutex,
 *              channel, fd, after a yield), some detached, some in
 *              cancel-returns mode, when their runtime shuts down: each is
 *              destroyed once, frame memory freed, no frame left
 *   race       ROUNDS migratable frames suspend again and again while two
 *              threads resume their tokens and cancel some: destroy exactly
 *              once each, every await consistent with it (TSan and ASan)
 *
 * Usage: foreign [ROUNDS]   (default 20000)
 * Ends with "foreign: N passed, N failed"; exits 1 on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "frame_machine.h"

/* FRAME_BEGIN, FRAME_END, WAIT: frame_machine.h. */

static atomic_int destroyed, resumes, defers_run;

/* ------------------------------------------------------------------ basics */

struct yielder {
    int line, rc, i;
    void *value;
    int defer_seen_at_destroy;
};

static void count_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&defers_run, 1);
}

static void *yielder_resume(void *p)
{
    struct yielder *f = p;
    atomic_fetch_add(&resumes, 1);
    FRAME_BEGIN(f);
    CHECK(coro_self_id() != 0);
    CHECK_RC(coro_frame_resumed(NULL), CORO_ESTATE); /* nothing ended yet */
    CHECK_RC(coro_defer(count_defer, NULL), 0);
    for (f->i = 0; f->i < 3; f->i++) {
        f->rc = coro_yield();
        if (f->rc == CORO_PENDING) {
            /* Switched out as far as the library is concerned. */
            CHECK_RC(coro_yield(), CORO_ESTATE);
            CHECK_EQ(coro_self_id(), 0);
            f->line = 1;
            return NULL;
        case 1:
            f->rc = coro_frame_resumed(&f->value);
            CHECK_RC(coro_frame_resumed(NULL), CORO_ESTATE); /* asked twice */
        }
        CHECK_RC(f->rc, 0);
    }
    FRAME_END(f);
    return (void *)(intptr_t)42;
}

static void yielder_destroy(void *p)
{
    struct yielder *f = p;
    f->defer_seen_at_destroy = atomic_load(&defers_run);
    atomic_fetch_add(&destroyed, 1);
}

static void test_basics(coro_runtime *rt)
{
    struct yielder f = { 0 };
    atomic_store(&destroyed, 0);
    atomic_store(&resumes, 0);
    atomic_store(&defers_run, 0);
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, yielder_resume, yielder_destroy, &f, 0, &p), 0);
    void *v = NULL;
    CHECK_RC(coro_await(p, &v), 0);
    CHECK_EQ((intptr_t)v, 42);
    CHECK_EQ(atomic_load(&resumes), 4);
    CHECK_EQ(atomic_load(&destroyed), 1);
    CHECK_EQ(f.defer_seen_at_destroy, 1);
    CHECK_RC(coro_await(p, NULL), CORO_ESTALE);
}

/* ------------------------------------------------------------------- waits */

/* The read end of an empty pipe never becomes readable: a deadline ends it. */
struct timer_frame {
    int line, rc;
    void *value;
    int fd;
    int64_t deadline, woke_at;
    int rc_timeout, rc_sleep;
};

static void *timer_resume(void *p)
{
    struct timer_frame *f = p;
    FRAME_BEGIN(f);
    f->deadline = coro_now() + 20 * 1000000LL;
    WAIT(f, coro_wait_fd(f->fd, CORO_READABLE, f->deadline));
    f->rc_timeout = f->rc;
    f->woke_at = coro_now();
    CHECK(f->woke_at >= f->deadline);
    f->deadline = coro_now() + 10 * 1000000LL;
    WAIT(f, coro_sleep_until(f->deadline));
    f->rc_sleep = f->rc;
    CHECK(coro_now() >= f->deadline);
    FRAME_END(f);
    return NULL;
}

static void test_waits(coro_runtime *rt)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    struct timer_frame t = { .fd = fds[0], .rc_timeout = 99, .rc_sleep = 99 };
    coro_promise pt;
    REQUIRE_RC(coro_spawn_frame(rt, timer_resume, NULL, &t, 0, &pt), 0);
    CHECK_RC(coro_await(pt, NULL), 0);
    CHECK_RC(t.rc_timeout, CORO_ETIMEDOUT);
    CHECK_RC(t.rc_sleep, 0);
    close(fds[0]);
    close(fds[1]);
}

struct reader {
    int line, rc;
    void *value;
    int fd;
    char byte;
};

static void *reader_resume(void *p)
{
    struct reader *f = p;
    FRAME_BEGIN(f);
    WAIT(f, coro_wait_fd(f->fd, CORO_READABLE, -1));
    CHECK_RC(f->rc, 0);
    CHECK(read(f->fd, &f->byte, 1) == 1);
    FRAME_END(f);
    return (void *)(intptr_t)f->byte;
}

static void test_read(coro_runtime *rt)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    struct reader r = { .fd = fds[0] };
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, reader_resume, NULL, &r, 0, &p), 0);
    sleep_ms(20); /* let it park in the poller */
    CHECK(write(fds[1], "x", 1) == 1);
    void *v = NULL;
    CHECK_RC(coro_await(p, &v), 0);
    CHECK_EQ((intptr_t)v, 'x');
    close(fds[0]);
    close(fds[1]);
}

/* ------------------------------------------------------------------- await */

static void *stackful_child(void *env)
{
    (void)env;
    coro_yield();
    return (void *)(intptr_t)7;
}

struct awaiter {
    int line, rc;
    void *value;
    coro_runtime *rt;
    coro_promise child;
};

static void *awaiter_resume(void *p)
{
    struct awaiter *f = p;
    FRAME_BEGIN(f);
    CHECK_RC(coro_spawn(f->rt, stackful_child, NULL, 0, NULL, 0, &f->child), 0);
    WAIT(f, coro_await(f->child, &f->value));
    CHECK_RC(f->rc, 0);
    CHECK_EQ((intptr_t)f->value, 7);
    FRAME_END(f);
    return (void *)((intptr_t)f->value + 1);
}

static void *stackful_awaits_foreign(void *env)
{
    coro_promise p = *(coro_promise *)env;
    void *v = NULL;
    int rc = coro_await(p, &v);
    return rc == 0 ? v : NULL;
}

static void test_await(coro_runtime *rt)
{
    struct awaiter a = { .rt = rt };
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, awaiter_resume, NULL, &a, 0, &p), 0);
    void *v = NULL;
    CHECK_RC(coro_await(p, &v), 0); /* a plain thread awaits a foreign frame */
    CHECK_EQ((intptr_t)v, 8);

    struct awaiter b = { .rt = rt };
    coro_promise pb, outer;
    REQUIRE_RC(coro_spawn_frame(rt, awaiter_resume, NULL, &b, 0, &pb), 0);
    REQUIRE_RC(coro_spawn(rt, stackful_awaits_foreign, &pb, sizeof pb, NULL, 0, &outer), 0);
    v = NULL;
    CHECK_RC(coro_await(outer, &v), 0);
    CHECK_EQ((intptr_t)v, 8);
}

/* ------------------------------------------------------------------ cancel */

struct parked {
    int line, rc;
    void *value;
    _Atomic uint64_t token;
    uint32_t *mem; /* frame memory, given back by destroy */
    int resumed_after_park;
};

static void save_token(coro_token t, void *arg)
{
    atomic_store(&((struct parked *)arg)->token, t.id);
}

static void *parked_resume(void *p)
{
    struct parked *f = p;
    FRAME_BEGIN(f);
    f->mem = coro_frame_alloc(64);
    CHECK(f->mem != NULL && ((uintptr_t)f->mem & 15) == 0);
    if (f->mem)
        f->mem[0] = 0xC0FFEE;
    WAIT(f, coro_suspend(save_token, f));
    f->resumed_after_park = 1;
    FRAME_END(f);
    return NULL;
}

static void parked_destroy(void *p)
{
    struct parked *f = p;
    coro_frame_free(f->mem); /* kept until the frame is freed */
    atomic_fetch_add(&destroyed, 1);
}

static void test_cancel(coro_runtime *rt)
{
    atomic_store(&destroyed, 0);
    uint64_t base = coro_live_frames();
    struct parked f = { 0 };
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, parked_resume, parked_destroy, &f, 0, &p), 0);
    WAIT_UNTIL(atomic_load(&f.token) != 0, 5000);
    REQUIRE(atomic_load(&f.token) != 0);
    CHECK_RC(coro_cancel_async(p), 0);
    /* Parked, it is finalized before the cancel returns; but the token is
     * published from on_suspend, and a cancel that comes while that runs
     * is finalized by the worker right after it (rule 9 in
     * src/frame/mod.rs; seen under valgrind). Either way, once. */
    WAIT_UNTIL(atomic_load(&destroyed) == 1, 5000);
    CHECK_EQ(atomic_load(&destroyed), 1);
    /* The token still holds the frame: the memory destroy gave back lives
     * (ASan would report a read of freed memory). */
    CHECK(f.mem != NULL && f.mem[0] == 0xC0FFEE);
    coro_token t = { atomic_load(&f.token) };
    CHECK_RC(coro_resume(t), 0); /* only drops the reference */
    sleep_ms(20);
    CHECK_EQ(f.resumed_after_park, 0);
    CHECK_EQ(atomic_load(&destroyed), 1);
    CHECK_FRAMES_BACK_TO(base, 5000);
}

/* ----------------------------------------------------------------- returns */

struct sleeper {
    int line, rc;
    void *value;
    atomic_int parked;
    int rc_sleep;
};

static void *sleeper_resume(void *p)
{
    struct sleeper *f = p;
    FRAME_BEGIN(f);
    atomic_store(&f->parked, 1);
    WAIT(f, coro_sleep_until(-1));
    f->rc_sleep = f->rc;
    /* Every later suspension answers CORO_ECANCELED (a yield after its
     * round trip, as in a stackful body). */
    WAIT(f, coro_yield());
    CHECK_RC(f->rc, CORO_ECANCELED);
    FRAME_END(f);
    return (void *)(intptr_t)5;
}

static void count_destroy(void *p)
{
    (void)p;
    atomic_fetch_add(&destroyed, 1);
}

static void test_cancel_returns(coro_runtime *rt)
{
    atomic_store(&destroyed, 0);
    struct sleeper f = { .rc_sleep = 99 };
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, sleeper_resume, count_destroy, &f, CORO_SPAWN_CANCEL_RETURNS, &p),
               0);
    WAIT_UNTIL(atomic_load(&f.parked), 5000);
    sleep_ms(10);
    coro_promise again = p;
    CHECK_RC(coro_cancel_async(p), 0);
    WAIT_UNTIL(atomic_load(&destroyed) == 1, 5000);
    CHECK_EQ(atomic_load(&destroyed), 1);
    CHECK_RC(f.rc_sleep, CORO_ECANCELED);
    CHECK_RC(coro_await(again, NULL), CORO_ESTALE); /* the cancel consumed it */
}

/* ------------------------------------------------------------------- mutex */

#define MUTEX_ROUNDS 2000

static coro_mutex *shared_mutex;
static long shared_counter;

struct locker {
    int line, rc;
    void *value;
    int i;
    long seen;
};

static void *locker_resume(void *p)
{
    struct locker *f = p;
    FRAME_BEGIN(f);
    for (f->i = 0; f->i < MUTEX_ROUNDS; f->i++) {
        WAIT(f, coro_mutex_lock(shared_mutex, -1));
        CHECK_RC(f->rc, 0);
        f->seen = shared_counter;
        WAIT(f, coro_yield()); /* held across a suspension: its purpose */
        shared_counter = f->seen + 1;
        CHECK_RC(coro_mutex_unlock(shared_mutex), 0);
    }
    FRAME_END(f);
    return NULL;
}

static void *stackful_locker(void *env)
{
    (void)env;
    for (int i = 0; i < MUTEX_ROUNDS; i++) {
        CHECK_RC(coro_mutex_lock(shared_mutex, -1), 0);
        long seen = shared_counter;
        coro_yield();
        shared_counter = seen + 1;
        CHECK_RC(coro_mutex_unlock(shared_mutex), 0);
    }
    return NULL;
}

static void test_mutex(coro_runtime *rt)
{
    REQUIRE_RC(coro_mutex_new(&shared_mutex), 0);
    shared_counter = 0;
    struct locker frames[4] = { 0 };
    coro_promise ps[8];
    for (int i = 0; i < 4; i++) {
        REQUIRE_RC(coro_spawn_frame(rt, locker_resume, NULL, &frames[i], CORO_SPAWN_MIGRATABLE, &ps[i]),
                   0);
        REQUIRE_RC(coro_spawn(rt, stackful_locker, NULL, 0, NULL, 0, &ps[4 + i]), 0);
    }
    for (int i = 0; i < 8; i++)
        CHECK_RC(coro_await(ps[i], NULL), 0);
    CHECK_EQ(shared_counter, 8L * MUTEX_ROUNDS);
    CHECK_RC(coro_mutex_free(shared_mutex), 0);
}

/* -------------------------------------------------------------------- chan */

#define CHAN_ITEMS 5000

static coro_chan *shared_chan;
static atomic_long received_sum, received_count;

struct chan_frame {
    int line, rc;
    void *value;
    int i, sending;
    long item;
};

static void *chan_frame_resume(void *p)
{
    struct chan_frame *f = p;
    FRAME_BEGIN(f);
    if (f->sending) {
        for (f->i = 1; f->i <= CHAN_ITEMS; f->i++) {
            f->item = f->i;
            WAIT(f, coro_chan_send(shared_chan, &f->item, -1));
            CHECK_RC(f->rc, 0);
        }
    } else {
        for (;;) {
            WAIT(f, coro_chan_recv(shared_chan, &f->item, -1));
            if (f->rc == CORO_ECLOSED)
                break;
            CHECK_RC(f->rc, 0);
            atomic_fetch_add(&received_sum, f->item);
            atomic_fetch_add(&received_count, 1);
        }
    }
    FRAME_END(f);
    return NULL;
}

static void *stackful_sender(void *env)
{
    (void)env;
    for (long i = 1; i <= CHAN_ITEMS; i++)
        CHECK_RC(coro_chan_send(shared_chan, &i, -1), 0);
    return NULL;
}

static void *stackful_receiver(void *env)
{
    (void)env;
    long item;
    int rc;
    while ((rc = coro_chan_recv(shared_chan, &item, -1)) == 0) {
        atomic_fetch_add(&received_sum, item);
        atomic_fetch_add(&received_count, 1);
    }
    CHECK_RC(rc, CORO_ECLOSED);
    return NULL;
}

static void test_chan(coro_runtime *rt)
{
    REQUIRE_RC(coro_chan_new(sizeof(long), 0, &shared_chan), 0);
    atomic_store(&received_sum, 0);
    atomic_store(&received_count, 0);
    struct chan_frame senders[2] = { { .sending = 1 }, { .sending = 1 } };
    struct chan_frame receivers[2] = { { .sending = 0 }, { .sending = 0 } };
    coro_promise send_ps[4], recv_ps[4];
    for (int i = 0; i < 2; i++) {
        REQUIRE_RC(coro_spawn_frame(rt, chan_frame_resume, NULL, &senders[i], 0, &send_ps[i]), 0);
        REQUIRE_RC(coro_spawn(rt, stackful_sender, NULL, 0, NULL, 0, &send_ps[2 + i]), 0);
        REQUIRE_RC(coro_spawn_frame(rt, chan_frame_resume, NULL, &receivers[i], 0, &recv_ps[i]), 0);
        REQUIRE_RC(coro_spawn(rt, stackful_receiver, NULL, 0, NULL, 0, &recv_ps[2 + i]), 0);
    }
    for (int i = 0; i < 4; i++)
        CHECK_RC(coro_await(send_ps[i], NULL), 0);
    CHECK_RC(coro_chan_close(shared_chan), 0);
    for (int i = 0; i < 4; i++)
        CHECK_RC(coro_await(recv_ps[i], NULL), 0);
    long n = CHAN_ITEMS;
    CHECK_EQ(atomic_load(&received_count), 4 * n);
    CHECK_EQ(atomic_load(&received_sum), 4 * (n * (n + 1) / 2));
    CHECK_RC(coro_chan_free(shared_chan), 0);
}

/* ------------------------------------------------------------------ misuse */

struct cond_frame {
    int line, rc;
    void *value;
    coro_mutex *m;
    coro_cond *c;
    int rc_wait, rc_resumed_in_stackful;
    int rc_read, rc_accept, rc_connect;
};

static void *cond_frame_resume(void *p)
{
    struct cond_frame *f = p;
    FRAME_BEGIN(f);
    WAIT(f, coro_mutex_lock(f->m, -1));
    CHECK_RC(f->rc, 0);
    f->rc_wait = coro_cond_wait(f->c, f->m, -1);
    CHECK_RC(coro_mutex_unlock(f->m), 0);
    /* A loop of waits cannot live in a frame that returns from each. */
    char byte;
    int fd = -1;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    f->rc_read = coro_read(0, &byte, 1, 0, NULL, -1);
    f->rc_accept = coro_accept(0, NULL, NULL, 0, &fd, -1);
    f->rc_connect = coro_connect(0, (struct sockaddr *)&addr, sizeof addr, -1);
    FRAME_END(f);
    return NULL;
}

static void *stackful_asks_resumed(void *env)
{
    (void)env;
    return (void *)(intptr_t)coro_frame_resumed(NULL);
}

static void *never(void *p)
{
    (void)p;
    return NULL;
}

static void test_misuse(coro_runtime *rt)
{
    struct cond_frame f = { .rc_wait = 99, .rc_read = 99, .rc_accept = 99, .rc_connect = 99 };
    REQUIRE_RC(coro_mutex_new(&f.m), 0);
    REQUIRE_RC(coro_cond_new(&f.c), 0);
    coro_promise p;
    REQUIRE_RC(coro_spawn_frame(rt, cond_frame_resume, NULL, &f, 0, &p), 0);
    CHECK_RC(coro_await(p, NULL), 0);
    CHECK_RC(f.rc_wait, CORO_ESTATE);
    CHECK_RC(f.rc_read, CORO_ESTATE);
    CHECK_RC(f.rc_accept, CORO_ESTATE);
    CHECK_RC(f.rc_connect, CORO_ESTATE);
    CHECK_RC(coro_cond_free(f.c), 0);
    CHECK_RC(coro_mutex_free(f.m), 0);

    CHECK_RC(coro_spawn_frame(rt, NULL, NULL, NULL, 0, &p), CORO_EINVAL);
    CHECK_RC(coro_spawn_frame(NULL, never, NULL, NULL, 0, &p), CORO_EINVAL);
    CHECK_RC(coro_spawn_frame(rt, never, NULL, NULL, 0, NULL), CORO_EINVAL);
    CHECK_RC(coro_spawn_frame(rt, never, NULL, NULL, 0x80, &p), CORO_EINVAL);
    CHECK_RC(coro_frame_resumed(NULL), CORO_ESTATE);
    REQUIRE_RC(coro_spawn(rt, stackful_asks_resumed, NULL, 0, NULL, 0, &p), 0);
    void *v = NULL;
    CHECK_RC(coro_await(p, &v), 0);
    CHECK_RC((int)(intptr_t)v, CORO_ESTATE);
    CHECK(strcmp(coro_strerror(CORO_PENDING), coro_strerror(12345)) != 0);
    coro_frame_free(NULL);
    CHECK(coro_lock_note_name() == NULL);
}

/* ---------------------------------------------------------------- shutdown */

/* Frames parked in every kind of wait when their runtime shuts down: each
 * is destroyed once, its frame memory freed (LSan, valgrind), no frame left. */
struct stuck {
    int line, rc;
    void *value;
    int kind;
    coro_mutex *m;
    coro_chan *ch;
    int fd;
    long item;
    void *mem;
};

static void ignore_token(coro_token t, void *arg)
{
    (void)t;
    (void)arg;
}

static void *stuck_resume(void *p)
{
    struct stuck *f = p;
    FRAME_BEGIN(f);
    f->mem = coro_frame_alloc(100);
    /* (No inner switch: WAIT's case labels must belong to FRAME_BEGIN's.) */
    if (f->kind == 0) {
        WAIT(f, coro_sleep_until(-1));
    } else if (f->kind == 1) {
        WAIT(f, coro_suspend(ignore_token, NULL));
    } else if (f->kind == 2) {
        WAIT(f, coro_mutex_lock(f->m, -1));
    } else if (f->kind == 3) {
        WAIT(f, coro_chan_recv(f->ch, &f->item, -1));
    } else if (f->kind == 4) {
        WAIT(f, coro_wait_fd(f->fd, CORO_READABLE, coro_now() + 60000000000LL));
    } else {
        WAIT(f, coro_yield());
        CHECK_RC(f->rc, 0);
        WAIT(f, coro_sleep_until(-1));
    }
    /* Only a cancel-returns frame comes back, with CORO_ECANCELED. */
    CHECK_RC(f->rc, CORO_ECANCELED);
    FRAME_END(f);
    return NULL;
}

static void stuck_destroy(void *p)
{
    struct stuck *f = p;
    coro_frame_free(f->mem);
    atomic_fetch_add(&destroyed, 1);
}

static void test_shutdown(void)
{
    atomic_store(&destroyed, 0);
    uint64_t base = coro_live_frames();
    coro_runtime *rt = check_runtime(2);
    REQUIRE(rt != NULL);
    coro_mutex *m;
    coro_chan *ch;
    int fds[2];
    REQUIRE_RC(coro_mutex_new(&m), 0);
    REQUIRE_RC(coro_chan_new(sizeof(long), 1, &ch), 0);
    REQUIRE(pipe(fds) == 0);
    REQUIRE_RC(coro_mutex_lock(m, -1), 0); /* this thread holds it: kind 2 waits */
    enum { N = 60 };
    static struct stuck frames[N];
    for (int i = 0; i < N; i++) {
        frames[i] = (struct stuck){ .kind = i % 6, .m = m, .ch = ch, .fd = fds[0] };
        coro_promise p;
        REQUIRE_RC(coro_spawn_frame(rt, stuck_resume, stuck_destroy, &frames[i],
                                    i % 4 == 0 ? CORO_SPAWN_CANCEL_RETURNS : 0, &p),
                   0);
        if (i % 2)
            CHECK_RC(coro_detach(p), 0);
    }
    sleep_ms(50); /* let them park */
    CHECK_RC(coro_runtime_shutdown(rt), 0);
    CHECK_EQ(atomic_load(&destroyed), N);
    CHECK_FRAMES_BACK_TO(base, 5000);
    CHECK_RC(coro_mutex_unlock(m), 0);
    CHECK_RC(coro_mutex_free(m), 0);
    CHECK_RC(coro_chan_free(ch), 0);
    close(fds[0]);
    close(fds[1]);
}

/* -------------------------------------------------------------------- race */

#define RACE_SUSPENSIONS 8
#define RING 4096

static _Atomic uint64_t ring[RING];
static atomic_int race_done;

struct racer {
    int line, rc;
    void *value;
    int i;
    void *mem;
};

static void push_token(coro_token t, void *arg)
{
    (void)arg;
    for (unsigned i = (unsigned)(t.id * 2654435761u) % RING;; i = (i + 1) % RING) {
        uint64_t empty = 0;
        if (atomic_compare_exchange_weak(&ring[i], &empty, t.id))
            return;
    }
}

static void *racer_resume(void *p)
{
    struct racer *f = p;
    FRAME_BEGIN(f);
    f->mem = coro_frame_alloc(48);
    for (f->i = 0; f->i < RACE_SUSPENSIONS; f->i++)
        WAIT(f, coro_suspend(push_token, NULL));
    FRAME_END(f);
    return (void *)(intptr_t)1;
}

static void racer_destroy(void *p)
{
    struct racer *f = p;
    coro_frame_free(f->mem);
    atomic_fetch_add(&destroyed, 1);
}

static void *resumer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&race_done)) {
        for (unsigned i = 0; i < RING; i++) {
            uint64_t t = atomic_exchange(&ring[i], 0);
            if (!t)
                continue;
            seed = seed * 1103515245u + 12345u;
            coro_token tok = { t };
            if ((seed >> 16) % 64 == 0)
                CHECK_RC(coro_cancel_suspend(tok), 0);
            else
                CHECK_RC(coro_resume(tok), 0);
        }
    }
    return NULL;
}

static void test_race(coro_runtime *rt, int rounds)
{
    atomic_store(&destroyed, 0);
    atomic_store(&race_done, 0);
    uint64_t base = coro_live_frames();
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, resumer, (void *)(uintptr_t)(i + 1));
    enum { BATCH = 256 };
    static struct racer frames[BATCH];
    coro_promise ps[BATCH];
    int finished = 0, cancelled = 0;
    for (int done = 0; done < rounds; done += BATCH) {
        int n = rounds - done < BATCH ? rounds - done : BATCH;
        for (int i = 0; i < n; i++) {
            memset(&frames[i], 0, sizeof frames[i]);
            int rc = coro_spawn_frame(rt, racer_resume, racer_destroy, &frames[i],
                                      CORO_SPAWN_MIGRATABLE | (i % 2 ? CORO_SPAWN_CANCEL_RETURNS : 0),
                                      &ps[i]);
            CHECK_RC(rc, 0);
        }
        for (int i = 0; i < n; i++) {
            void *v = NULL;
            int rc = coro_await(ps[i], &v);
            if (rc == 0) {
                CHECK_EQ((intptr_t)v, 1);
                finished++;
            } else {
                CHECK_RC(rc, CORO_ECANCELED);
                cancelled++;
            }
        }
    }
    atomic_store(&race_done, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&destroyed), rounds);
    CHECK_EQ(finished + cancelled, rounds);
    CHECK(cancelled > 0 || rounds < 1000);
    CHECK_FRAMES_BACK_TO(base, 5000);
    printf("foreign: race: %d frames, %d suspensions each, %d finished, %d cancelled\n", rounds,
           RACE_SUSPENSIONS, finished, cancelled);
}

int main(int argc, char **argv)
{
    check_init("foreign");
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    coro_runtime *rt = check_runtime(2);
    if (!rt)
        return check_summary();
    test_basics(rt);
    test_waits(rt);
    test_read(rt);
    test_await(rt);
    test_cancel(rt);
    test_cancel_returns(rt);
    test_mutex(rt);
    test_chan(rt);
    test_misuse(rt);
    test_race(rt, rounds);
    CHECK_RC(coro_runtime_shutdown(rt), 0);
    test_shutdown();
    return check_summary();
}
