//! A worker's inbox: the frames other threads hand it.
//!
//! A stack of frames linked through their slots' `link`, pushed with a
//! compare-exchange and taken whole by the worker, so a hand-off takes no
//! lock and moves one cache line. Taking the whole stack at once means no
//! pop races a push, so there is no ABA; the worker reverses the batch to
//! run it in order. One word holds the stack's top and two flags:
//!
//! - `SLEEPING`: the worker sleeps in its poller (set only from an empty,
//!   open inbox). A push replaces the whole word, so the push that finds
//!   the flag clears it and is the one that must wake the worker.
//! - `CLOSED`: pushes fail; the worker stops once it has run what came
//!   before.
//!
//! A push that will wake the worker first takes the inbox's waking lock
//! (`Push::NeedsLock`), which shutdown also takes before the runtime may
//! go: once a frame is pushed it may run, finish and let shutdown free the
//! runtime, whose poller the wake still needs. `loom_inbox.rs` checks the
//! protocol: no frame lost, no wake-up lost.

use crate::loom::{AtomicU32, AtomicU64, Ordering::*};

/// The low half: index + 1 of the frame pushed last (0: none).
const FRAMES: u64 = u32::MAX as u64;
const SLEEPING: u64 = 1 << 32;
const CLOSED: u64 = 1 << 33;

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued; `wake`: the worker slept, so the caller wakes it (still
    /// holding the waking lock).
    Queued { wake: bool },
    /// The worker sleeps: take the waking lock and push again with
    /// `locked`.
    NeedsLock,
    /// The inbox is closed (shutdown).
    Closed,
}

pub(crate) struct Head(AtomicU64);

impl Head {
    pub(crate) fn new() -> Head {
        Head(AtomicU64::new(0))
    }

    /// Pushes `frame` (a slot index + 1) whose slot's link is `link`.
    /// `locked`: the caller holds the waking lock.
    pub(crate) fn push(&self, frame: u32, link: &AtomicU32, locked: bool) -> Push {
        debug_assert!(frame != 0);
        let mut head = self.0.load(Relaxed);
        loop {
            if head & CLOSED != 0 {
                return Push::Closed;
            }
            if head & SLEEPING != 0 && !locked {
                return Push::NeedsLock;
            }
            link.store((head & FRAMES) as u32, Relaxed);
            // The worker's `take` acquires what the pusher did with the frame.
            crate::sanitize::release(&self.0);
            match self
                .0
                .compare_exchange_weak(head, frame as u64, Release, Relaxed)
            {
                Ok(_) => {
                    return Push::Queued {
                        wake: head & SLEEPING != 0,
                    }
                }
                Err(now) => head = now,
            }
        }
    }

    /// Whether frames wait (a hint: no ordering).
    pub(crate) fn has_frames(&self) -> bool {
        self.0.load(Relaxed) & FRAMES != 0
    }

    /// Takes every frame pushed so far: the one pushed last (index + 1),
    /// 0 if none; each slot's `link` names the one pushed before it.
    pub(crate) fn take(&self) -> u32 {
        if !self.has_frames() {
            return 0;
        }
        let head = self.0.fetch_and(!FRAMES, Acquire);
        crate::sanitize::acquire(&self.0);
        (head & FRAMES) as u32
    }

    /// Marks the worker asleep, only if the inbox is empty and open.
    pub(crate) fn try_sleep(&self) -> bool {
        self.0
            .compare_exchange(0, SLEEPING, Relaxed, Relaxed)
            .is_ok()
    }

    /// The worker is awake again (a push may have cleared the flag first).
    pub(crate) fn woke(&self) {
        self.0.fetch_and(!SLEEPING, Relaxed);
    }

    /// Whether the inbox is closed and nothing waits in it.
    pub(crate) fn closed_and_empty(&self) -> bool {
        self.0.load(Relaxed) & (CLOSED | FRAMES) == CLOSED
    }

    /// Closes the inbox: pushes fail from now on. The caller holds the
    /// waking lock and wakes the worker.
    pub(crate) fn close(&self) {
        self.0.fetch_or(CLOSED, Relaxed);
    }
}
