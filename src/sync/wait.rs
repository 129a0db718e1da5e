//! Waiting on a sync object, and giving a waiter what it waits for: the
//! machinery the mutex, the condition and the channel share.
//!
//! A coroutine waits as a library wait (rule 7 in `frame/mod.rs`): it
//! registers with the object, parks with `LIB_HELD`, and its park callback
//! (on the worker, right after the switch) queues its token in the object,
//! or takes what it waits for at once if it became ready meanwhile. A
//! deadline is a timer of the worker's poller that holds the same token.
//! Whoever consumes the token first ends the wait: a waker (which then
//! owns the frame's `EXEC` and writes what it gives into the body:
//! `Claimed::give`), the timer, or a cancellation (whose finalizer undoes
//! the wait: `Obj::leave`). A waker that pops a token someone else consumed
//! gets `CORO_ESTALE` from the state word and moves on to the next waiter,
//! so a cancelled or timed-out waiter is never handed the lock, a signal
//! or an item, and nothing is lost.
//!
//! A plain thread queues a `ThreadWaiter` on its stack and sleeps on its
//! word (a futex on Linux); a waker writes what it gives and sets the word
//! under the object's lock, and wakes the thread once the lock is dropped.

use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use super::Obj;
use crate::context::{self, LibArgs, LibWait, Resumed, Running, Suspension};
use crate::error::{Error, Result};
use crate::frame::slot::{Given, Slot};
use crate::frame::state::{Consume, LIB_HELD, SUSPEND_REF};
use crate::frame::{table, Token};
use crate::sched;

/// `LibArgs[1]` of a wait without a deadline.
pub(crate) use crate::frame::wait::NO_TIMER;

/// Who calls: the identity a mutex records as its owner.
pub(crate) enum Caller {
    /// A coroutine; its id is its promise's value (top bit clear).
    Coroutine(Running),
    /// A worker thread outside any coroutine (an `on_suspend` callback, a
    /// defer): it may not block, since the frames queued behind it would
    /// wait too.
    Worker(u64),
    /// A thread the runtime does not own; its id has the top bit set.
    Thread(u64),
}

impl Caller {
    pub(crate) fn id(&self) -> u64 {
        match self {
            Caller::Coroutine(r) => r.slot.promise().0,
            Caller::Worker(id) | Caller::Thread(id) => *id,
        }
    }
}

pub(crate) fn caller() -> Caller {
    let ctx = context::thread_ctx();
    if let Some(r) = ctx.running() {
        return Caller::Coroutine(r);
    }
    // A frame's defers run as its own code: they may unlock what it holds.
    if let Some(id) = ctx.finalizing() {
        return if ctx.worker().is_null() {
            Caller::Thread(id)
        } else {
            Caller::Worker(id)
        };
    }
    let id = thread_id();
    if ctx.worker().is_null() {
        Caller::Thread(id)
    } else {
        Caller::Worker(id)
    }
}

/// This thread's owner id, with the top bit set (never a coroutine's id):
/// drawn from a process-wide count, so no later thread has it. (The
/// address of a thread-local would be reused by a later thread, which
/// could then unlock a mutex a finished thread left held.)
fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: Cell<u64> = const { Cell::new(0) };
    }
    ME.with(|me| {
        if me.get() == 0 {
            me.set(NEXT.fetch_add(1, Relaxed) | 1 << 63);
        }
        me.get()
    })
}

// ---------------------------------------------------------------------
// Threads

/// A plain thread's place in a queue, on its own stack while it waits.
pub(crate) struct ThreadWaiter {
    /// 0 while waiting, 1 once given (a futex word on Linux).
    word: AtomicU32,
    given: Cell<Given>,
    /// The item this thread sends or receives (channels).
    buf: *mut u8,
    /// Its owner id, for a mutex handed to it.
    id: u64,
    #[cfg(not(target_os = "linux"))]
    thread: std::thread::Thread,
}

impl ThreadWaiter {
    pub(crate) fn new(id: u64, buf: *mut u8) -> ThreadWaiter {
        ThreadWaiter {
            word: AtomicU32::new(0),
            given: Cell::new(Given::Nothing),
            buf,
            id,
            #[cfg(not(target_os = "linux"))]
            thread: std::thread::current(),
        }
    }

    /// What a waker gave it, if anything yet. The caller holds the
    /// object's lock, or the waiter was given (word 1).
    pub(crate) fn given(&self) -> Option<Given> {
        if self.word.load(Acquire) == 0 {
            return None;
        }
        crate::sanitize::acquire(&self.word);
        Some(self.given.get())
    }

    /// Sleeps until given or `deadline` (-1: none) passes; what it was
    /// given, `None` if the deadline passed first. The caller then takes
    /// the lock and looks again (`given`), since a waker may give it in
    /// between.
    pub(crate) fn sleep(&self, deadline: i64) -> Option<Given> {
        loop {
            if let Some(g) = self.given() {
                return Some(g);
            }
            if deadline >= 0 && crate::poll::now() >= deadline {
                return None;
            }
            self.park(deadline);
        }
    }

    #[cfg(target_os = "linux")]
    fn park(&self, deadline: i64) {
        // Absolute, on CLOCK_MONOTONIC: FUTEX_WAIT_BITSET's clock.
        #[allow(clippy::unnecessary_cast)]
        let ts = libc::timespec {
            tv_sec: (deadline.max(0) / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline.max(0) % 1_000_000_000) as libc::c_long,
        };
        let timeout = if deadline < 0 {
            core::ptr::null()
        } else {
            &ts as *const libc::timespec
        };
        // SAFETY: FUTEX_WAIT_BITSET reads the aligned word behind the
        // pointer (alive: ours) and sleeps only while it is still 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                timeout,
                core::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            );
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn park(&self, deadline: i64) {
        match deadline {
            d if d < 0 => std::thread::park(),
            d => std::thread::park_timeout(std::time::Duration::from_nanos(
                d.saturating_sub(crate::poll::now()).max(0) as u64,
            )),
        }
    }
}

// ---------------------------------------------------------------------
// Giving

/// A waiter taken out of a queue, whose right to be given something the
/// taker now holds: for a coroutine, its wait's token was consumed, so the
/// taker owns the frame's `EXEC` and may write its body.
pub(crate) enum Claimed {
    Coroutine(&'static Slot),
    Thread(NonNull<ThreadWaiter>),
}

/// What to do once the object's lock is dropped: run the coroutine, or
/// wake the thread.
#[must_use]
pub(crate) enum Wake {
    Coroutine(&'static Slot),
    /// The thread's futex word, as an address: the thread may have left
    /// (and its stack gone) by the time the wake is made; a wake on a
    /// word no longer anybody's is harmless.
    #[cfg(target_os = "linux")]
    Thread(usize),
    #[cfg(not(target_os = "linux"))]
    Thread(std::thread::Thread),
}

impl Claimed {
    /// Pops waiters until one is claimed; `None` if the queue ran out.
    /// The caller holds the object's lock.
    pub(crate) fn next(queue: &mut super::queue::Queue) -> Option<Claimed> {
        use super::queue::Waiter;
        loop {
            match queue.pop()? {
                Waiter::Coroutine(token) => {
                    if let Some(c) = claim(token) {
                        return Some(c);
                    }
                }
                Waiter::Thread(tw) => return Some(Claimed::Thread(tw)),
            }
        }
    }

    /// The owner id of the waiter (a mutex handed to it).
    pub(crate) fn id(&self) -> u64 {
        match self {
            Claimed::Coroutine(slot) => slot.promise().0,
            // SAFETY: a queued thread record lives until it leaves, which
            // needs the lock the caller holds.
            Claimed::Thread(tw) => unsafe { tw.as_ref() }.id,
        }
    }

    /// The waiter's item buffer.
    pub(crate) fn buf(&self) -> *mut u8 {
        match self {
            // SAFETY: claimed: we own EXEC.
            Claimed::Coroutine(slot) => unsafe { slot.body() }.sync_buf,
            // SAFETY: as in `id`.
            Claimed::Thread(tw) => unsafe { tw.as_ref() }.buf,
        }
    }

    /// Gives the waiter `g`; the caller still holds the object's lock, and
    /// has taken the waiter out of the object's count of waiters.
    pub(crate) fn give(self, g: Given) -> Wake {
        match self {
            Claimed::Coroutine(slot) => {
                // SAFETY: claimed: we own EXEC.
                let body = unsafe { slot.body() };
                // Nothing left to undo in the object: a finalizer that
                // sees `given` ends only the timer, if any.
                body.given = g;
                Wake::Coroutine(slot)
            }
            Claimed::Thread(tw) => {
                // SAFETY: as in `id`; the thread reads `given` only after
                // it sees the word set, or under the lock we hold.
                let tw = unsafe { tw.as_ref() };
                tw.given.set(g);
                crate::sanitize::release(&tw.word);
                tw.word.store(1, Release);
                #[cfg(target_os = "linux")]
                return Wake::Thread(tw.word.as_ptr() as usize);
                #[cfg(not(target_os = "linux"))]
                return Wake::Thread(tw.thread.clone());
            }
        }
    }
}

impl Wake {
    /// Runs the coroutine (queues it on its worker) or wakes the thread.
    /// Called with no object lock held: a queued frame may be finalized
    /// at once if its runtime is shutting down.
    pub(crate) fn run(self) {
        match self {
            Wake::Coroutine(slot) => sched::schedule_owned(slot),
            #[cfg(target_os = "linux")]
            // SAFETY: FUTEX_WAKE only looks the address up in the kernel's
            // wait queues; no memory is touched.
            Wake::Thread(word) => unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word as *const u32,
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                );
            },
            #[cfg(not(target_os = "linux"))]
            Wake::Thread(t) => t.unpark(),
        }
    }
}

/// Consumes a waiting coroutine's token; `Some` if it was still waiting.
fn claim(token: u64) -> Option<Claimed> {
    let (index, seq) = Token(token).split().ok()?;
    let slot = table::slot(index)?;
    match slot.state.consume_token(seq, false) {
        Ok(Consume::Schedule) => Some(Claimed::Coroutine(slot)),
        // A library wait's token of a live frame only ever schedules (a
        // cancel takes it at once); should that change, act as told.
        Ok(other) => {
            debug_assert!(false, "sync wait token consumed as {other:?}");
            None
        }
        Err(_) => None,
    }
}

/// Whether the wait `token` is still parked with its token out: checked
/// by a park callback under the object's lock before it queues the token,
/// since a canceller consumes the token before it takes that lock to undo
/// the wait.
pub(crate) fn live(token: Token) -> bool {
    let Ok((index, seq)) = token.split() else {
        return false;
    };
    table::slot(index).is_some_and(|slot| {
        let s = slot.state.load();
        s.has(SUSPEND_REF | LIB_HELD) && s.seq() == seq
    })
}

// ---------------------------------------------------------------------
// A coroutine's wait

/// The first step of every sync park callback, on the worker right after
/// the switch: hands the token to the wait's timer, if any. False: the
/// wait is over already (the deadline passed first, and the token was
/// resumed), so the callback only unregisters its joining.
pub(crate) fn park_timer(token: Token, [_, key]: LibArgs) -> bool {
    if key == NO_TIMER {
        return true;
    }
    let Some(local) = sched::local() else {
        return true;
    };
    match local.poller().park(key, token.0) {
        None => true,
        Some(t) => {
            let _ = crate::coro::resume_from(Token(t), Some(local));
            false
        }
    }
}

/// A park callback's claim of its own coroutine, to give it what it waits
/// for at once (under the object's lock, having seen it ready). `None`:
/// a cancel or the timer took the token first; their side unregisters.
pub(crate) fn claim_own(token: Token) -> Option<Claimed> {
    claim(token.0)
}

/// A sync wait that did not park (a cancel came first): its park
/// callback, which uncounts it as joining, will not run.
fn unparked([obj, _]: LibArgs) {
    Obj::from_arg(obj).unjoin();
}

/// Waits as the running coroutine `me` on `obj`, which counted it as a
/// waiter already (the caller registered it under the object's lock,
/// with room in its queue). `park` is the object's park callback; `buf`
/// the item to send or receive. Returns what a waker gave it, or why the
/// wait ended without it: `TimedOut`, `Canceled` (cancel-returns mode;
/// the default mode never comes back), `NoMem` (no room for the timer).
pub(crate) fn wait_coroutine(
    me: Running,
    obj: Obj,
    sending: bool,
    park: fn(Token, LibArgs),
    deadline: i64,
    buf: *mut u8,
) -> Result<Given> {
    let slot = me.slot;
    let (rt, worker) = crate::coro::runtime_of(slot)?;
    let timer = if deadline >= 0 {
        match rt.pollers[worker].begin(-1, 0, deadline) {
            Ok(Some(key)) => Some(key),
            Ok(None) => None,
            Err(e) => {
                obj.leave(slot.index(), true);
                return Err(e);
            }
        }
    } else {
        None
    };
    // SAFETY: the running body owns EXEC.
    let body = unsafe { slot.body() };
    body.given = Given::Nothing;
    body.sync_buf = buf;
    body.sync_timer = timer.unwrap_or(NO_TIMER);
    slot.wait.set_sync(obj, sending, worker, deadline);
    let r = me.park(Suspension::Lib(LibWait {
        park,
        unparked: Some(unparked),
        args: [obj.arg(), timer.unwrap_or(NO_TIMER)],
    }))?;
    end_wait(slot, obj, worker, r)
}

/// The second half of `wait_coroutine`: the coroutine of `slot` waited on
/// `obj`, its timer (if any) in the poller of `worker`, and was resumed
/// as `r` says.
pub(crate) fn end_wait(slot: &'static Slot, obj: Obj, worker: usize, r: Resumed) -> Result<Given> {
    // SAFETY: resumed, so we own EXEC again.
    let body = unsafe { slot.body() };
    let given = core::mem::replace(&mut body.given, Given::Nothing);
    let timer = core::mem::replace(&mut body.sync_timer, NO_TIMER);
    slot.wait.clear();
    if let (true, Some(rt)) = (timer != NO_TIMER, body.runtime()) {
        let _ = rt.pollers[worker].end(timer);
    }
    if given != Given::Nothing {
        return Ok(given);
    }
    // Ended by the deadline or a cancellation: still in the queue, or
    // popped by a waker that found the token consumed.
    obj.leave(slot.index(), false);
    match r {
        Resumed::Ok => Err(Error::TimedOut),
        _ => Err(Error::Canceled),
    }
}
