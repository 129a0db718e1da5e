/*
 * libuv, the event loop a C program would otherwise pick for its I/O: the
 * same two echo benches as cbench, written the way libuv is meant to be
 * used (callbacks on a loop, one loop per thread).
 *
 *   uvbench echo_rtt    [--iters N] [--reps R]
 *                       one connection, 64-byte message out and back; the
 *                       client and the server share one loop thread
 *   uvbench echo_server [--workers W]   prints {"port":P}, echoes until
 *                       stdin closes; W threads, each with its own loop and
 *                       its own listening socket on the same port
 *                       (SO_REUSEPORT: the kernel spreads the connections)
 *
 * Each prints one JSON line, as cbench does. A connection reads into its
 * own 4 KiB buffer and writes back with uv_try_write, falling back to
 * uv_write (with a copy) only for what the socket did not take.
 */
#define _GNU_SOURCE
#include <uv.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../c/bench.h"

#define MSG 64
#define BUF 4096

static void die(const char *what, int rc)
{
    fprintf(stderr, "uvbench: %s: %s\n", what, rc ? uv_strerror(rc) : "failed");
    exit(1);
}

static void check(int rc, const char *what)
{
    if (rc != 0)
        die(what, rc);
}

/* ------------------------------------------------------------ server side */

struct conn {
    uv_tcp_t tcp;
    char buf[BUF];
};

struct pending_write {
    uv_write_t req;
    char data[];
};

static void free_conn(uv_handle_t *h)
{
    free(h->data);
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    (void)hint;
    struct conn *c = h->data;
    *out = uv_buf_init(c->buf, BUF);
}

static void write_done(uv_write_t *req, int status)
{
    (void)status;
    free(req->data);
}

/* Writes what the socket takes now; queues a copy of the rest. */
static int write_back(uv_stream_t *s, const char *p, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int k = uv_try_write(s, &b, 1);
    if (k == (int)len)
        return 0;
    if (k < 0 && k != UV_EAGAIN)
        return k;
    size_t done = k > 0 ? (size_t)k : 0;
    struct pending_write *w = malloc(sizeof *w + len - done);
    if (!w)
        return UV_ENOMEM;
    memcpy(w->data, p + done, len - done);
    w->req.data = w;
    b = uv_buf_init(w->data, (unsigned)(len - done));
    return uv_write(&w->req, s, &b, 1, write_done);
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        if (write_back(s, buf->base, (size_t)n) == 0)
            return;
    } else if (n == 0) {
        return;
    }
    uv_close((uv_handle_t *)s, free_conn);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct conn *c = malloc(sizeof *c);
    if (!c)
        return;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_conn);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

/* A listening socket on 127.0.0.1:port (0: any) with SO_REUSEPORT, so
 * that every loop thread can have its own on the same port. */
static int listen_socket(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(*port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("uvbench: listen");
        exit(1);
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

struct server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop;
    pthread_t thread;
};

static void on_stop(uv_async_t *a)
{
    uv_stop(a->loop);
}

static void server_init(struct server *s, int fd)
{
    check(uv_loop_init(&s->loop), "uv_loop_init");
    check(uv_tcp_init(&s->loop, &s->listener), "uv_tcp_init");
    check(uv_tcp_open(&s->listener, fd), "uv_tcp_open");
    check(uv_listen((uv_stream_t *)&s->listener, 4096, on_connection), "uv_listen");
    check(uv_async_init(&s->loop, &s->stop, on_stop), "uv_async_init");
}

static void *server_thread(void *arg)
{
    struct server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void echo_server(int workers)
{
    if (workers < 1)
        workers = 1;
    struct server *s = calloc((size_t)workers, sizeof *s);
    uint16_t port = 0;
    for (int i = 0; i < workers; i++)
        server_init(&s[i], listen_socket(&port));
    for (int i = 0; i < workers; i++)
        if (pthread_create(&s[i].thread, NULL, server_thread, &s[i]) != 0)
            die("pthread_create", 0);
    printf("{\"port\":%u}\n", port);
    fflush(stdout);
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
    for (int i = 0; i < workers; i++) {
        uv_async_send(&s[i].stop);
        pthread_join(s[i].thread, NULL);
    }
    /* The process exits: its loops and connections go with it. */
}

/* ------------------------------------------------------------ client side */

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uint64_t n, done;
    size_t got;
    char out[MSG], back[MSG];
    uint64_t t0, dt;
};

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    (void)hint;
    struct client *c = h->data;
    *out = uv_buf_init(c->back + c->got, (unsigned)(MSG - c->got));
}

static void client_send(struct client *c)
{
    check(write_back((uv_stream_t *)&c->tcp, c->out, MSG), "client write");
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct client *c = s->data;
    if (n < 0)
        die("client read", (int)n);
    c->got += (size_t)n;
    if (c->got < MSG)
        return;
    c->got = 0;
    if (++c->done < c->n) {
        client_send(c);
        return;
    }
    c->dt = now_ns() - c->t0;
    uv_close((uv_handle_t *)s, NULL);
}

static void client_connected(uv_connect_t *req, int status)
{
    check(status, "connect");
    struct client *c = req->data;
    uv_tcp_nodelay(&c->tcp, 1);
    check(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), "uv_read_start");
    c->t0 = now_ns();
    client_send(c);
}

/* One connection's n round trips on `loop`, which also runs the server. */
static uint64_t run_client(uv_loop_t *loop, uint16_t port, uint64_t n)
{
    struct client c = { .n = n };
    memset(c.out, 7, sizeof c.out);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    check(uv_tcp_init(loop, &c.tcp), "uv_tcp_init");
    c.tcp.data = &c;
    c.connect.data = &c;
    check(uv_tcp_connect(&c.connect, &c.tcp, (struct sockaddr *)&sa, client_connected), "uv_tcp_connect");
    while (!c.dt)
        uv_run(loop, UV_RUN_ONCE);
    /* Let the close callbacks of both ends run. */
    uv_run(loop, UV_RUN_NOWAIT);
    return c.dt;
}

static void echo_rtt(uint64_t iters, int reps)
{
    struct server s;
    uint16_t port = 0;
    server_init(&s, listen_socket(&port));
    double samples[64];
    if (reps > 1)
        run_client(&s.loop, port, iters);
    for (int r = 0; r < reps; r++)
        samples[r] = (double)run_client(&s.loop, port, iters) / (double)iters;
    report("echo_rtt_libuv", iters, samples, reps);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: uvbench echo_rtt|echo_server [--iters N] [--reps R] [--workers W]\n");
        return 2;
    }
    struct bench_args a = bench_args(argc, argv);
    if (!strcmp(argv[1], "echo_rtt"))
        echo_rtt(a.iters, a.reps);
    else if (!strcmp(argv[1], "echo_server"))
        echo_server(a.workers);
    else {
        fprintf(stderr, "uvbench: unknown mode %s\n", argv[1]);
        return 2;
    }
    return 0;
}
