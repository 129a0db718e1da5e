/*
 * poll_util.h: helpers of the poller tests (poll_race.c, poll_misuse.c,
 * poll_shutdown.c, poll_keep.c). Linux only: they read /proc.
 *
 *   (count_fds() is in check.h)
 *   raise_nofile(need)        raises RLIMIT_NOFILE's soft limit (up to the
 *                             hard limit) so that `need` descriptors fit;
 *                             returns how many fit
 *   epoll_snapshot(&s)        the epoll descriptors open now; after
 *   epoll_find_new(&s, &set)  creating a runtime, its pollers' epolls
 *   epoll_count(&set)         armed registrations in them (/proc/self/fdinfo
 *                             "tfd:" lines asking for events), -1 if unknown
 *   epoll_has(&set, fd)       whether `fd` is armed in one (1, 0, -1)
 *   nb_socketpair(sv)         a non-blocking, close-on-exec AF_UNIX stream pair
 *   run_in_coro(rt, fn, arg, ms, what)
 *                             runs fn(arg) in a coroutine of rt and awaits
 *                             it; a check fails (and the coroutine is
 *                             cancelled) if it does not end within ms
 *
 * Each worker of a runtime has a poller: a mio Poll, one epoll instance
 * (seen through two descriptors, both listing the same registrations) plus
 * an eventfd waker, which is itself registered: an idle runtime has one
 * armed registration per worker. A wait that ended ready may leave its
 * descriptor registered but disarmed (EPOLLONESHOT, Linux); a CORO_KEEP wait
 * leaves it armed (EPOLLET) until coro_fd_forget; every other registration
 * is armed only while its wait is in progress.
 */
#ifndef COFRAME_FFI_TESTS_POLL_UTIL_H
#define COFRAME_FFI_TESTS_POLL_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/kcmp.h>

static inline long raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return need;
    if ((long)rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur < need ? (long)rl.rlim_cur : need;
}

#define EPOLL_SNAPSHOT_MAX 64
typedef struct epoll_snapshot_t {
    int n;
    int fds[EPOLL_SNAPSHOT_MAX];
} epoll_snapshot_t;

static inline int fd_is_epoll_(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return 0;
    target[n] = 0;
    return strcmp(target, "anon_inode:[eventpoll]") == 0;
}

static inline void epoll_snapshot(epoll_snapshot_t *s)
{
    s->n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && s->n < EPOLL_SNAPSHOT_MAX) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dirfd(d) && fd_is_epoll_(fd))
            s->fds[s->n++] = fd;
    }
    closedir(d);
}

/* The runtime's pollers: one descriptor per epoll instance opened since
 * `before`. A mio Poll is seen through two descriptors (the Poll and a
 * clone of its registry); kcmp(2) tells which share an instance. Returns
 * the number of instances, -1 if kcmp cannot tell. */
typedef struct epoll_set_t {
    int n;
    int fds[EPOLL_SNAPSHOT_MAX];
} epoll_set_t;

static inline int same_file_(int a, int b)
{
    pid_t pid = getpid();
    return (int)syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);
}

static inline int epoll_find_new(const epoll_snapshot_t *before, epoll_set_t *out)
{
    epoll_snapshot_t now;
    epoll_snapshot(&now);
    out->n = 0;
    for (int i = 0; i < now.n; i++) {
        int seen = 0;
        for (int j = 0; j < before->n; j++)
            seen |= before->fds[j] == now.fds[i];
        for (int j = 0; j < out->n && !seen; j++) {
            int r = same_file_(out->fds[j], now.fds[i]);
            if (r < 0) {
                out->n = 0;
                return -1;
            }
            seen |= r == 0;
        }
        if (!seen)
            out->fds[out->n++] = now.fds[i];
    }
    return out->n;
}

/* Armed registrations in one epoll or, with want_fd >= 0, whether want_fd
 * is armed there; -1 if fdinfo cannot be read. A registration is armed if
 * it asks for any event: the library leaves disarmed EPOLLONESHOT
 * registrations behind after a wait that ended ready (they ask for none). */
static inline int epoll_scan_(int epfd, int want_fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0, found = 0;
    const unsigned control = EPOLLONESHOT | EPOLLET | EPOLLWAKEUP | EPOLLEXCLUSIVE;
    while (fgets(line, sizeof line, f)) {
        int tfd;
        unsigned events;
        if (sscanf(line, "tfd: %d events: %x", &tfd, &events) != 2)
            continue;
        if ((events & ~control) == 0)
            continue;
        n++;
        if (want_fd >= 0 && tfd == want_fd)
            found = 1;
    }
    fclose(f);
    return want_fd >= 0 ? found : n;
}

/* Armed registrations over all of the runtime's pollers; -1 if unknown. */
static inline int epoll_count(const epoll_set_t *s)
{
    if (s->n <= 0)
        return -1;
    int total = 0;
    for (int i = 0; i < s->n; i++) {
        int c = epoll_scan_(s->fds[i], -1);
        if (c < 0)
            return -1;
        total += c;
    }
    return total;
}

/* Whether `fd` is armed in any of the runtime's pollers (1, 0, -1). */
static inline int epoll_has(const epoll_set_t *s, int fd)
{
    if (s->n <= 0)
        return -1;
    int found = 0;
    for (int i = 0; i < s->n; i++) {
        int c = epoll_scan_(s->fds[i], fd);
        if (c < 0)
            return -1;
        found |= c;
    }
    return found;
}

static inline int nb_socketpair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
}

struct poll_call_ {
    void (*fn)(void *);
    void *arg;
    atomic_int done;
};

static inline void *poll_call_body_(void *envp)
{
    struct poll_call_ *c = *(struct poll_call_ **)envp;
    c->fn(c->arg);
    atomic_store(&c->done, 1);
    return NULL;
}

static inline void run_in_coro(coro_runtime *rt, void (*fn)(void *), void *arg, long ms,
                               const char *what)
{
    struct poll_call_ c = { fn, arg, 0 };
    struct poll_call_ *cp = &c;
    coro_promise p;
    if (!CHECK_RC(coro_spawn(rt, poll_call_body_, &cp, sizeof cp, NULL, 0, &p), CORO_OK))
        return;
    WAIT_UNTIL(atomic_load(&c.done), ms);
    if (!CHECK(atomic_load(&c.done))) {
        fprintf(stderr, "    %s: the coroutine hangs; cancelling it\n", what);
        coro_cancel_async(p); /* default mode: it never touches `c` again */
        return;
    }
    CHECK_RC(coro_await(p, NULL), CORO_OK);
}

#endif /* COFRAME_FFI_TESTS_POLL_UTIL_H */
