/*
 * io.c: the blocking-style I/O calls (coro_read, coro_write, coro_recv,
 * coro_send, coro_accept, coro_connect; docs/API.md "Blocking-style I/O").
 *
 *   all bytes        coro_read of 3 writes that come 5 ms apart: every byte,
 *                    in order, *done the total; coro_write of 1 MiB into a
 *                    pipe a coroutine drains
 *   some             CORO_IO_SOME returns the first bytes; 0 at end of file
 *   end of file      before len bytes: CORO_EIO, errno EPIPE, *done counts
 *                    what came
 *   deadlines        an empty pipe: CORO_ETIMEDOUT; a partial read and a
 *                    write into a full pipe: CORO_ETIMEDOUT with *done the
 *                    bytes that moved
 *   sockets          coro_accept and coro_connect between two coroutines on
 *                    127.0.0.1, an echo through coro_recv(CORO_IO_SOME |
 *                    CORO_KEEP) and coro_send, the peer address accept gives,
 *                    the accepted socket non-blocking and close-on-exec;
 *                    a refused connect: CORO_EIO, ECONNREFUSED; an accept
 *                    with nobody coming: CORO_ETIMEDOUT; coro_send to a
 *                    closed peer: CORO_EIO, EPIPE, and no SIGPIPE
 *   kept reads       CORO_KEEP: after a short read the next read waits
 *                    first, and still sees data written in between
 *   plain thread     the calls block: a blocking pipe read with data, and
 *                    with a deadline and no data (CORO_ETIMEDOUT); a
 *                    non-blocking one woken by a coroutine's write
 *   blocking fd      in a coroutine coro_read on a blocking pipe is
 *                    CORO_EINVAL (it would block the worker); coro_recv on a
 *                    blocking socket works (MSG_DONTWAIT)
 *   cancel           cancel-returns: a coroutine waiting in coro_recv gets
 *                    CORO_ECANCELED, and so does its next call even with data
 *                    ready; default mode: a coroutine reading /dev/zero
 *                    (never waits) is cancelled all the same, its defer runs
 *                    once
 *   lock held        with a lock note held: CORO_ELOCKHELD, data ready or not
 *   arguments        negative or closed fd, NULL buffer, unknown flags,
 *                    CORO_IO_SOME on a write, a deadline below -1, NULL out_fd,
 *                    addr without addrlen, NULL connect address: CORO_EINVAL;
 *                    len 0: 0 at once
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "poll_util.h"

#define MS 1000000LL
#define SEC 1000000000LL

static coro_runtime *rt;

static int64_t in_ms(long ms)
{
    return coro_now() + ms * MS;
}

static void nb_pipe(int p[2])
{
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static void close2(int p[2])
{
    close(p[0]);
    close(p[1]);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 31 + seed);
}

/* Spawns fn(arg); the caller awaits or cancels the promise. */
static coro_promise spawn_fn(void *(*fn)(void *), void *arg, uint32_t flags)
{
    coro_promise p = { 0 };
    CHECK_RC(coro_spawn(rt, fn, &arg, sizeof arg, NULL, flags, &p), CORO_OK);
    return p;
}

/* ------------------------------------------------------------------ */
/* all bytes, some, end of file, deadlines                             */

struct writer {
    int fd;
    const unsigned char *data;
    size_t chunk, chunks;
    int close_after; /* close fd once written */
};

static void *writer_body(void *envp)
{
    struct writer *w = *(struct writer **)envp;
    for (size_t i = 0; i < w->chunks; i++) {
        CHECK_RC(coro_sleep_until(in_ms(5)), CORO_OK);
        size_t done = 0;
        CHECK_RC(coro_write(w->fd, w->data + i * w->chunk, w->chunk, 0, &done, in_ms(5000)), CORO_OK);
        CHECK_EQ(done, w->chunk);
    }
    if (w->close_after)
        close(w->fd);
    return NULL;
}

static void all_bytes(void *arg)
{
    (void)arg;
    int p[2];
    nb_pipe(p);
    unsigned char out[3000], in[3000];
    fill(out, sizeof out, 1);
    memset(in, 0, sizeof in);
    struct writer w = { p[1], out, 1000, 3, 0 };
    coro_promise wp = spawn_fn(writer_body, &w, 0);
    size_t done = 0;
    CHECK_RC(coro_read(p[0], in, sizeof in, 0, &done, in_ms(5000)), CORO_OK);
    CHECK_EQ(done, sizeof in);
    CHECK(memcmp(in, out, sizeof in) == 0);
    CHECK_RC(coro_await(wp, NULL), CORO_OK);

    /* CORO_IO_SOME: the first bytes, then 0 at end of file. */
    CHECK_EQ(write(p[1], "abc", 3), 3);
    CHECK_RC(coro_read(p[0], in, sizeof in, CORO_IO_SOME, &done, in_ms(5000)), CORO_OK);
    CHECK_EQ(done, 3);
    CHECK(memcmp(in, "abc", 3) == 0);
    close(p[1]);
    done = 99;
    CHECK_RC(coro_read(p[0], in, sizeof in, CORO_IO_SOME, &done, in_ms(5000)), CORO_OK);
    CHECK_EQ(done, 0);
    close(p[0]);

    /* End of file before len bytes. */
    nb_pipe(p);
    struct writer w2 = { p[1], out, 7, 1, 1 };
    wp = spawn_fn(writer_body, &w2, 0);
    errno = 0;
    CHECK_RC(coro_read(p[0], in, 100, 0, &done, in_ms(5000)), CORO_EIO);
    CHECK_EQ(errno, EPIPE);
    CHECK_EQ(done, 7);
    CHECK_RC(coro_await(wp, NULL), CORO_OK);
    close(p[0]);
}

static void *drain_body(void *envp)
{
    int fd = **(int **)envp;
    static unsigned char sink[1 << 20];
    size_t done = 0;
    CHECK_RC(coro_read(fd, sink, sizeof sink, 0, &done, in_ms(10000)), CORO_OK);
    CHECK_EQ(done, sizeof sink);
    return (void *)(uintptr_t)sink[sizeof sink - 1];
}

static void big_write(void *arg)
{
    (void)arg;
    int p[2];
    nb_pipe(p);
    static unsigned char big[1 << 20];
    fill(big, sizeof big, 7);
    coro_promise rp = spawn_fn(drain_body, &p[0], 0);
    size_t done = 0;
    CHECK_RC(coro_write(p[1], big, sizeof big, CORO_KEEP, &done, in_ms(10000)), CORO_OK);
    CHECK_EQ(done, sizeof big);
    void *last = NULL;
    CHECK_RC(coro_await(rp, &last), CORO_OK);
    CHECK_EQ((uintptr_t)last, big[sizeof big - 1]);
    CHECK_RC(coro_fd_forget(p[1]), CORO_OK);
    close2(p);
}

static void deadlines(void *arg)
{
    (void)arg;
    int p[2];
    nb_pipe(p);
    char buf[64];
    size_t done = 99;
    int64_t t0 = coro_now();
    CHECK_RC(coro_read(p[0], buf, sizeof buf, 0, &done, in_ms(20)), CORO_ETIMEDOUT);
    CHECK(coro_now() - t0 >= 20 * MS);
    CHECK_EQ(done, 0);
    CHECK_EQ(write(p[1], "xy", 2), 2);
    CHECK_RC(coro_read(p[0], buf, 4, 0, &done, in_ms(20)), CORO_ETIMEDOUT);
    CHECK_EQ(done, 2);
    /* A write into a pipe nobody reads stops at its capacity. */
    long cap = fcntl(p[1], F_GETPIPE_SZ);
    static unsigned char big[1 << 20];
    CHECK_RC(coro_write(p[1], big, sizeof big, 0, &done, in_ms(20)), CORO_ETIMEDOUT);
    CHECK_EQ((long)done, cap);
    /* A deadline already past still tries once: the data is there. */
    CHECK_EQ(read(p[0], big, sizeof big), cap);
    CHECK_EQ(write(p[1], "z", 1), 1);
    CHECK_RC(coro_read(p[0], buf, 1, 0, &done, 0), CORO_OK);
    CHECK_EQ(done, 1);
    close2(p);
}

/* ------------------------------------------------------------------ */
/* sockets                                                             */

static int nb_listener(struct sockaddr_in *addr)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(l, (struct sockaddr *)addr, sizeof *addr), 0);
    socklen_t len = sizeof *addr;
    CHECK_EQ(getsockname(l, (struct sockaddr *)addr, &len), 0);
    CHECK_EQ(listen(l, 16), 0);
    return l;
}

struct echo_peer {
    int listener;
    struct sockaddr_in client; /* what accept saw */
    int conn;
};

static void *echo_side(void *envp)
{
    struct echo_peer *e = *(struct echo_peer **)envp;
    socklen_t len = sizeof e->client;
    int c = -1;
    if (!CHECK_RC(coro_accept(e->listener, (struct sockaddr *)&e->client, &len, CORO_KEEP, &c,
                              in_ms(5000)),
                  CORO_OK))
        return NULL;
    e->conn = c;
    CHECK(fcntl(c, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(c, F_GETFD) & FD_CLOEXEC);
    char buf[512];
    for (;;) {
        size_t n = 0;
        int rc = coro_recv(c, buf, sizeof buf, CORO_IO_SOME | CORO_KEEP, &n, in_ms(5000));
        if (!CHECK_RC(rc, CORO_OK) || n == 0)
            break;
        CHECK_RC(coro_send(c, buf, n, CORO_KEEP, NULL, in_ms(5000)), CORO_OK);
    }
    CHECK_RC(coro_fd_forget(c), CORO_OK);
    close(c);
    return NULL;
}

static void sockets(void *arg)
{
    (void)arg;
    struct sockaddr_in at;
    struct echo_peer e = { nb_listener(&at), { 0 }, -1 };
    coro_promise ep = spawn_fn(echo_side, &e, 0);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK_RC(coro_connect(s, (struct sockaddr *)&at, sizeof at, in_ms(5000)), CORO_OK);
    static unsigned char out[200000], in[200000];
    fill(out, sizeof out, 3);
    /* Sends and receives in turns of 10 KB: the echo must keep up. */
    for (size_t off = 0; off < sizeof out; off += 10000) {
        size_t done = 0;
        CHECK_RC(coro_send(s, out + off, 10000, 0, &done, in_ms(5000)), CORO_OK);
        CHECK_RC(coro_recv(s, in + off, 10000, 0, &done, in_ms(5000)), CORO_OK);
        CHECK_EQ(done, 10000);
    }
    CHECK(memcmp(in, out, sizeof in) == 0);
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    CHECK_EQ(getsockname(s, (struct sockaddr *)&me, &len), 0);
    close(s); /* the echo side reads 0 and ends */
    CHECK_RC(coro_await(ep, NULL), CORO_OK);
    CHECK_EQ(ntohs(e.client.sin_port), ntohs(me.sin_port));

    /* Nobody comes: the accept times out. */
    int c = 12345;
    CHECK_RC(coro_accept(e.listener, NULL, NULL, 0, &c, in_ms(20)), CORO_ETIMEDOUT);
    CHECK_EQ(c, 12345);
    close(e.listener);

    /* A port nobody listens on: refused. */
    struct sockaddr_in gone;
    int l = nb_listener(&gone);
    close(l);
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    errno = 0;
    CHECK_RC(coro_connect(s, (struct sockaddr *)&gone, sizeof gone, in_ms(5000)), CORO_EIO);
    CHECK_EQ(errno, ECONNREFUSED);
    close(s);

    /* A closed peer: EPIPE, no SIGPIPE (the default action would kill us). */
    int sv[2];
    nb_socketpair(sv);
    close(sv[1]);
    static char junk[1 << 16];
    errno = 0;
    CHECK_RC(coro_send(sv[0], junk, sizeof junk, 0, NULL, in_ms(5000)), CORO_EIO);
    CHECK_EQ(errno, EPIPE);
    close(sv[0]);
}

/* CORO_KEEP: a short read drained the socket, so the next read on it
 * waits for the edge before it tries (no read that says EAGAIN). Data
 * that came in between has its edge: that read returns at once. */
static void kept_short_reads(void *arg)
{
    (void)arg;
    int sv[2];
    nb_socketpair(sv);
    char buf[64];
    size_t done = 0;
    for (int round = 0; round < 3; round++) {
        CHECK_EQ(write(sv[1], "abc", 3), 3);
        CHECK_RC(coro_recv(sv[0], buf, sizeof buf, CORO_IO_SOME | CORO_KEEP, &done, in_ms(5000)),
                 CORO_OK);
        CHECK_EQ(done, 3); /* short: asked for 64 */
        /* Before the next call, from the same coroutine: its edge must
         * not be lost. */
        CHECK_EQ(write(sv[1], "de", 2), 2);
        int64_t t0 = coro_now();
        CHECK_RC(coro_read(sv[0], buf, sizeof buf, CORO_IO_SOME | CORO_KEEP, &done, in_ms(5000)),
                 CORO_OK);
        CHECK_EQ(done, 2);
        CHECK(coro_now() - t0 < 1000 * MS);
        /* Nothing new: the wait times out. */
        CHECK_RC(coro_recv(sv[0], buf, sizeof buf, CORO_IO_SOME | CORO_KEEP, &done, in_ms(20)),
                 CORO_ETIMEDOUT);
        CHECK_EQ(done, 0);
    }
    /* An all-bytes read across short reads, the rest written by another
     * coroutine 5 ms later: waits between them, misses nothing. */
    unsigned char out[3000], in[3000];
    fill(out, sizeof out, 9);
    struct writer w = { sv[1], out, 1000, 3, 0 };
    coro_promise wp = spawn_fn(writer_body, &w, 0);
    CHECK_RC(coro_recv(sv[0], in, sizeof in, CORO_KEEP, &done, in_ms(5000)), CORO_OK);
    CHECK_EQ(done, sizeof in);
    CHECK(memcmp(in, out, sizeof in) == 0);
    CHECK_RC(coro_await(wp, NULL), CORO_OK);
    CHECK_RC(coro_fd_forget(sv[0]), CORO_OK);
    close2(sv);
}

/* ------------------------------------------------------------------ */
/* plain threads and blocking descriptors                              */

static void *late_writer(void *envp)
{
    int fd = **(int **)envp;
    CHECK_RC(coro_sleep_until(in_ms(10)), CORO_OK);
    CHECK_RC(coro_write(fd, "late", 4, 0, NULL, in_ms(5000)), CORO_OK);
    return NULL;
}

static void plain_thread(void)
{
    int p[2];
    CHECK_EQ(pipe(p), 0); /* blocking */
    char buf[16];
    size_t done = 0;
    CHECK_EQ(write(p[1], "ab", 2), 2);
    CHECK_RC(coro_read(p[0], buf, 2, 0, &done, -1), CORO_OK);
    CHECK_EQ(done, 2);
    CHECK_RC(coro_read(p[0], buf, 2, 0, &done, in_ms(20)), CORO_ETIMEDOUT);
    CHECK_EQ(write(p[1], "c", 1), 1);
    CHECK_RC(coro_read(p[0], buf, sizeof buf, CORO_IO_SOME, &done, in_ms(5000)), CORO_OK);
    CHECK_EQ(done, 1);
    close2(p);

    nb_pipe(p);
    coro_promise wp = spawn_fn(late_writer, &p[1], 0);
    CHECK_RC(coro_read(p[0], buf, 4, 0, &done, in_ms(5000)), CORO_OK);
    CHECK(memcmp(buf, "late", 4) == 0);
    CHECK_RC(coro_await(wp, NULL), CORO_OK);
    close2(p);
}

static void blocking_fd(void *arg)
{
    (void)arg;
    int p[2];
    CHECK_EQ(pipe(p), 0);
    char buf[8];
    CHECK_RC(coro_read(p[0], buf, 1, 0, NULL, in_ms(10)), CORO_EINVAL);
    CHECK_RC(coro_write(p[1], buf, 1, 0, NULL, in_ms(10)), CORO_EINVAL);
    close2(p);
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0); /* blocking */
    CHECK_RC(coro_recv(sv[0], buf, 1, 0, NULL, in_ms(20)), CORO_ETIMEDOUT);
    CHECK_RC(coro_send(sv[1], "q", 1, 0, NULL, in_ms(20)), CORO_OK);
    CHECK_RC(coro_recv(sv[0], buf, 1, 0, NULL, in_ms(5000)), CORO_OK);
    CHECK_EQ(buf[0], 'q');
    int c;
    CHECK_RC(coro_accept(sv[0], NULL, NULL, 0, &c, in_ms(10)), CORO_EINVAL);
    close2(sv);
}

/* ------------------------------------------------------------------ */
/* cancellation, locks                                                 */

static atomic_int recv_rc = 1, second_rc = 1, defers;

static void count_defer(void *arg)
{
    (void)arg;
    atomic_fetch_add(&defers, 1);
}

static void *canceled_reader(void *envp)
{
    int fd = **(int **)envp;
    (void)coro_defer(count_defer, NULL);
    char buf[8];
    atomic_store(&recv_rc, coro_recv(fd, buf, sizeof buf, 0, NULL, -1));
    /* Data is ready now, and still: cancelled. */
    atomic_store(&second_rc, coro_recv(fd, buf, 1, 0, NULL, -1));
    return NULL;
}

static void *zero_reader(void *envp)
{
    int fd = **(int **)envp;
    (void)coro_defer(count_defer, NULL);
    static char buf[4096];
    for (;;)
        (void)coro_read(fd, buf, sizeof buf, 0, NULL, -1);
    return NULL;
}

static void cancel(void)
{
    int sv[2];
    nb_socketpair(sv);
    atomic_store(&defers, 0);
    coro_promise p = spawn_fn(canceled_reader, &sv[0], CORO_SPAWN_CANCEL_RETURNS);
    /* One byte of the eight it waits for, then the cancel. */
    usleep(20000);
    CHECK_EQ(send(sv[1], "r", 1, 0), 1);
    usleep(20000);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    WAIT_UNTIL(atomic_load(&second_rc) != 1 && atomic_load(&defers) == 1, 5000);
    CHECK_RC(atomic_load(&recv_rc), CORO_ECANCELED);
    CHECK_RC(atomic_load(&second_rc), CORO_ECANCELED);
    CHECK_EQ(atomic_load(&defers), 1);
    close2(sv);

    int z = open("/dev/zero", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    CHECK(z >= 0);
    atomic_store(&defers, 0);
    p = spawn_fn(zero_reader, &z, 0);
    usleep(20000);
    CHECK_RC(coro_cancel_async(p), CORO_OK);
    WAIT_UNTIL(atomic_load(&defers) == 1, 5000);
    CHECK_EQ(atomic_load(&defers), 1);
    close(z);
}

static void lock_held(void *arg)
{
    (void)arg;
    int p[2];
    nb_pipe(p);
    char buf[4];
    CHECK_RC(coro_lock_note_acquire("io.c lock"), CORO_OK);
    CHECK_RC(coro_read(p[0], buf, 1, 0, NULL, in_ms(10)), CORO_ELOCKHELD);
    CHECK_EQ(write(p[1], "x", 1), 1);
    CHECK_RC(coro_read(p[0], buf, 1, 0, NULL, in_ms(10)), CORO_ELOCKHELD);
    CHECK_RC(coro_write(p[1], buf, 1, 0, NULL, in_ms(10)), CORO_ELOCKHELD);
    CHECK_RC(coro_lock_note_release("io.c lock"), CORO_OK);
    CHECK_RC(coro_read(p[0], buf, 1, 0, NULL, in_ms(10)), CORO_OK);
    close2(p);
}

/* ------------------------------------------------------------------ */
/* arguments                                                           */

static void arguments(void)
{
    int p[2];
    nb_pipe(p);
    char buf[4];
    size_t done = 7;
    CHECK_RC(coro_read(-1, buf, 1, 0, &done, -1), CORO_EINVAL);
    CHECK_EQ(done, 0);
    CHECK_RC(coro_read(p[0], NULL, 1, 0, NULL, -1), CORO_EINVAL);
    CHECK_RC(coro_read(p[0], buf, 1, 0x400, NULL, -1), CORO_EINVAL);
    CHECK_RC(coro_write(p[1], buf, 1, CORO_IO_SOME, NULL, -1), CORO_EINVAL);
    CHECK_RC(coro_send(p[1], buf, 1, CORO_IO_SOME, NULL, -1), CORO_EINVAL);
    CHECK_RC(coro_read(p[0], buf, 1, 0, NULL, -2), CORO_EINVAL);
    CHECK_RC(coro_read(p[0], buf, 0, 0, &done, -1), CORO_OK);
    CHECK_EQ(done, 0);
    CHECK_RC(coro_read(p[0], NULL, 0, 0, NULL, -1), CORO_OK);
    int c;
    CHECK_RC(coro_accept(p[0], NULL, NULL, 0, NULL, -1), CORO_EINVAL);
    struct sockaddr_in a;
    CHECK_RC(coro_accept(p[0], (struct sockaddr *)&a, NULL, 0, &c, -1), CORO_EINVAL);
    CHECK_RC(coro_accept(p[0], NULL, NULL, 0x400, &c, -1), CORO_EINVAL);
    CHECK_RC(coro_connect(p[0], NULL, sizeof a, -1), CORO_EINVAL);
    CHECK_RC(coro_connect(-1, (struct sockaddr *)&a, sizeof a, -1), CORO_EINVAL);
    int closed = p[0];
    close2(p);
    errno = 0;
    CHECK_RC(coro_read(closed, buf, 1, 0, NULL, -1), CORO_EINVAL);
    CHECK_EQ(errno, EBADF);
}

int main(void)
{
    check_init("io");
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would end the run: none may come */
    int fds = count_fds();
    rt = check_runtime(2);
    if (!rt)
        return check_summary();
    uint64_t base = coro_live_frames();
    run_in_coro(rt, all_bytes, NULL, 10000, "all bytes");
    run_in_coro(rt, big_write, NULL, 10000, "big write");
    run_in_coro(rt, deadlines, NULL, 10000, "deadlines");
    run_in_coro(rt, sockets, NULL, 10000, "sockets");
    run_in_coro(rt, kept_short_reads, NULL, 10000, "kept short reads");
    plain_thread();
    run_in_coro(rt, blocking_fd, NULL, 10000, "blocking fd");
    cancel();
    run_in_coro(rt, lock_held, NULL, 10000, "lock held");
    arguments();
    CHECK_FRAMES_BACK_TO(base, 5000);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_EQ(count_fds(), fds); /* every call closed what it opened */
    return check_summary();
}
