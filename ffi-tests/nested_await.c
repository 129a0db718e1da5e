/*
 * nested_await.c: an awaited child that runs at once, nested in its
 * awaiter's coro_await (docs/API.md "Await", docs/ARCHITECTURE.md,
 * Local::run_awaited_now), under races.
 *
 * On a 1-worker runtime a child spawned by a coroutine is the only frame its
 * worker has queued, so the parent's coro_await runs it on the parent's own
 * stack (every 61st such await goes through the queue instead). On a
 * 2-worker runtime spawns alternate between the workers, so a parent that
 * wants its child on its own worker spawns a detached dummy first ("aligned"
 * below). Whether a child ran nested is seen from C: its on_suspend callback
 * and its defers then run on the parent's stack, a few KiB below the
 * parent's frame; on the worker they run on the worker thread's stack. Each
 * part counts how often that happened and fails if it never did.
 *
 *   depth     1 worker: a chain of 50 coroutines, each spawning and awaiting
 *             the next; each level returns a value computed from its
 *             child's; coro_self_id() is each level's promise id inside it,
 *             the parent's own after each await, and 0 in defers and
 *             env_drop; every defer and env_drop runs once.
 *   order     1 worker: a nested run keeps the worker's order: a parent that
 *             spawns A, B, C and awaits C sees them run as A, B, C.
 *   timers    1 worker: a coroutine that spawns and awaits in a loop still
 *             lets a sleeper on its worker wake (the 61-await budget).
 *   races     1 and 2 workers, one parent at a time, a random mode each:
 *               resume     the child suspends (nested); another thread
 *                          resumes it; the parent's await returns its value
 *               cancel     ... cancels it (coro_cancel_suspend); the await
 *                          returns CORO_ECANCELED
 *               parent     main cancels the parent (coro_cancel_async) while
 *                          it awaits the suspended child: the child is
 *                          cancelled too (cancellation flows down); main's
 *                          late resume or cancel of its token answers 0
 *               race       main cancels the parent while the other thread
 *                          resumes the child
 *               running    main cancels the parent while the child runs
 *                          nested; then the child returns
 *               pending    main cancels the parent while it runs, before it
 *                          spawns and awaits; then it does
 *             Now and then the child yields first (then it suspends from
 *             the worker, not nested), or its on_suspend callback resumes or
 *             cancels its own token (on the parent's stack, if nested).
 *             Every defer runs exactly once, errdefers exactly when their
 *             coroutine was cancelled, env_drop once, and coro_live_frames()
 *             is back to its start after every iteration. A default-mode
 *             parent cancelled while inside coro_await never continues past
 *             it; a CORO_SPAWN_CANCEL_RETURNS one gets CORO_ECANCELED.
 *   shutdown  1 and 2 workers: parents awaiting nested children (and
 *             grandchildren) that are suspended, with their tokens held by
 *             the test, and one parent per worker whose nested child is
 *             still running when shutdown begins; coro_runtime_shutdown
 *             returns 0, every defer ran once, every frame is freed, the
 *             held tokens and promises answer CORO_ESTALE or CORO_ESHUTDOWN.
 *
 * usage: nested_await [races [shutdown-parents [depth-reps]]]
 *        (default 100,000 races, half on each runtime; 200 parents; 200 chains)
 *        NESTED_SEED=n fixes the random choices (the seed is printed).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>

#include "check.h"

#define TIMEOUT_MS 20000
#define STACK_SIZE (64 * 1024)
#define V(x) ((void *)(uintptr_t)(x))

/* Whether `here` (an address on some stack) lies below `frame` on the same
 * coroutine stack: the stacks are STACK_SIZE bytes with a guard page below,
 * and `frame` is near its top. */
static int below_on_stack(uintptr_t here, uintptr_t frame)
{
    return frame != 0 && here < frame && frame - here < STACK_SIZE;
}

#define FRAME_ADDR() ((uintptr_t)__builtin_frame_address(0))

/* Spins until `cond` holds or `ms` pass; gives the CPU away after a few
 * looks (2 vCPUs, and valgrind runs one thread at a time). */
#define SPIN_UNTIL(cond, ms)                                                                       \
    do {                                                                                           \
        double spin_end_ = 0;                                                                      \
        for (unsigned spin_n_ = 0; !(cond); spin_n_++) {                                           \
            if (spin_n_ > 32)                                                                      \
                sched_yield();                                                                     \
            if ((spin_n_ & 127) == 127) {                                                          \
                double spin_t_ = now_sec();                                                        \
                if (spin_end_ == 0)                                                                \
                    spin_end_ = spin_t_ + (double)(ms) / 1000.0;                                   \
                else if (spin_t_ > spin_end_)                                                      \
                    break;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static coro_runtime *check_runtime_stack(uint32_t workers)
{
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = workers,
                        .stack_size = STACK_SIZE };
    coro_runtime *r = NULL;
    CHECK_RC(coro_runtime_new(&cfg, &r), CORO_OK);
    return r;
}

/* xorshift64; each thread has its own state. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void spin_delay(unsigned n)
{
    for (volatile unsigned k = 0; k < n; k++) {
    }
}

static void *empty_body(void *env)
{
    (void)env;
    return NULL;
}

/* Spawns a detached coroutine that does nothing: on a 2-worker runtime the
 * next spawn then lands on the caller's worker again (round robin). */
static void spawn_dummy(coro_runtime *rt)
{
    coro_promise d;
    if (CHECK_RC(coro_spawn(rt, empty_body, NULL, 0, NULL, 0, &d), CORO_OK))
        CHECK_RC(coro_detach(d), CORO_OK);
}

/* ------------------------------------------------------------------ */
/* depth: a chain of nested awaits                                      */

#define DEPTH 50

static coro_runtime *depth_rt;
static _Atomic uint64_t lvl_self[DEPTH + 1];    /* coro_self_id() inside level k */
static _Atomic uintptr_t lvl_frame[DEPTH + 1];  /* level k's body frame */
static atomic_int lvl_defers[DEPTH + 1], lvl_drops[DEPTH + 1];
static atomic_long depth_nested, depth_queued;

struct level_env {
    int level;
};

static void level_defer(void *arg)
{
    int level = (int)(intptr_t)arg;
    CHECK_EQ(coro_self_id(), 0); /* a plain call, outside any coroutine */
    /* Run nested, a level's end runs on its parent's stack. */
    if (below_on_stack(FRAME_ADDR(), atomic_load(&lvl_frame[level - 1])))
        atomic_fetch_add(&depth_nested, 1);
    else
        atomic_fetch_add(&depth_queued, 1);
    atomic_fetch_add(&lvl_defers[level], 1);
}

static void level_drop(void *envp)
{
    CHECK_EQ(coro_self_id(), 0);
    atomic_fetch_add(&lvl_drops[((struct level_env *)envp)->level], 1);
}

/* Each value comes back through a void *: at pointer width. */
static uint64_t level_value(int level, uint64_t child)
{
    return (uintptr_t)(child * 31 + (uint64_t)level + 1);
}

static void *level_body(void *envp)
{
    int level = ((struct level_env *)envp)->level;
    uint64_t me = coro_self_id();
    atomic_store(&lvl_self[level], me);
    atomic_store(&lvl_frame[level], FRAME_ADDR());
    if (level > 0)
        CHECK_RC(coro_defer(level_defer, V(level)), CORO_OK);
    if (level == DEPTH)
        return V(level + 1);
    struct level_env e = { level + 1 };
    coro_promise p;
    if (!CHECK_RC(coro_spawn(depth_rt, level_body, &e, sizeof e, level_drop, 0, &p), CORO_OK))
        return NULL;
    void *v = NULL;
    CHECK_RC(coro_await(p, &v), CORO_OK);
    CHECK_EQ(coro_self_id(), me);                  /* the parent is itself again */
    CHECK_EQ(atomic_load(&lvl_self[level + 1]), p.id); /* the child was itself */
    CHECK_EQ(atomic_load(&lvl_defers[level + 1]), 1); /* and finished before the await returned */
    CHECK_EQ(atomic_load(&lvl_drops[level + 1]), 1);
    return V(level_value(level, (uint64_t)(uintptr_t)v));
}

static void test_depth(int reps)
{
    uint64_t base = coro_live_frames();
    depth_rt = check_runtime_stack(1);
    if (!depth_rt)
        return;
    uint64_t want = DEPTH + 1;
    for (int level = DEPTH - 1; level >= 0; level--)
        want = level_value(level, want);
    for (int r = 0; r < reps && check_failures() == 0; r++) {
        for (int k = 0; k <= DEPTH; k++) {
            atomic_store(&lvl_self[k], 0);
            atomic_store(&lvl_frame[k], 0);
            atomic_store(&lvl_defers[k], 0);
            atomic_store(&lvl_drops[k], 0);
        }
        struct level_env e = { 0 };
        coro_promise p;
        if (!CHECK_RC(coro_spawn(depth_rt, level_body, &e, sizeof e, NULL, 0, &p), CORO_OK))
            break;
        void *v = NULL;
        CHECK_RC(coro_await(p, &v), CORO_OK);
        CHECK_EQ((uint64_t)(uintptr_t)v, want);
        CHECK_EQ(atomic_load(&lvl_self[0]), p.id);
        int once = 0;
        for (int k = 1; k <= DEPTH; k++)
            once += atomic_load(&lvl_defers[k]) == 1 && atomic_load(&lvl_drops[k]) == 1;
        CHECK_EQ(once, DEPTH);
        CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    }
    CHECK_RC(coro_runtime_shutdown(depth_rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
    long nested = atomic_load(&depth_nested), queued = atomic_load(&depth_queued);
    printf("depth: %d chains of %d awaits: %ld children ran nested, %ld from the worker\n", reps,
           DEPTH, nested, queued);
    CHECK(nested > 0);                /* the nested path ran */
    CHECK(reps < 3 || queued > 0);    /* and the budget sent some through the queue */
}

/* ------------------------------------------------------------------ */
/* order: a nested run is the run the worker would have made next       */

static order_log olog;
static coro_runtime *order_rt;

static void *log_letter(void *envp)
{
    order_log_add(&olog, *(char *)envp);
    return NULL;
}

/* Spawns one child per letter of `letters`, awaits the last, then the rest. */
static void *order_parent(void *envp)
{
    const char *letters = *(const char **)envp;
    coro_promise p[8];
    int n = (int)strlen(letters);
    for (int i = 0; i < n; i++)
        if (!CHECK_RC(coro_spawn(order_rt, log_letter, &letters[i], 1, NULL, 0, &p[i]), CORO_OK))
            return NULL;
    CHECK_RC(coro_await(p[n - 1], NULL), CORO_OK);
    for (int i = 0; i < n - 1; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    return NULL;
}

static void test_order(int reps)
{
    uint64_t base = coro_live_frames();
    order_rt = check_runtime_stack(1);
    if (!order_rt)
        return;
    static const char *const cases[] = { "ABC", "AC", "C" };
    for (int r = 0; r < reps && check_failures() == 0; r++) {
        const char *letters = cases[r % 3];
        order_log_reset(&olog);
        coro_promise p;
        if (!CHECK_RC(coro_spawn(order_rt, order_parent, &letters, sizeof letters, NULL, 0, &p),
                      CORO_OK))
            break;
        CHECK_RC(coro_await(p, NULL), CORO_OK);
        CHECK_LOG(&olog, letters);
    }
    CHECK_RC(coro_runtime_shutdown(order_rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
}

/* ------------------------------------------------------------------ */
/* timers: a spawn-and-await loop leaves its worker time for its timers */

static atomic_int sleeper_woke;
static coro_runtime *timers_rt;
static atomic_long loop_awaits;

static void *sleeper(void *env)
{
    (void)env;
    int rc = coro_sleep_until(coro_now() + 1000000);
    atomic_store(&sleeper_woke, rc == CORO_OK ? 1 : 2);
    return NULL;
}

static void *spawn_loop(void *env)
{
    (void)env;
    int64_t give_up = coro_now() + 5000000000LL;
    while (!atomic_load(&sleeper_woke) && coro_now() < give_up) {
        coro_promise p;
        if (!CHECK_RC(coro_spawn(timers_rt, empty_body, NULL, 0, NULL, 0, &p), CORO_OK) ||
            !CHECK_RC(coro_await(p, NULL), CORO_OK))
            return V(2);
        atomic_fetch_add(&loop_awaits, 1);
    }
    return V(atomic_load(&sleeper_woke) ? 0 : 1);
}

static void test_timers(void)
{
    uint64_t base = coro_live_frames();
    timers_rt = check_runtime_stack(1);
    if (!timers_rt)
        return;
    coro_promise s, l;
    CHECK_RC(coro_spawn(timers_rt, sleeper, NULL, 0, NULL, 0, &s), CORO_OK);
    CHECK_RC(coro_spawn(timers_rt, spawn_loop, NULL, 0, NULL, 0, &l), CORO_OK);
    void *v = V(9);
    CHECK_RC(coro_await(l, &v), CORO_OK);
    if (!CHECK_EQ((uintptr_t)v, 0))
        fprintf(stderr, "timers: the sleeper never woke while %ld spawn-awaits ran\n",
                atomic_load(&loop_awaits));
    CHECK_RC(coro_await(s, NULL), CORO_OK);
    CHECK_EQ(atomic_load(&sleeper_woke), 1);
    CHECK_RC(coro_runtime_shutdown(timers_rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
}

/* ------------------------------------------------------------------ */
/* races                                                                */

enum mode { M_RESUME, M_CANCEL, M_PARENT, M_RACE, M_RUNNING, M_PENDING, M_COUNT };
static const char *const mode_name[M_COUNT] = { "resume", "cancel", "parent",
                                                "race",   "running", "pending" };

/* The one iteration in flight. Written by main (before the spawn), the
 * coroutines, the token thread and the defers: all atomics. */
struct race {
    atomic_int mode, cancel_returns, aligned;
    atomic_int child_yields; /* the child yields once before it suspends */
    atomic_int cb_acts;      /* resume/cancel: on_suspend itself does it */
    atomic_uint child_spin;
    coro_runtime *rt;
    _Atomic uint64_t parent_id, child_pid, child_self, cb_self;
    _Atomic uintptr_t parent_frame;
    _Atomic uint64_t token;
    atomic_int parent_started, child_started, child_continued, cancel_done, give_up;
    atomic_int parent_defer, parent_errdefer, parent_returned, parent_self_ok;
    atomic_int child_defer, child_errdefer, child_drop, child_defer_at_ecanceled;
    atomic_int await_rc;
    _Atomic uintptr_t await_val;
    atomic_int nested; /* the child's callback or defer ran on the parent's stack */
    atomic_int t_rc;
};

static struct race R;
static atomic_long t_go, t_done; /* the token thread's lock step */
static atomic_int t_quit;

static uintptr_t child_value(long iter)
{
    return (uintptr_t)iter * 4 + 1;
}

static void note_nested(void)
{
    if (below_on_stack(FRAME_ADDR(), atomic_load(&R.parent_frame)))
        atomic_store(&R.nested, 1);
}

static void child_defer(void *arg)
{
    (void)arg;
    CHECK_EQ(coro_self_id(), 0);
    note_nested();
    atomic_fetch_add(&R.child_defer, 1);
}

static void child_errdefer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&R.child_errdefer, 1);
}

static void child_drop(void *env)
{
    (void)env;
    atomic_fetch_add(&R.child_drop, 1);
}

static void parent_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&R.parent_defer, 1);
}

static void parent_errdefer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&R.parent_errdefer, 1);
}

static void publish_token(coro_token t, void *arg)
{
    (void)arg;
    atomic_store(&R.cb_self, coro_self_id() + 1); /* +1: 0 means "not called" */
    note_nested();
    atomic_store(&R.token, t.id);
    /* On the worker, right after the switch (on the parent's stack if the
     * child runs nested): the child is queued again, or finalized here. */
    if (atomic_load(&R.cb_acts))
        atomic_store(&R.t_rc, atomic_load(&R.mode) == M_CANCEL ? coro_cancel_suspend(t)
                                                                : coro_resume(t));
}

static void *race_child(void *env)
{
    long iter = *(long *)env;
    CHECK_RC(coro_defer(child_defer, NULL), CORO_OK);
    CHECK_RC(coro_errdefer(child_errdefer, NULL), CORO_OK);
    atomic_store(&R.child_self, coro_self_id());
    atomic_store(&R.child_started, 1);
    switch (atomic_load(&R.mode)) {
    case M_PENDING:
        break;
    case M_RUNNING:
        /* Runs (nested, if it can) until main's cancel of the parent is done. */
        SPIN_UNTIL(atomic_load(&R.cancel_done), TIMEOUT_MS);
        break;
    default:
        if (atomic_load(&R.child_yields) && !CHECK_RC(coro_yield(), CORO_OK))
            return NULL;
        spin_delay(atomic_load(&R.child_spin));
        if (!CHECK_RC(coro_suspend(publish_token, NULL), CORO_OK))
            return NULL;
        break;
    }
    atomic_store(&R.child_continued, 1);
    return V(child_value(iter));
}

static void *race_parent(void *env)
{
    long iter = *(long *)env;
    int mode = atomic_load(&R.mode);
    CHECK_RC(coro_defer(parent_defer, NULL), CORO_OK);
    CHECK_RC(coro_errdefer(parent_errdefer, NULL), CORO_OK);
    uint64_t me = coro_self_id();
    atomic_store(&R.parent_id, me);
    atomic_store(&R.parent_started, 1);
    if (mode == M_PENDING)
        SPIN_UNTIL(atomic_load(&R.cancel_done), TIMEOUT_MS); /* cancelled while it runs */
    if (atomic_load(&R.aligned))
        spawn_dummy(R.rt);
    coro_promise c;
    if (!CHECK_RC(coro_spawn(R.rt, race_child, &iter, sizeof iter, child_drop, 0, &c), CORO_OK))
        return NULL;
    atomic_store(&R.child_pid, c.id);
    atomic_store(&R.parent_frame, FRAME_ADDR());
    void *v = NULL;
    int rc = coro_await(c, &v);
    atomic_store(&R.await_rc, rc);
    atomic_store(&R.await_val, (uintptr_t)v);
    atomic_store(&R.parent_self_ok, coro_self_id() == me ? 1 : -1);
    if (rc == CORO_ECANCELED)
        atomic_store(&R.child_defer_at_ecanceled, atomic_load(&R.child_defer));
    atomic_store(&R.parent_returned, 1);
    return rc == CORO_OK ? V((uintptr_t)v * 3) : V(0xCA);
}

/* The other plain thread: resumes or cancels the child's token. */
static void *token_thread(void *arg)
{
    uint64_t rng = *(uint64_t *)arg;
    for (long i = 1;; i++) {
        SPIN_UNTIL(atomic_load(&t_go) >= i || atomic_load(&t_quit), 1000000);
        if (atomic_load(&t_quit))
            return NULL;
        int mode = atomic_load(&R.mode);
        if ((mode == M_RESUME || mode == M_CANCEL || mode == M_RACE) &&
            !atomic_load(&R.cb_acts)) {
            /* In the race the child may be cancelled before it suspends. */
            SPIN_UNTIL(atomic_load(&R.token) != 0 || atomic_load(&R.give_up), TIMEOUT_MS);
            coro_token t = { atomic_load(&R.token) };
            if (t.id != 0) {
                spin_delay((unsigned)(next_rand(&rng) % 1500));
                atomic_store(&R.t_rc,
                             mode == M_CANCEL ? coro_cancel_suspend(t) : coro_resume(t));
            }
        }
        atomic_store(&t_done, i);
    }
}

struct race_stats {
    long runs[M_COUNT], nested[M_COUNT], cancel_won, resume_won, cont_after_cancel;
};

static void race_fail(long iter, const char *what)
{
    if (check_fail_report_())
        fprintf(stderr, "races: iteration %ld (%s, %s parent, %s): %s\n", iter,
                mode_name[atomic_load(&R.mode)],
                atomic_load(&R.cancel_returns) ? "cancel-returns" : "default",
                atomic_load(&R.aligned) ? "aligned" : "unaligned", what);
}

#define RACE_EXPECT(cond, iter, what)                                                              \
    do {                                                                                           \
        if (cond)                                                                                  \
            atomic_fetch_add(&check_passed_, 1);                                                   \
        else                                                                                       \
            race_fail(iter, what);                                                                 \
    } while (0)

/* One iteration; `same_worker`: the child is pinned to its parent's worker. */
static void race_once(long iter, uint64_t *rng, uint64_t base, int workers, struct race_stats *st)
{
    int mode = (int)(next_rand(rng) % M_COUNT);
    int cr = mode >= M_PARENT && next_rand(rng) % 4 == 0;
    /* pending and running need the child on the parent's worker: there it
     * cannot run before the parent's await (nested or queued). */
    int aligned = workers > 1 && (mode >= M_RUNNING || next_rand(rng) % 4 != 0);
    int same_worker = workers == 1 || aligned;

    /* Reset, then arm. */
    atomic_store(&R.mode, mode);
    atomic_store(&R.cancel_returns, cr);
    atomic_store(&R.aligned, aligned);
    atomic_store(&R.child_spin, (unsigned)(next_rand(rng) % 1000));
    atomic_store(&R.child_yields, next_rand(rng) % 8 == 0);
    atomic_store(&R.cb_acts, mode <= M_CANCEL && next_rand(rng) % 4 == 0);
    atomic_store(&R.parent_id, 0);
    atomic_store(&R.child_pid, 0);
    atomic_store(&R.child_self, 0);
    atomic_store(&R.cb_self, 0);
    atomic_store(&R.parent_frame, 0);
    atomic_store(&R.token, 0);
    atomic_store(&R.parent_started, 0);
    atomic_store(&R.child_started, 0);
    atomic_store(&R.child_continued, 0);
    atomic_store(&R.cancel_done, 0);
    atomic_store(&R.give_up, 0);
    atomic_store(&R.parent_defer, 0);
    atomic_store(&R.parent_errdefer, 0);
    atomic_store(&R.parent_returned, 0);
    atomic_store(&R.parent_self_ok, 0);
    atomic_store(&R.child_defer, 0);
    atomic_store(&R.child_errdefer, 0);
    atomic_store(&R.child_drop, 0);
    atomic_store(&R.child_defer_at_ecanceled, -1);
    atomic_store(&R.await_rc, 1);
    atomic_store(&R.await_val, 0);
    atomic_store(&R.nested, 0);
    atomic_store(&R.t_rc, 1);
    atomic_store(&t_go, iter);

    coro_promise p;
    uint32_t flags = cr ? CORO_SPAWN_CANCEL_RETURNS : 0;
    if (!CHECK_RC(coro_spawn(R.rt, race_parent, &iter, sizeof iter, NULL, flags, &p), CORO_OK)) {
        atomic_store(&R.give_up, 1);
        SPIN_UNTIL(atomic_load(&t_done) >= iter, TIMEOUT_MS);
        return;
    }
    st->runs[mode]++;

    int cancelled_parent = 0;
    void *v = NULL;
    switch (mode) {
    case M_RESUME:
    case M_CANCEL:
        RACE_EXPECT(coro_await(p, &v) == CORO_OK, iter, "coro_await(parent) failed");
        break;
    case M_PARENT:
    case M_RACE:
    case M_RUNNING:
        SPIN_UNTIL(atomic_load(&R.child_started), TIMEOUT_MS);
        RACE_EXPECT(atomic_load(&R.child_started), iter, "the child never started");
        if (mode != M_RUNNING)
            spin_delay((unsigned)(next_rand(rng) % 1500));
        RACE_EXPECT(coro_cancel_async(p) == CORO_OK, iter, "coro_cancel_async(parent) failed");
        cancelled_parent = 1;
        atomic_store(&R.cancel_done, 1);
        break;
    case M_PENDING:
        SPIN_UNTIL(atomic_load(&R.parent_started), TIMEOUT_MS);
        RACE_EXPECT(coro_cancel_async(p) == CORO_OK, iter, "coro_cancel_async(parent) failed");
        cancelled_parent = 1;
        atomic_store(&R.cancel_done, 1);
        break;
    }

    /* Wait for the ends: both defers, and the child's token if it parked
     * (a parked child holds its frame until the token is consumed). */
    SPIN_UNTIL(atomic_load(&R.parent_defer) >= 1 && atomic_load(&R.child_drop) >= 1 &&
                   (atomic_load(&R.token) != 0 || coro_live_frames() == base),
               TIMEOUT_MS);
    atomic_store(&R.give_up, 1);
    SPIN_UNTIL(atomic_load(&t_done) >= iter, TIMEOUT_MS);
    RACE_EXPECT(atomic_load(&t_done) >= iter, iter, "the token thread is stuck");
    coro_token tok = { atomic_load(&R.token) };
    if (mode == M_PARENT) {
        /* Nobody resumed it: the parent's cancellation must reach it. */
        SPIN_UNTIL(atomic_load(&R.child_defer) >= 1, TIMEOUT_MS);
        if (tok.id != 0) {
            int rc = next_rand(rng) % 2 ? coro_resume(tok) : coro_cancel_suspend(tok);
            RACE_EXPECT(rc == CORO_OK, iter, "a late resume or cancel of the child's token failed");
        }
    }
    SPIN_UNTIL(coro_live_frames() == base, TIMEOUT_MS);

    int pd = atomic_load(&R.parent_defer), pe = atomic_load(&R.parent_errdefer);
    int cd = atomic_load(&R.child_defer), ce = atomic_load(&R.child_errdefer);
    int cdrop = atomic_load(&R.child_drop), started = atomic_load(&R.child_started);
    int cont = atomic_load(&R.child_continued), returned = atomic_load(&R.parent_returned);
    int arc = atomic_load(&R.await_rc);
    uintptr_t aval = atomic_load(&R.await_val);

    RACE_EXPECT(coro_live_frames() == base, iter, "frames leaked");
    RACE_EXPECT(pd == 1, iter, "the parent's defer did not run exactly once");
    RACE_EXPECT(cdrop == 1, iter, "the child's env_drop did not run exactly once");
    RACE_EXPECT(cd == started, iter, "the child's defer did not run exactly once");
    /* A child cancelled after it was resumed may still return (then its
     * result is dropped): errdefers at most once, and surely if it never
     * got past its suspension. */
    RACE_EXPECT(ce <= 1 && (!started || cont || ce == 1), iter,
                "the child's errdefer ran twice, or not although it was cancelled");
    RACE_EXPECT(!started || atomic_load(&R.child_self) == atomic_load(&R.child_pid), iter,
                "coro_self_id() in the child is not its promise id");
    RACE_EXPECT(atomic_load(&R.cb_self) <= 1, iter, "on_suspend ran as a coroutine");
    RACE_EXPECT(!returned || atomic_load(&R.parent_self_ok) == 1, iter,
                "the parent's coro_self_id() changed across its await");
    RACE_EXPECT(!returned || arc != CORO_OK || aval == child_value(iter), iter,
                "the parent's await gave a wrong value");
    RACE_EXPECT(!returned || arc == CORO_OK || arc == CORO_ECANCELED, iter,
                "the parent's await failed");
    RACE_EXPECT(!cancelled_parent || tok.id == 0 || mode != M_RACE ||
                    atomic_load(&R.t_rc) == CORO_OK,
                iter, "the token thread's resume failed");
    if (atomic_load(&R.nested))
        st->nested[mode]++;

    switch (mode) {
    case M_RESUME:
    case M_CANCEL:
        RACE_EXPECT(atomic_load(&R.t_rc) == CORO_OK, iter, "the token thread's call failed");
        RACE_EXPECT(returned && pe == 0, iter, "the parent did not return normally");
        RACE_EXPECT(cont == (mode == M_RESUME) && ce == (mode == M_CANCEL), iter,
                    "the child continued though cancelled, or not though resumed");
        RACE_EXPECT(arc == (mode == M_RESUME ? CORO_OK : CORO_ECANCELED), iter,
                    "the parent's await returned the wrong code");
        RACE_EXPECT((uintptr_t)v == (mode == M_RESUME ? child_value(iter) * 3 : 0xCA), iter,
                    "main's await of the parent gave a wrong value");
        break;
    case M_PARENT:
        RACE_EXPECT(cd == 1 && ce == 1 && !cont, iter,
                    "the child was not cancelled with its parent");
        RACE_EXPECT(pe == 1, iter, "the parent's errdefer did not run");
        if (cr) {
            RACE_EXPECT(returned && arc == CORO_ECANCELED, iter,
                        "a cancel-returns parent's await did not return CORO_ECANCELED");
            RACE_EXPECT(!same_worker || atomic_load(&R.child_defer_at_ecanceled) == 1, iter,
                        "the child's defers had not run when the parent's await returned");
        } else {
            RACE_EXPECT(!returned, iter, "a cancelled parent continued past its await");
        }
        break;
    case M_RACE:
        if (cont)
            st->resume_won++;
        else
            st->cancel_won++;
        RACE_EXPECT(pe == 1 || (returned && arc == CORO_OK), iter,
                    "the parent's errdefer did not run");
        /* Default mode: the body never regains control from a cancelled
         * await; it may have got the child's value first. */
        RACE_EXPECT(cr || !returned || arc == CORO_OK, iter,
                    "a default-mode parent's await returned CORO_ECANCELED");
        RACE_EXPECT(!returned || arc != CORO_OK || cont, iter,
                    "the await returned a value the child never produced");
        if (returned && arc == CORO_OK)
            st->cont_after_cancel++;
        break;
    case M_RUNNING:
    case M_PENDING:
        /* The cancel came while the parent was inside coro_await (running)
         * or before it: the await is its suspension point. */
        RACE_EXPECT(pe == 1, iter, "the parent's errdefer did not run");
        if (cr)
            RACE_EXPECT(returned && arc == CORO_ECANCELED, iter,
                        "a cancel-returns parent's await did not return CORO_ECANCELED");
        else
            RACE_EXPECT(!returned, iter,
                        "a parent cancelled in (or before) its coro_await continued past it");
        if (mode == M_PENDING)
            RACE_EXPECT(!started, iter,
                        "the child of a parent cancelled before its await ran (the worker "
                        "would have cancelled it first)");
        break;
    }
}

static void test_races(int workers, long iterations, uint64_t seed)
{
    uint64_t base = coro_live_frames();
    memset(&R, 0, sizeof R);
    R.rt = check_runtime_stack((uint32_t)workers);
    if (!R.rt)
        return;
    atomic_store(&t_go, 0);
    atomic_store(&t_done, 0);
    atomic_store(&t_quit, 0);
    uint64_t t_seed = seed ^ 0x5bd1e995u, rng = seed | 1;
    pthread_t t;
    if (!CHECK(pthread_create(&t, NULL, token_thread, &t_seed) == 0))
        return;
    struct race_stats st;
    memset(&st, 0, sizeof st);
    double t0 = now_sec();
    long done = 0;
    for (long i = 1; i <= iterations && check_failures() == 0; i++, done++)
        race_once(i, &rng, base, workers, &st);
    double elapsed = now_sec() - t0;
    atomic_store(&t_quit, 1);
    pthread_join(t, NULL);
    CHECK_RC(coro_runtime_shutdown(R.rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);

    long nested = 0;
    printf("races: %d worker(s): %ld iterations in %.2f s; nested/runs:", workers, done, elapsed);
    for (int m = 0; m < M_COUNT; m++) {
        printf(" %s %ld/%ld", mode_name[m], st.nested[m], st.runs[m]);
        nested += st.nested[m];
    }
    printf("\nraces: %d worker(s): race mode: resume won %ld (parent got the value %ld), "
           "cancel won %ld\n",
           workers, st.resume_won, st.cont_after_cancel, st.cancel_won);
    /* The nested path must have been taken, often. */
    if (!CHECK(done < 20 || nested * 4 > done))
        fprintf(stderr, "races: only %ld of %ld children ran nested\n", nested, done);
}

/* ------------------------------------------------------------------ */
/* shutdown with parents awaiting nested, suspended children            */

enum sd_kind { SD_CHILD, SD_GRANDCHILD, SD_CR_PARENT, SD_RUNNING };

struct sd_node {
    int kind, is_leaf;
    coro_promise promise; /* parents: main's promise */
    _Atomic uint64_t token;
    _Atomic uintptr_t frame;  /* its body's frame */
    atomic_int defers, errdefers, drops, returned, await_rc, nested, started;
};

/* Parent i is nodes[3*i], its child nodes[3*i+1], its grandchild nodes[3*i+2]. */
static struct sd_node *nodes;
static coro_runtime *sd_rt;
static int sd_workers;
static atomic_int sd_go;

struct sd_env {
    int node;
};

static void sd_defer(void *arg)
{
    struct sd_node *n = arg;
    atomic_fetch_add(&n->defers, 1);
    /* Shutdown runs a parked leaf's defers on its own thread, between one
     * frame and the next: this gives the workers time to run the awaiters
     * that the ends before woke, which then look at their children. */
    if (n->is_leaf)
        spin_delay(50000);
}

static void sd_errdefer(void *arg)
{
    struct sd_node *n = arg;
    atomic_fetch_add(&n->errdefers, 1);
}

static void sd_drop(void *envp)
{
    atomic_fetch_add(&nodes[((struct sd_env *)envp)->node].drops, 1);
}

static void sd_publish(coro_token t, void *arg)
{
    struct sd_node *n = arg;
    /* Nested: this runs on the awaiter's stack (the node above). */
    if (below_on_stack(FRAME_ADDR(), atomic_load(&(n - 1)->frame)))
        atomic_store(&n->nested, 1);
    atomic_store(&n->token, t.id);
}

static void *sd_body(void *envp)
{
    int i = ((struct sd_env *)envp)->node;
    struct sd_node *n = &nodes[i];
    CHECK_RC(coro_defer(sd_defer, n), CORO_OK);
    CHECK_RC(coro_errdefer(sd_errdefer, n), CORO_OK);
    atomic_store(&n->frame, FRAME_ADDR());
    atomic_store(&n->started, 1);
    if (n->is_leaf) {
        if (n->kind == SD_RUNNING) {
            /* Still running, nested, when shutdown begins. */
            SPIN_UNTIL(atomic_load(&sd_go), TIMEOUT_MS);
            int64_t until = coro_now() + 2000000;
            while (coro_now() < until)
                sched_yield();
        }
        coro_suspend(sd_publish, n); /* never returns: nobody resumes it */
        atomic_store(&n->returned, 1);
        return NULL;
    }
    if (sd_workers > 1)
        spawn_dummy(sd_rt);
    struct sd_env e = { i + 1 };
    coro_promise c;
    if (!CHECK_RC(coro_spawn(sd_rt, sd_body, &e, sizeof e, sd_drop, 0, &c), CORO_OK))
        return NULL;
    int rc = coro_await(c, NULL);
    atomic_store(&n->await_rc, rc);
    atomic_store(&n->returned, 1);
    return NULL;
}

static void test_shutdown(int workers, int parents)
{
    uint64_t base = coro_live_frames();
    sd_workers = workers;
    sd_rt = check_runtime_stack((uint32_t)workers);
    if (!sd_rt)
        return;
    atomic_store(&sd_go, 0);
    int total = parents + workers; /* the last `workers` parents are SD_RUNNING */
    nodes = calloc((size_t)total * 3, sizeof *nodes);
    if (!CHECK(nodes != NULL))
        return;
    for (int p = 0; p < total; p++) {
        int kind = p >= parents ? SD_RUNNING : p % 3;
        int levels = kind == SD_GRANDCHILD ? 3 : 2;
        for (int l = 0; l < 3; l++) {
            nodes[3 * p + l].kind = l < levels ? kind : -1;
            nodes[3 * p + l].is_leaf = l == levels - 1;
        }
    }
    /* One parent at a time, each once its leaf has parked (or, for the
     * running ones, started): the worker has nothing else queued. */
    int spawned = 0;
    for (int p = 0; p < total; p++) {
        struct sd_node *parent = &nodes[3 * p];
        struct sd_node *leaf = &nodes[3 * p + (parent->kind == SD_GRANDCHILD ? 2 : 1)];
        struct sd_env e = { 3 * p };
        uint32_t flags = parent->kind == SD_CR_PARENT ? CORO_SPAWN_CANCEL_RETURNS : 0;
        if (!CHECK_RC(coro_spawn(sd_rt, sd_body, &e, sizeof e, sd_drop, flags, &parent->promise),
                      CORO_OK))
            break;
        spawned++;
        if (parent->kind == SD_RUNNING) {
            SPIN_UNTIL(atomic_load(&leaf->started), TIMEOUT_MS);
            CHECK(atomic_load(&leaf->started));
        } else {
            SPIN_UNTIL(atomic_load(&leaf->token) != 0, TIMEOUT_MS);
            if (!CHECK(atomic_load(&leaf->token) != 0))
                break;
        }
    }
    atomic_store(&sd_go, 1);
    CHECK_RC(coro_runtime_shutdown(sd_rt), CORO_OK);

    int defers_ok = 0, nodes_n = 0, nested = 0, tokens = 0, late_ok = 0, promises_ok = 0;
    for (int p = 0; p < spawned; p++) {
        for (int l = 0; l < 3; l++) {
            struct sd_node *n = &nodes[3 * p + l];
            if (n->kind < 0 || !atomic_load(&n->started))
                continue;
            nodes_n++;
            int d = atomic_load(&n->defers), ed = atomic_load(&n->errdefers);
            int ok = d == 1 && atomic_load(&n->drops) == 1;
            if (n->is_leaf)
                ok = ok && ed == 1 && !atomic_load(&n->returned); /* always cancelled */
            else {
                /* An awaiter may go on if shutdown reached its child first:
                 * with CORO_ECANCELED, or with CORO_OK if the child (a
                 * middle node, which went on the same way) then returned
                 * uncancelled. A leaf never returns. */
                struct sd_node *c = n + 1;
                int rc = atomic_load(&n->await_rc);
                ok = ok && ed <= 1 &&
                     (!atomic_load(&n->returned) || rc == CORO_ECANCELED ||
                      (rc == CORO_OK && atomic_load(&c->returned) &&
                       atomic_load(&c->errdefers) == 0));
            }
            if (!ok && check_fail_report_())
                fprintf(stderr,
                        "shutdown: %d worker(s), parent %d level %d (kind %d): defers %d, "
                        "errdefers %d, drops %d, returned %d, await rc %d\n",
                        workers, p, l, n->kind, d, ed, atomic_load(&n->drops),
                        atomic_load(&n->returned), atomic_load(&n->await_rc));
            defers_ok += ok;
            nested += atomic_load(&n->nested);
            coro_token t = { atomic_load(&n->token) };
            if (t.id != 0) {
                tokens++;
                int rc = coro_resume(t);
                late_ok += rc == CORO_ESTALE || rc == CORO_ESHUTDOWN;
            }
        }
        coro_promise pr = nodes[3 * p].promise;
        int rc = p % 2 ? coro_cancel_async(pr) : coro_await(pr, NULL);
        promises_ok += rc == CORO_ESTALE || rc == CORO_ESHUTDOWN;
    }
    /* Every started node's parent started it; the root of each chain is
     * spawned by main, so every spawned parent counts. */
    CHECK_EQ(defers_ok, nodes_n);
    CHECK(nodes_n >= 2 * spawned);
    CHECK_EQ(late_ok, tokens);
    CHECK_EQ(promises_ok, spawned);
    CHECK_EQ(coro_live_frames(), base);
    printf("shutdown: %d worker(s): %d parents, %d coroutines, %d ran nested; every defer once\n",
           workers, spawned, nodes_n, nested);
    CHECK(spawned < 10 || nested > 0);
    free(nodes);
    nodes = NULL;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    check_init("nested_await");
    long races = argc > 1 ? atol(argv[1]) : 100000;
    int sd_parents = argc > 2 ? atoi(argv[2]) : 200;
    int depth_reps = argc > 3 ? atoi(argv[3]) : 200;
    if (races < 0 || sd_parents < 0 || depth_reps < 0) {
        fprintf(stderr, "usage: %s [races [shutdown-parents [depth-reps]]]\n", argv[0]);
        return 2;
    }
    uint64_t seed = getenv("NESTED_SEED") ? strtoull(getenv("NESTED_SEED"), NULL, 0)
                                          : (uint64_t)(now_sec() * 1e6);
    printf("nested_await: seed %llu (NESTED_SEED=%llu repeats it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    uint64_t frames_at_start = coro_live_frames();
    double t0 = now_sec();

    test_depth(depth_reps);
    test_order(depth_reps < 30 ? 30 : depth_reps);
    test_timers();
    test_races(1, races - races / 2, seed);
    test_races(2, races / 2, seed * 3 + 1);
    test_shutdown(1, sd_parents);
    test_shutdown(2, sd_parents);

    CHECK_EQ(coro_live_frames(), frames_at_start);
    printf("nested_await: %.2f s\n", now_sec() - t0);
    return check_summary();
}
