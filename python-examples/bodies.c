/*
 * bodies.c -> libbodies.so: coroutine bodies, written in C, for the Python
 * example (example.py) to spawn through ctypes. A Python function cannot
 * be a body that suspends (docs/PYTHON.md, "What cannot work"), so every
 * body that suspends lives here; Python spawns, awaits, resumes and
 * cancels them from its own threads.
 *
 * Each body registers a defer, each environment an env_drop, and both
 * count in `counters`, so Python can see that every defer ran exactly
 * once, however the coroutine ended.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <coframe.h>

/* The indexes of bodies_count; example.py's Counter lists the same. */
enum {
    BODIES_STARTED,   /* bodies that began to run */
    BODIES_DEFERS,    /* defers run: once per body that started */
    BODIES_ERRDEFERS, /* errdefers run: once per cancelled body that started */
    BODIES_DROPS,     /* env_drops run: once per frame, started or not */
    BODIES_CONTINUED, /* park bodies that went on after their suspension */
    BODIES_LOST,      /* tokens on_suspend could not send (a full channel) */
    BODIES_NCOUNTERS
};

static _Atomic uint64_t counters[BODIES_NCOUNTERS];

uint64_t bodies_count(int which)
{
    return which >= 0 && which < BODIES_NCOUNTERS ? atomic_load(&counters[which]) : UINT64_MAX;
}

void bodies_reset(void)
{
    for (int i = 0; i < BODIES_NCOUNTERS; i++)
        atomic_store(&counters[i], 0);
}

/* sizeof of the header's structs, as the C compiler lays them out: the
 * test compares them with coframe.py's ctypes.Structure. */
size_t bodies_sizeof(int which)
{
    switch (which) {
    case 0:
        return sizeof(coro_config);
    case 1:
        return sizeof(coro_promise);
    case 2:
        return sizeof(coro_token);
    default:
        return 0;
    }
}

static void count(void *arg)
{
    atomic_fetch_add((_Atomic uint64_t *)arg, 1);
}

/* Every body's env_drop (pass it to coro_spawn as `drop`). */
void bodies_drop(void *env)
{
    (void)env;
    count(&counters[BODIES_DROPS]);
}

/* The start of every body: count it, register its defer and errdefer. */
static void started(void)
{
    count(&counters[BODIES_STARTED]);
    coro_defer(count, &counters[BODIES_DEFERS]);
    coro_errdefer(count, &counters[BODIES_ERRDEFERS]);
}

/* compute: returns 1 + 2 + ... + n without suspending. */
struct compute_env {
    int64_t n;
};

void *bodies_compute(void *envp)
{
    struct compute_env *e = envp;
    started();
    int64_t sum = 0;
    for (int64_t i = 1; i <= e->n; i++)
        sum += i;
    return (void *)(intptr_t)sum;
}

/* park: suspends once; its on_suspend callback sends {promise id, token}
 * to a channel that a Python thread receives from (coro_chan_recv blocks
 * a plain thread). Once resumed, it returns `value`. */
struct park_env {
    coro_chan *tokens; /* items: struct parked */
    uint64_t self;     /* the body's coro_self_id(): its promise's id */
    int64_t value;
};

struct parked {
    uint64_t promise;
    coro_token token;
};

/* Runs on the worker after the switch, outside any coroutine: a send with
 * room in the channel succeeds there, one without answers CORO_ESTATE. */
static void send_token(coro_token token, void *arg)
{
    struct park_env *e = arg;
    struct parked item = { e->self, token };
    if (coro_chan_send(e->tokens, &item, 0) != CORO_OK)
        count(&counters[BODIES_LOST]);
}

void *bodies_park(void *envp)
{
    struct park_env *e = envp;
    e->self = coro_self_id();
    started();
    if (coro_suspend(send_token, e) != CORO_OK)
        return NULL;
    count(&counters[BODIES_CONTINUED]);
    return (void *)(intptr_t)e->value;
}

/* sleep: sleeps until deadline_ns (coro_now() clock; -1: until
 * cancelled), then returns `value`. */
struct sleep_env {
    int64_t deadline_ns;
    int64_t value;
};

void *bodies_sleep(void *envp)
{
    struct sleep_env *e = envp;
    started();
    if (coro_sleep_until(e->deadline_ns) != CORO_OK)
        return NULL;
    return (void *)(intptr_t)e->value;
}

/* park_with: suspends once with the caller's on_suspend callback (a
 * Python one, say), then returns `value`. */
struct park_with_env {
    coro_on_suspend on_suspend;
    void *arg;
    int64_t value;
};

void *bodies_park_with(void *envp)
{
    struct park_with_env *e = envp;
    started();
    if (coro_suspend(e->on_suspend, e->arg) != CORO_OK)
        return NULL;
    count(&counters[BODIES_CONTINUED]);
    return (void *)(intptr_t)e->value;
}
