//! Foreign frames: coroutines whose state machine a compiler built (a C++20
//! coroutine, a hand-written C state machine), run by the workers under the
//! same two-reference word as stackful ones (DESIGN section 2).
//!
//! A foreign frame has no stack. Its host gives `coro_spawn_frame` a
//! `resume(frame)` function, which the worker calls where it would switch
//! to a stack, and a `destroy(frame)` function, which takes the place of
//! `env_drop` (it runs once, after the defers, when the frame ends). What
//! differs is how a wait is made:
//!
//! 1. A library call that would suspend begins its wait as it does in a
//!    stackful body (its first half), then `begin` records how to park and
//!    the call answers `CORO_PENDING` instead of switching. From then on
//!    the frame counts as switched out: until `resume` returns, this thread
//!    runs no coroutine (a second suspending call answers `CORO_ESTATE`).
//! 2. When `resume` returns, the worker parks the frame as recorded
//!    (`harness::run` handles it as a stackful suspension). If nothing was
//!    recorded, the frame finished: `resume`'s value is its result.
//! 3. When the frame is resumed, the worker first runs the wait's second
//!    half (`coro::end_foreign_wait`), which may begin another wait (a
//!    channel hand-off to retry) without calling the host; then it calls
//!    `resume`, where `coro_frame_resumed` gives the call's answer.
//!
//! Frame memory from `coro_frame_alloc` that a host gives back while its
//! frame ends (a C++ frame's `operator delete`, called from `destroy`)
//! lives on until the frame is freed: a pointer into it that someone kept
//! stays valid as long as the frame's references, as the environment of a
//! stackful frame does.

use core::ffi::c_void;
use core::ptr;

use super::{thread_ctx, Resumed, Step, ThreadCtx};
use crate::error::Error;
use crate::frame::slot::{Body, ForeignPark, FrameMem, Slot};

/// Records how the running foreign frame parks, and leaves it: the
/// caller returns what this returns (`Pending`) to the host.
#[cold]
pub(crate) fn begin(slot: &'static Slot, park: ForeignPark) -> Error {
    // SAFETY: the running frame owns EXEC.
    let body = unsafe { slot.body() };
    body.foreign_park = Some(park);
    // Switched out, as far as the library is concerned (rule 1 above).
    // SAFETY: set by `resume`, which runs below us on this thread.
    unsafe { &*body.foreign_ctx }.hide();
    Error::Pending
}

/// Runs the foreign frame of `slot` until it parks or finishes. The caller
/// owns `EXEC`; `ctx` is its thread's context.
pub(crate) fn resume(ctx: &ThreadCtx, slot: &'static Slot, how: Resumed) -> Step {
    ctx.slot.set(slot);
    let step = run(ctx, slot, how);
    ctx.slot.set(ptr::null());
    step
}

fn run(ctx: &ThreadCtx, slot: &'static Slot, how: Resumed) -> Step {
    // SAFETY: our caller owns EXEC and lends it to the frame.
    let body = unsafe { slot.body() };
    body.foreign_ctx = ctx;
    // A started frame runs again only from the wait it parked in (one
    // that finished is never resumed): that wait's second half is due.
    if body.in_entry {
        let answer = crate::coro::end_foreign_wait(slot, how);
        // SAFETY: as above; the wait's second half is done with the body.
        let body = unsafe { slot.body() };
        if answer == Err(Error::Pending) {
            // Another wait began; the host hears of neither.
            return parked(body).expect("a pending wait recorded its park");
        }
        body.answer = Some(answer);
    }
    let (entry, env) = (body.entry, body.env);
    body.in_entry = true;
    // SAFETY: the host's resume function and frame, given to
    // coro_spawn_frame, called as documented: on a worker, never twice at
    // once (we own EXEC).
    let value = match entry {
        Some(resume) => unsafe { resume(env) },
        None => ptr::null_mut(),
    };
    // SAFETY: as above; the host's borrows of the body ended.
    let body = unsafe { slot.body() };
    parked(body).unwrap_or_else(|| {
        body.answer = None;
        Step::Returned(value)
    })
}

/// How the frame parks, if its host began a wait.
fn parked(body: &mut Body) -> Option<Step> {
    Some(match body.foreign_park.take()? {
        ForeignPark::Yield => Step::Yielded,
        ForeignPark::Park(how) => Step::Suspended(how),
    })
}

/// `coro_frame_alloc`: `size` bytes, 16-byte aligned; null when out of
/// memory.
pub fn alloc(size: usize) -> *mut c_void {
    let Some(total) = size.checked_add(core::mem::size_of::<FrameMem>()) else {
        return ptr::null_mut();
    };
    // SAFETY: malloc has no precondition; its blocks are 16-byte aligned
    // on the supported targets, as `FrameMem` needs.
    let header = unsafe { libc::malloc(total) }.cast::<FrameMem>();
    if header.is_null() {
        return ptr::null_mut();
    }
    debug_assert_eq!(header as usize % core::mem::align_of::<FrameMem>(), 0);
    // SAFETY: the block has room for the header and `size` bytes after it.
    unsafe {
        header.write(FrameMem {
            next: ptr::null_mut(),
        });
        header.add(1).cast()
    }
}

/// `coro_frame_free`: at once, or with the frame whose end runs on this
/// thread now (see the module docs).
///
/// # Safety
/// `mem` is null or came from `alloc` and was not given back yet.
pub unsafe fn free(mem: *mut c_void) {
    if mem.is_null() {
        return;
    }
    // SAFETY: `alloc` put the header right before `mem`.
    let header = unsafe { mem.cast::<FrameMem>().sub(1) };
    let ctx = thread_ctx();
    if ctx.finalizing().is_some() {
        // SAFETY: the block is ours now (the caller gave it back).
        unsafe { (*header).next = ctx.kept_mem.get() };
        ctx.kept_mem.set(header);
    } else {
        // SAFETY: from malloc, freed once.
        unsafe { libc::free(header.cast()) };
    }
}

/// Starts collecting the memory given back while a frame's end runs on
/// this thread; returns what an outer end collected, for `keep`.
pub(crate) fn collect(ctx: &ThreadCtx) -> *mut FrameMem {
    ctx.kept_mem.replace(ptr::null_mut())
}

/// Ends `collect`: what was given back goes with `body`'s frame, and the
/// outer end's collection (`outer`) resumes.
pub(crate) fn keep(ctx: &ThreadCtx, body: &mut Body, outer: *mut FrameMem) {
    let mut list = ctx.kept_mem.replace(outer);
    while !list.is_null() {
        // SAFETY: a block given back to us, on no other list.
        let next = unsafe { (*list).next };
        // SAFETY: as above.
        unsafe { (*list).next = body.frame_mem };
        body.frame_mem = list;
        list = next;
    }
}

/// Frees the memory a frame kept (`keep`), as the frame is freed.
#[cold]
pub(crate) fn free_kept(body: &mut Body) {
    let mut list = core::mem::replace(&mut body.frame_mem, ptr::null_mut());
    while !list.is_null() {
        // SAFETY: blocks from malloc, each on this one list, freed once.
        unsafe {
            let next = (*list).next;
            libc::free(list.cast());
            list = next;
        }
    }
}
