/*
 * poll_race.c: the event-vs-cancel race of DESIGN.md section 1, with a
 * real epoll event.
 *
 * A batch of K coroutines each waits for its own socketpair to become
 * readable (coro_wait_fd), with a coro_defer that counts. Then, for each
 * coroutine in turn, two threads are released together:
 *
 *   thread A  writes one byte to the other end of the pair, so the
 *             coroutine's worker gets an epoll event and resumes the
 *             coroutine (the wait holds its suspend reference);
 *   thread B  calls coro_cancel_async on the coroutine, unless it has
 *             already woken (a "cancel it if it is not done yet" timeout).
 *
 * A and B walk the batch in lock step: A's write to coroutine i and B's
 * cancel of it are released together, once both are done with coroutine
 * i - 1 (a spin barrier). B's cancel is a direct call while the poller's
 * resume needs an epoll wake-up first, so B then waits a random 0..2D ns
 * (yielding the CPU meanwhile) before it cancels: D adapts from batch to
 * batch so that about half the coroutines wake first. The cancel so lands
 * before, during and after the poller's resume. `jitter 0` turns it off.
 *
 * Every coroutine must end one of two ways:
 *
 *   woke       its wait returned 0 (never early: the byte is there), it
 *              read the byte and returned; the main thread awaits it (or
 *              B's cancel came after it woke: "cancelled late")
 *   cancelled  its defer ran, its body never continued, and the byte is
 *              still in the socket (the main thread drains it)
 *
 * and for each: the defer ran exactly once (per-coroutine counter and a
 * batch total), coro_live_frames() comes back to where it started, and
 * after every batch the poller's epoll holds only its waker (every wait,
 * woken or cancelled, was deregistered: /proc/self/fdinfo). The socketpairs
 * are reused from batch to batch; at the end the process has the
 * descriptors it had before the runtime existed.
 *
 * Every other batch is spawned with CORO_SPAWN_CANCEL_RETURNS instead: there
 * a cancelled coroutine's wait returns CORO_ECANCELED (and the body returns
 * without reading), a woken one's returns 0; nothing else.
 *
 * Batches 2 and 3 of every 4 wait with CORO_KEEP: the registrations stay
 * (edge-triggered, named by descriptor, not by wait) and the event reaches
 * the coroutine through them; after the batch the main thread, a plain
 * thread, forgets every descriptor (coro_fd_forget returns 0: no wait is
 * in progress), and the poller's epoll is checked as after any batch.
 *
 * usage: poll_race [races [batch [jitter]]]
 *        (default 1,000,000 races, batches of 1,000, jitter 1: on)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <unistd.h>

#include "check.h"
#include "poll_util.h"

#define TIMEOUT_MS 20000
#define MAX_ANOMALY_REPORTS 10

struct slot {
    coro_promise promise;
    atomic_int defers;    /* how often its defer ran */
    atomic_int woke;      /* coro_wait_fd returned 0 */
    atomic_int returned;  /* coro_wait_fd returned (cancel-returns mode: maybe CORO_ECANCELED) */
    atomic_int wait_rc;   /* what coro_wait_fd returned */
    atomic_int read_n;    /* what recv returned (or -errno) */
    int cancelled;        /* B consumed the promise with coro_cancel_async */
    int cancel_rc, write_n;
};

static struct slot *slots;
static int (*pairs)[2]; /* [0]: the coroutine waits on it; [1]: A writes to it */
static int k = 1000;
static int jitter = 1;
static atomic_long delay_ns; /* D: B's mean delay before it cancels */
static atomic_int waiting;       /* coroutines of this batch about to wait */
static atomic_long batch_defers; /* defers run in this batch */
static atomic_long a_pos, b_pos; /* lock step of A and B */
static pthread_barrier_t start_line, finish_line;
static atomic_int quit;
static atomic_int keep; /* this batch waits with CORO_KEEP */
static long anomalies;

static void on_defer(void *arg)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->defers, 1);
    atomic_fetch_add(&batch_defers, 1);
}

static void *body(void *envp)
{
    int i = *(int *)envp;
    struct slot *s = &slots[i];
    if (coro_defer(on_defer, s) != CORO_OK)
        atomic_store(&s->wait_rc, 100); /* reported by the collector */
    atomic_fetch_add(&waiting, 1);
    int rc = coro_wait_fd(pairs[i][0], CORO_READABLE | (atomic_load(&keep) ? CORO_KEEP : 0), -1);
    /* Default mode: only reached if the wait ended without a cancel. */
    atomic_store(&s->wait_rc, rc);
    atomic_store(&s->returned, 1);
    if (rc != CORO_OK)
        return NULL; /* cancel-returns mode, cancelled: CORO_ECANCELED */
    atomic_store(&s->woke, 1);
    char c;
    ssize_t n = recv(pairs[i][0], &c, 1, 0);
    atomic_store(&s->read_n, n >= 0 ? (int)n : -errno);
    return (void *)(intptr_t)(i + 1);
}

static void *writer_a(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&b_pos, i);
            slots[i].write_n = (int)write(pairs[i][1], "x", 1);
            atomic_store_explicit(&a_pos, i + 1, memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

static void *canceller_b(void *arg)
{
    (void)arg;
    uint64_t rnd = 88172645463325252ULL;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&a_pos, i);
            struct slot *s = &slots[i];
            long d = atomic_load_explicit(&delay_ns, memory_order_relaxed);
            if (d > 0) {
                rnd ^= rnd << 13;
                rnd ^= rnd >> 7;
                rnd ^= rnd << 17;
                int64_t until = coro_now() + (int64_t)(rnd % (uint64_t)(2 * d + 1));
                while (coro_now() < until)
                    sched_yield(); /* the poller may need this CPU */
            }
            if (!atomic_load(&s->woke)) {
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
        fprintf(stderr, "poll_race: coroutine %d: %s (%ld)\n", i, what, value);
}

int main(int argc, char **argv)
{
    check_init("poll_race");
    long total = argc > 1 ? atol(argv[1]) : 1000000;
    if (argc > 2)
        k = atoi(argv[2]);
    if (argc > 3)
        jitter = atoi(argv[3]);
    if (total < 1 || k < 1) {
        fprintf(stderr, "usage: %s [races [batch [jitter]]]\n", argv[0]);
        return 2;
    }
    long fit = (raise_nofile(2L * k + 64) - 64) / 2;
    if (fit < k) {
        fprintf(stderr, "poll_race: the open-file limit allows batches of %ld, not %d\n", fit, k);
        k = (int)fit;
    }
    long batches = (total + k - 1) / k;
    slots = calloc((size_t)k, sizeof *slots);
    pairs = calloc((size_t)k, sizeof *pairs);
    if (!slots || !pairs)
        return 2;

    int fds_at_start = count_fds();
    for (int i = 0; i < k; i++)
        if (!CHECK(nb_socketpair(pairs[i]) == 0))
            return check_summary();
    uint64_t frames_at_start = coro_live_frames();
    epoll_snapshot_t eps;
    epoll_snapshot(&eps);
    coro_runtime *rt = NULL;
    CHECK_RC(coro_runtime_new(NULL, &rt), CORO_OK);
    if (!rt)
        return check_summary();
    epoll_set_t pollers;
    epoll_find_new(&eps, &pollers);
    int idle_regs = epoll_count(&pollers); /* the waker */
    if (pollers.n <= 0 || idle_regs < 0)
        printf("poll_race: cannot read the poller's registrations; not checking them\n");

    pthread_barrier_init(&start_line, NULL, 3);
    pthread_barrier_init(&finish_line, NULL, 3);
    pthread_t ta, tb;
    if (!CHECK(pthread_create(&ta, NULL, writer_a, NULL) == 0) ||
        !CHECK(pthread_create(&tb, NULL, canceller_b, NULL) == 0))
        return check_summary();

    long races = 0, woke = 0, cancel_won = 0, cancel_late = 0, awaited = 0;
    long cr_woke = 0, cr_cancelled = 0; /* of those, in cancel-returns batches */
    long delay_sum = 0, batches_run = 0, kept_batches = 0;
    long defers_total = 0, coroutines = 0, bad_regs = 0;
    double t0 = now_sec();
    for (long b = 0; b < batches; b++) {
        memset(slots, 0, (size_t)k * sizeof *slots);
        atomic_store(&waiting, 0);
        atomic_store(&batch_defers, 0);
        atomic_store(&a_pos, 0);
        atomic_store(&b_pos, 0);
        int cancel_returns = b % 2 == 1;
        int keep_batch = b % 4 >= 2;
        atomic_store(&keep, keep_batch);
        kept_batches += keep_batch;
        int spawned = 0;
        for (; spawned < k; spawned++) {
            int rc = coro_spawn(rt, body, &spawned, sizeof spawned, NULL,
                                cancel_returns ? CORO_SPAWN_CANCEL_RETURNS : 0,
                                &slots[spawned].promise);
            if (rc != CORO_OK) {
                CHECK_RC(rc, CORO_OK);
                break;
            }
        }
        if (spawned < k)
            break;
        /* Every coroutine registered its wait: parked, or about to. */
        WAIT_UNTIL(atomic_load(&waiting) == k, TIMEOUT_MS);
        if (idle_regs >= 0)
            WAIT_UNTIL(epoll_count(&pollers) == idle_regs + k, TIMEOUT_MS);
        if (!CHECK_EQ(atomic_load(&waiting), k)) {
            fprintf(stderr, "poll_race: batch %ld: %d of %d coroutines waiting; stopping\n", b,
                    atomic_load(&waiting), k);
            break;
        }
        coroutines += k;

        pthread_barrier_wait(&start_line); /* A and B race through the batch */
        pthread_barrier_wait(&finish_line);
        races += k;

        /* Woken coroutines finish on the workers: wait for every defer. */
        WAIT_UNTIL(atomic_load(&batch_defers) >= k, TIMEOUT_MS);
        if (!CHECK_EQ(atomic_load(&batch_defers), k))
            fprintf(stderr, "poll_race: batch %ld: %ld defers ran for %d coroutines\n", b,
                    atomic_load(&batch_defers), k);
        defers_total += atomic_load(&batch_defers);
        long before = anomalies, woke_before = woke;
        for (int i = 0; i < k; i++) {
            struct slot *s = &slots[i];
            int d = atomic_load(&s->defers);
            if (d != 1)
                anomaly(i, "defer count is not 1", d);
            if (s->write_n != 1)
                anomaly(i, "A's write did not write 1 byte", s->write_n);
            if (s->cancelled && s->cancel_rc != CORO_OK)
                anomaly(i, "coro_cancel_async did not return 0", s->cancel_rc);
            char c;
            ssize_t left = recv(pairs[i][0], &c, 1, 0); /* drain for the next batch */
            if (atomic_load(&s->woke)) {
                woke++;
                cr_woke += cancel_returns;
                if (atomic_load(&s->wait_rc) != CORO_OK)
                    anomaly(i, "coro_wait_fd returned an error", atomic_load(&s->wait_rc));
                if (atomic_load(&s->read_n) != 1)
                    anomaly(i, "woke, but the byte was not there", atomic_load(&s->read_n));
                if (left != -1)
                    anomaly(i, "woke and read, yet a byte was left", (long)left);
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
                cr_cancelled += cancel_returns;
                if (!s->cancelled)
                    anomaly(i, "never woke, yet nobody cancelled it", 0);
                if (cancel_returns && !atomic_load(&s->returned))
                    anomaly(i, "cancel-returns mode: the wait never returned", 0);
                if (cancel_returns && atomic_load(&s->wait_rc) != CORO_ECANCELED)
                    anomaly(i, "cancel-returns mode: the wait did not return CORO_ECANCELED",
                            atomic_load(&s->wait_rc));
                if (!cancel_returns && atomic_load(&s->returned))
                    anomaly(i, "default mode: a cancelled wait returned", atomic_load(&s->wait_rc));
                if (left != 1)
                    anomaly(i, "cancelled, yet its byte is gone", (long)left);
            }
        }
        /* Kept registrations stay until forgotten; every wait has ended. */
        for (int i = 0; keep_batch && i < k; i++) {
            int rc = coro_fd_forget(pairs[i][0]);
            if (rc != CORO_OK)
                anomaly(i, "coro_fd_forget after the batch did not return 0", rc);
        }
        /* Aim at half woken, half cancelled. */
        delay_sum += atomic_load(&delay_ns);
        batches_run++;
        if (jitter) {
            long woke_now = woke - woke_before, d = atomic_load(&delay_ns);
            if (woke_now * 5 < (long)k * 2)
                d = d + d / 4 + 500; /* under 40% woke: wait longer */
            else if (woke_now * 5 > (long)k * 3)
                d = d - d / 4;       /* over 60% woke: wait less */
            atomic_store(&delay_ns, d > 200000 ? 200000 : d);
        }
        if (idle_regs >= 0) {
            int regs = epoll_count(&pollers);
            if (regs != idle_regs) {
                bad_regs++;
                anomaly(-1, "registrations left in the poller's epoll after the batch",
                        regs - idle_regs);
            }
        }
        WAIT_UNTIL(coro_live_frames() == frames_at_start, TIMEOUT_MS);
        if (!CHECK_EQ(coro_live_frames(), frames_at_start))
            fprintf(stderr, "poll_race: batch %ld: frames leaked\n", b);
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
    for (int i = 0; i < k; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(anomalies, 0);
    CHECK_EQ(bad_regs, 0);
    CHECK_EQ(races, batches * (long)k);
    CHECK_EQ(defers_total, coroutines); /* every defer ran exactly once */
    CHECK_EQ(woke + cancel_won, coroutines);
    if (batches_run >= 4)
        CHECK(kept_batches > 0);
    CHECK_EQ(count_fds(), fds_at_start); /* the runtime's own descriptors too */

    printf("poll_race: %ld races in %.2f s (%.0f races/s) on %d-coroutine batches, %s\n", races,
           elapsed, elapsed > 0 ? (double)races / elapsed : 0.0, k,
           jitter ? "B's delay adapted to even out the outcomes" : "no delay for B");
    if (jitter)
        printf("poll_race: B's mean delay before cancelling: %.1f us over all batches, %.1f us "
               "at the end\n",
               batches_run ? (double)delay_sum / (double)batches_run / 1e3 : 0.0,
               (double)atomic_load(&delay_ns) / 1e3);
    printf("poll_race: woke %ld (then cancelled late %ld, awaited %ld), cancel won %ld\n", woke,
           cancel_late, awaited, cancel_won);
    printf("poll_race: of those, in CORO_SPAWN_CANCEL_RETURNS batches: woke %ld, cancel won %ld "
           "(the wait returned CORO_ECANCELED)\n",
           cr_woke, cr_cancelled);
    printf("poll_race: %ld of %ld batches waited with CORO_KEEP (then forgot the descriptors)\n",
           kept_batches, batches_run);
    printf("poll_race: %ld defers for %ld coroutines%s\n", defers_total, coroutines,
           anomalies == 0 && defers_total == coroutines ? ": every defer ran exactly once" : "");
    free(slots);
    free(pairs);
    return check_summary();
}
