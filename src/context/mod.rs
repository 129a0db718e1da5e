//! Switching between a worker and its coroutines: the one module that
//! names corosensei.
//!
//! A coroutine is a loop on a `Stack` from the runtime's pool: it calls
//! the entry of its slot's frame, `entry(env)`, and when that returns it
//! hands over the value and waits at the top of the loop for the slot's
//! next frame. A slot that keeps its coroutine (`Local::keep_warm`) then
//! starts the next frame without building a coroutine or taking a stack.
//! A body leaves its stack in two ways: by yielding or suspending
//! (`Running::yield_now`, `Running::suspend`), from any call depth; or by
//! returning.
//! A switched-out coroutine that is cancelled in the default mode is never
//! resumed: `into_stack` abandons its frames without unwinding them (the
//! defers, run by the frame, are the cleanup), as FACTS.md advises.
//! A foreign frame has no stack: `foreign` runs it.

pub mod foreign;

use core::cell::Cell;
#[cfg(not(feature = "asan"))]
use core::convert::Infallible;
use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering::Relaxed;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::error::Result;
use crate::frame::slot::{ForeignPark, FrameMem, Slot};
use crate::frame::Token;
use crate::sanitize::Fiber;
use crate::stack::Stack;

/// The arguments of a library wait's park callback: a promise, a poller
/// key, a sync object and its timer; 64 bits each even where a pointer
/// has 32.
pub type LibArgs = [u64; 2];

/// How a library wait parks.
#[derive(Clone, Copy)]
pub struct LibWait {
    /// Runs on the worker once the coroutine parked, with its token.
    pub park: fn(Token, LibArgs),
    /// Runs instead if it did not park (a cancel came first): for a wait
    /// that counted itself somewhere the park callback would have
    /// uncounted it.
    pub unparked: Option<fn(LibArgs)>,
    pub args: LibArgs,
}

impl LibWait {
    pub fn new(park: fn(Token, LibArgs), args: LibArgs) -> LibWait {
        LibWait {
            park,
            unparked: None,
            args,
        }
    }
}

/// A coroutine's request to park: after the switch, the worker makes the
/// token and calls the callback with it and its argument.
#[derive(Clone, Copy)]
pub enum Suspension {
    /// A C callback from `coro_suspend`, and its argument.
    C(
        unsafe extern "C" fn(crate::frame::handle::coro_token, *mut c_void),
        *mut c_void,
    ),
    /// One of the library's own waits, which holds the token itself
    /// (`LIB_HELD`). Copied off the coroutine's stack before the park, so
    /// its callbacks read no frame memory (rule 9 in `frame/mod.rs`).
    Lib(LibWait),
}

/// Why a coroutine switched out, as it crosses the switch: one word, so
/// corosensei passes it in a register and a yield's worker reads no memory
/// for it (an enum with two empty variants and a pointer takes two). A
/// suspension's details stay on the switched-out coroutine's stack, where
/// `Context::resume` reads them.
#[derive(Clone, Copy)]
struct Switch(*const Suspension);

impl Switch {
    /// Go to the back of the worker's queue.
    const YIELD: Switch = Switch(ptr::null());
    /// The entry returned; its value is in the slot's `result`. No
    /// `Suspension` lives at this address (it is below any stack).
    const FINISHED: Switch = Switch(NonNull::dangling().as_ptr());

    /// Park as `how` says.
    fn suspend(how: &Suspension) -> Switch {
        Switch(how)
    }
}

/// What a suspension returns to the body. Each value is the status the
/// library call that suspended returns for it (0, `CORO_ECANCELED`), so
/// `coro_yield` hands it to C as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum Resumed {
    Ok = 0,
    Cancelled = crate::error::Error::Canceled.code() as i8,
    /// `asan` builds: a resting coroutine (at the top of its loop) is told
    /// to return when it is dropped (`Context::into_stack`). Never reaches
    /// a body.
    #[cfg(feature = "asan")]
    Stop = 1,
}

impl Resumed {
    /// The C status for this resumption.
    pub fn status(self) -> i32 {
        self as i8 as i32
    }
}

/// How a resumed coroutine came back.
pub enum Step {
    /// It yielded: it goes to the back of its worker's queue.
    Yielded,
    /// It asks to park.
    Suspended(Suspension),
    /// Its entry returned this value.
    Returned(*mut c_void),
}

/// The coroutine never returns: it loops over its slot's frames. (In
/// `asan` builds it returns when told to stop, so that ASan frees the
/// fake stack it keeps for the coroutine: `Context::into_stack`.)
#[cfg(not(feature = "asan"))]
type Ends = Infallible;
#[cfg(feature = "asan")]
type Ends = ();
type Co = Coroutine<Resumed, Switch, Ends, Stack>;
type CoYielder = Yielder<Resumed, Switch>;

/// A coroutine on its stack.
pub struct Context {
    co: Co,
    /// The coroutine as ThreadSanitizer knows it; zero-sized without `tsan`.
    fiber: Fiber,
}

/// What runs on this thread: the frame whose body is on the CPU (if any)
/// and the worker this thread is (if any). The body's yielder is in its
/// slot, so a resume sets one pointer here and a first run none.
pub struct ThreadCtx {
    slot: Cell<*const Slot>,
    worker: Cell<*const ()>,
    /// The id of the frame whose defers and `env_drop` run on this thread
    /// now (0: none): its own code, which may unlock what it holds.
    finalizing: Cell<u64>,
    /// Frame memory given back (`coro_frame_free`) while `finalizing`
    /// runs: it goes with that frame, freed when the frame is.
    kept_mem: Cell<*mut FrameMem>,
}

thread_local! {
    static CTX: ThreadCtx = const {
        ThreadCtx {
            slot: Cell::new(ptr::null()),
            worker: Cell::new(ptr::null()),
            finalizing: Cell::new(0),
            kept_mem: Cell::new(ptr::null_mut()),
        }
    };
}

/// This thread's context: one thread-local lookup (a call in a cdylib:
/// a TLS descriptor or `__tls_get_addr`, docs/ARCHITECTURE.md).
/// Its address is stable for the thread's life, so a worker fetches it
/// once; coroutine code fetches it per call and never keeps it across a
/// switch (FACTS.md: a migrated coroutine would read the old thread's).
/// `ThreadCtx` is not `Sync`, so the reference cannot leave the thread.
#[inline(never)]
pub fn thread_ctx() -> &'static ThreadCtx {
    // Without this, LLVM infers that the function reads no memory (a
    // thread-local's address is a constant of the thread) and merges two
    // calls in one function, switch between them or not: after inlining,
    // a coroutine resumed on another thread used the old thread's context
    // (seen as a crash of the i686 chaos test). An asm statement that may
    // touch memory makes each call a call.
    // SAFETY: an empty statement: it reads, writes and jumps nowhere.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
    thread_ctx_before_switch()
}

/// `thread_ctx` inlined into its caller: one call less for the C entry
/// points on the hot paths (`coro_yield`, `coro_spawn`, `coro_await`).
/// LLVM treats a thread-local's address as fixed for the whole function
/// and may reuse it after a switch, when the coroutine may run on another
/// thread (FACTS.md). So the caller must be a function that is never
/// inlined (its own callers cannot reuse the address), must not use what
/// it found after a switch, and must look at anything thread-local after
/// a switch only through the out-of-line `thread_ctx`, a call LLVM cannot
/// merge with this access.
#[inline(always)]
pub(crate) fn thread_ctx_before_switch() -> &'static ThreadCtx {
    // SAFETY: the thread-local lives as long as the thread, and a
    // `&ThreadCtx` cannot be sent to another thread.
    CTX.with(|c| unsafe { &*(c as *const ThreadCtx) })
}

impl ThreadCtx {
    /// The worker this thread is, as registered by the scheduler.
    pub fn worker(&self) -> *const () {
        self.worker.get()
    }

    pub fn set_worker(&self, w: *const ()) {
        self.worker.set(w);
    }

    /// The running coroutine, if this thread is inside one.
    pub fn running(&self) -> Option<Running> {
        let slot = self.slot.get();
        // SAFETY: slots are never freed; a non-null pointer is a live slot
        // whose EXEC this thread owns while its body runs.
        let slot = unsafe { slot.as_ref() }?;
        Some(Running {
            slot,
            yielder: slot.yielder().cast(),
        })
    }

    /// Hides the running coroutine while library code runs plain
    /// callbacks (defers) on its stack; `restore` puts it back.
    pub fn hide(&self) -> *const Slot {
        self.slot.replace(ptr::null())
    }

    pub fn restore(&self, saved: *const Slot) {
        self.slot.set(saved);
    }

    /// The frame whose defers run on this thread, if any.
    pub fn finalizing(&self) -> Option<u64> {
        Some(self.finalizing.get()).filter(|&id| id != 0)
    }

    /// Says that frame `id`'s defers run now (0: they ended); returns the
    /// id it replaces (a defer may cancel, and so finalize, another frame).
    pub fn set_finalizing(&self, id: u64) -> u64 {
        self.finalizing.replace(id)
    }
}

/// The coroutine running on this thread, found once per library call.
pub struct Running {
    pub slot: &'static Slot,
    yielder: *const CoYielder,
}

impl Running {
    /// Switches the coroutine out to the back of its worker's queue;
    /// returns when it runs again. Consumes `self`, as `suspend` does.
    /// Stackful bodies only: a foreign frame yields with `foreign::begin`.
    pub fn yield_now(self) -> Resumed {
        debug_assert!(!self.is_foreign());
        self.switch_out(Switch::YIELD)
    }

    /// Whether this is a foreign frame (`foreign`), which has no stack of
    /// its own to switch out of.
    #[inline(always)]
    pub fn is_foreign(&self) -> bool {
        self.yielder.is_null()
    }

    /// Parks the coroutine as `how` says. A stackful body switches out
    /// and gets how it was resumed. A foreign frame gets `Pending`: its
    /// worker parks it once its host returns from the resume, and the
    /// caller's second half runs when it is resumed (`foreign`). So a
    /// wait is written as its first half, this call with `?`, and its
    /// second half in a function of its own, which `foreign` calls too.
    #[inline(always)]
    pub fn park(self, how: Suspension) -> Result<Resumed> {
        if self.is_foreign() {
            return Err(foreign::begin(self.slot, ForeignPark::Park(how)));
        }
        Ok(self.suspend(how))
    }

    /// `yield_now` for both kinds, as `park` is `suspend`'s: a foreign
    /// frame records the yield and gets `Pending`.
    pub fn yield_park(self) -> Result<Resumed> {
        if self.is_foreign() {
            return Err(foreign::begin(self.slot, ForeignPark::Yield));
        }
        Ok(self.yield_now())
    }

    /// Switches the coroutine out to park; returns when it is resumed.
    /// Consumes `self`: nothing found before a switch is trusted after it.
    /// Stackful bodies only (`park` is for both kinds).
    fn suspend(self, how: Suspension) -> Resumed {
        // `how` stays in this call's frame, on the coroutine's stack,
        // until the coroutine is resumed: the worker reads it first.
        self.switch_out(Switch::suspend(&how))
    }

    fn switch_out(self, why: Switch) -> Resumed {
        // SAFETY: the yielder lives on this coroutine's stack, which is
        // the stack we are running on, so it outlives this call.
        unsafe { (*self.yielder).suspend(why) }
    }
}

/// The coroutine running on this thread, if any.
#[inline]
pub fn running() -> Option<Running> {
    thread_ctx().running()
}

/// The promise id of the coroutine running on this thread (0: none): what
/// a stack overflow report names it by. Reads only this thread's context
/// and the frame's state word, so the fault handler may call it.
pub fn running_id() -> u64 {
    current().map_or(0, |slot| slot.promise().0)
}

/// The frame whose body runs on this thread, if any.
#[inline]
pub fn current() -> Option<&'static Slot> {
    running().map(|r| r.slot)
}

impl Context {
    /// Prepares a coroutine on `stack` that runs the frames of `slot`, one
    /// after the other, each when resumed after the last one returned;
    /// nothing runs yet.
    ///
    /// # Safety
    /// Whoever resumes it must have set the slot's `entry` to a function
    /// safe to call with `env`, which must stay valid until the frame ends.
    pub unsafe fn new(stack: Stack, slot: &'static Slot) -> Context {
        // The stack's bounds as corosensei gives them to ASan.
        #[cfg(feature = "asan")]
        let bounds = {
            use corosensei::stack::Stack as _;
            (
                stack.limit().get(),
                stack.base().get() - stack.limit().get(),
            )
        };
        let co = Co::with_stack(stack, move |yielder: &CoYielder, _first: Resumed| {
            // Before the entry runs, so `running()` finds the yielder.
            slot.set_yielder((yielder as *const CoYielder).cast());
            loop {
                // SAFETY: the resumer owns EXEC and lends it to the body.
                let body = unsafe { slot.body() };
                let (entry, env) = (body.entry, body.env);
                body.in_entry = true;
                // SAFETY: entry and env come from coro_spawn: a C function
                // and the frame's own copy of its environment.
                let value = match entry {
                    Some(entry) => unsafe { entry(env) },
                    None => ptr::null_mut(),
                };
                // SAFETY: as above; the entry's borrows of the body ended.
                unsafe { slot.body() }.in_entry = false;
                slot.result.store(value, Relaxed);
                let _next = yielder.suspend(Switch::FINISHED);
                #[cfg(feature = "asan")]
                if _next == Resumed::Stop {
                    // SAFETY: on this coroutine's stack, between switches;
                    // only corosensei's return path runs after it.
                    unsafe { crate::sanitize::asan_end_fiber(bounds.0, bounds.1) };
                    return;
                }
            }
        });
        Context {
            co,
            fiber: Fiber::new(),
        }
    }

    /// Runs the coroutine of `slot` until it switches out or its entry
    /// returns. The caller owns the frame's `EXEC`; `ctx` is its thread's
    /// context.
    pub fn resume(&mut self, ctx: &ThreadCtx, slot: &'static Slot, how: Resumed) -> Step {
        ctx.slot.set(slot);
        let r = self.fiber.run(|| self.co.resume(how));
        ctx.slot.set(ptr::null());
        let why = match r {
            CoroutineResult::Yield(why) => why,
            #[cfg(not(feature = "asan"))]
            CoroutineResult::Return(never) => match never {},
            // Only `into_stack` tells it to stop.
            #[cfg(feature = "asan")]
            CoroutineResult::Return(()) => unreachable!("a coroutine returned while running"),
        };
        if why.0 == Switch::YIELD.0 {
            Step::Yielded
        } else if why.0 == Switch::FINISHED.0 {
            // Written by the coroutine just before it switched back here.
            Step::Returned(slot.result.load(Relaxed))
        } else {
            // SAFETY: `Running::suspend` passed the address of its
            // argument, which lives until the coroutine is resumed, and
            // nothing can resume it before this returns: its token is
            // made afterwards, from what is read here.
            Step::Suspended(unsafe { *why.0 })
        }
    }

    /// Gives the stack back, abandoning the coroutine: at the top of its
    /// loop (`resting`: its entry returned or never ran) or inside a body
    /// that did not finish. Its frames are not unwound: the frame's
    /// defers were its cleanup. The TSan fiber goes back with it
    /// (`sanitize` rule 4).
    ///
    /// In `asan` builds a resting coroutine that ran is first told to
    /// return: ASan keeps a fake stack per coroutine (when it detects
    /// stack use after return) and frees it only when the coroutine ends,
    /// so every coroutine dropped otherwise leaked one (16 KiB each, 44 MB
    /// to 970 MB over 60,000 coroutines of a C program). A body abandoned
    /// in the middle (cancelled in the default mode) still leaks its fake
    /// stack: docs/SANITIZERS.md.
    pub fn into_stack(mut self, resting: bool) -> Stack {
        #[cfg(feature = "asan")]
        if resting && self.co.started() && !self.co.done() {
            // Only our loop runs: it sees Stop and returns.
            let r = self.co.resume(Resumed::Stop);
            debug_assert!(matches!(r, CoroutineResult::Return(())));
        }
        #[cfg(not(feature = "asan"))]
        let _ = resting;
        // SAFETY: the coroutine is switched out and will never run again;
        // its frames are C frames and our own loop, none of which needs
        // dropping (the frame ran the defers).
        unsafe { self.co.force_reset() };
        self.co.into_stack()
    }
}
