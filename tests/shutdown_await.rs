//! Shutdown with coroutines parked in `coro_await` on children parked in
//! `coro_suspend` (their tokens held, never used). When shutdown reaches a
//! child before its parent, the child's end wakes the parent; the parent's
//! await must then answer CORO_ECANCELED, not find the child freed under
//! it (CORO_ESTALE).

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};

use coframe::ffi::*;

mod common;
use common::runtime;

const PARENTS: usize = 20;
/// Not yet returned from its await.
const WAITING: i32 = 1;

static RT: AtomicUsize = AtomicUsize::new(0);
static PARKED: AtomicUsize = AtomicUsize::new(0);
static AWAIT_RC: [AtomicI32; PARENTS] = [const { AtomicI32::new(WAITING) }; PARENTS];

fn rt() -> *mut coro_runtime {
    RT.load(SeqCst) as *mut coro_runtime
}

fn spawn(entry: coro_entry, env: &[u8]) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    let rc = unsafe { coro_spawn(rt(), entry, env.as_ptr().cast(), env.len(), None, 0, &mut p) };
    assert_eq!(rc, CORO_OK);
    p
}

unsafe extern "C" fn nothing(_env: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

/// Spawns and awaits 64 children on the worker: their slots stay in its
/// cache, so the children below get lower slots than their parents (which
/// the test thread spawns), and shutdown, which walks the slots in order,
/// reaches every child first.
unsafe extern "C" fn warm(_env: *mut c_void) -> *mut c_void {
    let kids: Vec<_> = (0..64).map(|_| spawn(Some(nothing), &[])).collect();
    for k in kids {
        assert_eq!(unsafe { coro_await(k, ptr::null_mut()) }, CORO_OK);
    }
    ptr::null_mut()
}

unsafe extern "C" fn hold(_t: coro_token, _arg: *mut c_void) {
    PARKED.fetch_add(1, SeqCst);
}

/// Runs on shutdown's thread, between one child's end and the next: time
/// for the worker to run the parent that end woke.
unsafe extern "C" fn slow_defer(_arg: *mut c_void) {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

unsafe extern "C" fn child(_env: *mut c_void) -> *mut c_void {
    assert_eq!(coro_defer(Some(slow_defer), ptr::null_mut()), CORO_OK);
    coro_suspend(Some(hold), ptr::null_mut());
    ptr::null_mut()
}

unsafe extern "C" fn parent(env: *mut c_void) -> *mut c_void {
    let i = unsafe { *(env as *const usize) };
    let c = spawn(Some(child), &[]);
    AWAIT_RC[i].store(unsafe { coro_await(c, ptr::null_mut()) }, SeqCst);
    ptr::null_mut()
}

#[test]
fn an_awaiter_woken_by_shutdown_gets_ecanceled() {
    RT.store(runtime(1) as usize, SeqCst);
    let w = spawn(Some(warm), &[]);
    assert_eq!(unsafe { coro_await(w, ptr::null_mut()) }, CORO_OK);
    for i in 0..PARENTS {
        let p = spawn(Some(parent), &i.to_ne_bytes());
        while PARKED.load(SeqCst) <= i {
            std::thread::yield_now();
        }
        assert_eq!(coro_detach(p), CORO_OK);
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt()) }, CORO_OK);
    let rcs: Vec<i32> = AWAIT_RC.iter().map(|r| r.load(SeqCst)).collect();
    assert!(
        rcs.iter().all(|&rc| rc == WAITING || rc == CORO_ECANCELED),
        "await results (1: never returned): {rcs:?}"
    );
    assert_eq!(coro_live_frames(), 0);
}
