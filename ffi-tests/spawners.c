/*
 * spawners.c: several threads spawn, resume, cancel and await on one
 * runtime at the same time, each round on a fresh runtime, so that every
 * round carves fresh stacks (a runtime's stack pool starts empty) while the
 * threads race in coro_spawn.
 *
 * Written for ThreadSanitizer (make test runs it against the tsan library
 * with halt_on_error=1): every edge between the spawning threads, the
 * workers and the threads that consume references goes through the
 * library, so a report means an edge the library did not announce. It runs
 * plain and under ASan and valgrind too, and checks in every build:
 *   - every spawn answers CORO_OK and every coroutine suspends once;
 *   - the tokens are resumed or cancelled by another thread than the one
 *     that spawned them, and every coro_resume / coro_cancel_suspend
 *     answers CORO_OK;
 *   - promises are awaited (CORO_OK with the right result, or
 *     CORO_ECANCELED for a cancelled one) or cancelled by a third thread;
 *   - every coroutine's defer and env_drop ran exactly once, and
 *     coro_live_frames() is back where it started after each round.
 *
 * usage: spawners [rounds [per_thread [threads]]]   (default 20 100 3)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "check.h"

#define MAX_THREADS 8
#define TIMEOUT_MS 20000

struct frame_rec {
    _Atomic uint64_t token; /* the suspension's token, from on_suspend */
    atomic_int defers, drops, resumed;
    coro_promise promise;
    int cancel_token; /* the token is cancelled rather than resumed */
    int cancel_promise; /* the promise is cancelled rather than awaited */
};

static coro_runtime *rt;
static struct frame_rec *recs; /* threads x per_thread, per round */
static int threads = 3, per_thread = 100;
static pthread_barrier_t line;
static atomic_int suspended;

struct env {
    struct frame_rec *rec;
    long value;
};

static void on_defer(void *arg)
{
    atomic_fetch_add(&((struct frame_rec *)arg)->defers, 1);
}

static void on_drop(void *envp)
{
    struct env *e = envp;
    atomic_fetch_add(&e->rec->drops, 1);
}

static void keep_token(coro_token t, void *arg)
{
    struct frame_rec *r = arg;
    atomic_store(&r->token, t.id);
    atomic_fetch_add(&suspended, 1);
}

static void *body(void *envp)
{
    struct env *e = envp;
    if (coro_defer(on_defer, e->rec) != CORO_OK)
        return NULL;
    if (coro_suspend(keep_token, e->rec) != CORO_OK)
        return NULL;
    atomic_store(&e->rec->resumed, 1);
    return (void *)(intptr_t)e->value;
}

static struct frame_rec *rec_of(int thread, int i)
{
    return &recs[(size_t)thread * (size_t)per_thread + (size_t)i];
}

/*
 * Each thread, per round: spawns its share (all threads at once, past a
 * barrier), then consumes the tokens of the next thread's coroutines, then
 * the promises: it cancels the ones of the thread after next that are
 * marked for it and awaits its own others.
 */
static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    int next = (me + 1) % threads, after = (me + 2) % threads;

    pthread_barrier_wait(&line);
    for (int i = 0; i < per_thread; i++) {
        struct frame_rec *r = rec_of(me, i);
        struct env e = { r, (long)me * per_thread + i + 1 };
        CHECK_RC(coro_spawn(rt, body, &e, sizeof e, on_drop, 0, &r->promise), CORO_OK);
    }
    pthread_barrier_wait(&line); /* main waits until every coroutine suspended */
    pthread_barrier_wait(&line);

    for (int i = 0; i < per_thread; i++) {
        struct frame_rec *r = rec_of(next, i);
        coro_token t = { atomic_load(&r->token) };
        CHECK_RC(r->cancel_token ? coro_cancel_suspend(t) : coro_resume(t), CORO_OK);
    }
    for (int i = 0; i < per_thread; i++) {
        struct frame_rec *r = rec_of(after, i);
        if (r->cancel_promise)
            CHECK_RC(coro_cancel_async(r->promise), CORO_OK);
    }
    for (int i = 0; i < per_thread; i++) {
        struct frame_rec *r = rec_of(me, i);
        if (r->cancel_promise)
            continue;
        void *res = NULL;
        int rc = coro_await(r->promise, &res);
        if (r->cancel_token) {
            CHECK_RC(rc, CORO_ECANCELED);
        } else if (CHECK_RC(rc, CORO_OK)) {
            CHECK_EQ((intptr_t)res, (long)me * per_thread + i + 1);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    check_init("spawners");
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (argc > 2)
        per_thread = atoi(argv[2]);
    if (argc > 3)
        threads = atoi(argv[3]);
    if (rounds < 1 || per_thread < 1 || threads < 3 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: %s [rounds [per_thread [threads (3-%d)]]]\n", argv[0],
                MAX_THREADS);
        return 2;
    }
    size_t n = (size_t)threads * (size_t)per_thread;
    recs = calloc(n, sizeof *recs);
    if (!recs)
        return 2;
    uint64_t base = coro_live_frames();
    long total = 0;

    for (int round = 0; round < rounds && check_failures() == 0; round++) {
        memset(recs, 0, n * sizeof *recs);
        for (size_t j = 0; j < n; j++) {
            /* A deterministic mix: a quarter of the tokens cancelled, a
             * third of the promises cancelled by another thread. */
            recs[j].cancel_token = (j + (size_t)round) % 4 == 0;
            recs[j].cancel_promise = (j + (size_t)round) % 3 == 0;
        }
        atomic_store(&suspended, 0);
        rt = check_runtime(2);
        if (!rt)
            break;
        pthread_barrier_init(&line, NULL, (unsigned)threads + 1);
        pthread_t tid[MAX_THREADS];
        for (int t = 0; t < threads; t++)
            if (pthread_create(&tid[t], NULL, worker, (void *)(intptr_t)t) != 0) {
                fprintf(stderr, "spawners: pthread_create failed\n");
                return 2;
            }
        pthread_barrier_wait(&line); /* go */
        pthread_barrier_wait(&line); /* spawned */
        WAIT_UNTIL(atomic_load(&suspended) == (int)n, TIMEOUT_MS);
        CHECK_EQ(atomic_load(&suspended), n);
        pthread_barrier_wait(&line); /* consume */
        for (int t = 0; t < threads; t++)
            pthread_join(tid[t], NULL);
        pthread_barrier_destroy(&line);

        WAIT_UNTIL(coro_live_frames() == base, TIMEOUT_MS);
        CHECK_EQ(coro_live_frames(), base);
        for (size_t j = 0; j < n; j++) {
            struct frame_rec *r = &recs[j];
            CHECK_EQ(atomic_load(&r->defers), 1);
            CHECK_EQ(atomic_load(&r->drops), 1);
            /* Resumed and not cancelled first: it ran on. */
            if (!r->cancel_token && !r->cancel_promise)
                CHECK_EQ(atomic_load(&r->resumed), 1);
            if (r->cancel_token)
                CHECK_EQ(atomic_load(&r->resumed), 0);
        }
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
        total += (long)n;
    }
    CHECK_EQ(coro_live_frames(), base);
    printf("spawners: %ld coroutines spawned by %d threads at once, %d rounds\n", total, threads,
           rounds);
    free(recs);
    return check_summary();
}
