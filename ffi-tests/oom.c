/*
 * oom.c: exhausted memory gets CORO_ENOMEM, never an abort or a lost frame.
 *
 * For each limit of a sweep, a child process makes a runtime, caps its
 * address space (RLIMIT_AS) at what it uses plus the limit, and spawns
 * parking coroutines until coro_spawn fails:
 *   - from the main thread, from inside a coroutine on a worker, and with
 *     a 64 KiB environment copy;
 *   - with one worker and with two.
 * Every failure must be CORO_ENOMEM. In the runs from a coroutine, a
 * plain thread started before the cap awaits the spawning coroutine (its
 * first blocking await, which must allocate nothing). Still capped, the
 * child then resumes every parked coroutine at once from the main thread,
 * with the rest of the address space taken (each then sleeps 100 us: the
 * sleep must end or answer CORO_ENOMEM), and awaits them; then it
 * lifts the cap, checks that every frame is gone, that a spawn and await
 * work again, and shuts down. The parent fails the run if a child dies (an allocation
 * failure that aborts) or reports a failed check.
 *
 * Not run under ASan or valgrind: both reserve memory of their own that
 * an address-space cap breaks.
 *
 *   oom [MAX_MIB]   the sweep's largest limit (default 48)
 *   oom 0 MIB V     one child's run (variant V, 0-3) in this process
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define MAX_FRAMES 200000

static coro_promise promises[MAX_FRAMES];
static _Atomic uint64_t tokens[MAX_FRAMES];
static atomic_long parked;

static void keep_token(coro_token t, void *arg)
{
    atomic_store((_Atomic uint64_t *)arg, t.id);
    atomic_fetch_add(&parked, 1);
}

static atomic_long sleeps_refused;

/* Parks once; when resumed (with the address space taken) sleeps 100 us,
 * which needs a wait record and a timer entry: the sleep must end (0) or
 * be refused with CORO_ENOMEM. Returns its cell's index + 1. */
static void *parker(void *env)
{
    long i;
    memcpy(&i, env, sizeof i);
    int rc = coro_suspend(keep_token, (void *)&tokens[i]);
    CHECK_RC(rc, CORO_OK);
    rc = coro_sleep_until(coro_now() + 100000);
    if (rc == CORO_ENOMEM)
        atomic_fetch_add(&sleeps_refused, 1);
    else
        CHECK_RC(rc, CORO_OK);
    return (void *)(intptr_t)(i + 1);
}

struct spawner {
    coro_runtime *rt;
    size_t env_size;
    long n;  /* out: how many it spawned */
    int rc;  /* out: the failing spawn's code */
};

static int spawn_parkers(coro_runtime *rt, size_t env_size, long *n)
{
    static char env[64 * 1024];
    for (*n = 0; *n < MAX_FRAMES; (*n)++) {
        memcpy(env, n, sizeof *n);
        int rc = coro_spawn(rt, parker, env, env_size, NULL, 0, &promises[*n]);
        if (rc != CORO_OK)
            return rc;
    }
    return CORO_OK;
}

static void *spawner(void *env)
{
    struct spawner *s = *(struct spawner **)env;
    s->rc = spawn_parkers(s->rt, s->env_size, &s->n);
    return NULL;
}

/* Takes what is left of the capped address space, in pieces of 1 MiB
 * and then of one page, so that nothing the library does next can get
 * more memory. Returns how many pieces; `give_back` unmaps them. */
#define MAX_PIECES 8192
static void *pieces[MAX_PIECES];
static size_t piece_sizes[MAX_PIECES];

static int take_the_rest(void)
{
    int n = 0;
    for (size_t size = 1 << 20; size >= 4096; size >>= 8) {
        while (n < MAX_PIECES) {
            void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                break;
            pieces[n] = p;
            piece_sizes[n++] = size;
        }
    }
    return n;
}

static void give_back(int n)
{
    for (int i = 0; i < n; i++)
        munmap(pieces[i], piece_sizes[i]);
}

static long address_space_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmSize:", 7) == 0)
            kib = atol(line + 7);
    fclose(f);
    return kib * 1024;
}

static void cap(rlim_t bytes)
{
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = bytes;
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
}

/* A plain thread, started before the cap, that blocks in coro_await after
 * it: its first blocking await must allocate nothing. */
struct awaiter {
    coro_promise p;
    atomic_int go;
    int rc;
};

static void *await_on_thread(void *arg)
{
    struct awaiter *a = arg;
    while (!atomic_load(&a->go))
        sched_yield();
    a->rc = coro_await(a->p, NULL);
    return NULL;
}

static void *returns_seven(void *env)
{
    (void)env;
    return (void *)7;
}

/* One child's run: 0 if every check held. */
static int child(long extra_mib, uint32_t workers, int from_coroutine, size_t env_size)
{
    long failed_before = atomic_load(&check_failed_);
    uint64_t base = coro_live_frames();
    coro_runtime *rt = check_runtime(workers);
    if (!rt)
        return 1;
    struct spawner s = {rt, env_size, 0, 0};
    struct spawner *sp = &s;
    coro_promise driver;
    if (from_coroutine)
        CHECK_RC(coro_spawn(rt, spawner, &sp, sizeof sp, NULL, 0, &driver), CORO_OK);

    struct awaiter a = {driver, 0, -1};
    pthread_t thread;
    if (from_coroutine)
        CHECK(pthread_create(&thread, NULL, await_on_thread, &a) == 0);

    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
    cap((rlim_t)(address_space_bytes() + (extra_mib << 20)));

    if (from_coroutine) {
        /* The driver was queued before the cap and spawns under it; the
         * thread awaits it. */
        atomic_store(&a.go, 1);
        CHECK(pthread_join(thread, NULL) == 0);
        CHECK_RC(a.rc, CORO_OK);
    } else {
        s.rc = spawn_parkers(rt, env_size, &s.n);
    }
    if (s.n < MAX_FRAMES)
        CHECK_RC(s.rc, CORO_ENOMEM);

    /* Still capped, and with the rest of the address space taken: every
     * parker parks, then all are resumed at once, run to their end and
     * are awaited (finishing a frame gives its slot and stack back into
     * room reserved when they were taken). */
    WAIT_UNTIL(atomic_load(&parked) == s.n, 20000);
    CHECK_EQ(atomic_load(&parked), s.n);
    int taken = take_the_rest();
    for (long i = 0; i < s.n; i++)
        CHECK_RC(coro_resume((coro_token){atomic_load(&tokens[i])}), CORO_OK);
    long wrong = 0;
    for (long i = 0; i < s.n; i++) {
        void *r = NULL;
        int rc = coro_await(promises[i], &r);
        if (rc != CORO_OK || r != (void *)(intptr_t)(i + 1))
            wrong++;
    }
    CHECK_EQ(wrong, 0);
    give_back(taken);

    CHECK(setrlimit(RLIMIT_AS, &old) == 0);
    CHECK_FRAMES_BACK_TO(base, 10000);
    coro_promise p;
    void *r = NULL;
    CHECK_RC(coro_spawn(rt, returns_seven, NULL, 0, NULL, 0, &p), CORO_OK);
    CHECK_RC(coro_await(p, &r), CORO_OK);
    CHECK(r == (void *)7);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    printf("oom: +%ld MiB, %u worker(s), %s, env %zu B: %ld spawned, then %s; "
           "%ld sleeps refused\n",
           extra_mib, workers, from_coroutine ? "in a coroutine" : "from main", env_size, s.n,
           coro_code_name(s.rc), atomic_load(&sleeps_refused));
    return atomic_load(&check_failed_) != failed_before;
}

int main(int argc, char **argv)
{
    check_init("oom");
    long max_mib = argc > 1 ? atol(argv[1]) : 48;
    if (argc > 3) {
        /* One child's run in this process, for a debugger. */
        int variant = atoi(argv[3]);
        return child(atol(argv[2]), variant & 1 ? 2 : 1, variant >= 2,
                     variant == 1 ? 64 * 1024 : sizeof(long));
    }
    static const long steps[] = {0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0] && steps[k] <= max_mib; k++) {
        for (int variant = 0; variant < 4; variant++) {
            uint32_t workers = variant & 1 ? 2 : 1;
            int from_coroutine = variant >= 2;
            size_t env_size = variant == 1 ? 64 * 1024 : sizeof(long);
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0)
                _exit(child(steps[k], workers, from_coroutine, env_size));
            int status = 0;
            CHECK(waitpid(pid, &status, 0) == pid);
            if (WIFSIGNALED(status)) {
                CHECK(!"child killed by a signal");
                printf("oom: +%ld MiB, variant %d: child killed by signal %d\n", steps[k],
                       variant, WTERMSIG(status));
            } else {
                CHECK_EQ(WEXITSTATUS(status), 0);
            }
        }
    }
    return check_summary();
}
