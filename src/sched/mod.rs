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

mod cpus;
mod harness;
mod inbox;
mod overflow;
mod queue;
mod worker;

pub(crate) use harness::{
    finalize, free, free_with, schedule_owned, schedule_owned_from, trim_env, Outcome,
};
pub(crate) use worker::{local, local_before_switch, local_of, on_worker, Local};

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::frame::slot::Slot;
use crate::frame::state::Consume;
use crate::frame::table;
use crate::poll::{Poller, Polling};
use crate::sanitize::Mutex;
use crate::stack::StackPool;
use crate::util::{try_box, try_vec};
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
    /// The worker threads, joined by `stop_workers`.
    threads: Mutex<Vec<libc::pthread_t>>,
}

/// What a worker thread starts with, made by `Runtime::new` (where a
/// failed allocation answers `CORO_ENOMEM`) and handed to the thread,
/// which moves it out of its box onto its own frame (`worker::run`).
struct WorkerStart {
    rt: *const Runtime,
    index: usize,
    polling: Polling,
    slots: table::SlotCache,
    stacks: Vec<crate::stack::Stack>,
}

/// Stack size of a worker thread (as std's threads): coroutines run on
/// their own stacks; this one runs the worker loop, defers run on it when
/// the worker cancels, and `on_suspend` callbacks.
const WORKER_STACK: usize = 2 * 1024 * 1024;

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
    /// Starts a runtime's workers. The runtime lives in its box until
    /// `shutdown` returned and the box is dropped; its workers hold its
    /// address until then.
    ///
    /// Every allocation is made here, on the calling thread, and can fail
    /// (`NoMem`); the worker threads are started with `pthread_create`,
    /// which allocates nothing of ours, and set up with what is made here.
    /// Errors: `Invalid` (too many workers), `NoMem`, `Io` (no descriptor
    /// for a poller, or no thread).
    pub fn new(config: Config) -> Result<Box<Runtime>> {
        let workers = match config.workers {
            0 => cpus::available(),
            n if n > MAX_WORKERS => return Err(Error::Invalid),
            n => n,
        };
        let stacks = StackPool::new(config.stack_size)?;
        crate::stack::set_running_id(crate::context::running_id);
        crate::stack::install_overflow_handler();
        let id = NEXT_RUNTIME_ID.fetch_add(1, Relaxed);
        let mut pollers = try_vec(workers)?;
        let mut inboxes = try_vec(workers)?;
        let mut starts = try_vec(workers)?;
        for index in 0..workers {
            let (poller, polling) = Poller::new()?;
            pollers.push(CachePadded::new(poller));
            inboxes.push(CachePadded::new(Inbox {
                head: inbox::Head::new(),
                idle: AtomicBool::new(false),
                waking: Mutex::new(()),
            }));
            starts.push(try_box(WorkerStart {
                rt: ptr::null(),
                index,
                polling,
                slots: table::SlotCache::new()?,
                stacks: try_vec(worker::STACK_CACHE)?,
            })?);
        }
        let rt = try_box(Runtime {
            id,
            inboxes: inboxes.into_boxed_slice(),
            stacks,
            pollers: pollers.into_boxed_slice(),
            next_worker: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            threads: Mutex::new(try_vec(workers)?),
        })?;
        {
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            live.try_reserve(1).map_err(|_| Error::NoMem)?;
            live.push(&*rt as *const Runtime as usize);
        }
        for mut start in starts {
            start.rt = &*rt;
            if let Err(e) = spawn_worker(start) {
                rt.stop_workers();
                return Err(e);
            }
        }
        // Each worker sets itself up before it takes work; wait for that,
        // so that the runtime is whole when the caller gets it.
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
            // SAFETY: a thread we started and nobody joined (taken out of
            // the list above, once).
            unsafe { libc::pthread_join(t, ptr::null_mut()) };
        }
    }
}

/// Starts the worker thread for `start` and lists it in its runtime.
/// Errors: `Io` (no thread; `start` is dropped).
fn spawn_worker(start: Box<WorkerStart>) -> Result<()> {
    // SAFETY: set before the thread starts, by `Runtime::new`.
    let rt = unsafe { &*start.rt };
    // SAFETY: a zeroed attribute object is initialised by the call.
    let mut attr: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    // SAFETY: `attr` is ours; it is destroyed below.
    if unsafe { libc::pthread_attr_init(&mut attr) } != 0 {
        return Err(Error::Io);
    }
    // SAFETY: `attr` was initialised. An error leaves the default size.
    unsafe { libc::pthread_attr_setstacksize(&mut attr, WORKER_STACK) };
    // SAFETY: a zeroed pthread_t is overwritten by a successful create.
    let mut thread: libc::pthread_t = unsafe { core::mem::zeroed() };
    let arg = Box::into_raw(start);
    // SAFETY: `worker_main` takes `arg` back as the box it is.
    let rc = unsafe { libc::pthread_create(&mut thread, &attr, worker_main, arg.cast()) };
    // SAFETY: initialised above, destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if rc != 0 {
        // SAFETY: the thread was not started, so the box is still ours.
        drop(unsafe { Box::from_raw(arg) });
        // CORO_EIO keeps the OS's reason in errno (EAGAIN: no memory or
        // thread left), as pthread_create returns it instead.
        crate::util::set_errno(rc);
        return Err(Error::Io);
    }
    // Room for every worker was reserved when the runtime was made.
    rt.threads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(thread);
    Ok(())
}

/// A worker thread's entry. No panic may leave it (C frames below).
extern "C" fn worker_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `spawn_worker` passed a `Box<WorkerStart>`, given up to us.
    let start = unsafe { Box::from_raw(arg.cast::<WorkerStart>()) };
    name_thread(start.index);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::run(start)));
    if run.is_err() {
        crate::util::die("coframe: a worker thread panicked; aborting");
    }
    ptr::null_mut()
}

/// "coframe-N", as ps and gdb show it (at most 15 bytes).
fn name_thread(index: usize) {
    let mut name = *b"coframe-\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 7];
    let mut n = index;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        name[8 + i] = *d;
    }
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    // SAFETY: a NUL-terminated name of at most 15 bytes, for this thread.
    unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr().cast())
    };
    #[cfg(target_os = "macos")]
    // SAFETY: as above; macOS names only the calling thread.
    unsafe {
        libc::pthread_setname_np(name.as_ptr().cast())
    };
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
    let _ = name;
}
