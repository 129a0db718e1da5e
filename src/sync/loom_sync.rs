//! Loom models of the sync objects' wait queues (`wait.rs`, `mutex.rs`,
//! `chan.rs`): a waker, a canceller and a waiter's deadline racing for one
//! parked waiter, over every interleaving. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
//!
//! The frames' state words are the real ones (`frame/state.rs`); the
//! object is a model of a sync object's state behind its lock: the queue
//! of tokens, the owner or the ring, the count of waiters. Each party acts
//! as the library does:
//! - the waker pops tokens and consumes each (`Claimed::next`) until one
//!   is still waiting, then writes what it gives into that frame's body,
//!   which it now owns (`Claimed::give`);
//! - the canceller consumes the token through `cancel_async` and, owning
//!   the frame, undoes the wait under the object's lock (`Obj::leave`);
//! - the deadline's timer consumes the token as the poller resumes it;
//!   the waiter, run by whoever consumed its token, finds nothing given
//!   and takes itself out (`wait_coroutine`).
//!
//! The bodies are loom cells, so a write by a party that does not own the
//! frame is reported; the models check that exactly one party ends each
//! wait, that a waiter is given something only if it was still waiting
//! (never after a cancel or its deadline), that what it was not given goes
//! to the next waiter or stays with the object (the lock free again, the
//! item kept), and that the object's count of waiters returns to zero.

use std::collections::VecDeque;

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::frame::state::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Given {
    Nothing,
    Granted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// A waker gave it what it waits for.
    Given,
    /// Its deadline's timer consumed the token.
    TimedOut,
    /// Cancelled (default mode: finalized without running again).
    Cancelled,
}

struct Body {
    given: Given,
    /// The item a channel receiver got.
    item: Option<u32>,
    ended: Option<Ended>,
}

struct Waiter {
    id: u64,
    state: State,
    gen: u32,
    seq: u32,
    body: UnsafeCell<Body>,
}

impl Waiter {
    /// A coroutine parked in a library wait (`LIB_HELD`), its token out.
    fn parked(id: u64) -> Waiter {
        let state = State::new();
        let gen = state.init(false);
        let Park::Parked { seq } = state.park_lib() else {
            unreachable!()
        };
        Waiter {
            id,
            state,
            gen,
            seq,
            body: UnsafeCell::new(Body {
                given: Given::Nothing,
                item: None,
                ended: None,
            }),
        }
    }

    fn token(&self) -> u64 {
        (self.id << 32) | self.seq as u64
    }

    fn touch<R>(&self, f: impl FnOnce(&mut Body) -> R) -> R {
        // SAFETY: loom checks the exclusivity EXEC is meant to give.
        self.body.with_mut(|b| f(unsafe { &mut *b }))
    }

    fn ended(&self) -> Option<Ended> {
        // SAFETY: read after every thread joined.
        self.body.with(|b| unsafe { (*b).ended })
    }
}

/// A sync object's state behind its lock.
#[derive(Default)]
struct Object {
    queue: VecDeque<u64>,
    /// A mutex's owner (0: free).
    owner: u64,
    /// A channel's ring (items not given to anyone).
    ring: Vec<u32>,
    registered: usize,
}

struct Model {
    obj: Mutex<Object>,
    waiters: Vec<Waiter>,
}

impl Model {
    /// `waiters` coroutines registered and queued, in that order.
    fn new(waiters: u64, owner: u64) -> Arc<Model> {
        let ws: Vec<Waiter> = (1..=waiters).map(Waiter::parked).collect();
        let obj = Object {
            queue: ws.iter().map(Waiter::token).collect(),
            owner,
            ring: Vec::new(),
            registered: ws.len(),
        };
        Arc::new(Model {
            obj: Mutex::new(obj),
            waiters: ws,
        })
    }

    fn waiter(&self, token: u64) -> &Waiter {
        &self.waiters[(token >> 32) as usize - 1]
    }

    /// `Claimed::next`: the first queued waiter whose token this consumes.
    fn claim_next(&self, obj: &mut Object) -> Option<&Waiter> {
        while let Some(token) = obj.queue.pop_front() {
            let w = self.waiter(token);
            match w.state.consume_token(w.seq, false) {
                Ok(Consume::Schedule) => return Some(w),
                Ok(other) => panic!("a library wait's token consumed as {other:?}"),
                Err(Stale) => {}
            }
        }
        None
    }

    /// The waiter runs after whoever consumed its token scheduled it: it
    /// ends its wait as `wait_coroutine` does, and finishes.
    fn run_waiter(&self, w: &Waiter) {
        let given = w.touch(|b| b.given);
        let ended = if given == Given::Granted {
            Ended::Given
        } else {
            // Ended by its deadline: takes itself out of the object.
            let mut obj = self.obj.lock().unwrap();
            obj.queue.retain(|&t| t != w.token());
            obj.registered -= 1;
            Ended::TimedOut
        };
        w.touch(|b| b.ended = Some(ended));
        // A mutex it was given, it releases (to whoever waits next).
        if given == Given::Granted && self.obj.lock().unwrap().owner == w.id {
            self.unlock(w.id);
        }
        self.finish(w);
    }

    /// The frame ends (run or finalized) and its promise's holder lets it
    /// go; freed once, by whoever takes the last reference.
    fn finish(&self, w: &Waiter) {
        let cancelled = w.state.load().has(CANCELLED);
        let _ = w.state.complete(cancelled);
    }

    /// A cancel of the waiter's promise: finalizes a parked waiter on this
    /// thread, undoing its wait (`Obj::leave`).
    fn cancel(&self, w: &Waiter) {
        match w.state.cancel_async(w.gen, false) {
            Ok(Consume::Finalize) => {
                {
                    let mut obj = self.obj.lock().unwrap();
                    obj.queue.retain(|&t| t != w.token());
                    obj.registered -= 1;
                }
                w.touch(|b| {
                    assert_eq!(b.given, Given::Nothing, "a cancelled waiter was given");
                    b.ended = Some(Ended::Cancelled);
                });
                self.finish(w);
            }
            // The waker or the timer took it first (it runs on, or ran
            // and ended), or its promise was cancelled already.
            Ok(Consume::Dropped) | Ok(Consume::Free) | Err(Stale) => {}
            Ok(other) => panic!("cancel of a parked waiter: {other:?}"),
        }
    }

    /// The deadline's timer resumes the token (the poller's turn).
    fn time_out(&self, w: &Waiter) {
        if let Ok(c) = w.state.consume_token(w.seq, false) {
            assert_eq!(c, Consume::Schedule);
            self.run_waiter(w);
        }
    }

    /// `Mutex::unlock_as`: to the first waiter still waiting, or free.
    fn unlock(&self, owner: u64) {
        let mut obj = self.obj.lock().unwrap();
        assert_eq!(obj.owner, owner, "unlocked by a non-owner");
        let given = self.claim_next(&mut obj);
        obj.owner = given.map_or(0, |w| w.id);
        if let Some(w) = given {
            obj.registered -= 1;
            w.touch(|b| b.given = Given::Granted);
            drop(obj);
            self.run_waiter(w);
        }
    }

    /// `Chan::send` of `item` with receivers queued: to the first still
    /// waiting, or into the ring.
    fn send(&self, item: u32) {
        let mut obj = self.obj.lock().unwrap();
        match self.claim_next(&mut obj) {
            Some(w) => {
                obj.registered -= 1;
                w.touch(|b| {
                    b.item = Some(item);
                    b.given = Given::Granted;
                });
                drop(obj);
                self.run_waiter(w);
            }
            None => obj.ring.push(item),
        }
    }

    /// After every thread joined: each wait ended once, the object counts
    /// no waiter and holds no stale token.
    fn check(&self) {
        let obj = self.obj.lock().unwrap();
        assert_eq!(obj.registered, 0, "a waiter still counted");
        assert!(obj.queue.is_empty(), "a token left queued");
        for w in &self.waiters {
            assert!(w.ended().is_some(), "a wait never ended");
            assert!(w.state.load().has(DONE));
        }
    }
}

impl Model {
    /// A park callback (`park_lock` and the others): queues the token
    /// under the lock only if it is still out (`wait::live`), since the
    /// canceller consumes it before it takes the lock to undo the wait.
    fn park_callback(&self, w: &Waiter) {
        let mut obj = self.obj.lock().unwrap();
        let s = w.state.load();
        if s.has(SUSPEND_REF | LIB_HELD) && s.seq() == w.seq {
            obj.queue.push_back(w.token());
        }
    }
}

const OWNER: u64 = 100;

/// A coroutine's park callback queues its token while a cancel takes it:
/// whichever order, no stale token stays queued and the count returns to
/// zero.
#[test]
fn loom_park_callback_vs_cancel() {
    loom::model(|| {
        let m = Model::new(1, OWNER);
        // Registered, parked, not queued yet.
        m.obj.lock().unwrap().queue.clear();
        let canceller = {
            let m = m.clone();
            thread::spawn(move || m.cancel(&m.waiters[0]))
        };
        m.park_callback(&m.waiters[0]);
        canceller.join().unwrap();
        m.check();
    });
}

/// A mutex held by another, one coroutine waiting with a deadline: the
/// unlock, a cancel and the deadline race for it. The lock is given to it
/// only if neither came first; otherwise the mutex is free again.
#[test]
fn loom_mutex_unlock_vs_cancel_vs_deadline() {
    loom::model(|| {
        let m = Model::new(1, OWNER);
        let canceller = {
            let m = m.clone();
            thread::spawn(move || m.cancel(&m.waiters[0]))
        };
        let timer = {
            let m = m.clone();
            thread::spawn(move || m.time_out(&m.waiters[0]))
        };
        m.unlock(OWNER);
        canceller.join().unwrap();
        timer.join().unwrap();
        // Its promise's holder lets it go, if the cancel did not.
        m.cancel(&m.waiters[0]);
        m.check();
        // Given it, it released it again; not given, nobody holds it.
        assert_eq!(m.obj.lock().unwrap().owner, 0);
    });
}

/// Two coroutines waiting for a mutex; the first is cancelled while the
/// owner unlocks: the lock goes to the first only if the cancel came
/// late, else to the second, and never to a cancelled one.
#[test]
fn loom_mutex_goes_to_the_next_when_the_first_is_cancelled() {
    loom::model(|| {
        let m = Model::new(2, OWNER);
        let canceller = {
            let m = m.clone();
            thread::spawn(move || m.cancel(&m.waiters[0]))
        };
        m.unlock(OWNER);
        canceller.join().unwrap();
        // The second waiter has no deadline: if it did not get the lock
        // yet, its next chance is the first's release (which ran above
        // if the first got it). Here nobody else waits: end it by cancel.
        m.cancel(&m.waiters[1]);
        m.check();
        let (a, b) = (m.waiters[0].ended(), m.waiters[1].ended());
        assert!(
            a == Some(Ended::Given) || b == Some(Ended::Given),
            "the lock was lost: {a:?} {b:?}"
        );
        assert_eq!(m.obj.lock().unwrap().owner, 0);
    });
}

/// A channel item sent while the first of two waiting receivers is
/// cancelled and the second's deadline passes: the item reaches a receiver
/// still waiting, or stays in the ring; exactly once.
#[test]
fn loom_channel_item_vs_cancel_vs_deadline() {
    loom::model(|| {
        let m = Model::new(2, 0);
        let canceller = {
            let m = m.clone();
            thread::spawn(move || m.cancel(&m.waiters[0]))
        };
        let timer = {
            let m = m.clone();
            thread::spawn(move || m.time_out(&m.waiters[1]))
        };
        m.send(7);
        canceller.join().unwrap();
        timer.join().unwrap();
        // Whoever is left waiting ends by its cancel now.
        m.cancel(&m.waiters[1]);
        m.cancel(&m.waiters[0]);
        m.check();
        let got: Vec<u32> = m
            .waiters
            .iter()
            // SAFETY: every thread joined.
            .filter_map(|w| w.body.with(|b| unsafe { (*b).item }))
            .collect();
        let kept = m.obj.lock().unwrap().ring.clone();
        assert_eq!(
            got.len() + kept.len(),
            1,
            "the item went {got:?} and stayed {kept:?}"
        );
        for w in &m.waiters {
            // SAFETY: as above.
            let item = w.body.with(|b| unsafe { (*b).item });
            if item.is_some() {
                assert_eq!(w.ended(), Some(Ended::Given));
            }
        }
    });
}
