/*
 * echo_server_main.c: the echo server (echo_server.c) as a program.
 *
 *   echo_server [port [address]]    default: an ephemeral port on 127.0.0.1
 *
 * Serves until SIGINT or SIGTERM, then stops the accept loop, cancels every
 * connection coroutine (their defers close the sockets), shuts the runtime
 * down and prints what it did. Try it with `nc 127.0.0.1 PORT`.
 *
 * SIGUSR1 prints coro_dump's list of the coroutines to stdout: the
 * acceptor waiting for its listening socket, each connection waiting for
 * its socket, with backtraces when run with COFRAME_CHECK=1:
 *
 *   COFRAME_CHECK=1 build/echo_server 7000 &
 *   kill -USR1 %1
 *
 * The signals are taken by sigwait on the main thread, not by a handler:
 * coro_dump is not async-signal-safe, and a thread that waits for the
 * signal is the usual way to act on one with ordinary code (a handler
 * would only set a flag or write to a pipe for such a thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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
    sigaddset(&stop, SIGUSR1);
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
    printf("echo_server: listening on %s:%d (Ctrl-C to stop, SIGUSR1 to list the coroutines; "
           "pid %ld)\n",
           addr, echo_server_port(srv), (long)getpid());

    int sig = 0;
    for (;;) {
        if (sigwait(&stop, &sig) != 0)
            continue;
        if (sig != SIGUSR1)
            break;
        /* A plain thread, not a handler: the dump may take locks. */
        fflush(stdout);
        rc = coro_dump(rt, STDOUT_FILENO);
        if (rc != CORO_OK)
            fprintf(stderr, "coro_dump: %s (%s)\n", coro_strerror(rc), strerror(errno));
    }
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
