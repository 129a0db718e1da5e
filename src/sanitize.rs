//! What ThreadSanitizer cannot see for itself, announced to it.
//!
//! The library is not instrumented (stable Rust has no `-Zsanitizer`), so a
//! TSan run of a C program sees the program's own accesses and the libc
//! calls the library makes (`malloc`, `free`, `memcpy`), but neither the
//! atomics and futex locks that order them nor the stack switches. Under
//! the `tsan` feature this module tells it, through the TSan runtime's
//! public interface (`sanitizer/tsan_interface.h`), present in every
//! `-fsanitize=thread` process. In every other build `acquire`/`release`
//! are empty `#[inline(always)]` functions, `Fiber` is a zero-sized type
//! whose methods do nothing, and `Mutex` is std's own: the
//! default build's code is unchanged. docs/SANITIZERS.md is the user's side.
//!
//! # Rules
//!
//! 1. Happens-before: `release(x)` before the store or compare-exchange
//!    that publishes through `x`, `acquire(x)` after every load of `x` that
//!    may observe such a store. The state word (`frame/state.rs`), the await
//!    handshake (`Slot::awaiter`), the blocking awaiter's sleep and wake-up
//!    and the result are announced where they happen. Every std lock the
//!    library takes is a `Mutex` from here, which acquires when
//!    locked and releases when unlocked.
//! 2. A release before a compare-exchange that then fails publishes a
//!    little early. That can hide a race, never invent one.
//! 3. Each coroutine runs as a TSan fiber, taken when its `Context` is made
//!    and given back when its stack is. The worker switches to it around
//!    every resume (`Fiber::run`) with synchronisation (flags 0): the switch
//!    orders the worker's past before the body's next step and the body's
//!    last step before the worker's next, which is true, since both run on
//!    one thread one after the other.
//! 4. Fibers are reused. TSan's `__tsan_create_fiber` costs about half a
//!    millisecond (it zeroes and maps most of a megabyte), which would be
//!    most of the time of a stress test. A given-back fiber's shadow call
//!    stack may still hold the frames of a body that was abandoned while
//!    suspended (rule 4 in `frame/mod.rs`); they are popped before reuse
//!    (`tsan::clean`), or the fiber is destroyed when that cannot be done.
//!    Reuse orders the old coroutine before the new one, which the stack
//!    pool's lock does anyway.
//! 5. A new edge between threads (an atomic handshake, a lock, a new kind
//!    of wait) needs its annotation here, or TSan reports the accesses it
//!    orders as races.

#[cfg(all(feature = "tsan", feature = "asan"))]
compile_error!(
    "features `tsan` and `asan` (or `sanitize`) exclude each other: a process \
     has one sanitizer runtime, and corosensei's ASan hooks do not exist in \
     the TSan runtime"
);

/// What happened on this thread before now happens before whatever follows
/// an `acquire(addr)` on another thread (rule 1).
#[inline(always)]
pub fn release<T: ?Sized>(addr: *const T) {
    #[cfg(all(feature = "tsan", not(loom)))]
    // SAFETY: __tsan_release records a synchronisation event keyed by the
    // address; it does not access the memory.
    unsafe {
        tsan::__tsan_release(addr.cast_mut().cast())
    };
    #[cfg(not(all(feature = "tsan", not(loom))))]
    let _ = addr;
}

/// Everything released on `addr` so far happens before what this thread
/// does next (rule 1).
#[inline(always)]
pub fn acquire<T: ?Sized>(addr: *const T) {
    #[cfg(all(feature = "tsan", not(loom)))]
    // SAFETY: as in `release`: an event keyed by the address, no access.
    unsafe {
        tsan::__tsan_acquire(addr.cast_mut().cast())
    };
    #[cfg(not(all(feature = "tsan", not(loom))))]
    let _ = addr;
}

/// Ends ASan's record of the coroutine running on `[bottom, bottom + size)`
/// (the current stack) without leaving it: a switch from this stack to
/// itself whose save slot is null, which tells ASan the old fiber is gone
/// and frees the fake stack it kept for it (`detect_stack_use_after_return`).
/// corosensei's own last switch out of a returning coroutine saves the fake
/// stack instead, so without this every coroutine leaks one.
///
/// # Safety
/// Called on the coroutine's own stack, whose bounds these are, with no
/// switch in progress, by a coroutine that runs no instrumented code
/// before it returns.
#[cfg(all(feature = "asan", not(loom)))]
pub unsafe fn asan_end_fiber(bottom: usize, size: usize) {
    extern "C" {
        fn __sanitizer_start_switch_fiber(save: *mut *mut u8, bottom: *const u8, size: usize);
        fn __sanitizer_finish_switch_fiber(
            save: *mut u8,
            bottom_old: *mut *const u8,
            size_old: *mut usize,
        );
    }
    let (mut old_bottom, mut old_size) = (core::ptr::null(), 0);
    // SAFETY: a null save destroys the current fake stack; the switch is
    // to the stack we are on, and is finished at once, with no fake stack
    // to restore.
    unsafe {
        __sanitizer_start_switch_fiber(core::ptr::null_mut(), bottom as *const u8, size);
        __sanitizer_finish_switch_fiber(core::ptr::null_mut(), &mut old_bottom, &mut old_size);
    }
}

#[cfg(all(feature = "tsan", not(loom)))]
pub use tsan::{Fiber, Mutex, MutexGuard};

#[cfg(all(not(feature = "tsan"), not(loom)))]
pub use noop::Fiber;
#[cfg(all(not(feature = "tsan"), not(loom)))]
pub use std::sync::{Mutex, MutexGuard};

#[cfg(all(not(feature = "tsan"), not(loom)))]
mod noop {
    /// A coroutine's identity for TSan (rule 3): nothing without `tsan`.
    pub struct Fiber;

    impl Fiber {
        #[inline(always)]
        pub fn new() -> Fiber {
            Fiber
        }

        /// Runs `f`, which switches to the coroutine's stack and back.
        #[inline(always)]
        pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
            f()
        }
    }
}

#[cfg(all(feature = "tsan", not(loom)))]
mod tsan {
    use core::ffi::{c_char, c_int, c_uint, c_void};
    use core::mem::ManuallyDrop;
    use core::ops::{Deref, DerefMut};
    use std::sync::{LockResult, PoisonError};

    // The TSan runtime's public interface (tsan_interface.h); the symbols
    // resolve from libtsan in the process that loads the library.
    extern "C" {
        pub fn __tsan_acquire(addr: *mut c_void);
        pub fn __tsan_release(addr: *mut c_void);
        fn __tsan_get_current_fiber() -> *mut c_void;
        fn __tsan_create_fiber(flags: c_uint) -> *mut c_void;
        fn __tsan_destroy_fiber(fiber: *mut c_void);
        fn __tsan_switch_to_fiber(fiber: *mut c_void, flags: c_uint);
        fn __tsan_set_fiber_name(fiber: *mut c_void, name: *const c_char);
        fn __tsan_get_alloc_stack(
            addr: *mut c_void,
            trace: *mut *mut c_void,
            size: usize,
            thread_id: *mut c_int,
            os_id: *mut u64,
        ) -> c_int;
        fn __tsan_func_exit();
    }

    /// `__tsan_switch_to_fiber_no_sync`: switch without a happens-before edge.
    const NO_SYNC: c_uint = 1;

    /// Deepest shadow call stack `clean` pops; a deeper one is destroyed.
    const FRAMES_MAX: usize = 1024;

    /// A coroutine's identity for TSan (rules 3 and 4).
    pub struct Fiber {
        raw: *mut c_void,
        /// Ever switched to: its shadow stack may hold frames.
        entered: core::cell::Cell<bool>,
    }

    /// Idle fibers, and the shadow-stack depth TSan reports for an empty one.
    /// A std lock, invisible to TSan on purpose: handing a fiber over adds
    /// no edge of its own (rule 4). Creating fibers under it also keeps
    /// `clean` (which reads TSan's thread registry without TSan's lock) from
    /// running while our own creations grow that registry.
    ///
    /// The idle fibers sit in a fixed array, not a `Vec`: TSan intercepts
    /// `realloc`, and a `Vec` grown by a worker and then by a foreign thread
    /// that gave a fiber back, under a lock TSan cannot see, was reported
    /// as a race on the buffer (about 1 run in 10 of race-tsan).
    struct Pool {
        idle: [Raw; IDLE_MAX],
        len: usize,
        empty_depth: Option<usize>,
    }

    /// Idle fibers kept for reuse; a fiber given back beyond these is
    /// destroyed. The TSan tests keep at most a few hundred coroutines alive.
    const IDLE_MAX: usize = 1024;

    impl Pool {
        fn pop(&mut self) -> Option<*mut c_void> {
            self.len = self.len.checked_sub(1)?;
            Some(self.idle[self.len].0)
        }

        /// False if the pool is full.
        fn push(&mut self, raw: *mut c_void) -> bool {
            let Some(free) = self.idle.get_mut(self.len) else {
                return false;
            };
            free.0 = raw;
            self.len += 1;
            true
        }
    }

    struct Raw(*mut c_void);
    // SAFETY: a TSan fiber handle may be used from any thread; the pool
    // holds only fibers nobody runs.
    unsafe impl Send for Raw {}

    static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool {
        idle: [const { Raw(core::ptr::null_mut()) }; IDLE_MAX],
        len: 0,
        empty_depth: None,
    });

    fn pool() -> std::sync::MutexGuard<'static, Pool> {
        POOL.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl Fiber {
        /// An idle fiber, or a new one (the caller's past happens before
        /// it either way: see rule 4 for the reused kind).
        pub fn new() -> Fiber {
            let mut pool = pool();
            let raw = match pool.pop() {
                Some(raw) => raw,
                None => {
                    // SAFETY: no precondition; the fiber is not entered
                    // until `run`. TSan copies the static name.
                    let raw = unsafe { __tsan_create_fiber(0) };
                    // SAFETY: as above.
                    unsafe { __tsan_set_fiber_name(raw, c"coframe coroutine".as_ptr()) };
                    if pool.empty_depth.is_none() {
                        // SAFETY: a fresh fiber, which nobody runs.
                        pool.empty_depth = unsafe { shadow_depth(raw) };
                    }
                    raw
                }
            };
            Fiber {
                raw,
                entered: core::cell::Cell::new(false),
            }
        }

        /// Runs `f` (which switches to the coroutine's stack and back) as
        /// this fiber, then gives the caller its own identity back.
        #[inline(always)]
        pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
            struct Back(*mut c_void);
            impl Drop for Back {
                fn drop(&mut self) {
                    // SAFETY: the fiber that called `run`, still alive.
                    unsafe { __tsan_switch_to_fiber(self.0, 0) };
                }
            }
            self.entered.set(true);
            // SAFETY: `raw` is a live fiber that runs nowhere else (its
            // coroutine is resumed by one thread at a time), and `f`
            // switches to its stack right after; flags 0 synchronise the
            // switch (rule 3).
            let _back = unsafe {
                let back = Back(__tsan_get_current_fiber());
                __tsan_switch_to_fiber(self.raw, 0);
                back
            };
            f()
        }
    }

    impl Drop for Fiber {
        /// Back to the pool, its shadow stack emptied (rule 4).
        fn drop(&mut self) {
            let mut pool = pool();
            let clean = !self.entered.get() || {
                // SAFETY: the coroutine is over (finished, or abandoned and
                // never to run again), so nobody runs this fiber.
                pool.empty_depth.is_some() && unsafe { clean(self.raw, pool.empty_depth) }
            };
            if !(clean && pool.push(self.raw)) {
                // SAFETY: as above; destroyed once, and not pooled.
                unsafe { __tsan_destroy_fiber(self.raw) };
            }
        }
    }

    /// The frames TSan reports for `fiber`'s shadow call stack, plus what a
    /// `malloc` call adds: the allocation stack of a block `fiber` mallocs
    /// is a copy of that stack. `None` if TSan does not say or the stack
    /// is deeper than `FRAMES_MAX`.
    ///
    /// # Safety
    /// Nobody runs `fiber`. The caller holds the pool lock.
    unsafe fn shadow_depth(fiber: *mut c_void) -> Option<usize> {
        // SAFETY: a short visit to a fiber nobody runs, without
        // synchronisation, and back.
        unsafe { visit(fiber, measure) }
    }

    /// Pops the frames left on `fiber`'s shadow stack by an abandoned body.
    /// False: they could not be counted; the fiber must not be reused.
    ///
    /// # Safety
    /// As for `shadow_depth`.
    unsafe fn clean(fiber: *mut c_void, empty: Option<usize>) -> bool {
        // SAFETY: as in `shadow_depth`.
        unsafe {
            visit(fiber, || match (measure(), empty) {
                (Some(n), Some(empty)) if n >= empty => {
                    for _ in empty..n {
                        __tsan_func_exit();
                    }
                    true
                }
                _ => false,
            })
        }
    }

    /// Runs `f` as `fiber`, with no happens-before edge either way.
    ///
    /// # Safety
    /// Nobody runs `fiber`.
    unsafe fn visit<R>(fiber: *mut c_void, f: impl FnOnce() -> R) -> R {
        // SAFETY: the caller's contract; switching identity without a
        // stack switch is allowed as long as we switch back before any
        // instrumented frame of the fiber runs.
        unsafe {
            let me = __tsan_get_current_fiber();
            __tsan_switch_to_fiber(fiber, NO_SYNC);
            let r = f();
            __tsan_switch_to_fiber(me, NO_SYNC);
            r
        }
    }

    /// The current shadow stack's depth plus the malloc interceptor's own.
    fn measure() -> Option<usize> {
        let bytes = FRAMES_MAX * core::mem::size_of::<*mut c_void>();
        // SAFETY: malloc/free of a block used as the trace buffer below.
        let buf = unsafe { libc::malloc(bytes) }.cast::<*mut c_void>();
        if buf.is_null() {
            return None;
        }
        let (mut tid, mut os_id) = (0, 0);
        // SAFETY: `buf` is a live heap block with room for FRAMES_MAX
        // entries; TSan writes at most that many.
        let n =
            unsafe { __tsan_get_alloc_stack(buf.cast(), buf, FRAMES_MAX, &mut tid, &mut os_id) };
        // SAFETY: allocated above, freed once.
        unsafe { libc::free(buf.cast()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 && n < FRAMES_MAX => Some(n),
            _ => None,
        }
    }

    /// std's `Mutex`, announced to TSan (rule 1): std locks with futexes,
    /// which TSan does not see. Only what the library uses is here.
    pub struct Mutex<T: ?Sized> {
        inner: std::sync::Mutex<T>,
    }

    pub struct MutexGuard<'a, T: ?Sized> {
        lock: *const (),
        guard: ManuallyDrop<std::sync::MutexGuard<'a, T>>,
    }

    fn map<G, H>(r: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
        match r {
            Ok(g) => Ok(f(g)),
            Err(e) => Err(PoisonError::new(f(e.into_inner()))),
        }
    }

    fn wrap<T: ?Sized>(lock: *const (), g: std::sync::MutexGuard<'_, T>) -> MutexGuard<'_, T> {
        super::acquire(lock);
        MutexGuard {
            lock,
            guard: ManuallyDrop::new(g),
        }
    }

    impl<T> Mutex<T> {
        pub const fn new(t: T) -> Mutex<T> {
            Mutex {
                inner: std::sync::Mutex::new(t),
            }
        }
    }

    impl<T: ?Sized> Mutex<T> {
        pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
            let lock = (self as *const Self).cast::<()>();
            map(self.inner.lock(), |g| wrap(lock, g))
        }

        pub fn get_mut(&mut self) -> LockResult<&mut T> {
            self.inner.get_mut()
        }
    }

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.guard
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.guard
        }
    }

    impl<T: ?Sized> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            super::release(self.lock);
            // SAFETY: dropped once, here.
            unsafe { ManuallyDrop::drop(&mut self.guard) };
        }
    }
}
