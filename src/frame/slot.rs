//! A frame slot: the state word and the await handshake, which anyone may
//! read, and the body, which only the `EXEC` owner touches.
//!
//! Slots are never unmapped (see `table`), so a stale handle can always read
//! a slot's atomics safely; a generation mismatch turns it away.

use core::cell::{Cell, UnsafeCell};
use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

use super::blocker::Blocker;
use super::handle::Promise;
use super::state::State;
use super::trace::{Trace, CHECK_LOCKS};
use super::wait::WaitCell;
use crate::context::Context;
use crate::sched::Runtime;

/// The body's return value type and callbacks, as C declares them.
pub type Entry = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
pub type EnvDrop = unsafe extern "C" fn(*mut c_void);
pub type DeferFn = unsafe extern "C" fn(*mut c_void);

/// Values of `Slot::awaiter`, the await handshake. The high half carries
/// the frame's generation so a late writer cannot touch a reused slot;
/// a coroutine awaiter is stored as its token (bit 31 set), never confused
/// with these markers.
pub mod awaiter {
    pub const EMPTY: u64 = 0;
    pub const DONE: u64 = 1;
    pub const THREAD: u64 = 2;
    pub fn mark(gen: u32, what: u64) -> u64 {
        ((gen as u64) << 32) | what
    }
}

/// A deferred cleanup; `on_error_only` marks `coro_errdefer`.
#[derive(Clone, Copy)]
pub struct Defer {
    pub f: DeferFn,
    pub arg: *mut c_void,
    pub on_error_only: bool,
}

/// What a sync object gave a coroutine waiting on it, written by the
/// waker, which owns `EXEC` once it consumed the wait's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Given {
    /// Nothing (yet): the wait ended by its deadline or a cancellation.
    Nothing,
    /// The lock, the signal, the item, or the room for the item.
    Granted,
    /// The channel was closed.
    Closed,
    /// Woken to try again (the park found the wait's object ready but
    /// could not finish the hand-off).
    Retry,
}

/// Set in `Body::locks` of a foreign frame (`coro_spawn_frame`), so that
/// its suspension points take the lock check's cold path, where a foreign
/// frame parks (`context::foreign`): a stackful body pays nothing for it.
pub const FOREIGN_FRAME: u32 = 1 << 30;

/// The count of noted locks in `Body::locks`, below its flags.
pub const LOCK_COUNT: u32 = !(CHECK_LOCKS | FOREIGN_FRAME);

/// The names of the innermost noted locks a coroutine holds (CP.52), for
/// its reports and `coro_lock_note_name`: the last `DEPTH` acquired and
/// not released. Deeper ones, and a release that names no held lock, are
/// only counted (in `Body::locks`); a name is never kept past its release,
/// since the caller may free it then.
pub struct LockNames {
    names: [*const c_char; LockNames::DEPTH],
    /// How many of `names` are held (the innermost last).
    len: usize,
}

impl LockNames {
    const DEPTH: usize = 4;

    const fn new() -> LockNames {
        LockNames {
            names: [ptr::null(); LockNames::DEPTH],
            len: 0,
        }
    }

    /// `what` was acquired on top of `held` others. It is named only if
    /// every lock below it is (a count of 0 starts afresh: a frame may
    /// have ended holding some).
    pub fn acquired(&mut self, what: *const c_char, held: u32) {
        if held == 0 {
            self.len = 0;
        }
        if held as usize == self.len && self.len < Self::DEPTH {
            self.names[self.len] = what;
            self.len += 1;
        }
    }

    /// `what` was released, leaving `held` held. With every held lock
    /// named, its name goes (the innermost if `what` names none of them);
    /// with deeper ones unnamed, a name it matches may be either, so all
    /// are forgotten: a name is never kept past its lock's release.
    pub fn released(&mut self, what: *const c_char, held: u32) {
        let named = &self.names[..self.len];
        if held as usize + 1 == self.len {
            if let Some(i) = named.iter().rposition(|&n| n == what) {
                self.names.copy_within(i + 1..self.len, i);
            }
            self.len -= 1;
        } else if named.contains(&what) {
            self.len = 0;
        }
        if held == 0 {
            self.len = 0;
        }
    }

    /// The innermost held lock's name, with `held` noted locks held (the
    /// count is the truth: names past a frame's end are not cleared);
    /// null if none, or if it is deeper than the names kept.
    pub fn innermost(&self, held: u32) -> *const c_char {
        if held == 0 || held as usize != self.len {
            return ptr::null();
        }
        self.names[self.len - 1]
    }
}

/// What a foreign frame's host left for its worker when its resume
/// returned after a wait began (`context::foreign`).
#[derive(Clone, Copy)]
pub enum ForeignPark {
    /// `coro_yield`: to the back of the queue.
    Yield,
    /// Park as this says (every other wait).
    Park(crate::context::Suspension),
}

/// `Body::drained` when no read came up short: generations have 24 bits,
/// so no key reaches it.
pub const NOT_DRAINED: u64 = u64::MAX;

/// Memory a host got from `coro_frame_alloc` and gave back while a frame
/// ended: released when the frame is freed (`context::foreign`). The
/// block's header: 16 bytes, so what follows keeps malloc's alignment.
#[repr(C, align(16))]
pub struct FrameMem {
    pub next: *mut FrameMem,
}

/// What only the `EXEC` owner reads or writes.
pub struct Body {
    /// The frame's runtime; null while the slot is free. Not counted: a
    /// runtime outlives its frames, because shutdown frees every one of
    /// them before it returns and before the runtime can be dropped.
    pub rt: *const Runtime,
    /// Spawned with `CORO_SPAWN_MIGRATABLE`.
    pub migratable: bool,
    /// The frame's entry is on the stack: called and not yet returned.
    /// Set and cleared by the coroutine around the call (`Context::new`).
    /// Before and after, the coroutine waits at the top of its loop for
    /// the next frame, so the slot can keep it (`Local::keep_warm`).
    pub in_entry: bool,
    /// What the coroutine calls with `env` (set at spawn).
    pub entry: Option<Entry>,
    pub env: *mut c_void,
    /// The frame's copy of the spawn environment (16-byte aligned).
    pub env_heap: Vec<u128>,
    pub env_drop: Option<EnvDrop>,
    pub defers: Vec<Defer>,
    /// What a sync object's waker gave the frame (`Given`), and the
    /// buffer of the item it sends or receives.
    pub given: Given,
    pub sync_buf: *mut u8,
    /// The poller key of a sync wait's deadline timer (`NO_TIMER`: none),
    /// on the worker its `Wait::Sync` names.
    pub sync_timer: u64,
    /// The mutex a `coro_cond_wait` in progress takes back before it
    /// returns: it may not be freed until then, nor before a body
    /// abandoned in that wait has ended (`sync::Mutex::unbind`).
    pub relock: *const crate::sync::Mutex,
    /// Blocking locks noted held (CP.52), and the name of the last one.
    /// In check mode `trace::CHECK_LOCKS` is set too, for good: every
    /// suspension point then takes the lock check's cold path, which
    /// captures the backtrace (`trace.rs`) and counts below the bit.
    /// `FOREIGN_FRAME` marks a foreign frame; `LOCK_COUNT` is the count.
    pub locks: u32,
    pub lock_names: LockNames,
    /// A foreign frame: the wait its host began in the resume that is
    /// running or just returned (`None`: none began).
    pub foreign_park: Option<ForeignPark>,
    /// What the call that began a foreign frame's last wait answers, once
    /// the wait's second half ran, until `coro_frame_resumed` takes it.
    pub answer: Option<crate::error::Result<*mut c_void>>,
    /// Frame memory given back while the frame ended, freed with it.
    pub frame_mem: *mut FrameMem,
    /// The context of the thread a foreign frame's resume runs on, set
    /// by the worker around it: where a wait it begins hides the frame,
    /// without a thread-local lookup (`context::foreign::begin`).
    pub foreign_ctx: *const crate::context::ThreadCtx,
    /// The descriptor whose last kept read by this coroutine came up
    /// short, with the frame's generation (`coro::blocking_call_point`):
    /// its next read waits before it tries (`io`).
    pub drained: u64,
}

impl Body {
    /// The frame's runtime (see `rt`).
    pub fn runtime(&self) -> Option<&'static Runtime> {
        // SAFETY: non-null only while the frame lives, and a runtime
        // outlives its frames (see `rt`).
        unsafe { self.rt.as_ref() }
    }

    const fn new(check: bool) -> Body {
        Body {
            rt: ptr::null(),
            migratable: false,
            in_entry: false,
            entry: None,
            env: ptr::null_mut(),
            env_heap: Vec::new(),
            env_drop: None,
            defers: Vec::new(),
            given: Given::Nothing,
            sync_buf: ptr::null_mut(),
            relock: ptr::null(),
            sync_timer: crate::frame::wait::NO_TIMER,
            locks: if check { CHECK_LOCKS } else { 0 },
            lock_names: LockNames::new(),
            foreign_park: None,
            answer: None,
            frame_mem: ptr::null_mut(),
            foreign_ctx: ptr::null(),
            drained: NOT_DRAINED,
        }
    }
}

/// One frame's place in the table. `repr(C)` keeps the words other
/// threads write (the state, the inbox link) on the first cache line, and
/// the alignment keeps each slot on lines of its own: a resume from
/// another worker then moves one line of the frame, not two or three, and
/// nothing of its neighbour (two-worker ping-pong: 433 -> 302 ns per round
/// trip, with the padded inboxes; 32 bytes more per frame).
#[repr(C, align(64))]
pub struct Slot {
    pub state: State,
    /// The next frame (index + 1; 0: none) in the worker inbox this frame
    /// waits in (`sched/inbox.rs`). Written by the pusher, which owns
    /// `EXEC`, before the push publishes it; read by the worker that took
    /// the inbox. A frame is in one inbox at a time: only `EXEC` queues it.
    pub link: crate::loom::AtomicU32,
    /// This slot's place in the table, so a queue can hold the slot itself.
    index: u32,
    /// The await handshake; see `awaiter`.
    pub awaiter: AtomicU64,
    /// The entry's return value, written before `DONE` is published.
    pub result: AtomicPtr<c_void>,
    /// Id of the runtime the frame belongs to; 0 while the slot is free.
    pub owner: AtomicU64,
    /// The worker the frame runs on: where it was spawned, unless
    /// `migratable` moved it since (`sched::harness::schedule_owned_from`).
    /// Written and read by the `EXEC` owner; an atomic (plain moves) so
    /// that `coro_dump` may read it from any thread, and on the first
    /// cache line, which a resume from another thread moves anyway.
    worker: AtomicUsize,
    /// What the frame waits on while it is parked in a library wait
    /// (`wait.rs`): the `EXEC` owner writes it, anyone may read it.
    pub wait: WaitCell,
    /// The return addresses of its last suspension, in check mode
    /// (`trace.rs`): null until the first capture, then a `Trace` that
    /// lives as long as the slot.
    pub trace: AtomicPtr<Trace>,
    body: UnsafeCell<Body>,
    /// The coroutine and its stack. Apart from `body` because the worker
    /// holds it across a resume while the body itself uses `body`.
    context: UnsafeCell<Option<Context>>,
    /// Where a thread blocked in `coro_await` on this frame sleeps
    /// (`blocker.rs`); the completer wakes it after it swaps
    /// `awaiter::THREAD` out.
    pub blocker: Blocker,
    /// The running body's corosensei yielder, set by the body on its first
    /// run and read by the body's library calls (both `EXEC` owners).
    /// Null for a foreign frame, which has no stack to switch out of.
    yielder: Cell<*const ()>,
}

// SAFETY: `body` is only touched by the thread that owns `EXEC` in the
// state word (rule 3 in frame/mod.rs), and what `blocker` holds is handed
// over through the `awaiter` word with release/acquire ordering.
unsafe impl Sync for Slot {}

impl Slot {
    /// The slot at `index` of the table; `check`: `util::checking()`.
    pub fn new(index: u32, check: bool) -> Slot {
        Slot {
            state: State::new(),
            awaiter: AtomicU64::new(0),
            result: AtomicPtr::new(ptr::null_mut()),
            owner: AtomicU64::new(0),
            worker: AtomicUsize::new(0),
            wait: WaitCell::new(),
            trace: AtomicPtr::new(ptr::null_mut()),
            body: UnsafeCell::new(Body::new(check)),
            context: UnsafeCell::new(None),
            blocker: Blocker::new(),
            yielder: Cell::new(ptr::null()),
            index,
            link: crate::loom::AtomicU32::new(0),
        }
    }

    /// This slot's index in the table.
    #[inline]
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// The worker the frame runs on (see `worker`).
    #[inline(always)]
    pub fn worker(&self) -> usize {
        self.worker.load(Relaxed)
    }

    /// `worker`, read by the frame's `EXEC` owner: a plain read, which the
    /// compiler folds into a compare (an atomic load it keeps apart: one
    /// instruction more on every resume by the frame's own worker).
    ///
    /// # Safety
    /// The caller owns `EXEC`.
    #[inline(always)]
    pub unsafe fn owned_worker(&self) -> usize {
        // SAFETY: only the `EXEC` owner, the caller, writes the word; the
        // other threads only read it, and reads do not race with reads.
        unsafe { self.worker.as_ptr().read() }
    }

    /// Pins the frame to `worker`. `EXEC` owner (or spawner) only.
    #[inline(always)]
    pub fn set_worker(&self, worker: usize) {
        self.worker.store(worker, Relaxed);
    }

    /// The promise of the slot's current generation: a live frame's id.
    pub fn promise(&self) -> Promise {
        Promise::new(self.index(), self.state.load().gen())
    }

    /// The body.
    ///
    /// # Safety
    /// The caller owns `EXEC` (or holds the free slot it is initialising),
    /// and no other reference from this call is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn body(&self) -> &mut Body {
        // SAFETY: exclusive by the caller's contract.
        unsafe { &mut *self.body.get() }
    }

    /// The body's yielder (context module only; `EXEC` owner only).
    pub fn yielder(&self) -> *const () {
        self.yielder.get()
    }

    pub fn set_yielder(&self, y: *const ()) {
        self.yielder.set(y);
    }

    /// The coroutine.
    ///
    /// # Safety
    /// The caller owns `EXEC`, is not the body itself, and no other
    /// reference from this call is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn context(&self) -> &mut Option<Context> {
        // SAFETY: exclusive by the caller's contract.
        unsafe { &mut *self.context.get() }
    }

    /// Publishes the calling thread as the awaiter of generation `gen`.
    /// False: the frame completed first (or is gone); do not park.
    ///
    /// # Safety
    /// The caller holds the frame's `AWAITING` claim.
    pub unsafe fn publish_thread_awaiter(&self, gen: u32) -> bool {
        // SAFETY: the caller holds the AWAITING claim; the completer
        // reads only after seeing THREAD below.
        unsafe { self.blocker.prepare() };
        let empty = awaiter::mark(gen, awaiter::EMPTY);
        let thread = awaiter::mark(gen, awaiter::THREAD);
        crate::sanitize::release(&self.awaiter);
        if self
            .awaiter
            .compare_exchange(empty, thread, AcqRel, Acquire)
            .is_ok()
        {
            return true;
        }
        crate::sanitize::acquire(&self.awaiter);
        // SAFETY: as above; THREAD was never published.
        unsafe { self.blocker.unprepare() };
        false
    }
}

#[cfg(test)]
mod lock_names_tests {
    use super::LockNames;
    use core::ffi::c_char;

    fn name(s: &'static [u8]) -> *const c_char {
        s.as_ptr().cast()
    }

    /// A released name is never given out again, nested or not, and an
    /// outer lock's name comes back when the inner one goes.
    #[test]
    fn names_follow_the_held_locks() {
        let (a, b, c) = (name(b"a\0"), name(b"b\0"), name(b"c\0"));
        let mut n = LockNames::new();
        assert!(n.innermost(0).is_null());
        n.acquired(a, 0);
        n.acquired(b, 1);
        assert_eq!(n.innermost(2), b);
        n.released(b, 1);
        assert_eq!(n.innermost(1), a);
        // Out of order: the outer one first.
        n.acquired(c, 1);
        n.released(a, 1);
        assert_eq!(n.innermost(1), c);
        n.released(c, 0);
        assert!(n.innermost(0).is_null());
        // Deeper than the names kept: unknown, never a stale one.
        let names: Vec<_> = [b"0\0", b"1\0", b"2\0", b"3\0", b"4\0", b"5\0"]
            .iter()
            .map(|s| name(*s))
            .collect();
        for (held, &w) in names.iter().enumerate() {
            n.acquired(w, held as u32);
        }
        assert!(n.innermost(6).is_null());
        n.released(names[5], 5);
        n.released(names[4], 4);
        assert_eq!(n.innermost(4), names[3]);
        n.released(names[3], 3);
        assert_eq!(n.innermost(3), names[2]);
        // The same name for nested locks, deeper than the names kept: a
        // release could be any of them, so none is named any more.
        for held in 0..6 {
            n.acquired(a, held);
        }
        n.released(a, 5);
        assert!(n.innermost(5).is_null());
        n.released(a, 4);
        assert!(n.innermost(4).is_null());
        // A name left by a frame that ended holding it is not given out
        // once the count says nothing is held.
        assert!(n.innermost(0).is_null());
    }
}

// loom's atomics are larger than std's.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::Slot;
    use core::mem::{align_of, offset_of, size_of};

    /// What a hand-off between threads touches (the state word, the inbox
    /// link, the index) shares one cache line, and no line holds two
    /// slots, so workers running neighbouring frames do not share lines.
    #[test]
    fn cross_thread_words_share_one_line_and_slots_none() {
        assert_eq!(align_of::<Slot>(), 64);
        assert_eq!(size_of::<Slot>() % 64, 0);
        for end in [
            offset_of!(Slot, state) + 8,
            offset_of!(Slot, link) + 4,
            offset_of!(Slot, index) + 4,
        ] {
            assert!(end <= 64, "a hand-off word ends at byte {end}");
        }
    }
}
