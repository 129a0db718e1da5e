//! One worker thread: run the local queue, refill it from the inbox,
//! spin a little, then sleep when both stay empty.

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use std::sync::atomic::Ordering::*;

use super::overflow::Overflow;
use super::queue::RunQueue;
use super::{harness, Inbox, Runtime};
use crate::context::{thread_ctx, ThreadCtx};
use crate::frame::slot::Slot;
use crate::frame::{table, Token};
use crate::poll::{Poller, Polling};
use crate::stack::{AltStack, Stack};

/// After this many local runs the worker looks at its inbox even if the
/// local queue is not empty, so remote wake-ups are not starved.
const INBOX_INTERVAL: u32 = 61;

/// How many times an idle worker looks for work, giving its CPU away
/// between looks, before it sleeps in `epoll_wait`. A hand-off from another
/// thread or an event that lands meanwhile costs no wake-up; on a busy
/// machine the threads that would give it work run in its place. (A
/// pause-loop spin was faster on an idle machine but burnt the other
/// threads' CPU: see docs/bench/HISTORY.md.)
const SPIN_LOOKS: u32 = 64;

/// How long an idle worker on a quiet CPU looks at its inbox with a pause
/// between looks, before the looks above: about what one `sched_yield`
/// costs here (0.5-1.2 µs), enough for a ping-pong partner's turn. Timed,
/// not counted: a `pause` lasts from a few cycles to about 140 depending
/// on the CPU (16.7 and 25-30 ns on this VM's hosts a week apart, and 20
/// of them stopped covering the partner's turn; docs/bench/HISTORY.md).
const SPIN_WINDOW_NS: i64 = 1_000;

/// Looks between two readings of the clock in the window above (a
/// reading takes about 34 ns here, eight pauses about 130).
const LOOKS_PER_CLOCK: u32 = 8;

/// A `sched_yield` that returns within this found no other thread ready
/// on this CPU (measured: ~0.5-1.2 µs here; a real switch takes longer).
/// Under a CPU hog, pausing even 100 times made the ping-pong 2-3x slower;
/// gated by this, it stayed as fast as without pauses.
const QUIET_YIELD_NS: i64 = 2_000;

/// Idle stacks a worker keeps for its next spawns, besides the pool's.
pub(super) const STACK_CACHE: usize = 16;

/// How many awaited children in a row `run_awaited_now` may run before it
/// lets one go through the queue: a coroutine that spawns and awaits in a
/// loop then still gives its worker back to the epoll and the inbox.
const AWAITED_RUNS: u32 = 61;

/// How many other workers a busy worker looks at for an idle one, at each
/// look at its inbox, when it has migratable frames to share.
const SHARE_PROBES: usize = 4;

/// How far from the back of its queue a busy worker looks for a
/// migratable frame to share: the newest are the least likely to run soon.
const SHARE_SCAN: usize = 8;

/// The worker's own state, on its thread's stack.
pub(crate) struct Local {
    rt: *const Runtime,
    index: usize,
    pub(super) ctx: &'static ThreadCtx,
    /// Frames this worker owns the `EXEC` of, in run order (their slots,
    /// which are never freed, so no table lookup per run). Only this
    /// thread touches it, and never while holding a reference into it.
    queue: UnsafeCell<RunQueue<&'static Slot>>,
    /// Frames queued while `queue` was full and could not grow (no
    /// memory). They run when the queue is empty, and
    /// `refill_from_overflow` moves them back.
    overflow: Overflow,
    /// Free frame slots and idle stacks, so that a spawn and a free on this
    /// worker take no lock (the table and the pool refill and drain them).
    /// Like `queue`, touched only by this thread, through the methods
    /// below, none of which calls back into this `Local`.
    slots: UnsafeCell<table::SlotCache>,
    stacks: UnsafeCell<Vec<Stack>>,
    /// Awaited children `run_awaited_now` may still run before it declines
    /// one.
    awaited_runs: Cell<u32>,
    /// Runs left before the worker looks at its inbox and its epoll
    /// (`INBOX_INTERVAL`). In memory, not a register the switch to a
    /// coroutine would make the loop save and reload.
    until_inbox: Cell<u32>,
    /// This worker's inbox in `rt`, found once.
    inbox: *const Inbox,
}

impl Local {
    /// Queues a frame this worker owns the `EXEC` of.
    #[inline(always)]
    pub(crate) fn push(&self, slot: &'static Slot) {
        // SAFETY: see `queue`: no other reference into it is alive.
        if let Err(slot) = unsafe { &mut *self.queue.get() }.push(slot) {
            self.overflow.push(slot);
        }
    }

    fn pop(&self) -> Option<&'static Slot> {
        // SAFETY: as in `push`.
        match unsafe { &mut *self.queue.get() }.pop() {
            Some(slot) => Some(slot),
            None => self.overflow.pop(),
        }
    }

    /// Moves overflowed frames back to the queue while it takes them. If
    /// it is full and still cannot grow, the first of them trades places
    /// with the oldest queued frame, so that while memory is short every
    /// frame still gets its turn (the queue's frames could yield forever).
    #[cold]
    #[inline(never)]
    fn refill_from_overflow(&self) {
        // SAFETY: as in `push`.
        let queue = unsafe { &mut *self.queue.get() };
        while let Some(slot) = self.overflow.pop() {
            if let Err(slot) = queue.push(slot) {
                let oldest = queue.rotate(slot);
                self.overflow.push(oldest);
                return;
            }
        }
    }

    /// Queues `yielded` behind the others and takes the next frame.
    fn rotate(&self, yielded: &'static Slot) -> &'static Slot {
        // SAFETY: as in `push`.
        unsafe { &mut *self.queue.get() }.rotate(yielded)
    }

    pub(crate) fn is_idle(&self) -> bool {
        // SAFETY: as in `push`.
        unsafe { &*self.queue.get() }.is_empty() && self.overflow.is_empty()
    }

    /// Hands migratable frames to idle workers, one each, while at least
    /// two frames stay queued here: DESIGN 3's "stolen by idle workers",
    /// done by the busy worker, so no other thread ever touches this
    /// queue. A ping-pong pair, which never has two frames queued, stays
    /// together.
    fn share_migratable(&self) {
        // SAFETY: `run` holds the runtime's Arc while this Local lives.
        let rt = unsafe { &*self.rt };
        let workers = rt.inboxes.len();
        for k in 1..=SHARE_PROBES.min(workers - 1) {
            // SAFETY: as in `push`.
            let queue = unsafe { &mut *self.queue.get() };
            // Looked at first: it is local, the idle flags are not.
            if queue.len() < 2 {
                return;
            }
            let to = (self.index + k) % workers;
            if !rt.inboxes[to].idle.load(Relaxed) {
                continue;
            }
            // SAFETY: a queued frame's EXEC is this worker's (rule 3).
            let Some(slot) =
                queue.take_newest_where(SHARE_SCAN, |s| unsafe { s.body() }.migratable)
            else {
                return;
            };
            // The frame is not on any queue now, and its EXEC is ours.
            slot.set_worker(to);
            if rt.push_remote(to, slot).is_err() {
                // Shutdown: keep it here, where it was.
                slot.set_worker(self.index);
                self.push(slot);
                return;
            }
        }
    }

    /// Moves the frames pushed to `inbox` to the local queue, oldest
    /// first; `false` if there were none.
    fn take_inbox(&self, inbox: &Inbox) -> bool {
        let newest = inbox.head.take();
        if newest == 0 {
            return false;
        }
        let slot = table::slot(newest as usize - 1).expect("queued frame exists");
        let mut next = slot.link.load(Relaxed);
        if next == 0 {
            // One frame, as in most hand-offs: no order to restore.
            self.push(slot);
            return true;
        }
        // Reverse the chain in place (the links are ours now), so that the
        // oldest goes first with no scratch memory.
        slot.link.store(0, Relaxed);
        let mut oldest = newest;
        while next != 0 {
            let slot = table::slot(next as usize - 1).expect("queued frame exists");
            let before = slot.link.load(Relaxed);
            slot.link.store(oldest, Relaxed);
            oldest = next;
            next = before;
        }
        while oldest != 0 {
            let slot = table::slot(oldest as usize - 1).expect("queued frame exists");
            // Read before the push: an overflow push rewrites the link.
            oldest = slot.link.load(Relaxed);
            self.push(slot);
        }
        true
    }

    /// Runs `child` at once, nested in the coroutine that awaits it, if it
    /// is the only frame this worker has queued and none waits in its
    /// inbox: the worker would run it next anyway, once the awaiter had
    /// parked. This saves the awaiter's switch out and back, its park and
    /// its wake-up (spawn + await: 904 -> 662 instructions). The child's
    /// switches come back here, and what follows them is what the worker
    /// does after a switch (`harness::run`), with no coroutine current.
    /// The caller is a coroutine body on this worker's thread, not
    /// cancelled (a cancelled awaiter parks, and cancels the child).
    ///
    /// `gen` is the generation of the awaiter's promise. If the child
    /// returns, its end also ends the await (`State::complete_awaited`)
    /// and the answer comes back here; otherwise the await goes on as if
    /// the awaiter had found the child parked or finished.
    pub(crate) fn run_awaited_now(
        &self,
        child: &'static Slot,
        gen: u32,
    ) -> Option<harness::AwaitedEnd> {
        let left = self.awaited_runs.get();
        if left == 0 {
            self.awaited_runs.set(AWAITED_RUNS);
            return None;
        }
        // SAFETY: the inbox lives in the runtime, which `run` holds while
        // this Local lives.
        if unsafe { &*self.inbox }.head.has_frames() {
            return None;
        }
        // SAFETY: as in `push`; the worker loop below us holds no
        // reference into the queue while a body runs.
        let queue = unsafe { &mut *self.queue.get() };
        if queue.len() != 1 || queue.take_last_if(|s| ptr::eq(s, child)).is_none() {
            return None;
        }
        // SAFETY: taken off the queue, so we own its EXEC.
        if unsafe { child.context() }.is_none() {
            return self.put_back(child);
        }
        self.awaited_runs.set(left - 1);
        let awaiter = self.ctx.hide();
        let mut nested = harness::Nested { gen, end: None };
        if let Some(yielded) = harness::run::<true>(self, child, Some(&mut nested)) {
            self.push(yielded);
        }
        self.ctx.restore(awaiter);
        nested.end
    }

    /// `run_awaited_now` of a foreign frame, which would run on the
    /// awaiter's stack, not sized for it: it goes back to run from the
    /// queue. Out of line: the nested run of a stackful child keeps its
    /// switch inlined (spawn + await took 27 instructions more).
    #[cold]
    #[inline(never)]
    fn put_back(&self, child: &'static Slot) -> Option<harness::AwaitedEnd> {
        self.push(child);
        None
    }

    /// This worker's place in its runtime.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Whether this worker belongs to `rt`.
    pub(crate) fn serves(&self, rt: &Runtime) -> bool {
        ptr::eq(self.rt, rt)
    }

    /// A free frame slot, from the cache or the table.
    pub(crate) fn alloc_slot(&self) -> crate::error::Result<&'static Slot> {
        // SAFETY: see `slots`: no other reference into it is alive.
        table::alloc(Some(unsafe { &mut *self.slots.get() }))
    }

    /// Puts back the slot of a frame this thread freed.
    pub(crate) fn free_slot(&self, slot: &'static Slot) {
        // SAFETY: as in `alloc_slot`.
        table::free(slot, Some(unsafe { &mut *self.slots.get() }))
    }

    /// A free slot that kept its coroutine and stack (`keep_warm`).
    #[inline(always)]
    pub(crate) fn take_warm(&self) -> Option<&'static Slot> {
        // SAFETY: as in `alloc_slot`.
        unsafe { &mut *self.slots.get() }.alloc_warm()
    }

    /// Whether `keep_warm` would take another slot.
    #[inline(always)]
    pub(crate) fn has_warm_room(&self) -> bool {
        // SAFETY: as in `alloc_slot`.
        unsafe { &*self.slots.get() }.has_warm_room()
    }

    /// Puts back the slot of a frame of this worker's runtime that this
    /// thread freed, with its coroutine waiting for the next entry: a
    /// spawn here then builds no coroutine and takes no stack. The caller
    /// saw `has_warm_room`.
    #[inline(always)]
    pub(crate) fn keep_warm(&self, slot: &'static Slot) {
        // SAFETY: as in `alloc_slot`.
        unsafe { &mut *self.slots.get() }.free_warm(slot)
    }

    /// A stack of this worker's runtime, from the cache or the pool.
    #[inline(always)]
    pub(crate) fn take_stack(&self) -> crate::error::Result<Stack> {
        // SAFETY: as in `alloc_slot`.
        match unsafe { &mut *self.stacks.get() }.pop() {
            Some(s) => Ok(s),
            // SAFETY: `run` holds the runtime's Arc while this Local lives.
            None => unsafe { &*self.rt }.stacks.get(),
        }
    }

    /// Keeps a stack of this worker's runtime, or gives it to the pool.
    pub(crate) fn give_stack(&self, stack: Stack) {
        // SAFETY: as in `alloc_slot`.
        let cache = unsafe { &mut *self.stacks.get() };
        if cache.len() < STACK_CACHE {
            cache.push(stack);
        } else {
            // SAFETY: as in take_stack.
            unsafe { &*self.rt }.stacks.put(stack);
        }
    }

    /// This worker's poller.
    pub(crate) fn poller(&self) -> &Poller {
        // SAFETY: as in take_stack.
        &unsafe { &*self.rt }.pollers[self.index]
    }

    /// Looks for work until some arrives or it gives up: first, if the CPU
    /// was quiet (`quiet`), for `SPIN_WINDOW_NS` at the inbox with a pause
    /// between looks; then `SPIN_LOOKS` times giving the CPU away between
    /// looks, at the inbox and, with waits in progress, at the epoll
    /// (timeout 0). Work that lands meanwhile costs no wake-up, and a thread
    /// woken from `epoll_wait` takes tens of microseconds on these VMs (the
    /// one-connection echo round trip took 68-92 µs when a worker with
    /// waits slept at once, 12.5 µs with these looks). Each give-away is
    /// timed: one that came back within `QUIET_YIELD_NS` found no other
    /// thread wanting this CPU, so the next idle spell may pause-spin
    /// without taking time from anyone; a slow one turns that off.
    fn look_for_work(&self, polling: &mut Polling, inbox: &Inbox, quiet: &mut bool) {
        if *quiet {
            let start = crate::poll::now();
            loop {
                for _ in 0..LOOKS_PER_CLOCK {
                    if inbox.head.has_frames() {
                        return;
                    }
                    core::hint::spin_loop();
                }
                if crate::poll::now() - start >= SPIN_WINDOW_NS {
                    break;
                }
            }
        }
        for _ in 0..SPIN_LOOKS {
            if inbox.head.has_frames() {
                return;
            }
            let start = crate::poll::now();
            std::thread::yield_now();
            *quiet = crate::poll::now() - start < QUIET_YIELD_NS;
            // After the give-away: the caller has just polled.
            if self.poller().has_waits() {
                self.poll_io(polling, false);
                if !self.is_idle() {
                    return;
                }
            }
        }
    }

    /// Polls this worker's epoll (`block`: until something happens) and
    /// queues the coroutines whose waits ended.
    fn poll_io(&self, polling: &mut Polling, block: bool) {
        self.poller().turn(polling, block);
        for token in polling.ready.drain(..) {
            // A cancellation may have consumed the token first: ESTALE.
            let _ = crate::coro::resume_from(Token(token), Some(self));
        }
    }
}

/// The worker the calling thread is, if any.
pub(crate) fn local() -> Option<&'static Local> {
    // SAFETY: see local_of; callers never keep the reference beyond the
    // library call they make on this thread.
    local_of(thread_ctx()).map(|l| unsafe { &*(l as *const Local) })
}

/// `local` with the thread-local lookup inlined, under the rules of
/// `context::thread_ctx_before_switch` (`coro_spawn`).
#[inline(always)]
pub(crate) fn local_before_switch() -> Option<&'static Local> {
    // SAFETY: as in `local`.
    local_of(crate::context::thread_ctx_before_switch()).map(|l| unsafe { &*(l as *const Local) })
}

pub(crate) fn local_of(ctx: &ThreadCtx) -> Option<&Local> {
    // SAFETY: the worker pointer is set by `run` to the `Local` on its own
    // stack and cleared before `run` returns; `ThreadCtx` is per thread.
    unsafe { ctx.worker().cast::<Local>().as_ref() }
}

/// Whether the calling thread is one of any runtime's workers.
pub(crate) fn on_worker() -> bool {
    !thread_ctx().worker().is_null()
}

/// The worker thread's body, with what `Runtime::new` made for it: its
/// poller's buffers, its slot cache, room for `STACK_CACHE` stacks (never
/// more: `give_stack`, so no growth later). Allocates nothing itself.
pub(super) fn run(start: Box<super::WorkerStart>) {
    // Moved out of the box onto this frame: passed by value, the parts
    // stayed in the caller's frame behind a pointer the loop below kept
    // in a register (a yield round trip took three instructions more).
    let super::WorkerStart {
        rt,
        index,
        mut polling,
        slots,
        stacks,
    } = *start;
    // SAFETY: the runtime lives until `stop_workers` joined this thread.
    let rt = unsafe { &*rt };
    // Without an alternate stack a coroutine's overflow could not be reported.
    let _alt = AltStack::install().ok();
    let ctx = thread_ctx();
    let inbox: &Inbox = &rt.inboxes[index];
    let mut me = Local {
        rt,
        index,
        ctx,
        queue: UnsafeCell::new(RunQueue::new()),
        overflow: Overflow::new(),
        slots: UnsafeCell::new(slots),
        stacks: UnsafeCell::new(stacks),
        awaited_runs: Cell::new(AWAITED_RUNS),
        until_inbox: Cell::new(INBOX_INTERVAL),
        inbox,
    };
    ctx.set_worker((&me as *const Local).cast());
    rt.started.fetch_add(1, Release);
    // Whether the last give-away found this CPU quiet (`look_for_work`).
    let mut quiet = false;
    // A frame that just yielded, not yet queued again: the next turn
    // queues it and takes the next frame in one step (`rotate`).
    let mut yielded = None;
    loop {
        let left = me.until_inbox.get() - 1;
        me.until_inbox.set(left);
        if left != 0 {
            let next = match yielded.take() {
                Some(y) => Some(me.rotate(y)),
                None => me.pop(),
            };
            if let Some(slot) = next {
                yielded = harness::run::<false>(&me, slot, None);
                continue;
            }
        }
        if let Some(y) = yielded.take() {
            me.push(y);
        }
        if !me.overflow.is_empty() {
            me.refill_from_overflow();
        }
        me.until_inbox.set(INBOX_INTERVAL);
        if !me.is_idle() && rt.inboxes.len() > 1 {
            me.share_migratable();
        }
        // Between batches: descriptors that became ready and deadlines
        // that passed, without blocking.
        if me.poller().has_waits() {
            me.poll_io(&mut polling, false);
        }
        let idle = me.is_idle();
        if idle {
            inbox.idle.store(true, Relaxed);
            me.look_for_work(&mut polling, inbox, &mut quiet);
        }
        loop {
            if me.take_inbox(inbox) || !me.is_idle() {
                if idle {
                    inbox.idle.store(false, Relaxed);
                }
                break;
            }
            // Closed and empty (a push that came first is run first).
            if inbox.head.closed_and_empty() {
                ctx.set_worker(ptr::null());
                // The slot cache gives its slots back when `me` drops;
                // the stacks go back to the pool first.
                me.slots.get_mut().drain_warm(|slot| {
                    // SAFETY: a warm slot is free, and this worker's.
                    if let Some(ctx) = unsafe { slot.context() }.take() {
                        // Warm: resting at the top of its loop.
                        rt.stacks.put(ctx.into_stack(true));
                    }
                });
                for stack in me.stacks.get_mut().drain(..) {
                    rt.stacks.put(stack);
                }
                return;
            }
            // Sleep in epoll_wait until an event, a deadline, or a push to
            // the inbox: the push that finds SLEEPING set wakes us. Only
            // from an empty, open inbox; otherwise look again.
            if inbox.head.try_sleep() {
                me.poll_io(&mut polling, true);
                inbox.head.woke();
            }
        }
    }
}
