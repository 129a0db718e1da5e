/*
 * echo.h: a TCP echo server and a load generator for it, both built on
 * coframe's coroutines and poller.
 *
 * The server (echo_server.c) runs one coroutine per connection and one for
 * the accept loop, on a runtime the caller owns. It keeps every connection
 * coroutine's promise, so echo_server_cancel_connections() can cancel them
 * all with coro_cancel_async; each connection's defer closes its socket.
 *
 * The load generator (echo_load.c) runs one client coroutine per
 * connection, each sending fixed-size messages and waiting for the echo,
 * and records every request's latency with coro_now().
 *
 * Threads: every function here is called from a plain thread (not from a
 * coroutine, not from a defer). The stats may be read at any time.
 */
#ifndef COFRAME_ECHO_H
#define COFRAME_ECHO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <coframe.h>

/* Whether a socket call's errno (after CORO_EIO) says the peer closed or
 * reset the connection: an ending, counted, not an error. */
static inline int echo_peer_gone(int err)
{
    return err == ECONNRESET || err == EPIPE;
}

/* ------------------------------------------------------------------ */
/* The server                                                          */

typedef struct echo_server echo_server;

typedef struct echo_server_stats {
    long accepted;          /* connections accepted */
    long open;              /* connection sockets open now */
    long closed;            /* connection sockets closed (by a defer or env_drop) */
    long closed_cancelled;  /* ... of which closed because the coroutine was cancelled */
    long cancelled;         /* coro_cancel_async calls that returned 0 */
    long bytes;             /* bytes echoed */
    long resets;            /* connections ended by ECONNRESET / EPIPE */
    long errors;            /* connections ended by another socket error */
    long emfile;            /* accept failed with EMFILE or ENFILE (then backed off) */
    long spawn_failures;    /* coro_spawn failed (the socket was closed) */
} echo_server_stats;

/*
 * Binds `addr`:`port` (IPv4 dotted quad; port 0 picks a free one), listens
 * and spawns the accept loop on `rt`. Returns 0, or -1 with errno set (a
 * socket call failed) or a negative CORO_E* code (coro_spawn failed).
 * `quiet` silences the server's log lines on stderr.
 */
int echo_server_start(coro_runtime *rt, const char *addr, int port, int quiet,
                      echo_server **out);

/* The port the server listens on. */
int echo_server_port(const echo_server *s);

void echo_server_get_stats(echo_server *s, echo_server_stats *out);

/*
 * Cancels every live connection coroutine (coro_cancel_async on the promise
 * the server kept). Returns how many were cancelled. Their defers close the
 * sockets: at once for a suspended coroutine, at its next suspension point
 * for a running one (watch stats.closed_cancelled).
 */
long echo_server_cancel_connections(echo_server *s);

/*
 * Stops the accept loop (cancelling it closes the listener) and cancels
 * the remaining connections. The server stays allocated (its stats can
 * still be read) until echo_server_free.
 */
void echo_server_stop(echo_server *s);

/* Frees a stopped server. Call after coro_runtime_shutdown of its runtime. */
void echo_server_free(echo_server *s);

/* ------------------------------------------------------------------ */
/* The load generator                                                  */

typedef struct echo_load echo_load;

typedef struct echo_load_config {
    const char *addr;  /* the server, IPv4 dotted quad */
    int port;
    int connections;   /* client coroutines, one connection each */
    int msg_size;      /* bytes per request (1..4096) */
} echo_load_config;

typedef struct echo_load_stats {
    long connected;       /* clients that connected */
    long connect_failed;  /* clients whose connect failed */
    long requests;        /* requests completed inside the measuring window */
    long requests_total;  /* requests completed, ever */
    long ended_by_server; /* clients whose server side closed or reset */
    long errors;          /* other failures (short echo, wrong bytes, ...) */
    long open;            /* client sockets open now */
    double window_s;      /* length of the measuring window */
    double p50_us, p99_us, max_us; /* latency in the window, microseconds */
} echo_load_stats;

/* Spawns the client coroutines on `rt`; they connect and start sending. */
int echo_load_start(coro_runtime *rt, const echo_load_config *cfg, echo_load **out);

/* Waits (up to `timeout_s`) until every client connected or failed to.
 * Returns the number connected. */
long echo_load_wait_connected(echo_load *l, double timeout_s);

/* Records latencies for `seconds` (the calling thread sleeps meanwhile).
 * The clients keep sending after the window closes. */
void echo_load_measure(echo_load *l, double seconds);

/* Tells the clients to stop and awaits every one of them (their defers
 * close their sockets). Call at most once. */
void echo_load_stop(echo_load *l);

/* Counts and the latency percentiles of the measuring window. */
void echo_load_get_stats(echo_load *l, echo_load_stats *out);

void echo_load_free(echo_load *l);

#endif /* COFRAME_ECHO_H */
