/*
 * race.c: the race coframe exists for (DESIGN.md section 1).
 *
 * A "poller" thread A holds the suspend tokens of a batch of K coroutines
 * and resumes them, while thread B cancels the same coroutines with
 * coro_cancel_async. The two walk the batch in lock step (neither gets more
 * than one coroutine ahead of the other), so every coroutine sees a resume
 * and a cancel arrive at nearly the same moment.
 *
 * Each coroutine registers a defer, suspends (its token goes to A), and, if
 * it is resumed before the cancel takes hold, marks that it continued and
 * returns. B cancels a coroutine unless it has already continued (a "cancel
 * if not done yet" timeout); the main thread awaits the ones B left alone.
 *
 * Afterwards, for every coroutine:
 *   - its defer ran exactly once (per-coroutine counter, and a batch total)
 *   - coro_resume returned 0 (on a cancelled frame it only drops the token)
 *   - coro_cancel_async returned 0; coro_await (where used) returned 0 and
 *     the coroutine's result
 *   - if it never continued, B cancelled it ("cancel won")
 * and coro_live_frames() is back to where it started: every frame freed.
 *
 * usage: race [races [batch]]     (default 1,000,000 races, batches of 1,000)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "check.h"

#define TIMEOUT_MS 20000
#define MAX_ANOMALY_REPORTS 10

struct slot {
    _Atomic uint64_t token; /* written by on_suspend */
    atomic_int defers;      /* how often its defer ran */
    atomic_int continued;   /* the body ran past coro_suspend */
    atomic_int suspend_rc;
    coro_promise promise;
    int cancelled; /* B consumed the promise with coro_cancel_async */
    int resume_rc, cancel_rc;
};

static struct slot *slots;
static int k = 1000;
static atomic_int suspended;       /* in the current batch */
static atomic_long batch_defers;   /* in the current batch */
static atomic_long a_pos, b_pos;   /* lock step of A and B */
static pthread_barrier_t start_line, finish_line;
static atomic_int quit;
static long anomalies;

struct env {
    int i;
};

static void on_defer(void *arg)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->defers, 1);
    atomic_fetch_add(&batch_defers, 1);
}

/*
 * Bumped (release) by main after it resets the slots and before it spawns a
 * batch; read (acquire) by on_suspend before it writes a slot. The library
 * already orders spawn before the coroutine runs, but through atomics
 * ThreadSanitizer cannot see (the library is not instrumented); this makes
 * that order visible to it. It costs one load per suspension.
 */
static atomic_long batch_epoch;

static void hand_token_to_poller(coro_token t, void *arg)
{
    struct slot *s = arg;
    (void)atomic_load_explicit(&batch_epoch, memory_order_acquire);
    atomic_store(&s->token, t.id);
    atomic_fetch_add(&suspended, 1);
}


static void *body(void *envp)
{
    struct env *e = envp;
    struct slot *s = &slots[e->i];
    if (coro_defer(on_defer, s) != CORO_OK)
        atomic_store(&s->suspend_rc, 100); /* reported by the collector */
    int rc = coro_suspend(hand_token_to_poller, s);
    atomic_store(&s->suspend_rc, rc); /* default mode: we only get here if resumed */
    atomic_store(&s->continued, 1);
    return (void *)(intptr_t)(e->i + 1);
}

static void *poller_a(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&b_pos, i);
            coro_token t = { atomic_load(&slots[i].token) };
            slots[i].resume_rc = coro_resume(t);
            atomic_store_explicit(&a_pos, i + 1, memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

static void *canceller_b(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&a_pos, i);
            struct slot *s = &slots[i];
            if (!atomic_load(&s->continued)) {
                s->cancel_rc = coro_cancel_async(s->promise);
                s->cancelled = 1;
            }
            atomic_store_explicit(&b_pos, i + 1, memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

static void anomaly(int i, const char *what, long value)
{
    if (anomalies++ < MAX_ANOMALY_REPORTS)
        fprintf(stderr, "race: coroutine %d: %s (%ld)\n", i, what, value);
}

int main(int argc, char **argv)
{
    check_init("race");
    long total = argc > 1 ? atol(argv[1]) : 1000000;
    if (argc > 2)
        k = atoi(argv[2]);
    if (total < 1 || k < 1) {
        fprintf(stderr, "usage: %s [races [batch]]\n", argv[0]);
        return 2;
    }
    long batches = (total + k - 1) / k;
    slots = calloc((size_t)k, sizeof *slots);
    if (!slots)
        return 2;

    uint64_t frames_at_start = coro_live_frames();
    coro_runtime *rt = NULL;
    CHECK_RC(coro_runtime_new(NULL, &rt), CORO_OK);
    if (!rt)
        return check_summary();

    pthread_barrier_init(&start_line, NULL, 3);
    pthread_barrier_init(&finish_line, NULL, 3);
    pthread_t ta, tb;
    if (!CHECK(pthread_create(&ta, NULL, poller_a, NULL) == 0) ||
        !CHECK(pthread_create(&tb, NULL, canceller_b, NULL) == 0))
        return check_summary();

    long races = 0, resume_won = 0, cancel_won = 0, cancel_late = 0, awaited = 0;
    long defers_total = 0, coroutines = 0, bad_spawn = 0;
    double t0 = now_sec();
    for (long b = 0; b < batches && !atomic_load(&quit); b++) {
        memset(slots, 0, (size_t)k * sizeof *slots);
        atomic_store(&suspended, 0);
        atomic_store(&batch_defers, 0);
        atomic_store(&a_pos, 0);
        atomic_store(&b_pos, 0);
        atomic_fetch_add_explicit(&batch_epoch, 1, memory_order_release);
        int spawned = 0;
        for (; spawned < k; spawned++) {
            struct env e = { spawned };
            int rc = coro_spawn(rt, body, &e, sizeof e, NULL, 0, &slots[spawned].promise);
            if (rc != CORO_OK) {
                CHECK_RC(rc, CORO_OK);
                bad_spawn++;
                break;
            }
        }
        WAIT_UNTIL(atomic_load(&suspended) == spawned, TIMEOUT_MS);
        if (spawned < k || !CHECK_EQ(atomic_load(&suspended), k)) {
            fprintf(stderr, "race: batch %ld: %d of %d coroutines suspended; stopping\n", b,
                    atomic_load(&suspended), k);
            break;
        }
        coroutines += k;

        pthread_barrier_wait(&start_line); /* A and B race through the batch */
        pthread_barrier_wait(&finish_line);
        races += k;

        /* Resumed coroutines finish on the workers: wait for every defer. */
        WAIT_UNTIL(atomic_load(&batch_defers) >= k, TIMEOUT_MS);
        if (!CHECK_EQ(atomic_load(&batch_defers), k))
            fprintf(stderr, "race: batch %ld: %ld defers ran for %d coroutines\n", b,
                    atomic_load(&batch_defers), k);
        defers_total += atomic_load(&batch_defers);
        long before = anomalies;
        for (int i = 0; i < k; i++) {
            struct slot *s = &slots[i];
            int d = atomic_load(&s->defers);
            if (d != 1)
                anomaly(i, "defer count is not 1", d);
            if (s->resume_rc != CORO_OK)
                anomaly(i, "coro_resume did not return 0", s->resume_rc);
            if (s->cancelled && s->cancel_rc != CORO_OK)
                anomaly(i, "coro_cancel_async did not return 0", s->cancel_rc);
            if (atomic_load(&s->continued)) {
                if (atomic_load(&s->suspend_rc) != CORO_OK)
                    anomaly(i, "coro_suspend returned an error", atomic_load(&s->suspend_rc));
                resume_won++;
                if (s->cancelled) {
                    cancel_late++;
                } else {
                    void *res = NULL;
                    int rc = coro_await(s->promise, &res);
                    if (rc != CORO_OK)
                        anomaly(i, "coro_await did not return 0", rc);
                    else if ((intptr_t)res != i + 1)
                        anomaly(i, "coro_await gave a wrong result", (long)(intptr_t)res);
                    awaited++;
                }
            } else {
                cancel_won++;
                if (!s->cancelled)
                    anomaly(i, "never continued, yet nobody cancelled it", 0);
            }
        }
        WAIT_UNTIL(coro_live_frames() == frames_at_start, TIMEOUT_MS);
        if (!CHECK_EQ(coro_live_frames(), frames_at_start))
            fprintf(stderr, "race: batch %ld: frames leaked\n", b);
        if (anomalies != before || check_failures() > 0)
            break; /* the first broken batch tells the story */
    }
    double elapsed = now_sec() - t0;

    atomic_store(&quit, 1);
    pthread_barrier_wait(&start_line);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&start_line);
    pthread_barrier_destroy(&finish_line);

    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(bad_spawn, 0);
    CHECK_EQ(anomalies, 0);
    CHECK_EQ(races, batches * (long)k);
    CHECK_EQ(defers_total, coroutines); /* every defer ran exactly once */
    CHECK_EQ(resume_won + cancel_won, coroutines);

    printf("race: %ld races in %.2f s (%.0f races/s) on %d-coroutine batches\n", races, elapsed,
           elapsed > 0 ? (double)races / elapsed : 0.0, k);
    printf("race: resume won %ld (then cancelled late %ld, awaited %ld), cancel won %ld\n",
           resume_won, cancel_late, awaited, cancel_won);
    printf("race: %ld defers for %ld coroutines%s\n", defers_total, coroutines,
           anomalies == 0 && defers_total == coroutines ? ": every defer ran exactly once" : "");
    free(slots);
    return check_summary();
}
