/*
 * echo_server_main.c: the echo server (echo_server.c) as a program.
 *
 *   echo_server [port [address]]    default: an ephemeral port on 127.0.0.1
 *
 * Serves until SIGINT or SIGTERM, then stops the accept loop, cancels every
 * connection coroutine (their defers close the sockets), shuts the runtime
 * down and prints what it did. Try it with `nc 127.0.0.1 PORT`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "echo.h"

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    const char *addr = argc > 2 ? argv[2] : "127.0.0.1";
    if (port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s [port [address]]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Every thread the runtime starts inherits this mask, so the signals
     * reach only sigwait below. SIGPIPE cannot happen (MSG_NOSIGNAL) but is
     * ignored anyway. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* as many connections as we may have */
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    coro_runtime *rt = NULL;
    int rc = coro_runtime_new(NULL, &rt);
    if (rc != CORO_OK) {
        fprintf(stderr, "coro_runtime_new: %s\n", coro_strerror(rc));
        return 1;
    }
    echo_server *srv = NULL;
    rc = echo_server_start(rt, addr, port, 0, &srv);
    if (rc != 0) {
        fprintf(stderr, "echo_server_start: %s\n",
                rc == -1 ? strerror(errno) : coro_strerror(rc));
        coro_runtime_shutdown(rt);
        return 1;
    }
    printf("echo_server: listening on %s:%d (Ctrl-C to stop)\n", addr, echo_server_port(srv));

    int sig = 0;
    sigwait(&stop, &sig);
    printf("echo_server: %s: shutting down\n", strsignal(sig));

    echo_server_stop(srv);
    rc = coro_runtime_shutdown(rt);
    echo_server_stats st;
    echo_server_get_stats(srv, &st);
    printf("echo_server: %ld connections accepted, %ld bytes echoed, %ld closed "
           "(%ld of them by the shutdown), %ld ended by a reset, %ld by an error, "
           "accept hit EMFILE/ENFILE %ld times; %ld sockets left open\n",
           st.accepted, st.bytes, st.closed, st.closed_cancelled, st.resets, st.errors, st.emfile,
           st.open);
    echo_server_free(srv);
    if (rc != CORO_OK) {
        fprintf(stderr, "coro_runtime_shutdown: %s\n", coro_strerror(rc));
        return 1;
    }
    return st.open == 0 ? 0 : 1;
}
