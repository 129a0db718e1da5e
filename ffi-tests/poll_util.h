/*
 * poll_util.h: helpers of the poller tests (poll_race.c, poll_misuse.c,
 * poll_shutdown.c). Linux only: they read /proc.
 *
 *   count_fds()               descriptors open in the process
 *   raise_nofile(need)        raises RLIMIT_NOFILE's soft limit (up to the
 *                             hard limit) so that `need` descriptors fit;
 *                             returns how many fit
 *   epoll_snapshot(&s)        the epoll descriptors open now; after
 *   epoll_find_new(&s)        creating a runtime, the one its poller uses
 *   epoll_count(epfd)         descriptors registered in that epoll
 *                             (/proc/self/fdinfo "tfd:" lines), -1 if unknown
 *   epoll_has(epfd, fd)       whether `fd` is registered there (1, 0, -1)
 *   nb_socketpair(sv)         a non-blocking, close-on-exec AF_UNIX stream pair
 *
 * A runtime's poller is a mio Poll: one epoll instance (seen through two
 * descriptors, both listing the same registrations) plus an eventfd waker,
 * which is itself registered: an idle poller has exactly 1 registration.
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
#include <unistd.h>

static inline int count_fds(void)
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
    return n - 1; /* the directory's own descriptor */
}

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

/* An epoll descriptor that is not in `before`; -1 if none. */
static inline int epoll_find_new(const epoll_snapshot_t *before)
{
    epoll_snapshot_t now;
    epoll_snapshot(&now);
    for (int i = 0; i < now.n; i++) {
        int seen = 0;
        for (int j = 0; j < before->n; j++)
            seen |= before->fds[j] == now.fds[i];
        if (!seen)
            return now.fds[i];
    }
    return -1;
}

/* The number of registrations or, with want_fd >= 0, whether want_fd is one
 * of them; -1 if fdinfo cannot be read. */
static inline int epoll_scan_(int epfd, int want_fd)
{
    if (epfd < 0)
        return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "tfd:", 4) != 0)
            continue;
        n++;
        if (want_fd >= 0 && atoi(line + 4) == want_fd)
            found = 1;
    }
    fclose(f);
    return want_fd >= 0 ? found : n;
}

static inline int epoll_count(int epfd)
{
    return epoll_scan_(epfd, -1);
}

static inline int epoll_has(int epfd, int fd)
{
    return epoll_scan_(epfd, fd);
}

static inline int nb_socketpair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
}

#endif /* COFRAME_FFI_TESTS_POLL_UTIL_H */
