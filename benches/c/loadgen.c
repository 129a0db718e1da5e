/*
 * Load generator for the echo throughput bench: one thread, epoll,
 * C connections to 127.0.0.1:PORT, each sending a 64-byte message and
 * waiting for it to come back before sending the next. Counts completed
 * round trips over SECS seconds (after WARMUP seconds) and prints one
 * JSON line. The same program drives every server, so the client's cost
 * is the same on both sides of the comparison.
 *
 *   loadgen PORT [CONNS=1000] [SECS=2] [WARMUP=0.3]
 *
 * Only loopback is ever addressed, and the run ends by itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

struct conn { int fd; int got; };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: loadgen PORT [CONNS] [SECS] [WARMUP]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int nconn = argc > 2 ? atoi(argv[2]) : 1000;
    double secs = argc > 3 ? atof(argv[3]) : 2.0;
    double warmup = argc > 4 ? atof(argv[4]) : 0.3;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconn + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)nconn, sizeof *cs);
    char msg[MSG], buf[MSG];
    memset(msg, 7, sizeof msg);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long errors = 0;
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("loadgen: connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        cs[i].fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    /* Every connection starts with one message in flight. */
    for (int i = 0; i < nconn; i++)
        if (write(cs[i].fd, msg, MSG) != MSG)
            errors++;

    struct epoll_event evs[256];
    double start = now_s(), t_count = start + warmup, t_end = t_count + secs;
    long done = 0, total = 0; /* total: warm-up included */
    int counting = 0;
    for (;;) {
        double t = now_s();
        if (!counting && t >= t_count) {
            counting = 1;
            done = 0;
            t_count = t;
        }
        if (t >= t_end)
            break;
        int k = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            ssize_t r = read(c->fd, buf, (size_t)(MSG - c->got));
            if (r > 0) {
                c->got += (int)r;
                if (c->got == MSG) {
                    c->got = 0;
                    done++;
                    total++;
                    if (write(c->fd, msg, MSG) != MSG)
                        errors++;
                }
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    double elapsed = now_s() - t_count;
    for (int i = 0; i < nconn; i++)
        close(cs[i].fd);
    printf("{\"conns\":%d,\"secs\":%.3f,\"round_trips\":%ld,\"rps\":%.1f,\"errors\":%ld,"
           "\"total_round_trips\":%ld}\n",
           nconn, elapsed, done, (double)done / elapsed, errors, total);
    return 0;
}
