/*
 * echo_demo.c: a TCP echo server and 1,000 clients, all coroutines, then
 * every server connection cancelled while the clients are still sending.
 *
 * Two runtimes in one process: the server's (echo_server.c: an accept-loop
 * coroutine and one coroutine per connection) and the clients'
 * (echo_load.c: one coroutine per client connection). Each has its own
 * workers, each polling its own epoll; they talk over loopback TCP.
 *
 *   1. the server listens on 127.0.0.1, port 0 (the kernel picks one)
 *   2. the clients connect, then send 64-byte requests and wait for each
 *      echo for a fixed time: requests per second, p50 and p99 latency
 *   3. mid-flight, coro_cancel_async on every connection coroutine the
 *      server kept: each one's defer closes its socket
 *   4. clients stopped, listener closed, runtimes shut down: the open
 *      descriptors (/proc/self/fd) and coro_live_frames() must be what
 *      they were before the server started
 *
 * usage: echo_demo [connections [seconds]]     (default 1000 connections, 3 s)
 * Exits non-zero if a descriptor or a frame leaked, or anything failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "echo.h"

#define MSG_SIZE 64

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
    return (double)coro_now() * 1e-9;
}

/* Descriptors open in this process (not counting the directory's own). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* On a leak: what the descriptors are. */
static void list_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        printf("    fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

/* 1,000 server sockets and 1,000 client sockets must fit under the soft limit. */
static int raise_fd_limit(int connections)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)connections * 2 + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return connections;
    if (rl.rlim_cur < need) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) == 0)
            printf("raised the open-file soft limit from %llu to %llu (the hard limit)\n",
                   (unsigned long long)old, (unsigned long long)rl.rlim_cur);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
            int fit = (int)((rl.rlim_cur - 64) / 2);
            printf("the open-file limit is %llu: using %d connections instead of %d\n",
                   (unsigned long long)rl.rlim_cur, fit, connections);
            return fit;
        }
    }
    return connections;
}

static coro_runtime *new_runtime(const char *what)
{
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = 0 };
    coro_runtime *rt = NULL;
    int rc = coro_runtime_new(&cfg, &rt);
    if (rc != CORO_OK) {
        printf("coro_runtime_new (%s): %s\n", what, coro_strerror(rc));
        exit(1);
    }
    return rt;
}

int main(int argc, char **argv)
{
    int connections = argc > 1 ? atoi(argv[1]) : 1000;
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    if (connections < 1 || seconds <= 0) {
        fprintf(stderr, "usage: %s [connections [seconds]]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* the sockets use MSG_NOSIGNAL; this is belt and braces */
    connections = raise_fd_limit(connections);

    int fds_before = count_fds();
    uint64_t frames_before = coro_live_frames();
    printf("before the server starts: %d open descriptors, %llu live frames\n", fds_before,
           (unsigned long long)frames_before);

    /* 1. The server, on its own runtime (one worker, which polls its epoll). */
    coro_runtime *srv_rt = new_runtime("server");
    echo_server *srv = NULL;
    int rc = echo_server_start(srv_rt, "127.0.0.1", 0, 1, &srv);
    if (rc != 0) {
        printf("echo_server_start: %s\n", rc == -1 ? strerror(errno) : coro_strerror(rc));
        return 1;
    }
    printf("echo server listening on 127.0.0.1:%d (server runtime: 1 worker)\n",
           echo_server_port(srv));

    /* 2. The clients, on a second runtime. */
    coro_runtime *cli_rt = new_runtime("clients");
    echo_load_config lc = { "127.0.0.1", echo_server_port(srv), connections, MSG_SIZE };
    echo_load *load = NULL;
    double t0 = now();
    rc = echo_load_start(cli_rt, &lc, &load);
    if (rc != CORO_OK) {
        printf("echo_load_start: %s\n", coro_strerror(rc));
        return 1;
    }
    long connected = echo_load_wait_connected(load, 20.0);
    echo_server_stats ss;
    echo_server_get_stats(srv, &ss);
    printf("%ld client coroutines connected in %.0f ms (client runtime: 1 worker); "
           "the server accepted %ld\n",
           connected, (now() - t0) * 1e3, ss.accepted);
    expect(connected == connections, "every client should connect");

    echo_load_measure(load, seconds);
    echo_load_stats ls;
    echo_load_get_stats(load, &ls);
    printf("\nfor %.1f s, %ld connections each sent %d-byte requests and waited for the echo:\n",
           ls.window_s, connected, MSG_SIZE);
    printf("  requests completed   %ld\n", ls.requests);
    printf("  requests per second  %.0f\n", ls.window_s > 0 ? (double)ls.requests / ls.window_s : 0);
    printf("  latency p50          %.0f us\n", ls.p50_us);
    printf("  latency p99          %.0f us\n", ls.p99_us);
    expect(ls.requests > 0, "requests should complete");
    expect(ls.errors == 0, "no client should see a wrong echo or a timeout");

    /* 3. Mid-flight: the clients are still sending. */
    long sent_a = ls.requests_total;
    usleep(100 * 1000);
    echo_load_get_stats(load, &ls);
    long in_flight_rate = ls.requests_total - sent_a;
    echo_server_get_stats(srv, &ss);
    printf("\nthe clients are still sending (%ld requests in the last 100 ms); the server has "
           "%ld connection coroutines\n",
           in_flight_rate, ss.open);
    expect(in_flight_rate > 0, "the clients should still be sending");
    long closed_before = ss.closed;
    double tc = now();
    long cancelled = echo_server_cancel_connections(srv);
    double cancel_ms = (now() - tc) * 1e3;
    /* A coroutine that was running when cancelled acts at its next
     * suspension point: wait for those few. */
    double end = now() + 10.0;
    for (;;) {
        echo_server_get_stats(srv, &ss);
        if (ss.closed_cancelled >= cancelled || now() >= end)
            break;
        usleep(1000);
    }
    printf("coro_cancel_async on every connection coroutine the server kept: %ld cancelled "
           "in %.1f ms\n",
           cancelled, cancel_ms);
    printf("their defers ran: %ld sockets closed by cancelled coroutines (closed fds %s "
           "cancelled); %ld server sockets still open\n",
           ss.closed_cancelled, ss.closed_cancelled == cancelled ? "==" : "!=", ss.open);
    expect(cancelled == connected, "every connection coroutine should be cancelled");
    expect(ss.closed_cancelled == cancelled, "every cancelled coroutine's defer should run once");
    expect(ss.closed - closed_before == cancelled, "no other connection should have closed");
    expect(ss.open == 0, "no server socket should stay open");

    /* Every client finds its connection closed (EOF, or ECONNRESET when the
     * server's socket closed with a request unread) at its next read. */
    end = now() + 10.0;
    for (;;) {
        echo_load_get_stats(load, &ls);
        if (ls.ended_by_server + ls.errors >= connected || now() >= end)
            break;
        usleep(1000);
    }
    printf("the clients saw the server close their connections: %ld of %ld client coroutines "
           "ended that way\n",
           ls.ended_by_server, connected);
    expect(ls.ended_by_server == connected, "every client should see its connection end");

    /* 4. Stop everything. */
    echo_load_stop(load);
    echo_load_get_stats(load, &ls);
    printf("\nclients stopped: %ld client sockets still open\n", ls.open);
    expect(ls.open == 0, "every client socket should be closed");
    expect(ls.errors == 0, "no client should fail");
    echo_server_stop(srv); /* cancels the accept loop: its defer closes the listener */
    expect(coro_runtime_shutdown(cli_rt) == CORO_OK, "client runtime shutdown");
    expect(coro_runtime_shutdown(srv_rt) == CORO_OK, "server runtime shutdown");
    echo_server_get_stats(srv, &ss);
    echo_server_free(srv);
    echo_load_free(load);

    int fds_after = count_fds();
    uint64_t frames_after = coro_live_frames();
    printf("\nafter: clients closed, listener closed, both runtimes shut down\n");
    printf("  open descriptors  %d before, %d after: %s\n", fds_before, fds_after,
           fds_after == fds_before ? "no descriptor leaked" : "LEAKED");
    printf("  live frames       %llu before, %llu after: %s\n",
           (unsigned long long)frames_before, (unsigned long long)frames_after,
           frames_after == frames_before ? "no frame leaked" : "LEAKED");
    if (fds_after != fds_before) {
        printf("  the descriptors open now (the listing's own directory included):\n");
        list_fds();
    }
    expect(fds_after == fds_before, "descriptors leaked");
    expect(frames_after == frames_before, "frames leaked");
    expect(ss.emfile == 0 && ss.spawn_failures == 0, "the server should not run out of anything");

    printf("\n%s\n", failures ? "echo_demo: something went wrong (see !! above)"
                              : "echo_demo: all as promised");
    return failures ? 1 : 0;
}
