//! The frame's state word: two references, the execution owner, the
//! cancel flag and the generations, in one `AtomicU64`.
//!
//! Every transition is one compare-exchange loop in this file and returns a
//! `#[must_use]` outcome that tells the caller what it now owns: the right
//! to run the frame (`EXEC`), the duty to finalize it, or the duty to free
//! it. The file holds no `unsafe` and no knowledge of stacks or queues, so
//! the loom models in `frame/tests/loom_state.rs` check exactly this code.
//!
//! Layout:
//!
//! ```text
//!  63                      32 31               8 7                0
//! +--------------------------+------------------+------------------+
//! |   seq (32): bumped at    | gen (24): bumped | flags            |
//! |   every park and free    | at every free    |                  |
//! +--------------------------+------------------+------------------+
//! ```
//!
//! A promise names `(slot, gen)`, a token names `(slot, seq)`: a handle
//! whose number no longer matches is stale, and a stale handle only ever
//! reads this word, which lives in a slot that is never unmapped.

use core::fmt;

use crate::loom::{AtomicU64, Ordering::*};
// Announces each edge of the word to ThreadSanitizer (`tsan` builds only).
use crate::sanitize;

/// The async reference (the promise) has not been consumed.
pub const ASYNC_REF: u64 = 1 << 0;
/// An await holds the async reference and waits for `DONE`.
pub const AWAITING: u64 = 1 << 1;
/// A suspend reference (a token) is outstanding.
pub const SUSPEND_REF: u64 = 1 << 2;
/// The outstanding token is held by one of the library's own waits, so a
/// cancellation consumes it at once instead of waiting for its holder.
pub const LIB_HELD: u64 = 1 << 3;
/// Someone owns the frame's execution: it is queued, running, or being
/// finalized. Only the `EXEC` owner touches the frame's body.
pub const EXEC: u64 = 1 << 4;
/// Cancellation was requested (and, once acted on, begun).
pub const CANCELLED: u64 = 1 << 5;
/// Finalized: defers ran, the environment was dropped, the result is final.
pub const DONE: u64 = 1 << 6;
/// Spawn flag: cancellation returns `CORO_ECANCELED` to the body.
pub const CANCEL_RETURNS: u64 = 1 << 7;

const FLAGS: u64 = 0xff;
const GEN_SHIFT: u32 = 8;
const GEN_MASK: u64 = 0x00ff_ffff;
const SEQ_SHIFT: u32 = 32;

/// A copy of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Snapshot(pub u64);

impl Snapshot {
    pub fn has(self, bits: u64) -> bool {
        self.0 & bits == bits
    }
    pub fn any(self, bits: u64) -> bool {
        self.0 & bits != 0
    }
    pub fn gen(self) -> u32 {
        ((self.0 >> GEN_SHIFT) & GEN_MASK) as u32
    }
    pub fn seq(self) -> u32 {
        (self.0 >> SEQ_SHIFT) as u32
    }
    /// No frame: a free slot (or one spawn has not published yet).
    pub fn is_free(self) -> bool {
        self.0 & FLAGS == 0
    }
    /// Nobody holds a reference and nobody owns execution: the frame is
    /// finished and whoever produced this snapshot must free it.
    fn must_free(self) -> bool {
        self.has(DONE) && !self.any(ASYNC_REF | SUSPEND_REF | EXEC)
    }
    fn cancel_returns(self) -> bool {
        self.has(CANCEL_RETURNS)
    }
    fn with(self, set: u64, clear: u64) -> Snapshot {
        Snapshot((self.0 & !clear) | set)
    }
    fn next_seq(self) -> Snapshot {
        let seq = self.seq().wrapping_add(1) as u64;
        Snapshot((self.0 & !(u64::MAX << SEQ_SHIFT)) | (seq << SEQ_SHIFT))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (ASYNC_REF, "ASYNC_REF"),
            (AWAITING, "AWAITING"),
            (SUSPEND_REF, "SUSPEND_REF"),
            (LIB_HELD, "LIB_HELD"),
            (EXEC, "EXEC"),
            (CANCELLED, "CANCELLED"),
            (DONE, "DONE"),
            (CANCEL_RETURNS, "CANCEL_RETURNS"),
        ];
        let mut s = f.debug_struct("Snapshot");
        for (bit, name) in names {
            s.field(name, &self.has(bit));
        }
        s.field("gen", &self.gen())
            .field("seq", &self.seq())
            .finish()
    }
}

/// The handle given to a transition did not match the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale;

/// After the body switched out to suspend.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Park {
    /// Parked; the token of this suspension carries `seq`. The caller gave
    /// up `EXEC` and must not touch the body again.
    Parked { seq: u32 },
    /// Cancelled while running, default mode: the caller keeps `EXEC` and
    /// finalizes; the body never runs again.
    Finalize,
    /// Cancelled while running, cancel-returns mode: the caller keeps
    /// `EXEC` and resumes the body with `CORO_ECANCELED`.
    Requeue,
}

/// After an `on_suspend` callback returned (`State::unhold`).
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhold {
    /// Parked: `EXEC` was given up; the caller must not touch the body.
    Parked,
    /// The token was consumed meanwhile: the caller keeps `EXEC` and
    /// queues the frame to run on.
    Requeue,
    /// Cancelled meanwhile, default mode: the caller keeps `EXEC` and
    /// finalizes; the body never runs again.
    Finalize,
}

/// After a token was consumed (`resume` or `cancel_suspend`), or an async
/// reference by `cancel_async`.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consume {
    /// The caller now owns `EXEC` and queues the frame on its worker.
    Schedule,
    /// The caller now owns `EXEC` and finalizes the frame as cancelled.
    Finalize,
    /// The reference was dropped; someone else acts (or the cancellation
    /// waits for the token, in cancel-returns mode).
    Dropped,
    /// The reference was the last one: the caller frees the frame.
    Free,
}

/// After an await looked at the frame.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwaitStart {
    /// Already done: the async reference was consumed with this snapshot
    /// (before the change), `free` says whether the caller frees.
    Ready { cancelled: bool, free: bool },
    /// Not done: `AWAITING` is set; wait for `DONE`, then `await_finish`.
    Wait,
}

/// After the `EXEC` owner finished finalizing.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Complete {
    /// `DONE` is set and `EXEC` kept: wake the awaiter, then `release_exec`.
    WakeAwaiter,
    /// `DONE` is set, `EXEC` released, references remain.
    Kept,
    /// `DONE` is set and nothing holds the frame: the caller frees it.
    Free,
}

/// After `complete_awaited`.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompleteAwaited {
    /// `DONE` is set, `EXEC` released and the async reference consumed
    /// with this snapshot: the await is over. `free`: the caller frees.
    Taken { cancelled: bool, free: bool },
    /// Nothing changed (the promise was no longer the caller's to take):
    /// the caller completes the frame with `complete`.
    NotTaken,
}

/// One frame's state word.
pub struct State {
    word: AtomicU64,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// A free slot: no references, generation 0.
    pub fn new() -> State {
        State {
            word: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Snapshot {
        let s = Snapshot(self.word.load(Acquire));
        sanitize::acquire(&self.word);
        s
    }

    /// Runs `f` on the current snapshot until its answer is stored.
    /// `f` returns the new word (or `None` to leave it) and an outcome.
    #[inline(always)]
    fn update<T>(
        &self,
        mut f: impl FnMut(Snapshot) -> Result<(Option<Snapshot>, T), Stale>,
    ) -> Result<T, Stale> {
        let mut cur = self.word.load(Acquire);
        loop {
            sanitize::acquire(&self.word);
            let (next, out) = f(Snapshot(cur))?;
            let Some(next) = next else { return Ok(out) };
            sanitize::release(&self.word);
            match self
                .word
                .compare_exchange_weak(cur, next.0, AcqRel, Acquire)
            {
                Ok(_) => return Ok(out),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Spawn: a free slot becomes a frame held by its promise and owned by
    /// the scheduler. Returns the generation the promise carries.
    /// The caller owns the free slot (it came off the free list).
    pub fn init(&self, cancel_returns: bool) -> u32 {
        let cur = Snapshot(self.word.load(Relaxed));
        debug_assert_eq!(cur.0 & FLAGS, 0, "init of a live frame: {cur:?}");
        let mut flags = ASYNC_REF | EXEC;
        if cancel_returns {
            flags |= CANCEL_RETURNS;
        }
        sanitize::release(&self.word);
        self.word.store((cur.0 & !FLAGS) | flags, Release);
        cur.gen()
    }

    /// Free: bumps gen and seq so every handle to this life turns stale.
    /// The caller got `Consume::Free` / `Complete::Free` (or holds the
    /// runtime's shutdown right, see `force_free`).
    pub fn release(&self) {
        let cur = self.word.load(Acquire);
        sanitize::acquire(&self.word);
        // One add bumps both. A generation that wraps carries into the
        // sequence, which then moves by two: still unlike every token's.
        let next = (cur & !FLAGS).wrapping_add((1 << SEQ_SHIFT) | (1 << GEN_SHIFT));
        sanitize::release(&self.word);
        self.word.store(next, Release);
    }

    /// The body switched out to suspend in one of the library's own waits,
    /// whose token the library holds (`LIB_HELD`); the caller owns `EXEC`
    /// and gives it up here. What the wait does next with the token reads
    /// only memory that outlives the frame (the poller, a slot's words).
    pub fn park_lib(&self) -> Park {
        self.park_with(SUSPEND_REF | LIB_HELD, EXEC)
    }

    /// The body switched out to suspend with a user's `on_suspend`, which
    /// the caller (the worker, owning `EXEC`) runs next with the token this
    /// makes. `EXEC` is kept while the callback runs (rule 9 in
    /// `frame/mod.rs`): a cancel or a resume meanwhile only records itself,
    /// so nothing finalizes or frees the frame, whose environment the
    /// callback may read, until `unhold` says what to do.
    pub fn park_holding(&self) -> Park {
        self.park_with(SUSPEND_REF, 0)
    }

    fn park_with(&self, held: u64, give_up: u64) -> Park {
        self.update(|s| {
            debug_assert!(s.has(EXEC) && !s.any(SUSPEND_REF | DONE), "park: {s:?}");
            if s.has(CANCELLED) {
                let out = if s.cancel_returns() {
                    Park::Requeue
                } else {
                    Park::Finalize
                };
                return Ok((None, out));
            }
            let next = s.next_seq().with(held, give_up);
            Ok((Some(next), Park::Parked { seq: next.seq() }))
        })
        .unwrap_or(Park::Finalize)
    }

    /// The `on_suspend` callback of a `park_holding` returned: gives `EXEC`
    /// up if the token is still out and nothing asks more of the caller;
    /// otherwise the caller keeps `EXEC` and does what a consume or cancel
    /// that came meanwhile would have asked of its own caller.
    pub fn unhold(&self) -> Unhold {
        self.update(|s| {
            debug_assert!(s.has(EXEC) && !s.any(LIB_HELD | DONE), "unhold: {s:?}");
            let finalize = s.has(CANCELLED) && !s.cancel_returns();
            if finalize {
                // Default mode: a cancel came, so the body never runs
                // again; the token, if still out, only drops later.
                return Ok((None, Unhold::Finalize));
            }
            if s.has(SUSPEND_REF) {
                // Parked (cancel-returns mode waits for the token, as
                // `cancel_async` of a parked frame does).
                return Ok((Some(s.with(0, EXEC)), Unhold::Parked));
            }
            // The token was consumed meanwhile: the body runs on (with
            // CORO_ECANCELED if that was a cancel, cancel-returns mode).
            Ok((None, Unhold::Requeue))
        })
        .unwrap_or(Unhold::Finalize)
    }

    /// Consumes the token `seq`: `coro_resume` (`cancel == false`) or
    /// `coro_cancel_suspend` (`cancel == true`).
    pub fn consume_token(&self, seq: u32, cancel: bool) -> Result<Consume, Stale> {
        self.update(|s| {
            if !s.has(SUSPEND_REF) || s.seq() != seq {
                return Err(Stale);
            }
            let s = s.with(0, SUSPEND_REF | LIB_HELD);
            if s.has(CANCELLED) {
                // A cancellation came first. In cancel-returns mode it waited
                // for this token, which now restarts the body with
                // CORO_ECANCELED; otherwise the token is merely dropped.
                if s.cancel_returns() && !s.any(EXEC | DONE) {
                    return Ok((Some(s.with(EXEC, 0)), Consume::Schedule));
                }
                let out = if s.must_free() {
                    Consume::Free
                } else {
                    Consume::Dropped
                };
                return Ok((Some(s), out));
            }
            debug_assert!(!s.has(DONE), "parked frame done: {s:?}");
            if s.has(EXEC) {
                // The worker still runs the suspension's `on_suspend`
                // (`park_holding`): it acts on this in `unhold`.
                let cancelled = if cancel { CANCELLED } else { 0 };
                return Ok((Some(s.with(cancelled, 0)), Consume::Dropped));
            }
            if !cancel {
                return Ok((Some(s.with(EXEC, 0)), Consume::Schedule));
            }
            let out = if s.cancel_returns() {
                Consume::Schedule
            } else {
                Consume::Finalize
            };
            Ok((Some(s.with(EXEC | CANCELLED, 0)), out))
        })
    }

    /// Consumes the async reference of generation `gen` and cancels:
    /// `coro_cancel_async`. `awaiting`: the caller is the await that holds
    /// the reference (a cancelled awaiter cancels its child).
    pub fn cancel_async(&self, gen: u32, awaiting: bool) -> Result<Consume, Stale> {
        self.update(|s| {
            if !s.has(ASYNC_REF) || s.gen() != gen || s.has(AWAITING) != awaiting {
                return Err(Stale);
            }
            let s = s.with(0, ASYNC_REF | AWAITING);
            if s.any(DONE | CANCELLED) {
                let out = if s.must_free() {
                    Consume::Free
                } else {
                    Consume::Dropped
                };
                return Ok((Some(s), out));
            }
            let s = s.with(CANCELLED, 0);
            if s.has(EXEC) {
                // Queued or running: it acts at its next suspension point.
                return Ok((Some(s), Consume::Dropped));
            }
            // Parked. A library wait gives its token up at once; a user's
            // token stays valid until its holder consumes it.
            if s.has(LIB_HELD) {
                let out = if s.cancel_returns() {
                    Consume::Schedule
                } else {
                    Consume::Finalize
                };
                return Ok((Some(s.with(EXEC, SUSPEND_REF | LIB_HELD)), out));
            }
            if s.cancel_returns() {
                return Ok((Some(s), Consume::Dropped));
            }
            Ok((Some(s.with(EXEC, 0)), Consume::Finalize))
        })
    }

    /// Consumes the async reference without cancelling: `coro_detach`.
    pub fn detach(&self, gen: u32) -> Result<Consume, Stale> {
        self.update(|s| {
            if !s.has(ASYNC_REF) || s.gen() != gen || s.has(AWAITING) {
                return Err(Stale);
            }
            let s = s.with(0, ASYNC_REF);
            Ok((
                Some(s),
                if s.must_free() {
                    Consume::Free
                } else {
                    Consume::Dropped
                },
            ))
        })
    }

    /// `coro_await` begins. `read_result` runs while the async reference
    /// still pins the frame, before it is consumed.
    pub fn await_start<R>(
        &self,
        gen: u32,
        mut read_result: impl FnMut() -> R,
    ) -> Result<(AwaitStart, Option<R>), Stale> {
        self.update(|s| {
            if !s.has(ASYNC_REF) || s.gen() != gen || s.has(AWAITING) {
                return Err(Stale);
            }
            if s.has(DONE) {
                let r = read_result();
                let next = s.with(0, ASYNC_REF);
                let out = AwaitStart::Ready {
                    cancelled: s.has(CANCELLED),
                    free: next.must_free(),
                };
                return Ok((Some(next), (out, Some(r))));
            }
            Ok((Some(s.with(AWAITING, 0)), (AwaitStart::Wait, None)))
        })
    }

    /// The await saw `DONE`: consumes the async reference. Returns whether
    /// the frame was cancelled and whether the caller frees it.
    pub fn await_finish(&self, gen: u32) -> Result<(bool, bool), Stale> {
        self.update(|s| {
            if !s.has(ASYNC_REF | AWAITING | DONE) || s.gen() != gen {
                return Err(Stale);
            }
            let next = s.with(0, ASYNC_REF | AWAITING);
            Ok((Some(next), (s.has(CANCELLED), next.must_free())))
        })
    }

    /// The `EXEC` owner finished: defers ran, env dropped, result stored.
    /// `cancelled` is how it finished, as the defers saw it (errdefers
    /// ran or not): `CANCELLED` is set to match, so whoever awaits the
    /// frame learns what its errdefers learnt. A cancel that came after
    /// that verdict (shutdown marks a running frame) came too late: the
    /// frame finished. (Before, it turned a finished frame's await into
    /// `CORO_ECANCELED` whose errdefers never ran.)
    pub fn complete(&self, cancelled: bool) -> Complete {
        let verdict = if cancelled { CANCELLED } else { 0 };
        self.update(|s| {
            debug_assert!(s.has(EXEC) && !s.has(DONE), "complete: {s:?}");
            let s = s.with(verdict, CANCELLED ^ verdict);
            if s.has(AWAITING) {
                return Ok((Some(s.with(DONE, 0)), Complete::WakeAwaiter));
            }
            let next = s.with(DONE, EXEC);
            Ok((
                Some(next),
                if next.must_free() {
                    Complete::Free
                } else {
                    Complete::Kept
                },
            ))
        })
        .unwrap_or(Complete::Kept)
    }

    /// `complete` for a frame whose await of generation `gen` begins next
    /// on this thread (an awaited child run nested, on its awaiter's
    /// worker): one step does both `complete` and `await_start`'s
    /// consumption of the async reference, as if the await had found the
    /// frame done. If the reference is no longer there to take (another
    /// thread awaited, cancelled or detached the promise meanwhile), it
    /// completes as `complete` does, and the await that follows answers
    /// as usual. `cancelled`: as for `complete`.
    #[inline(always)]
    pub fn complete_awaited(&self, gen: u32, cancelled: bool) -> CompleteAwaited {
        let verdict = if cancelled { CANCELLED } else { 0 };
        self.update(|s| {
            debug_assert!(s.has(EXEC) && !s.has(DONE), "complete: {s:?}");
            if s.has(ASYNC_REF) && !s.has(AWAITING) && s.gen() == gen {
                let next = s.with(DONE | verdict, EXEC | ASYNC_REF | (CANCELLED ^ verdict));
                let out = CompleteAwaited::Taken {
                    cancelled,
                    free: next.must_free(),
                };
                return Ok((Some(next), out));
            }
            Ok((None, CompleteAwaited::NotTaken))
        })
        .unwrap_or(CompleteAwaited::NotTaken)
    }

    /// Gives up `EXEC` after `Complete::WakeAwaiter`. True: the caller frees.
    #[must_use]
    pub fn release_exec(&self) -> bool {
        self.update(|s| {
            let next = s.with(0, EXEC);
            Ok((Some(next), next.must_free()))
        })
        .unwrap_or(false)
    }

    /// Runtime shutdown, step one: cancels a frame of generation `gen`
    /// whatever references exist. Parked frames are taken over at once
    /// (`Finalize` in default mode, `Schedule` in cancel-returns mode) even
    /// if a user holds their token; the token then only drops.
    pub fn shutdown_cancel(&self, gen: u32) -> Consume {
        self.update(|s| {
            if s.gen() != gen || s.0 & FLAGS == 0 || s.has(DONE) {
                return Ok((None, Consume::Dropped));
            }
            let s = s.with(CANCELLED, 0);
            if s.has(EXEC) {
                return Ok((Some(s), Consume::Dropped));
            }
            // Parked, or cancel-returns waiting for a token that may never come.
            let s = if s.has(LIB_HELD) {
                s.with(0, SUSPEND_REF | LIB_HELD)
            } else {
                s
            };
            let out = if s.cancel_returns() {
                Consume::Schedule
            } else {
                Consume::Finalize
            };
            Ok((Some(s.with(EXEC, 0)), out))
        })
        .unwrap_or(Consume::Dropped)
    }

    /// Runtime shutdown, last step: a finished frame of generation `gen`
    /// is freed even if references remain; they turn stale. Returns false
    /// if the frame is not finished (or already gone), if no reference
    /// remains (its last owner is freeing it), or if an await of
    /// it is in progress: its end woke the awaiter, which consumes the
    /// async reference and frees it (`await_finish`, or, cancelled, its
    /// `cancel_async`); freed first, the frame would answer that awaiter
    /// `CORO_ESTALE` instead of its result or `CORO_ECANCELED`.
    #[must_use]
    pub fn force_free(&self, gen: u32) -> bool {
        self.update(|s| {
            // No reference left: whoever took the last one frees the
            // frame (it saw `must_free`); freeing it here too would put
            // the slot on the free list twice.
            if s.gen() != gen || !s.has(DONE) || s.any(EXEC | AWAITING) || s.must_free() {
                return Err(Stale);
            }
            Ok((
                Some(s.with(0, ASYNC_REF | AWAITING | SUSPEND_REF | LIB_HELD)),
                (),
            ))
        })
        .is_ok()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `complete` as the harness calls it: cancelled if the state says so.
    fn complete(s: &State) -> Complete {
        s.complete(s.load().has(CANCELLED))
    }

    fn spawned(cr: bool) -> (State, u32) {
        let s = State::new();
        let gen = s.init(cr);
        (s, gen)
    }

    fn parked(cr: bool, lib: bool) -> (State, u32, u32) {
        let (s, gen) = spawned(cr);
        let park = if lib { s.park_lib() } else { s.park_holding() };
        let Park::Parked { seq } = park else { panic!() };
        if !lib {
            assert_eq!(s.unhold(), Unhold::Parked);
        }
        (s, gen, seq)
    }

    /// The worker runs the callback of a `park_holding`, with `EXEC`.
    fn in_callback(cr: bool) -> (State, u32, u32) {
        let (s, gen) = spawned(cr);
        let Park::Parked { seq } = s.park_holding() else {
            panic!()
        };
        assert!(s.load().has(EXEC | SUSPEND_REF));
        (s, gen, seq)
    }

    #[test]
    fn a_resume_inside_the_callback_requeues_after_it() {
        let (s, _, seq) = in_callback(false);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Dropped));
        assert_eq!(s.consume_token(seq, false), Err(Stale));
        assert_eq!(s.unhold(), Unhold::Requeue);
        assert!(s.load().has(EXEC) && !s.load().has(CANCELLED));
    }

    #[test]
    fn a_cancel_during_the_callback_waits_for_it() {
        // cancel_async: default mode finalizes after the callback, on the
        // worker; the token stays valid and only drops.
        let (s, gen, seq) = in_callback(false);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Dropped));
        assert_eq!(s.unhold(), Unhold::Finalize);
        assert_eq!(complete(&s), Complete::Kept);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Free));
        // Cancel-returns mode parks and waits for the token.
        let (s, gen, seq) = in_callback(true);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Dropped));
        assert_eq!(s.unhold(), Unhold::Parked);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Schedule));
        // cancel_suspend: finalize (default) or requeue with the cancel.
        let (s, _, seq) = in_callback(false);
        assert_eq!(s.consume_token(seq, true), Ok(Consume::Dropped));
        assert_eq!(s.unhold(), Unhold::Finalize);
        let (s, _, seq) = in_callback(true);
        assert_eq!(s.consume_token(seq, true), Ok(Consume::Dropped));
        assert_eq!(s.unhold(), Unhold::Requeue);
        assert!(s.load().has(CANCELLED));
    }

    #[test]
    fn shutdown_cannot_free_a_frame_whose_callback_runs() {
        let (s, gen, seq) = in_callback(false);
        assert_eq!(s.shutdown_cancel(gen), Consume::Dropped);
        assert!(!s.force_free(gen), "freed under its callback");
        assert_eq!(s.unhold(), Unhold::Finalize);
        assert_eq!(complete(&s), Complete::Kept);
        assert!(s.force_free(gen));
        s.release();
        assert_eq!(s.consume_token(seq, false), Err(Stale));
    }

    #[test]
    fn resume_then_finish_then_await() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Schedule));
        assert_eq!(
            s.consume_token(seq, false),
            Err(Stale),
            "second resume of one token"
        );
        assert_eq!(complete(&s), Complete::Kept);
        let (start, r) = s.await_start(gen, || 7).unwrap();
        assert_eq!(
            start,
            AwaitStart::Ready {
                cancelled: false,
                free: true
            }
        );
        assert_eq!(r, Some(7));
        s.release();
        assert_eq!(s.await_start(gen, || 0), Err(Stale), "second await");
        assert_eq!(s.load().gen(), gen + 1);
    }

    #[test]
    fn cancel_async_of_parked_frame_finalizes_and_late_resume_frees() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Finalize));
        assert!(s.load().has(SUSPEND_REF | EXEC | CANCELLED));
        assert_eq!(complete(&s), Complete::Kept);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Free));
    }

    #[test]
    fn late_resume_during_finalize_leaves_free_to_finalizer() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Finalize));
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Dropped));
        assert_eq!(complete(&s), Complete::Free);
    }

    #[test]
    fn cancel_returns_waits_for_the_user_token() {
        let (s, gen, seq) = parked(true, false);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Dropped));
        assert!(!s.load().has(EXEC));
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Schedule));
        assert!(s.load().has(EXEC | CANCELLED));
    }

    #[test]
    fn library_wait_gives_its_token_up_at_once() {
        let (s, gen, seq) = parked(false, true);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Finalize));
        assert!(!s.load().has(SUSPEND_REF));
        assert_eq!(s.consume_token(seq, false), Err(Stale));
        assert_eq!(complete(&s), Complete::Free);
    }

    #[test]
    fn cancel_while_running_is_acted_on_at_park() {
        let (s, gen) = spawned(false);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Dropped));
        assert_eq!(s.park_holding(), Park::Finalize);
        let (s, gen) = spawned(true);
        assert_eq!(s.cancel_async(gen, false), Ok(Consume::Dropped));
        assert_eq!(s.park_lib(), Park::Requeue);
    }

    #[test]
    fn a_cancel_after_the_defers_verdict_is_too_late() {
        let (s, gen) = spawned(false);
        // Shutdown marks the frame while its defers run as for a normal end.
        assert_eq!(s.shutdown_cancel(gen), Consume::Dropped);
        assert_eq!(s.complete(false), Complete::Kept);
        let (start, _) = s.await_start(gen, || ()).unwrap();
        assert_eq!(
            start,
            AwaitStart::Ready {
                cancelled: false,
                free: true
            }
        );
        // And the other way: a frame ended as cancelled says so.
        let (s, gen) = spawned(false);
        assert_eq!(s.complete(true), Complete::Kept);
        let (start, _) = s.await_start(gen, || ()).unwrap();
        assert!(matches!(
            start,
            AwaitStart::Ready {
                cancelled: true,
                ..
            }
        ));
    }

    #[test]
    fn awaiter_keeps_exec_until_woken() {
        let (s, gen) = spawned(false);
        assert_eq!(s.await_start(gen, || ()).unwrap().0, AwaitStart::Wait);
        assert_eq!(
            s.cancel_async(gen, false),
            Err(Stale),
            "the await holds the promise"
        );
        assert_eq!(complete(&s), Complete::WakeAwaiter);
        assert_eq!(s.await_finish(gen), Ok((false, false)));
        assert!(s.release_exec());
    }

    #[test]
    fn cancel_suspend_then_await_reports_cancelled() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.consume_token(seq, true), Ok(Consume::Finalize));
        assert_eq!(complete(&s), Complete::Kept);
        let (start, _) = s.await_start(gen, || ()).unwrap();
        assert_eq!(
            start,
            AwaitStart::Ready {
                cancelled: true,
                free: true
            }
        );
    }

    #[test]
    fn detach_then_completion_frees() {
        let (s, gen) = spawned(false);
        assert_eq!(s.detach(gen), Ok(Consume::Dropped));
        assert_eq!(s.detach(gen), Err(Stale));
        assert_eq!(complete(&s), Complete::Free);
    }

    #[test]
    fn release_bumps_generation_and_sequence() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Schedule));
        assert_eq!(complete(&s), Complete::Kept);
        assert_eq!(s.detach(gen), Ok(Consume::Free));
        s.release();
        let snap = s.load();
        assert_eq!((snap.gen(), snap.seq()), (gen + 1, seq + 1));
        assert_eq!(snap.0 & FLAGS, 0);
    }

    #[test]
    fn shutdown_leaves_a_frame_to_the_owner_of_its_last_reference() {
        // The awaiter consumed the last reference of a finished frame and
        // is about to free it.
        let (s, gen) = spawned(false);
        assert_eq!(complete(&s), Complete::Kept);
        let (start, _) = s.await_start(gen, || 0).unwrap();
        assert_eq!(
            start,
            AwaitStart::Ready {
                cancelled: false,
                free: true
            }
        );
        assert!(!s.force_free(gen), "freed under the awaiter freeing it");
        // A detached frame whose worker completed it and frees it.
        let (s, gen) = spawned(false);
        assert_eq!(s.detach(gen), Ok(Consume::Dropped));
        assert_eq!(complete(&s), Complete::Free);
        assert!(!s.force_free(gen), "freed under the worker freeing it");
    }

    #[test]
    fn shutdown_leaves_a_finished_frame_to_its_awaiter() {
        let (s, gen, seq) = parked(false, false);
        assert_eq!(s.await_start(gen, || 0).unwrap().0, AwaitStart::Wait);
        assert_eq!(s.shutdown_cancel(gen), Consume::Finalize);
        assert_eq!(complete(&s), Complete::WakeAwaiter);
        assert!(!s.release_exec());
        assert!(!s.force_free(gen), "freed under its awaiter");
        assert_eq!(s.await_finish(gen), Ok((true, false)));
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Free));
    }

    #[test]
    fn shutdown_takes_over_a_user_held_token() {
        let (s, gen, seq) = parked(true, false);
        assert_eq!(s.shutdown_cancel(gen), Consume::Schedule);
        assert_eq!(s.consume_token(seq, false), Ok(Consume::Dropped));
        assert_eq!(complete(&s), Complete::Kept);
        assert!(s.force_free(gen));
    }

    #[test]
    fn nested_await_ends_with_the_completion() {
        let (s, gen) = spawned(false);
        assert_eq!(
            s.complete_awaited(gen, s.load().has(CANCELLED)),
            CompleteAwaited::Taken {
                cancelled: false,
                free: true
            }
        );
        assert!(s.load().has(DONE) && !s.load().any(ASYNC_REF | EXEC));
        assert_eq!(s.await_start(gen, || ()), Err(Stale), "the await is over");
        // Cancelled while it ran (shutdown keeps the promise).
        let (s, gen) = spawned(true);
        assert_eq!(s.shutdown_cancel(gen), Consume::Dropped);
        assert_eq!(
            s.complete_awaited(gen, s.load().has(CANCELLED)),
            CompleteAwaited::Taken {
                cancelled: true,
                free: true
            }
        );
    }

    #[test]
    fn nested_await_leaves_a_promise_it_does_not_hold() {
        let (s, gen) = spawned(false);
        assert_eq!(
            s.complete_awaited(gen + 1, s.load().has(CANCELLED)),
            CompleteAwaited::NotTaken
        );
        assert_eq!(s.detach(gen), Ok(Consume::Dropped));
        assert_eq!(
            s.complete_awaited(gen, s.load().has(CANCELLED)),
            CompleteAwaited::NotTaken
        );
        assert!(!s.load().has(DONE), "left for complete");
        assert_eq!(complete(&s), Complete::Free);
        // Another thread's await holds it.
        let (s, gen) = spawned(false);
        assert_eq!(s.await_start(gen, || ()).unwrap().0, AwaitStart::Wait);
        assert_eq!(
            s.complete_awaited(gen, s.load().has(CANCELLED)),
            CompleteAwaited::NotTaken
        );
        assert_eq!(complete(&s), Complete::WakeAwaiter);
    }

    #[test]
    fn release_wraps_the_generation() {
        let s = State {
            word: AtomicU64::new((7 << SEQ_SHIFT) | (GEN_MASK << GEN_SHIFT)),
        };
        s.release();
        let snap = s.load();
        assert_eq!(snap.gen(), 0);
        assert_ne!(snap.seq(), 7);
        assert_eq!(snap.0 & FLAGS, 0);
    }

    #[test]
    fn debug_names_every_flag() {
        let text = format!("{:?}", Snapshot(FLAGS));
        for name in [
            "ASYNC_REF",
            "AWAITING",
            "SUSPEND_REF",
            "LIB_HELD",
            "EXEC",
            "CANCELLED",
            "DONE",
            "CANCEL_RETURNS",
        ] {
            assert!(text.contains(&format!("{name}: true")), "{text}");
        }
    }
}
