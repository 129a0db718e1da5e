//! Coroutine-aware synchronisation: `coro_mutex`, `coro_cond`, `coro_chan`
//! (DESIGN section 9).
//!
//! Rules, referred to by number:
//!
//! 1. Waiting suspends a coroutine and blocks a plain thread; both may use
//!    one object. A worker thread outside any coroutine (an `on_suspend`
//!    callback, a defer) never blocks: where it would, the call answers
//!    `CORO_ESTATE`.
//! 2. Every wait honours its deadline (-1: none; 0 or past: only try) and
//!    cancellation: a coroutine cancelled while it waits leaves the queue
//!    at once (its canceller consumes its token and undoes the wait,
//!    `Obj::leave`) and is never handed the lock, a signal, room or an item;
//!    what it would have been given goes to the next waiter.
//! 3. A waker hands over only after it consumed the waiter's token (the
//!    state word lets one party do that): then it owns the frame's
//!    `EXEC` and writes what it gives into the body (`wait.rs`).
//! 4. An object counts its waiters from the start of their wait to its
//!    end, and may not be freed while any is counted (`is_idle`), nor a
//!    mutex while it is held or a condition wait will take it back
//!    (`Mutex::unlock_bound`: until the wait returns, or its frame ends).
//! 5. Each object's state is behind one lock (`sanitize::Mutex`, visible
//!    to ThreadSanitizer); no lock is held across a switch, and a
//!    coroutine or thread is woken only after the lock is dropped.

mod chan;
mod cond;
mod mutex;
mod queue;
mod wait;

pub use chan::{Chan, MAX_ITEM};
pub use cond::Cond;
pub use mutex::Mutex;

/// A sync object a coroutine waits on, for the undo of its wait when it
/// is cancelled (`Wait::Sync`). The object lives while the wait is
/// counted (rule 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obj {
    Mutex(*const Mutex),
    Cond(*const Cond),
    Chan(*const Chan),
}

impl Obj {
    /// The object as a park callback's argument: its address, with its
    /// kind in the two low bits (the objects are aligned to 8).
    pub(crate) fn arg(self) -> u64 {
        let (addr, kind) = match self {
            Obj::Mutex(p) => (p as usize, 0),
            Obj::Cond(p) => (p as usize, 1),
            Obj::Chan(p) => (p as usize, 2),
        };
        debug_assert_eq!(addr & 3, 0);
        addr as u64 | kind
    }

    /// Back from `arg`.
    pub(crate) fn from_arg(arg: u64) -> Obj {
        let addr = (arg & !3) as usize;
        match arg & 3 {
            0 => Obj::Mutex(addr as *const Mutex),
            1 => Obj::Cond(addr as *const Cond),
            _ => Obj::Chan(addr as *const Chan),
        }
    }

    /// A coroutine's wait did not park after all (a cancel came first):
    /// it is no longer joining.
    pub(crate) fn unjoin(self) {
        // SAFETY: joining, so the object lives (rule 4).
        unsafe {
            match self {
                Obj::Mutex(p) => (*p).unjoin(),
                Obj::Cond(p) => (*p).unjoin(),
                Obj::Chan(p) => (*p).unjoin(),
            }
        }
    }

    /// The coroutine in slot `index` stops waiting without being given
    /// anything: out of the queue if it is there, out of the count.
    /// `unparked`: its park callback never ran (the wait failed to start).
    pub(crate) fn leave(self, index: usize, unparked: bool) {
        // SAFETY: the wait is counted until this returns (rule 4).
        unsafe {
            match self {
                Obj::Mutex(p) => (*p).leave(index, unparked),
                Obj::Cond(p) => (*p).leave(index, unparked),
                Obj::Chan(p) => (*p).leave(index, unparked),
            }
        }
    }
}

/// The second half of a foreign frame's wait on `obj` (`context::foreign`),
/// run when the frame is resumed as `r` says: `sending`, `deadline` and
/// `worker` as its `Wait::Sync` recorded them. A channel's hand-off that
/// must be tried again is (and may begin another wait: `Pending`).
pub(crate) fn end_foreign_wait(
    slot: &'static crate::frame::slot::Slot,
    obj: Obj,
    sending: bool,
    worker: usize,
    deadline: i64,
    r: crate::context::Resumed,
) -> crate::error::Result<()> {
    let given = wait::end_wait(slot, obj, worker, r)?;
    match obj {
        Obj::Mutex(_) => Ok(()),
        Obj::Chan(ch) => {
            // SAFETY: the running frame owns EXEC.
            let item = unsafe { slot.body() }.sync_buf;
            // SAFETY: the channel and the item are the host's, valid
            // until its call ends (`coro_chan_send`'s contract), and the
            // call ends when the frame hears this answer.
            unsafe { (*ch).go_on(given, sending, item, deadline) }
        }
        // `Cond::wait` does not begin in a foreign frame.
        Obj::Cond(_) => Err(crate::error::Error::State),
    }
}
