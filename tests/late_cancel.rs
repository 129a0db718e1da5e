//! A cancel that lands while a frame is finishing (its defers are
//! running) comes too late: the frame finished the way its defers saw it,
//! and an await says the same. Before, shutdown could mark a frame
//! cancelled between the defers (run as for a normal end: no errdefer)
//! and the end, and the await then answered CORO_ECANCELED for a frame
//! whose errdefers never ran. Found by ffi-tests/chaos.c under ASan
//! (issue 21).

use core::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

use coframe::ffi::*;

mod common;

static IN_DEFER: AtomicUsize = AtomicUsize::new(0);
static RELEASE: AtomicUsize = AtomicUsize::new(0);
static ERRDEFERS: AtomicUsize = AtomicUsize::new(0);
static AWAIT_RC: AtomicI32 = AtomicI32::new(1);
static AWAIT_VALUE: AtomicUsize = AtomicUsize::new(0);

/// The defer of a normal end: holds the frame in its finish until the
/// test lets it go (2 s at most).
unsafe extern "C" fn slow_defer(_arg: *mut c_void) {
    IN_DEFER.store(1, SeqCst);
    let start = Instant::now();
    while RELEASE.load(SeqCst) == 0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

unsafe extern "C" fn count_errdefer(_arg: *mut c_void) {
    ERRDEFERS.fetch_add(1, SeqCst);
}

unsafe extern "C" fn returns_42(_env: *mut c_void) -> *mut c_void {
    assert_eq!(
        coro_errdefer(Some(count_errdefer), core::ptr::null_mut()),
        CORO_OK
    );
    assert_eq!(coro_defer(Some(slow_defer), core::ptr::null_mut()), CORO_OK);
    42usize as *mut c_void
}

#[test]
fn a_cancel_during_the_finish_does_not_turn_the_await_into_canceled() {
    let rt = common::runtime(1);
    let mut p = coro_promise { id: 0 };
    assert_eq!(
        unsafe { coro_spawn(rt, Some(returns_42), core::ptr::null(), 0, None, 0, &mut p,) },
        CORO_OK
    );
    let awaiter = std::thread::spawn(move || {
        let mut r = core::ptr::null_mut();
        AWAIT_RC.store(unsafe { coro_await(p, &mut r) }, SeqCst);
        AWAIT_VALUE.store(r as usize, SeqCst);
    });
    let start = Instant::now();
    while IN_DEFER.load(SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the body never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Shutdown marks the finishing frame cancelled, then waits for it.
    let rt_addr = rt as usize;
    let shutdown =
        std::thread::spawn(move || unsafe { coro_runtime_shutdown(rt_addr as *mut coro_runtime) });
    std::thread::sleep(Duration::from_millis(50));
    RELEASE.store(1, SeqCst);
    awaiter.join().unwrap();
    assert_eq!(shutdown.join().unwrap(), CORO_OK);
    let (rc, errdefers) = (AWAIT_RC.load(SeqCst), ERRDEFERS.load(SeqCst));
    assert_eq!(
        (rc, errdefers),
        (CORO_OK, 0),
        "the await said {rc} and the errdefers ran {errdefers} times: they must agree"
    );
    assert_eq!(AWAIT_VALUE.load(SeqCst), 42);
}
