//! The runtime: N workers, each with a local run queue that only it
//! touches and an inbox any thread may push to.
//!
//! A frame is pinned to the worker chosen at spawn (round robin), because
//! C code caches thread-local addresses (errno) across calls: every
//! resume of the frame, from any thread, queues it on that worker.
//!
//! Shutdown (`Runtime::shutdown`) sweeps the frame table for this
//! runtime's frames until none is left: it cancels each (rule 4 in
//! `frame/mod.rs`), lets the workers finish the running ones, frees the
//! finished ones even if references remain (they turn stale), then stops
//! and joins the workers.

mod harness;
mod inbox;
mod overflow;
mod queue;
mod worker;

pub(crate) use harness::{finalize, free, free_with, schedule_owned, schedule_owned_from, Outcome};
pub(crate) use worker::{local, local_before_switch, local_of, on_worker, Local};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::frame::slot::Slot;
use crate::frame::state::Consume;
use crate::frame::table;
use crate::poll::Poller;
use crate::sanitize::Mutex;
use crate::stack::StackPool;
use inbox::Push;

/// Most workers one runtime may have.
pub const MAX_WORKERS: usize = 1024;

/// Runtime settings; zero means the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Worker threads; 0: one per available CPU.
    pub workers: usize,
    /// Usable stack bytes per coroutine; 0: `stack::DEFAULT_STACK_SIZE`.
    pub stack_size: usize,
}

/// What other threads push to one worker (`inbox.rs`).
struct Inbox {
    head: inbox::Head,
    /// The worker has nothing queued: it looks for work or sleeps. A hint
    /// for busy workers with migratable frames to share (`worker.rs`).
    idle: AtomicBool,
    /// Held by a push across its wake, and by `stop_workers` before the
    /// runtime may go: once a frame is pushed it may run, finish and let
    /// shutdown drop the runtime, whose poller the wake still needs.
    waking: Mutex<()>,
}

pub struct Runtime {
    id: u64,
    /// Padded, as the pollers are: a worker's hand-offs and its waits write
    /// its own, and a neighbour's writes on the same cache line would move
    /// it between CPUs for nothing (two-worker ping-pong: 433 -> 302 ns per
    /// round trip, with `Slot`'s layout).
    inboxes: Box<[CachePadded<Inbox>]>,
    pub(crate) stacks: StackPool,
    /// One per worker, polled by that worker (`poll` module).
    pub(crate) pollers: Box<[CachePadded<Poller>]>,
    next_worker: AtomicUsize,
    closing: AtomicBool,
    /// Workers that finished setting up (`Runtime::new` waits for all).
    pub(crate) started: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

/// The address of every runtime alive, for `for_each_runtime`. A runtime
/// takes itself out in `drop`, under this lock, before its memory goes.
static LIVE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Runs `f` on every runtime alive, from any thread (`coro_fd_forget`).
pub fn for_each_runtime(mut f: impl FnMut(&Runtime)) {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for &addr in live.iter() {
        // SAFETY: listed, so not dropped yet, and `drop` waits for this
        // lock before it goes on.
        f(unsafe { &*(addr as *const Runtime) });
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|&addr| addr != self as *const Runtime as usize);
    }
}

impl Runtime {
    /// Starts a runtime's workers.
    pub fn new(config: Config) -> Result<Arc<Runtime>> {
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > MAX_WORKERS => return Err(Error::Invalid),
            n => n,
        };
        let stacks = StackPool::new(config.stack_size)?;
        crate::stack::set_running_id(crate::context::running_id);
        crate::stack::install_overflow_handler();
        let id = NEXT_RUNTIME_ID.fetch_add(1, Relaxed);
        let pollers = (0..workers)
            .map(|_| Poller::new().map(CachePadded::new))
            .collect::<Result<Box<[_]>>>()?;
        let inboxes = (0..workers)
            .map(|_| {
                CachePadded::new(Inbox {
                    head: inbox::Head::new(),
                    idle: AtomicBool::new(false),
                    waking: Mutex::new(()),
                })
            })
            .collect();
        let rt = Arc::new(Runtime {
            id,
            inboxes,
            stacks,
            pollers,
            next_worker: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            threads: Mutex::new(Vec::with_capacity(workers)),
        });
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::as_ptr(&rt) as usize);
        for index in 0..workers {
            let worker_rt = rt.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("coframe-{index}"))
                .spawn(move || worker::run(worker_rt, index));
            match spawned {
                Ok(handle) => rt.threads.lock().unwrap().push(handle),
                Err(_) => {
                    rt.stop_workers();
                    return Err(Error::Io);
                }
            }
        }
        // Each worker sets itself up (std's thread start, its caches) with
        // allocations that abort if they fail; wait for that, so a caller
        // that exhausts memory after this returns cannot make them fail.
        while rt.started.load(Acquire) < workers {
            std::thread::yield_now();
        }
        Ok(rt)
    }

    /// This runtime's id, stored in its frames' slots.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Acquire)
    }

    /// The worker a new frame is pinned to: round robin.
    pub(crate) fn pick_worker(&self) -> usize {
        match self.inboxes.len() {
            // No choice to make: skip the shared counter's atomic add.
            1 => 0,
            n => self.next_worker.fetch_add(1, Relaxed) % n,
        }
    }

    /// Queues a frame (its `EXEC` is ours) on `worker`'s inbox, from
    /// another thread.
    ///
    /// Once pushed, the frame may run and be freed at once, and then
    /// shutdown may finish and drop the runtime: so a push touches the
    /// runtime after its compare-exchange only to wake a sleeping worker,
    /// and then under `waking`, which `stop_workers` takes before the
    /// runtime can go.
    pub(crate) fn push_remote(&self, worker: usize, slot: &'static Slot) -> Result<()> {
        let inbox = &self.inboxes[worker];
        let frame = slot.index() as u32 + 1;
        let mut waking = None;
        loop {
            match inbox.head.push(frame, &slot.link, waking.is_some()) {
                Push::Queued { wake } => {
                    if wake {
                        self.pollers[worker].wake();
                    }
                    return Ok(());
                }
                // This push may be the one to wake the worker: lock first.
                Push::NeedsLock => {
                    waking = Some(inbox.waking.lock().unwrap_or_else(|e| e.into_inner()))
                }
                Push::Closed => return Err(Error::Shutdown),
            }
        }
    }

    /// Cancels every coroutine of this runtime, runs their defers, frees
    /// their frames and joins the workers.
    pub fn shutdown(&self) -> Result<()> {
        if on_worker() {
            return Err(Error::State);
        }
        self.closing.store(true, SeqCst);
        loop {
            let mut remaining = 0usize;
            table::for_each(|slot| {
                if slot.owner.load(Acquire) != self.id {
                    return;
                }
                let gen = slot.state.load().gen();
                match slot.state.shutdown_cancel(gen) {
                    Consume::Finalize => finalize(slot, Outcome::Cancelled),
                    Consume::Schedule => schedule_owned(slot),
                    Consume::Dropped | Consume::Free => {}
                }
                if slot.state.force_free(gen) {
                    free(slot);
                } else if slot.owner.load(Acquire) == self.id {
                    remaining += 1;
                }
            });
            if remaining == 0 {
                break;
            }
            // Running frames act on the cancel at their next suspension.
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stop_workers();
        Ok(())
    }

    fn stop_workers(&self) {
        for (inbox, poller) in self.inboxes.iter().zip(self.pollers.iter()) {
            // Waits for a push's wake in progress (see `push_remote`).
            let _waking = inbox.waking.lock().unwrap_or_else(|e| e.into_inner());
            inbox.head.close();
            poller.wake();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
