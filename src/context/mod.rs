//! Switching between a worker and its coroutines: the one module that
//! names corosensei.
//!
//! A coroutine's body is a C `entry(env)` running on a `Stack` from the
//! runtime's pool. It leaves its stack in two ways: by asking to switch
//! (`Switch`), from any call depth, through `switch_out`; or by returning.
//! A switched-out coroutine that is cancelled in the default mode is never
//! resumed: `into_stack` abandons its frames without unwinding them (the
//! defers, run by the frame, are the cleanup), as FACTS.md advises.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::frame::slot::{Entry, Slot};
use crate::frame::Token;
use crate::sanitize::Fiber;
use crate::stack::Stack;

/// Called on the worker once the coroutine has switched out, with the
/// token of the suspension.
#[derive(Clone, Copy)]
pub enum OnSuspend {
    /// A C callback from `coro_suspend`.
    C(unsafe extern "C" fn(crate::ffi::coro_token, *mut c_void)),
    /// One of the library's own waits.
    Lib(fn(Token, *mut c_void)),
}

/// Why a coroutine switched out.
#[derive(Clone, Copy)]
pub enum Switch {
    /// Park and hand the token to `on_suspend(token, arg)`. `lib`: the
    /// library's own wait holds the token (`LIB_HELD`).
    Suspend {
        on_suspend: OnSuspend,
        arg: *mut c_void,
        lib: bool,
    },
    /// Go to the back of the worker's queue.
    Yield,
}

/// What a suspension returns to the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    Ok,
    Cancelled,
}

/// How a resumed coroutine came back.
pub enum Step {
    Switched(Switch),
    Returned(*mut c_void),
}

type Co = Coroutine<Resumed, Switch, *mut c_void, Stack>;
type CoYielder = Yielder<Resumed, Switch>;

/// A coroutine on its stack.
pub struct Context {
    co: Co,
    /// The coroutine as ThreadSanitizer knows it; zero-sized without `tsan`.
    fiber: Fiber,
}

thread_local! {
    /// The frame running on this thread, and its yielder.
    static CURRENT: Cell<(*const Slot, *const CoYielder)> = const { Cell::new((ptr::null(), ptr::null())) };
}

// Thread-locals are read only in these small, never-inlined functions, so no
// cached TLS address survives a switch (FACTS.md: a migrated coroutine would
// read the old thread's slot).
#[inline(never)]
fn set_current(v: (*const Slot, *const CoYielder)) {
    CURRENT.with(|c| c.set(v));
}

#[inline(never)]
fn get_current() -> (*const Slot, *const CoYielder) {
    CURRENT.with(|c| c.get())
}

/// The frame whose body runs on this thread right now, if any.
#[inline]
pub fn current() -> Option<&'static Slot> {
    let (slot, _) = get_current();
    // SAFETY: slots are never freed; a non-null pointer is a live slot,
    // and this thread owns its EXEC while the body runs.
    unsafe { slot.as_ref() }
}

/// Switches the running coroutine out; returns when it is resumed.
/// `None` outside a coroutine.
pub fn switch_out(why: Switch) -> Option<Resumed> {
    let (slot, yielder) = get_current();
    if slot.is_null() {
        return None;
    }
    // SAFETY: the yielder lives on this coroutine's stack, which is the
    // stack we are running on, so it outlives this call.
    let r = unsafe { (*yielder).suspend(why) };
    Some(r)
}

impl Context {
    /// Prepares `entry(env)` to run on `stack`; nothing runs yet.
    ///
    /// # Safety
    /// `entry` must be safe to call with `env`, which must stay valid
    /// until the frame is freed.
    pub unsafe fn new(
        stack: Stack,
        slot: &'static Slot,
        entry: Entry,
        env: *mut c_void,
    ) -> Context {
        let co = Co::with_stack(stack, move |yielder: &CoYielder, _first: Resumed| {
            let y = yielder as *const CoYielder;
            slot.set_yielder(y.cast());
            set_current((slot, y));
            // SAFETY: entry and env come from coro_spawn: a C function and
            // the frame's own copy of its environment.
            unsafe { entry(env) }
        });
        Context {
            co,
            fiber: Fiber::new(),
        }
    }

    /// Runs the coroutine of `slot` until it switches out or returns.
    /// The caller owns the frame's `EXEC`.
    pub fn resume(&mut self, slot: &'static Slot, how: Resumed) -> Step {
        set_current((slot, slot.yielder().cast()));
        let r = self.fiber.run(|| self.co.resume(how));
        set_current((ptr::null(), ptr::null()));
        match r {
            CoroutineResult::Yield(why) => Step::Switched(why),
            CoroutineResult::Return(v) => Step::Returned(v),
        }
    }

    /// Whether the body ever ran.
    pub fn started(&self) -> bool {
        self.co.started()
    }

    /// Gives the stack back, abandoning a body that did not finish. Its
    /// frames are not unwound: the frame's defers were its cleanup. The
    /// TSan fiber goes back with it (`sanitize` rule 4).
    pub fn into_stack(mut self) -> Stack {
        if !self.co.done() {
            // SAFETY: the body is switched out and will never run again;
            // coroutine bodies are C frames and our own, none of which
            // needs dropping (the frame ran the defers).
            unsafe { self.co.force_reset() };
        }
        self.co.into_stack()
    }
}

/// Hides the calling coroutine (if any) while library code runs plain
/// callbacks on its stack; `restore_current` puts it back.
pub fn hide_current() -> (*const Slot, *const ()) {
    let (s, y) = get_current();
    if !s.is_null() {
        set_current((ptr::null(), ptr::null()));
    }
    (s, y.cast())
}

pub fn restore_current(saved: (*const Slot, *const ())) {
    if !saved.0.is_null() {
        set_current((saved.0, saved.1.cast()));
    }
}
