//! What ThreadSanitizer cannot see for itself, announced to it.
//!
//! The library is not instrumented (stable Rust has no `-Zsanitizer`), so a
//! TSan run of a C program sees the program's own accesses and the libc
//! calls the library makes (`malloc`, `free`, `memcpy`), but neither the
//! atomics and futex locks that order them nor the stack switches. Under
//! the `tsan` feature this module tells it, through the TSan runtime's
//! public interface (`sanitizer/tsan_interface.h`), present in every
//! `-fsanitize=thread` process. In every other build `acquire`/`release`
//! are empty `#[inline(always)]` functions: the default build's code is
//! unchanged.
//!
//! # Rules
//!
//! 1. Happens-before: `release(x)` before the store or compare-exchange
//!    that publishes through `x`, `acquire(x)` after every load of `x` that
//!    may observe such a store. The state word (`frame/state.rs`) is
//!    announced where it changes hands.
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

#[cfg(all(feature = "tsan", not(loom)))]
mod tsan {
    use core::ffi::c_void;

    // The TSan runtime's public interface (tsan_interface.h); the symbols
    // resolve from libtsan in the process that loads the library.
    extern "C" {
        pub fn __tsan_acquire(addr: *mut c_void);
        pub fn __tsan_release(addr: *mut c_void);
    }
}
