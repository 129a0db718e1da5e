//! Backtraces of suspended coroutines, captured in check mode.
//!
//! A suspended coroutine's registers are saved on its own stack by the
//! switch (corosensei's `switch_yield` on x86_64 pushes rbp, rbx and the
//! resume address, and its `Coroutine` keeps the stack pointer), so only
//! a debugger that reads that stack and loads those registers can walk it
//! later: `scripts/coframe-gdb.py` does (docs/DEBUGGING.md). Another
//! thread of the process cannot do it safely while the runtime runs: the
//! coroutine may be resumed under it, and C code built without frame
//! pointers needs a DWARF unwinder started from those registers.
//!
//! So in check mode (`util::checking`: debug builds or `COFRAME_CHECK=1`)
//! the coroutine walks its own stack at each suspension point, with the
//! platform's unwinder (`_Unwind_Backtrace`, which reads `.eh_frame`: no
//! frame pointers needed), and keeps up to `FRAMES` return addresses in
//! its slot's `Trace`, for `coro_dump` to symbolise (with `dladdr`). The
//! walk stops where the coroutine's stack ends (the frame address leaves
//! it for the stack that resumed it). In the default build nothing here
//! runs: every slot's `Body::locks` carries `CHECK_LOCKS` in check mode,
//! so each suspension point takes the lock check's cold path, which calls
//! `capture`; without it the lock check is what it always was.
//!
//! A `Trace` is allocated for a slot at its first capture and never
//! freed, as slots are not: a dump may read it at any time. Its words are
//! written with release stores and validated against the state word, as
//! the wait's are (`wait.rs`).

use core::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};

use super::slot::Slot;

/// Return addresses a trace keeps at most.
pub const FRAMES: usize = 32;

/// Set in every slot's `Body::locks` in check mode (`Slot::new`): the
/// count of noted locks is below it.
pub const CHECK_LOCKS: u32 = 1 << 31;

/// The return addresses of one suspension, innermost first.
pub struct Trace {
    /// The park sequence of the suspension it was captured for: the
    /// `seq` of that suspension's token.
    seq: AtomicU32,
    len: AtomicU32,
    ips: [AtomicUsize; FRAMES],
}

/// A copy of a `Trace`, taken by a reader.
#[derive(Clone, Copy)]
pub struct Frames {
    pub seq: u32,
    pub len: usize,
    pub ips: [usize; FRAMES],
}

impl Frames {
    pub fn ips(&self) -> &[usize] {
        &self.ips[..self.len]
    }
}

impl Trace {
    fn new() -> Trace {
        Trace {
            seq: AtomicU32::new(0),
            len: AtomicU32::new(0),
            ips: [const { AtomicUsize::new(0) }; FRAMES],
        }
    }

    /// The frames as they are now; the caller validates them (see the
    /// module's docs).
    pub fn read(&self) -> Frames {
        let mut ips = [0; FRAMES];
        let len = (self.len.load(Relaxed) as usize).min(FRAMES);
        for (ip, word) in ips.iter_mut().zip(&self.ips[..len]) {
            *ip = word.load(Relaxed);
        }
        Frames {
            seq: self.seq.load(Relaxed),
            len,
            ips,
        }
    }
}

/// The slot's trace, if one was ever captured there.
pub fn of(slot: &Slot) -> Option<&'static Trace> {
    // SAFETY: a non-null pointer is a leaked box (`capture`), never freed.
    unsafe { slot.trace.load(Acquire).as_ref() }
}

/// Captures the running coroutine's stack for the suspension it is about
/// to make. Called by the coroutine itself (the `EXEC` owner), on its
/// own stack, in check mode only. Allocates the slot's `Trace` the first
/// time; without memory it captures nothing.
#[cold]
#[inline(never)]
pub fn capture(slot: &Slot) {
    let trace = match of(slot) {
        Some(t) => t,
        None => {
            let Ok(new) = crate::util::try_box(Trace::new()) else {
                return;
            };
            let new = Box::leak(new);
            slot.trace.store(new, Release);
            new
        }
    };
    // The coroutine's stack: from here up to its base, where corosensei
    // keeps the parent link its yielder points at.
    let here = 0u8;
    let mut walk = Walk {
        trace,
        len: 0,
        low: &here as *const u8 as usize,
        high: (slot.yielder() as usize).saturating_add(64),
    };
    #[cfg(not(target_arch = "arm"))]
    // SAFETY: the callback only writes into `walk`, which outlives the
    // call, and never unwinds.
    unsafe {
        _Unwind_Backtrace(step, (&mut walk as *mut Walk).cast())
    };
    trace.len.store(walk.len as u32, Release);
    // The park that follows makes the next sequence number (`State::park_with`).
    let seq = slot.state.load().seq().wrapping_add(1);
    trace.seq.store(seq, Release);
}

struct Walk {
    trace: &'static Trace,
    len: usize,
    low: usize,
    high: usize,
}

/// `_Unwind_Reason_Code`: go on, or stop.
const URC_NO_REASON: c_int = 0;
const URC_END_OF_STACK: c_int = 5;

#[cfg(not(target_arch = "arm"))]
extern "C" {
    // libgcc's (Linux, FreeBSD) and libunwind's (macOS) unwinder, which
    // std links for panics.
    fn _Unwind_Backtrace(
        trace: extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
    fn _Unwind_GetCFA(ctx: *mut c_void) -> usize;
}

/// One frame of the walk: kept while its frame address (the stack pointer
/// in its caller) lies on the coroutine's stack, above `capture`'s own
/// locals; the walk ends at the first frame off it (the one that resumed
/// the coroutine, on another stack).
#[cfg(not(target_arch = "arm"))]
extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `capture` passed its `Walk`, alive for the whole walk.
    let walk = unsafe { &mut *arg.cast::<Walk>() };
    // SAFETY: the unwinder's context, valid during this callback.
    let (ip, cfa) = unsafe { (_Unwind_GetIP(ctx), _Unwind_GetCFA(ctx)) };
    // The unwinder's own frames come first, below `capture`'s.
    if walk.len == 0 && cfa < walk.low {
        return URC_NO_REASON;
    }
    if ip == 0 || cfa < walk.low || cfa > walk.high {
        return URC_END_OF_STACK;
    }
    // No indexing: nothing here may panic (an `extern "C"` callback).
    let Some(word) = walk.trace.ips.get(walk.len) else {
        return URC_END_OF_STACK;
    };
    word.store(ip, Release);
    walk.len += 1;
    URC_NO_REASON
}
