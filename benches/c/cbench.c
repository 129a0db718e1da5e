/*
 * coframe called from C, through libcoframe.so and <coframe.h>: the same
 * operations as the Rust side of the comparison, plus the loopback echo.
 *
 *   cbench yield       [--iters N] [--reps R]   two coroutines, one worker
 *   cbench spawn       [--iters N] [--reps R]   spawn + await from a coroutine
 *   cbench echo_rtt    [--iters N] [--reps R] [--workers W]
 *                      one connection, 64-byte message out and back
 *   cbench echo_server [--workers W]   prints {"port":P}, echoes until stdin closes
 *
 * Each prints one JSON line. The echo server is one coroutine per
 * connection on non-blocking sockets: read or write first, coro_wait_fd
 * only on EAGAIN.
 */
#define _GNU_SOURCE
#include <coframe.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MSG 64

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "cbench: %s failed: %d (%s)\n", what, rc, coro_strerror(rc));
        abort();
    }
}

static coro_runtime *rt_new(uint32_t workers)
{
    coro_config cfg = { .struct_size = sizeof cfg, .workers = workers, .stack_size = 0 };
    coro_runtime *rt = NULL;
    check(coro_runtime_new(&cfg, &rt), "coro_runtime_new");
    return rt;
}

static coro_promise spawn(coro_runtime *rt, coro_entry entry, const void *env, size_t size)
{
    coro_promise p;
    check(coro_spawn(rt, entry, env, size, NULL, 0, &p), "coro_spawn");
    return p;
}

static uint64_t await_u64(coro_promise p)
{
    void *out = NULL;
    check(coro_await(p, &out), "coro_await");
    return (uint64_t)(uintptr_t)out;
}

struct loop { coro_runtime *rt; uint64_t n; };

/* ------------------------------------------------------------ yield, spawn */

static void *yielder(void *env)
{
    uint64_t n = *(uint64_t *)env;
    for (uint64_t i = 0; i < n; i++)
        check(coro_yield(), "coro_yield");
    return NULL;
}

static void *yield_driver(void *env)
{
    struct loop l = *(struct loop *)env;
    uint64_t t0 = now_ns();
    coro_promise a = spawn(l.rt, yielder, &l.n, sizeof l.n);
    coro_promise b = spawn(l.rt, yielder, &l.n, sizeof l.n);
    await_u64(a);
    await_u64(b);
    return (void *)(uintptr_t)(now_ns() - t0);
}

static void *empty(void *env)
{
    (void)env;
    return NULL;
}

static void *spawn_driver(void *env)
{
    struct loop l = *(struct loop *)env;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < l.n; i++) {
        coro_promise p = spawn(l.rt, empty, NULL, 0);
        check(coro_await(p, NULL), "coro_await");
    }
    return (void *)(uintptr_t)(now_ns() - t0);
}

static void run_driver(const char *bench, coro_entry driver, uint64_t ops_per_iter,
                       uint64_t iters, int reps)
{
    coro_runtime *rt = rt_new(1);
    struct loop l = { rt, iters };
    double s[64];
    if (reps > 1)
        await_u64(spawn(rt, driver, &l, sizeof l));
    for (int r = 0; r < reps; r++)
        s[r] = (double)await_u64(spawn(rt, driver, &l, sizeof l)) / (double)(iters * ops_per_iter);
    check(coro_runtime_shutdown(rt), "coro_runtime_shutdown");
    report(bench, iters, s, reps);
}

/* ------------------------------------------------------------ echo */

/* CORO_KEEP: each connection's descriptor stays registered between waits,
 * as tokio's do; forgotten before it is closed. */
static uint32_t keep = CORO_KEEP;

static void close_fd(void *arg)
{
    int fd = (int)(intptr_t)arg;
    coro_fd_forget(fd);
    close(fd);
}

/* Writes all of buf; waits for writability only on EAGAIN. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t k = write(fd, buf, len);
        if (k > 0) {
            buf += k;
            len -= (size_t)k;
        } else if (k < 0 && errno == EAGAIN) {
            int rc = coro_wait_fd(fd, CORO_WRITABLE | keep, -1);
            if (rc != 0)
                return rc;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

/* CBENCH_IO: the connections use the blocking-style calls (coro_recv
 * with CORO_IO_SOME, coro_send) instead of the hand-tuned loop below.
 * Not coro_read/coro_write: on a descriptor that may be a pipe they
 * check its mode (one fcntl per call); recv and send need not. */
static int use_io_calls;

static void echo_conn_io(int fd, char *buf, size_t size)
{
    for (;;) {
        size_t n = 0;
        if (coro_recv(fd, buf, size, CORO_IO_SOME | keep, &n, -1) != 0 || n == 0)
            return;
        if (coro_send(fd, buf, n, keep, NULL, -1) != 0)
            return;
    }
}

static void *echo_conn(void *env)
{
    int fd = *(int *)env;
    check(coro_defer(close_fd, (void *)(intptr_t)fd), "coro_defer");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[4096];
    if (use_io_calls) {
        echo_conn_io(fd, buf, sizeof buf);
        return NULL;
    }
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k > 0) {
            if (write_all(fd, buf, (size_t)k) != 0)
                break;
            /* A short read drained the socket: wait before reading again
             * rather than make a read that fails with EAGAIN (tokio does
             * the same: it clears readiness after a short read). */
            if ((size_t)k < sizeof buf && coro_wait_fd(fd, CORO_READABLE | keep, -1) != 0)
                break;
        } else if (k == 0) {
            break;
        } else if (errno == EAGAIN) {
            if (coro_wait_fd(fd, CORO_READABLE | keep, -1) != 0)
                break;
        } else if (errno != EINTR) {
            break;
        }
    }
    return NULL;
}

struct acceptor { coro_runtime *rt; int fd; };

static void *acceptor(void *env)
{
    struct acceptor a = *(struct acceptor *)env;
    for (;;) {
        int c = accept4(a.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            coro_promise p = spawn(a.rt, echo_conn, &c, sizeof c);
            check(coro_detach(p), "coro_detach");
        } else if (errno == EAGAIN) {
            if (coro_wait_fd(a.fd, CORO_READABLE, -1) != 0)
                break;
        } else if (errno != EINTR && errno != ECONNABORTED) {
            /* EMFILE and the like: back off a little. */
            coro_sleep_until(coro_now() + 1000000);
        }
    }
    return NULL;
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        perror("cbench: listen");
        exit(1);
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

static coro_runtime *start_server(uint32_t workers, uint16_t *port, int *lfd)
{
    coro_runtime *rt = rt_new(workers);
    *lfd = listen_any(port);
    struct acceptor a = { rt, *lfd };
    check(coro_detach(spawn(rt, acceptor, &a, sizeof a)), "coro_detach");
    return rt;
}

struct client { uint16_t port; uint64_t n; };

static void *echo_client(void *env)
{
    struct client c = *(struct client *)env;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c.port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            perror("cbench: connect");
            abort();
        }
        check(coro_wait_fd(fd, CORO_WRITABLE, -1), "coro_wait_fd");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char out[MSG], back[MSG];
    memset(out, 7, sizeof out);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < c.n; i++) {
        if (write_all(fd, out, MSG) != 0) {
            perror("cbench: client write");
            abort();
        }
        size_t got = 0;
        while (got < MSG) {
            ssize_t k = read(fd, back + got, MSG - got);
            if (k > 0) {
                got += (size_t)k;
            } else if (k < 0 && errno == EAGAIN) {
                check(coro_wait_fd(fd, CORO_READABLE, -1), "coro_wait_fd");
            } else if (!(k < 0 && errno == EINTR)) {
                perror("cbench: client read");
                abort();
            }
        }
    }
    uint64_t dt = now_ns() - t0;
    close(fd);
    return (void *)(uintptr_t)dt;
}

static void echo_rtt(uint64_t iters, int reps, uint32_t workers)
{
    uint16_t port;
    int lfd;
    coro_runtime *rt = start_server(workers, &port, &lfd);
    struct client c = { port, iters };
    double s[64];
    if (reps > 1)
        await_u64(spawn(rt, echo_client, &c, sizeof c));
    for (int r = 0; r < reps; r++)
        s[r] = (double)await_u64(spawn(rt, echo_client, &c, sizeof c)) / (double)iters;
    check(coro_runtime_shutdown(rt), "coro_runtime_shutdown");
    close(lfd);
    report("echo_rtt_coframe_c", iters, s, reps);
}

static void echo_server(uint32_t workers)
{
    uint16_t port;
    int lfd;
    coro_runtime *rt = start_server(workers, &port, &lfd);
    printf("{\"port\":%u}\n", port);
    fflush(stdout);
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
    check(coro_runtime_shutdown(rt), "coro_runtime_shutdown");
    close(lfd);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cbench yield|spawn|echo_rtt|echo_server [--iters N] [--reps R] [--workers W]\n");
        return 2;
    }
    if (getenv("CBENCH_NO_KEEP"))
        keep = 0; /* the waits re-arm the descriptor each time */
    if (getenv("CBENCH_IO"))
        use_io_calls = 1;
    struct bench_args a = bench_args(argc, argv);
    const char *m = argv[1];
    if (!strcmp(m, "yield"))
        run_driver("yield_coframe_c", yield_driver, 2, a.iters, a.reps);
    else if (!strcmp(m, "spawn"))
        run_driver("spawn_coframe_c", spawn_driver, 1, a.iters, a.reps);
    else if (!strcmp(m, "echo_rtt"))
        echo_rtt(a.iters, a.reps, (uint32_t)a.workers);
    else if (!strcmp(m, "echo_server"))
        echo_server((uint32_t)a.workers);
    else {
        fprintf(stderr, "cbench: unknown mode %s\n", m);
        return 2;
    }
    return 0;
}
