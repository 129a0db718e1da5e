/*
 * overflow.c: a coroutine that overflows its stack hits the guard page, and
 * the library prints "coroutine N overflowed its S-byte stack" and aborts,
 * instead of corrupting memory.
 *
 * The parent forks a child per case; the child spawns a coroutine that
 * recurses (256 bytes of locals per frame, built with
 * -fstack-clash-protection so no frame skips the guard page) until it
 * overflows. The parent captures the child's stderr through a pipe and
 * checks that the child died of SIGABRT and said so. The child also writes
 * the coroutine's id to a second pipe so the parent can match N.
 *
 * usage: overflow              run both cases (default stack, 256 KiB stack)
 *        overflow --child [S]  be the child (stack_size S, 0 = default)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#ifdef __GNUC__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static int id_fd = -1; /* where the child reports its coroutine id */

static NOINLINE long recurse(long depth)
{
    volatile char buf[256];
    buf[0] = (char)depth;
    buf[sizeof buf - 1] = (char)(depth >> 8);
    if (depth < 0) /* never: keeps the call from being a tail call */
        return 0;
    long below = recurse(depth + 1);
    return below + buf[0] + buf[sizeof buf - 1];
}

static void *deep(void *envp)
{
    (void)envp;
    if (id_fd >= 0) {
        char line[64];
        int len = snprintf(line, sizeof line, "%llu\n", (unsigned long long)coro_self_id());
        if (write(id_fd, line, (size_t)len) != len)
            return NULL;
        close(id_fd);
    }
    return (void *)(intptr_t)recurse(0);
}

/* The child: returns only if the overflow was not caught (a failure). */
static int child_main(size_t stack_size)
{
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core); /* an abort, not a core dump */
    alarm(60);
    coro_config cfg = { .struct_size = sizeof(coro_config), .workers = 1, .stack_size = stack_size };
    coro_runtime *rt = NULL;
    int rc = coro_runtime_new(&cfg, &rt);
    if (rc != CORO_OK) {
        fprintf(stdout, "overflow child: coro_runtime_new: %s\n", coro_strerror(rc));
        return 3;
    }
    coro_promise p;
    rc = coro_spawn(rt, deep, NULL, 0, NULL, 0, &p);
    if (rc != CORO_OK) {
        fprintf(stdout, "overflow child: coro_spawn: %s\n", coro_strerror(rc));
        return 3;
    }
    rc = coro_await(p, NULL);
    fprintf(stdout, "overflow child: the coroutine came back (%s) instead of aborting\n",
            coro_strerror(rc));
    return 4;
}

static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return len;
}

static void run_case(size_t stack_size, size_t expect_bytes)
{
    int err_pipe[2], id_pipe[2];
    REQUIRE(pipe(err_pipe) == 0);
    REQUIRE(pipe(id_pipe) == 0);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(err_pipe[0]);
        close(id_pipe[0]);
        dup2(err_pipe[1], STDERR_FILENO);
        close(err_pipe[1]);
        id_fd = id_pipe[1];
        _exit(child_main(stack_size));
    }
    close(err_pipe[1]);
    close(id_pipe[1]);
    char err[8192], idbuf[64];
    read_all(err_pipe[0], err, sizeof err);
    read_all(id_pipe[0], idbuf, sizeof idbuf);
    close(err_pipe[0]);
    close(id_pipe[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);

    printf("overflow (stack_size %zu): child ", stack_size);
    if (WIFSIGNALED(status))
        printf("killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        printf("exited with status %d", WEXITSTATUS(status));
    printf("; stderr: %s%s", err[0] ? err : "(empty)\n",
           err[0] && err[strlen(err) - 1] != '\n' ? "\n" : "");

    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(strstr(err, "coroutine ") != NULL);
    CHECK(strstr(err, "overflowed its") != NULL);
    /* S is the stack size the coroutine had. */
    char want[128];
    snprintf(want, sizeof want, "overflowed its %zu-byte stack", expect_bytes);
    if (!CHECK(strstr(err, want) != NULL))
        fprintf(stderr, "    expected \"%s\" in the child's stderr\n", want);
    /* N is the coroutine's id (coro_self_id, its promise's value). */
    unsigned long long id = strtoull(idbuf, NULL, 10);
    if (CHECK(id != 0)) {
        snprintf(want, sizeof want, "coroutine %llu overflowed its", id);
        if (!CHECK(strstr(err, want) != NULL))
            fprintf(stderr, "    expected \"%s\" in the child's stderr\n", want);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child_main(argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 0);
    check_init("overflow");
    run_case(0, 64 * 1024);          /* the default: 64 KiB */
    run_case(256 * 1024, 256 * 1024); /* a configured size */
    return check_summary();
}
