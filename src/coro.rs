//! The operations of DESIGN section 8, in Rust; `src/ffi` wraps each one.
//!
//! Each operation validates its handle inside the state word's transition
//! (rule 6 in `frame/mod.rs`) and then does what the transition's outcome
//! says: schedule, finalize, free, or nothing.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::atomic::Ordering::*;

use crate::context::{self, LibWait, Resumed, Running, Suspension};
use crate::error::{Error, Result};
use crate::frame::slot::{
    awaiter, Defer, ForeignPark, Slot, FOREIGN_FRAME, LOCK_COUNT, NOT_DRAINED,
};
pub use crate::frame::slot::{DeferFn, Entry, EnvDrop};
use crate::frame::state::{AwaitStart, Consume, CANCELLED, CANCEL_RETURNS, DONE};
use crate::frame::wait::Wait;
use crate::frame::{table, trace};
pub use crate::frame::{Promise, Token};
use crate::poll;
use crate::sched::{self, Outcome, Runtime};

pub const SPAWN_CANCEL_RETURNS: u32 = 1;
pub const SPAWN_MIGRATABLE: u32 = 2;
const SPAWN_FLAGS: u32 = SPAWN_CANCEL_RETURNS | SPAWN_MIGRATABLE;

/// Starts `entry` on a copy of `env` in a new frame of `rt`.
pub fn spawn(
    rt: &Runtime,
    entry: Entry,
    env: &[u8],
    drop: Option<EnvDrop>,
    flags: u32,
) -> Result<Promise> {
    spawn_with(rt, entry, env, drop, flags, sched::local)
}

/// `spawn` with the way to find this thread's worker given: `coro_spawn`,
/// which is never inlined, passes `sched::local_before_switch`, whose
/// thread-local lookup is inlined (nothing in a spawn switches).
#[inline(always)]
pub(crate) fn spawn_with(
    rt: &Runtime,
    entry: Entry,
    env: &[u8],
    drop: Option<EnvDrop>,
    flags: u32,
    local: impl FnOnce() -> Option<&'static sched::Local>,
) -> Result<Promise> {
    if flags & !SPAWN_FLAGS != 0 {
        return Err(Error::Invalid);
    }
    if rt.is_closing() {
        return Err(Error::Shutdown);
    }
    let any_local = local();
    let local = any_local.filter(|l| l.serves(rt));
    // A worker of `rt` starts the frame in a slot that kept its coroutine
    // and stack, if it has one (`Local::keep_warm`).
    let slot = match (local, any_local) {
        (Some(l), _) => match l.take_warm() {
            Some(s) => s,
            None => l.alloc_slot()?,
        },
        (None, Some(l)) => l.alloc_slot()?,
        (None, None) => table::alloc(None)?,
    };
    init_frame(rt, local, slot, entry, env, drop, flags)
}

/// Publishes a frame in `slot` and queues it. `local` is this thread's
/// worker only if it serves `rt`.
#[inline(always)]
fn init_frame(
    rt: &Runtime,
    local: Option<&sched::Local>,
    slot: &'static Slot,
    entry: Entry,
    env: &[u8],
    drop: Option<EnvDrop>,
    flags: u32,
) -> Result<Promise> {
    // SAFETY: a free slot is ours until `init` publishes it.
    let body = unsafe { slot.body() };
    // The environment lives in the slot's buffer, whose capacity survives
    // the slot's reuse, so a steady spawn loop allocates nothing. (Not on
    // top of the stack: valgrind takes writes there from another thread for
    // writes below a stack pointer.)
    let env_ptr: *mut u8 = if env.is_empty() {
        ptr::null_mut()
    } else {
        let words = env.len().div_ceil(16);
        body.env_heap.clear();
        if body.env_heap.try_reserve_exact(words).is_err() {
            give_back_unused(slot, local);
            return Err(Error::NoMem);
        }
        body.env_heap.resize(words, 0);
        body.env_heap.as_mut_ptr().cast()
    };
    if !env.is_empty() {
        // SAFETY: env_ptr has room for env.len() bytes and does not overlap
        // the caller's buffer.
        unsafe { ptr::copy_nonoverlapping(env.as_ptr(), env_ptr, env.len()) };
    }
    // SAFETY: the slot is ours (see above).
    let context = unsafe { slot.context() };
    if context.is_none() {
        let stack = match local {
            Some(l) => l.take_stack(),
            None => rt.stacks.get(),
        };
        let stack = match stack {
            Ok(s) => s,
            Err(e) => {
                // Nothing was published: the slot is still ours to give
                // back, without a copy it could not keep once freed.
                sched::trim_env(body);
                table::free(slot, None);
                return Err(e);
            }
        };
        // SAFETY: the coroutine calls the entry set below, with env_ptr,
        // which lives in the slot's env_heap until the frame is freed.
        let new = unsafe { context::Context::new(stack, slot) };
        // There was nothing to drop: forgetting the old value spares the
        // drop call.
        core::mem::forget(context.replace(new));
    }
    publish(rt, local, slot, entry, env_ptr.cast(), drop, flags)
}

/// Publishes a prepared frame in `slot` (its environment or foreign frame
/// at `env`) and queues it: the tail of both spawns.
#[inline(always)]
fn publish(
    rt: &Runtime,
    local: Option<&sched::Local>,
    slot: &'static Slot,
    entry: Entry,
    env: *mut c_void,
    drop: Option<EnvDrop>,
    flags: u32,
) -> Result<Promise> {
    // SAFETY: a free slot is ours until `init` publishes it.
    let body = unsafe { slot.body() };
    let gen = slot.state.load().gen();
    let promise = Promise::new(slot.index(), gen);
    let worker = rt.pick_worker();
    body.rt = rt;
    slot.set_worker(worker);
    body.migratable = flags & SPAWN_MIGRATABLE != 0;
    body.entry = Some(entry);
    body.env = env;
    body.env_drop = drop;
    slot.awaiter
        .store(awaiter::mark(gen, awaiter::EMPTY), Relaxed);
    slot.result.store(ptr::null_mut(), Relaxed);
    slot.owner.store(rt.id(), Relaxed);
    let published = slot.state.init(flags & SPAWN_CANCEL_RETURNS != 0);
    debug_assert_eq!(published, gen);
    let queued = match local {
        // `local` is this thread's worker of `rt`, if it is one (`spawn`
        // filtered it): any other target is another thread's queue.
        Some(l) if l.index() == worker => {
            l.push(slot);
            Ok(())
        }
        _ => rt.push_remote(worker, slot),
    };
    if queued.is_err() {
        // Shutdown stopped the workers in between: the caller keeps its
        // environment (no env_drop) and gets no promise. The frame was
        // published, so it ends as frames do: finalized, then freed by
        // the detach that drops the last reference (not by the caller).
        body.env_drop = None;
        sched::finalize(slot, Outcome::Cancelled);
        let _ = detach(promise);
        return Err(Error::Shutdown);
    }
    Ok(promise)
}

/// Starts a foreign frame (`context::foreign`): `resume(frame)` runs it,
/// `destroy(frame)` ends it.
pub fn spawn_frame(
    rt: &Runtime,
    resume: Entry,
    destroy: Option<EnvDrop>,
    frame: *mut c_void,
    flags: u32,
) -> Result<Promise> {
    if flags & !SPAWN_FLAGS != 0 {
        return Err(Error::Invalid);
    }
    if rt.is_closing() {
        return Err(Error::Shutdown);
    }
    let local = sched::local().filter(|l| l.serves(rt));
    // Not a warm slot: its coroutine would want the slot's yielder, which
    // a foreign frame's must not have (`Running::is_foreign`).
    let slot = match local {
        Some(l) => l.alloc_slot()?,
        None => table::alloc(None)?,
    };
    // SAFETY: a free slot is ours until `publish` publishes it.
    debug_assert!(unsafe { slot.context() }.is_none());
    slot.set_yielder(ptr::null());
    // SAFETY: as above.
    let body = unsafe { slot.body() };
    body.locks |= FOREIGN_FRAME;
    body.foreign_park = None;
    body.answer = None;
    publish(rt, local, slot, resume, frame, destroy, flags)
}

/// Gives back a slot `init_frame` took and published nothing in: to the
/// worker's warm slots if it kept its coroutine, else to the table.
#[cold]
fn give_back_unused(slot: &'static Slot, local: Option<&sched::Local>) {
    // SAFETY: the slot is ours: nothing was published in it.
    let warm = unsafe { slot.context() }.is_some();
    match local {
        // Only a worker's own warm slots have a coroutine (`spawn_with`).
        Some(l) if warm => l.keep_warm(slot),
        _ => table::free(slot, None),
    }
}

/// Does what a transition's outcome asks of the caller.
fn act(slot: &'static Slot, outcome: Consume) {
    act_from(slot, outcome, sched::local);
}

/// `act` for a caller that may already know which worker it runs on:
/// `local` is asked only when the outcome needs it.
fn act_from<'a>(
    slot: &'static Slot,
    outcome: Consume,
    local: impl FnOnce() -> Option<&'a sched::Local>,
) {
    match outcome {
        Consume::Schedule => sched::schedule_owned_from(slot, local()),
        Consume::Finalize => sched::finalize(slot, Outcome::Cancelled),
        Consume::Dropped => {}
        Consume::Free => sched::free_with(slot, local()),
    }
}

fn lookup(index: usize) -> Result<&'static Slot> {
    table::slot(index).ok_or(Error::Stale)
}

/// The checks every suspension point makes on the running coroutine.
#[inline]
pub(crate) fn suspension_point(me: &Running) -> Result<()> {
    no_lock_held::<true>(me)?;
    if me.slot.state.load().has(CANCELLED | CANCEL_RETURNS) {
        return Err(Error::Canceled);
    }
    Ok(())
}

/// The checks of a call that may return without waiting (`io`'s
/// blocking-style calls), on one load of the state word: those of every
/// suspension point, and a cancel of the default mode, which only a switch
/// acts on, is acted on here by a yield (a body whose descriptor is always
/// ready would otherwise never be cancelled). For a read of `read_fd`,
/// answers whether this frame's last kept read of it came up short
/// (`note_drained`), and forgets that.
pub(crate) fn blocking_call_point(me: Running, read_fd: Option<i32>) -> Result<bool> {
    no_lock_held::<true>(&me)?;
    let state = me.slot.state.load();
    if state.any(CANCELLED) {
        if state.has(CANCEL_RETURNS) {
            return Err(Error::Canceled);
        }
        // The worker begins the cancellation; the body does not run again.
        me.yield_park()?;
        return Ok(false);
    }
    let Some(fd) = read_fd else {
        return Ok(false);
    };
    // SAFETY: the running body owns EXEC.
    let body = unsafe { me.slot.body() };
    let drained = body.drained == drained_key(state.gen(), fd);
    if drained {
        body.drained = NOT_DRAINED;
    }
    Ok(drained)
}

/// A kept read of the running coroutine came up short on the stream
/// `fd`: the socket was drained, so the next read on it waits for its
/// edge before it tries, as tokio clears readiness after a short read.
pub(crate) fn note_drained(fd: i32) {
    if let Some(me) = context::running() {
        let key = drained_key(me.slot.state.load().gen(), fd);
        // SAFETY: the running body owns EXEC.
        unsafe { me.slot.body() }.drained = key;
    }
}

/// `Body::drained` for descriptor `fd` of the frame of generation `gen`:
/// a key an older frame of the slot left never matches a newer frame's,
/// so spawn need not clear it.
fn drained_key(gen: u32, fd: i32) -> u64 {
    (gen as u64) << 32 | fd as u32 as u64
}

/// CP.52: a coroutine must not suspend while it holds a blocking lock.
/// `SUSPEND`: the caller may park (a yield does not).
///
/// In check mode every slot's count carries `trace::CHECK_LOCKS`, so a
/// suspension point always takes the cold path, where its backtrace is
/// captured: the default build pays nothing for it (the same one test as
/// ever). A yield captures nothing and tests the count alone: one
/// `test` to memory, as the compare was, and a cold path that never
/// comes back to it (one that may come back makes the hot path keep a
/// register across the call: a yield took 1 instruction more).
#[inline]
fn no_lock_held<const SUSPEND: bool>(me: &Running) -> Result<()> {
    // SAFETY: the running body owns EXEC.
    let body = unsafe { me.slot.body() };
    if !SUSPEND {
        if body.locks & !trace::CHECK_LOCKS != 0 {
            return Err(checked_yield(me.slot));
        }
        return Ok(());
    }
    if body.locks > 0 {
        // The slot, not `me`: a reference to `me` would make the hot
        // path spill it to the stack (a yield took 5 instructions more).
        return checked_suspension(me.slot);
    }
    Ok(())
}

/// `no_lock_held`'s cold path for a suspension point: a noted lock is
/// held, check mode, or a foreign frame. `slot` is the running
/// coroutine's.
#[cold]
#[inline(never)]
fn checked_suspension(slot: &'static Slot) -> Result<()> {
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    if body.locks & LOCK_COUNT != 0 {
        report_lock_held(
            slot.promise().0,
            body.lock_names.innermost(body.locks & LOCK_COUNT),
        );
        return Err(Error::LockHeld);
    }
    if body.locks & trace::CHECK_LOCKS != 0 {
        trace::capture(slot);
    }
    Ok(())
}

/// `no_lock_held`'s cold path for a yield: a noted lock is held, or the
/// yield is a foreign frame's, which returns to its worker
/// (`context::foreign`).
/// Never comes back to the hot path (an error either way), which then
/// keeps no register across the call.
#[cold]
#[inline(never)]
fn checked_yield(slot: &'static Slot) -> Error {
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    if body.locks & LOCK_COUNT != 0 {
        report_lock_held(
            slot.promise().0,
            body.lock_names.innermost(body.locks & LOCK_COUNT),
        );
        return Error::LockHeld;
    }
    debug_assert!(body.locks & FOREIGN_FRAME != 0);
    context::foreign::begin(slot, ForeignPark::Yield)
}

/// The running coroutine, checked for a suspension.
#[inline]
fn suspendable() -> Result<Running> {
    let me = context::running().ok_or(Error::State)?;
    suspension_point(&me)?;
    Ok(me)
}

/// `coro_suspend`: park, then `on_suspend(token, arg)` on the worker.
/// Returns how the coroutine was resumed, as `yield_now` does.
pub fn suspend_with(
    on_suspend: unsafe extern "C" fn(crate::frame::handle::coro_token, *mut c_void),
    arg: *mut c_void,
) -> Result<Resumed> {
    let me = suspendable()?;
    me.park(Suspension::C(on_suspend, arg))
}

/// `coro_yield`: how the coroutine was resumed (`Resumed::status` is
/// the C status), or why it could not yield. Unlike the other suspension
/// points it does not look for a cancel first: a yield leaves nothing to
/// undo, and the worker resumes a cancelled cancel-returns coroutine at
/// once with `Resumed::Cancelled` (and finalizes a default-mode one) before
/// its body runs again (`sched::harness::run`), so the answer is the same,
/// one switch later, and the common case saves the look.
pub fn yield_now() -> Result<Resumed> {
    yield_running(context::running())
}

/// `yield_now` for `coro_yield`, which is never inlined: the thread-local
/// lookup inlined too (`context::thread_ctx_before_switch`). Not public, so
/// no caller can inline it into a loop that spans a switch.
#[inline(always)]
pub(crate) fn yield_from_c() -> Result<Resumed> {
    yield_running(context::thread_ctx_before_switch().running())
}

#[inline(always)]
fn yield_running(me: Option<Running>) -> Result<Resumed> {
    let me = me.ok_or(Error::State)?;
    no_lock_held::<false>(&me)?;
    Ok(me.yield_now())
}

/// `coro_resume`.
pub fn resume(token: Token) -> Result<()> {
    consume(token, false, sched::local)
}

/// `coro_resume` by library code that knows which worker it runs on.
pub(crate) fn resume_from(token: Token, local: Option<&sched::Local>) -> Result<()> {
    consume(token, false, || local)
}

/// `coro_cancel_suspend`.
pub fn cancel_suspend(token: Token) -> Result<()> {
    consume(token, true, sched::local)
}

fn consume<'a>(
    token: Token,
    cancel: bool,
    local: impl FnOnce() -> Option<&'a sched::Local>,
) -> Result<()> {
    let (index, seq) = token.split()?;
    let slot = lookup(index)?;
    let outcome = slot
        .state
        .consume_token(seq, cancel)
        .map_err(|_| Error::Stale)?;
    act_from(slot, outcome, local);
    Ok(())
}

/// `coro_cancel_async`.
pub fn cancel_async(p: Promise) -> Result<()> {
    let (index, gen) = p.split()?;
    let slot = lookup(index)?;
    let outcome = slot
        .state
        .cancel_async(gen, false)
        .map_err(|_| Error::Stale)?;
    act(slot, outcome);
    Ok(())
}

/// A cancelled awaiter gives up the child it awaited (rule 7).
pub(crate) fn cancel_awaited(child: Promise) {
    let Ok((index, gen)) = child.split() else {
        return;
    };
    let Ok(slot) = lookup(index) else { return };
    if let Ok(outcome) = slot.state.cancel_async(gen, true) {
        act(slot, outcome);
    }
}

/// `coro_detach`.
pub fn detach(p: Promise) -> Result<()> {
    let (index, gen) = p.split()?;
    let slot = lookup(index)?;
    let outcome = slot.state.detach(gen).map_err(|_| Error::Stale)?;
    act(slot, outcome);
    Ok(())
}

/// `coro_await`: suspends a coroutine, blocks any other thread.
pub fn await_promise(p: Promise) -> Result<*mut c_void> {
    await_with(p, context::thread_ctx)
}

/// `await_promise` for `coro_await`, which is never inlined: the thread's
/// context is looked up inline. `ctx` is used only before the awaiter
/// switches out (a nested run of the child keeps it on this thread), and
/// what runs after a switch looks the context up again through the
/// out-of-line `thread_ctx`, a call LLVM cannot merge with this access.
#[inline(always)]
pub(crate) fn await_from_c(p: Promise) -> Result<*mut c_void> {
    await_with(p, context::thread_ctx_before_switch)
}

#[inline(always)]
fn await_with(
    p: Promise,
    find_ctx: impl FnOnce() -> &'static context::ThreadCtx,
) -> Result<*mut c_void> {
    let (index, gen) = p.split()?;
    let slot = lookup(index)?;
    let ctx = find_ctx();
    let me = ctx.running();
    // Set if the child ran nested and its end ended this await too.
    let mut ended = None;
    if let Some(me) = &me {
        if core::ptr::eq(me.slot, slot) && me.slot.state.load().gen() == gen {
            // Awaiting itself would wait forever. (A promise of an earlier
            // frame in this slot is only stale: `await_start` says so.)
            return Err(Error::Invalid);
        }
        // The running frame's own slot names its runtime (set at spawn).
        let my_rt = me.slot.owner.load(Relaxed);
        if slot.owner.load(Acquire) != my_rt {
            return Err(if slot.state.load().gen() != gen {
                Error::Stale
            } else {
                Error::Invalid
            });
        }
        if let Err(e) = suspension_point(me) {
            // A cancelled awaiter still consumes the promise it was given:
            // the child is cancelled, not orphaned.
            if e == Error::Canceled {
                if let Ok(outcome) = slot.state.cancel_async(gen, false) {
                    act(slot, outcome);
                }
            }
            return Err(e);
        }
        // The child may run at once, nested, as if the awaiter had parked
        // and the worker had run it next. Not for a cancelled awaiter: its
        // park would begin its cancellation and cancel the child instead.
        if slot.state.load().gen() == gen && !me.slot.state.load().has(CANCELLED) {
            if let Some(local) = sched::local_of(ctx) {
                ended = local.run_awaited_now(slot, gen);
            }
        }
    } else if !ctx.worker().is_null() {
        // Blocking a worker could deadlock the frames queued behind it.
        return Err(Error::State);
    }
    let (cancelled, value) = match ended {
        Some(end) => (end.cancelled, end.value),
        None => {
            let (start, value) = slot
                .state
                .await_start(gen, || slot.result.load(Acquire))
                .map_err(|_| Error::Stale)?;
            crate::sanitize::acquire(&slot.result);
            let AwaitStart::Ready { cancelled, free } = start else {
                return match me {
                    Some(me) => await_in_coroutine(me, slot, p),
                    None => await_blocking(slot, gen),
                };
            };
            if free {
                sched::free_with(slot, sched::local_of(ctx));
            }
            (cancelled, value.unwrap_or(ptr::null_mut()))
        }
    };
    // A cancel recorded while this coroutine ran (before its await, or
    // while its child ran nested) is acted on here, as a parked awaiter's
    // would be: coro_await is a suspension point even when it need not
    // wait. The worker finalizes a default-mode frame instead of running
    // it again; a cancel-returns one comes back with CORO_ECANCELED. The
    // child's reference is consumed above.
    if let Some(me) = me.filter(|me| me.slot.state.load().has(CANCELLED)) {
        // A foreign frame's yield answers `Pending`; its second half then
        // answers CORO_ECANCELED in cancel-returns mode.
        me.yield_park()?;
        return Err(Error::Canceled);
    }
    if cancelled {
        Err(Error::Canceled)
    } else {
        Ok(value)
    }
}

fn await_in_coroutine(me: Running, child: &'static Slot, p: Promise) -> Result<*mut c_void> {
    let slot = me.slot;
    // The running body owns EXEC: the wait is its to describe.
    slot.wait.set_await(p);
    let r = me.park(Suspension::Lib(LibWait::new(register_awaiter, [p.0, 0])))?;
    end_await(slot, child, p, r)
}

/// The second half of an await in a coroutine: `slot` awaited `child`
/// (promise `p`) and was resumed as `r` says.
fn end_await(
    slot: &'static Slot,
    child: &'static Slot,
    p: Promise,
    r: Resumed,
) -> Result<*mut c_void> {
    // Resumed, so we own EXEC again.
    slot.wait.clear();
    match r {
        Resumed::Ok => finish_await(child, p.split()?.1),
        _ => {
            cancel_awaited(p);
            Err(Error::Canceled)
        }
    }
}

/// Runs on the awaiter's worker once it has parked: gives its token to
/// the child, or resumes itself if the child finished meanwhile.
fn register_awaiter(token: Token, [promise, _]: context::LibArgs) {
    let Ok((index, gen)) = Promise(promise).split() else {
        return;
    };
    let Some(child) = table::slot(index) else {
        return;
    };
    crate::sanitize::release(&child.awaiter);
    match child.awaiter.compare_exchange(
        awaiter::mark(gen, awaiter::EMPTY),
        token.0,
        AcqRel,
        Acquire,
    ) {
        Ok(_) => {}
        Err(v) if v == awaiter::mark(gen, awaiter::DONE) => {
            crate::sanitize::acquire(&child.awaiter);
            let _ = resume(token);
        }
        // The child is gone: only our own cancellation can have released
        // it, and that consumed our token too (rule 8).
        Err(_) => {}
    }
}

/// How often a blocked `coro_await` looks before it sleeps.
const AWAIT_LOOKS: u32 = 64;

fn await_blocking(slot: &'static Slot, gen: u32) -> Result<*mut c_void> {
    // SAFETY: await_start gave us the AWAITING claim.
    if unsafe { slot.publish_thread_awaiter(gen) } {
        // A short coroutine often finishes within microseconds: look a few
        // times, giving the CPU away, before paying for a futex sleep and
        // wake (as the idle workers do).
        let mut looks = 0;
        loop {
            // Before the look: a wake-up after it changes the ticket.
            let ticket = slot.blocker.ticket();
            let s = slot.state.load();
            if s.gen() != gen {
                return Err(Error::Stale);
            }
            if s.has(DONE) {
                break;
            }
            if looks < AWAIT_LOOKS {
                looks += 1;
                std::thread::yield_now();
                continue;
            }
            slot.blocker.sleep(ticket);
            // wake_awaiter released `awaiter` before it woke us.
            crate::sanitize::acquire(&slot.awaiter);
        }
    }
    finish_await(slot, gen)
}

fn finish_await(slot: &'static Slot, gen: u32) -> Result<*mut c_void> {
    let value = slot.result.load(Acquire);
    crate::sanitize::acquire(&slot.result);
    let (cancelled, free) = slot.state.await_finish(gen).map_err(|_| Error::Stale)?;
    if free {
        sched::free(slot);
    }
    if cancelled {
        Err(Error::Canceled)
    } else {
        Ok(value)
    }
}

/// `coro_wait_fd`: waits until `fd` is ready for `events` or `deadline`
/// (monotonic ns, -1: none) passes. Blocks a thread outside a coroutine.
pub fn wait_fd(fd: i32, events: u32, deadline: i64) -> Result<()> {
    let wanted = events & (poll::READABLE | poll::WRITABLE);
    if fd < 0 || deadline < -1 || wanted == 0 || events & !(wanted | poll::KEEP) != 0 {
        return Err(Error::Invalid);
    }
    let Some(me) = context::running() else {
        if sched::on_worker() {
            return Err(Error::State);
        }
        return poll::wait_fd_blocking(fd, events, deadline);
    };
    suspension_point(&me)?;
    if deadline >= 0 && deadline <= poll::now() {
        // Already due: look, do not wait (libdill's deadline 0).
        return poll::wait_fd_blocking(fd, events, 0);
    }
    poll_wait(me, fd, events, deadline)
}

/// `coro_fd_forget`: every poller of every runtime drops what it keeps
/// of `fd`; `State` if a wait on `fd` is in progress somewhere.
pub fn fd_forget(fd: i32) -> Result<()> {
    if fd < 0 {
        return Err(Error::Invalid);
    }
    let mut r = Ok(());
    sched::for_each_runtime(|rt| {
        for poller in rt.pollers.iter() {
            if let Err(e) = poller.forget(fd) {
                r = Err(e);
            }
        }
    });
    r
}

/// `coro_sleep_until`: 0 once `deadline` has passed.
pub fn sleep_until(deadline: i64) -> Result<()> {
    if deadline < -1 {
        return Err(Error::Invalid);
    }
    let Some(me) = context::running() else {
        if sched::on_worker() || deadline < 0 {
            return Err(if deadline < 0 {
                Error::Invalid
            } else {
                Error::State
            });
        }
        poll::sleep_blocking(deadline);
        return Ok(());
    };
    suspension_point(&me)?;
    if deadline >= 0 && deadline <= poll::now() {
        return Ok(());
    }
    match poll_wait(me, -1, 0, deadline) {
        Err(Error::TimedOut) => Ok(()),
        other => other,
    }
}

/// The running coroutine's runtime and worker: where its waits begin.
///
/// Nothing with a destructor may live on a coroutine's stack across a
/// suspension: a body cancelled in the default mode is abandoned, not
/// unwound (rule 4), so an `Arc` held there would never be dropped. Hence
/// a borrow: the runtime (and its pollers) outlives its frames.
pub(crate) fn runtime_of(slot: &'static Slot) -> Result<(&'static Runtime, usize)> {
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    // SAFETY: as above.
    Ok((body.runtime().ok_or(Error::State)?, unsafe {
        slot.owned_worker()
    }))
}

fn poll_wait(me: Running, fd: i32, events: u32, deadline: i64) -> Result<()> {
    let slot = me.slot;
    let (rt, worker) = runtime_of(slot)?;
    // The running body owns EXEC: the wait is its to describe. Its
    // details before the poller call, while they are in registers.
    slot.wait.prepare_poll(worker, fd, events, deadline);
    let Some(key) = rt.pollers[worker].begin(fd, events, deadline)? else {
        return Ok(());
    };
    slot.wait.set_poll(key);
    let r = me.park(Suspension::Lib(LibWait::new(park_in_poller, [key, 0])))?;
    end_poll(slot, rt, worker, key, r)
}

/// The second half of a poller wait: `slot` waited under `key` in the
/// poller of `worker` and was resumed as `r` says.
fn end_poll(
    slot: &'static Slot,
    rt: &'static Runtime,
    worker: usize,
    key: u64,
    r: Resumed,
) -> Result<()> {
    // Resumed, so we own EXEC again.
    slot.wait.clear();
    // The poller it began in, though a migratable frame may run on
    // another worker now (`Wait::Poll`).
    let outcome = rt.pollers[worker].end(key);
    match (r, outcome) {
        (Resumed::Ok, poll::Outcome::TimedOut) => Err(Error::TimedOut),
        (Resumed::Ok, _) => Ok(()),
        _ => Err(Error::Canceled),
    }
}

/// Runs on the worker once a poller wait has parked (see `poll::Poller::park`).
fn park_in_poller(token: Token, [key, _]: context::LibArgs) {
    if let Some(local) = sched::local() {
        if let Some(t) = local.poller().park(key, token.0) {
            let _ = resume_from(Token(t), Some(local));
        }
    }
}

/// `coro_now`.
pub fn now() -> i64 {
    poll::now()
}

/// `coro_defer` / `coro_errdefer`.
pub fn defer(f: DeferFn, arg: *mut c_void, on_error_only: bool) -> Result<()> {
    let slot = context::current().ok_or(Error::State)?;
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    body.defers.try_reserve(1).map_err(|_| Error::NoMem)?;
    body.defers.push(Defer {
        f,
        arg,
        on_error_only,
    });
    Ok(())
}

/// `coro_lock_note_acquire` / `_release` (CP.52).
pub fn lock_note(what: *const c_char, acquire: bool) -> Result<()> {
    let Some(slot) = context::current() else {
        return Ok(());
    };
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    // The count is below the flags (`LOCK_COUNT`).
    let held = body.locks & LOCK_COUNT;
    if acquire {
        body.lock_names.acquired(what, held);
        body.locks += 1;
    } else {
        if held == 0 {
            return Err(Error::State);
        }
        body.locks -= 1;
        body.lock_names.released(what, held - 1);
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn report_lock_held(id: u64, what: *const c_char) {
    if crate::util::checking() {
        let name = lock_name(what);
        eprintln!("coframe: coroutine {id} suspends while holding {name} (CP.52)");
    }
}

/// Check mode: a coroutine ended with `count` noted locks never released
/// (a missing `coro_lock_note_release`; the lock itself may be held).
#[cold]
#[inline(never)]
pub(crate) fn report_lock_kept(id: u64, count: u32, what: *const c_char) {
    if crate::util::checking() {
        let name = lock_name(what);
        eprintln!(
            "coframe: coroutine {id} ended with {count} noted lock(s) not released, the last {name} \
             (coro_lock_note_release missing?)"
        );
    }
}

fn lock_name(what: *const c_char) -> std::borrow::Cow<'static, str> {
    if what.is_null() {
        "a lock".into()
    } else {
        // SAFETY: the caller passed a NUL-terminated name to lock_note,
        // which outlives the note (the C API's contract).
        unsafe { core::ffi::CStr::from_ptr(what) }.to_string_lossy()
    }
}

/// The second half of the wait a foreign frame parked in, run when it is
/// resumed as `r` says, before its host's resume (`context::foreign`):
/// what the call that began the wait answers. `Pending`: it began
/// another wait.
#[inline(always)]
pub(crate) fn end_foreign_wait(slot: &'static Slot, r: Resumed) -> Result<*mut c_void> {
    match slot.wait.get() {
        // A yield or a `coro_suspend`: the common case, nothing to end.
        Wait::None => match r {
            Resumed::Ok => Ok(ptr::null_mut()),
            _ => Err(Error::Canceled),
        },
        wait => end_foreign_library_wait(slot, wait, r),
    }
}

/// `end_foreign_wait` of one of the library's own waits, `wait`; out of
/// line, so that a yield's end stays a compare (230.8 instructions per
/// task yield against 261.9 with it inlined).
#[inline(never)]
fn end_foreign_library_wait(slot: &'static Slot, wait: Wait, r: Resumed) -> Result<*mut c_void> {
    match wait {
        // Not reached: end_foreign_wait ends a yield's wait itself.
        Wait::None => Ok(ptr::null_mut()),
        Wait::Await(p) => {
            let child = lookup(p.split()?.0)?;
            end_await(slot, child, p, r)
        }
        Wait::Poll {
            key, worker, fd, ..
        } => {
            let (rt, _) = runtime_of(slot)?;
            match end_poll(slot, rt, worker, key, r) {
                // A sleep (`sleep_until`).
                Err(Error::TimedOut) if fd < 0 => Ok(ptr::null_mut()),
                other => other.map(|()| ptr::null_mut()),
            }
        }
        Wait::Sync {
            obj,
            sending,
            worker,
            deadline,
        } => crate::sync::end_foreign_wait(slot, obj, sending, worker, deadline, r)
            .map(|()| ptr::null_mut()),
    }
}

/// `coro_frame_resumed`: the answer of the wait the running foreign frame
/// was resumed from, once.
pub fn frame_resumed() -> Result<*mut c_void> {
    let slot = context::current().ok_or(Error::State)?;
    // SAFETY: the running frame owns EXEC.
    let body = unsafe { slot.body() };
    if body.locks & FOREIGN_FRAME == 0 {
        return Err(Error::State);
    }
    body.answer.take().ok_or(Error::State)?
}

/// `coro_lock_note_name`: the name of the running coroutine's last noted
/// lock, if it holds one.
pub fn lock_note_name() -> *const c_char {
    let Some(slot) = context::current() else {
        return ptr::null();
    };
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    body.lock_names.innermost(body.locks & LOCK_COUNT)
}

/// `coro_self_id`.
pub fn self_id() -> u64 {
    context::current().map_or(0, |s| s.promise().0)
}

/// `coro_live_frames`.
pub fn live_frames() -> u64 {
    table::live()
}
