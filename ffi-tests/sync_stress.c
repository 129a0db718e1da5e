/*
 * sync_stress.c: the mutex and the channel under load, on two workers.
 *
 *   mutex    W coroutines (half of them migratable) and one plain thread
 *            take one coro_mutex in turn LOCKS times in all and increment
 *            a plain, non-atomic counter inside, sometimes yielding while
 *            they hold it (it may be held across a suspension): the
 *            counter must be exact, and most takes are hand-offs to a
 *            waiter (counted).
 *   channel  P producer coroutines send ITEMS distinct items through a
 *            channel of capacity 16 (and a rendezvous channel, capacity 0,
 *            in a second round) to receiver coroutines, in both cancel
 *            modes, and one plain thread; a canceller thread cancels
 *            random receivers all along and spawns replacements. Every
 *            item must be received exactly once: a receiver cancelled
 *            while it waits is never handed an item, and the item goes to
 *            the next one. The producers close the channel when done; the
 *            receivers drain it and stop on CORO_ECLOSED.
 *
 * Then every coroutine is gone (coro_live_frames back where it was) and
 * the objects are freed (CORO_OK: nobody waits on them).
 *
 * usage: sync_stress [locks [items]]   (default 1,000,000 and 1,000,000)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "check.h"

#define WORKERS 4
#define PRODUCERS 3
#define RECEIVERS 6
#define MAX_RECEIVERS 4096

static coro_runtime *rt;

/* ---- the mutex ---- */

static coro_mutex *mtx;
static long counter;        /* guarded by mtx, plain on purpose */
static long locks_each;
static atomic_long handoffs; /* takes that found the mutex held */

static void *locker(void *env)
{
    (void)env;
    for (long i = 0; i < locks_each; i++) {
        if (coro_mutex_trylock(mtx) != CORO_OK) {
            atomic_fetch_add_explicit(&handoffs, 1, memory_order_relaxed);
            int rc = coro_mutex_lock(mtx, -1);
            if (rc != CORO_OK) {
                CHECK_RC(rc, CORO_OK);
                return NULL;
            }
        }
        long v = counter;
        if (i % 64 == 0)
            coro_yield(); /* held across a suspension */
        counter = v + 1;
        CHECK_RC(coro_mutex_unlock(mtx), CORO_OK);
    }
    return NULL;
}

static void *thread_locker(void *arg)
{
    (void)arg;
    for (long i = 0; i < locks_each; i++) {
        CHECK_RC(coro_mutex_lock(mtx, -1), CORO_OK);
        counter++;
        CHECK_RC(coro_mutex_unlock(mtx), CORO_OK);
    }
    return NULL;
}

static void run_mutex(long locks)
{
    CHECK_RC(coro_mutex_new(&mtx), CORO_OK);
    counter = 0;
    locks_each = locks / (WORKERS + 1) + 1;
    coro_promise p[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        CHECK_RC(coro_spawn(rt, locker, NULL, 0, NULL, i % 2 ? CORO_SPAWN_MIGRATABLE : 0, &p[i]),
                 CORO_OK);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, thread_locker, NULL) == 0);
    for (int i = 0; i < WORKERS; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    pthread_join(t, NULL);
    long want = locks_each * (WORKERS + 1);
    CHECK_EQ(counter, want);
    CHECK_RC(coro_mutex_free(mtx), CORO_OK);
    printf("sync_stress: mutex: %ld takes by %d coroutines and a thread, counter exact; %ld "
           "found it held and waited for a hand-off\n",
           want, WORKERS, atomic_load(&handoffs));
}

/* ---- the channel ---- */

static coro_chan *chan;
static long items;
static atomic_uchar *seen;
static atomic_long received, cancelled, spawned_receivers, producers_done;

struct recv_env {
    int slot;
};

static _Atomic uint64_t receivers[MAX_RECEIVERS]; /* live receiver promises */

static void take(long v)
{
    if (v < 0 || v >= items) {
        CHECK(!"an item out of range");
        return;
    }
    if (atomic_fetch_add(&seen[v], 1) != 0)
        CHECK(!"an item received twice");
    atomic_fetch_add(&received, 1);
}

static void *receiver(void *env)
{
    (void)env;
    for (;;) {
        long v;
        int rc = coro_chan_recv(chan, &v, -1);
        if (rc == CORO_OK) {
            take(v); /* no suspension point before it counts */
            continue;
        }
        if (rc != CORO_ECLOSED && rc != CORO_ECANCELED)
            CHECK_RC(rc, CORO_OK);
        return NULL;
    }
}

static void *thread_receiver(void *arg)
{
    (void)arg;
    for (;;) {
        long v;
        int rc = coro_chan_recv(chan, &v, -1);
        if (rc != CORO_OK) {
            CHECK_RC(rc, CORO_ECLOSED);
            return NULL;
        }
        take(v);
    }
}

static long items_each;
static atomic_long next_producer;

static void *producer(void *env)
{
    (void)env;
    long first = atomic_fetch_add(&next_producer, 1) * items_each;
    for (long i = first; i < first + items_each && i < items; i++)
        if (!CHECK_RC(coro_chan_send(chan, &i, -1), CORO_OK))
            break;
    if (atomic_fetch_add(&producers_done, 1) + 1 == PRODUCERS)
        CHECK_RC(coro_chan_close(chan), CORO_OK);
    return NULL;
}

static void spawn_receiver(int slot)
{
    uint32_t flags = (atomic_fetch_add(&spawned_receivers, 1) % 2) ? CORO_SPAWN_CANCEL_RETURNS : 0;
    coro_promise p;
    if (!CHECK_RC(coro_spawn(rt, receiver, NULL, 0, NULL, flags, &p), CORO_OK))
        return;
    atomic_store(&receivers[slot], p.id);
}

static atomic_int stop_cancelling;

static void *canceller(void *arg)
{
    (void)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    while (!atomic_load(&stop_cancelling)) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        int slot = (int)(rng % RECEIVERS);
        coro_promise p = { atomic_exchange(&receivers[slot], 0) };
        if (p.id) {
            CHECK_RC(coro_cancel_async(p), CORO_OK);
            atomic_fetch_add(&cancelled, 1);
            spawn_receiver(slot);
        }
        struct timespec ts = { 0, 20000 }; /* 20 us */
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void run_chan(long n, size_t capacity)
{
    items = n;
    items_each = (n + PRODUCERS - 1) / PRODUCERS;
    seen = calloc((size_t)n, sizeof *seen);
    if (!seen)
        exit(2);
    atomic_store(&received, 0);
    atomic_store(&cancelled, 0);
    atomic_store(&producers_done, 0);
    atomic_store(&next_producer, 0);
    atomic_store(&stop_cancelling, 0);
    CHECK_RC(coro_chan_new(sizeof(long), capacity, &chan), CORO_OK);
    for (int i = 0; i < RECEIVERS; i++)
        spawn_receiver(i);
    pthread_t tr, tc;
    CHECK(pthread_create(&tr, NULL, thread_receiver, NULL) == 0);
    CHECK(pthread_create(&tc, NULL, canceller, NULL) == 0);
    coro_promise p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        CHECK_RC(coro_spawn(rt, producer, NULL, 0, NULL, 0, &p[i]), CORO_OK);
    for (int i = 0; i < PRODUCERS; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    atomic_store(&stop_cancelling, 1);
    pthread_join(tc, NULL);
    pthread_join(tr, NULL);
    /* The receivers left drain the channel and stop on CORO_ECLOSED. */
    for (int i = 0; i < RECEIVERS; i++) {
        coro_promise q = { atomic_exchange(&receivers[i], 0) };
        if (q.id)
            CHECK_RC(coro_await(q, NULL), CORO_OK);
    }
    long missing = 0, twice = 0;
    for (long i = 0; i < n; i++) {
        missing += atomic_load(&seen[i]) == 0;
        twice += atomic_load(&seen[i]) > 1;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(twice, 0);
    CHECK_EQ(atomic_load(&received), n);
    CHECK_RC(coro_chan_free(chan), CORO_OK);
    printf("sync_stress: channel (capacity %zu): %ld items received exactly once while %ld "
           "receivers were cancelled\n",
           capacity, n, atomic_load(&cancelled));
    free(seen);
}

int main(int argc, char **argv)
{
    check_init("sync_stress");
    long locks = argc > 1 ? atol(argv[1]) : 1000000;
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    uint64_t frames = coro_live_frames();
    rt = check_runtime(2);
    if (!rt)
        return check_summary();
    double t0 = now_sec();
    run_mutex(locks);
    double t1 = now_sec();
    run_chan(n, 16);
    run_chan(n / 4, 0);
    double t2 = now_sec();
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_FRAMES_BACK_TO(frames, 2000);
    printf("sync_stress: mutex %.2f s, channels %.2f s\n", t1 - t0, t2 - t1);
    return check_summary();
}
