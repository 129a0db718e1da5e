/*
 * dump.c: coro_dump's content and its misuse.
 *
 * One runtime (2 workers) holds a coroutine in each state the dump names,
 * then the dump is read back and checked coroutine by coroutine: its id
 * (as coro_self_id gave it), worker, state, references, what it waits on,
 * and, in check mode (COFRAME_CHECK=1 in the environment), a frame of the
 * suspended coroutine's backtrace by name (this program is linked with
 * -rdynamic, so dladdr knows parked_in_dump_test); without check mode the
 * dump must say that no backtrace was captured and how to get one. A
 * coroutine of a second runtime must not appear. Then: a dump from inside
 * a coroutine, dumps while coroutines change state under them, and the
 * misuse codes (NULL runtime, negative fd, closed fd, a read-only fd and a
 * pipe with no reader: CORO_EIO with errno, a shut-down runtime).
 *
 *   dump
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "check.h"

#define TIMEOUT_MS 10000
#define MINUTE_NS 60000000000LL

static int check_mode;

/* ---------------------------------------------------------------- bodies */

struct park_env {
    token_box *box;
    _Atomic uint64_t *id;
};

/* The frame the backtrace must name: global, so that -rdynamic exports it. */
__attribute__((noinline)) int parked_in_dump_test(token_box *box)
{
    int rc = coro_suspend(token_box_put, box);
    __asm__ volatile("" ::: "memory"); /* no tail call */
    return rc;
}

static void *park_body(void *envp)
{
    struct park_env *e = envp;
    atomic_store(e->id, coro_self_id());
    int rc = parked_in_dump_test(e->box);
    return (void *)(intptr_t)rc;
}

struct fd_env {
    int fd;
    int64_t deadline;
    _Atomic uint64_t *id;
};

static void *fd_body(void *envp)
{
    struct fd_env *e = envp;
    atomic_store(e->id, coro_self_id());
    return (void *)(intptr_t)coro_wait_fd(e->fd, CORO_READABLE, e->deadline);
}

static void *sleep_body(void *envp)
{
    struct fd_env *e = envp;
    atomic_store(e->id, coro_self_id());
    return (void *)(intptr_t)coro_sleep_until(e->deadline);
}

struct await_env {
    coro_runtime *rt;
    token_box *child_box;
    _Atomic uint64_t *id;
    _Atomic uint64_t *child_id;
};

static void *await_body(void *envp)
{
    struct await_env *e = envp;
    atomic_store(e->id, coro_self_id());
    struct park_env child = { e->child_box, e->child_id };
    coro_promise p;
    if (!CHECK_RC(coro_spawn(e->rt, park_body, &child, sizeof child, NULL, 0, &p), CORO_OK))
        return NULL;
    coro_await(p, NULL); /* cancelled by the test */
    return NULL;
}

struct spin_env {
    atomic_int *stop;
    _Atomic uint64_t *id;
};

static void *spin_body(void *envp)
{
    struct spin_env *e = envp;
    atomic_store(e->id, coro_self_id());
    while (!atomic_load(e->stop))
        if (coro_yield() != CORO_OK)
            break;
    return NULL;
}

static void *id_body(void *envp)
{
    _Atomic uint64_t *id = *(_Atomic uint64_t **)envp;
    atomic_store(id, coro_self_id());
    return NULL;
}

/* ---------------------------------------------------------------- reading a dump */

/* The whole dump of `r`, read back from a temporary file (malloc'd). */
static char *dump_text(coro_runtime *r)
{
    FILE *f = tmpfile();
    if (!CHECK(f != NULL))
        return NULL;
    CHECK_RC(coro_dump(r, fileno(f)), CORO_OK);
    long len = lseek(fileno(f), 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    if (text && len > 0 && pread(fileno(f), text, (size_t)len, 0) != len)
        text[0] = 0;
    fclose(f);
    return text;
}

/* The lines of coroutine `id` in `text`: from its "coroutine ID" line up to
 * the next line that does not start with a space (malloc'd; "" if absent). */
static char *block_of(const char *text, uint64_t id)
{
    char head[64];
    snprintf(head, sizeof head, "coroutine %llu ", (unsigned long long)id);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, head, strlen(head)) == 0)
            break;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p || !*p)
        return strdup("");
    const char *end = strchr(p, '\n');
    while (end && end[1] == ' ')
        end = strchr(end + 1, '\n');
    size_t n = end ? (size_t)(end - p + 1) : strlen(p);
    return strndup(p, n);
}

#define CHECK_HAS(block, s)                                                                        \
    do {                                                                                           \
        if (!CHECK(strstr((block), (s)) != NULL))                                                  \
            fprintf(stderr, "    missing \"%s\" in:\n%s\n", (s), (block));                         \
    } while (0)

/* ---------------------------------------------------------------- the states */

static void test_states(void)
{
    coro_runtime *rt = check_runtime(2);
    coro_runtime *rt2 = check_runtime(1);
    REQUIRE(rt != NULL && rt2 != NULL);
    uint64_t base = coro_live_frames();
    int pipe_fds[2];
    REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
    int64_t deadline = coro_now() + MINUTE_NS;

    _Atomic uint64_t id_park = 0, id_fd = 0, id_sleep = 0, id_sleep_dl = 0, id_await = 0,
                     id_child = 0, id_spin = 0, id_done = 0, id_cr = 0, id_other = 0;
    token_box park_box = { 0 }, child_box = { 0 }, cr_box = { 0 }, other_box = { 0 };
    atomic_int stop = 0;
    coro_promise p_park, p_fd, p_sleep, p_sleep_dl, p_await, p_spin, p_done, p_cr, p_other;

    struct park_env pe = { &park_box, &id_park };
    REQUIRE_RC(coro_spawn(rt, park_body, &pe, sizeof pe, NULL, 0, &p_park), CORO_OK);
    struct fd_env fe = { pipe_fds[0], deadline, &id_fd };
    REQUIRE_RC(coro_spawn(rt, fd_body, &fe, sizeof fe, NULL, 0, &p_fd), CORO_OK);
    struct fd_env se = { -1, -1, &id_sleep };
    REQUIRE_RC(coro_spawn(rt, sleep_body, &se, sizeof se, NULL, 0, &p_sleep), CORO_OK);
    struct fd_env sde = { -1, deadline, &id_sleep_dl };
    REQUIRE_RC(coro_spawn(rt, sleep_body, &sde, sizeof sde, NULL, 0, &p_sleep_dl), CORO_OK);
    /* Cancel-returns mode, so that its cancellation returns through its
     * frames: abandoned, they would leave ASan's redzones of its local
     * `child` poisoned on a stack the next coroutines reuse (the ASan
     * run's library is not the `asan` build, which unpoisons). */
    struct await_env ae = { rt, &child_box, &id_await, &id_child };
    REQUIRE_RC(coro_spawn(rt, await_body, &ae, sizeof ae, NULL, CORO_SPAWN_CANCEL_RETURNS, &p_await),
               CORO_OK);
    struct spin_env spe = { &stop, &id_spin };
    REQUIRE_RC(coro_spawn(rt, spin_body, &spe, sizeof spe, NULL, 0, &p_spin), CORO_OK);
    _Atomic uint64_t *done_ptr = &id_done;
    REQUIRE_RC(coro_spawn(rt, id_body, &done_ptr, sizeof done_ptr, NULL, 0, &p_done), CORO_OK);
    struct park_env ce = { &cr_box, &id_cr };
    REQUIRE_RC(coro_spawn(rt, park_body, &ce, sizeof ce, NULL, CORO_SPAWN_CANCEL_RETURNS, &p_cr),
               CORO_OK);
    struct park_env oe = { &other_box, &id_other };
    REQUIRE_RC(coro_spawn(rt2, park_body, &oe, sizeof oe, NULL, 0, &p_other), CORO_OK);

    /* Everything in place: tokens handed out, ids known. */
    coro_token t_park = token_box_take(&park_box, TIMEOUT_MS);
    coro_token t_child = token_box_take(&child_box, TIMEOUT_MS);
    coro_token t_cr = token_box_take(&cr_box, TIMEOUT_MS);
    coro_token t_other = token_box_take(&other_box, TIMEOUT_MS);
    REQUIRE(t_park.id && t_child.id && t_cr.id && t_other.id);
    WAIT_UNTIL(id_fd && id_sleep && id_sleep_dl && id_await && id_spin && id_done, TIMEOUT_MS);
    REQUIRE(id_fd && id_sleep && id_sleep_dl && id_await && id_spin && id_done);
    /* A cancel-returns coroutine cancelled while its token is out. */
    CHECK_RC(coro_cancel_async(p_cr), CORO_OK);

    /* Parked in the library once the dump says so (the park follows the
     * id's store): look a few times. */
    char *text = NULL;
    for (int i = 0; i < 200; i++) {
        free(text);
        text = dump_text(rt);
        if (!text)
            return;
        char *b1 = block_of(text, id_fd), *b2 = block_of(text, id_sleep_dl),
             *b3 = block_of(text, id_await), *b4 = block_of(text, id_sleep),
             *b5 = block_of(text, id_done);
        int ready = strstr(b1, "waits on") && strstr(b2, "waits on") && strstr(b3, "waits on") &&
                    strstr(b4, "waits on") && strstr(b5, "finished");
        free(b1), free(b2), free(b3), free(b4), free(b5);
        if (ready)
            break;
        sleep_ms(5);
    }
    if (getenv("DUMP_SHOW"))
        fputs(text, stdout);

    char want[256];
    snprintf(want, sizeof want, "coro_dump: end of runtime ");
    CHECK_HAS(text, want);
    CHECK_HAS(text, ": 9 coroutines\n");
    CHECK_HAS(text, check_mode ? "backtraces are captured at each suspension"
                               : "backtraces are not captured: run with COFRAME_CHECK=1");
    char *b;

    /* Suspended, token held by the program. */
    b = block_of(text, id_park);
    CHECK_HAS(b, ": suspended; promise held; token held by the user\n");
    CHECK(strstr(b, " on worker 0: ") || strstr(b, " on worker 1: "));
    if (check_mode) {
        CHECK_HAS(b, "  backtrace at its suspension:\n");
        CHECK_HAS(b, " parked_in_dump_test+0x");
        CHECK_HAS(b, " coro_suspend+0x");
        snprintf(want, sizeof want, "(%s+0x", program_invocation_short_name);
        CHECK_HAS(b, want);
    } else {
        CHECK_HAS(b, "  backtrace: not captured (COFRAME_CHECK=1 captures one at each suspension)");
        snprintf(want, sizeof want, "in gdb: coframe bt %llu", (unsigned long long)id_park);
        CHECK_HAS(b, want);
    }
    free(b);

    /* A descriptor wait with a deadline. */
    b = block_of(text, id_fd);
    CHECK_HAS(b, ": waiting in the library; promise held; token held by the library\n");
    snprintf(want, sizeof want, "  waits on: fd %d readable, deadline %lld ns (in ", pipe_fds[0],
             (long long)deadline);
    CHECK_HAS(b, want);
    if (check_mode)
        CHECK_HAS(b, " coro_wait_fd+0x");
    free(b);

    /* Sleeps. */
    b = block_of(text, id_sleep);
    CHECK_HAS(b, "  waits on: sleep with no deadline (until cancelled)\n");
    free(b);
    b = block_of(text, id_sleep_dl);
    snprintf(want, sizeof want, "  waits on: sleep until %lld ns (in ", (long long)deadline);
    CHECK_HAS(b, want);
    if (check_mode)
        CHECK_HAS(b, " coro_sleep_until+0x");
    free(b);

    /* An await of a child that is suspended; the child's promise is the
     * await's. */
    b = block_of(text, id_await);
    snprintf(want, sizeof want, "  waits on: await of coroutine %llu\n",
             (unsigned long long)id_child);
    CHECK_HAS(b, want);
    CHECK_HAS(b, ": waiting in the library; promise held; token held by the library; "
                 "cancel-returns mode\n");
    if (check_mode)
        CHECK_HAS(b, " coro_await+0x");
    free(b);
    b = block_of(text, id_child);
    CHECK_HAS(b, ": suspended; promise held by an await; token held by the user\n");
    free(b);

    /* Running or queued. */
    b = block_of(text, id_spin);
    CHECK_HAS(b, ": runnable (queued or running); promise held; token none\n");
    CHECK_HAS(b, "  backtrace: none while it runs or is queued");
    free(b);

    /* Finished, its promise not yet awaited. */
    b = block_of(text, id_done);
    CHECK_HAS(b, ": finished; promise held; token none\n");
    CHECK(strstr(b, "backtrace") == NULL);
    free(b);

    /* Cancelled in cancel-returns mode while its token is out. */
    b = block_of(text, id_cr);
    CHECK_HAS(b, ": suspended, cancelled (CORO_ECANCELED once its token is consumed); promise "
                 "consumed; token held by the user; cancel-returns mode; cancel requested\n");
    free(b);

    /* Another runtime's coroutine is not this one's, and the other
     * runtime's dump holds it alone. */
    snprintf(want, sizeof want, "coroutine %llu ", (unsigned long long)id_other);
    CHECK(strstr(text, want) == NULL);
    free(text);
    text = dump_text(rt2);
    if (text) {
        CHECK_HAS(text, want);
        CHECK_HAS(text, ": 1 coroutines\n");
        CHECK(strstr(text, "coroutine ") == strstr(text, want));
    }
    free(text);

    /* Everything ends. */
    CHECK_RC(coro_resume(t_park), CORO_OK);
    CHECK(write(pipe_fds[1], "x", 1) == 1);
    CHECK_RC(coro_cancel_async(p_sleep), CORO_OK);
    CHECK_RC(coro_cancel_async(p_sleep_dl), CORO_OK);
    CHECK_RC(coro_cancel_async(p_await), CORO_OK); /* cancels the child too */

    CHECK_RC(coro_resume(t_child), CORO_OK);       /* only drops the token */
    CHECK_RC(coro_resume(t_cr), CORO_OK);          /* the body gets CORO_ECANCELED */
    CHECK_RC(coro_resume(t_other), CORO_OK);
    atomic_store(&stop, 1);
    void *r = NULL;
    CHECK_RC(coro_await(p_park, &r), CORO_OK);
    CHECK_RC(coro_await(p_fd, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_await(p_spin, NULL), CORO_OK);
    CHECK_RC(coro_await(p_done, NULL), CORO_OK);
    CHECK_RC(coro_await(p_other, NULL), CORO_OK);
    /* The cancelled ones (p_cr's promise went with its cancel) end on
     * their own. */
    CHECK_FRAMES_BACK_TO(base, TIMEOUT_MS);
    text = dump_text(rt);
    if (text)
        CHECK_HAS(text, ": 0 coroutines\n");
    free(text);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    CHECK_RC(coro_runtime_shutdown(rt2), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
}

/* ---------------------------------------------------------------- sync waits */

struct sync_env {
    coro_mutex *m;
    coro_cond *c;
    coro_chan *ch;
    int64_t deadline;
    _Atomic uint64_t *id;
};

static void *lock_body(void *envp)
{
    struct sync_env *e = envp;
    atomic_store(e->id, coro_self_id());
    int rc = coro_mutex_lock(e->m, e->deadline);
    if (rc == CORO_OK)
        coro_mutex_unlock(e->m);
    return (void *)(intptr_t)rc;
}

static void *cond_body(void *envp)
{
    struct sync_env *e = envp;
    if (coro_mutex_lock(e->m, -1) != CORO_OK)
        return (void *)1;
    atomic_store(e->id, coro_self_id());
    int rc = coro_cond_wait(e->c, e->m, -1);
    coro_mutex_unlock(e->m);
    return (void *)(intptr_t)rc;
}

static void *recv_body(void *envp)
{
    struct sync_env *e = envp;
    atomic_store(e->id, coro_self_id());
    uint64_t v = 0;
    int rc = coro_chan_recv(e->ch, &v, -1);
    return (void *)(intptr_t)(rc == CORO_OK ? (int)v : rc);
}

static void *send_body(void *envp)
{
    struct sync_env *e = envp;
    atomic_store(e->id, coro_self_id());
    uint64_t v = 9;
    return (void *)(intptr_t)coro_chan_send(e->ch, &v, -1);
}

/* A coroutine waiting on each kind of sync object, as the dump names it. */
static void test_sync_waits(void)
{
    coro_runtime *rt = check_runtime(1);
    REQUIRE(rt != NULL);
    coro_mutex *m, *m2;
    coro_cond *c;
    coro_chan *rendezvous, *full;
    REQUIRE_RC(coro_mutex_new(&m), CORO_OK);
    REQUIRE_RC(coro_mutex_new(&m2), CORO_OK);
    REQUIRE_RC(coro_cond_new(&c), CORO_OK);
    REQUIRE_RC(coro_chan_new(8, 0, &rendezvous), CORO_OK);
    REQUIRE_RC(coro_chan_new(8, 1, &full), CORO_OK);
    uint64_t item = 7;
    REQUIRE_RC(coro_chan_send(full, &item, 0), CORO_OK);
    REQUIRE_RC(coro_mutex_lock(m, -1), CORO_OK); /* held here: the coroutine waits */
    int64_t deadline = coro_now() + MINUTE_NS;

    _Atomic uint64_t id_lock = 0, id_cond = 0, id_recv = 0, id_send = 0;
    struct sync_env le = { m, NULL, NULL, deadline, &id_lock };
    struct sync_env ce = { m2, c, NULL, -1, &id_cond };
    struct sync_env re = { NULL, NULL, rendezvous, -1, &id_recv };
    struct sync_env se = { NULL, NULL, full, -1, &id_send };
    coro_promise p_lock, p_cond, p_recv, p_send;
    REQUIRE_RC(coro_spawn(rt, lock_body, &le, sizeof le, NULL, 0, &p_lock), CORO_OK);
    REQUIRE_RC(coro_spawn(rt, cond_body, &ce, sizeof ce, NULL, 0, &p_cond), CORO_OK);
    REQUIRE_RC(coro_spawn(rt, recv_body, &re, sizeof re, NULL, 0, &p_recv), CORO_OK);
    REQUIRE_RC(coro_spawn(rt, send_body, &se, sizeof se, NULL, 0, &p_send), CORO_OK);
    WAIT_UNTIL(id_lock && id_cond && id_recv && id_send, TIMEOUT_MS);

    char *text = NULL, *b[4] = { 0 };
    uint64_t ids[4] = { id_lock, id_cond, id_recv, id_send };
    for (int i = 0; i < 200; i++) {
        free(text);
        text = dump_text(rt);
        if (!text)
            return;
        int ready = 1;
        for (int k = 0; k < 4; k++) {
            free(b[k]);
            b[k] = block_of(text, ids[k]);
            ready = ready && strstr(b[k], "waits on");
        }
        if (ready)
            break;
        sleep_ms(5);
    }
    if (getenv("DUMP_SHOW"))
        fputs(text, stdout);
    char want[256];
    snprintf(want, sizeof want, "  waits on: lock of mutex %p, deadline %lld ns (in ", (void *)m,
             (long long)deadline);
    CHECK_HAS(b[0], want);
    snprintf(want, sizeof want, "  waits on: signal of condition %p, no deadline\n", (void *)c);
    CHECK_HAS(b[1], want);
    snprintf(want, sizeof want, "  waits on: item from channel %p (receive), no deadline\n",
             (void *)rendezvous);
    CHECK_HAS(b[2], want);
    snprintf(want, sizeof want, "  waits on: room in channel %p (send), no deadline\n",
             (void *)full);
    CHECK_HAS(b[3], want);
    if (check_mode) {
        CHECK_HAS(b[0], " coro_mutex_lock+0x");
        CHECK_HAS(b[1], " coro_cond_wait+0x");
        CHECK_HAS(b[2], " coro_chan_recv+0x");
        CHECK_HAS(b[3], " coro_chan_send+0x");
    }
    for (int k = 0; k < 4; k++)
        free(b[k]);
    free(text);

    /* Everything ends. */
    CHECK_RC(coro_mutex_unlock(m), CORO_OK);
    CHECK_RC(coro_mutex_lock(m2, -1), CORO_OK);
    CHECK_RC(coro_cond_signal(c), CORO_OK);
    CHECK_RC(coro_mutex_unlock(m2), CORO_OK);
    item = 5;
    CHECK_RC(coro_chan_send(rendezvous, &item, MINUTE_NS + coro_now()), CORO_OK);
    CHECK_RC(coro_chan_recv(full, &item, MINUTE_NS + coro_now()), CORO_OK);
    void *r = NULL;
    CHECK_RC(coro_await(p_lock, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_await(p_cond, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_await(p_recv, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, 5);
    CHECK_RC(coro_await(p_send, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    CHECK_RC(coro_chan_free(rendezvous), CORO_OK);
    CHECK_RC(coro_chan_free(full), CORO_OK);
    CHECK_RC(coro_cond_free(c), CORO_OK);
    CHECK_RC(coro_mutex_free(m2), CORO_OK);
    CHECK_RC(coro_mutex_free(m), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
}

/* ---------------------------------------------------------------- from a coroutine */

struct inner_env {
    coro_runtime *rt;
    int fd;
};

static void *dump_from_inside(void *envp)
{
    struct inner_env *e = envp;
    return (void *)(intptr_t)coro_dump(e->rt, e->fd);
}

static void test_from_coroutine(void)
{
    coro_runtime *rt = check_runtime(1);
    REQUIRE(rt != NULL);
    FILE *f = tmpfile();
    REQUIRE(f != NULL);
    struct inner_env e = { rt, fileno(f) };
    coro_promise p;
    REQUIRE_RC(coro_spawn(rt, dump_from_inside, &e, sizeof e, NULL, 0, &p), CORO_OK);
    void *r = (void *)1;
    CHECK_RC(coro_await(p, &r), CORO_OK);
    CHECK_EQ((intptr_t)r, CORO_OK);
    char buf[4096] = { 0 };
    CHECK(pread(fileno(f), buf, sizeof buf - 1, 0) > 0);
    /* The dumping coroutine itself runs. Its promise is held by the
     * user until this thread's coro_await has begun, which may come after
     * the dump (a TSan run under load saw that). */
    CHECK(strstr(buf, ": runnable (queued or running); promise held by an await; token none\n") ||
          strstr(buf, ": runnable (queued or running); promise held by the user; token none\n"));
    CHECK_HAS(buf, ": 1 coroutines\n");
    fclose(f);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
}

/* ---------------------------------------------------------------- under change */

struct churn_env {
    atomic_int *stop;
};

static void resume_at_once(coro_token t, void *arg)
{
    (void)arg;
    coro_resume(t);
}

static void *churn_body(void *envp)
{
    struct churn_env *e = envp;
    while (!atomic_load(e->stop)) {
        if (coro_suspend(resume_at_once, NULL) != CORO_OK)
            break;
        coro_sleep_until(coro_now() + 1000);
        coro_yield();
    }
    return NULL;
}

/* Coroutines that park, wake and yield all the time while the dump reads
 * them: the dump never crashes (the ASan and valgrind runs) and every
 * coroutine appears in a consistent state. */
static void test_under_change(void)
{
    coro_runtime *rt = check_runtime(2);
    REQUIRE(rt != NULL);
    atomic_int stop = 0;
    struct churn_env e = { &stop };
    enum { N = 8 };
    coro_promise p[N];
    for (int i = 0; i < N; i++)
        REQUIRE_RC(coro_spawn(rt, churn_body, &e, sizeof e, NULL, 0, &p[i]), CORO_OK);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    REQUIRE(devnull >= 0);
    for (int i = 0; i < 300; i++)
        if (!CHECK_RC(coro_dump(rt, devnull), CORO_OK))
            break;
    char *text = dump_text(rt);
    if (text) {
        CHECK_HAS(text, ": 8 coroutines\n");
        CHECK(strstr(text, "between states") == NULL);
    }
    free(text);
    atomic_store(&stop, 1);
    for (int i = 0; i < N; i++)
        CHECK_RC(coro_await(p[i], NULL), CORO_OK);
    close(devnull);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
}

/* ---------------------------------------------------------------- misuse */

static void test_misuse(void)
{
    coro_runtime *rt = check_runtime(1);
    REQUIRE(rt != NULL);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    REQUIRE(devnull >= 0);
    CHECK_RC(coro_dump(NULL, devnull), CORO_EINVAL);
    CHECK_RC(coro_dump(rt, -1), CORO_EINVAL);

    /* A descriptor that is not open. */
    int closed = dup(devnull);
    REQUIRE(closed >= 0);
    close(closed);
    errno = 0;
    CHECK_RC(coro_dump(rt, closed), CORO_EIO);
    CHECK_EQ(errno, EBADF);

    /* Open, but not for writing. */
    int pipe_fds[2];
    REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
    errno = 0;
    CHECK_RC(coro_dump(rt, pipe_fds[0]), CORO_EIO);
    CHECK_EQ(errno, EBADF);

    /* A pipe nobody reads (SIGPIPE ignored: EPIPE). */
    close(pipe_fds[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    CHECK_RC(coro_dump(rt, pipe_fds[1]), CORO_EIO);
    CHECK_EQ(errno, EPIPE);
    close(pipe_fds[1]);

    CHECK_RC(coro_dump(rt, devnull), CORO_OK);
    CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    CHECK_RC(coro_dump(rt, devnull), CORO_ESHUTDOWN);
    close(devnull);
}

int main(void)
{
    check_init("dump");
    const char *c = getenv("COFRAME_CHECK");
    check_mode = c && strcmp(c, "1") == 0;
    printf("dump: check mode %s\n", check_mode ? "on (COFRAME_CHECK=1)" : "off");
    test_states();
    test_sync_waits();
    test_from_coroutine();
    test_under_change();
    test_misuse();
    return check_summary();
}
