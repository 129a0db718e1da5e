/*
 * echo_server.c: a TCP echo server on coframe (the API is in echo.h; the
 * standalone program is echo_server_main.c).
 *
 *   the accept loop   one coroutine: coro_accept(listener), which suspends
 *                     while no connection waits. When it fails with
 *                     EMFILE/ENFILE it backs off with coro_sleep_until
 *                     (5 ms) and tries again, while the connections it has
 *                     keep being served. Its defer closes the listener.
 *   a connection      one coroutine per socket: coro_recv(CORO_IO_SOME)
 *                     takes what came (suspending while nothing did), and
 *                     coro_send sends all of it (suspending while the
 *                     socket is full). CORO_KEEP leaves the socket
 *                     registered with the worker's epoll between the
 *                     reads' waits (no epoll_ctl per wait). Its defer
 *                     forgets the socket (coro_fd_forget) before it closes
 *                     it, and counts it. A peer that resets (ECONNRESET,
 *                     EPIPE) just ends the connection; coro_send raises no
 *                     SIGPIPE.
 *
 * The server keeps each connection coroutine's promise in a slot table, so
 * that echo_server_cancel_connections() can cancel them all. A promise is
 * consumed exactly once, under the table's mutex: by that cancel, or, when
 * the connection ends by itself, by its defer, which detaches it (the frame
 * is then freed as soon as it finishes).
 *
 * Cleanup runs from the defer, and also from env_drop: a coroutine
 * cancelled before it first ran never runs its body (so never registered
 * its defer), but its env_drop still runs. Whichever runs first closes the
 * socket; the other sees fd == -1 and does nothing.
 *
 * The table's mutex is only held for a few instructions and never across a
 * suspension (DESIGN.md section 5), and never while calling into coframe:
 * cancelling a suspended coroutine runs its defer on the cancelling thread,
 * and that defer takes the mutex.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo.h"

#define BACKOFF_NS (5 * 1000000LL) /* after EMFILE/ENFILE */
#define BUF_SIZE 4096
#define FAIR_TURNS 16 /* reads or accepts in a row before coro_yield */

enum slot_state {
    SLOT_FREE,
    SLOT_STARTING,   /* the accept loop is spawning it; no promise stored yet */
    SLOT_LIVE,       /* promise stored: the defer or a cancel will consume it */
    SLOT_FINISHED,   /* ended before the accept loop stored the promise */
    SLOT_CANCELLING, /* a cancel took the promise */
};

struct conn_slot {
    coro_promise promise;
    int state;
    int next_free;
};

struct echo_server {
    coro_runtime *rt;
    atomic_int lfd; /* the listener; -1 once closed */
    int port;
    int quiet;
    coro_promise accept_promise;
    int accept_spawned;
    atomic_int accept_done; /* the accept loop's cleanup ran */

    pthread_mutex_t mu; /* guards the slot table */
    struct conn_slot *slots;
    int cap;
    int free_head;

    atomic_long accepted, open, closed, closed_cancelled, cancelled, bytes, resets, errors, emfile,
        spawn_failures;
};

/* A connection coroutine's environment (the frame's own copy). */
struct conn_env {
    echo_server *s;
    int fd;
    int slot;
};

/* The accept loop's environment. */
struct accept_env {
    echo_server *s;
};

static void say(echo_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A log line on stderr, unless the server is quiet. */
static void say(echo_server *s, const char *fmt, ...)
{
    if (s->quiet)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "echo_server: %s\n", line);
}

/* ------------------------------------------------------------------ */
/* The slot table                                                      */

/* Takes a free slot (growing the table), marked SLOT_STARTING; -1 if out of memory. */
static int slot_alloc(echo_server *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->free_head < 0) {
        int cap = s->cap ? s->cap * 2 : 256;
        struct conn_slot *n = realloc(s->slots, (size_t)cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        for (int i = cap - 1; i >= s->cap; i--) {
            n[i].state = SLOT_FREE;
            n[i].promise.id = 0;
            n[i].next_free = s->free_head;
            s->free_head = i;
        }
        s->slots = n;
        s->cap = cap;
    }
    int i = s->free_head;
    s->free_head = s->slots[i].next_free;
    s->slots[i].state = SLOT_STARTING;
    s->slots[i].promise.id = 0;
    pthread_mutex_unlock(&s->mu);
    return i;
}

/* Caller holds mu. */
static void slot_release_locked(echo_server *s, int i)
{
    s->slots[i].state = SLOT_FREE;
    s->slots[i].promise.id = 0;
    s->slots[i].next_free = s->free_head;
    s->free_head = i;
}

/* ------------------------------------------------------------------ */
/* A connection                                                        */

/* The connection's defer, and its env_drop: closes the socket once. */
static void conn_cleanup(void *arg)
{
    struct conn_env *c = arg;
    if (c->fd < 0)
        return; /* the defer already ran; this is env_drop */
    echo_server *s = c->s;
    /* Kept by its waits: forget before close. env_drop may run when no
     * wait ever kept it; forgetting is harmless then. */
    (void)coro_fd_forget(c->fd);
    close(c->fd);
    c->fd = -1;
    atomic_fetch_sub(&s->open, 1);
    atomic_fetch_add(&s->closed, 1);

    coro_promise to_detach = { 0 };
    pthread_mutex_lock(&s->mu);
    struct conn_slot *sl = &s->slots[c->slot];
    switch (sl->state) {
    case SLOT_LIVE: /* ended by itself: nobody else will consume the promise */
        to_detach = sl->promise;
        slot_release_locked(s, c->slot);
        break;
    case SLOT_STARTING: /* the accept loop has not stored the promise yet */
        sl->state = SLOT_FINISHED;
        break;
    case SLOT_CANCELLING: /* a cancel consumed the promise */
        atomic_fetch_add(&s->closed_cancelled, 1);
        slot_release_locked(s, c->slot);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&s->mu);
    /* The frame is being finalized: detaching lets it be freed right after.
     * During coro_runtime_shutdown the promise may already be stale. */
    if (to_detach.id)
        (void)coro_detach(to_detach);
}

static void *conn_main(void *envp)
{
    struct conn_env *c = envp;
    echo_server *s = c->s;
    /* If this fails (CORO_ENOMEM), env_drop still closes the socket. */
    (void)coro_defer(conn_cleanup, c);
    char buf[BUF_SIZE];
    int turns = 0;
    for (;;) {
        size_t n = 0;
        int rc = coro_recv(c->fd, buf, sizeof buf, CORO_IO_SOME | CORO_KEEP, &n, -1);
        if (rc == CORO_OK && n == 0)
            break; /* the peer closed */
        if (rc == CORO_OK)
            rc = coro_send(c->fd, buf, n, 0, NULL, -1);
        if (rc != CORO_OK) {
            int gone = rc == CORO_EIO && echo_peer_gone(errno);
            if (rc != CORO_EIO) /* the library's, not the socket's */
                say(s, "connection: %s (%d)", coro_strerror(rc), rc);
            atomic_fetch_add(gone ? &s->resets : &s->errors, 1);
            break;
        }
        atomic_fetch_add_explicit(&s->bytes, (long)n, memory_order_relaxed);
        if (++turns >= FAIR_TURNS) { /* a peer that never pauses */
            turns = 0;
            (void)coro_yield();
        }
    }
    return NULL; /* the defer closes the socket */
}

/* Spawns the coroutine for an accepted socket. */
static void spawn_conn(echo_server *s, int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&s->open, 1);
    int i = slot_alloc(s);
    coro_promise p = { 0 };
    int rc = i < 0 ? CORO_ENOMEM : CORO_OK;
    if (rc == CORO_OK) {
        struct conn_env env = { s, fd, i };
        rc = coro_spawn(s->rt, conn_main, &env, sizeof env, conn_cleanup, 0, &p);
    }
    if (rc != CORO_OK) {
        /* coro_spawn failed: we still own the socket (env_drop did not run). */
        close(fd);
        atomic_fetch_sub(&s->open, 1);
        atomic_fetch_add(&s->spawn_failures, 1);
        say(s, "coro_spawn failed: %s (%d)", coro_strerror(rc), rc);
        if (i >= 0) {
            pthread_mutex_lock(&s->mu);
            slot_release_locked(s, i);
            pthread_mutex_unlock(&s->mu);
        }
        return;
    }
    int finished;
    pthread_mutex_lock(&s->mu);
    finished = s->slots[i].state == SLOT_FINISHED;
    if (finished) {
        slot_release_locked(s, i);
    } else {
        s->slots[i].promise = p;
        s->slots[i].state = SLOT_LIVE;
    }
    pthread_mutex_unlock(&s->mu);
    if (finished)
        (void)coro_detach(p); /* it already ran its defer */
}

/* ------------------------------------------------------------------ */
/* The accept loop                                                     */

static void accept_cleanup(void *arg)
{
    struct accept_env *a = arg;
    if (!a->s)
        return;
    int fd = atomic_exchange(&a->s->lfd, -1);
    if (fd >= 0)
        close(fd);
    atomic_store(&a->s->accept_done, 1);
    a->s = NULL;
}

static void *accept_main(void *envp)
{
    struct accept_env *a = envp;
    echo_server *s = a->s;
    (void)coro_defer(accept_cleanup, a);
    int lfd = atomic_load(&s->lfd);
    int turns = 0;
    long emfile_logged = 0;
    for (;;) {
        int fd = -1;
        int rc = coro_accept(lfd, NULL, NULL, 0, &fd, -1);
        if (rc == CORO_OK) {
            atomic_fetch_add(&s->accepted, 1);
            spawn_conn(s, fd);
            if (++turns >= FAIR_TURNS) { /* let the new connections start */
                turns = 0;
                (void)coro_yield();
            }
            continue;
        }
        turns = 0;
        int err = errno;
        if (rc == CORO_EIO && (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)) {
            /* Out of descriptors: keep serving what we have, try again soon.
             * The pending connections wait in the listen backlog. */
            long n = atomic_fetch_add(&s->emfile, 1) + 1;
            if (n >= emfile_logged * 10 + 1) { /* log 1, 11, 101, 1001, ... */
                emfile_logged = n;
                say(s, "accept: %s (%ld times so far); serving the open connections, "
                       "retrying in 5 ms",
                    strerror(err), n);
            }
            if (coro_sleep_until(coro_now() + BACKOFF_NS) != CORO_OK)
                return NULL;
        } else if (rc == CORO_EIO) {
            say(s, "accept: %s (errno %d); the accept loop ends", strerror(err), err);
            return NULL;
        } else {
            say(s, "accept loop: %s (%d)", coro_strerror(rc), rc);
            return NULL;
        }
    }
}

/* ------------------------------------------------------------------ */
/* The API                                                             */

int echo_server_start(coro_runtime *rt, const char *addr, int port, int quiet, echo_server **out)
{
    echo_server *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return -1;
    }
    s->rt = rt;
    s->quiet = quiet;
    s->free_head = -1;
    atomic_init(&s->lfd, -1);
    pthread_mutex_init(&s->mu, NULL);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail_errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        close(fd);
        errno = EINVAL;
        goto fail_errno;
    }
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, SOMAXCONN) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        goto fail_errno;
    }
    s->port = ntohs(sa.sin_port);
    atomic_store(&s->lfd, fd);

    struct accept_env env = { s };
    int rc = coro_spawn(rt, accept_main, &env, sizeof env, accept_cleanup, 0, &s->accept_promise);
    if (rc != CORO_OK) {
        close(fd);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rc;
    }
    s->accept_spawned = 1;
    *out = s;
    return 0;

fail_errno:;
    int e = errno;
    pthread_mutex_destroy(&s->mu);
    free(s);
    errno = e;
    return -1;
}

int echo_server_port(const echo_server *s)
{
    return s->port;
}

void echo_server_get_stats(echo_server *s, echo_server_stats *o)
{
    o->accepted = atomic_load(&s->accepted);
    o->open = atomic_load(&s->open);
    o->closed = atomic_load(&s->closed);
    o->closed_cancelled = atomic_load(&s->closed_cancelled);
    o->cancelled = atomic_load(&s->cancelled);
    o->bytes = atomic_load(&s->bytes);
    o->resets = atomic_load(&s->resets);
    o->errors = atomic_load(&s->errors);
    o->emfile = atomic_load(&s->emfile);
    o->spawn_failures = atomic_load(&s->spawn_failures);
}

long echo_server_cancel_connections(echo_server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = 0;
    coro_promise *ps = malloc((size_t)(s->cap ? s->cap : 1) * sizeof *ps);
    for (int i = 0; ps && i < s->cap; i++) {
        if (s->slots[i].state == SLOT_LIVE) {
            ps[n++] = s->slots[i].promise;
            s->slots[i].state = SLOT_CANCELLING;
        }
    }
    pthread_mutex_unlock(&s->mu);
    long cancelled = 0;
    for (int i = 0; i < n; i++) {
        /* A suspended coroutine runs its defer (conn_cleanup) right here. */
        int rc = coro_cancel_async(ps[i]);
        if (rc == CORO_OK)
            cancelled++;
        else
            say(s, "coro_cancel_async failed: %s (%d)", coro_strerror(rc), rc);
    }
    free(ps);
    atomic_fetch_add(&s->cancelled, cancelled);
    return cancelled;
}

void echo_server_stop(echo_server *s)
{
    if (s->accept_spawned) {
        s->accept_spawned = 0;
        (void)coro_cancel_async(s->accept_promise); /* its defer closes the listener */
        /* Once its cleanup ran, no connection is half-spawned any more. */
        while (!atomic_load(&s->accept_done))
            usleep(200);
    }
    (void)echo_server_cancel_connections(s);
}

void echo_server_free(echo_server *s)
{
    if (!s)
        return;
    int fd = atomic_exchange(&s->lfd, -1);
    if (fd >= 0)
        close(fd);
    pthread_mutex_destroy(&s->mu);
    free(s->slots);
    free(s);
}
