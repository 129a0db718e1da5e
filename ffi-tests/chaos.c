/*
 * chaos.c: random lifecycle operations from several threads at once, on
 * live, stale and made-up handles, while runtimes are shut down under them.
 *
 * The other stress tests drive one race each. A program drives them all at
 * once; this one does too, as a user of the C API only:
 *
 *   - T threads (at least 3) loop until the time is up, each picking a
 *     random operation: spawn a coroutine (either cancel mode, migratable
 *     or not), take a promise from the shared pool and await, cancel or
 *     detach it, take a token and resume or cancel it, replay a consumed
 *     (stale) handle, make up a handle that names no frame, pass a promise
 *     as a token, wake a descriptor, or misuse a call outside a coroutine.
 *   - A third of the coroutines are foreign frames (coro_spawn_frame): C
 *     state machines in memory from coro_frame_alloc, which their destroy
 *     gives back, running a script of the same waits (suspend, yield,
 *     sleep, socket waits, children of either kind, pool awaits, the mutex
 *     and the channel).
 *   - Coroutines run random scripts: they suspend (their token goes to the
 *     pool), yield, sleep, wait on shared sockets (some with CORO_KEEP) and
 *     on a pipe of their own that nobody writes (so the deadline ends it),
 *     spawn children and await them, await promises from the pool, put
 *     their children's promises in the pool, replay stale handles, and
 *     use a mutex, a condition and a channel all runtimes share (with
 *     deadlines of up to 1 ms).
 *   - The main thread replaces the runtime every so often and shuts the old
 *     one down while the threads go on firing at its handles and its
 *     coroutines run.
 *
 * Every call's status is checked against what the contract allows for it
 * (DESIGN.md sections 1 and 8, docs/API.md). A handle the caller owns must
 * be answered exactly (0, the awaited value or CORO_ECANCELED) unless its
 * runtime is being shut down, when CORO_ESTALE is allowed too; a consumed
 * handle is CORO_ESTALE, always; a made-up one CORO_EINVAL or CORO_ESTALE.
 * At the end, with every runtime shut down:
 *   - every frame spawned had its env_drop run exactly once, and no failed
 *     spawn's did;
 *   - every coroutine that started ran its defer exactly once, its errdefer
 *     at most once, and exactly once if an await of it said CORO_ECANCELED,
 *     never if it said 0;
 *   - coro_live_frames() is back where it started;
 *   - every item sent on the shared channel was received or is left in it,
 *     the mutex's plain counter equals its takes, and the three objects
 *     are freed (nobody is counted waiting on them);
 *   - the process has exactly the descriptors it had before (every pipe a
 *     coroutine opened was closed by its defer, cancelled or not; the
 *     runtimes' epoll and wake descriptors are gone).
 *
 * usage: chaos [seconds [threads [live_cap [seed [faults]]]]]   (default 10 3 2000 0)
 *   seed: of the threads' and coroutines' choices (0: from the clock; the
 *   run prints it, though the threads' timing is never the same twice)
 *   live_cap: frames alive at once beyond which threads stop spawning
 *   (ThreadSanitizer keeps a fiber per live coroutine: run it with ~200).
 *   faults (built with -DCHAOS_FAULTS, plain only: faults.h replaces
 *   malloc), armed once the threads run and until they are joined:
 *     every=N    every Nth allocation of the process fails
 *     one_in=N   each allocation fails with probability 1/N
 *     nofile=K   RLIMIT_NOFILE is set K above the descriptors open
 *     as=M       RLIMIT_AS is set M MiB above the address space in use
 *   Then the calls that may need memory or a descriptor (coro_runtime_new,
 *   coro_spawn, coro_defer, coro_errdefer, coro_wait_fd, coro_sleep_until)
 *   may also answer CORO_ENOMEM or CORO_EIO, and nothing else changes:
 *   every other status and the whole accounting stay exact (a defer that
 *   could not be registered is not expected to run).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "frame_machine.h"

#ifdef CHAOS_FAULTS
#include <sys/resource.h>

#include "faults.h"
#endif

#define MAX_THREADS 16
#define MAX_EPOCHS 4096
#define POOL 64     /* promise cells and token cells per runtime */
#define STALE 1024  /* consumed handles kept for replay */
#define SOCKETS 8   /* shared socket pairs coroutines wait on */
#define MAX_DEPTH 3 /* children of children of ... */
#define MAX_REPORTS 20

/* ------------------------------------------------------------------ */
/* Random numbers: xorshift64*, one state per thread or coroutine.     */

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint32_t below(uint64_t *s, uint32_t n)
{
    return (uint32_t)((next_rand(s) >> 32) % n);
}

/* ------------------------------------------------------------------ */
/* What happened to each frame: one record per spawn attempt.          */

struct record {
    atomic_uchar spawned;  /* coro_spawn said 0 */
    atomic_uchar started;  /* the body ran */
    atomic_uchar defer_set, errdefer_set; /* coro_defer / coro_errdefer said 0 */
    atomic_uchar defers;   /* its coro_defer callback ran */
    atomic_uchar errdefers;
    atomic_uchar drops;    /* env_drop ran */
    atomic_uchar awaited;  /* 1: an await said 0; 2: it said CORO_ECANCELED */
    _Atomic uint64_t promise;
};

static struct record *records;
static long max_records;
static atomic_long next_record;

/* ------------------------------------------------------------------ */
/* A runtime's life, and the pools of the handles of its frames.      */

struct epoch {
    coro_runtime *rt;
    atomic_int dying;               /* set before its shutdown begins */
    _Atomic uint64_t promises[POOL]; /* record index + 1, or 0 */
    _Atomic uint64_t tokens[POOL];   /* a token, or 0 */
};

static struct epoch epochs[MAX_EPOCHS];
static atomic_int current_epoch; /* index into epochs */
static atomic_int epochs_made;
/* Threads spawn on the current runtime under the read lock; the main
 * thread swaps it under the write lock and then shuts the old one down.
 * (A call on a runtime pointer racing with its shutdown is the caller's
 * race, docs/API.md: handles, not the runtime pointer, may race.) */
static pthread_rwlock_t swap_lock = PTHREAD_RWLOCK_INITIALIZER;

static atomic_int stop;
static int live_cap = 2000;
/* Faults are armed: calls that allocate may answer CORO_ENOMEM/CORO_EIO. */
static atomic_int faulty;
static atomic_long n_refused_for_faults;

/* A status that only a fault (no memory, no descriptor) explains. */
static int fault_status(int rc)
{
    if ((rc == CORO_ENOMEM || rc == CORO_EIO) && atomic_load(&faulty)) {
        atomic_fetch_add(&n_refused_for_faults, 1);
        return 1;
    }
    return 0;
}
/* Threads blocked in coro_await at most at once: at least two keep going,
 * consuming the tokens the awaited coroutines may be suspended on. */
static atomic_int awaiting_threads;
static int max_awaiting_threads;

/* Consumed handles, for replay: every one must answer CORO_ESTALE. */
static _Atomic uint64_t stale_promises[STALE], stale_tokens[STALE];

static int sockets[SOCKETS][2];

/* Counts, for the summary and the final accounting. */
static atomic_long n_foreign;
static atomic_long n_ops, n_spawned, n_spawn_refused, n_awaited_ok, n_awaited_cancelled,
    n_stale_ok, n_resumed, n_cancelled, n_detached, n_wakes, n_timeouts,
    n_shutdowns, n_pipes_opened, n_pipes_closed, n_bodies_cancelled;
static atomic_long reports;

static void report(const char *what, const char *where, int rc, long extra)
{
    if (atomic_fetch_add(&reports, 1) < MAX_REPORTS)
        fprintf(stderr, "chaos: %s in %s: %d %s (%ld)\n", what, where, rc, coro_code_name(rc),
                extra);
}

/* A status the contract allows: counted as a pass, or reported. */
#define EXPECT(cond, where, rc, extra)                                                             \
    do {                                                                                           \
        if (!CHECK(cond))                                                                          \
            report("unexpected status", where, rc, (long)(extra));                                 \
    } while (0)

static void put_stale(_Atomic uint64_t *ring, uint64_t *rng, uint64_t handle)
{
    atomic_store(&ring[below(rng, STALE)], handle);
}

/* ------------------------------------------------------------------ */
/* Pools: a handle put in a cell is owned by whoever takes it out.    */

static int pool_put(_Atomic uint64_t *cells, uint64_t *rng, uint64_t v)
{
    for (int tries = 0; tries < 4; tries++) {
        uint64_t empty = 0;
        if (atomic_compare_exchange_strong(&cells[below(rng, POOL)], &empty, v))
            return 1;
    }
    return 0;
}

static uint64_t pool_take(_Atomic uint64_t *cells, uint64_t *rng)
{
    return atomic_exchange(&cells[below(rng, POOL)], 0);
}

static struct epoch *epoch_now(void)
{
    return &epochs[atomic_load(&current_epoch)];
}

/* A recent epoch: the current one mostly, the one before (being shut down
 * or gone) sometimes. */
static struct epoch *epoch_recent(uint64_t *rng)
{
    int e = atomic_load(&current_epoch);
    if (e > 0 && below(rng, 4) == 0)
        e--;
    return &epochs[e];
}

/* ------------------------------------------------------------------ */
/* Coroutines.                                                         */

struct env {
    long rec;           /* index into records */
    struct epoch *epoch;
    uint64_t rng;       /* this coroutine's script */
    int depth;
    int cancel_returns; /* spawned with CORO_SPAWN_CANCEL_RETURNS */
    int pipe_rd, pipe_wr; /* its own pipe, or -1 */
};

static void on_defer(void *arg)
{
    atomic_fetch_add(&records[(long)(intptr_t)arg].defers, 1);
}

static void on_errdefer(void *arg)
{
    atomic_fetch_add(&records[(long)(intptr_t)arg].errdefers, 1);
}

static void close_pipe(void *arg)
{
    int *fds = arg; /* in the frame's copy of the environment */
    close(fds[0]);
    close(fds[1]);
    atomic_fetch_add(&n_pipes_closed, 1);
}

static void on_drop(void *envp)
{
    struct env *e = envp;
    atomic_fetch_add(&records[e->rec].drops, 1);
}

/* on_suspend: the token goes to the pool; if the pool is full, the
 * suspension is resumed at once by this callback. */
static void token_to_pool(coro_token t, void *arg)
{
    struct env *e = arg;
    uint64_t rng = t.id ^ (uint64_t)e->rec;
    if (!pool_put(e->epoch->tokens, &rng, t.id)) {
        int rc = coro_resume(t);
        EXPECT(rc == CORO_OK, "on_suspend's resume", rc, e->rec);
    }
}

static long new_record(void)
{
    long i = atomic_fetch_add(&next_record, 1);
    return i < max_records ? i : -1;
}

static void *body(void *envp);

/* ---- the sync objects every runtime's coroutines share ---------------- */

static coro_mutex *shared_m;
static coro_cond *shared_c;
static coro_chan *shared_ch;
static long shared_count;  /* guarded by shared_m, plain on purpose */
static atomic_long n_locked, n_sent, n_received, n_signals;

/* A status of a sync call in a body: 0, or a timeout (the deadlines are
 * short), or, cancel-returns mode only, CORO_ECANCELED; CORO_ENOMEM with
 * faults armed. 1: the body must return. */
static int sync_status(int rc, struct env *e, const char *where)
{
    if (rc == CORO_OK || rc == CORO_ETIMEDOUT)
        return 0;
    if (rc == CORO_ECANCELED && e->cancel_returns) {
        atomic_fetch_add(&n_bodies_cancelled, 1);
        return 1;
    }
    if (fault_status(rc))
        return 0;
    EXPECT(0, where, rc, e->rec);
    return 1;
}

/* One use of the shared mutex, condition or channel, with a deadline of up
 * to 1 ms. A default-mode body never suspends while it holds the mutex
 * (it would be abandoned with it, since it registers no defer to unlock);
 * a cancel-returns one yields with it held and always unlocks. */
static int sync_step(struct env *e, int what)
{
    int64_t deadline = coro_now() + (int64_t)below(&e->rng, 1000000);
    int rc;
    switch (what) {
    case 0:
        rc = coro_mutex_lock(shared_m, deadline);
        if (rc == CORO_OK) {
            long v = shared_count;
            int yrc = e->cancel_returns && below(&e->rng, 8) == 0 ? coro_yield() : CORO_OK;
            shared_count = v + 1;
            atomic_fetch_add(&n_locked, 1);
            EXPECT(coro_mutex_unlock(shared_m) == CORO_OK, "coro_mutex_unlock", rc, e->rec);
            return yrc == CORO_ECANCELED;
        }
        return sync_status(rc, e, "coro_mutex_lock");
    case 1:
        rc = coro_mutex_lock(shared_m, deadline);
        if (rc != CORO_OK)
            return sync_status(rc, e, "coro_mutex_lock (cond)");
        if (below(&e->rng, 2)) {
            coro_cond_signal(shared_c);
            atomic_fetch_add(&n_signals, 1);
            rc = CORO_OK;
        } else {
            rc = coro_cond_wait(shared_c, shared_m, deadline);
        }
        /* The wait holds the mutex again, whatever it returned. */
        EXPECT(coro_mutex_unlock(shared_m) == CORO_OK, "coro_cond_wait relocked", rc, e->rec);
        return sync_status(rc, e, "coro_cond_wait");
    case 2: {
        long v = (long)e->rec;
        rc = coro_chan_send(shared_ch, &v, deadline);
        /* Counted once it returned: an item is taken from a sender only
         * with its wait's token, so a sender cancelled while it waits
         * never sent, and one whose item was taken returns 0. */
        if (rc == CORO_OK)
            atomic_fetch_add(&n_sent, 1);
        return sync_status(rc, e, "coro_chan_send");
    }
    default: {
        long v;
        rc = coro_chan_recv(shared_ch, &v, deadline);
        if (rc == CORO_OK)
            atomic_fetch_add(&n_received, 1);
        return sync_status(rc, e, "coro_chan_recv");
    }
    }
}

/* ---- foreign frames --------------------------------------------------- */

/* FRAME_BEGIN, FRAME_END, WAIT: frame_machine.h. */

struct fframe {
    int line, rc;
    void *value;
    struct env e; /* the script and the bookkeeping, as a stackful body's */
    int s, steps, choice, k;
    long child, item;
    coro_promise p;
};

static void *fbody(void *frame);
static void fdestroy(void *frame);

/* Spawns a coroutine for record `rec` on `ep`. 0 or the status. */
static int spawn_on(struct epoch *ep, long rec, uint64_t seed, int depth, uint64_t *rng,
                    coro_promise *out)
{
    uint32_t flags = 0;
    switch (below(rng, 4)) {
    case 1: flags = CORO_SPAWN_CANCEL_RETURNS; break;
    case 2: flags = CORO_SPAWN_MIGRATABLE; break;
    case 3: flags = CORO_SPAWN_CANCEL_RETURNS | CORO_SPAWN_MIGRATABLE; break;
    }
    struct env e = { rec, ep, seed | 1, depth, (flags & CORO_SPAWN_CANCEL_RETURNS) != 0, -1, -1 };
    int rc;
    if (below(rng, 3) == 0) {
        struct fframe *f = coro_frame_alloc(sizeof *f);
        if (!f) {
            rc = CORO_ENOMEM; /* only with faults armed */
        } else {
            memset(f, 0, sizeof *f);
            f->e = e;
            rc = coro_spawn_frame(ep->rt, fbody, fdestroy, f, flags, out);
            if (rc != CORO_OK)
                coro_frame_free(f); /* not started: still ours */
            else
                atomic_fetch_add(&n_foreign, 1);
        }
    } else {
        rc = coro_spawn(ep->rt, body, &e, sizeof e, on_drop, flags, out);
    }
    if (rc == CORO_OK) {
        atomic_store(&records[rec].promise, out->id);
        atomic_store(&records[rec].spawned, 1);
        atomic_fetch_add(&n_spawned, 1);
    } else {
        atomic_fetch_add(&n_spawn_refused, 1);
    }
    return rc;
}

/* What an await of `rec`'s promise said: checks it, and records it. */
static void check_await(long rec, int rc, void *value, int dying, const char *where)
{
    if (rc == CORO_OK) {
        EXPECT((intptr_t)value == rec + 1, where, rc, (intptr_t)value);
        atomic_store(&records[rec].awaited, 1);
        atomic_fetch_add(&n_awaited_ok, 1);
    } else if (rc == CORO_ECANCELED) {
        atomic_store(&records[rec].awaited, 2);
        atomic_fetch_add(&n_awaited_cancelled, 1);
    } else {
        EXPECT(rc == CORO_ESTALE && dying, where, rc, rec);
    }
}

/* A status from a body's own suspension point (suspend, yield, sleep,
 * wait): 0 (or a timeout where one can happen), or, in cancel-returns mode
 * only, CORO_ECANCELED: the body is cancelled and returns. A default-mode
 * body never sees CORO_ECANCELED: it is abandoned where it suspended.
 * Returns 1 if the body must return now. */
static int body_status(int rc, int cancel_returns, int timeout_ok, const char *where, long rec)
{
    if (rc == CORO_OK)
        return 0;
    if (rc == CORO_ETIMEDOUT && timeout_ok) {
        atomic_fetch_add(&n_timeouts, 1);
        return 0;
    }
    if (fault_status(rc))
        return 0; /* the wait did not start (coro_wait_fd, coro_sleep_until) */
    if (rc == CORO_ECANCELED && cancel_returns) {
        atomic_fetch_add(&n_bodies_cancelled, 1);
        return 1;
    }
    EXPECT(0, where, rc, rec);
    return 1;
}

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* The result of an await in a body; `rec` awaited `r`. In default mode a
 * CORO_ECANCELED can only be the child's (a cancelled awaiter never comes
 * back); in cancel-returns mode it may be the awaiter's own, which the
 * await reports even for a child that returned, so it says nothing of the
 * child then. The body goes on either way: if it was cancelled, its next
 * suspension point says so. */
static void body_await_result(struct env *e, long r, int rc, void *v, const char *where)
{
    int dying = atomic_load(&e->epoch->dying);
    if (rc == CORO_OK || (rc == CORO_ECANCELED && !e->cancel_returns))
        check_await(r, rc, v, dying, where);
    else
        /* A cancel-returns body cancelled by shutdown runs on, and may
         * begin an await of a frame shutdown freed already: CORO_ESTALE
         * (docs/API.md, Runtime). */
        EXPECT(rc == CORO_ECANCELED || (rc == CORO_ESTALE && dying), where, rc, e->rec);
}

static void *body(void *envp)
{
    struct env *e = envp;
    long rec = e->rec;
    struct epoch *ep = e->epoch;
    void *done = (void *)(intptr_t)(rec + 1);
    atomic_store(&records[rec].started, 1);
    int cr = e->cancel_returns;
    int rc = coro_defer(on_defer, (void *)(intptr_t)rec);
    EXPECT(rc == CORO_OK || fault_status(rc), "coro_defer", rc, rec);
    atomic_store(&records[rec].defer_set, rc == CORO_OK);
    rc = coro_errdefer(on_errdefer, (void *)(intptr_t)rec);
    EXPECT(rc == CORO_OK || fault_status(rc), "coro_errdefer", rc, rec);
    atomic_store(&records[rec].errdefer_set, rc == CORO_OK);
    if (below(&e->rng, 4) == 0) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
            atomic_fetch_add(&n_pipes_opened, 1);
            e->pipe_rd = fds[0];
            e->pipe_wr = fds[1];
            rc = coro_defer(close_pipe, &e->pipe_rd);
            EXPECT(rc == CORO_OK || fault_status(rc), "coro_defer(close_pipe)", rc, rec);
            if (rc != CORO_OK) {
                close_pipe(&e->pipe_rd);
                e->pipe_rd = e->pipe_wr = -1;
            }
        }
    }
    int steps = 1 + (int)below(&e->rng, 8);
    for (int s = 0; s < steps; s++) {
        switch (below(&e->rng, 15)) {
        case 0:
        case 1:
            rc = coro_suspend(token_to_pool, e);
            if (body_status(rc, cr, 0, "coro_suspend", rec))
                return done;
            break;
        case 2:
            rc = coro_yield();
            if (body_status(rc, cr, 0, "coro_yield", rec))
                return done;
            break;
        case 3:
            rc = coro_sleep_until(coro_now() + (int64_t)below(&e->rng, 200000));
            if (body_status(rc, cr, 0, "coro_sleep_until", rec))
                return done;
            break;
        case 4: {
            int k = (int)below(&e->rng, SOCKETS);
            uint32_t ev = CORO_READABLE | (below(&e->rng, 2) ? CORO_KEEP : 0);
            rc = coro_wait_fd(sockets[k][0], ev, coro_now() + (int64_t)below(&e->rng, 500000));
            if (rc == CORO_OK) {
                char buf[64];
                while (recv(sockets[k][0], buf, sizeof buf, MSG_DONTWAIT) > 0) {
                }
            }
            if (body_status(rc, cr, 1, "coro_wait_fd(socket)", rec))
                return done;
            break;
        }
        case 5:
            if (e->pipe_rd >= 0) {
                rc = coro_wait_fd(e->pipe_rd, CORO_READABLE,
                                  coro_now() + (int64_t)below(&e->rng, 300000));
                EXPECT(rc != CORO_OK, "coro_wait_fd(own pipe): nobody writes it", rc, rec);
                if (body_status(rc, cr, 1, "coro_wait_fd(own pipe)", rec))
                    return done;
            }
            break;
        case 6:
        case 7: {
            /* A child: awaited here, or handed to the pool. */
            if (e->depth >= MAX_DEPTH || coro_live_frames() > (uint64_t)live_cap)
                break;
            long child = new_record();
            if (child < 0)
                break;
            coro_promise p;
            rc = spawn_on(ep, child, next_rand(&e->rng), e->depth + 1, &e->rng, &p);
            if (rc != CORO_OK) {
                EXPECT((rc == CORO_ESHUTDOWN && atomic_load(&ep->dying)) || fault_status(rc),
                       "coro_spawn (body)", rc, child);
                break;
            }
            if (below(&e->rng, 2) == 0 && pool_put(ep->promises, &e->rng, (uint64_t)child + 1))
                break;
            void *v = NULL;
            rc = coro_await(p, &v);
            put_stale(stale_promises, &e->rng, p.id);
            body_await_result(e, child, rc, v, "coro_await(child)");
            break;
        }
        case 8: {
            /* Somebody else's promise, from the pool. */
            uint64_t cell = pool_take(ep->promises, &e->rng);
            if (!cell)
                break;
            long r = (long)cell - 1;
            coro_promise p = { atomic_load(&records[r].promise) };
            if (p.id == coro_self_id()) {
                rc = coro_await(p, NULL);
                EXPECT(rc == CORO_EINVAL, "coro_await(self)", rc, rec);
                rc = coro_detach(p); /* still ours: not consumed */
                EXPECT(rc == CORO_OK, "coro_detach(self)", rc, rec);
                put_stale(stale_promises, &e->rng, p.id);
                break;
            }
            void *v = NULL;
            rc = coro_await(p, &v);
            put_stale(stale_promises, &e->rng, p.id);
            body_await_result(e, r, rc, v, "coro_await(pool)");
            break;
        }
        case 9: {
            /* Replay a consumed handle: never anything but CORO_ESTALE. */
            coro_token t = { atomic_load(&stale_tokens[below(&e->rng, STALE)]) };
            if (t.id) {
                rc = coro_resume(t);
                EXPECT(rc == CORO_ESTALE, "coro_resume(stale, in a body)", rc, rec);
            }
            coro_promise p = { atomic_load(&stale_promises[below(&e->rng, STALE)]) };
            if (p.id) {
                rc = coro_cancel_async(p);
                EXPECT(rc == CORO_ESTALE, "coro_cancel_async(stale, in a body)", rc, rec);
            }
            break;
        }
        case 10:
        case 11:
        case 12:
        case 13:
            if (sync_step(e, (int)below(&e->rng, 4)))
                return done;
            break;
        default:
            if (e->pipe_wr >= 0) {
                /* Our own pipe: a write and a drain, so the descriptor is
                 * really used before the defer closes it. */
                char c = 'x';
                if (write(e->pipe_wr, &c, 1) == 1)
                    drain(e->pipe_rd);
            }
            break;
        }
    }
    return done;
}

static void fdestroy(void *frame)
{
    struct fframe *f = frame;
    on_drop(&f->e);
    coro_frame_free(f); /* kept until the frame is freed */
}

/* body()'s script, as a state machine (no pipe of its own, no condition:
 * coro_cond_wait answers CORO_ESTATE in a foreign frame). */
static void *fbody(void *frame)
{
    struct fframe *f = frame;
    struct env *e = &f->e;
    long rec = e->rec;
    int cr = e->cancel_returns;
    void *done = (void *)(intptr_t)(rec + 1);
    FRAME_BEGIN(f);
    atomic_store(&records[rec].started, 1);
    f->rc = coro_defer(on_defer, (void *)(intptr_t)rec);
    EXPECT(f->rc == CORO_OK || fault_status(f->rc), "coro_defer (foreign)", f->rc, rec);
    atomic_store(&records[rec].defer_set, f->rc == CORO_OK);
    f->rc = coro_errdefer(on_errdefer, (void *)(intptr_t)rec);
    EXPECT(f->rc == CORO_OK || fault_status(f->rc), "coro_errdefer (foreign)", f->rc, rec);
    atomic_store(&records[rec].errdefer_set, f->rc == CORO_OK);
    f->steps = 1 + (int)below(&e->rng, 8);
    for (f->s = 0; f->s < f->steps; f->s++) {
        f->choice = (int)below(&e->rng, 10);
        if (f->choice < 2) {
            WAIT(f, coro_suspend(token_to_pool, e));
            if (body_status(f->rc, cr, 0, "coro_suspend (foreign)", rec))
                return done;
        } else if (f->choice == 2) {
            WAIT(f, coro_yield());
            if (body_status(f->rc, cr, 0, "coro_yield (foreign)", rec))
                return done;
        } else if (f->choice == 3) {
            WAIT(f, coro_sleep_until(coro_now() + (int64_t)below(&e->rng, 200000)));
            if (body_status(f->rc, cr, 0, "coro_sleep_until (foreign)", rec))
                return done;
        } else if (f->choice == 4) {
            f->k = (int)below(&e->rng, SOCKETS);
            WAIT(f, coro_wait_fd(sockets[f->k][0],
                                 CORO_READABLE | (below(&e->rng, 2) ? CORO_KEEP : 0),
                                 coro_now() + (int64_t)below(&e->rng, 500000)));
            if (f->rc == CORO_OK) {
                char buf[64];
                while (recv(sockets[f->k][0], buf, sizeof buf, MSG_DONTWAIT) > 0) {
                }
            }
            if (body_status(f->rc, cr, 1, "coro_wait_fd(socket) (foreign)", rec))
                return done;
        } else if (f->choice == 5) {
            /* A child of either kind: awaited here, or handed to the pool. */
            if (e->depth >= MAX_DEPTH || coro_live_frames() > (uint64_t)live_cap)
                continue;
            f->child = new_record();
            if (f->child < 0)
                continue;
            f->rc = spawn_on(e->epoch, f->child, next_rand(&e->rng), e->depth + 1, &e->rng, &f->p);
            if (f->rc != CORO_OK) {
                EXPECT((f->rc == CORO_ESHUTDOWN && atomic_load(&e->epoch->dying)) ||
                           fault_status(f->rc),
                       "spawn (foreign body)", f->rc, f->child);
                continue;
            }
            if (below(&e->rng, 2) == 0 && pool_put(e->epoch->promises, &e->rng, (uint64_t)f->child + 1))
                continue;
            f->value = NULL;
            WAIT(f, coro_await(f->p, &f->value));
            put_stale(stale_promises, &e->rng, f->p.id);
            body_await_result(e, f->child, f->rc, f->value, "coro_await(child) (foreign)");
        } else if (f->choice == 6) {
            /* Somebody else's promise, from the pool. */
            uint64_t cell = pool_take(e->epoch->promises, &e->rng);
            if (!cell)
                continue;
            f->child = (long)cell - 1;
            f->p.id = atomic_load(&records[f->child].promise);
            if (f->p.id == coro_self_id()) {
                f->rc = coro_await(f->p, NULL);
                EXPECT(f->rc == CORO_EINVAL, "coro_await(self) (foreign)", f->rc, rec);
                f->rc = coro_detach(f->p);
                EXPECT(f->rc == CORO_OK, "coro_detach(self) (foreign)", f->rc, rec);
                put_stale(stale_promises, &e->rng, f->p.id);
                continue;
            }
            f->value = NULL;
            WAIT(f, coro_await(f->p, &f->value));
            put_stale(stale_promises, &e->rng, f->p.id);
            body_await_result(e, f->child, f->rc, f->value, "coro_await(pool) (foreign)");
        } else if (f->choice == 7) {
            /* The mutex; held across a yield only in cancel-returns mode
             * (a default-mode frame cancelled there would be abandoned
             * holding it: it registers no defer to unlock). */
            WAIT(f, coro_mutex_lock(shared_m, coro_now() + (int64_t)below(&e->rng, 1000000)));
            if (f->rc != CORO_OK) {
                if (sync_status(f->rc, e, "coro_mutex_lock (foreign)"))
                    return done;
                continue;
            }
            f->item = shared_count;
            f->rc = CORO_OK;
            if (cr && below(&e->rng, 8) == 0)
                WAIT(f, coro_yield());
            shared_count = f->item + 1;
            atomic_fetch_add(&n_locked, 1);
            EXPECT(coro_mutex_unlock(shared_m) == CORO_OK, "coro_mutex_unlock (foreign)", 0, rec);
            if (f->rc == CORO_ECANCELED)
                return done;
        } else if (f->choice == 8) {
            f->item = rec;
            WAIT(f, coro_chan_send(shared_ch, &f->item, coro_now() + (int64_t)below(&e->rng, 1000000)));
            if (f->rc == CORO_OK)
                atomic_fetch_add(&n_sent, 1);
            if (sync_status(f->rc, e, "coro_chan_send (foreign)"))
                return done;
        } else {
            WAIT(f, coro_chan_recv(shared_ch, &f->item, coro_now() + (int64_t)below(&e->rng, 1000000)));
            if (f->rc == CORO_OK)
                atomic_fetch_add(&n_received, 1);
            if (sync_status(f->rc, e, "coro_chan_recv (foreign)"))
                return done;
        }
    }
    FRAME_END(f);
    return done;
}

/* ------------------------------------------------------------------ */
/* The threads' operations.                                            */

/* A made-up handle that can name no frame (src/frame/handle.rs): a
 * promise whose generation has its top byte set (generations have 24
 * bits), a token whose slot lies past the table's 2^24 slots. */
static uint64_t made_up_promise(uint64_t *rng)
{
    return next_rand(rng) | (1ULL << 63);
}

static uint64_t made_up_token(uint64_t *rng)
{
    uint64_t seq = next_rand(rng) & 0xffffffff00000000ULL;
    uint64_t slot1 = (1ULL << 24) + 1 + (next_rand(rng) & 0x3fffffULL);
    return seq | (1ULL << 31) | slot1;
}

static void op_spawn(uint64_t *rng)
{
    if (coro_live_frames() > (uint64_t)live_cap)
        return;
    pthread_rwlock_rdlock(&swap_lock);
    struct epoch *ep = epoch_now();
    long rec = new_record();
    if (rec >= 0) {
        coro_promise p;
        int rc = spawn_on(ep, rec, next_rand(rng), 0, rng, &p);
        /* Refused only once the last runtime was shut down at the end. */
        EXPECT(rc == CORO_OK || (rc == CORO_ESHUTDOWN && atomic_load(&ep->dying)) ||
                   fault_status(rc),
               "coro_spawn (thread)", rc, rec);
        if (rc == CORO_OK && !pool_put(ep->promises, rng, (uint64_t)rec + 1)) {
            rc = coro_detach(p);
            EXPECT(rc == CORO_OK, "coro_detach (pool full)", rc, rec);
            put_stale(stale_promises, rng, p.id);
        }
    }
    pthread_rwlock_unlock(&swap_lock);
}

static void op_promise(uint64_t *rng)
{
    struct epoch *ep = epoch_recent(rng);
    uint64_t cell = pool_take(ep->promises, rng);
    if (!cell)
        return;
    long r = (long)cell - 1;
    coro_promise p = { atomic_load(&records[r].promise) };
    int rc;
    void *v = NULL;
    const char *what;
    int choice = (int)below(rng, 4);
    if (choice == 0 && atomic_fetch_add(&awaiting_threads, 1) >= max_awaiting_threads) {
        atomic_fetch_sub(&awaiting_threads, 1);
        choice = 1;
    }
    switch (choice) {
    case 0:
        what = "coro_await (thread)";
        rc = coro_await(p, &v);
        atomic_fetch_sub(&awaiting_threads, 1);
        put_stale(stale_promises, rng, p.id);
        check_await(r, rc, v, atomic_load(&ep->dying), what);
        return;
    case 1:
        what = "coro_cancel_async (thread)";
        rc = coro_cancel_async(p);
        atomic_fetch_add(&n_cancelled, 1);
        break;
    default:
        what = "coro_detach (thread)";
        rc = coro_detach(p);
        atomic_fetch_add(&n_detached, 1);
        break;
    }
    put_stale(stale_promises, rng, p.id);
    EXPECT(rc == CORO_OK || (rc == CORO_ESTALE && atomic_load(&ep->dying)), what, rc, r);
}

static void op_token(uint64_t *rng)
{
    struct epoch *ep = epoch_recent(rng);
    coro_token t = { pool_take(ep->tokens, rng) };
    if (!t.id)
        return;
    int cancel = below(rng, 3) == 0;
    int rc = cancel ? coro_cancel_suspend(t) : coro_resume(t);
    atomic_fetch_add(cancel ? &n_cancelled : &n_resumed, 1);
    put_stale(stale_tokens, rng, t.id);
    int dying = atomic_load(&ep->dying);
    EXPECT(rc == CORO_OK || (rc == CORO_ESTALE && dying),
           cancel ? "coro_cancel_suspend (thread)" : "coro_resume (thread)", rc,
           (long)(t.id >> 32));
    if (rc != CORO_OK && !dying)
        fprintf(stderr, "chaos: token %#llx of epoch %ld (current %d)\n",
                (unsigned long long)t.id, (long)(ep - epochs), atomic_load(&current_epoch));
}

static void op_stale(uint64_t *rng)
{
    coro_token t = { atomic_load(&stale_tokens[below(rng, STALE)]) };
    coro_promise p = { atomic_load(&stale_promises[below(rng, STALE)]) };
    int rc;
    if (t.id) {
        rc = below(rng, 2) ? coro_resume(t) : coro_cancel_suspend(t);
        EXPECT(rc == CORO_ESTALE, "stale token", rc, 0);
        coro_promise as_promise = { t.id };
        rc = coro_detach(as_promise);
        EXPECT(rc == CORO_EINVAL, "token passed as a promise", rc, 0);
    }
    if (p.id) {
        switch (below(rng, 3)) {
        case 0: rc = coro_await(p, NULL); break;
        case 1: rc = coro_cancel_async(p); break;
        default: rc = coro_detach(p); break;
        }
        EXPECT(rc == CORO_ESTALE, "stale promise", rc, 0);
        coro_token as_token = { p.id };
        rc = coro_resume(as_token);
        EXPECT(rc == CORO_EINVAL, "promise passed as a token", rc, 0);
        atomic_fetch_add(&n_stale_ok, 1);
    }
}

static void op_made_up(uint64_t *rng)
{
    coro_promise p = { made_up_promise(rng) };
    coro_token t = { made_up_token(rng) };
    coro_promise zero_p = { 0 };
    coro_token zero_t = { 0 };
    int rc;
    switch (below(rng, 4)) {
    case 0: rc = coro_await(p, NULL); break;
    case 1: rc = coro_cancel_async(p); break;
    case 2: rc = coro_detach(p); break;
    default: rc = coro_resume(t); break;
    }
    EXPECT(rc == CORO_EINVAL || rc == CORO_ESTALE, "made-up handle", rc, 0);
    rc = coro_cancel_suspend(t);
    EXPECT(rc == CORO_ESTALE, "made-up token", rc, 0);
    EXPECT(coro_detach(zero_p) == CORO_EINVAL, "zero promise", CORO_EINVAL, 0);
    EXPECT(coro_resume(zero_t) == CORO_EINVAL, "zero token", CORO_EINVAL, 0);
}

static void op_misuse(uint64_t *rng)
{
    int rc;
    switch (below(rng, 5)) {
    case 0:
        rc = coro_suspend(token_to_pool, NULL);
        EXPECT(rc == CORO_ESTATE, "coro_suspend outside a coroutine", rc, 0);
        break;
    case 1:
        rc = coro_yield();
        EXPECT(rc == CORO_ESTATE, "coro_yield outside a coroutine", rc, 0);
        break;
    case 2:
        rc = coro_defer(on_defer, NULL);
        EXPECT(rc == CORO_ESTATE, "coro_defer outside a coroutine", rc, 0);
        break;
    case 3:
        rc = coro_sleep_until(-1);
        EXPECT(rc == CORO_EINVAL, "coro_sleep_until(-1) on a thread", rc, 0);
        break;
    default:
        rc = coro_wait_fd(-1, CORO_READABLE, 0);
        EXPECT(rc == CORO_EINVAL, "coro_wait_fd(-1)", rc, 0);
        EXPECT(coro_self_id() == 0, "coro_self_id outside", 0, 0);
        break;
    }
}

static void op_wake(uint64_t *rng)
{
    char c = 'w';
    if (send(sockets[below(rng, SOCKETS)][1], &c, 1, MSG_DONTWAIT) == 1)
        atomic_fetch_add(&n_wakes, 1);
}

static void *thread_main(void *arg)
{
    uint64_t rng = (uint64_t)(intptr_t)arg;
    while (!atomic_load(&stop)) {
        atomic_fetch_add(&n_ops, 1);
        switch (below(&rng, 16)) {
        case 0: case 1: case 2: op_spawn(&rng); break;
        case 3: case 4: case 5: op_promise(&rng); break;
        case 6: case 7: case 8: case 9: op_token(&rng); break;
        case 10: case 11: op_stale(&rng); break;
        case 12: op_made_up(&rng); break;
        case 13: op_misuse(&rng); break;
        default: op_wake(&rng); break;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */

/* What each open descriptor is, for a report. */
static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.')
            continue;
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", ent->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        fprintf(stderr, "    fd %s -> %s\n", ent->d_name, target);
    }
    closedir(d);
}

static double slowest_shutdown;

#ifdef CHAOS_FAULTS
static struct rlimit saved_limit;
static int limited = -1; /* the RLIMIT_ we lowered, or -1 */

static int lower_limit(int resource, rlim_t soft)
{
    struct rlimit now;
    if (getrlimit(resource, &now) != 0)
        return -1;
    saved_limit = now;
    now.rlim_cur = soft;
    if (setrlimit(resource, &now) != 0)
        return -1;
    limited = resource;
    return 0;
}

static int arm_faults(const char *spec)
{
    long n;
    int rc = 0;
    if (sscanf(spec, "every=%ld", &n) == 1 && n > 0)
        faults_every(n);
    else if (sscanf(spec, "one_in=%ld", &n) == 1 && n > 0)
        faults_one_in(n);
    else if (sscanf(spec, "nofile=%ld", &n) == 1 && n >= 0)
        rc = lower_limit(RLIMIT_NOFILE, (rlim_t)(count_fds() + n));
    else if (sscanf(spec, "as=%ld", &n) == 1 && n >= 0)
        rc = lower_limit(RLIMIT_AS, (rlim_t)((proc_status_kb("VmSize") + n * 1024) * 1024));
    else {
        fprintf(stderr, "chaos: faults are every=N, one_in=N, nofile=K or as=M, not %s\n", spec);
        return -1;
    }
    if (rc != 0) {
        perror("chaos: setrlimit");
        return -1;
    }
    atomic_store(&faulty, 1);
    printf("chaos: faults armed: %s\n", spec);
    return 0;
}

static void disarm_faults(void)
{
    faults_off();
    if (limited >= 0)
        setrlimit(limited, &saved_limit);
    printf("chaos: faults disarmed: %ld allocations failed, %ld calls refused for want of "
           "memory or descriptors\n",
           faults_injected(), atomic_load(&n_refused_for_faults));
}
#else
static int arm_faults(const char *spec)
{
    (void)spec;
    return -1;
}

static void disarm_faults(void)
{
}
#endif

static int new_epoch(uint64_t *rng)
{
    int e = atomic_load(&epochs_made);
    if (e >= MAX_EPOCHS)
        return -1;
    coro_config cfg = { .struct_size = sizeof cfg, .workers = 1 + below(rng, 3), .stack_size = 0 };
    int rc = coro_runtime_new(&cfg, &epochs[e].rt);
    if (rc != CORO_OK) {
        EXPECT(fault_status(rc), "coro_runtime_new", rc, e);
        return -1;
    }
    atomic_store(&epochs_made, e + 1);
    return e;
}

/* Makes a new runtime current, then shuts the old one down while the
 * threads go on with its handles. */
static int replace_runtime(uint64_t *rng, int last)
{
    int fresh = last ? -1 : new_epoch(rng);
    if (!last && fresh < 0)
        return atomic_load(&faulty) ? 0 : -1; /* keep the current one */
    pthread_rwlock_wrlock(&swap_lock);
    struct epoch *old = epoch_now();
    atomic_store(&old->dying, 1);
    if (!last)
        atomic_store(&current_epoch, fresh);
    pthread_rwlock_unlock(&swap_lock);
    double t0 = now_sec();
    int rc = coro_runtime_shutdown(old->rt);
    CHECK_RC(rc, CORO_OK);
    double took = now_sec() - t0;
    if (took > slowest_shutdown)
        slowest_shutdown = took;
    CHECK_RC(coro_runtime_shutdown(old->rt), CORO_ESHUTDOWN);
    atomic_fetch_add(&n_shutdowns, 1);
    return 0;
}

int main(int argc, char **argv)
{
    check_init("chaos");
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    int nthreads = argc > 2 ? atoi(argv[2]) : 3;
    if (argc > 3)
        live_cap = atoi(argv[3]);
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 0) : 0;
    if (seed == 0)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const char *faults = argc > 5 ? argv[5] : NULL;
#ifndef CHAOS_FAULTS
    if (faults) {
        fprintf(stderr, "chaos: built without CHAOS_FAULTS: no fault injection\n");
        return 2;
    }
#endif
    if (seconds <= 0 || nthreads < 3 || nthreads > MAX_THREADS || live_cap < 1) {
        fprintf(stderr, "usage: %s [seconds [threads (3-%d) [live_cap [seed]]]]\n", argv[0],
                MAX_THREADS);
        return 2;
    }
    printf("chaos: seed %llu, %g s, %d threads, at most ~%d frames alive\n",
           (unsigned long long)seed, seconds, nthreads, live_cap);
    uint64_t rng = seed | 1;
    max_awaiting_threads = nthreads - 2;

    int fds_before = count_fds();
    uint64_t frames_before = coro_live_frames();
    max_records = 4000000;
    records = calloc((size_t)max_records, sizeof *records);
    if (!records)
        return 2;
    for (int k = 0; k < SOCKETS; k++)
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sockets[k]) != 0) {
            perror("socketpair");
            return 2;
        }

    if (coro_mutex_new(&shared_m) != CORO_OK || coro_cond_new(&shared_c) != CORO_OK ||
        coro_chan_new(sizeof(long), 4, &shared_ch) != CORO_OK) {
        fprintf(stderr, "chaos: cannot make the sync objects\n");
        return 2;
    }
    if (new_epoch(&rng) != 0)
        return check_summary();
    atomic_store(&current_epoch, 0);
    pthread_t tid[MAX_THREADS];
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tid[t], NULL, thread_main, (void *)(intptr_t)next_rand(&rng)) != 0) {
            fprintf(stderr, "chaos: pthread_create failed\n");
            return 2;
        }

    if (faults && arm_faults(faults) != 0)
        return 2;
    /* A runtime lives 50-400 ms, then is shut down under the threads. */
    double end = now_sec() + seconds;
    while (now_sec() < end && check_failures() == 0) {
        double until = now_sec() + 0.05 + 0.35 * (double)below(&rng, 1000) / 1000.0;
        while (now_sec() < until && now_sec() < end)
            sleep_ms(5);
        if (replace_runtime(&rng, 0) != 0)
            break;
    }
    atomic_store(&stop, 1);
    /* The last shutdown also ends any await a thread is blocked in. */
    replace_runtime(&rng, 1);
    for (int t = 0; t < nthreads; t++)
        pthread_join(tid[t], NULL);
    if (faults)
        disarm_faults();

    /* Accounting. */
    long n = atomic_load(&next_record);
    if (n > max_records)
        n = max_records;
    long spawned = 0, started = 0, drops_bad = 0, defers_bad = 0, errdefers_bad = 0;
    for (long i = 0; i < n; i++) {
        struct record *r = &records[i];
        int sp = atomic_load(&r->spawned), st = atomic_load(&r->started);
        int d = atomic_load(&r->defers), ed = atomic_load(&r->errdefers);
        int dr = atomic_load(&r->drops), aw = atomic_load(&r->awaited);
        spawned += sp;
        started += st;
        if (dr != sp && drops_bad++ < MAX_REPORTS)
            fprintf(stderr, "chaos: record %ld: spawned %d, env_drop ran %d times\n", i, sp, dr);
        int dset = atomic_load(&r->defer_set), edset = atomic_load(&r->errdefer_set);
        if ((d != dset || dset > st) && defers_bad++ < MAX_REPORTS)
            fprintf(stderr, "chaos: record %ld: started %d, defer set %d, ran %d times\n", i, st,
                    dset, d);
        int ed_ok = ed <= edset && (aw != 1 || ed == 0) && (aw != 2 || ed == edset);
        if (!ed_ok && errdefers_bad++ < MAX_REPORTS)
            fprintf(stderr, "chaos: record %ld: started %d, awaited %d, errdefer ran %d times\n",
                    i, st, aw, ed);
    }
    CHECK_EQ(drops_bad, 0);
    CHECK_EQ(defers_bad, 0);
    CHECK_EQ(errdefers_bad, 0);
    CHECK_EQ(spawned, atomic_load(&n_spawned));
    CHECK_EQ(coro_live_frames(), frames_before);
    CHECK_EQ(atomic_load(&n_pipes_opened), atomic_load(&n_pipes_closed));
    /* Every item sent was received or is still in the channel; every
     * take of the mutex counted; nobody waits on the objects any more. */
    long drained = 0, item;
    while (coro_chan_recv(shared_ch, &item, 0) == CORO_OK)
        drained++;
    CHECK_EQ(atomic_load(&n_sent), atomic_load(&n_received) + drained);
    CHECK_RC(coro_mutex_lock(shared_m, -1), CORO_OK);
    CHECK_EQ(shared_count, atomic_load(&n_locked));
    CHECK_RC(coro_mutex_unlock(shared_m), CORO_OK);
    CHECK_RC(coro_chan_free(shared_ch), CORO_OK);
    CHECK_RC(coro_cond_free(shared_c), CORO_OK);
    CHECK_RC(coro_mutex_free(shared_m), CORO_OK);
    for (int k = 0; k < SOCKETS; k++) {
        close(sockets[k][0]);
        close(sockets[k][1]);
    }
    int fds_after = count_fds();
    if (!CHECK_EQ(fds_after, fds_before)) {
        fprintf(stderr, "chaos: %d descriptors before, %d after:\n", fds_before, fds_after);
        list_fds();
    }

    printf("chaos: %ld operations, %ld spawns (%ld of them foreign frames; %ld refused: shutting "
           "down, or faults), %ld bodies started, %ld runtimes shut down under the threads\n",
           atomic_load(&n_ops), spawned, atomic_load(&n_foreign), atomic_load(&n_spawn_refused),
           started, atomic_load(&n_shutdowns));
    printf("chaos: the slowest shutdown took %.1f ms\n", slowest_shutdown * 1e3);
    printf("chaos: mutex taken %ld times, %ld signals, %ld items sent, %ld received, %ld left\n",
           atomic_load(&n_locked), atomic_load(&n_signals), atomic_load(&n_sent),
           atomic_load(&n_received), drained);
    printf("chaos: awaits %ld ok / %ld cancelled; %ld resumes, %ld cancels, %ld detaches; "
           "%ld stale replays; %ld wakes, %ld timeouts; %ld bodies saw CORO_ECANCELED; "
           "%ld pipes opened and closed\n",
           atomic_load(&n_awaited_ok), atomic_load(&n_awaited_cancelled),
           atomic_load(&n_resumed), atomic_load(&n_cancelled), atomic_load(&n_detached),
           atomic_load(&n_stale_ok), atomic_load(&n_wakes), atomic_load(&n_timeouts),
           atomic_load(&n_bodies_cancelled), atomic_load(&n_pipes_closed));
    free(records);
    return check_summary();
}
