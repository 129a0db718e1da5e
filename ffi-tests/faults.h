/*
 * faults.h: allocation failures on demand, for the fault-injection runs.
 *
 * A program that includes this (once) replaces malloc, calloc, realloc,
 * posix_memalign, aligned_alloc and memalign for the whole process,
 * libcoframe.so included (the executable's definitions come first in
 * symbol lookup), and forwards them to glibc's own (__libc_malloc ...)
 * unless a failure is due:
 *
 *   faults_every(n)     every nth allocation fails (n > 0), counted over
 *                       all threads
 *   faults_one_in(n)    each allocation fails with probability 1/n
 *   faults_off()        none fails
 *   faults_injected()   how many failed so far
 *   faults_live_bytes() bytes allocated through these functions and not
 *                       yet freed (malloc_usable_size of each block), for
 *                       leak checks: glibc's own statistics count the
 *                       blocks its per-thread caches keep as in use
 *
 * A failed call returns NULL (posix_memalign: ENOMEM) with errno ENOMEM,
 * as glibc does when memory is exhausted. free() is never affected.
 * Plain builds only: ASan, TSan and valgrind bring their own allocators.
 */
#ifndef COFRAME_FFI_TESTS_FAULTS_H
#define COFRAME_FFI_TESTS_FAULTS_H

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_long faults_every_n;  /* 0: off */
static atomic_long faults_one_in_n; /* 0: off */
static atomic_long faults_count;
static atomic_long faults_failed;
static atomic_long faults_bytes;

static inline long faults_live_bytes(void)
{
    return atomic_load(&faults_bytes);
}

static inline void *faults_count_in(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&faults_bytes, (long)malloc_usable_size(p),
                                  memory_order_relaxed);
    return p;
}

static inline void faults_count_out(void *p)
{
    if (p)
        atomic_fetch_sub_explicit(&faults_bytes, (long)malloc_usable_size(p),
                                  memory_order_relaxed);
}

static inline void faults_off(void)
{
    atomic_store(&faults_every_n, 0);
    atomic_store(&faults_one_in_n, 0);
}

static inline void faults_every(long n)
{
    faults_off();
    atomic_store(&faults_count, 0);
    atomic_store(&faults_every_n, n);
}

static inline void faults_one_in(long n)
{
    faults_off();
    atomic_store(&faults_one_in_n, n);
}

static inline long faults_injected(void)
{
    return atomic_load(&faults_failed);
}

static int faults_due(void)
{
    long every = atomic_load_explicit(&faults_every_n, memory_order_relaxed);
    if (every > 0) {
        if ((atomic_fetch_add_explicit(&faults_count, 1, memory_order_relaxed) + 1) % every != 0)
            return 0;
    } else {
        long one_in = atomic_load_explicit(&faults_one_in_n, memory_order_relaxed);
        if (one_in <= 0)
            return 0;
        static _Thread_local uint64_t rng;
        if (rng == 0)
            rng = (uint64_t)(uintptr_t)&rng | 1;
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        if ((rng * 0x2545F4914F6CDD1DULL >> 33) % (uint64_t)one_in != 0)
            return 0;
    }
    atomic_fetch_add_explicit(&faults_failed, 1, memory_order_relaxed);
    errno = ENOMEM;
    return 1;
}

void *malloc(size_t n)
{
    return faults_due() ? NULL : faults_count_in(__libc_malloc(n));
}

void *calloc(size_t n, size_t size)
{
    return faults_due() ? NULL : faults_count_in(__libc_calloc(n, size));
}

void *realloc(void *p, size_t n)
{
    /* realloc(p, 0) frees: never a failure to inject. */
    if (n != 0 && faults_due())
        return NULL;
    size_t before = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q || n == 0)
        atomic_fetch_sub_explicit(&faults_bytes, (long)before, memory_order_relaxed);
    return faults_count_in(q);
}

void *memalign(size_t align, size_t n)
{
    return faults_due() ? NULL : faults_count_in(__libc_memalign(align, n));
}

void *aligned_alloc(size_t align, size_t n)
{
    return faults_due() ? NULL : faults_count_in(__libc_memalign(align, n));
}

void free(void *p)
{
    faults_count_out(p);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    if (faults_due())
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = faults_count_in(p);
    return 0;
}

#endif /* COFRAME_FFI_TESTS_FAULTS_H */
