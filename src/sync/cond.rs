//! `coro_cond`: a condition variable over a `coro_mutex`.
//!
//! A wait releases the mutex and waits for a signal in one step: a thread
//! queues itself before it unlocks; a coroutine, whose token exists only
//! once it parked, counts itself as joining before it unlocks, and a
//! signal that finds no one queued but someone joining is kept for the
//! joiner (`signals`), so none is lost in between. A signal goes to the
//! first waiter still waiting: one cancelled or timed out meanwhile is
//! skipped. Every wait takes the mutex back before it returns, on errors
//! too (a cancel-returns coroutine cancelled in its wait included: it
//! retakes the mutex without waiting in line, yielding until it is free).

use core::ptr::{self, NonNull};

use super::mutex::Mutex;
use super::queue::{Queue, Waiter};
use super::wait::{
    self, claim_own, live, park_timer, wait_coroutine, Caller, Claimed, ThreadWaiter,
};
use super::Obj;
use crate::context::LibArgs;
use crate::error::{Error, Result};
use crate::frame::slot::Given;
use crate::frame::Token;
use crate::sanitize::{Mutex as Lock, MutexGuard};

pub struct Cond {
    inner: Lock<Inner>,
}

#[derive(Default)]
struct Inner {
    queue: Queue,
    /// Waiters from the start of their wait to its end.
    registered: usize,
    /// Coroutines between their registration and their park callback.
    joining: usize,
    /// Signals that found no one queued but someone joining, kept for the
    /// joiners (never more than there are).
    signals: usize,
}

impl Default for Cond {
    fn default() -> Cond {
        Cond::new()
    }
}

impl Cond {
    pub fn new() -> Cond {
        Cond {
            inner: Lock::new(Inner::default()),
        }
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `coro_cond_wait`: releases `m` (which the caller holds), waits for
    /// a signal until `deadline`, and takes `m` back before it returns,
    /// whatever it returns.
    ///
    /// Errors: `Invalid` (bad deadline), `State` (the caller does not hold
    /// `m`; or a worker thread outside a coroutine), `TimedOut`,
    /// `Canceled` (cancel-returns mode), `LockHeld`, `NoMem` (the last
    /// four with `m` held again).
    pub fn wait(&self, m: &Mutex, deadline: i64) -> Result<()> {
        if deadline < -1 {
            return Err(Error::Invalid);
        }
        let who = wait::caller();
        let id = who.id();
        if !m.is_held_by(id) {
            return Err(Error::State);
        }
        match who {
            Caller::Worker(_) => Err(Error::State),
            // Its relock may have to wait again after the wake-up, which a
            // foreign frame's one pending wait cannot (docs/API.md).
            Caller::Coroutine(me) if me.is_foreign() => Err(Error::State),
            Caller::Coroutine(me) => {
                // Not waiting yet: `m` is still held.
                crate::coro::suspension_point(&me)?;
                let mut g = self.lock_inner();
                g.register()?;
                g.joining += 1;
                drop(g);
                // Bound to `m` from here until it holds `m` again, or
                // until its frame ends if the body is abandoned meanwhile
                // (the harness unbinds then).
                m.unlock_bound(id)?;
                let slot = me.slot;
                // SAFETY: the running body owns EXEC.
                unsafe { slot.body() }.relock = m;
                let r = wait_coroutine(
                    me,
                    Obj::Cond(self),
                    false,
                    park_wait,
                    deadline,
                    ptr::null_mut(),
                );
                let r = relock(m, r.map(|_| ()));
                // SAFETY: as above.
                unsafe { slot.body() }.relock = ptr::null();
                m.unbind();
                r
            }
            Caller::Thread(id) => {
                let mut g = self.lock_inner();
                g.register()?;
                let tw = ThreadWaiter::new(id, ptr::null_mut());
                g.queue.push(Waiter::Thread(NonNull::from(&tw)));
                drop(g);
                m.unlock_bound(id)?;
                let r = self.thread_waits(&tw, deadline);
                // A thread cannot be cancelled: it waits its turn.
                let relocked = m.lock(-1);
                m.unbind();
                relocked?;
                r
            }
        }
    }

    /// `coro_cond_signal`: wakes the first waiter still waiting.
    pub fn signal(&self) {
        let mut g = self.lock_inner();
        match Claimed::next(&mut g.queue) {
            Some(c) => {
                g.registered -= 1;
                let wake = c.give(Given::Granted);
                drop(g);
                wake.run();
            }
            None => {
                if g.signals < g.joining {
                    g.signals += 1;
                }
            }
        }
    }

    /// `coro_cond_broadcast`: wakes every waiter, and every joiner.
    pub fn broadcast(&self) {
        loop {
            let mut g = self.lock_inner();
            g.signals = g.joining;
            let Some(c) = Claimed::next(&mut g.queue) else {
                return;
            };
            g.registered -= 1;
            let wake = c.give(Given::Granted);
            drop(g);
            wake.run();
        }
    }

    /// Whether it may be freed: nobody waiting.
    pub fn is_idle(&self) -> bool {
        let g = self.lock_inner();
        g.registered == 0 && g.joining == 0
    }

    /// A joining coroutine did not park after all (`Obj::unjoin`).
    pub(crate) fn unjoin(&self) {
        let mut g = self.lock_inner();
        g.joining -= 1;
        g.signals = g.signals.min(g.joining);
    }

    /// See `Mutex::leave`.
    pub(crate) fn leave(&self, index: usize, unparked: bool) {
        let mut g = self.lock_inner();
        g.queue.remove_slot(index);
        g.registered -= 1;
        if unparked {
            g.joining -= 1;
            g.signals = g.signals.min(g.joining);
        }
    }

    fn thread_waits(&self, tw: &ThreadWaiter, deadline: i64) -> Result<()> {
        if tw.sleep(deadline).is_some() {
            return Ok(());
        }
        let mut g = self.lock_inner();
        if tw.given().is_some() {
            return Ok(());
        }
        g.queue.remove_thread(NonNull::from(tw));
        g.registered -= 1;
        Err(Error::TimedOut)
    }
}

impl Inner {
    fn register(&mut self) -> Result<()> {
        self.queue.reserve(self.registered + 1)?;
        self.registered += 1;
        Ok(())
    }
}

/// A coroutine takes `m` back after its wait, whatever ended the wait:
/// in line like any locker, or, cancelled (cancel-returns mode: every
/// wait now answers `CORO_ECANCELED`), by reserving it and taking it
/// between yields once it is free (`Mutex::reserve`). Returns the wait's
/// status.
fn relock(m: &Mutex, r: Result<()>) -> Result<()> {
    let r = match m.lock(-1) {
        Ok(()) => return r,
        Err(Error::Canceled) => Err(Error::Canceled),
        // No room to wait in line: take it between yields too.
        Err(_) => r,
    };
    let id = wait::caller().id();
    m.reserve();
    while !m.take_reserved(id) {
        // Cancelled, the yield comes back at once with CORO_ECANCELED,
        // after the worker's other coroutines had their turn.
        let _ = crate::coro::yield_now();
    }
    r
}

/// The park callback of a coroutine's wait: queues it, or takes a signal
/// kept for the joiners.
fn park_wait(token: Token, args: LibArgs) {
    // SAFETY: joining, so the condition cannot be freed meanwhile.
    let c = unsafe { &*((args[0] & !3) as usize as *const Cond) };
    let timer_running = park_timer(token, args);
    let mut g = c.lock_inner();
    g.joining -= 1;
    if !timer_running || !live(token) {
        g.signals = g.signals.min(g.joining);
        return;
    }
    if g.signals == 0 {
        g.queue.push(Waiter::Coroutine(token.0));
        return;
    }
    match claim_own(token) {
        Some(own) => {
            g.signals -= 1;
            g.registered -= 1;
            let wake = own.give(Given::Granted);
            drop(g);
            wake.run();
        }
        // Cancelled or timed out just now: its side unregisters.
        None => g.signals = g.signals.min(g.joining),
    }
}
