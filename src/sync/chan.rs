//! `coro_chan`: a bounded MPMC queue of fixed-size items, copied in and
//! out; capacity 0 is a rendezvous (a send completes only as a receiver
//! takes the item).
//!
//! An item goes straight to the first live receiver if one waits (its
//! buffer is written by the sender, which owns the receiver's frame once
//! it consumed its wait's token, or under the lock for a thread), else
//! into the ring, else the sender waits with it. A receiver takes the
//! ring's oldest item and lets the first waiting sender's item in; with
//! no ring, it takes a waiting sender's item directly. A receiver that was
//! cancelled or timed out is skipped, so its item goes to the next one.
//! `close`: every waiting sender and receiver gets `CORO_ECLOSED`; items
//! in the ring are still received, then `CORO_ECLOSED`.

use core::ptr::{self, NonNull};

use super::queue::{Queue, Waiter};
use super::wait::{
    self, claim_own, live, park_timer, wait_coroutine, Caller, Claimed, ThreadWaiter, Wake,
};
use super::Obj;
use crate::context::LibArgs;
use crate::error::{Error, Result};
use crate::frame::slot::Given;
use crate::frame::Token;
use crate::sanitize::{Mutex as Lock, MutexGuard};

/// Largest item, so that a caller's mistake (a negative size cast) is
/// refused at once rather than as a failed allocation.
pub const MAX_ITEM: usize = 1 << 20;

pub struct Chan {
    size: usize,
    cap: usize,
    inner: Lock<Inner>,
}

struct Inner {
    /// `cap` items of `size` bytes, the oldest at `head`.
    ring: Vec<u8>,
    head: usize,
    len: usize,
    senders: Queue,
    receivers: Queue,
    closed: bool,
    /// Waiters from the start of their wait to its end, both kinds.
    registered: usize,
    /// Coroutines between their registration and their park callback.
    joining: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Send,
    Recv,
}

impl Chan {
    /// Errors: `Invalid` (item size 0 or above `MAX_ITEM`, or a ring
    /// whose size overflows), `NoMem`.
    pub fn new(size: usize, cap: usize) -> Result<Chan> {
        if size == 0 || size > MAX_ITEM {
            return Err(Error::Invalid);
        }
        let bytes = size.checked_mul(cap).ok_or(Error::Invalid)?;
        let mut ring = crate::util::try_vec(bytes)?;
        ring.resize(bytes, 0);
        Ok(Chan {
            size,
            cap,
            inner: Lock::new(Inner {
                ring,
                head: 0,
                len: 0,
                senders: Queue::default(),
                receivers: Queue::default(),
                closed: false,
                registered: 0,
                joining: 0,
            }),
        })
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `coro_chan_send`: copies the item at `item` (`size` bytes) into the
    /// channel, waiting until `deadline` for room or a receiver.
    ///
    /// Errors: `Closed`, `TimedOut`, `Canceled` (cancel-returns mode),
    /// `LockHeld`, `State` (a worker thread outside a coroutine would
    /// wait), `Invalid` (bad deadline), `NoMem`.
    ///
    /// # Safety
    /// `item` points at `size` readable bytes, untouched by others until
    /// this returns.
    pub unsafe fn send(&self, item: *const u8, deadline: i64) -> Result<()> {
        // SAFETY: the caller's contract.
        unsafe { self.op(Dir::Send, item.cast_mut(), deadline) }
    }

    /// `coro_chan_recv`: copies the next item into `item` (`size` bytes),
    /// waiting until `deadline` for one.
    ///
    /// Errors: as `send`; `Closed` once the channel is closed and empty.
    ///
    /// # Safety
    /// `item` points at `size` writable bytes, untouched by others until
    /// this returns.
    pub unsafe fn recv(&self, item: *mut u8, deadline: i64) -> Result<()> {
        // SAFETY: the caller's contract.
        unsafe { self.op(Dir::Recv, item, deadline) }
    }

    /// # Safety
    /// As `send` / `recv`.
    unsafe fn op(&self, dir: Dir, item: *mut u8, deadline: i64) -> Result<()> {
        if deadline < -1 {
            return Err(Error::Invalid);
        }
        loop {
            let mut g = self.lock_inner();
            // SAFETY: the caller's contract: `item` is ours to read/write.
            if let Some(done) = unsafe { self.try_now(&mut g, dir, item) } {
                return self.finish(g, done);
            }
            if deadline == 0 || (deadline > 0 && deadline <= crate::poll::now()) {
                return Err(Error::TimedOut);
            }
            let given = match wait::caller() {
                Caller::Worker(_) => return Err(Error::State),
                Caller::Coroutine(me) => {
                    crate::coro::suspension_point(&me)?;
                    g.register(dir)?;
                    g.joining += 1;
                    drop(g);
                    let park = match dir {
                        Dir::Send => park_send as fn(Token, LibArgs),
                        Dir::Recv => park_recv,
                    };
                    wait_coroutine(me, Obj::Chan(self), dir == Dir::Send, park, deadline, item)?
                }
                Caller::Thread(id) => {
                    g.register(dir)?;
                    let tw = ThreadWaiter::new(id, item);
                    g.queue(dir).push(Waiter::Thread(NonNull::from(&tw)));
                    drop(g);
                    self.thread_waits(&tw, dir, deadline)?
                }
            };
            if let Some(done) = outcome(given) {
                return done;
            }
        }
    }

    /// The end of a foreign frame's `op`, whose wait was given `given`
    /// (`sync::end_foreign_wait`): done, or `op` again.
    ///
    /// # Safety
    /// As `send` / `recv`.
    pub(crate) unsafe fn go_on(
        &self,
        given: Given,
        sending: bool,
        item: *mut u8,
        deadline: i64,
    ) -> Result<()> {
        let dir = if sending { Dir::Send } else { Dir::Recv };
        match outcome(given) {
            Some(done) => done,
            // SAFETY: the caller's contract.
            None => unsafe { self.op(dir, item, deadline) },
        }
    }

    /// Does `dir` with `item` now if it can, under the lock `g`: what it
    /// did (`Ok` with the waiter it woke, or `Closed`), `None` to wait.
    ///
    /// # Safety
    /// `item` is `size` bytes the caller may read (send) or write (recv).
    unsafe fn try_now(
        &self,
        g: &mut Inner,
        dir: Dir,
        item: *mut u8,
    ) -> Option<core::result::Result<Option<Wake>, Error>> {
        match dir {
            Dir::Send => {
                if g.closed {
                    return Some(Err(Error::Closed));
                }
                if let Some(r) = Claimed::next(&mut g.receivers) {
                    // SAFETY: the receiver's buffer is `size` bytes, ours
                    // to write once claimed; ours is readable.
                    unsafe { ptr::copy_nonoverlapping(item, r.buf(), self.size) };
                    g.registered -= 1;
                    return Some(Ok(Some(r.give(Given::Granted))));
                }
                if g.len < self.cap {
                    // SAFETY: as above.
                    unsafe { self.push(g, item) };
                    return Some(Ok(None));
                }
                None
            }
            Dir::Recv => {
                if g.len > 0 {
                    // SAFETY: as above.
                    unsafe { self.pop(g, item) };
                    // Room now: the first waiting sender's item comes in.
                    let wake = Claimed::next(&mut g.senders).map(|s| {
                        // SAFETY: the sender's buffer is readable once claimed.
                        unsafe { self.push(g, s.buf()) };
                        g.registered -= 1;
                        s.give(Given::Granted)
                    });
                    return Some(Ok(wake));
                }
                if let Some(s) = Claimed::next(&mut g.senders) {
                    // A rendezvous: straight from the sender.
                    // SAFETY: as above.
                    unsafe { ptr::copy_nonoverlapping(s.buf(), item, self.size) };
                    g.registered -= 1;
                    return Some(Ok(Some(s.give(Given::Granted))));
                }
                if g.closed {
                    return Some(Err(Error::Closed));
                }
                None
            }
        }
    }

    fn finish(
        &self,
        g: MutexGuard<'_, Inner>,
        done: core::result::Result<Option<Wake>, Error>,
    ) -> Result<()> {
        drop(g);
        let wake = done?;
        if let Some(w) = wake {
            w.run();
        }
        Ok(())
    }

    /// # Safety
    /// `item` is `size` readable bytes; the ring has room.
    unsafe fn push(&self, g: &mut Inner, item: *const u8) {
        debug_assert!(g.len < self.cap);
        let at = (g.head + g.len) % self.cap * self.size;
        // SAFETY: `at + size <= ring.len()`; `item` is the caller's.
        unsafe { ptr::copy_nonoverlapping(item, g.ring.as_mut_ptr().add(at), self.size) };
        g.len += 1;
    }

    /// # Safety
    /// `item` is `size` writable bytes; the ring is not empty.
    unsafe fn pop(&self, g: &mut Inner, item: *mut u8) {
        debug_assert!(g.len > 0);
        let at = g.head * self.size;
        // SAFETY: as in `push`.
        unsafe { ptr::copy_nonoverlapping(g.ring.as_ptr().add(at), item, self.size) };
        g.head = (g.head + 1) % self.cap;
        g.len -= 1;
    }

    /// `coro_chan_close`: refuses sends from now on, wakes every waiting
    /// sender and receiver with `Closed`. Errors: `Closed` (closed
    /// already).
    pub fn close(&self) -> Result<()> {
        {
            let mut g = self.lock_inner();
            if g.closed {
                return Err(Error::Closed);
            }
            g.closed = true;
        }
        // One at a time, each wake outside the lock.
        loop {
            let mut g = self.lock_inner();
            let next = Claimed::next(&mut g.receivers).or_else(|| Claimed::next(&mut g.senders));
            let Some(c) = next else {
                return Ok(());
            };
            g.registered -= 1;
            let wake = c.give(Given::Closed);
            drop(g);
            wake.run();
        }
    }

    /// Whether it may be freed: nobody waiting (items may remain).
    pub fn is_idle(&self) -> bool {
        let g = self.lock_inner();
        g.registered == 0 && g.joining == 0
    }

    /// A joining coroutine did not park after all (`Obj::unjoin`).
    pub(crate) fn unjoin(&self) {
        let mut g = self.lock_inner();
        g.joining -= 1;
    }

    /// See `Mutex::leave`.
    pub(crate) fn leave(&self, index: usize, unparked: bool) {
        let mut g = self.lock_inner();
        if !g.senders.remove_slot(index) {
            g.receivers.remove_slot(index);
        }
        g.registered -= 1;
        if unparked {
            g.joining -= 1;
        }
    }

    fn thread_waits(&self, tw: &ThreadWaiter, dir: Dir, deadline: i64) -> Result<Given> {
        if let Some(given) = tw.sleep(deadline) {
            return Ok(given);
        }
        let mut g = self.lock_inner();
        if let Some(given) = tw.given() {
            return Ok(given);
        }
        g.queue(dir).remove_thread(NonNull::from(tw));
        g.registered -= 1;
        Err(Error::TimedOut)
    }
}

impl Inner {
    fn queue(&mut self, dir: Dir) -> &mut Queue {
        match dir {
            Dir::Send => &mut self.senders,
            Dir::Recv => &mut self.receivers,
        }
    }

    /// Counts one more waiter, with room for every waiter in either queue.
    fn register(&mut self, dir: Dir) -> Result<()> {
        let n = self.registered + 1;
        self.queue(dir).reserve(n)?;
        self.registered = n;
        Ok(())
    }
}

/// What a wait that was given `given` makes of an `op`: its answer, or
/// `None` to try again (its park found the channel ready but could not
/// finish the hand-off).
fn outcome(given: Given) -> Option<Result<()>> {
    match given {
        Given::Granted => Some(Ok(())),
        Given::Closed => Some(Err(Error::Closed)),
        Given::Retry | Given::Nothing => None,
    }
}

/// The park callback of a coroutine's send.
fn park_send(token: Token, args: LibArgs) {
    park(token, args, Dir::Send);
}

/// The park callback of a coroutine's receive.
fn park_recv(token: Token, args: LibArgs) {
    park(token, args, Dir::Recv);
}

/// Queues the coroutine, or, if the channel became ready for it since it
/// looked (an item or room or a partner, or closed), claims it and wakes
/// it to try again (`Given::Retry`): the retry does the hand-off with its
/// own buffer, as the first look would have.
fn park(token: Token, args: LibArgs, dir: Dir) {
    // SAFETY: joining, so the channel cannot be freed meanwhile.
    let ch = unsafe { &*((args[0] & !3) as usize as *const Chan) };
    let timer_running = park_timer(token, args);
    let mut g = ch.lock_inner();
    g.joining -= 1;
    if !timer_running || !live(token) {
        return;
    }
    let ready = g.closed
        || match dir {
            Dir::Send => g.len < ch.cap || !g.receivers.is_empty(),
            Dir::Recv => g.len > 0 || !g.senders.is_empty(),
        };
    if !ready {
        g.queue(dir).push(Waiter::Coroutine(token.0));
        return;
    }
    if let Some(own) = claim_own(token) {
        g.registered -= 1;
        let wake = own.give(Given::Retry);
        drop(g);
        wake.run();
    }
}
