/*
 * sched.c: the scheduler of DESIGN.md section 3.
 *
 *   balance   300 coroutines on a 3-worker runtime: exactly 3 threads ran
 *             them, none of them main, each thread ran >= 50
 *   pinning   50 coroutines suspend 100 times each; a foreign pthread (not a
 *             worker) resumes every token; each coroutine sees the same
 *             thread (gettid) at every resumption
 *   foreign   two foreign threads cancel suspended coroutines concurrently,
 *             one with coro_cancel_async, one with coro_cancel_suspend
 *   migration two coroutines on a 2-worker runtime ping-pong 1,000 times,
 *             each resuming the other from its on_suspend: pinned (flags 0),
 *             each stays on its own thread, and the two threads differ;
 *             with CORO_SPAWN_MIGRATABLE the resumed one moves to the
 *             resumer's idle worker, so they end up sharing one thread;
 *             either way each then waits for a readable socket and sleeps
 *             on the worker it is on
 *   sharing   8 coroutines on a 2-worker runtime: those that start on the
 *             first thread any of them reaches yield until all 8 started,
 *             then 3,000 times; the others end at once, so the other worker
 *             idles; with
 *             CORO_SPAWN_MIGRATABLE the busy worker hands queued ones to
 *             it and at least one runs on a thread it did not start on;
 *             pinned (flags 0), none ever does
 *   order     8 coroutines suspended on a 1-worker runtime; while another
 *             coroutine keeps the worker busy, the main thread resumes them
 *             in a shuffled order; once the worker is free they run in
 *             exactly that order (the inbox is a stack: the worker must
 *             reverse what it takes)
 *   shutdown  1,000 suspended coroutines whose tokens a foreign thread
 *             holds; coro_runtime_shutdown runs every defer exactly once,
 *             frees every frame, and the foreign thread's late resumes
 *             answer CORO_ESTALE (or CORO_ESHUTDOWN)
 *
 * usage: sched [suspends-per-coroutine [shutdown-count]]   (valgrind: sched 10 100)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

#define TIMEOUT_MS 30000

/* The calling thread: gettid, a system call. Not pthread_self(), which
 * glibc declares const, so GCC keeps its value across a suspension (it
 * did, in pinned_body: the check could not fail), the TLS hazard that
 * makes migration opt-in. */
static pid_t thread_id(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static int n_resumptions = 100; /* pinning: suspensions per coroutine */
static int n_shutdown = 1000;   /* shutdown: suspended coroutines */

/* A token queue: workers push from on_suspend, a foreign thread pops. */
struct token_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    coro_token *items;
    size_t head, tail, cap; /* ring buffer */
};

static void tq_init(struct token_queue *q, size_t cap)
{
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->items = calloc(cap, sizeof *q->items);
    q->head = q->tail = 0;
    q->cap = cap;
}

static void tq_destroy(struct token_queue *q)
{
    free(q->items);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

static void tq_push(coro_token t, void *arg)
{
    struct token_queue *q = arg;
    pthread_mutex_lock(&q->mu);
    if (q->tail - q->head < q->cap)
        q->items[q->tail++ % q->cap] = t;
    else
        check_fail_msg(__FILE__, __LINE__, "token queue overflow");
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Pops one token, waiting up to `ms`; a zeroed token on timeout. */
static coro_token tq_pop(struct token_queue *q, long ms)
{
    coro_token t = { 0 };
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&q->mu);
    while (q->head == q->tail)
        if (pthread_cond_timedwait(&q->cv, &q->mu, &until) != 0)
            break;
    if (q->head != q->tail)
        t = q->items[q->head++ % q->cap];
    pthread_mutex_unlock(&q->mu);
    return t;
}

/* ------------------------------------------------------------------ */
/* balance                                                              */

#define BALANCE_N 300
static pthread_t ran_on[BALANCE_N];

static void *record_thread(void *envp)
{
    int i = *(int *)envp;
    ran_on[i] = pthread_self();
    return NULL;
}

static void test_balance(coro_runtime *rt)
{
    uint64_t base = coro_live_frames();
    coro_promise p[BALANCE_N];
    for (int i = 0; i < BALANCE_N; i++)
        REQUIRE_RC(coro_spawn(rt, record_thread, &i, sizeof i, NULL, 0, &p[i]), CORO_OK);
    for (int i = 0; i < BALANCE_N; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);

    pthread_t seen[BALANCE_N];
    int count[BALANCE_N] = { 0 };
    int distinct = 0, on_main = 0;
    for (int i = 0; i < BALANCE_N; i++) {
        if (pthread_equal(ran_on[i], pthread_self()))
            on_main++;
        int k = 0;
        while (k < distinct && !pthread_equal(seen[k], ran_on[i]))
            k++;
        if (k == distinct)
            seen[distinct++] = ran_on[i];
        count[k]++;
    }
    CHECK_EQ(on_main, 0);
    CHECK_EQ(distinct, 3);
    printf("balance: %d coroutines ran on %d workers:", BALANCE_N, distinct);
    for (int k = 0; k < distinct; k++) {
        printf(" %d", count[k]);
        if (!CHECK(count[k] >= 50))
            fprintf(stderr, "    worker %d ran only %d of %d\n", k, count[k], BALANCE_N);
    }
    printf("\n");
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* pinning: resumed from a foreign thread, always back on its worker    */

#define PIN_N 50

struct pin_env {
    int idx;
    struct token_queue *q;
    atomic_int *moved;
    atomic_int *resumptions;
};

static pid_t pin_first[PIN_N]; /* where each coroutine first ran */

static void *pinned_body(void *envp)
{
    struct pin_env *e = envp;
    pid_t first = thread_id();
    pin_first[e->idx] = first;
    for (int k = 0; k < n_resumptions; k++) {
        int rc = coro_suspend(tq_push, e->q);
        if (rc != CORO_OK) {
            CHECK_RC(rc, CORO_OK);
            return NULL;
        }
        atomic_fetch_add(e->resumptions, 1);
        if (thread_id() != first)
            atomic_fetch_add(e->moved, 1);
    }
    return NULL;
}

struct resumer_arg {
    struct token_queue *q;
    long total;
    long resumed;
    long bad_rc;
    pid_t self;
};

static void *foreign_resumer(void *argp)
{
    struct resumer_arg *a = argp;
    a->self = thread_id();
    while (a->resumed < a->total) {
        coro_token t = tq_pop(a->q, TIMEOUT_MS);
        if (t.id == 0)
            break; /* timed out: the main thread reports the shortfall */
        if (coro_resume(t) != CORO_OK)
            a->bad_rc++;
        a->resumed++;
    }
    return NULL;
}

static void test_pinning(coro_runtime *rt)
{
    uint64_t base = coro_live_frames();
    struct token_queue q;
    tq_init(&q, PIN_N + 1);
    atomic_int moved = 0, resumptions = 0;
    struct resumer_arg ra = { &q, (long)PIN_N * n_resumptions, 0, 0, 0 };
    pthread_t th;
    if (!CHECK(pthread_create(&th, NULL, foreign_resumer, &ra) == 0)) {
        tq_destroy(&q);
        return;
    }
    coro_promise p[PIN_N];
    int spawned = 0;
    for (; spawned < PIN_N; spawned++) {
        struct pin_env env = { spawned, &q, &moved, &resumptions };
        if (!CHECK_RC(coro_spawn(rt, pinned_body, &env, sizeof env, NULL, 0, &p[spawned]), CORO_OK))
            break;
    }
    for (int i = 0; i < spawned; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    pthread_join(th, NULL);
    CHECK_EQ(ra.resumed, (long)PIN_N * n_resumptions);
    CHECK_EQ(ra.bad_rc, 0);
    CHECK_EQ(atomic_load(&resumptions), PIN_N * n_resumptions);
    CHECK_EQ(atomic_load(&moved), 0); /* never resumed on another thread */
    int on_resumer = 0;
    for (int i = 0; i < spawned; i++)
        on_resumer += pin_first[i] == ra.self;
    CHECK_EQ(on_resumer, 0); /* the resuming thread is not where they run */
    printf("pinning: %d coroutines x %d foreign resumes, %d moved threads\n", spawned,
           n_resumptions, atomic_load(&moved));
    tq_destroy(&q);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* cancellation from foreign threads                                    */

#define FOREIGN_N 200

static atomic_int foreign_defers[FOREIGN_N];
static atomic_int foreign_continued;

static void count_defer(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

struct fc_env {
    int i;
    token_box *box;
};

static void *fc_body(void *envp)
{
    struct fc_env *e = envp;
    CHECK_RC(coro_defer(count_defer, &foreign_defers[e->i]), CORO_OK);
    coro_suspend(token_box_put, e->box); /* cancelled here */
    atomic_fetch_add(&foreign_continued, 1);
    return NULL;
}

static coro_promise fc_promises[FOREIGN_N];
static coro_token fc_tokens[FOREIGN_N];
static pthread_barrier_t fc_barrier;

static void *fc_cancel_async_half(void *arg)
{
    long bad = 0;
    (void)arg;
    pthread_barrier_wait(&fc_barrier);
    for (int i = 0; i < FOREIGN_N; i += 2)
        bad += coro_cancel_async(fc_promises[i]) != CORO_OK;
    return (void *)bad;
}

static void *fc_cancel_suspend_half(void *arg)
{
    long bad = 0;
    (void)arg;
    pthread_barrier_wait(&fc_barrier);
    for (int i = 1; i < FOREIGN_N; i += 2)
        bad += coro_cancel_suspend(fc_tokens[i]) != CORO_OK;
    return (void *)bad;
}

static void test_cancel_from_foreign_threads(coro_runtime *rt)
{
    uint64_t base = coro_live_frames();
    static token_box boxes[FOREIGN_N];
    memset(boxes, 0, sizeof boxes);
    for (int i = 0; i < FOREIGN_N; i++) {
        struct fc_env env = { i, &boxes[i] };
        atomic_store(&foreign_defers[i], 0);
        REQUIRE_RC(coro_spawn(rt, fc_body, &env, sizeof env, NULL, 0, &fc_promises[i]), CORO_OK);
    }
    for (int i = 0; i < FOREIGN_N; i++) {
        fc_tokens[i] = token_box_take(&boxes[i], TIMEOUT_MS);
        REQUIRE(fc_tokens[i].id != 0);
    }
    pthread_barrier_init(&fc_barrier, NULL, 2);
    pthread_t a, b;
    REQUIRE(pthread_create(&a, NULL, fc_cancel_async_half, NULL) == 0);
    REQUIRE(pthread_create(&b, NULL, fc_cancel_suspend_half, NULL) == 0);
    void *bad_a, *bad_b;
    pthread_join(a, &bad_a);
    pthread_join(b, &bad_b);
    pthread_barrier_destroy(&fc_barrier);
    CHECK_EQ((long)bad_a, 0);
    CHECK_EQ((long)bad_b, 0);
    /* Cancelled while suspended: every defer already ran, before the calls returned. */
    int once = 0;
    for (int i = 0; i < FOREIGN_N; i++)
        once += atomic_load(&foreign_defers[i]) == 1;
    CHECK_EQ(once, FOREIGN_N);
    /* The other reference of each frame is still ours to consume. */
    for (int i = 0; i < FOREIGN_N; i += 2)
        CHECK_RC(coro_resume(fc_tokens[i]), CORO_OK);
    for (int i = 1; i < FOREIGN_N; i += 2)
        CHECK_RC(coro_await(fc_promises[i], NULL), CORO_ECANCELED);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    CHECK_EQ(atomic_load(&foreign_continued), 0);
    once = 0;
    for (int i = 0; i < FOREIGN_N; i++)
        once += atomic_load(&foreign_defers[i]) == 1;
    CHECK_EQ(once, FOREIGN_N);
}

/* ------------------------------------------------------------------ */
/* shutdown with suspended coroutines whose tokens a foreign thread holds */

static atomic_int *sd_defers; /* per coroutine */
static atomic_int sd_defer_total;
static atomic_int sd_suspended;

struct holder {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    coro_token *tokens;
    int n;
    int go; /* main says: the runtime is gone, try your tokens */
    long stale, shutdown_rc, other_rc;
};

static void holder_take(coro_token t, void *arg)
{
    struct holder *h = arg;
    pthread_mutex_lock(&h->mu);
    if (h->n < n_shutdown)
        h->tokens[h->n++] = t;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add(&sd_suspended, 1);
}

static void *holder_thread(void *arg)
{
    struct holder *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->go)
        pthread_cond_wait(&h->cv, &h->mu);
    for (int i = 0; i < h->n; i++) {
        int rc = coro_resume(h->tokens[i]);
        if (rc == CORO_ESTALE)
            h->stale++;
        else if (rc == CORO_ESHUTDOWN)
            h->shutdown_rc++;
        else
            h->other_rc++;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void sd_defer(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    atomic_fetch_add(&sd_defer_total, 1);
}

struct sd_env {
    int i;
    struct holder *h;
};

static void *sd_body(void *envp)
{
    struct sd_env *e = envp;
    CHECK_RC(coro_defer(sd_defer, &sd_defers[e->i]), CORO_OK);
    coro_suspend(holder_take, e->h); /* shut down here */
    check_fail_msg(__FILE__, __LINE__, "a coroutine continued past shutdown");
    return NULL;
}

static void test_shutdown_with_foreign_tokens(void)
{
    uint64_t base = coro_live_frames();
    coro_runtime *rt = check_runtime(3);
    REQUIRE(rt != NULL);
    struct holder h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    h.tokens = calloc((size_t)n_shutdown, sizeof *h.tokens);
    sd_defers = calloc((size_t)n_shutdown, sizeof *sd_defers);
    pthread_t th;
    int have_thread = CHECK(pthread_create(&th, NULL, holder_thread, &h) == 0);

    coro_promise *p = calloc((size_t)n_shutdown, sizeof *p);
    int spawned = 0;
    for (; spawned < n_shutdown; spawned++) {
        struct sd_env env = { spawned, &h };
        if (!CHECK_RC(coro_spawn(rt, sd_body, &env, sizeof env, NULL, 0, &p[spawned]), CORO_OK))
            break;
    }
    WAIT_UNTIL(atomic_load(&sd_suspended) == spawned, TIMEOUT_MS);
    CHECK_EQ(atomic_load(&sd_suspended), spawned);
    CHECK_EQ(coro_live_frames(), base + (uint64_t)spawned);
    CHECK_EQ(atomic_load(&sd_defer_total), 0);

    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);

    CHECK_EQ(atomic_load(&sd_defer_total), spawned);
    int once = 0;
    for (int i = 0; i < spawned; i++)
        once += atomic_load(&sd_defers[i]) == 1;
    CHECK_EQ(once, spawned); /* every defer exactly once */
    CHECK_EQ(coro_live_frames(), base); /* every frame freed despite the held tokens */

    /* The foreign thread now resumes its stale tokens. */
    if (have_thread) {
        pthread_mutex_lock(&h.mu);
        h.go = 1;
        pthread_cond_signal(&h.cv);
        pthread_mutex_unlock(&h.mu);
        pthread_join(th, NULL);
        CHECK_EQ(h.n, spawned);
        CHECK_EQ(h.other_rc, 0);
        CHECK_EQ(h.stale + h.shutdown_rc, spawned);
        printf("shutdown: %d suspended coroutines cancelled, %d defers; late resumes: %ld "
               "CORO_ESTALE, %ld CORO_ESHUTDOWN\n",
               spawned, atomic_load(&sd_defer_total), h.stale, h.shutdown_rc);
    }
    /* The promises main still holds are dead too. */
    int gone = 0;
    for (int i = 0; i < spawned; i++) {
        int rc = i % 2 ? coro_cancel_async(p[i]) : coro_await(p[i], NULL);
        gone += rc == CORO_ESTALE || rc == CORO_ESHUTDOWN;
    }
    CHECK_EQ(gone, spawned);
    CHECK_EQ(atomic_load(&sd_defer_total), spawned); /* nothing ran twice */
    CHECK_EQ(coro_live_frames(), base);
    free(p);
    free(sd_defers);
    free(h.tokens);
    pthread_mutex_destroy(&h.mu);
    pthread_cond_destroy(&h.cv);
}

/* ------------------------------------------------------------------ */
/* Migration                                                            */

#define PP_N 1000
static atomic_ullong pp_mailbox;
static pid_t pp_ran[2][PP_N + 1]; /* the thread at each resumption */
static int pp_sv[2][2];                /* a socketpair per coroutine */

static void pp_hand_off(coro_token t, void *arg)
{
    (void)arg;
    uint64_t other = atomic_exchange(&pp_mailbox, t.id);
    if (other != 0)
        CHECK_RC(coro_resume((coro_token){ other }), CORO_OK);
}

static void *pp_body(void *envp)
{
    int me = *(int *)envp;
    for (int i = 0; i < PP_N; i++) {
        pp_ran[me][i] = thread_id();
        if (!CHECK_RC(coro_suspend(pp_hand_off, NULL), CORO_OK))
            return NULL;
    }
    pp_ran[me][PP_N] = thread_id();
    uint64_t other = atomic_exchange(&pp_mailbox, 0);
    if (other != 0)
        CHECK_RC(coro_resume((coro_token){ other }), CORO_OK);
    /* The poller and the timers of the worker it is on now. */
    CHECK_RC(coro_wait_fd(pp_sv[me][0], CORO_READABLE, coro_now() + 5000000000LL), CORO_OK);
    CHECK_RC(coro_sleep_until(coro_now() + 1000000), CORO_OK);
    return (void *)(intptr_t)(me + 1);
}

static void ping_pong(uint32_t flags)
{
    coro_runtime *rt = check_runtime(2);
    if (!rt)
        return;
    atomic_store(&pp_mailbox, 0);
    coro_promise p[2];
    for (int i = 0; i < 2; i++) {
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pp_sv[i]) == 0);
        REQUIRE(write(pp_sv[i][1], "x", 1) == 1);
        REQUIRE_RC(coro_spawn(rt, pp_body, &i, sizeof i, NULL, flags, &p[i]), CORO_OK);
    }
    for (int i = 0; i < 2; i++) {
        void *res = NULL;
        CHECK_RC(coro_await(p[i], &res), CORO_OK);
        CHECK_EQ((intptr_t)res, i + 1);
    }
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    for (int i = 0; i < 2; i++) {
        close(pp_sv[i][0]);
        close(pp_sv[i][1]);
    }
}

static void test_migration(void)
{
    /* Round robin puts the two on different workers. */
    ping_pong(0);
    long moved = 0;
    for (int c = 0; c < 2; c++)
        for (int i = 1; i <= PP_N; i++)
            moved += pp_ran[c][i] != pp_ran[c][0];
    CHECK_EQ(moved, 0);
    CHECK(pp_ran[0][0] != pp_ran[1][0]);

    ping_pong(CORO_SPAWN_MIGRATABLE);
    int changed = pp_ran[0][0] != pp_ran[0][PP_N] || pp_ran[1][0] != pp_ran[1][PP_N];
    CHECK(changed); /* one of them moved */
    long apart = 0;
    for (int i = PP_N - 100; i <= PP_N; i++)
        apart += pp_ran[0][i] != pp_ran[1][i];
    CHECK_EQ(apart, 0); /* and then they shared a thread */
}

/* ------------------------------------------------------------------ */
/* Sharing                                                              */

#define SH_N 8
#define SH_TURNS 3000
static atomic_int sh_busy_thread; /* the first thread a coroutine started on */
static atomic_int sh_started;     /* coroutines that started, anywhere */
static atomic_int sh_busy;        /* coroutines that started there */
static atomic_int sh_moved;       /* of those, how many ran elsewhere later */

static void *sh_body(void *envp)
{
    (void)envp;
    int first = (int)thread_id();
    int none = 0;
    atomic_fetch_add(&sh_started, 1);
    if (!atomic_compare_exchange_strong(&sh_busy_thread, &none, first) && none != first)
        return NULL; /* another worker: leave it idle */
    atomic_fetch_add(&sh_busy, 1);
    int moved = 0;
    /* Until every coroutine has started (the other worker's thread may
     * start late), then SH_TURNS turns with that worker idle. */
    int64_t deadline = coro_now() + 10000000000LL;
    for (int i = 0; i < SH_TURNS; i++) {
        if (atomic_load(&sh_started) < SH_N && coro_now() < deadline)
            i = 0;
        moved |= (int)thread_id() != first;
        for (volatile int k = 0; k < 100; k++) {
        }
        if (!CHECK_RC(coro_yield(), CORO_OK))
            return NULL;
    }
    if (moved)
        atomic_fetch_add(&sh_moved, 1);
    return NULL;
}

/* Runs the coroutines; sh_moved counts those that moved. */
static void share(uint32_t flags)
{
    atomic_store(&sh_busy_thread, 0);
    atomic_store(&sh_started, 0);
    atomic_store(&sh_busy, 0);
    atomic_store(&sh_moved, -1);
    coro_runtime *rt = check_runtime(2);
    if (!rt)
        return;
    atomic_store(&sh_moved, 0);
    coro_promise p[SH_N];
    for (int i = 0; i < SH_N; i++)
        REQUIRE_RC(coro_spawn(rt, sh_body, NULL, 0, NULL, flags, &p[i]), CORO_OK);
    for (int i = 0; i < SH_N; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK(atomic_load(&sh_busy) >= 1);
}

static void test_sharing(void)
{
    share(0);
    CHECK_EQ(atomic_load(&sh_moved), 0);
    share(CORO_SPAWN_MIGRATABLE);
    int moved = atomic_load(&sh_moved);
    CHECK(moved >= 1);
    printf("sharing: %d of %d busy migratable coroutines moved to the idle worker\n", moved,
           atomic_load(&sh_busy));
}

/* ------------------------------------------------------------------ */
/* order                                                                */

#define ORDER_N 8
static token_box order_boxes[ORDER_N];
static order_log order_ran;
static atomic_int blocker_started, blocker_release;

static void *order_waiter(void *envp)
{
    int i = *(int *)envp;
    CHECK_RC(coro_suspend(token_box_put, &order_boxes[i]), CORO_OK);
    order_log_add(&order_ran, (char)('a' + i));
    return NULL;
}

/* Keeps the only worker busy, without suspending, until released (or
 * for at most 10 s, so that a failure cannot hang the test). */
static void *order_blocker(void *envp)
{
    (void)envp;
    atomic_store(&blocker_started, 1);
    double end = now_sec() + 10.0;
    while (!atomic_load(&blocker_release) && now_sec() < end) {
    }
    return NULL;
}

static void test_resume_order(void)
{
    uint64_t base = coro_live_frames();
    coro_runtime *rt = check_runtime(1);
    if (!rt)
        return;
    coro_promise w[ORDER_N], b;
    int idx[ORDER_N];
    for (int i = 0; i < ORDER_N; i++) {
        idx[i] = i;
        CHECK_RC(coro_spawn(rt, order_waiter, &idx[i], sizeof idx[i], NULL, 0, &w[i]), CORO_OK);
    }
    coro_token t[ORDER_N];
    for (int i = 0; i < ORDER_N; i++) {
        t[i] = token_box_take(&order_boxes[i], TIMEOUT_MS);
        CHECK(t[i].id != 0);
    }
    CHECK_RC(coro_spawn(rt, order_blocker, NULL, 0, NULL, 0, &b), CORO_OK);
    WAIT_UNTIL(atomic_load(&blocker_started), TIMEOUT_MS);
    CHECK(atomic_load(&blocker_started));
    /* All eight land in the inbox while the worker is busy. */
    static const int shuffled[ORDER_N] = { 5, 2, 7, 0, 3, 6, 1, 4 };
    char expected[ORDER_N + 1] = { 0 };
    for (int k = 0; k < ORDER_N; k++) {
        CHECK_RC(coro_resume(t[shuffled[k]]), CORO_OK);
        expected[k] = (char)('a' + shuffled[k]);
    }
    atomic_store(&blocker_release, 1);
    CHECK_RC(coro_await(b, NULL), CORO_OK);
    for (int i = 0; i < ORDER_N; i++)
        CHECK_RC(coro_await(w[i], NULL), CORO_OK);
    CHECK_EQ(atomic_load(&order_ran.n), ORDER_N);
    CHECK_LOG(&order_ran, expected);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
}

int main(int argc, char **argv)
{
    check_init("sched");
    if (argc > 1)
        n_resumptions = atoi(argv[1]);
    if (argc > 2)
        n_shutdown = atoi(argv[2]);
    if (n_resumptions < 1 || n_shutdown < 1) {
        fprintf(stderr, "usage: %s [suspends-per-coroutine [shutdown-count]]\n", argv[0]);
        return 2;
    }
    uint64_t frames_at_start = coro_live_frames();
    coro_runtime *rt = check_runtime(3);
    if (rt) {
        test_balance(rt);
        test_pinning(rt);
        test_cancel_from_foreign_threads(rt);
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
        test_shutdown_with_foreign_tokens();
        test_migration();
        test_sharing();
        test_resume_order();
    }
    CHECK_EQ(coro_live_frames(), frames_at_start);
    return check_summary();
}
