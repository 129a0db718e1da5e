/*
 * two_refs.c: coframe's two references at work.
 *
 * Every coroutine frame has two references:
 *
 *   the async reference (a coro_promise), made by coro_spawn, given back by
 *   coro_await, coro_cancel_async or coro_detach;
 *
 *   the suspend reference (a coro_token), made each time the coroutine
 *   suspends, given back by coro_resume or coro_cancel_suspend.
 *
 * The frame is freed when both are gone, never before. So a poller thread
 * that holds a token can always call coro_resume on it, even if another
 * thread cancelled the coroutine a moment earlier: the frame is still there,
 * and coro_resume just drops the reference.
 *
 * Part 1 tells that story for one coroutine. Part 2 runs the
 * resume-vs-cancel race many times on two threads and prints the figures.
 *
 * usage: two_refs [races]        (default 200,000)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <coframe.h>

static int failures;

static void expect(int ok, const char *what)
{
    if (!ok) {
        printf("  !! unexpected: %s\n", what);
        failures++;
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Polls until `cond` holds or 10 seconds pass. */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        double wait_end_ = now() + 10.0;                                                           \
        while (!(cond) && now() < wait_end_)                                                       \
            usleep(100);                                                                           \
    } while (0)

/* ================================================================== */
/* Part 1: one coroutine, two references                               */

/* The poller thread: in a real program it sits in epoll_wait holding the
 * tokens of coroutines waiting for I/O. Here it holds one token, and
 * resumes it when main tells it to. */
struct poller {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    coro_token token;
    atomic_int have_token;
    int go;
};

static struct poller poller = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0 };

/* on_suspend callback: runs on the worker once the coroutine has switched out. */
static void give_token_to_poller(coro_token t, void *arg)
{
    struct poller *pl = arg;
    pthread_mutex_lock(&pl->mu);
    pl->token = t;
    atomic_store(&pl->have_token, 1);
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
}

static void *poller_thread(void *arg)
{
    struct poller *pl = arg;
    pthread_mutex_lock(&pl->mu);
    while (!pl->go)
        pthread_cond_wait(&pl->cv, &pl->mu);
    coro_token t = pl->token;
    pthread_mutex_unlock(&pl->mu);

    int rc = coro_resume(t);
    printf("poller thread resumes its token late: coro_resume returned %d (%s): it only "
           "dropped the reference\n",
           rc, coro_strerror(rc));
    expect(rc == CORO_OK, "the late coro_resume should return 0");
    rc = coro_resume(t);
    printf("poller thread resumes the same token again: coro_resume returned %d (%s), "
           "no use-after-free\n",
           rc, coro_strerror(rc));
    expect(rc == CORO_ESTALE, "a second coro_resume of one token should say CORO_ESTALE");
    return NULL;
}

/* The coroutine's environment: coro_spawn copies it into the frame. */
struct conn {
    int fd;
    struct poller *poller;
};

static atomic_int closed_fd = -1;
static atomic_int body_continued;

static void close_conn(void *arg)
{
    struct conn *c = arg; /* points into the frame's own copy of the env */
    close(c->fd);
    atomic_store(&closed_fd, c->fd);
}

static void *serve(void *envp)
{
    struct conn *c = envp;
    c->fd = open("/dev/null", O_RDONLY);
    coro_defer(close_conn, c); /* runs at completion and at cancellation */
    coro_suspend(give_token_to_poller, c->poller); /* wait "for I/O" */
    atomic_store(&body_continued, 1); /* never reached in this story */
    return NULL;
}

static void part1(coro_runtime *rt)
{
    uint64_t frames_before = coro_live_frames();
    pthread_t pt;
    pthread_create(&pt, NULL, poller_thread, &poller);

    struct conn env = { -1, &poller };
    coro_promise p;
    int rc = coro_spawn(rt, serve, &env, sizeof env, NULL, 0, &p);
    if (rc != CORO_OK) {
        printf("coro_spawn failed: %s\n", coro_strerror(rc));
        failures++;
        exit(1);
    }
    unsigned long long id = (unsigned long long)p.id;
    printf("spawned coroutine %llu (async reference held by main)\n", id);

    WAIT_FOR(atomic_load(&poller.have_token));
    if (!atomic_load(&poller.have_token)) {
        printf("coroutine %llu never suspended\n", id);
        exit(1);
    }
    printf("coroutine %llu suspended; its token went to the poller thread (suspend reference)\n",
           id);
    printf("live frames: %llu (one frame, two references)\n",
           (unsigned long long)(coro_live_frames() - frames_before));

    rc = coro_cancel_async(p);
    /* Parked, the coroutine's defers ran before coro_cancel_async
     * returned. The token is published from its on_suspend callback,
     * though, and a cancel that comes while that callback still runs is
     * acted on by the worker as soon as the callback returns (rule 9 in
     * src/frame/mod.rs): so wait for the defer rather than assume it. */
    WAIT_FOR(atomic_load(&closed_fd) >= 0);
    int fd = atomic_load(&closed_fd);
    printf("main cancels coroutine %llu with coro_cancel_async: its defers ran (closed fd %d)\n",
           id, fd);
    expect(rc == CORO_OK && fd >= 0, "coro_cancel_async should run the defers");
    uint64_t live = coro_live_frames() - frames_before;
    printf("the frame is still there (live frames %llu): the poller's token keeps it alive\n",
           (unsigned long long)live);
    expect(live == 1, "the token should keep the frame alive");

    pthread_mutex_lock(&poller.mu);
    poller.go = 1;
    pthread_cond_broadcast(&poller.cv);
    pthread_mutex_unlock(&poller.mu);
    pthread_join(pt, NULL);

    WAIT_FOR(coro_live_frames() == frames_before);
    live = coro_live_frames() - frames_before;
    printf("both references gone: frame freed (live frames %llu)\n", (unsigned long long)live);
    expect(live == 0, "the frame should be freed");
    expect(!atomic_load(&body_continued), "a cancelled coroutine's body never runs again");
}

/* ================================================================== */
/* Part 2: the resume-vs-cancel race, many times                       */

#define BATCH 1000

struct racer {
    _Atomic uint64_t token;
    coro_promise promise;
    atomic_int defers;
    atomic_int continued;
    int resume_rc, cancel_rc;
};

static struct racer racers[BATCH];
static int batch_n;
static atomic_int suspended;
static atomic_long a_done, b_done; /* lock step: neither thread runs ahead */
static pthread_barrier_t start_line, finish_line;
static atomic_int quit;

static void count_defer(void *arg)
{
    atomic_fetch_add(&((struct racer *)arg)->defers, 1);
}

static void hand_over(coro_token t, void *arg)
{
    atomic_store(&((struct racer *)arg)->token, t.id);
    atomic_fetch_add(&suspended, 1);
}

static void *racer_body(void *envp)
{
    struct racer *r = *(struct racer **)envp;
    coro_defer(count_defer, r);
    coro_suspend(hand_over, r);
    atomic_store(&r->continued, 1); /* only if the resume won */
    return NULL;
}

static void wait_for(atomic_long *other, long i)
{
    int spins = 0;
    while (atomic_load(other) < i)
        if (++spins > 64)
            sched_yield();
}

static void *resumer(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < batch_n; i++) {
            wait_for(&b_done, i);
            racers[i].resume_rc = coro_resume((coro_token){ atomic_load(&racers[i].token) });
            atomic_store(&a_done, i + 1);
        }
        pthread_barrier_wait(&finish_line);
    }
}

static void *canceller(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (atomic_load(&quit))
            return NULL;
        for (long i = 0; i < batch_n; i++) {
            wait_for(&a_done, i);
            racers[i].cancel_rc = coro_cancel_async(racers[i].promise);
            atomic_store(&b_done, i + 1);
        }
        pthread_barrier_wait(&finish_line);
    }
}

static void part2(coro_runtime *rt, long races)
{
    uint64_t frames_before = coro_live_frames();
    long resume_won = 0, cancel_won = 0, bad = 0, done = 0;
    pthread_barrier_init(&start_line, NULL, 3);
    pthread_barrier_init(&finish_line, NULL, 3);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, resumer, NULL);
    pthread_create(&tb, NULL, canceller, NULL);

    double t0 = now();
    while (done < races) {
        batch_n = races - done < BATCH ? (int)(races - done) : BATCH;
        memset(racers, 0, sizeof racers);
        atomic_store(&suspended, 0);
        atomic_store(&a_done, 0);
        atomic_store(&b_done, 0);
        for (int i = 0; i < batch_n; i++) {
            struct racer *r = &racers[i];
            if (coro_spawn(rt, racer_body, &r, sizeof r, NULL, 0, &r->promise) != CORO_OK) {
                printf("coro_spawn failed\n");
                exit(1);
            }
        }
        WAIT_FOR(atomic_load(&suspended) == batch_n);
        pthread_barrier_wait(&start_line); /* go: resume and cancel, side by side */
        pthread_barrier_wait(&finish_line);
        WAIT_FOR(coro_live_frames() == frames_before); /* every frame freed */
        for (int i = 0; i < batch_n; i++) {
            struct racer *r = &racers[i];
            if (atomic_load(&r->continued))
                resume_won++;
            else
                cancel_won++;
            bad += atomic_load(&r->defers) != 1 || r->resume_rc != CORO_OK ||
                   r->cancel_rc != CORO_OK;
        }
        done += batch_n;
        if (coro_live_frames() != frames_before || bad)
            break;
    }
    double secs = now() - t0;
    atomic_store(&quit, 1);
    pthread_barrier_wait(&start_line);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);

    printf("\nthe resume-vs-cancel race, %ld times across 2 threads: for each coroutine, a poller\n"
           "thread calls coro_resume while a canceller thread calls coro_cancel_async\n", done);
    printf("  resume won    %8ld  (the body continued, then finished)\n", resume_won);
    printf("  cancel won    %8ld  (the body never ran again)\n", cancel_won);
    printf("  elapsed       %8.2f s, %.0f races per second\n", secs,
           secs > 0 ? (double)done / secs : 0.0);
    printf("  every defer ran exactly once: %s; live frames afterwards: %llu\n",
           bad ? "NO" : "yes", (unsigned long long)(coro_live_frames() - frames_before));
    expect(bad == 0 && done == races, "every race should end with one defer and no error");
    expect(coro_live_frames() == frames_before, "every frame should be freed");
}

/* ================================================================== */
/* Part 3: spawn + await round trips on a one-worker runtime           */

static void *nothing(void *envp)
{
    return envp;
}

/* Spawns and awaits no-op coroutines for `secs` seconds; returns how many. */
static long round_trips(coro_runtime *rt, double secs)
{
    double end = now() + secs;
    long n = 0;
    for (;;) {
        for (int i = 0; i < 64; i++, n++) {
            coro_promise p;
            if (coro_spawn(rt, nothing, NULL, 0, NULL, 0, &p) != CORO_OK ||
                coro_await(p, NULL) != CORO_OK)
                return -1;
        }
        if (now() >= end)
            return n;
    }
}

struct loop_env {
    coro_runtime *rt;
    double secs;
};

/* The same loop inside a coroutine: coro_await suspends instead of blocking. */
static void *round_trips_inside(void *envp)
{
    struct loop_env *e = envp;
    return (void *)(intptr_t)round_trips(e->rt, e->secs);
}

static void part3(double secs)
{
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = 0 };
    coro_runtime *rt1 = NULL;
    if (coro_runtime_new(&cfg, &rt1) != CORO_OK) {
        expect(0, "coro_runtime_new with one worker");
        return;
    }
    printf("\nspawn + await round trips on a one-worker runtime\n");
    long n = round_trips(rt1, secs);
    printf("  from main (a thread; each await blocks it):  %10.0f per second\n",
           (double)n / secs);
    expect(n > 0, "every spawn+await from main should succeed");

    struct loop_env env = { rt1, secs };
    coro_promise p;
    void *res = NULL;
    if (coro_spawn(rt1, round_trips_inside, &env, sizeof env, NULL, 0, &p) == CORO_OK &&
        coro_await(p, &res) == CORO_OK) {
        n = (long)(intptr_t)res;
        printf("  from a coroutine (each await suspends it):   %10.0f per second\n",
               (double)n / secs);
        expect(n > 0, "every spawn+await inside a coroutine should succeed");
    } else {
        expect(0, "spawn+await of the measuring coroutine");
    }
    coro_runtime_shutdown(rt1);
}

int main(int argc, char **argv)
{
    long races = argc > 1 ? atol(argv[1]) : 200000;
    if (races < 1) {
        fprintf(stderr, "usage: %s [races]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 2, .stack_size = 0 };
    coro_runtime *rt = NULL;
    int rc = coro_runtime_new(&cfg, &rt);
    if (rc != CORO_OK) {
        printf("coro_runtime_new failed: %s\n", coro_strerror(rc));
        return 1;
    }
    uint64_t frames_at_start = coro_live_frames();

    printf("Every coroutine frame has two references: the promise (async reference)\n"
           "and, while it is suspended, a token (suspend reference). Its memory is\n"
           "freed only when both are gone.\n\n");
    part1(rt);
    part2(rt, races);
    part3(races >= 100000 ? 0.5 : 0.05);

    coro_runtime_shutdown(rt);
    expect(coro_live_frames() == frames_at_start, "no frame outlives its runtime");
    printf("\n%s\n", failures ? "two_refs: something went wrong (see !! above)"
                              : "two_refs: all as promised");
    return failures ? 1 : 0;
}
