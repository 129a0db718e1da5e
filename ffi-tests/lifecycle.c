/*
 * lifecycle.c: the frame lifecycle of DESIGN.md section 1, test by test.
 *
 * Each test_* function checks one rule of the contract. Tests run one after
 * another on a 2-worker runtime (the ping-pong test on a 1-worker one) and
 * every test ends with the frames it made freed: coro_live_frames() is back
 * to what it was when the test began.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>

#include "check.h"

#define TIMEOUT_MS 10000
#define CH(c) ((void *)(uintptr_t)(c))

static coro_runtime *rt;  /* 2 workers */
static coro_runtime *rt1; /* 1 worker */

/* The order log shared by defers, errdefers, env_drops and bodies. */
static order_log olog;
static atomic_int drops; /* env_drop calls */

static void log_char(void *arg)
{
    order_log_add(&olog, (char)(uintptr_t)arg);
}

/* env_drop: appends 'X' to the log, then counts (so waiting on `drops` sees the 'X'). */
static void log_drop(void *env)
{
    (void)env;
    order_log_add(&olog, 'X');
    atomic_fetch_add(&drops, 1);
}

static void reset_log(void)
{
    order_log_reset(&olog);
    atomic_store(&drops, 0);
}

/* Two defers and two errdefers interleaved, then one more defer. */
static void register_five(void)
{
    CHECK_RC(coro_defer(log_char, CH('a')), CORO_OK);
    CHECK_RC(coro_errdefer(log_char, CH('B')), CORO_OK);
    CHECK_RC(coro_defer(log_char, CH('c')), CORO_OK);
    CHECK_RC(coro_errdefer(log_char, CH('D')), CORO_OK);
    CHECK_RC(coro_defer(log_char, CH('e')), CORO_OK);
}

/* ------------------------------------------------------------------ */
/* spawn + await from a plain thread: the result passes through         */

struct num_env {
    long x;
};

static void *double_it(void *envp)
{
    struct num_env *e = envp;
    CHECK(coro_self_id() != 0);
    return (void *)(intptr_t)(e->x * 2);
}

static void test_spawn_await_thread(void)
{
    uint64_t base = coro_live_frames();
    struct num_env env = { 21 };
    coro_promise p = { 0 };
    REQUIRE_RC(coro_spawn(rt, double_it, &env, sizeof env, NULL, 0, &p), CORO_OK);
    CHECK(p.id != 0);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 42);

    /* A NULL result pointer is allowed. */
    REQUIRE_RC(coro_spawn(rt, double_it, &env, sizeof env, NULL, 0, &p), CORO_OK);
    CHECK_RC(coro_await(p, NULL), CORO_OK);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* coro_await from a thread blocks until the coroutine finishes. */
struct blocker {
    token_box box;
    atomic_int resumed;
};

static void *suspend_once_return_7(void *envp)
{
    struct blocker *b = *(struct blocker **)envp;
    CHECK_RC(coro_suspend(token_box_put, &b->box), CORO_OK);
    return (void *)(intptr_t)7;
}

static void *late_resumer(void *arg)
{
    struct blocker *b = arg;
    coro_token t = token_box_take(&b->box, TIMEOUT_MS);
    sleep_ms(50);
    atomic_store(&b->resumed, 1);
    CHECK_RC(coro_resume(t), CORO_OK);
    return NULL;
}

static void test_await_blocks_thread(void)
{
    uint64_t base = coro_live_frames();
    struct blocker b = { { 0 }, 0 };
    struct blocker *bp = &b;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, suspend_once_return_7, &bp, sizeof bp, NULL, 0, &p), CORO_OK);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, late_resumer, &b) == 0);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK(atomic_load(&b.resumed) == 1); /* await did not return before the resume */
    CHECK_EQ((intptr_t)res, 7);
    pthread_join(th, NULL);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* spawn + await inside a coroutine                                     */

struct parent_env {
    coro_runtime *rt;
    long x;
    token_box *child_box; /* NULL: the child returns at once */
    atomic_int *awaiting;
};

static void *suspend_then_double(void *envp)
{
    struct parent_env *e = envp;
    CHECK_RC(coro_suspend(token_box_put, e->child_box), CORO_OK);
    return (void *)(intptr_t)(e->x * 2);
}

static void *parent_body(void *envp)
{
    struct parent_env *e = envp;
    coro_promise c;
    if (e->child_box) {
        struct parent_env ce = *e;
        if (!CHECK_RC(coro_spawn(e->rt, suspend_then_double, &ce, sizeof ce, NULL, 0, &c), CORO_OK))
            return NULL;
    } else {
        struct num_env ce = { e->x };
        if (!CHECK_RC(coro_spawn(e->rt, double_it, &ce, sizeof ce, NULL, 0, &c), CORO_OK))
            return NULL;
    }
    if (e->awaiting)
        atomic_store(e->awaiting, 1);
    void *res = NULL;
    if (!CHECK_RC(coro_await(c, &res), CORO_OK))
        return NULL;
    if (e->awaiting)
        atomic_store(e->awaiting, 2);
    return (void *)((intptr_t)res + 1);
}

static void test_spawn_await_in_coroutine(void)
{
    uint64_t base = coro_live_frames();
    struct parent_env env = { rt, 50, NULL, NULL };
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, parent_body, &env, sizeof env, NULL, 0, &p), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 101);

    /* The child suspends, so the parent's await really suspends it. */
    token_box child_box = { 0 };
    atomic_int awaiting = 0;
    struct parent_env env2 = { rt, 5, &child_box, &awaiting };
    REQUIRE_RC(coro_spawn(rt, parent_body, &env2, sizeof env2, NULL, 0, &p), CORO_OK);
    coro_token ct = token_box_take(&child_box, TIMEOUT_MS);
    REQUIRE(ct.id != 0);
    WAIT_UNTIL(atomic_load(&awaiting) == 1, TIMEOUT_MS);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&awaiting), 1); /* still inside coro_await */
    CHECK_RC(coro_resume(ct), CORO_OK);
    res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 11);
    CHECK_EQ(atomic_load(&awaiting), 2);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* env is copied into the frame                                         */

struct big_env {
    token_box *box;
    uint64_t magic;
    double d;
    char text[40];
    unsigned char bytes[1000];
};

static void fill_env(struct big_env *e, token_box *box)
{
    memset(e, 0, sizeof *e); /* padding too, so memcmp is exact */
    e->box = box;
    e->magic = 0x636f6672616d6521ull;
    e->d = 3.25;
    strcpy(e->text, "the coroutine's own copy");
    for (size_t i = 0; i < sizeof e->bytes; i++)
        e->bytes[i] = (unsigned char)(i * 7 + 1);
}

static _Atomic(void *) env_at_entry;
static _Atomic(void *) env_at_drop;
static atomic_int env_drop_calls;
static atomic_int env_intact_at_drop;

static void *env_body(void *envp)
{
    struct big_env *e = envp;
    atomic_store(&env_at_entry, envp);
    CHECK_RC(coro_suspend(token_box_put, e->box), CORO_OK);
    /* The caller has scribbled over its struct by now; our copy is untouched. */
    struct big_env want;
    fill_env(&want, e->box);
    return (void *)(intptr_t)(memcmp(e, &want, sizeof want) == 0);
}

static void env_drop_check(void *envp)
{
    struct big_env *e = envp;
    struct big_env want;
    fill_env(&want, e->box);
    atomic_store(&env_intact_at_drop, memcmp(e, &want, sizeof want) == 0);
    atomic_store(&env_at_drop, envp);
    atomic_fetch_add(&env_drop_calls, 1);
}

static void test_env_is_a_copy(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    struct big_env mine;
    fill_env(&mine, &box);
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, env_body, &mine, sizeof mine, env_drop_check, 0, &p), CORO_OK);
    memset(&mine, 0xEE, sizeof mine); /* mutate the caller's struct after spawn */
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    void *seen = atomic_load(&env_at_entry);
    CHECK(seen != NULL && seen != (void *)&mine);
    CHECK((uintptr_t)seen % _Alignof(max_align_t) == 0); /* aligned like malloc */
    CHECK_EQ(atomic_load(&env_drop_calls), 0);
    CHECK_RC(coro_resume(t), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 1); /* the coroutine saw the original bytes */
    CHECK_EQ(atomic_load(&env_drop_calls), 1);
    CHECK(atomic_load(&env_at_drop) == seen); /* env_drop gets the same copy */
    CHECK(atomic_load(&env_intact_at_drop));
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* defers: LIFO, errdefers skipped on completion, env_drop last, once    */

static void *defers_then_return(void *envp)
{
    (void)envp;
    register_five();
    order_log_add(&olog, 'R');
    return (void *)(intptr_t)5;
}

static void test_defers_at_completion(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    coro_promise p;
    char unused = 0;
    REQUIRE_RC(coro_spawn(rt, defers_then_return, &unused, 1, log_drop, 0, &p), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 5);
    /* Body, then defers LIFO without the errdefers, then env_drop; all done by await. */
    CHECK_LOG(&olog, "RecaX");
    CHECK_EQ(atomic_load(&drops), 1);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&drops), 1); /* exactly once */
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* env_drop runs even when the env is empty (size 0, NULL pointer). */
static void *return_null(void *envp)
{
    (void)envp;
    return NULL;
}

static void test_env_drop_empty_env(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, return_null, NULL, 0, log_drop, 0, &p), CORO_OK);
    CHECK_RC(coro_await(p, NULL), CORO_OK);
    CHECK_EQ(atomic_load(&drops), 1);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* default-mode cancellation of a suspended coroutine                  */

static void *defers_then_suspend(void *envp)
{
    token_box *box = *(token_box **)envp;
    register_five();
    order_log_add(&olog, 'S');
    coro_suspend(token_box_put, box); /* default mode: never returns when cancelled */
    order_log_add(&olog, 'Z');
    return NULL;
}

static void test_cancel_async_suspended(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    token_box box = { 0 };
    token_box *bp = &box;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, defers_then_suspend, &bp, sizeof bp, log_drop, 0, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    /* Defers (errdefers too, LIFO) and env_drop ran before cancel_async returned. */
    CHECK_LOG(&olog, "SeDcBaX");
    CHECK_EQ(atomic_load(&drops), 1);
    /* The poller's token still holds the frame. */
    CHECK_EQ(coro_live_frames(), base + 1);
    CHECK_RC(coro_resume(t), CORO_OK); /* late resume: only drops the reference */
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    sleep_ms(20);
    CHECK_LOG(&olog, "SeDcBaX"); /* the body never continued, nothing ran twice */
    CHECK_EQ(atomic_load(&drops), 1);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
}

/* cancel_suspend in default mode; then a thread's await says CORO_ECANCELED. */
static void test_cancel_suspend(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    token_box box = { 0 };
    token_box *bp = &box;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, defers_then_suspend, &bp, sizeof bp, log_drop, 0, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_suspend(t), CORO_OK);
    CHECK_LOG(&olog, "SeDcBaX"); /* ran before cancel_suspend returned */
    CHECK_EQ(coro_live_frames(), base + 1); /* the promise still holds the frame */
    void *res = CH(1);
    CHECK_RC(coro_await(p, &res), CORO_ECANCELED);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    sleep_ms(20);
    CHECK_LOG(&olog, "SeDcBaX");
    CHECK_EQ(atomic_load(&drops), 1);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
}

/* ------------------------------------------------------------------ */
/* CORO_SPAWN_CANCEL_RETURNS                                            */

struct cr_state {
    token_box box;   /* the first suspension's token */
    token_box stray; /* a suspension that should not have happened */
    atomic_int rc_suspend1, rc_suspend2, rc_yield;
    atomic_int stray_calls;
    atomic_int running, go; /* for the running-coroutine variants */
};

static void stray_suspend(coro_token t, void *arg)
{
    struct cr_state *s = arg;
    atomic_fetch_add(&s->stray_calls, 1);
    token_box_put(t, &s->stray);
}

static void *cancel_returns_body(void *envp)
{
    struct cr_state *s = *(struct cr_state **)envp;
    CHECK_RC(coro_defer(log_char, CH('d')), CORO_OK);
    CHECK_RC(coro_errdefer(log_char, CH('E')), CORO_OK);
    order_log_add(&olog, 'S');
    atomic_store(&s->rc_suspend1, coro_suspend(token_box_put, &s->box));
    order_log_add(&olog, 'C');
    /* From now on every suspension point answers CORO_ECANCELED at once. */
    atomic_store(&s->rc_suspend2, coro_suspend(stray_suspend, s));
    atomic_store(&s->rc_yield, coro_yield());
    order_log_add(&olog, 'R');
    return (void *)(intptr_t)9;
}

static void cr_init(struct cr_state *s)
{
    memset(s, 0, sizeof *s);
    atomic_store(&s->rc_suspend1, 1);
    atomic_store(&s->rc_suspend2, 1);
    atomic_store(&s->rc_yield, 1);
}

/* Unsticks a coroutine that suspended where it should not have. */
static void cr_cleanup(struct cr_state *s)
{
    CHECK_EQ(atomic_load(&s->stray_calls), 0);
    coro_token t = { atomic_exchange(&s->stray.id, 0) };
    if (t.id)
        coro_resume(t);
}

static void check_cancel_returns_outcome(struct cr_state *s)
{
    WAIT_UNTIL(atomic_load(&drops) == 1, TIMEOUT_MS);
    CHECK_RC(atomic_load(&s->rc_suspend1), CORO_ECANCELED);
    CHECK_RC(atomic_load(&s->rc_suspend2), CORO_ECANCELED);
    CHECK_RC(atomic_load(&s->rc_yield), CORO_ECANCELED);
    /* The body finished by returning; then errdefers and defers, LIFO; then env_drop. */
    CHECK_LOG(&olog, "SCREdX");
    cr_cleanup(s);
}

static void test_cancel_returns_via_cancel_async(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    struct cr_state s;
    cr_init(&s);
    struct cr_state *sp = &s;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, cancel_returns_body, &sp, sizeof sp, log_drop,
                          CORO_SPAWN_CANCEL_RETURNS, &p),
               CORO_OK);
    coro_token t = token_box_take(&s.box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    sleep_ms(20);
    /* Nothing runs until the token is consumed: no defers, body still parked. */
    CHECK_LOG(&olog, "S");
    CHECK_EQ(atomic_load(&drops), 0);
    CHECK_EQ(coro_live_frames(), base + 1);
    CHECK_RC(coro_resume(t), CORO_OK); /* hands control back: suspend returns ECANCELED */
    check_cancel_returns_outcome(&s);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
}

static void test_cancel_returns_via_cancel_suspend(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    struct cr_state s;
    cr_init(&s);
    struct cr_state *sp = &s;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, cancel_returns_body, &sp, sizeof sp, log_drop,
                          CORO_SPAWN_CANCEL_RETURNS, &p),
               CORO_OK);
    coro_token t = token_box_take(&s.box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_suspend(t), CORO_OK);
    /* The coroutine was cancelled, so its await says so even though the body returned. */
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_ECANCELED);
    check_cancel_returns_outcome(&s);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
}

/* ------------------------------------------------------------------ */
/* cancel_async of a running coroutine acts at its next suspension      */

static void spin_until(atomic_int *flag)
{
    double end = now_sec() + TIMEOUT_MS / 1000.0;
    while (!atomic_load(flag) && now_sec() < end)
        sched_yield(); /* a plain busy wait: not a suspension point */
}

static void *running_default_body(void *envp)
{
    struct cr_state *s = *(struct cr_state **)envp;
    CHECK_RC(coro_defer(log_char, CH('d')), CORO_OK);
    CHECK_RC(coro_errdefer(log_char, CH('E')), CORO_OK);
    atomic_store(&s->running, 1);
    spin_until(&s->go);
    order_log_add(&olog, 'S');
    atomic_store(&s->rc_suspend1, coro_suspend(stray_suspend, s)); /* begins cancellation */
    order_log_add(&olog, 'Z');
    return NULL;
}

static void test_cancel_running_default(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    struct cr_state s;
    cr_init(&s);
    struct cr_state *sp = &s;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, running_default_body, &sp, sizeof sp, log_drop, 0, &p), CORO_OK);
    WAIT_UNTIL(atomic_load(&s.running), TIMEOUT_MS);
    CHECK(atomic_load(&s.running));
    CHECK_RC(coro_cancel_async(p), CORO_OK); /* only records the request */
    CHECK_EQ(atomic_load(&drops), 0);
    atomic_store(&s.go, 1);
    WAIT_UNTIL(atomic_load(&drops) == 1, TIMEOUT_MS);
    CHECK_LOG(&olog, "SEdX"); /* the suspension did not suspend, the body never continued */
    CHECK_EQ(atomic_load(&s.rc_suspend1), 1);
    cr_cleanup(&s);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

static void *running_returns_body(void *envp)
{
    struct cr_state *s = *(struct cr_state **)envp;
    CHECK_RC(coro_defer(log_char, CH('d')), CORO_OK);
    CHECK_RC(coro_errdefer(log_char, CH('E')), CORO_OK);
    atomic_store(&s->running, 1);
    spin_until(&s->go);
    order_log_add(&olog, 'S');
    atomic_store(&s->rc_suspend1, coro_suspend(stray_suspend, s));
    order_log_add(&olog, 'C');
    atomic_store(&s->rc_yield, coro_yield());
    return NULL;
}

static void test_cancel_running_returns(void)
{
    uint64_t base = coro_live_frames();
    reset_log();
    struct cr_state s;
    cr_init(&s);
    struct cr_state *sp = &s;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, running_returns_body, &sp, sizeof sp, log_drop,
                          CORO_SPAWN_CANCEL_RETURNS, &p),
               CORO_OK);
    WAIT_UNTIL(atomic_load(&s.running), TIMEOUT_MS);
    CHECK(atomic_load(&s.running));
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    atomic_store(&s.go, 1);
    WAIT_UNTIL(atomic_load(&drops) == 1, TIMEOUT_MS);
    CHECK_RC(atomic_load(&s.rc_suspend1), CORO_ECANCELED);
    CHECK_RC(atomic_load(&s.rc_yield), CORO_ECANCELED);
    CHECK_LOG(&olog, "SCEdX");
    cr_cleanup(&s);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* detach: the coroutine runs on to completion                          */

static atomic_int detached_done;
static atomic_int detached_defers;

static void count_detached_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&detached_defers, 1);
}

static void *detached_body(void *envp)
{
    token_box *box = *(token_box **)envp;
    CHECK_RC(coro_defer(count_detached_defer, NULL), CORO_OK);
    if (box)
        CHECK_RC(coro_suspend(token_box_put, box), CORO_OK);
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

static void test_detach(void)
{
    uint64_t base = coro_live_frames();
    atomic_store(&detached_done, 0);
    atomic_store(&detached_defers, 0);

    /* Detached while suspended: the token's resume runs it to completion. */
    token_box box = { 0 };
    token_box *bp = &box;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, detached_body, &bp, sizeof bp, NULL, 0, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_detach(p), CORO_OK);
    sleep_ms(10);
    CHECK_EQ(atomic_load(&detached_defers), 0); /* detach does not cancel */
    CHECK_EQ(coro_live_frames(), base + 1);
    CHECK_RC(coro_resume(t), CORO_OK);
    WAIT_UNTIL(atomic_load(&detached_done) == 1 && atomic_load(&detached_defers) == 1, TIMEOUT_MS);
    CHECK_EQ(atomic_load(&detached_done), 1);
    CHECK_EQ(atomic_load(&detached_defers), 1);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);

    /* Detached right after spawn: many of them, all complete. */
    token_box *none = NULL;
    for (int i = 0; i < 100; i++) {
        REQUIRE_RC(coro_spawn(rt, detached_body, &none, sizeof none, NULL, 0, &p), CORO_OK);
        CHECK_RC(coro_detach(p), CORO_OK);
    }
    WAIT_UNTIL(atomic_load(&detached_defers) == 101, TIMEOUT_MS);
    CHECK_EQ(atomic_load(&detached_done), 101);
    CHECK_EQ(atomic_load(&detached_defers), 101);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* coro_yield ping-pong on one worker                                   */

#define PING_ROUNDS 5
static char pp_log[2 * PING_ROUNDS + 1];
static int pp_len;
static atomic_int pp_go;
static pthread_t pp_thread[2];

static void *ping_pong_body(void *envp)
{
    char me = *(char *)envp;
    pp_thread[me - 'A'] = pthread_self();
    while (!atomic_load(&pp_go)) { /* wait for both to exist, letting the other run */
        int rc = coro_yield();
        if (rc != CORO_OK) {
            CHECK_RC(rc, CORO_OK);
            return NULL;
        }
    }
    for (int i = 0; i < PING_ROUNDS; i++) {
        pp_log[pp_len++] = me; /* one worker: no data race */
        CHECK_RC(coro_yield(), CORO_OK);
    }
    return NULL;
}

static void test_yield_ping_pong(void)
{
    uint64_t base = coro_live_frames();
    REQUIRE(rt1 != NULL);
    memset(pp_log, 0, sizeof pp_log);
    pp_len = 0;
    atomic_store(&pp_go, 0);
    coro_promise a, b;
    char ca = 'A', cb = 'B';
    REQUIRE_RC(coro_spawn(rt1, ping_pong_body, &ca, 1, NULL, 0, &a), CORO_OK);
    REQUIRE_RC(coro_spawn(rt1, ping_pong_body, &cb, 1, NULL, 0, &b), CORO_OK);
    sleep_ms(10);
    atomic_store(&pp_go, 1);
    CHECK_RC(coro_await(a, NULL), CORO_OK);
    CHECK_RC(coro_await(b, NULL), CORO_OK);
    /* Strict alternation: ABAB... or BABA..., five each. */
    CHECK_EQ(pp_len, 2 * PING_ROUNDS);
    int alternates = 1, na = 0;
    for (int i = 0; i < pp_len; i++) {
        na += pp_log[i] == 'A';
        if (i > 0 && pp_log[i] == pp_log[i - 1])
            alternates = 0;
    }
    if (!CHECK(alternates))
        fprintf(stderr, "    interleaving was \"%s\"\n", pp_log);
    CHECK_EQ(na, PING_ROUNDS);
    CHECK(pthread_equal(pp_thread[0], pp_thread[1])); /* one worker ran both */
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* coro_self_id                                                         */

static _Atomic uint64_t ids[2];

static void *record_id(void *envp)
{
    int i = *(int *)envp;
    atomic_store(&ids[i], coro_self_id());
    CHECK(coro_self_id() == atomic_load(&ids[i])); /* stable within the coroutine */
    return NULL;
}

static void test_self_id(void)
{
    uint64_t base = coro_live_frames();
    CHECK_EQ(coro_self_id(), 0); /* not in a coroutine */
    coro_promise p[2];
    for (int i = 0; i < 2; i++)
        REQUIRE_RC(coro_spawn(rt, record_id, &i, sizeof i, NULL, 0, &p[i]), CORO_OK);
    for (int i = 0; i < 2; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    CHECK(ids[0] != 0);
    CHECK(ids[1] != 0);
    CHECK(ids[0] != ids[1]);
    /* The header: "the running coroutine's id (its promise's value)". */
    CHECK_EQ(ids[0], p[0].id);
    CHECK_EQ(ids[1], p[1].id);
    CHECK_EQ(coro_self_id(), 0);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* coro_strerror                                                        */

static void test_strerror(void)
{
    static const int codes[] = { CORO_OK,        CORO_EINVAL,    CORO_ESTALE,
                                 CORO_ESTATE,    CORO_ECANCELED, CORO_ETIMEDOUT,
                                 CORO_ENOMEM,    CORO_ELOCKHELD, CORO_ESHUTDOWN,
                                 CORO_EIO };
    enum { N = sizeof codes / sizeof codes[0] };
    const char *msg[N];
    for (int i = 0; i < N; i++) {
        msg[i] = coro_strerror(codes[i]);
        if (!CHECK(msg[i] != NULL && msg[i][0] != '\0'))
            fprintf(stderr, "    code %d (%s)\n", codes[i], coro_code_name(codes[i]));
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (msg[i] && msg[j] && !CHECK(strcmp(msg[i], msg[j]) != 0))
                fprintf(stderr, "    %s and %s share \"%s\"\n", coro_code_name(codes[i]),
                        coro_code_name(codes[j]), msg[i]);
    const int unknown[] = { 1, 42, -10, -12345, INT32_MIN };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *m = coro_strerror(unknown[i]);
        CHECK(m != NULL && m[0] != '\0');
    }
}

/* ------------------------------------------------------------------ */
/* cancellation propagates down through coro_await                      */

static atomic_int prop_child_defers, prop_parent_defers, prop_bodies_continued;

static void count_int(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void *prop_child(void *envp)
{
    struct parent_env *e = envp;
    CHECK_RC(coro_defer(count_int, &prop_child_defers), CORO_OK);
    coro_suspend(token_box_put, e->child_box); /* cancelled here */
    atomic_fetch_add(&prop_bodies_continued, 1);
    return NULL;
}

static void *prop_parent(void *envp)
{
    struct parent_env *e = envp;
    CHECK_RC(coro_defer(count_int, &prop_parent_defers), CORO_OK);
    coro_promise c;
    if (!CHECK_RC(coro_spawn(e->rt, prop_child, e, sizeof *e, NULL, 0, &c), CORO_OK))
        return NULL;
    atomic_store(e->awaiting, 1);
    coro_await(c, NULL); /* cancelled here */
    atomic_fetch_add(&prop_bodies_continued, 1);
    return NULL;
}

static void test_cancel_propagates_through_await(void)
{
    uint64_t base = coro_live_frames();
    token_box child_box = { 0 };
    atomic_int awaiting = 0;
    struct parent_env env = { rt, 0, &child_box, &awaiting };
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, prop_parent, &env, sizeof env, NULL, 0, &p), CORO_OK);
    coro_token ct = token_box_take(&child_box, TIMEOUT_MS);
    REQUIRE(ct.id != 0);
    WAIT_UNTIL(atomic_load(&awaiting), TIMEOUT_MS);
    sleep_ms(20); /* let the parent park in coro_await */
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    WAIT_UNTIL(atomic_load(&prop_child_defers) == 1 && atomic_load(&prop_parent_defers) == 1,
               TIMEOUT_MS);
    CHECK_EQ(atomic_load(&prop_parent_defers), 1);
    CHECK_EQ(atomic_load(&prop_child_defers), 1); /* the child was cancelled with it */
    /* The child's frame waits for the token we hold; resuming it only drops it. */
    CHECK_RC(coro_resume(ct), CORO_OK);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&prop_bodies_continued), 0);
    CHECK_EQ(atomic_load(&prop_child_defers), 1);
    CHECK_EQ(atomic_load(&prop_parent_defers), 1);
}

/* A coroutine awaiting a child whose token was cancelled gets CORO_ECANCELED. */
static atomic_int awaited_rc = 1;

static void *await_and_report(void *envp)
{
    struct parent_env *e = envp;
    coro_promise c;
    if (!CHECK_RC(coro_spawn(e->rt, prop_child, e, sizeof *e, NULL, 0, &c), CORO_OK))
        return NULL;
    atomic_store(e->awaiting, 1);
    void *res = NULL;
    atomic_store(&awaited_rc, coro_await(c, &res));
    return (void *)(intptr_t)7;
}

static void test_await_of_token_cancelled(void)
{
    uint64_t base = coro_live_frames();
    atomic_store(&prop_child_defers, 0);
    token_box child_box = { 0 };
    atomic_int awaiting = 0;
    struct parent_env env = { rt, 0, &child_box, &awaiting };
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, await_and_report, &env, sizeof env, NULL, 0, &p), CORO_OK);
    coro_token ct = token_box_take(&child_box, TIMEOUT_MS);
    REQUIRE(ct.id != 0);
    WAIT_UNTIL(atomic_load(&awaiting), TIMEOUT_MS);
    sleep_ms(10);
    CHECK_RC(coro_cancel_suspend(ct), CORO_OK);
    CHECK_EQ(atomic_load(&prop_child_defers), 1);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK); /* the parent itself was not cancelled */
    CHECK_EQ((intptr_t)res, 7);
    CHECK_RC(atomic_load(&awaited_rc), CORO_ECANCELED);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* shutdown cancels what is left                                        */

static atomic_int left_defers;

static void *left_suspended(void *envp)
{
    token_box *box = *(token_box **)envp;
    CHECK_RC(coro_defer(count_int, &left_defers), CORO_OK);
    coro_suspend(token_box_put, box);
    return NULL;
}

static void test_shutdown_cancels_the_rest(uint64_t frames_before_runtimes)
{
    token_box boxes[3] = { { 0 }, { 0 }, { 0 } };
    coro_promise p[3];
    coro_token t[3];
    for (int i = 0; i < 3; i++) {
        token_box *bp = &boxes[i];
        REQUIRE_RC(coro_spawn(rt, left_suspended, &bp, sizeof bp, NULL, 0, &p[i]), CORO_OK);
        t[i] = token_box_take(&boxes[i], TIMEOUT_MS);
        CHECK(t[i].id != 0);
    }
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    rt = NULL;
    CHECK_EQ(atomic_load(&left_defers), 3);
    CHECK_RC(coro_runtime_shutdown(rt1), CORO_OK);
    rt1 = NULL;
    CHECK_EQ(coro_live_frames(), frames_before_runtimes);
}

int main(void)
{
    check_init("lifecycle");
    uint64_t frames_at_start = coro_live_frames();
    rt = check_runtime(2);
    rt1 = check_runtime(1);
    if (rt && rt1) {
        test_strerror();
        test_self_id();
        test_spawn_await_thread();
        test_await_blocks_thread();
        test_spawn_await_in_coroutine();
        test_env_is_a_copy();
        test_defers_at_completion();
        test_env_drop_empty_env();
        test_cancel_async_suspended();
        test_cancel_suspend();
        test_cancel_returns_via_cancel_async();
        test_cancel_returns_via_cancel_suspend();
        test_cancel_running_default();
        test_cancel_running_returns();
        test_detach();
        test_yield_ping_pong();
        test_cancel_propagates_through_await();
        test_await_of_token_cancelled();
        test_shutdown_cancels_the_rest(frames_at_start);
    } else {
        test_strerror(); /* needs no runtime */
    }
    if (rt)
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    if (rt1)
        CHECK_RC(coro_runtime_shutdown(rt1), CORO_OK);
    CHECK_EQ(coro_live_frames(), frames_at_start);
    return check_summary();
}
