/*
 * dlopen.c: the library loaded at run time, as language bindings load it
 * (Python's ctypes, a plugin), not linked at startup. Its thread-locals
 * are then placed after the program started: in the static TLS block's
 * spare room if it fits, otherwise allocated per thread on first use
 * (make test runs it both ways: the second with
 * GLIBC_TUNABLES=glibc.rtld.optional_static_tls=0, which leaves no spare
 * room). Every coro_* call reaches the calling thread's context through
 * a thread-local, so a wrong context would show here as a coroutine that
 * does not know itself.
 *
 *   dlopen LIBRARY [COROUTINES=64] [YIELDS=1000]
 *
 * Coroutines on two workers each yield YIELDS times, checking after each
 * yield that coro_self_id() still names them, and return their env value.
 * The main thread awaits them all, then shuts the runtime down, closes
 * the library (which must stay loaded: it is linked -z nodelete, since its
 * fault handler stays installed) and opens it again for a second round.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "coframe.h"

struct api {
    int (*runtime_new)(const coro_config *, coro_runtime **);
    int (*runtime_shutdown)(coro_runtime *);
    int (*spawn)(coro_runtime *, coro_entry, const void *, size_t, coro_env_drop, uint32_t,
                 coro_promise *);
    int (*await_)(coro_promise, void **);
    int (*yield)(void);
    uint64_t (*self_id)(void);
};

static struct api api;
static long yields = 1000;

#define FAIL(...) do { fprintf(stderr, "dlopen: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p)
        FAIL("%s not found: %s", name, dlerror());
    return p;
}

struct env { uint64_t value; };

static void *body(void *e)
{
    const struct env *env = e;
    uint64_t me = api.self_id();
    if (me == 0)
        return NULL;
    for (long i = 0; i < yields; i++) {
        if (api.yield() != CORO_OK)
            return NULL;
        if (api.self_id() != me)
            return NULL;
    }
    return (void *)(uintptr_t)env->value;
}

static void round_trip(const char *path, long n)
{
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        FAIL("cannot load %s: %s", path, dlerror());
    *(void **)&api.runtime_new = sym(lib, "coro_runtime_new");
    *(void **)&api.runtime_shutdown = sym(lib, "coro_runtime_shutdown");
    *(void **)&api.spawn = sym(lib, "coro_spawn");
    *(void **)&api.await_ = sym(lib, "coro_await");
    *(void **)&api.yield = sym(lib, "coro_yield");
    *(void **)&api.self_id = sym(lib, "coro_self_id");

    if (api.self_id() != 0)
        FAIL("coro_self_id() is not 0 on the main thread");
    coro_config cfg = { .struct_size = sizeof cfg, .workers = 2 };
    coro_runtime *rt;
    if (api.runtime_new(&cfg, &rt) != CORO_OK)
        FAIL("coro_runtime_new failed");
    coro_promise *p = calloc((size_t)n, sizeof *p);
    if (!p)
        FAIL("out of memory");
    for (long i = 0; i < n; i++) {
        struct env env = { .value = 1000 + (uint64_t)i };
        if (api.spawn(rt, body, &env, sizeof env, NULL, 0, &p[i]) != CORO_OK)
            FAIL("coro_spawn %ld failed", i);
    }
    for (long i = 0; i < n; i++) {
        void *v = NULL;
        if (api.await_(p[i], &v) != CORO_OK)
            FAIL("coro_await %ld failed", i);
        if ((uintptr_t)v != 1000 + (uintptr_t)i)
            FAIL("coroutine %ld returned %lu: it lost track of itself", i, (unsigned long)(uintptr_t)v);
    }
    free(p);
    if (api.runtime_shutdown(rt) != CORO_OK)
        FAIL("coro_runtime_shutdown failed");
    if (dlclose(lib) != 0)
        FAIL("dlclose: %s", dlerror());
    /* The library must stay: its SIGSEGV handler (overflow reports) is
     * installed for the process, and runtime pointers stay valid handles
     * (linked with -z nodelete). */
    void *still = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!still)
        FAIL("dlclose unloaded the library: its fault handler would point at unmapped code");
    dlclose(still);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        FAIL("usage: dlopen LIBRARY [COROUTINES] [YIELDS]");
    long n = argc > 2 ? atol(argv[2]) : 64;
    yields = argc > 3 ? atol(argv[3]) : 1000;
    for (int round = 0; round < 2; round++)
        round_trip(argv[1], n);
    printf("dlopen: 2 rounds of %ld coroutines x %ld yields on 2 workers, each knew itself\n", n, yields);
    return 0;
}
