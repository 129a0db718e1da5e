//! What ThreadSanitizer cannot see for itself, announced to it.
//!
//! The library is not instrumented (stable Rust has no `-Zsanitizer`), so a
//! TSan run of a C program sees the program's own accesses and the libc
//! calls the library makes (`malloc`, `free`, `memcpy`), but neither the
//! atomics and futex locks that order them nor the stack switches. Under
//! the `tsan` feature this module tells it, through the TSan runtime's
//! public interface (`sanitizer/tsan_interface.h`), present in every
//! `-fsanitize=thread` process. In every other build `acquire`/`release`
//! are empty `#[inline(always)]` functions and `Mutex`/`Condvar` are std's
//! own: the default build's code is unchanged.
//!
//! # Rules
//!
//! 1. Happens-before: `release(x)` before the store or compare-exchange
//!    that publishes through `x`, `acquire(x)` after every load of `x` that
//!    may observe such a store. The state word (`frame/state.rs`) is
//!    announced where it changes hands. Every std lock the library takes is
//!    a `Mutex`/`Condvar` from here, which acquires when locked and releases
//!    when unlocked.
//! 2. A release before a compare-exchange that then fails publishes a
//!    little early. That can hide a race, never invent one.
//! 3. A new edge between threads (an atomic handshake, a lock, a new kind
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

#[cfg(all(not(feature = "tsan"), not(loom)))]
pub use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(all(feature = "tsan", not(loom)))]
pub use tsan::{Condvar, Mutex, MutexGuard};

#[cfg(all(feature = "tsan", not(loom)))]
mod tsan {
    use core::ffi::c_void;
    use core::mem::ManuallyDrop;
    use core::ops::{Deref, DerefMut};
    use std::sync::{LockResult, PoisonError};

    // The TSan runtime's public interface (tsan_interface.h); the symbols
    // resolve from libtsan in the process that loads the library.
    extern "C" {
        pub fn __tsan_acquire(addr: *mut c_void);
        pub fn __tsan_release(addr: *mut c_void);
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

    /// std's `Condvar` for a `Mutex` from here.
    pub struct Condvar {
        inner: std::sync::Condvar,
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
            // SAFETY: dropped once, here; `Condvar::wait` takes the std
            // guard only out of a guard it never drops.
            unsafe { ManuallyDrop::drop(&mut self.guard) };
        }
    }

    impl Condvar {
        pub const fn new() -> Condvar {
            Condvar {
                inner: std::sync::Condvar::new(),
            }
        }

        /// Unlocks while it waits: a release before, an acquire after.
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
            let mut guard = ManuallyDrop::new(guard);
            let lock = guard.lock;
            super::release(lock);
            // SAFETY: `guard` is never dropped (ManuallyDrop), so the std
            // guard taken out of it is owned once, by the wait.
            let inner = unsafe { ManuallyDrop::take(&mut guard.guard) };
            map(self.inner.wait(inner), |g| wrap(lock, g))
        }

        pub fn notify_one(&self) {
            self.inner.notify_one();
        }
    }
}
