/*
 * echo_io.h: the socket I/O both halves of the echo example share
 * (echo_server.c, echo_load.c), written the coframe way: try the call
 * first and wait for the descriptor only on EAGAIN.
 */
#ifndef COFRAME_EXAMPLES_ECHO_IO_H
#define COFRAME_EXAMPLES_ECHO_IO_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>

#include <coframe.h>

enum echo_io {
    ECHO_IO_OK,
    ECHO_IO_PEER_GONE, /* the peer closed or reset the connection */
    ECHO_IO_ERROR,     /* anything else, a failed wait included */
};

/* What a failed send or recv with this errno means. */
static inline enum echo_io echo_io_failed(int err)
{
    return err == ECONNRESET || err == EPIPE ? ECHO_IO_PEER_GONE : ECHO_IO_ERROR;
}

/* The deadline of one wait, `timeout_ns` from now (-1: none). */
static inline int64_t echo_io_deadline(int64_t timeout_ns)
{
    return timeout_ns < 0 ? -1 : coro_now() + timeout_ns;
}

/* Sends all `n` bytes, waiting while the socket is full. */
static inline enum echo_io echo_send_all(int fd, const char *p, size_t n, int64_t timeout_ns)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (coro_wait_fd(fd, CORO_WRITABLE, echo_io_deadline(timeout_ns)) != CORO_OK)
                return ECHO_IO_ERROR;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            return echo_io_failed(errno);
        }
    }
    return ECHO_IO_OK;
}

/* Reads exactly `n` bytes; *waited says whether it had to suspend. */
static inline enum echo_io echo_recv_all(int fd, char *p, size_t n, int64_t timeout_ns, int *waited)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r == 0) {
            return ECHO_IO_PEER_GONE;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *waited = 1;
            if (coro_wait_fd(fd, CORO_READABLE, echo_io_deadline(timeout_ns)) != CORO_OK)
                return ECHO_IO_ERROR;
        } else if (errno == EINTR) {
            continue;
        } else {
            return echo_io_failed(errno);
        }
    }
    return ECHO_IO_OK;
}

#endif /* COFRAME_EXAMPLES_ECHO_IO_H */
