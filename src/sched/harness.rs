//! Running, finalizing and freeing one frame: what the `EXEC` owner does.

use super::worker::Local;
use super::Runtime;
use crate::context::{self, Resumed, Step, Suspension};
use crate::frame::slot::{awaiter, Body, Given, Slot};
use crate::frame::state::{Complete, CompleteAwaited, Park, Unhold, CANCELLED, CANCEL_RETURNS};
use crate::frame::wait::Wait;
use crate::frame::{table, Token};

/// An awaited child that `Local::run_awaited_now` ran to its end, with
/// its await done in the same step (`State::complete_awaited`): what the
/// await answers. The frame is already freed if it had to be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AwaitedEnd {
    pub(crate) value: *mut core::ffi::c_void,
    pub(crate) cancelled: bool,
}

/// A nested run of an awaited child (`Local::run_awaited_now`): the
/// generation its awaiter holds, and what the await answers if the run
/// ended it.
pub(crate) struct Nested {
    pub(crate) gen: u32,
    pub(crate) end: Option<AwaitedEnd>,
}

/// How a frame's run ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Returned(*mut core::ffi::c_void),
    Cancelled,
}

/// Runs a queued frame until it switches out or finishes, and gives it
/// back if it yielded: the caller queues it behind the others (the worker
/// loop in the same step as it takes the next, `Local::rotate`).
/// The caller (the worker) took it off a queue, so it owns `EXEC`.
/// Inlined into the worker's loop (and `Local::run_awaited_now`): a yield
/// round trip then pays no call and no second set of register saves.
/// `NESTED`: an awaited child run nested, whose end is inlined too (it
/// usually returns: spawn + await 620.2 -> 593.7 instructions) and ends its
/// await as well (`nested`, which only a nested run passes); the worker
/// loop does neither: the extra code would crowd the yield's registers.
#[inline(always)]
#[must_use]
pub(super) fn run<const NESTED: bool>(
    local: &Local,
    slot: &'static Slot,
    nested: Option<&mut Nested>,
) -> Option<&'static Slot> {
    let snap = slot.state.load();
    let how = if snap.has(CANCELLED) {
        // SAFETY: we own EXEC.
        let body = unsafe { slot.body() };
        if body.given == Given::Granted {
            // A sync wait was given the lock, an item or room before the
            // cancel came: it returns it, and the cancel acts at the next
            // suspension point, so nothing handed over is lost.
            Resumed::Ok
        } else if !snap.has(CANCEL_RETURNS) || !body.in_entry {
            // Default mode never returns to the body (rule 4); cancel-
            // returns mode does, unless the body never started (rule 5).
            finish(slot, Outcome::Cancelled, Some(local));
            return None;
        } else {
            Resumed::Cancelled
        }
    } else {
        Resumed::Ok
    };
    // SAFETY: we own EXEC (rule 3); the body is not running.
    let Some(ctx) = unsafe { slot.context() }.as_mut() else {
        // A foreign frame: no stack.
        return run_foreign(local, slot, how);
    };
    let step = ctx.resume(local.ctx, slot, how);
    after::<NESTED>(local, slot, nested, step)
}

/// `run` for a foreign frame (`context::foreign`), which never runs nested
/// (`Local::run_awaited_now`). Out of line, so that a stackful frame's
/// switch stays inlined in the worker's loop.
#[inline(never)]
fn run_foreign(local: &Local, slot: &'static Slot, how: Resumed) -> Option<&'static Slot> {
    let step = context::foreign::resume(local.ctx, slot, how);
    after::<false>(local, slot, None, step)
}

/// What `run` does once the frame's body stopped as `step` says.
#[inline(always)]
fn after<const NESTED: bool>(
    local: &Local,
    slot: &'static Slot,
    nested: Option<&mut Nested>,
    step: Step,
) -> Option<&'static Slot> {
    match step {
        Step::Returned(value) if NESTED => match nested {
            Some(n) => {
                n.end = finish_inline(slot, Outcome::Returned(value), Some(local), Some(n.gen))
            }
            None => {
                let _ = finish_inline(slot, Outcome::Returned(value), Some(local), None);
            }
        },
        Step::Returned(value) => finish(slot, Outcome::Returned(value), Some(local)),
        // Pinned here: back on this worker's queue, by the caller. A
        // cancel that came meanwhile is acted on above, before the body
        // runs again (rules 4 and 5), so the state is not looked at twice.
        Step::Yielded => return Some(slot),
        Step::Suspended(Suspension::Lib(w)) => match slot.state.park_lib() {
            // From here on the frame is not ours (rule 3); the wait's
            // callback touches only what outlives it.
            Park::Parked { seq } => (w.park)(Token::new(slot.index(), seq), w.args),
            not_parked => {
                if let Some(unparked) = w.unparked {
                    unparked(w.args);
                }
                match not_parked {
                    Park::Finalize => finish(slot, Outcome::Cancelled, Some(local)),
                    _ => local.push(slot),
                }
            }
        },
        Step::Suspended(Suspension::C(f, arg)) => match slot.state.park_holding() {
            Park::Parked { seq } => {
                let token = crate::frame::handle::coro_token {
                    id: Token::new(slot.index(), seq).0,
                };
                // SAFETY: a C callback given to coro_suspend, called as
                // documented: after the switch, with the token. We keep
                // EXEC until it returns (rule 9).
                unsafe { f(token, arg) };
                match slot.state.unhold() {
                    // From here on the frame is not ours (rule 3).
                    Unhold::Parked => {}
                    Unhold::Requeue => local.push(slot),
                    Unhold::Finalize => finish(slot, Outcome::Cancelled, Some(local)),
                }
            }
            Park::Finalize => finish(slot, Outcome::Cancelled, Some(local)),
            Park::Requeue => local.push(slot),
        },
    }
    None
}

/// Queues a frame whose `EXEC` the caller owns on its pinned worker.
pub(crate) fn schedule_owned(slot: &'static Slot) {
    schedule_owned_from(slot, super::worker::local());
}

/// `schedule_owned` for a caller that knows which worker it is (`local`).
#[inline]
pub(crate) fn schedule_owned_from(slot: &'static Slot, local: Option<&Local>) {
    // SAFETY: we own EXEC.
    let body = unsafe { slot.body() };
    let rt = body.runtime().expect("live frame has a runtime");
    if let Some(l) = local.filter(|l| l.serves(rt)) {
        // SAFETY: we own EXEC.
        if l.index() == unsafe { slot.owned_worker() } {
            l.push(slot);
            return;
        }
        // A migratable frame resumed by a worker with nothing else queued
        // moves to it and runs next on this CPU, with what the resumer
        // wrote still in cache: tokio's LIFO-slot hand-off. Only onto an
        // idle queue, so a busy worker does not gather everything it wakes.
        if body.migratable && l.is_idle() {
            slot.set_worker(l.index());
            l.push(slot);
            return;
        }
    }
    // SAFETY: we own EXEC.
    schedule_remote(slot, rt, unsafe { slot.owned_worker() });
}

/// `schedule_owned_from` for a frame pinned to another thread's worker:
/// out of line, so the local push saves no registers for the inbox push.
#[inline(never)]
fn schedule_remote(slot: &'static Slot, rt: &Runtime, worker: usize) {
    if rt.push_remote(worker, slot).is_err() {
        // The workers are gone (shutdown): nothing will run it again.
        finalize(slot, Outcome::Cancelled);
    }
}

/// Ends a frame: undoes its wait if cancelled, runs the defers (LIFO) and
/// `env_drop`, publishes the result and `DONE`, wakes an awaiter, and frees
/// the frame if nothing holds it. The caller owns `EXEC`.
pub(crate) fn finalize(slot: &'static Slot, outcome: Outcome) {
    // Defers are plain calls: they must not see this thread's coroutine (if
    // the canceller is one) as theirs.
    let ctx = context::thread_ctx();
    let outer = ctx.hide();
    finish(slot, outcome, super::worker::local_of(ctx));
    ctx.restore(outer);
}

/// `finalize` on a thread that runs no coroutine body right now; `local`
/// is the worker the thread is, if it is one.
fn finish(slot: &'static Slot, outcome: Outcome, local: Option<&Local>) {
    let _ = finish_inline(slot, outcome, local, None);
}

/// `finish`, inlined into the caller. `awaited`: the generation of an
/// await that begins right after on this thread (a nested run), which
/// this ends too if it can (`State::complete_awaited`).
#[inline(always)]
fn finish_inline(
    slot: &'static Slot,
    outcome: Outcome,
    local: Option<&Local>,
    awaited: Option<u32>,
) -> Option<AwaitedEnd> {
    // SAFETY: we own EXEC.
    let body = unsafe { slot.body() };
    let cancelled = matches!(outcome, Outcome::Cancelled) || slot.state.load().has(CANCELLED);
    // Most frames end outside any wait: then the wait is only looked at.
    match slot.wait.take() {
        // Cancellation flows down (rule 7): the child's promise is ours.
        Wait::Await(child) if cancelled => crate::coro::cancel_awaited(child),
        Wait::Poll { key, worker, .. } => {
            if let Some(rt) = body.runtime() {
                let _ = rt.pollers[worker].end(key);
            }
        }
        // Cancelled in a sync wait: still counted by the object unless a
        // waker gave it something first (`sync::wait::Claimed::give`);
        // its timer, if any, still to end.
        Wait::Sync { obj, worker, .. } => {
            if core::mem::replace(&mut body.given, Given::Nothing) == Given::Nothing {
                obj.leave(slot.index(), false);
            }
            let key = core::mem::replace(&mut body.sync_timer, crate::frame::wait::NO_TIMER);
            if let (true, Some(rt)) = (key != crate::frame::wait::NO_TIMER, body.runtime()) {
                let _ = rt.pollers[worker].end(key);
            }
        }
        _ => {}
    }
    if !body.relock.is_null() {
        // Abandoned in a `coro_cond_wait`: it will not take its mutex back.
        let m = core::mem::replace(&mut body.relock, core::ptr::null());
        // SAFETY: bound, so the mutex lives (sync rule 4).
        unsafe { (*m).unbind() };
    }
    if !body.defers.is_empty() || body.env_drop.is_some() {
        run_cleanup(slot, body, cancelled);
    }
    let kept = body.locks & crate::frame::slot::LOCK_COUNT;
    if kept != 0 {
        // Reported before the end is published, so an awaiter sees it.
        crate::coro::report_lock_kept(slot.promise().0, kept, body.lock_names.innermost(kept));
    }
    let value = match outcome {
        Outcome::Returned(v) if !cancelled => v,
        _ => core::ptr::null_mut(),
    };
    if let Some(gen) = awaited {
        // Nobody else reads the result of a frame whose async reference
        // this consumes, so it is not stored.
        if let CompleteAwaited::Taken { cancelled, free } =
            slot.state.complete_awaited(gen, cancelled)
        {
            if free {
                free_returned(slot, local);
            }
            return Some(AwaitedEnd { value, cancelled });
        }
    }
    crate::sanitize::release(&slot.result);
    slot.result
        .store(value, core::sync::atomic::Ordering::Release);
    match slot.state.complete(cancelled) {
        Complete::Kept => {}
        Complete::Free => free_with(slot, local),
        Complete::WakeAwaiter => {
            wake_awaiter(slot, local);
            if slot.state.release_exec() {
                free_with(slot, local);
            }
        }
    }
    None
}

/// Runs the defers (LIFO; errdefers only if `cancelled`) and `env_drop`,
/// as the frame's own code: a `coro_mutex_unlock` there unlocks what the
/// frame holds (`ThreadCtx::finalizing`). Out of line: most frames have
/// neither, and their end should not pay for the thread-local.
#[inline(never)]
fn run_cleanup(slot: &'static Slot, body: &mut Body, cancelled: bool) {
    let ctx = context::thread_ctx();
    let outer = ctx.set_finalizing(slot.promise().0);
    let outer_mem = context::foreign::collect(ctx);
    while let Some(d) = body.defers.pop() {
        if !d.on_error_only || cancelled {
            // SAFETY: registered by the coroutine with coro_defer/errdefer.
            unsafe { (d.f)(d.arg) };
        }
    }
    if let Some(drop_env) = body.env_drop.take() {
        // SAFETY: the frame's own copy of the environment, or a foreign
        // frame's destroy with its frame, called once.
        unsafe { drop_env(body.env) };
    }
    context::foreign::keep(ctx, body, outer_mem);
    ctx.set_finalizing(outer);
}

/// Hands `DONE` to whoever awaits the frame (rule 8). The caller still
/// owns `EXEC`.
pub(crate) fn wake_awaiter(slot: &'static Slot, local: Option<&Local>) {
    let gen = slot.state.load().gen();
    crate::sanitize::release(&slot.awaiter);
    let old = slot.awaiter.swap(
        awaiter::mark(gen, awaiter::DONE),
        core::sync::atomic::Ordering::AcqRel,
    );
    crate::sanitize::acquire(&slot.awaiter);
    if old == awaiter::mark(gen, awaiter::THREAD) {
        // SAFETY: we swapped THREAD out.
        unsafe { slot.blocker.wake() };
    } else if Token(old).split().is_ok() {
        // A stale token (the awaiter was cancelled) is answered ESTALE.
        let _ = crate::coro::resume_from(Token(old), local);
    }
}

/// Releases a finished frame: its stack goes back to the pool and every
/// handle to it turns stale. The caller's transition said `Free`.
pub(crate) fn free(slot: &'static Slot) {
    free_with(slot, super::worker::local());
}

/// A freed frame's environment buffer (in 16-byte words) stays in its slot
/// for the next frame up to this capacity; a bigger one is dropped.
const ENV_KEPT_WORDS: usize = 64;

/// Drops a slot's environment buffer if it is too big to keep for the
/// slot's next frame: a freed frame's, or a spawn's that failed after it
/// copied the environment.
pub(crate) fn trim_env(body: &mut Body) {
    if body.env_heap.capacity() > ENV_KEPT_WORDS {
        body.env_heap = Vec::new();
    }
}

/// `free_with` inlined for its common case on the nested await's path: a
/// frame that returned on its own worker goes warm with a few stores.
#[inline(always)]
fn free_returned(slot: &'static Slot, local: Option<&Local>) {
    if let Some(l) = local {
        // SAFETY: nothing holds the frame any more; we are its last owner.
        let body = unsafe { slot.body() };
        // It ran from this worker's queue, which holds only frames of the
        // worker's own runtime.
        debug_assert!(body.runtime().is_some_and(|rt| l.serves(rt)));
        // A big environment buffer takes `free_with`'s way: it drops it.
        if body.env_heap.capacity() <= ENV_KEPT_WORDS && keeps_warm(body, l) {
            release(slot, body);
            l.keep_warm(slot);
            return;
        }
    }
    free_with(slot, local);
}

/// Whether `l`, a worker of this finished frame's runtime, keeps its slot
/// warm (`keep_warm`): its coroutine waits at the top of its loop (the
/// entry returned, or never ran), and `l` has room.
#[inline(always)]
fn keeps_warm(body: &Body, l: &Local) -> bool {
    !body.in_entry && l.has_warm_room()
}

/// Turns a finished frame's slot free: every handle to it goes stale.
/// Finishing emptied the defers, the wait and `env_drop`; spawn sets
/// `entry`, `env_drop` and the environment again.
#[inline(always)]
fn release(slot: &'static Slot, body: &mut Body) {
    debug_assert!(
        body.env_drop.is_none() && body.defers.is_empty() && slot.wait.get() == Wait::None,
        "freed a frame that did not finish"
    );
    if !body.frame_mem.is_null() {
        context::foreign::free_kept(body);
    }
    body.rt = core::ptr::null();
    // Keeps check mode's bit (`trace::CHECK_LOCKS`), and clears a
    // foreign frame's: one `and` to memory, as the store of 0 was.
    body.locks &= crate::frame::trace::CHECK_LOCKS;
    slot.owner.store(0, core::sync::atomic::Ordering::Release);
    slot.state.release();
}

/// `free` for a caller that knows which worker it is (`local`).
pub(crate) fn free_with(slot: &'static Slot, local: Option<&Local>) {
    // SAFETY: nothing holds the frame any more; we are its last owner.
    let body = unsafe { slot.body() };
    // SAFETY: as above.
    let context = unsafe { slot.context() };
    let rt = body.runtime();
    let serving = local.filter(|l| rt.is_some_and(|rt| l.serves(rt)));
    let warm = context.is_some() && serving.is_some_and(|l| keeps_warm(body, l));
    if !warm {
        if let (Some(ctx), Some(rt)) = (context.take(), rt) {
            let stack = ctx.into_stack(!body.in_entry);
            match serving {
                Some(l) => l.give_stack(stack),
                None => rt.stacks.put(stack),
            }
        }
        body.in_entry = false;
    }
    trim_env(body);
    release(slot, body);
    match local {
        Some(l) if warm => l.keep_warm(slot),
        Some(l) => l.free_slot(slot),
        None => table::free(slot, None),
    }
}
