//! `coro_mutex`: a lock that suspends a waiting coroutine (and blocks a
//! waiting thread) and hands off in FIFO order: an unlock with waiters
//! gives the lock to the first live one directly, so nobody barges in.
//! It may be held across a suspension: that is what it is for (a blocking
//! lock held there is CP.52's hazard, `coro_lock_note_*`).

use core::ptr::{self, NonNull};

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

pub struct Mutex {
    inner: Lock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The owner's id (`wait::Caller::id`), 0 while free.
    owner: u64,
    queue: Queue,
    /// Waiters from the start of their wait to its end (queued, or about
    /// to be, or just given the lock): the mutex may not be freed then.
    registered: usize,
    /// Coroutines between their registration and their park callback,
    /// which reads the mutex.
    joining: usize,
    /// `coro_cond_wait`s that released it and will take it back
    /// (`unlock_bound`).
    bound: usize,
    /// Cancelled coroutines taking it back at the end of their
    /// `coro_cond_wait`, which cannot wait in line (`reserve`): while
    /// any is counted, an unlock leaves the mutex free instead of handing
    /// it to the queue, and only they may take it free.
    reserved: usize,
}

impl Inner {
    /// Free for a newcomer: nobody holds it or has it reserved.
    fn is_free(&self) -> bool {
        self.owner == 0 && self.reserved == 0
    }
}

impl Default for Mutex {
    fn default() -> Mutex {
        Mutex::new()
    }
}

impl Mutex {
    pub fn new() -> Mutex {
        Mutex {
            inner: Lock::new(Inner::default()),
        }
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `coro_mutex_lock`: takes the lock, waiting until `deadline` (-1:
    /// none, 0: only try) behind the waiters before.
    ///
    /// Errors: `Invalid` (bad deadline), `TimedOut`, `Canceled`
    /// (cancel-returns mode), `LockHeld` (a noted blocking lock, CP.52),
    /// `State` (the caller holds it already; or a worker thread outside a
    /// coroutine would block), `NoMem`.
    pub fn lock(&self, deadline: i64) -> Result<()> {
        if deadline < -1 {
            return Err(Error::Invalid);
        }
        let who = wait::caller();
        let id = who.id();
        let mut g = self.lock_inner();
        if g.is_free() {
            g.owner = id;
            return Ok(());
        }
        if g.owner == id {
            return Err(Error::State);
        }
        if deadline == 0 || (deadline > 0 && deadline <= crate::poll::now()) {
            return Err(Error::TimedOut);
        }
        match who {
            Caller::Worker(_) => Err(Error::State),
            Caller::Coroutine(me) => {
                crate::coro::suspension_point(&me)?;
                g.register()?;
                g.joining += 1;
                drop(g);
                wait_coroutine(
                    me,
                    Obj::Mutex(self),
                    false,
                    park_lock,
                    deadline,
                    ptr::null_mut(),
                )
                .map(|_| ())
            }
            Caller::Thread(id) => {
                g.register()?;
                let tw = ThreadWaiter::new(id, ptr::null_mut());
                g.queue.push(Waiter::Thread(NonNull::from(&tw)));
                drop(g);
                self.thread_waits(&tw, deadline).map(|_| ())
            }
        }
    }

    /// `coro_mutex_trylock`. Errors: `Busy`.
    pub fn try_lock(&self) -> Result<()> {
        let id = wait::caller().id();
        let mut g = self.lock_inner();
        if !g.is_free() {
            return Err(Error::Busy);
        }
        g.owner = id;
        Ok(())
    }

    /// A cancelled coroutine that must take the mutex back (the end of
    /// its `coro_cond_wait`) but cannot wait in line reserves it; then
    /// `take_reserved` between yields. Without the reservation a FIFO
    /// hand-off under contention passes the mutex from waiter to waiter
    /// and never leaves it free for the one that cannot queue.
    pub(crate) fn reserve(&self) {
        self.lock_inner().reserved += 1;
    }

    /// Takes the mutex reserved by `reserve`, if it is free now.
    pub(crate) fn take_reserved(&self, id: u64) -> bool {
        let mut g = self.lock_inner();
        if g.owner != 0 {
            return false;
        }
        g.owner = id;
        g.reserved -= 1;
        true
    }

    /// `coro_mutex_unlock`: to the first live waiter, if any.
    /// Errors: `State` (the caller is not the owner).
    pub fn unlock(&self) -> Result<()> {
        self.unlock_as(wait::caller().id())
    }

    pub(crate) fn unlock_as(&self, id: u64) -> Result<()> {
        self.release(id, false)
    }

    /// `coro_cond_wait`'s unlock: the caller will take the mutex back, so
    /// it may not be freed until `unbind` says it has (or its body was
    /// abandoned).
    pub(crate) fn unlock_bound(&self, id: u64) -> Result<()> {
        self.release(id, true)
    }

    fn release(&self, id: u64, bind: bool) -> Result<()> {
        let mut g = self.lock_inner();
        if g.owner != id {
            return Err(Error::State);
        }
        g.bound += bind as usize;
        // Reserved: left free for a coroutine that cannot wait in line.
        let next = if g.reserved > 0 {
            None
        } else {
            Claimed::next(&mut g.queue)
        };
        let wake = match next {
            Some(c) => {
                g.owner = c.id();
                g.registered -= 1;
                Some(c.give(Given::Granted))
            }
            None => {
                g.owner = 0;
                None
            }
        };
        drop(g);
        if let Some(w) = wake {
            w.run();
        }
        Ok(())
    }

    /// Whether `id` holds it (the condition's wait checks its caller).
    pub(crate) fn is_held_by(&self, id: u64) -> bool {
        self.lock_inner().owner == id
    }

    /// Whether the mutex may be freed: not held, nobody waiting.
    pub fn is_idle(&self) -> bool {
        let g = self.lock_inner();
        g.owner == 0 && g.registered == 0 && g.joining == 0 && g.bound == 0 && g.reserved == 0
    }

    /// The condition wait of `unlock_bound` took the mutex back, or its
    /// body was abandoned.
    pub(crate) fn unbind(&self) {
        self.lock_inner().bound -= 1;
    }

    /// A joining coroutine did not park after all (`Obj::unjoin`).
    pub(crate) fn unjoin(&self) {
        let mut g = self.lock_inner();
        g.joining -= 1;
    }

    /// A waiter in slot `index` stops waiting (deadline, cancellation);
    /// `unparked`: its park callback never ran.
    pub(crate) fn leave(&self, index: usize, unparked: bool) {
        let mut g = self.lock_inner();
        g.queue.remove_slot(index);
        g.registered -= 1;
        if unparked {
            g.joining -= 1;
        }
    }

    /// A thread's wait after it queued itself; unregisters if it ends
    /// without the lock.
    fn thread_waits(&self, tw: &ThreadWaiter, deadline: i64) -> Result<Given> {
        if let Some(given) = tw.sleep(deadline) {
            return Ok(given);
        }
        let mut g = self.lock_inner();
        if let Some(given) = tw.given() {
            return Ok(given);
        }
        g.queue.remove_thread(NonNull::from(tw));
        g.registered -= 1;
        Err(Error::TimedOut)
    }
}

impl Inner {
    /// Counts one more waiter, with room for it in the queue.
    fn register(&mut self) -> Result<()> {
        self.queue.reserve(self.registered + 1)?;
        self.registered += 1;
        Ok(())
    }
}

/// The park callback of a coroutine's lock: queues it, or gives it the
/// lock at once if it was freed since it looked.
fn park_lock(token: Token, args: LibArgs) {
    // SAFETY: the waiter is joining, so the mutex cannot be freed
    // (`is_idle`) until this callback has said so, under its lock.
    let m = unsafe { &*((args[0] & !3) as usize as *const Mutex) };
    let timer_running = park_timer(token, args);
    let mut g = m.lock_inner();
    g.joining -= 1;
    if !timer_running || !live(token) {
        // Its wait is over already; its own side unregisters it.
        return;
    }
    if !g.is_free() {
        g.queue.push(Waiter::Coroutine(token.0));
        return;
    }
    if let Some(c) = claim_own(token) {
        g.owner = c.id();
        g.registered -= 1;
        let wake = c.give(Given::Granted);
        drop(g);
        wake.run();
    }
}
