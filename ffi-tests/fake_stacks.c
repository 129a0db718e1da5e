/*
 * fake_stacks.c: the `asan` library frees the fake stack ASan keeps for a
 * coroutine once the coroutine is dropped.
 *
 * With detect_stack_use_after_return=1, ASan gives each stack (each
 * coroutine, once the library announces its switches) a fake stack for
 * the frames of instrumented functions, and frees it only when told that
 * the fiber ended. corosensei never said so, and coframe dropped its
 * coroutines without it: every coroutine a worker did not keep for reuse
 * leaked its fake stack (16 KiB here; 44 MB grew to 970 MB over 60,000
 * coroutines). Run against the library built with the `asan` feature
 * (make build-asan), as make test does.
 *
 * Rounds of 200 coroutines, each with an instrumented frame live across a
 * yield, spawned and awaited from the main thread on one worker (which
 * keeps 16 for reuse and drops the rest): the resident memory after the
 * last round must be within LIMIT_MB of what it was after the tenth. A
 * leak is a multiple of that; what a worker keeps does not grow.
 *
 * usage: fake_stacks [rounds]   (default 300)
 */
#include "check.h"

#define LIMIT_MB 64

/* An instrumented frame with a local array (so ASan puts it on the fake
 * stack), live across a suspension. */
__attribute__((noinline)) static int use(char *buf)
{
    buf[0] = 1;
    return coro_yield() == CORO_OK ? buf[0] : -1;
}

static void *body(void *env)
{
    char buf[256];
    memset(buf, 0, sizeof buf);
    return use(buf) == 1 ? env : NULL;
}

int main(int argc, char **argv)
{
    check_init("fake_stacks");
    int rounds = argc > 1 ? atoi(argv[1]) : 300;
    if (rounds < 11) {
        fprintf(stderr, "usage: %s [rounds > 10]\n", argv[0]);
        return 2;
    }
    coro_runtime *rt = check_runtime(1);
    if (!rt)
        return check_summary();
    coro_promise p[200];
    long tenth = 0;
    for (int r = 0; r < rounds && check_failures() == 0; r++) {
        for (int i = 0; i < 200; i++)
            CHECK_RC(coro_spawn(rt, body, NULL, 0, NULL, 0, &p[i]), CORO_OK);
        for (int i = 0; i < 200; i++)
            CHECK_RC(coro_await(p[i], NULL), CORO_OK);
        if (r == 9)
            tenth = proc_status_kb("VmRSS");
    }
    long last = proc_status_kb("VmRSS");
    printf("fake_stacks: %d coroutines: resident %ld kB after 2,000, %ld kB after all\n",
           rounds * 200, tenth, last);
    if (!CHECK(last - tenth < LIMIT_MB * 1024))
        fprintf(stderr, "fake_stacks: grew by %ld kB: the coroutines' fake stacks leak\n",
                last - tenth);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    return check_summary();
}
