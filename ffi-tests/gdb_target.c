/*
 * gdb_target.c: the live process gdb_helper.sh runs under gdb.
 *
 * One runtime with one worker holds two coroutines: one suspended inside
 * gdb_parked_here() with its token out (the frame the helper's `coframe bt`
 * must show), one waiting for a pipe to become readable. Then the main
 * thread holds a coro_mutex a third coroutine waits for, and calls gdb_stop_here(), where gdb stops (a breakpoint), with the
 * suspended coroutine's id in gdb_parked_id. Once gdb continues, both
 * coroutines are ended and awaited and the runtime shut down: a clean exit
 * shows that the helper gave the thread its registers back.
 *
 *   gdb_target
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

#define TIMEOUT_MS 10000

/* Read by gdb: `coframe bt gdb_parked_id`. */
volatile uint64_t gdb_parked_id;
volatile uint64_t gdb_waiting_id;
volatile int gdb_pipe_fd;

__attribute__((noinline)) void gdb_stop_here(void)
{
    __asm__ volatile("" ::: "memory");
}

/* The frame the backtrace must show. */
__attribute__((noinline)) int gdb_parked_here(token_box *box)
{
    int rc = coro_suspend(token_box_put, box);
    __asm__ volatile("" ::: "memory"); /* no tail call */
    return rc;
}

__attribute__((noinline)) void *gdb_parked_body(void *envp)
{
    token_box *box = *(token_box **)envp;
    gdb_parked_id = coro_self_id();
    int rc = gdb_parked_here(box);
    __asm__ volatile("" ::: "memory");
    return (void *)(intptr_t)rc;
}

static void *locking_body(void *envp)
{
    coro_mutex *m = *(coro_mutex **)envp;
    int rc = coro_mutex_lock(m, -1);
    if (rc == CORO_OK)
        rc = coro_mutex_unlock(m);
    return (void *)(intptr_t)rc;
}

static void *waiting_body(void *envp)
{
    int fd = *(int *)envp;
    gdb_waiting_id = coro_self_id();
    return (void *)(intptr_t)coro_wait_fd(fd, CORO_READABLE, -1);
}

int main(void)
{
    check_init("gdb_target");
    coro_runtime *rt = check_runtime(1);
    if (!rt)
        return 1;
    token_box box = { 0 };
    token_box *boxp = &box;
    int fds[2];
    if (!CHECK(pipe2(fds, O_CLOEXEC) == 0))
        return 1;
    gdb_pipe_fd = fds[0];
    coro_mutex *m;
    CHECK_RC(coro_mutex_new(&m), CORO_OK);
    CHECK_RC(coro_mutex_lock(m, -1), CORO_OK);
    coro_promise parked, waiting, locking;
    CHECK_RC(coro_spawn(rt, gdb_parked_body, &boxp, sizeof boxp, NULL, 0, &parked), CORO_OK);
    CHECK_RC(coro_spawn(rt, waiting_body, &fds[0], sizeof fds[0], NULL, 0, &waiting), CORO_OK);
    CHECK_RC(coro_spawn(rt, locking_body, &m, sizeof m, NULL, 0, &locking), CORO_OK);
    coro_token t = token_box_take(&box, TIMEOUT_MS);
    WAIT_UNTIL(gdb_waiting_id != 0, TIMEOUT_MS);
    sleep_ms(50); /* the waiting coroutine parks after it stored its id */
    if (!CHECK(t.id != 0) || !CHECK(gdb_waiting_id != 0))
        return check_summary();
    printf("gdb_target: coroutine %llu suspended in gdb_parked_here, coroutine %llu waits on fd %d\n",
           (unsigned long long)gdb_parked_id, (unsigned long long)gdb_waiting_id, fds[0]);
    printf("gdb_target: coroutine %llu waits for mutex %p\n", (unsigned long long)locking.id, (void *)m);

    gdb_stop_here();

    CHECK_RC(coro_resume(t), CORO_OK);
    CHECK(write(fds[1], "x", 1) == 1);
    void *r = (void *)1;
    CHECK_RC(coro_await(parked, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_await(waiting, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_mutex_unlock(m), CORO_OK);
    CHECK_RC(coro_await(locking, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_mutex_free(m), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    close(fds[0]);
    close(fds[1]);
    return check_summary();
}
