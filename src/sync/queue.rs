//! A sync object's FIFO of waiters: coroutines, by the token of their
//! parked wait, and plain threads, by their `ThreadWaiter` on their own
//! stack. The object's lock guards it.
//!
//! Room is made when a waiter registers (`reserve`), before it waits, so
//! `push` never allocates: exhausted memory fails the wait's start with
//! `CORO_ENOMEM`, never a wake-up. A coroutine's entry is pushed only
//! while its token is live (checked under the object's lock, which its
//! canceller takes to undo the wait after consuming the token), so the
//! queue holds at most one entry per registered waiter.

use std::collections::VecDeque;
use std::ptr::NonNull;

use super::wait::ThreadWaiter;
use crate::error::{Error, Result};
use crate::frame::Token;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// A coroutine parked in the wait whose token this is.
    Coroutine(u64),
    /// A thread blocked in the wait; the record lives on its stack until
    /// it is given something or takes itself out.
    Thread(NonNull<ThreadWaiter>),
}

#[derive(Default)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
}

// SAFETY: a `Thread` entry points at a record its thread keeps alive while
// the entry is queued; the queue is only touched under its object's lock.
unsafe impl Send for Queue {}

impl Queue {
    /// Room for `n` entries in all, so that `push` does not allocate.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<()> {
        let more = n.saturating_sub(self.waiters.len());
        self.waiters.try_reserve(more).map_err(|_| Error::NoMem)
    }

    pub(crate) fn push(&mut self, w: Waiter) {
        debug_assert!(
            self.waiters.len() < self.waiters.capacity(),
            "no room reserved"
        );
        self.waiters.push_back(w);
    }

    pub(crate) fn pop(&mut self) -> Option<Waiter> {
        self.waiters.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Takes out the entry of the coroutine in slot `index`, if queued
    /// (its wait ended by deadline or cancellation). True if it was there.
    pub(crate) fn remove_slot(&mut self, index: usize) -> bool {
        self.remove_where(|w| matches!(w, Waiter::Coroutine(t) if slot_of(t) == Some(index)))
    }

    /// Takes out a thread's entry, if queued.
    pub(crate) fn remove_thread(&mut self, tw: NonNull<ThreadWaiter>) -> bool {
        self.remove_where(|w| w == Waiter::Thread(tw))
    }

    fn remove_where(&mut self, mut pick: impl FnMut(Waiter) -> bool) -> bool {
        match self.waiters.iter().position(|&w| pick(w)) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }
}

fn slot_of(token: u64) -> Option<usize> {
    Token(token).split().ok().map(|(index, _)| index)
}
