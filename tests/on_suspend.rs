//! A user's `on_suspend` runs while the worker still owns the frame
//! (rule 9 in `src/frame/mod.rs`): a cancel or a shutdown that comes while
//! the callback runs waits for it, so the callback may read the frame's
//! environment and nothing it uses is torn down under it.
//!
//! Found by `ffi-tests/chaos.c` under ThreadSanitizer (issue 21): the
//! callback read the environment while a shutdown on another thread
//! finalized and freed the frame, and a spawn reused its slot.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

use coframe::ffi::*;

mod common;

/// What one test's coroutine and callback share with the test.
struct Probe {
    in_callback: AtomicUsize,
    go: AtomicUsize,
    callback_done: AtomicUsize,
    /// Defers that had run when the callback was about to return.
    defers_seen_by_callback: AtomicUsize,
    defers: AtomicUsize,
    token: AtomicU64,
}

impl Probe {
    const fn new() -> Probe {
        Probe {
            in_callback: AtomicUsize::new(0),
            go: AtomicUsize::new(0),
            callback_done: AtomicUsize::new(0),
            defers_seen_by_callback: AtomicUsize::new(0),
            defers: AtomicUsize::new(0),
            token: AtomicU64::new(0),
        }
    }
}

fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Keeps the token, says it runs, and waits (at most 2 s) for the test's
/// go before it returns.
unsafe extern "C" fn slow_callback(t: coro_token, arg: *mut c_void) {
    // SAFETY: the coroutine passes a `&'static Probe`.
    let probe = unsafe { &*(arg as *const Probe) };
    probe.token.store(t.id, SeqCst);
    probe.in_callback.store(1, SeqCst);
    let start = Instant::now();
    while probe.go.load(SeqCst) == 0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    probe
        .defers_seen_by_callback
        .store(probe.defers.load(SeqCst), SeqCst);
    probe.callback_done.store(1, SeqCst);
}

unsafe extern "C" fn count_defer(arg: *mut c_void) {
    // SAFETY: as above.
    unsafe { &*(arg as *const Probe) }
        .defers
        .fetch_add(1, SeqCst);
}

/// Its environment is the address of its `Probe`.
unsafe extern "C" fn suspends(env: *mut c_void) -> *mut c_void {
    // SAFETY: the environment is a copy of a `&'static Probe`.
    let probe = unsafe { *(env as *const *mut c_void) };
    assert_eq!(coro_defer(Some(count_defer), probe), CORO_OK);
    coro_suspend(Some(slow_callback), probe);
    ptr::null_mut()
}

fn spawn_suspending(rt: *mut coro_runtime, probe: &'static Probe) -> coro_promise {
    let addr = probe as *const Probe;
    let mut p = coro_promise { id: 0 };
    let rc = unsafe {
        coro_spawn(
            rt,
            Some(suspends),
            (&addr as *const *const Probe).cast(),
            core::mem::size_of::<*const Probe>(),
            None,
            0,
            &mut p,
        )
    };
    assert_eq!(rc, CORO_OK);
    p
}

#[test]
fn a_cancel_during_on_suspend_runs_the_defers_after_it() {
    static PROBE: Probe = Probe::new();
    let rt = common::runtime(1);
    let p = spawn_suspending(rt, &PROBE);
    wait_until("the callback", Duration::from_secs(10), || {
        PROBE.in_callback.load(SeqCst) == 1
    });
    // The frame counts as running: the cancel is recorded, not acted on.
    assert_eq!(coro_cancel_async(p), CORO_OK);
    assert_eq!(
        PROBE.defers.load(SeqCst),
        0,
        "the defers ran while on_suspend was still running"
    );
    PROBE.go.store(1, SeqCst);
    wait_until("the defer", Duration::from_secs(10), || {
        PROBE.defers.load(SeqCst) == 1
    });
    assert_eq!(PROBE.defers_seen_by_callback.load(SeqCst), 0);
    // The token it handed out only drops now, and frees the frame.
    let t = coro_token {
        id: PROBE.token.load(SeqCst),
    };
    assert_eq!(coro_resume(t), CORO_OK);
    assert_eq!(coro_resume(t), CORO_ESTALE);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    assert_eq!(PROBE.defers.load(SeqCst), 1);
}

#[test]
fn shutdown_waits_for_a_running_on_suspend() {
    static PROBE: Probe = Probe::new();
    let rt = common::runtime(1);
    let _p = spawn_suspending(rt, &PROBE);
    wait_until("the callback", Duration::from_secs(10), || {
        PROBE.in_callback.load(SeqCst) == 1
    });
    static SHUT_DOWN: AtomicUsize = AtomicUsize::new(0);
    let rt_addr = rt as usize;
    let shutdown = std::thread::spawn(move || {
        let rc = unsafe { coro_runtime_shutdown(rt_addr as *mut coro_runtime) };
        SHUT_DOWN.store(1, SeqCst);
        rc
    });
    // Shutdown would take well under this if it did not wait.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        SHUT_DOWN.load(SeqCst),
        0,
        "shutdown finalized and freed the frame under its on_suspend"
    );
    assert_eq!(PROBE.defers.load(SeqCst), 0);
    PROBE.go.store(1, SeqCst);
    assert_eq!(shutdown.join().unwrap(), CORO_OK);
    assert_eq!(PROBE.callback_done.load(SeqCst), 1);
    assert_eq!(PROBE.defers_seen_by_callback.load(SeqCst), 0);
    assert_eq!(PROBE.defers.load(SeqCst), 1);
    let t = coro_token {
        id: PROBE.token.load(SeqCst),
    };
    assert_eq!(coro_resume(t), CORO_ESTALE, "shutdown freed the frame");
}
