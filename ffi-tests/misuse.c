/*
 * misuse.c: every misuse of the C API answers an error code; none crashes,
 * leaks or frees twice (the Makefile runs this under valgrind and ASan).
 *
 *   zeroed handle                         -> CORO_EINVAL
 *   a reference already consumed, a stale
 *   generation, a finished frame          -> CORO_ESTALE
 *   suspend/yield/defer outside a coroutine,
 *   shutdown from a worker                -> CORO_ESTATE
 *   NULL or bad arguments                 -> CORO_EINVAL
 *   handles after their runtime shut down -> CORO_ESTALE or CORO_ESHUTDOWN
 *   the runtime itself after its shutdown  -> CORO_ESHUTDOWN
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "check.h"

#define TIMEOUT_MS 10000

static coro_runtime *rt;

/* A stale or shut-down handle: either code is allowed by the contract. */
#define CHECK_GONE(expr)                                                                           \
    do {                                                                                           \
        int gone_rc_ = (expr);                                                                     \
        if (gone_rc_ == CORO_ESHUTDOWN)                                                            \
            CHECK_RC(gone_rc_, CORO_ESHUTDOWN);                                                    \
        else                                                                                       \
            check_rc_(gone_rc_, CORO_ESTALE, __FILE__, __LINE__, #expr);                          \
    } while (0)

static void noop_on_suspend(coro_token t, void *arg)
{
    (void)t;
    (void)arg;
}

static void noop_defer(void *arg)
{
    (void)arg;
}

static void *return_arg(void *envp)
{
    return (void *)(intptr_t)(*(int *)envp);
}

/* A coroutine that suspends `n` times, handing each token to `box`, then returns n. */
struct susp_env {
    token_box *box;
    int n;
    atomic_int *progress; /* suspensions returned so far */
};

static void *suspend_n(void *envp)
{
    struct susp_env *e = envp;
    for (int i = 0; i < e->n; i++) {
        if (!CHECK_RC(coro_suspend(token_box_put, e->box), CORO_OK))
            return NULL;
        if (e->progress)
            atomic_fetch_add(e->progress, 1);
    }
    return (void *)(intptr_t)e->n;
}

static int spawn_suspender(token_box *box, int n, atomic_int *progress, coro_promise *p)
{
    struct susp_env env = { box, n, progress };
    return coro_spawn(rt, suspend_n, &env, sizeof env, NULL, 0, p);
}

/* ------------------------------------------------------------------ */

static void test_zeroed_handles(void)
{
    coro_promise zp = { 0 };
    coro_token zt = { 0 };
    void *res = (void *)1;
    CHECK_RC(coro_resume(zt), CORO_EINVAL);
    CHECK_RC(coro_cancel_suspend(zt), CORO_EINVAL);
    CHECK_RC(coro_await(zp, &res), CORO_EINVAL);
    CHECK(res == (void *)1); /* untouched on error */
    CHECK_RC(coro_await(zp, NULL), CORO_EINVAL);
    CHECK_RC(coro_cancel_async(zp), CORO_EINVAL);
    CHECK_RC(coro_detach(zp), CORO_EINVAL);
}

static void test_outside_a_coroutine(void)
{
    CHECK_RC(coro_suspend(noop_on_suspend, NULL), CORO_ESTATE);
    CHECK_RC(coro_yield(), CORO_ESTATE);
    CHECK_RC(coro_defer(noop_defer, NULL), CORO_ESTATE);
    CHECK_RC(coro_errdefer(noop_defer, NULL), CORO_ESTATE);
    CHECK_EQ(coro_self_id(), 0);
}

static void test_null_arguments(void)
{
    uint64_t base = coro_live_frames();
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = 0 };
    coro_runtime *out = NULL;
    CHECK_RC(coro_runtime_new(NULL, NULL), CORO_EINVAL);
    CHECK_RC(coro_runtime_new(&cfg, NULL), CORO_EINVAL);
    cfg.struct_size = 0;
    CHECK_RC(coro_runtime_new(&cfg, &out), CORO_EINVAL);
    cfg.struct_size = 4; /* shorter than any coro_config ever was */
    CHECK_RC(coro_runtime_new(&cfg, &out), CORO_EINVAL);
    CHECK(out == NULL);
    CHECK_RC(coro_runtime_shutdown(NULL), CORO_EINVAL);

    int v = 1;
    coro_promise p = { 0 };
    CHECK_RC(coro_spawn(NULL, return_arg, &v, sizeof v, NULL, 0, &p), CORO_EINVAL);
    CHECK_RC(coro_spawn(rt, NULL, &v, sizeof v, NULL, 0, &p), CORO_EINVAL);
    CHECK_RC(coro_spawn(rt, return_arg, NULL, sizeof v, NULL, 0, &p), CORO_EINVAL);
    CHECK_RC(coro_spawn(rt, return_arg, &v, sizeof v, NULL, 0, NULL), CORO_EINVAL);
    CHECK_RC(coro_spawn(rt, return_arg, &v, sizeof v, NULL, 0x80000000u, &p), CORO_EINVAL);
    CHECK_EQ(p.id, 0); /* nothing was handed out */
    CHECK_EQ(coro_live_frames(), base); /* and no frame was made */
}

/* Misuse from inside a coroutine. */
struct inside_env {
    coro_runtime *rt;
    atomic_int stray_suspends;
};

static void count_stray(coro_token t, void *arg)
{
    struct inside_env *e = arg;
    atomic_fetch_add(&e->stray_suspends, 1);
    coro_resume(t); /* do not strand the coroutine if it did suspend */
}

static void *misuse_inside(void *envp)
{
    struct inside_env *e = *(struct inside_env **)envp;
    CHECK_RC(coro_suspend(NULL, NULL), CORO_EINVAL);
    CHECK_RC(coro_defer(NULL, NULL), CORO_EINVAL);
    CHECK_RC(coro_errdefer(NULL, NULL), CORO_EINVAL);
    CHECK_RC(coro_runtime_shutdown(e->rt), CORO_ESTATE); /* not from its own worker */

    /* A noted blocking lock forbids suspending (CP.52). */
    CHECK_RC(coro_lock_note_acquire("misuse.c test lock"), CORO_OK);
    CHECK_RC(coro_suspend(count_stray, e), CORO_ELOCKHELD);
    CHECK_RC(coro_yield(), CORO_ELOCKHELD);
    CHECK_RC(coro_lock_note_release("misuse.c test lock"), CORO_OK);
    CHECK_RC(coro_lock_note_release("misuse.c test lock"), CORO_ESTATE); /* none noted */
    CHECK_RC(coro_yield(), CORO_OK); /* allowed again */
    return (void *)(intptr_t)3;
}

static void test_misuse_inside_a_coroutine(void)
{
    uint64_t base = coro_live_frames();
    struct inside_env env = { rt, 0 };
    struct inside_env *ep = &env;
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, misuse_inside, &ep, sizeof ep, NULL, 0, &p), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 3);
    CHECK_EQ(atomic_load(&env.stray_suspends), 0);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* tokens                                                               */

static void test_second_resume(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    atomic_int progress = 0;
    coro_promise p;
    REQUIRE_RC(spawn_suspender(&box, 2, &progress, &p), CORO_OK);
    coro_token t1 = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t1.id != 0);
    CHECK_RC(coro_resume(t1), CORO_OK);
    CHECK_RC(coro_resume(t1), CORO_ESTALE); /* the same token twice */
    /* Each suspension mints a new token; the old one never resumes the new suspension. */
    coro_token t2 = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t2.id != 0);
    CHECK(t2.id != t1.id);
    CHECK_RC(coro_resume(t1), CORO_ESTALE);
    CHECK_RC(coro_cancel_suspend(t1), CORO_ESTALE);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&progress), 1); /* still parked in its second suspension */
    CHECK_RC(coro_resume(t2), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 2);
    CHECK_EQ(atomic_load(&progress), 2);
    CHECK_RC(coro_resume(t2), CORO_ESTALE);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

static void test_resume_after_cancel_suspend(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    atomic_int progress = 0;
    coro_promise p;
    REQUIRE_RC(spawn_suspender(&box, 1, &progress, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_suspend(t), CORO_OK);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
    CHECK_RC(coro_cancel_suspend(t), CORO_ESTALE);
    CHECK_RC(coro_await(p, NULL), CORO_ECANCELED);
    CHECK_RC(coro_await(p, NULL), CORO_ESTALE);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
    CHECK_EQ(atomic_load(&progress), 0);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

static void test_cancel_suspend_after_resume(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    coro_promise p;
    REQUIRE_RC(spawn_suspender(&box, 1, NULL, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_resume(t), CORO_OK);
    CHECK_RC(coro_cancel_suspend(t), CORO_ESTALE);
    CHECK_RC(coro_await(p, NULL), CORO_OK); /* the stale cancel did not cancel it */
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* Save the token, resume, let it finish, await, then use the token again. */
static void test_token_of_finished_coroutine(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    coro_promise p;
    REQUIRE_RC(spawn_suspender(&box, 1, NULL, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_resume(t), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 1);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    CHECK_RC(coro_resume(t), CORO_ESTALE);
    CHECK_RC(coro_cancel_suspend(t), CORO_ESTALE);
}

/* A stale handle whose slot was reused must not touch the new coroutine. */
static void test_stale_handles_after_slot_reuse(void)
{
    uint64_t base = coro_live_frames();
    token_box box = { 0 };
    coro_promise old_p;
    REQUIRE_RC(spawn_suspender(&box, 1, NULL, &old_p), CORO_OK);
    coro_token old_t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(old_t.id != 0);
    CHECK_RC(coro_resume(old_t), CORO_OK);
    CHECK_RC(coro_await(old_p, NULL), CORO_OK);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);

    /* New suspended coroutines, likely in the freed slot. */
    enum { N = 8 };
    token_box boxes[N];
    coro_promise ps[N];
    coro_token ts[N];
    atomic_int progress = 0;
    memset(boxes, 0, sizeof boxes);
    for (int i = 0; i < N; i++) {
        REQUIRE_RC(spawn_suspender(&boxes[i], 1, &progress, &ps[i]), CORO_OK);
        ts[i] = token_box_take(&boxes[i], TIMEOUT_MS);
        CHECK(ts[i].id != 0);
        CHECK(ps[i].id != old_p.id);
    }
    CHECK_RC(coro_resume(old_t), CORO_ESTALE);
    CHECK_RC(coro_cancel_suspend(old_t), CORO_ESTALE);
    CHECK_RC(coro_cancel_async(old_p), CORO_ESTALE);
    CHECK_RC(coro_detach(old_p), CORO_ESTALE);
    CHECK_RC(coro_await(old_p, NULL), CORO_ESTALE);
    sleep_ms(20);
    CHECK_EQ(atomic_load(&progress), 0); /* none of them was resumed or cancelled */
    CHECK_EQ(coro_live_frames(), base + N);
    for (int i = 0; i < N; i++) {
        CHECK_RC(coro_resume(ts[i]), CORO_OK);
        void *res = NULL;
        CHECK_RC(coro_await(ps[i], &res), CORO_OK);
        CHECK_EQ((intptr_t)res, 1);
    }
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* Handles nobody ever handed out: an error, never a crash. */
static void test_forged_handles(void)
{
    const uint64_t forged[] = { 1, 2, 0xffffffffull, 0x100000000ull, 0xdeadbeefdeadbeefull,
                                UINT64_MAX };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        coro_token t = { forged[i] };
        coro_promise p = { forged[i] };
        int rc;
        rc = coro_resume(t);
        CHECK(rc == CORO_ESTALE || rc == CORO_EINVAL);
        rc = coro_cancel_suspend(t);
        CHECK(rc == CORO_ESTALE || rc == CORO_EINVAL);
        rc = coro_await(p, NULL);
        CHECK(rc == CORO_ESTALE || rc == CORO_EINVAL);
        rc = coro_cancel_async(p);
        CHECK(rc == CORO_ESTALE || rc == CORO_EINVAL);
        rc = coro_detach(p);
        CHECK(rc == CORO_ESTALE || rc == CORO_EINVAL);
    }
}

/* ------------------------------------------------------------------ */
/* promises                                                             */

static void test_promise_consumed_once(void)
{
    uint64_t base = coro_live_frames();
    int v = 4;
    coro_promise p;

    /* await, then every other consumer */
    REQUIRE_RC(coro_spawn(rt, return_arg, &v, sizeof v, NULL, 0, &p), CORO_OK);
    void *res = NULL;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK_EQ((intptr_t)res, 4);
    res = (void *)1;
    CHECK_RC(coro_await(p, &res), CORO_ESTALE);
    CHECK(res == (void *)1);
    CHECK_RC(coro_cancel_async(p), CORO_ESTALE);
    CHECK_RC(coro_detach(p), CORO_ESTALE);

    /* cancel_async twice; await after cancel_async */
    token_box box = { 0 };
    REQUIRE_RC(spawn_suspender(&box, 1, NULL, &p), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    CHECK_RC(coro_cancel_async(p), CORO_ESTALE);
    CHECK_RC(coro_await(p, NULL), CORO_ESTALE);
    CHECK_RC(coro_detach(p), CORO_ESTALE);
    CHECK_RC(coro_resume(t), CORO_OK); /* the token is still good: drops the frame */
    CHECK_RC(coro_resume(t), CORO_ESTALE);

    /* detach twice; await after detach */
    REQUIRE_RC(spawn_suspender(&box, 1, NULL, &p), CORO_OK);
    t = token_box_take(&box, TIMEOUT_MS);
    REQUIRE(t.id != 0);
    CHECK_RC(coro_detach(p), CORO_OK);
    CHECK_RC(coro_detach(p), CORO_ESTALE);
    CHECK_RC(coro_await(p, NULL), CORO_ESTALE);
    CHECK_RC(coro_cancel_async(p), CORO_ESTALE);
    CHECK_RC(coro_resume(t), CORO_OK);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);

    /* cancel_async of a coroutine that already finished: consumes, frees */
    REQUIRE_RC(coro_spawn(rt, return_arg, &v, sizeof v, NULL, 0, &p), CORO_OK);
    sleep_ms(20);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    CHECK_RC(coro_await(p, NULL), CORO_ESTALE);
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
}

/* ------------------------------------------------------------------ */
/* handles outliving their runtime                                      */

static void test_handles_after_shutdown(void)
{
    uint64_t base = coro_live_frames();
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = 0 };
    coro_runtime *r2 = NULL;
    REQUIRE_RC(coro_runtime_new(&cfg, &r2), CORO_OK);
    token_box box = { 0 };
    struct susp_env env = { &box, 1, NULL };
    coro_promise suspended, finished;
    int v = 5;
    CHECK_RC(coro_spawn(r2, suspend_n, &env, sizeof env, NULL, 0, &suspended), CORO_OK);
    CHECK_RC(coro_spawn(r2, return_arg, &v, sizeof v, NULL, 0, &finished), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    CHECK(t.id != 0);
    sleep_ms(10);
    CHECK_RC(coro_runtime_shutdown(r2), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
    CHECK_GONE(coro_resume(t));
    CHECK_GONE(coro_cancel_suspend(t));
    CHECK_GONE(coro_await(suspended, NULL));
    CHECK_GONE(coro_cancel_async(suspended));
    CHECK_GONE(coro_detach(suspended));
    CHECK_GONE(coro_await(finished, NULL));
    CHECK_GONE(coro_cancel_async(finished));
    CHECK_GONE(coro_detach(finished));
    CHECK_EQ(coro_live_frames(), base);
}

static atomic_int late_drops;

static void count_late_drop(void *env)
{
    (void)env;
    atomic_fetch_add(&late_drops, 1);
}

/* The runtime pointer itself, used after its shutdown: an error code, not
 * freed memory (ASan and valgrind run this test). */
static void test_runtime_after_shutdown(void)
{
    uint64_t base = coro_live_frames();
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = 0 };
    coro_runtime *r3 = NULL;
    REQUIRE_RC(coro_runtime_new(&cfg, &r3), CORO_OK);
    int v = 1;
    coro_promise p = { 0 };
    CHECK_RC(coro_spawn(r3, return_arg, &v, sizeof v, NULL, 0, &p), CORO_OK);
    CHECK_RC(coro_detach(p), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(r3), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(r3), CORO_ESHUTDOWN);
    p.id = 0;
    CHECK_RC(coro_spawn(r3, return_arg, &v, sizeof v, count_late_drop, 0, &p), CORO_ESHUTDOWN);
    CHECK_EQ(p.id, 0);                       /* nothing written */
    CHECK_EQ(atomic_load(&late_drops), 0);   /* the caller keeps its environment */
    CHECK_RC(coro_runtime_shutdown(r3), CORO_ESHUTDOWN);
    CHECK_EQ(coro_live_frames(), base);
    /* A runtime made afterwards is not reached through the old pointer. */
    coro_runtime *r4 = NULL;
    REQUIRE_RC(coro_runtime_new(&cfg, &r4), CORO_OK);
    CHECK(r4 != r3);
    CHECK_RC(coro_spawn(r3, return_arg, &v, sizeof v, NULL, 0, &p), CORO_ESHUTDOWN);
    CHECK_RC(coro_runtime_shutdown(r4), CORO_OK);
    CHECK_EQ(coro_live_frames(), base);
}

int main(void)
{
    check_init("misuse");
    uint64_t frames_at_start = coro_live_frames();
    test_zeroed_handles();
    test_outside_a_coroutine();
    test_forged_handles();
    rt = check_runtime(2);
    if (rt) {
        test_null_arguments();
        test_misuse_inside_a_coroutine();
        test_second_resume();
        test_resume_after_cancel_suspend();
        test_cancel_suspend_after_resume();
        test_token_of_finished_coroutine();
        test_stale_handles_after_slot_reuse();
        test_promise_consumed_once();
        test_handles_after_shutdown();
        test_runtime_after_shutdown();
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
        test_forged_handles(); /* again, with the frame table populated and torn down */
    }
    CHECK_EQ(coro_live_frames(), frames_at_start);
    return check_summary();
}
