/*
 * echo_load.c: a load generator for the echo server, on coframe (the API is
 * in echo.h).
 *
 * One client coroutine per connection. Each connects (coro_connect), then
 * loops: stamp coro_now(), send a fixed-size message (coro_send), read the
 * whole echo back (coro_recv), check every byte, stamp coro_now() again. Requests that
 * complete inside the measuring window go into a latency histogram shared
 * by all clients (log-linear buckets: exact below 1,024 ns, then 512 per
 * power of two, so a percentile is within 0.2%).
 *
 * A client ends when told to stop, or when the server closes or resets
 * its connection (counted, not an error). Its defer closes its socket.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "echo.h"

#define MAX_MSG 4096
#define IO_TIMEOUT_NS (10LL * 1000000000LL) /* a server that stops answering */
#define FAIR_TURNS 16

/* Histogram: index of a latency in ns. */
#define SUB_BITS 9
#define SUB (1 << SUB_BITS)
#define EXACT 1024 /* 2^10 */
#define OCTAVES 32 /* up to 2^42 ns */
#define BUCKETS (EXACT + OCTAVES * SUB)

static int bucket_of(uint64_t ns)
{
    if (ns < EXACT)
        return (int)ns;
    int e = 63 - __builtin_clzll(ns); /* >= 10 */
    if (e - 10 >= OCTAVES)
        return BUCKETS - 1;
    int sub = (int)((ns >> (e - SUB_BITS)) & (SUB - 1));
    return EXACT + (e - 10) * SUB + sub;
}

/* The middle of bucket `b`, in ns. */
static double bucket_value(int b)
{
    if (b < EXACT)
        return b;
    int e = (b - EXACT) / SUB + 10;
    int sub = (b - EXACT) % SUB;
    double lo = (double)(1ULL << e) + (double)sub * (double)(1ULL << (e - SUB_BITS));
    return lo + (double)(1ULL << (e - SUB_BITS)) / 2;
}

struct echo_load {
    coro_runtime *rt;
    echo_load_config cfg;
    struct sockaddr_in addr;
    coro_promise *promises;
    int spawned;
    atomic_int stop;
    _Atomic int64_t window_start, window_end; /* coro_now() ns; start INT64_MAX: not recording */
    atomic_long connected, connect_failed, settled, requests, requests_total, ended_by_server,
        errors, open;
    _Atomic uint64_t hist[BUCKETS];
};

/* A client coroutine's environment. */
struct client_env {
    echo_load *l;
    int id;
    int fd;
};

static void client_cleanup(void *arg)
{
    struct client_env *c = arg;
    if (c->fd < 0)
        return;
    close(c->fd);
    c->fd = -1;
    atomic_fetch_sub(&c->l->open, 1);
}

static void *client_main(void *envp)
{
    struct client_env *c = envp;
    echo_load *l = c->l;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd >= 0) {
        atomic_fetch_add(&l->open, 1);
        (void)coro_defer(client_cleanup, c); /* env_drop closes it too, if this failed */
    }
    if (c->fd < 0 || coro_connect(c->fd, (struct sockaddr *)&l->addr, sizeof l->addr,
                                  coro_now() + IO_TIMEOUT_NS) != CORO_OK) {
        atomic_fetch_add(&l->connect_failed, 1);
        atomic_fetch_add(&l->settled, 1);
        return NULL;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&l->connected, 1);
    atomic_fetch_add(&l->settled, 1);

    size_t n = (size_t)l->cfg.msg_size;
    char out[MAX_MSG], in[MAX_MSG];
    uint64_t seq = 0;
    int turns = 0;
    while (!atomic_load_explicit(&l->stop, memory_order_relaxed)) {
        /* A message nobody else sends: client id, sequence, filler. */
        memset(out, 'a' + (int)(seq % 26), n);
        memcpy(out, &c->id, n < sizeof c->id ? n : sizeof c->id);
        if (n >= sizeof c->id + sizeof seq)
            memcpy(out + sizeof c->id, &seq, sizeof seq);
        seq++;

        int64_t t0 = coro_now();
        int rc = coro_send(c->fd, out, n, 0, NULL, t0 + IO_TIMEOUT_NS);
        if (rc == CORO_OK)
            rc = coro_recv(c->fd, in, n, 0, NULL, t0 + IO_TIMEOUT_NS);
        if (rc == CORO_EIO && echo_peer_gone(errno)) {
            atomic_fetch_add(&l->ended_by_server, 1);
            break;
        }
        if (rc != CORO_OK || memcmp(in, out, n) != 0) {
            atomic_fetch_add(&l->errors, 1);
            break;
        }
        int64_t t1 = coro_now();
        atomic_fetch_add_explicit(&l->requests_total, 1, memory_order_relaxed);
        if (t1 >= atomic_load_explicit(&l->window_start, memory_order_relaxed) &&
            t1 <= atomic_load_explicit(&l->window_end, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&l->requests, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&l->hist[bucket_of((uint64_t)(t1 - t0))], 1,
                                      memory_order_relaxed);
        }
        /* An echo that is always there at once would starve this worker's
         * other clients. */
        if (++turns >= FAIR_TURNS) {
            turns = 0;
            (void)coro_yield();
        }
    }
    return NULL;
}

int echo_load_start(coro_runtime *rt, const echo_load_config *cfg, echo_load **out)
{
    if (cfg->connections < 1 || cfg->msg_size < 1 || cfg->msg_size > MAX_MSG)
        return CORO_EINVAL;
    echo_load *l = calloc(1, sizeof *l);
    if (!l)
        return CORO_ENOMEM;
    l->rt = rt;
    l->cfg = *cfg;
    l->addr.sin_family = AF_INET;
    l->addr.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->addr, &l->addr.sin_addr) != 1) {
        free(l);
        return CORO_EINVAL;
    }
    atomic_store(&l->window_start, INT64_MAX);
    atomic_store(&l->window_end, INT64_MAX);
    l->promises = calloc((size_t)cfg->connections, sizeof *l->promises);
    if (!l->promises) {
        free(l);
        return CORO_ENOMEM;
    }
    for (int i = 0; i < cfg->connections; i++) {
        struct client_env env = { l, i, -1 };
        int rc = coro_spawn(rt, client_main, &env, sizeof env, client_cleanup, 0, &l->promises[i]);
        if (rc != CORO_OK) {
            atomic_store(&l->stop, 1);
            for (int j = 0; j < l->spawned; j++)
                (void)coro_await(l->promises[j], NULL);
            free(l->promises);
            free(l);
            return rc;
        }
        l->spawned++;
    }
    *out = l;
    return CORO_OK;
}

static double secs_now(void)
{
    return (double)coro_now() * 1e-9;
}

long echo_load_wait_connected(echo_load *l, double timeout_s)
{
    double end = secs_now() + timeout_s;
    while (atomic_load(&l->settled) < l->spawned && secs_now() < end)
        usleep(1000);
    return atomic_load(&l->connected);
}

void echo_load_measure(echo_load *l, double seconds)
{
    int64_t start = coro_now();
    int64_t end = start + (int64_t)(seconds * 1e9);
    atomic_store(&l->window_end, end);
    atomic_store(&l->window_start, start);
    (void)coro_sleep_until(end); /* a plain thread: this blocks it */
    /* A client that stamped its request before `end` adds it right after. */
    (void)coro_sleep_until(coro_now() + 20 * 1000000LL);
}

void echo_load_stop(echo_load *l)
{
    atomic_store(&l->stop, 1);
    for (int i = 0; i < l->spawned; i++) {
        int rc = coro_await(l->promises[i], NULL);
        if (rc != CORO_OK) {
            fprintf(stderr, "echo_load: client %d: coro_await: %s\n", i, coro_strerror(rc));
            atomic_fetch_add(&l->errors, 1);
        }
    }
    l->spawned = 0;
}

void echo_load_get_stats(echo_load *l, echo_load_stats *o)
{
    memset(o, 0, sizeof *o);
    o->connected = atomic_load(&l->connected);
    o->connect_failed = atomic_load(&l->connect_failed);
    o->requests = atomic_load(&l->requests);
    o->requests_total = atomic_load(&l->requests_total);
    o->ended_by_server = atomic_load(&l->ended_by_server);
    o->errors = atomic_load(&l->errors);
    o->open = atomic_load(&l->open);
    int64_t s = atomic_load(&l->window_start), e = atomic_load(&l->window_end);
    o->window_s = s == INT64_MAX ? 0 : (double)(e - s) * 1e-9;

    uint64_t total = 0;
    for (int b = 0; b < BUCKETS; b++)
        total += atomic_load(&l->hist[b]);
    if (total == 0)
        return;
    uint64_t want50 = (total + 1) / 2, want99 = total - total / 100, seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
        uint64_t h = atomic_load(&l->hist[b]);
        if (!h)
            continue;
        if (seen < want50 && seen + h >= want50)
            o->p50_us = bucket_value(b) / 1000.0;
        if (seen < want99 && seen + h >= want99)
            o->p99_us = bucket_value(b) / 1000.0;
        seen += h;
        o->max_us = bucket_value(b) / 1000.0;
    }
}

void echo_load_free(echo_load *l)
{
    if (!l)
        return;
    free(l->promises);
    free(l);
}
