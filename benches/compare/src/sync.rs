//! Contended hand-offs (issue 17): two coroutines or tasks that both want
//! one mutex, and two that ping-pong items over two bounded channels.
//! coframe through its C ABI beside tokio's `sync::Mutex` and `mpsc` and
//! may's `sync::Mutex` and `mpsc`, each library's default way.
//!
//! `--workers 1`: one thread, the primitive's own cost. `--workers 2`: a
//! runtime of two threads; coframe's coroutines are spawned
//! `CORO_SPAWN_MIGRATABLE`, so a woken one may move to the waker's worker
//! as tokio's and may's tasks do (DESIGN section 12: like with like).
//!
//! The mutex benches hold the lock while both contenders start and queue
//! on it (1 ms after both said they are about to lock), then release it
//! and start the clock: from there on every unlock finds the other one
//! waiting, and a FIFO mutex hands it over. They count how many
//! acquisitions changed owner: with a FIFO hand-off every one does
//! (share 1.0), so the figure is the cost of a hand-off, not of an
//! uncontended lock; where a library lets the unlocker take the lock
//! back, the share says so. Every bench checks its count and aborts if
//! an acquisition or an item went missing.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use coframe::ffi::*;

use crate::cf::{await_value, check, env, rt_new, rt_shutdown, spawn_with};
use crate::util::{now_ns, sample, Args, Report};

/// What the critical section touches: the owner of the last acquisition,
/// how many acquisitions changed owner, and the total. Relaxed atomics,
/// since the lock orders them; atomics only so one type serves all three
/// libraries without `unsafe`.
#[derive(Default)]
struct Tally {
    /// Contenders about to take the lock for the first time.
    arrived: AtomicU64,
    last: AtomicU64,
    changes: AtomicU64,
    count: AtomicU64,
}

impl Tally {
    fn arrive(&self) {
        self.arrived.fetch_add(1, Relaxed);
    }

    fn both_arrived(&self) -> bool {
        self.arrived.load(Relaxed) == 2
    }

    /// One acquisition by `me`; call with the lock held.
    #[inline(always)]
    fn note(&self, me: u64) {
        if self.last.swap(me, Relaxed) != me {
            self.changes.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
    }

    /// Checks the total after one repetition and starts the next afresh.
    fn settle(&self, expected: u64, what: &str) -> u64 {
        let count = self.count.swap(0, Relaxed);
        if count != expected {
            eprintln!("{what}: {count} acquisitions, expected {expected}");
            std::process::abort();
        }
        self.last.store(0, Relaxed);
        self.arrived.store(0, Relaxed);
        self.changes.swap(0, Relaxed)
    }
}

/// How long the contenders get to queue on the held lock once both said
/// they are about to take it.
const QUEUE_NS: i64 = 1_000_000;

fn report_mutex(a: &Args, s: &[f64], changes: u64) {
    Report::new(&a.bench)
        .samples(a.iters, s)
        .num("workers", a.workers as f64)
        .num("handoff_share", changes as f64 / (2 * a.iters) as f64)
        .print();
}

fn coframe_flags(a: &Args) -> u32 {
    if a.workers > 1 {
        CORO_SPAWN_MIGRATABLE
    } else {
        0
    }
}

// ---------------------------------------------------------------- coframe

#[derive(Clone, Copy)]
struct MutexEnv {
    rt: *mut coro_runtime,
    m: *mut coro_mutex,
    tally: *const Tally,
    n: u64,
    flags: u32,
    me: u64,
}

unsafe extern "C" fn contender(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a MutexEnv.
    let c: MutexEnv = unsafe { env(e) };
    // SAFETY: the driver keeps the tally alive until both are awaited.
    let tally = unsafe { &*c.tally };
    tally.arrive();
    for _ in 0..c.n {
        // SAFETY: the mutex outlives both contenders.
        check(unsafe { coro_mutex_lock(c.m, -1) }, "coro_mutex_lock");
        tally.note(c.me);
        // SAFETY: as above; this coroutine holds it.
        check(unsafe { coro_mutex_unlock(c.m) }, "coro_mutex_unlock");
    }
    ptr::null_mut()
}

/// Spawns the two contenders behind the held lock, lets them queue, and
/// times them from its unlock to the end of both.
unsafe extern "C" fn mutex_driver(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a MutexEnv.
    let c: MutexEnv = unsafe { env(e) };
    // SAFETY: the mutex and the tally outlive the driver.
    let tally = unsafe { &*c.tally };
    // SAFETY: as above.
    check(unsafe { coro_mutex_lock(c.m, -1) }, "coro_mutex_lock");
    let a = spawn_with(c.rt, contender, &MutexEnv { me: 1, ..c }, c.flags);
    let b = spawn_with(c.rt, contender, &MutexEnv { me: 2, ..c }, c.flags);
    while !tally.both_arrived() {
        check(coro_yield(), "coro_yield");
    }
    check(coro_sleep_until(coro_now() + QUEUE_NS), "coro_sleep_until");
    let t0 = now_ns();
    // SAFETY: the driver holds it.
    check(unsafe { coro_mutex_unlock(c.m) }, "coro_mutex_unlock");
    await_value(a);
    await_value(b);
    (now_ns() - t0) as usize as *mut c_void
}

/// Two coroutines take and release one `coro_mutex`, `--iters` times each.
pub fn mutex_coframe(a: &Args) {
    let rt = rt_new(a.workers);
    let mut m = ptr::null_mut();
    // SAFETY: m is writable.
    check(unsafe { coro_mutex_new(&mut m) }, "coro_mutex_new");
    let tally = Tally::default();
    let c = MutexEnv {
        rt,
        m,
        tally: &tally,
        n: a.iters,
        flags: coframe_flags(a),
        me: 0,
    };
    let mut changes = 0;
    let s = sample(a.reps, 2 * a.iters, || {
        let t = await_value(spawn_with(rt, mutex_driver, &c, 0));
        changes = tally.settle(2 * a.iters, "mutex_coframe");
        t
    });
    // SAFETY: m is unlocked and nobody waits on it.
    check(unsafe { coro_mutex_free(m) }, "coro_mutex_free");
    rt_shutdown(rt);
    report_mutex(a, &s, changes);
}

#[derive(Clone, Copy)]
struct ChanEnv {
    rt: *mut coro_runtime,
    ping: *mut coro_chan,
    pong: *mut coro_chan,
    n: u64,
    flags: u32,
}

/// Sends 1..=n on `ping`, each time waiting for its answer on `pong`.
unsafe extern "C" fn server(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a ChanEnv.
    let c: ChanEnv = unsafe { env(e) };
    for i in 1..=c.n {
        let mut back = 0u64;
        // SAFETY: the channels outlive both coroutines and carry u64s.
        check(
            unsafe { coro_chan_send(c.ping, &i as *const u64 as *const c_void, -1) },
            "coro_chan_send",
        );
        // SAFETY: as above.
        check(
            unsafe { coro_chan_recv(c.pong, &mut back as *mut u64 as *mut c_void, -1) },
            "coro_chan_recv",
        );
        if back != i + 1 {
            eprintln!("chan_coframe: sent {i}, got {back} back");
            std::process::abort();
        }
    }
    ptr::null_mut()
}

/// Answers every item on `ping` with item + 1 on `pong`.
unsafe extern "C" fn echoer(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a ChanEnv.
    let c: ChanEnv = unsafe { env(e) };
    for _ in 0..c.n {
        let mut v = 0u64;
        // SAFETY: the channels outlive both coroutines and carry u64s.
        check(
            unsafe { coro_chan_recv(c.ping, &mut v as *mut u64 as *mut c_void, -1) },
            "coro_chan_recv",
        );
        v += 1;
        // SAFETY: as above.
        check(
            unsafe { coro_chan_send(c.pong, &v as *const u64 as *const c_void, -1) },
            "coro_chan_send",
        );
    }
    ptr::null_mut()
}

unsafe extern "C" fn chan_driver(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a ChanEnv.
    let c: ChanEnv = unsafe { env(e) };
    let t0 = now_ns();
    let a = spawn_with(c.rt, server, &c, c.flags);
    let b = spawn_with(c.rt, echoer, &c, c.flags);
    await_value(a);
    await_value(b);
    (now_ns() - t0) as usize as *mut c_void
}

fn chan_new(capacity: usize) -> *mut coro_chan {
    let mut ch = ptr::null_mut();
    // SAFETY: ch is writable.
    check(
        unsafe { coro_chan_new(core::mem::size_of::<u64>(), capacity, &mut ch) },
        "coro_chan_new",
    );
    ch
}

/// `--iters` round trips over two `coro_chan`s of capacity 1 (tokio's
/// smallest bounded channel).
pub fn chan_coframe(a: &Args) {
    let rt = rt_new(a.workers);
    let c = ChanEnv {
        rt,
        ping: chan_new(1),
        pong: chan_new(1),
        n: a.iters,
        flags: coframe_flags(a),
    };
    let s = sample(a.reps, a.iters, || {
        await_value(spawn_with(rt, chan_driver, &c, 0))
    });
    for ch in [c.ping, c.pong] {
        // SAFETY: empty, and nobody waits on it.
        check(unsafe { coro_chan_free(ch) }, "coro_chan_free");
    }
    rt_shutdown(rt);
    Report::new(&a.bench)
        .samples(a.iters, &s)
        .num("workers", a.workers as f64)
        .print();
}

// ---------------------------------------------------------------- tokio

fn tokio_rt(workers: u32) -> tokio::runtime::Runtime {
    let mut b = if workers > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers as usize);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_time().build().expect("tokio runtime")
}

/// Two tasks take and release one `tokio::sync::Mutex` (FIFO-fair).
pub fn mutex_tokio(a: &Args) {
    let rt = tokio_rt(a.workers);
    let n = a.iters;
    let m = Arc::new(tokio::sync::Mutex::new(()));
    let tally = Arc::new(Tally::default());
    let mut changes = 0;
    let s = sample(a.reps, 2 * n, || {
        let t = rt.block_on(async {
            let held = m.lock().await;
            let tasks: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|me| {
                    let (m, tally) = (m.clone(), tally.clone());
                    tokio::spawn(async move {
                        tally.arrive();
                        for _ in 0..n {
                            let _g = m.lock().await;
                            tally.note(me);
                        }
                    })
                })
                .collect();
            while !tally.both_arrived() {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(std::time::Duration::from_nanos(QUEUE_NS as u64)).await;
            let t0 = now_ns();
            drop(held);
            for t in tasks {
                t.await.unwrap();
            }
            now_ns() - t0
        });
        changes = tally.settle(2 * n, "mutex_tokio");
        t
    });
    report_mutex(a, &s, changes);
}

/// `--iters` round trips over two `tokio::sync::mpsc` channels of capacity 1.
pub fn chan_tokio(a: &Args) {
    let rt = tokio_rt(a.workers);
    let n = a.iters;
    let s = sample(a.reps, n, || {
        rt.block_on(async {
            let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let t0 = now_ns();
            let server = tokio::spawn(async move {
                for i in 1..=n {
                    ping_tx.send(i).await.unwrap();
                    assert_eq!(pong_rx.recv().await, Some(i + 1));
                }
            });
            let echoer = tokio::spawn(async move {
                for _ in 0..n {
                    let v = ping_rx.recv().await.unwrap();
                    pong_tx.send(v + 1).await.unwrap();
                }
            });
            server.await.unwrap();
            echoer.await.unwrap();
            now_ns() - t0
        })
    });
    Report::new(&a.bench)
        .samples(n, &s)
        .num("workers", a.workers as f64)
        .print();
}

// ---------------------------------------------------------------- may

/// Two may coroutines take and release one `may::sync::Mutex`.
pub fn mutex_may(a: &Args) {
    may::config().set_workers(a.workers as usize);
    let n = a.iters;
    let m = Arc::new(may::sync::Mutex::new(()));
    let tally = Arc::new(Tally::default());
    let mut changes = 0;
    let s = sample(a.reps, 2 * n, || {
        // The main thread holds it: may's mutex serves threads too.
        let held = m.lock().unwrap();
        let tasks: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|me| {
                let (m, tally) = (m.clone(), tally.clone());
                let body = move || {
                    tally.arrive();
                    for _ in 0..n {
                        let _g = m.lock().unwrap();
                        tally.note(me);
                    }
                };
                // SAFETY: the bodies touch no thread-local state.
                unsafe { may::coroutine::spawn(body) }
            })
            .collect();
        while !tally.both_arrived() {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_nanos(QUEUE_NS as u64));
        let t0 = now_ns();
        drop(held);
        for t in tasks {
            t.join().unwrap();
        }
        let t = now_ns() - t0;
        changes = tally.settle(2 * n, "mutex_may");
        t
    });
    report_mutex(a, &s, changes);
}

/// `--iters` round trips over two `may::sync::mpsc` channels (unbounded:
/// may has no bounded one; a ping-pong never holds more than one item).
pub fn chan_may(a: &Args) {
    may::config().set_workers(a.workers as usize);
    let n = a.iters;
    let s = sample(a.reps, n, || {
        let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
        let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
        let t0 = now_ns();
        let server = move || {
            for i in 1..=n {
                ping_tx.send(i).unwrap();
                assert_eq!(pong_rx.recv().unwrap(), i + 1);
            }
        };
        let echoer = move || {
            for _ in 0..n {
                let v = ping_rx.recv().unwrap();
                pong_tx.send(v + 1).unwrap();
            }
        };
        // SAFETY: the bodies touch no thread-local state.
        let x = unsafe { may::coroutine::spawn(server) };
        // SAFETY: as above.
        let y = unsafe { may::coroutine::spawn(echoer) };
        x.join().unwrap();
        y.join().unwrap();
        now_ns() - t0
    });
    Report::new(&a.bench)
        .samples(n, &s)
        .num("workers", a.workers as f64)
        .print();
}
