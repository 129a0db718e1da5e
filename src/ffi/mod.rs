//! The C ABI: `<coframe.h>` is generated from this module by cbindgen.
//!
//! Thin by rule: each function checks its pointers, calls the Rust core in
//! `crate::coro` or `crate::sched`, and turns the result into an `int`.
//! No panic crosses this boundary: `guard` aborts with a message instead,
//! because a panic here means the library's own invariants broke.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering::*};

use crate::coro::{self, Promise, Token};
use crate::error::Error;
use crate::sched::{Config, Runtime};

/// Library version, also in `COFRAME_VERSION_*`.
pub const COFRAME_VERSION_MAJOR: u32 = 0;
pub const COFRAME_VERSION_MINOR: u32 = 1;
pub const COFRAME_VERSION_PATCH: u32 = 0;

/// Success.
pub const CORO_OK: c_int = 0;
/// A NULL or zeroed handle, a bad flag or argument.
pub const CORO_EINVAL: c_int = -1;
/// The handle's reference was already consumed, or its frame is gone.
pub const CORO_ESTALE: c_int = -2;
/// Not allowed here, e.g. `coro_suspend` outside a coroutine.
pub const CORO_ESTATE: c_int = -3;
/// The coroutine was cancelled.
pub const CORO_ECANCELED: c_int = -4;
/// The deadline passed.
pub const CORO_ETIMEDOUT: c_int = -5;
/// Out of memory, stacks or frame slots.
pub const CORO_ENOMEM: c_int = -6;
/// A blocking lock noted with `coro_lock_note_acquire` is held.
pub const CORO_ELOCKHELD: c_int = -7;
/// The runtime is shutting down.
pub const CORO_ESHUTDOWN: c_int = -8;
/// The operating system failed; `errno` says why.
pub const CORO_EIO: c_int = -9;
/// `coro_mutex_trylock`: the mutex is held.
pub const CORO_EBUSY: c_int = -10;
/// The channel is closed.
pub const CORO_ECLOSED: c_int = -11;
/// Not an error: a call that would suspend began its wait in a foreign
/// frame (`coro_spawn_frame`); return from `resume`, and ask
/// `coro_frame_resumed` for the call's answer when the frame runs again.
pub const CORO_PENDING: c_int = 1;

/// Spawn flag: cancellation makes the pending or next suspension return
/// `CORO_ECANCELED` to the body instead of never returning (libdill's model).
pub const CORO_SPAWN_CANCEL_RETURNS: u32 = 1;
/// Spawn flag: the coroutine touches no thread-local state across
/// suspensions, so it may move between workers: to an idle worker that
/// resumes it, or from a busy worker's queue to an idle one.
pub const CORO_SPAWN_MIGRATABLE: u32 = 2;

/// `coro_wait_fd` events: the descriptor is readable.
pub const CORO_READABLE: u32 = 1;
/// `coro_wait_fd` events: the descriptor is writable.
pub const CORO_WRITABLE: u32 = 2;
/// `coro_wait_fd` flag, with `CORO_READABLE` and/or `CORO_WRITABLE`: keep
/// `fd` registered after the wait, so the next wait on it makes no system
/// call. The program then calls `coro_fd_forget(fd)` before it closes
/// `fd` (libdill's `fdclean`); see `coro_fd_forget`. Such waits are
/// edge-triggered, as tokio's are: wait only after a read or write came
/// up short or failed with `EAGAIN`. A high bit, so that the event bits
/// may grow. Linux; elsewhere accepted and ignored.
pub const CORO_KEEP: u32 = 0x100;

/// A runtime: workers, their queues, stacks. Opaque.
///
/// What C holds is this cell, which is never freed: shutdown empties it,
/// so a pointer used after its runtime was shut down (a second shutdown,
/// a late spawn) reads an empty cell and answers `CORO_ESHUTDOWN` instead
/// of reading freed memory. One cell (8 bytes, and 8 in `CELLS`) per
/// runtime ever made; cells are not reused, so a stale pointer never
/// reaches a newer runtime.
pub struct coro_runtime {
    /// The runtime (`Box::into_raw`); null once shut down.
    live: AtomicPtr<Runtime>,
}

/// Every cell made, so that they stay reachable (not leaks to LSan or
/// valgrind) for the life of the process. The `sanitize` mutex, as every
/// lock of the library, so that TSan sees what it orders.
static CELLS: crate::sanitize::Mutex<Vec<&'static coro_runtime>> =
    crate::sanitize::Mutex::new(Vec::new());

/// The live runtime behind `rt`, if it was not shut down.
///
/// # Safety
/// `rt` came from `coro_runtime_new` (cells are never freed). A call that
/// races with `coro_runtime_shutdown` of the same runtime is the caller's
/// race, as with any object being destroyed.
unsafe fn live_runtime<'a>(rt: *mut coro_runtime) -> Result<&'a Runtime, c_int> {
    // SAFETY: the caller's contract: `rt` is a cell, and cells live forever.
    let live = unsafe { &*rt }.live.load(Acquire);
    // SAFETY: non-null: the box is the cell's until shutdown.
    unsafe { live.as_ref() }.ok_or(CORO_ESHUTDOWN)
}

// The handles as C passes them live with the frame, which the layers
// below this one take them from; this layer only re-exports them.
pub use crate::frame::handle::{coro_promise, coro_token};

mod io;
pub use io::*;

/// Runtime settings. Zero in any field means the default.
#[repr(C)]
pub struct coro_config {
    /// `sizeof(coro_config)`: lets the struct grow.
    pub struct_size: u32,
    /// Worker threads; 0: one per available CPU.
    pub workers: u32,
    /// Usable stack bytes per coroutine; 0: 64 KiB. A guard page lies below.
    pub stack_size: usize,
}

/// A coroutine's body. `env` points at the frame's own copy of the bytes
/// given to `coro_spawn`; the return value is what `coro_await` yields.
pub type coro_entry = Option<unsafe extern "C" fn(env: *mut c_void) -> *mut c_void>;
/// Releases what the environment captured; runs once, after the defers.
/// (A foreign frame's `destroy` has this type too.)
pub type coro_env_drop = Option<unsafe extern "C" fn(env: *mut c_void)>;
/// Runs after a coroutine has switched out, with the token of that suspension.
pub type coro_on_suspend = Option<unsafe extern "C" fn(token: coro_token, arg: *mut c_void)>;
/// A deferred cleanup.
pub type coro_defer_fn = Option<unsafe extern "C" fn(arg: *mut c_void)>;

// The codes above are literals so cbindgen can print them; these checks
// keep them equal to `Error::code`.
const _: () = {
    assert!(CORO_EINVAL == Error::Invalid.code());
    assert!(CORO_ESTALE == Error::Stale.code());
    assert!(CORO_ESTATE == Error::State.code());
    assert!(CORO_ECANCELED == Error::Canceled.code());
    assert!(CORO_ETIMEDOUT == Error::TimedOut.code());
    assert!(CORO_ENOMEM == Error::NoMem.code());
    assert!(CORO_ELOCKHELD == Error::LockHeld.code());
    assert!(CORO_ESHUTDOWN == Error::Shutdown.code());
    assert!(CORO_EIO == Error::Io.code());
    assert!(CORO_EBUSY == Error::Busy.code());
    assert!(CORO_ECLOSED == Error::Closed.code());
    assert!(CORO_PENDING == Error::Pending.code());
    assert!(CORO_SPAWN_CANCEL_RETURNS == coro::SPAWN_CANCEL_RETURNS);
    assert!(CORO_SPAWN_MIGRATABLE == coro::SPAWN_MIGRATABLE);
    assert!(CORO_READABLE == crate::poll::READABLE);
    assert!(CORO_WRITABLE == crate::poll::WRITABLE);
    assert!(CORO_KEEP == crate::poll::KEEP);
};

/// The status of a call that suspended and was resumed (`Resumed`'s
/// values are the statuses), or of why it could not suspend.
fn resumption(r: crate::error::Result<crate::context::Resumed>) -> c_int {
    match r {
        Ok(resumed) => resumed.status(),
        Err(e) => e.code(),
    }
}

fn status(r: crate::error::Result<()>) -> c_int {
    match r {
        Ok(()) => CORO_OK,
        Err(e) => e.code(),
    }
}

/// `CORO_EINVAL`, out of line: a hot entry point's argument checks then
/// stay separate branches to a cold call.
#[cold]
#[inline(never)]
fn invalid() -> c_int {
    CORO_EINVAL
}

/// Runs `f`, aborting the process if it panics: a panic must not unwind into C.
fn guard<R>(f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::util::die("coframe: internal panic at the C boundary; aborting");
        }
    }
}

/// Creates a runtime and starts its workers. `cfg` may be NULL.
///
/// # Safety
/// `cfg` is NULL or points at a `coro_config` of `struct_size` bytes;
/// `out` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (NULL `out`, `struct_size` too small),
/// `CORO_ENOMEM`, `CORO_EIO` (a thread could not be started).
#[no_mangle]
pub unsafe extern "C" fn coro_runtime_new(
    cfg: *const coro_config,
    out: *mut *mut coro_runtime,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return CORO_EINVAL;
        }
        let config = if cfg.is_null() {
            Config::default()
        } else {
            // SAFETY: the caller passes a valid pointer; struct_size is read
            // first so an older, shorter struct is not over-read.
            let size = unsafe { ptr::addr_of!((*cfg).struct_size).read() } as usize;
            if size < core::mem::size_of::<coro_config>() {
                return CORO_EINVAL;
            }
            // SAFETY: as above, and the struct is at least as large as ours.
            let cfg = unsafe { &*cfg };
            Config {
                workers: cfg.workers as usize,
                stack_size: cfg.stack_size,
            }
        };
        // Outside Linux a blocking `coro_await` parks through the thread's
        // std handle, which std makes (with malloc) on first use. Make it
        // now for the thread that creates the runtime, the usual awaiter,
        // so a later await under exhausted memory has nothing to allocate.
        // (On Linux the awaiter sleeps on a futex in the slot instead.)
        #[cfg(not(target_os = "linux"))]
        drop(std::thread::current());
        // The cell and its place in CELLS first: they are all that can
        // fail once the runtime runs.
        let cell = match crate::util::try_box(coro_runtime {
            live: AtomicPtr::new(ptr::null_mut()),
        }) {
            Ok(cell) => cell,
            Err(e) => return e.code(),
        };
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        if cells.try_reserve(1).is_err() {
            return CORO_ENOMEM;
        }
        match Runtime::new(config) {
            Ok(rt) => {
                cell.live.store(Box::into_raw(rt), Release);
                let cell: &'static coro_runtime = Box::leak(cell);
                cells.push(cell);
                // SAFETY: `out` is non-null and the caller gives it to us to write.
                unsafe { out.write(ptr::from_ref(cell).cast_mut()) };
                CORO_OK
            }
            Err(e) => e.code(),
        }
    })
}

/// Cancels every live coroutine (running their defers), joins the workers
/// and frees the runtime. Handles of its coroutines answer `CORO_ESTALE`
/// afterwards, and `rt` itself `CORO_ESHUTDOWN` (its few bytes stay
/// allocated for that). Must not be called from one of the runtime's own
/// coroutines.
///
/// # Safety
/// `rt` is NULL or a runtime from `coro_runtime_new`, shut down or not; no
/// other call on it runs on another thread meanwhile.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ESTATE` (called on a worker thread),
/// `CORO_ESHUTDOWN` (shut down already).
#[no_mangle]
pub unsafe extern "C" fn coro_runtime_shutdown(rt: *mut coro_runtime) -> c_int {
    guard(|| {
        if rt.is_null() {
            return CORO_EINVAL;
        }
        // SAFETY: `rt` came from `coro_runtime_new`; cells live forever.
        let cell = unsafe { &*rt };
        // Emptied first: a second shutdown, or a spawn from now on, finds
        // no runtime.
        let live = cell.live.swap(ptr::null_mut(), AcqRel);
        if live.is_null() {
            return CORO_ESHUTDOWN;
        }
        // SAFETY: the cell's box, made by `Box::into_raw` in
        // `coro_runtime_new` and taken out of the cell once, just now.
        let runtime = unsafe { Box::from_raw(live) };
        match runtime.shutdown() {
            // Its workers are joined and its frames freed: nothing else
            // holds its address now.
            Ok(()) => CORO_OK,
            Err(e) => {
                // Refused (`CORO_ESTATE` on a worker thread): the cell
                // keeps the runtime.
                cell.live.store(Box::into_raw(runtime), Release);
                e.code()
            }
        }
    })
}

/// Starts a coroutine on `rt`. `env_size` bytes at `env` are copied into
/// the frame and live exactly as long as it; `drop` (may be NULL) runs once
/// on that copy, after the defers. `flags`: `CORO_SPAWN_*`.
///
/// # Safety
/// `rt` is NULL or a runtime from `coro_runtime_new` (a shut-down one
/// answers `CORO_ESHUTDOWN`) whose shutdown does not run meanwhile on
/// another thread; `env` points at `env_size` readable bytes; `entry` and
/// `drop` are safe to call on the frame's copy; `out` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (NULL `rt`, `entry` or `out`; NULL `env` with a
/// non-zero size; unknown flags), `CORO_ENOMEM`, `CORO_ESHUTDOWN` (the
/// runtime is shutting down or was shut down).
#[no_mangle]
#[inline(never)] // `sched::local_before_switch` looks up the thread-local inline.
pub unsafe extern "C" fn coro_spawn(
    rt: *mut coro_runtime,
    entry: coro_entry,
    env: *const c_void,
    env_size: usize,
    drop: coro_env_drop,
    flags: u32,
    out: *mut coro_promise,
) -> c_int {
    guard(|| {
        // One test and branch each: merged into one branch, the four
        // checks cost twice the instructions (set-byte and or chains).
        let Some(entry) = entry else {
            return invalid();
        };
        if rt.is_null() {
            return invalid();
        }
        if out.is_null() {
            return invalid();
        }
        if env_size != 0 && env.is_null() {
            return invalid();
        }
        let env = if env_size == 0 {
            &[][..]
        } else {
            // SAFETY: the caller says `env` points at `env_size` readable bytes.
            unsafe { core::slice::from_raw_parts(env.cast::<u8>(), env_size) }
        };
        // SAFETY: `rt` came from `coro_runtime_new`.
        let rt = match unsafe { live_runtime(rt) } {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        match coro::spawn_with(
            rt,
            entry,
            env,
            drop,
            flags,
            crate::sched::local_before_switch,
        ) {
            Ok(p) => {
                // SAFETY: `out` is non-null.
                unsafe { out.write(coro_promise { id: p.0 }) };
                CORO_OK
            }
            Err(e) => e.code(),
        }
    })
}

/// Suspends the calling coroutine. After it has switched out,
/// `on_suspend(token, arg)` runs on the worker; whoever gets the token
/// resumes or cancels it. Returns 0 when resumed.
///
/// Errors: `CORO_ESTATE` (not in a coroutine), `CORO_EINVAL` (NULL
/// callback), `CORO_ELOCKHELD`, `CORO_ECANCELED` (with
/// `CORO_SPAWN_CANCEL_RETURNS`, once cancelled).
#[no_mangle]
pub extern "C" fn coro_suspend(on_suspend: coro_on_suspend, arg: *mut c_void) -> c_int {
    guard(|| {
        let Some(cb) = on_suspend else {
            return CORO_EINVAL;
        };
        resumption(coro::suspend_with(cb, arg))
    })
}

/// Starts a foreign frame on `rt`: a coroutine whose state machine a
/// compiler built (a C++20 coroutine, a C state machine), under the same
/// two references as `coro_spawn`'s. `resume(frame)` runs it on a worker:
/// when it starts, and each time a wait it began ends. In `resume`, a
/// call that would suspend (`coro_yield`, `coro_suspend`, `coro_await`,
/// `coro_wait_fd`, `coro_sleep_until`, `coro_mutex_lock`,
/// `coro_chan_send`, `coro_chan_recv`) begins its wait and answers
/// `CORO_PENDING`; `resume` must then return (its value is ignored), and
/// until it does, calls act as outside any coroutine (another suspending
/// call answers `CORO_ESTATE`). `resume` returning with no wait begun
/// means the frame finished: its value is the frame's result.
/// `destroy(frame)` (may be NULL) runs once when the frame ends, finished
/// or cancelled, after its defers, never at the same time as `resume`: in
/// the default mode a cancelled frame is never resumed again, except once
/// if its wait was handed what it waited for (the lock, an item, room)
/// before the cancel came: that wait answers 0, so nothing handed over is
/// lost, and the cancel acts at its next suspension point. `flags`:
/// `CORO_SPAWN_*`; with `CORO_SPAWN_CANCEL_RETURNS` a cancel resumes it
/// and `coro_frame_resumed` answers `CORO_ECANCELED`. `coro_cond_wait`
/// answers `CORO_ESTATE` in a foreign frame. On an error the frame is
/// not started and stays the caller's.
///
/// # Safety
/// As `coro_spawn`; `resume` and `destroy` are safe to call with `frame`
/// on any worker thread until `destroy` has run.
///
/// Errors: `CORO_EINVAL` (NULL `rt`, `resume` or `out`; unknown flags),
/// `CORO_ENOMEM`, `CORO_ESHUTDOWN`.
#[no_mangle]
pub unsafe extern "C" fn coro_spawn_frame(
    rt: *mut coro_runtime,
    resume: coro_entry,
    destroy: coro_env_drop,
    frame: *mut c_void,
    flags: u32,
    out: *mut coro_promise,
) -> c_int {
    guard(|| {
        let Some(resume) = resume else {
            return CORO_EINVAL;
        };
        if rt.is_null() || out.is_null() {
            return CORO_EINVAL;
        }
        // SAFETY: `rt` came from `coro_runtime_new`.
        let rt = match unsafe { live_runtime(rt) } {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        match coro::spawn_frame(rt, resume, destroy, frame, flags) {
            Ok(p) => {
                // SAFETY: `out` is non-null and writable.
                unsafe { out.write(coro_promise { id: p.0 }) };
                CORO_OK
            }
            Err(e) => e.code(),
        }
    })
}

/// In a foreign frame's `resume`, after a call answered `CORO_PENDING`:
/// what that call finally answers (0, `CORO_ETIMEDOUT`, `CORO_ECANCELED`,
/// `CORO_ECLOSED`, ...). For `coro_await`, `*value` (may be NULL) gets the
/// child's result; a `coro_chan_recv`'s item is in the buffer it was
/// given, which must stay valid until then.
///
/// # Safety
/// `value` is NULL or writable.
///
/// Errors: `CORO_ESTATE` (not in a foreign frame; no wait ended since the
/// last call: the first run, or asked twice).
#[no_mangle]
pub unsafe extern "C" fn coro_frame_resumed(value: *mut *mut c_void) -> c_int {
    guard(|| match coro::frame_resumed() {
        Ok(v) => {
            if !value.is_null() {
                // SAFETY: non-null `value` is writable by the caller's contract.
                unsafe { value.write(v) };
            }
            CORO_OK
        }
        Err(e) => e.code(),
    })
}

/// Memory for a foreign frame (a C++ coroutine's `operator new`): `size`
/// bytes, 16-byte aligned (no more: a frame whose locals need more is not
/// supported); NULL when out of memory.
#[no_mangle]
pub extern "C" fn coro_frame_alloc(size: usize) -> *mut c_void {
    guard(|| crate::context::foreign::alloc(size))
}

/// Gives back memory from `coro_frame_alloc` (NULL: nothing). Given back
/// while a frame ends (from its `destroy`, directly or deeper, or its
/// defers), it stays valid until that frame is freed, when its last
/// reference drops; anywhere else it is released at once.
///
/// # Safety
/// `mem` is NULL or from `coro_frame_alloc`, not given back before.
#[no_mangle]
pub unsafe extern "C" fn coro_frame_free(mem: *mut c_void) {
    // SAFETY: the caller's contract.
    guard(|| unsafe { crate::context::foreign::free(mem) })
}

/// Consumes a suspend reference and schedules the coroutine on its worker.
/// On a cancelled coroutine it only drops the reference and returns 0.
///
/// Errors: `CORO_EINVAL` (zeroed token), `CORO_ESTALE` (already consumed).
#[no_mangle]
pub extern "C" fn coro_resume(token: coro_token) -> c_int {
    guard(|| status(coro::resume(Token(token.id))))
}

/// Consumes a suspend reference and cancels the coroutine (its defers run
/// now unless it was spawned with `CORO_SPAWN_CANCEL_RETURNS`).
///
/// Errors: `CORO_EINVAL`, `CORO_ESTALE`.
#[no_mangle]
pub extern "C" fn coro_cancel_suspend(token: coro_token) -> c_int {
    guard(|| status(coro::cancel_suspend(Token(token.id))))
}

/// Consumes the async reference and waits for the coroutine to finish: in
/// a coroutine it suspends, elsewhere it blocks the thread. `*result`
/// (may be NULL) gets the entry's return value.
///
/// # Safety
/// `result` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (zeroed handle; a coroutine awaiting itself or
/// a coroutine of another runtime), `CORO_ESTALE` (already consumed),
/// `CORO_ECANCELED` (the coroutine, or the awaiting one, was cancelled).
#[no_mangle]
#[inline(never)] // `coro::await_from_c` looks up the thread-local inline.
pub unsafe extern "C" fn coro_await(p: coro_promise, result: *mut *mut c_void) -> c_int {
    guard(|| match coro::await_from_c(Promise(p.id)) {
        Ok(r) => {
            if !result.is_null() {
                // SAFETY: non-null `result` is writable by the caller's contract.
                unsafe { result.write(r) };
            }
            CORO_OK
        }
        Err(e) => e.code(),
    })
}

/// Consumes the async reference and cancels the coroutine. If it is
/// suspended its defers run before this returns; if it is running, it acts
/// at its next suspension point. A coroutine whose `on_suspend` callback is
/// still running counts as running: its worker runs the defers as soon as
/// the callback returns.
///
/// Errors: `CORO_EINVAL`, `CORO_ESTALE`.
#[no_mangle]
pub extern "C" fn coro_cancel_async(p: coro_promise) -> c_int {
    guard(|| status(coro::cancel_async(Promise(p.id))))
}

/// Consumes the async reference without cancelling: the coroutine runs on
/// and its frame is freed by its last reference.
///
/// Errors: `CORO_EINVAL`, `CORO_ESTALE`.
#[no_mangle]
pub extern "C" fn coro_detach(p: coro_promise) -> c_int {
    guard(|| status(coro::detach(Promise(p.id))))
}

/// Lets the other runnable coroutines of this worker run.
///
/// Errors: `CORO_ESTATE` (not in a coroutine), `CORO_ELOCKHELD`,
/// `CORO_ECANCELED` (cancel-returns mode, once cancelled).
#[no_mangle]
#[inline(never)] // `coro::yield_from_c` looks up the thread-local inline.
pub extern "C" fn coro_yield() -> c_int {
    guard(|| resumption(coro::yield_from_c()))
}

/// Waits until `fd` is ready for `events` (`CORO_READABLE`,
/// `CORO_WRITABLE`, or both: returns when either is) or until
/// `deadline_ns` (`coro_now()` clock; -1: none) passes. In a coroutine it
/// suspends; on a plain thread it blocks in poll(2). Error and hang-up
/// conditions count as ready: the next read or write reports them.
///
/// Errors: `CORO_EINVAL` (negative or closed fd, bad events),
/// `CORO_ETIMEDOUT`, `CORO_ECANCELED` (cancel-returns mode),
/// `CORO_ELOCKHELD`, `CORO_ESTATE` (a worker thread outside a coroutine),
/// `CORO_ENOMEM`, `CORO_EIO` (errno says why).
#[no_mangle]
pub extern "C" fn coro_wait_fd(fd: c_int, events: u32, deadline_ns: i64) -> c_int {
    guard(|| status(coro::wait_fd(fd, events, deadline_ns)))
}

/// Forgets `fd`: the runtime stops watching it and drops every
/// registration `CORO_KEEP` waits left. Call it before `close(fd)` if any
/// wait on `fd` used `CORO_KEEP`: otherwise, once the number names another
/// file, waits on it may never see an event. Any thread may call it (a
/// defer may run on the thread that cancels); it covers every runtime.
/// Harmless for a descriptor never kept.
///
/// Errors: `CORO_EINVAL` (negative fd), `CORO_ESTATE` (a wait on `fd` is
/// in progress: that wait's registration stays; forget again once it
/// ended).
#[no_mangle]
pub extern "C" fn coro_fd_forget(fd: c_int) -> c_int {
    guard(|| status(coro::fd_forget(fd)))
}

/// Suspends the calling coroutine until `deadline_ns` (`coro_now()`
/// clock) has passed; returns 0 then. -1 sleeps until cancelled. On a
/// plain thread it blocks.
///
/// Errors: `CORO_ECANCELED` (cancel-returns mode), `CORO_ELOCKHELD`,
/// `CORO_EINVAL` (-1 outside a coroutine), `CORO_ESTATE` (a worker thread
/// outside a coroutine), `CORO_ENOMEM` (no room for the wait's record).
#[no_mangle]
pub extern "C" fn coro_sleep_until(deadline_ns: i64) -> c_int {
    guard(|| status(coro::sleep_until(deadline_ns)))
}

/// Nanoseconds of `CLOCK_MONOTONIC`: the clock of every deadline.
#[no_mangle]
pub extern "C" fn coro_now() -> i64 {
    guard(coro::now)
}

/// Registers `fn(arg)` to run when the coroutine completes or is cancelled,
/// in LIFO order with the other defers.
///
/// Errors: `CORO_ESTATE` (not in a coroutine), `CORO_EINVAL` (NULL fn),
/// `CORO_ENOMEM`.
#[no_mangle]
pub extern "C" fn coro_defer(f: coro_defer_fn, arg: *mut c_void) -> c_int {
    guard(|| {
        let Some(f) = f else { return CORO_EINVAL };
        status(coro::defer(f, arg, false))
    })
}

/// Like `coro_defer`, but runs only if the coroutine is cancelled.
///
/// Errors: as `coro_defer`.
#[no_mangle]
pub extern "C" fn coro_errdefer(f: coro_defer_fn, arg: *mut c_void) -> c_int {
    guard(|| {
        let Some(f) = f else { return CORO_EINVAL };
        status(coro::defer(f, arg, true))
    })
}

/// Notes that the calling coroutine took a blocking lock (CP.52): until the
/// matching release, its suspensions fail with `CORO_ELOCKHELD`. `what`
/// (may be NULL; else valid while the lock is noted, a string literal say)
/// names the lock in check mode's reports. Outside a coroutine: no-op.
/// Returns 0: it cannot fail.
#[no_mangle]
pub extern "C" fn coro_lock_note_acquire(what: *const c_char) -> c_int {
    guard(|| status(coro::lock_note(what, true)))
}

/// Notes the release of a lock noted with `coro_lock_note_acquire`.
///
/// Errors: `CORO_ESTATE` (no lock noted).
#[no_mangle]
pub extern "C" fn coro_lock_note_release(what: *const c_char) -> c_int {
    guard(|| status(coro::lock_note(what, false)))
}

/// The name given with the running coroutine's last
/// `coro_lock_note_acquire`, while it holds a noted lock; NULL otherwise
/// (and outside a coroutine). For the report of a `CORO_ELOCKHELD`.
#[no_mangle]
pub extern "C" fn coro_lock_note_name() -> *const c_char {
    guard(coro::lock_note_name)
}

/// The running coroutine's id (its promise's value); 0 outside a coroutine.
#[no_mangle]
pub extern "C" fn coro_self_id() -> u64 {
    guard(coro::self_id)
}

// ---------------------------------------------------------------------
// Mutex, condition, channel (DESIGN section 9; src/sync). Waiting suspends
// a coroutine and blocks a plain thread; a worker thread outside any
// coroutine gets CORO_ESTATE where it would wait. Every wait takes a
// deadline (CLOCK_MONOTONIC ns; -1: none; 0 or past: only try) and is
// ended by a cancellation (cancel-returns mode: CORO_ECANCELED).

/// A mutex that hands off in FIFO order and may be held across a
/// suspension. Opaque.
pub struct coro_mutex(crate::sync::Mutex);

/// A condition variable over a `coro_mutex`. Opaque.
pub struct coro_cond(crate::sync::Cond);

/// A bounded queue of fixed-size items. Opaque.
pub struct coro_chan(crate::sync::Chan);

/// Writes a new box's pointer to `out`; `CORO_EINVAL` if `out` is NULL.
fn give_out<T>(out: *mut *mut T, make: impl FnOnce() -> crate::error::Result<T>) -> c_int {
    if out.is_null() {
        return CORO_EINVAL;
    }
    match make().and_then(crate::util::try_box) {
        Ok(b) => {
            // SAFETY: `out` is non-null and the caller's to write.
            unsafe { out.write(Box::into_raw(b)) };
            CORO_OK
        }
        Err(e) => e.code(),
    }
}

/// Frees a box made by `give_out`, if `idle` says it may go.
///
/// # Safety
/// `p` is NULL or came from `give_out` and was not freed.
unsafe fn free_box<T>(p: *mut T, idle: impl FnOnce(&T) -> bool) -> c_int {
    // SAFETY: the caller's contract.
    let Some(obj) = (unsafe { p.as_ref() }) else {
        return CORO_EINVAL;
    };
    if !idle(obj) {
        return CORO_ESTATE;
    }
    // SAFETY: made by Box::into_raw in give_out, freed once (the caller's
    // contract), and nobody waits on it.
    drop(unsafe { Box::from_raw(p) });
    CORO_OK
}

/// Runs `op` on the object `p` points at, behind `guard`; NULL is
/// `CORO_EINVAL`.
///
/// # Safety
/// `p` is NULL or points at a live object that is not freed meanwhile.
unsafe fn on<T>(p: *const T, op: impl FnOnce(&T) -> crate::error::Result<()>) -> c_int {
    // SAFETY: the caller's contract.
    guard(|| match unsafe { p.as_ref() } {
        Some(obj) => status(op(obj)),
        None => CORO_EINVAL,
    })
}

/// Makes a mutex, unlocked.
///
/// # Safety
/// `out` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (NULL `out`), `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_mutex_new(out: *mut *mut coro_mutex) -> c_int {
    guard(|| give_out(out, || Ok(coro_mutex(crate::sync::Mutex::new()))))
}

/// Frees a mutex.
///
/// # Safety
/// `m` is NULL or a mutex from `coro_mutex_new` not freed yet, which no
/// other thread uses meanwhile.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ESTATE` (held, or waited on).
#[no_mangle]
pub unsafe extern "C" fn coro_mutex_free(m: *mut coro_mutex) -> c_int {
    // SAFETY: the caller's contract.
    guard(|| unsafe { free_box(m, |m| m.0.is_idle()) })
}

/// Takes the mutex, waiting in line (FIFO) until `deadline_ns`.
///
/// # Safety
/// `m` is a mutex from `coro_mutex_new`, not freed.
///
/// Errors: `CORO_EINVAL` (NULL `m`, deadline below -1), `CORO_ETIMEDOUT`,
/// `CORO_ECANCELED` (cancel-returns mode), `CORO_ELOCKHELD`,
/// `CORO_ESTATE` (the caller holds it already; a worker thread outside a
/// coroutine would wait), `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_mutex_lock(m: *mut coro_mutex, deadline_ns: i64) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { on(m, |m| m.0.lock(deadline_ns)) }
}

/// Takes the mutex if it is free.
///
/// # Safety
/// As `coro_mutex_lock`.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_EBUSY` (held, by anyone).
#[no_mangle]
pub unsafe extern "C" fn coro_mutex_trylock(m: *mut coro_mutex) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { on(m, |m| m.0.try_lock()) }
}

/// Releases the mutex, to the first waiter still waiting if any. A
/// coroutine's defers and `env_drop` may release what it holds.
///
/// # Safety
/// As `coro_mutex_lock`.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ESTATE` (the caller is not the
/// owner).
#[no_mangle]
pub unsafe extern "C" fn coro_mutex_unlock(m: *mut coro_mutex) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { on(m, |m| m.0.unlock()) }
}

/// Makes a condition variable.
///
/// # Safety
/// `out` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (NULL `out`), `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_cond_new(out: *mut *mut coro_cond) -> c_int {
    guard(|| give_out(out, || Ok(coro_cond(crate::sync::Cond::new()))))
}

/// Frees a condition variable.
///
/// # Safety
/// As `coro_mutex_free`.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ESTATE` (waited on).
#[no_mangle]
pub unsafe extern "C" fn coro_cond_free(c: *mut coro_cond) -> c_int {
    // SAFETY: the caller's contract.
    guard(|| unsafe { free_box(c, |c| c.0.is_idle()) })
}

/// Releases `m` (which the caller holds) and waits for a signal until
/// `deadline_ns`; takes `m` back before it returns, also on error.
///
/// # Safety
/// `c` and `m` came from `coro_cond_new` and `coro_mutex_new`, not freed.
///
/// Errors: `CORO_EINVAL` (NULL, bad deadline), `CORO_ESTATE` (the caller
/// does not hold `m`; a worker thread outside a coroutine),
/// `CORO_ETIMEDOUT`, `CORO_ECANCELED` (cancel-returns mode),
/// `CORO_ELOCKHELD`, `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_cond_wait(
    c: *mut coro_cond,
    m: *mut coro_mutex,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's contract.
    guard(|| match unsafe { (c.as_ref(), m.as_ref()) } {
        (Some(c), Some(m)) => status(c.0.wait(&m.0, deadline_ns)),
        _ => CORO_EINVAL,
    })
}

/// Wakes one waiter (the first still waiting), or keeps the signal for a
/// coroutine that is on its way into its wait.
///
/// # Safety
/// As `coro_cond_free`.
///
/// Errors: `CORO_EINVAL` (NULL).
#[no_mangle]
pub unsafe extern "C" fn coro_cond_signal(c: *mut coro_cond) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        on(c, |c| {
            c.0.signal();
            Ok(())
        })
    }
}

/// Wakes every waiter.
///
/// # Safety
/// As `coro_cond_free`.
///
/// Errors: `CORO_EINVAL` (NULL).
#[no_mangle]
pub unsafe extern "C" fn coro_cond_broadcast(c: *mut coro_cond) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        on(c, |c| {
            c.0.broadcast();
            Ok(())
        })
    }
}

/// Makes a channel of items of `item_size` bytes holding up to `capacity`
/// of them; `capacity` 0 is a rendezvous.
///
/// # Safety
/// `out` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (NULL `out`, `item_size` 0 or above 1 MiB, a
/// ring whose size overflows), `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_chan_new(
    item_size: usize,
    capacity: usize,
    out: *mut *mut coro_chan,
) -> c_int {
    guard(|| {
        give_out(out, || {
            crate::sync::Chan::new(item_size, capacity).map(coro_chan)
        })
    })
}

/// Frees a channel (with any items still in it).
///
/// # Safety
/// As `coro_mutex_free`.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ESTATE` (a sender or receiver
/// waits on it).
#[no_mangle]
pub unsafe extern "C" fn coro_chan_free(ch: *mut coro_chan) -> c_int {
    // SAFETY: the caller's contract.
    guard(|| unsafe { free_box(ch, |ch| ch.0.is_idle()) })
}

/// Copies the item at `item` into the channel: straight to a waiting
/// receiver, else into the ring, else waits until `deadline_ns` for room.
///
/// # Safety
/// `ch` came from `coro_chan_new`, not freed; `item` points at the
/// channel's `item_size` readable bytes.
///
/// Errors: `CORO_EINVAL` (NULL, bad deadline), `CORO_ECLOSED`,
/// `CORO_ETIMEDOUT`, `CORO_ECANCELED` (cancel-returns mode),
/// `CORO_ELOCKHELD`, `CORO_ESTATE` (a worker thread outside a coroutine
/// would wait), `CORO_ENOMEM`.
#[no_mangle]
pub unsafe extern "C" fn coro_chan_send(
    ch: *mut coro_chan,
    item: *const c_void,
    deadline_ns: i64,
) -> c_int {
    if item.is_null() {
        return CORO_EINVAL;
    }
    // SAFETY: the caller's contract, on `ch` and on `item`.
    unsafe { on(ch, |ch| ch.0.send(item.cast(), deadline_ns)) }
}

/// Copies the next item into `item`, waiting until `deadline_ns` for one.
///
/// # Safety
/// `ch` came from `coro_chan_new`, not freed; `item` points at the
/// channel's `item_size` writable bytes.
///
/// Errors: as `coro_chan_send`; `CORO_ECLOSED` once the channel is
/// closed and empty.
#[no_mangle]
pub unsafe extern "C" fn coro_chan_recv(
    ch: *mut coro_chan,
    item: *mut c_void,
    deadline_ns: i64,
) -> c_int {
    if item.is_null() {
        return CORO_EINVAL;
    }
    // SAFETY: the caller's contract, on `ch` and on `item`.
    unsafe { on(ch, |ch| ch.0.recv(item.cast(), deadline_ns)) }
}

/// Closes the channel: sends fail with `CORO_ECLOSED` from now on, and
/// so do waiting senders; receivers take what is left, then get
/// `CORO_ECLOSED`.
///
/// # Safety
/// As `coro_chan_free`.
///
/// Errors: `CORO_EINVAL` (NULL), `CORO_ECLOSED` (closed already).
#[no_mangle]
pub unsafe extern "C" fn coro_chan_close(ch: *mut coro_chan) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { on(ch, |ch| ch.0.close()) }
}

/// Frames alive in this process (all runtimes): allocated and not yet freed.
/// For leak checks in tests and examples.
#[no_mangle]
pub extern "C" fn coro_live_frames() -> u64 {
    guard(coro::live_frames)
}

/// Writes every live coroutine of `rt` to `fd`, as text: its id (what
/// `coro_self_id` gives it), its worker, its state (runnable, suspended
/// with the token held by the program, waiting in the library, finished
/// with its promise not yet consumed...), which references are held and
/// by whom, what a library wait waits on (the coroutine it awaits, the
/// descriptor and events, the deadline), and the backtrace of each
/// suspended coroutine's stack. Backtraces are captured at each
/// suspension only in check mode (`COFRAME_CHECK=1` or a debug build of
/// the library); otherwise the dump says so and how to get one (gdb:
/// docs/DEBUGGING.md). The format is meant for people and grep, not for
/// parsing: docs/API.md shows it.
///
/// Any thread may call it while the runtime runs, a coroutine included:
/// it reads only what the library's atomics publish, never a coroutine's
/// own memory, and allocates nothing. It blocks until everything is
/// written (a non-blocking `fd` is waited on with poll(2)). It is not
/// async-signal-safe: from a signal handler, set a flag or write to a
/// pipe, and dump from a thread (`c-examples/echo_server_main.c`).
///
/// # Safety
/// `rt` is NULL or a runtime from `coro_runtime_new` (a shut-down one
/// answers `CORO_ESHUTDOWN`) whose shutdown does not run meanwhile on
/// another thread.
///
/// Errors: `CORO_EINVAL` (NULL `rt`, negative `fd`), `CORO_ESHUTDOWN`
/// (the runtime was shut down), `CORO_EIO` (a write failed: `errno` says
/// why, e.g. `EBADF`; what was written before stays written).
#[no_mangle]
pub unsafe extern "C" fn coro_dump(rt: *mut coro_runtime, fd: c_int) -> c_int {
    guard(|| {
        if rt.is_null() || fd < 0 {
            return CORO_EINVAL;
        }
        // SAFETY: `rt` came from `coro_runtime_new`.
        let rt = match unsafe { live_runtime(rt) } {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        status(crate::dump::dump(rt, fd))
    })
}

/// A static, NUL-terminated description of a status code.
#[no_mangle]
pub extern "C" fn coro_strerror(code: c_int) -> *const c_char {
    let msg = if code == CORO_OK {
        "success\0"
    } else {
        match Error::from_code(code) {
            Some(e) => e.message(),
            None => "unknown coframe status code\0",
        }
    };
    msg.as_ptr().cast()
}
