//! The frame lifecycle through the C ABI, from Rust.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;

use coframe::ffi::*;

mod common;
use common::runtime;

unsafe extern "C" fn add_one(env: *mut c_void) -> *mut c_void {
    let v = unsafe { *(env as *const u64) };
    (v + 1) as usize as *mut c_void
}

#[test]
fn spawn_and_await_from_a_thread() {
    let rt = runtime(2);
    for i in 0..1000u64 {
        let mut p = coro_promise { id: 0 };
        let rc = unsafe {
            coro_spawn(
                rt,
                Some(add_one),
                (&i as *const u64).cast(),
                8,
                None,
                0,
                &mut p,
            )
        };
        assert_eq!(rc, CORO_OK);
        let mut r = ptr::null_mut();
        assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
        assert_eq!(r as usize as u64, i + 1);
        assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_ESTALE);
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static TOKENS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static DEFERS: AtomicUsize = AtomicUsize::new(0);
static PASSED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn stash(t: coro_token, _arg: *mut c_void) {
    TOKENS.lock().unwrap().push(t.id);
}
unsafe extern "C" fn count_defer(_arg: *mut c_void) {
    DEFERS.fetch_add(1, SeqCst);
}
unsafe extern "C" fn suspend_once(_env: *mut c_void) -> *mut c_void {
    assert_eq!(coro_defer(Some(count_defer), ptr::null_mut()), CORO_OK);
    assert_eq!(coro_suspend(Some(stash), ptr::null_mut()), CORO_OK);
    PASSED.fetch_add(1, SeqCst);
    ptr::null_mut()
}

fn take_token() -> coro_token {
    loop {
        if let Some(t) = TOKENS.lock().unwrap().pop() {
            return coro_token { id: t };
        }
        std::thread::yield_now();
    }
}

#[test]
fn suspend_resume_cancel_and_stale_tokens() {
    let _g = SERIAL.lock().unwrap();
    let rt = runtime(2);
    // Resume: the body continues, defer runs once.
    let mut p = coro_promise { id: 0 };
    assert_eq!(
        unsafe { coro_spawn(rt, Some(suspend_once), ptr::null(), 0, None, 0, &mut p) },
        CORO_OK
    );
    let t = take_token();
    assert_eq!(coro_resume(t), CORO_OK);
    assert_eq!(coro_resume(t), CORO_ESTALE);
    assert_eq!(unsafe { coro_await(p, ptr::null_mut()) }, CORO_OK);
    assert_eq!(PASSED.load(SeqCst), 1);
    assert_eq!(DEFERS.load(SeqCst), 1);
    assert_eq!(coro_resume(t), CORO_ESTALE, "token of a finished coroutine");

    // cancel_async of a suspended coroutine: defers run before it returns,
    // the late resume only drops the reference.
    assert_eq!(
        unsafe { coro_spawn(rt, Some(suspend_once), ptr::null(), 0, None, 0, &mut p) },
        CORO_OK
    );
    let t = take_token();
    assert_eq!(coro_cancel_async(p), CORO_OK);
    assert_eq!(DEFERS.load(SeqCst), 2);
    assert_eq!(coro_resume(t), CORO_OK);
    assert_eq!(coro_resume(t), CORO_ESTALE);
    assert_eq!(PASSED.load(SeqCst), 1, "body never continued");

    // cancel_suspend, then await says cancelled.
    assert_eq!(
        unsafe { coro_spawn(rt, Some(suspend_once), ptr::null(), 0, None, 0, &mut p) },
        CORO_OK
    );
    let t = take_token();
    assert_eq!(coro_cancel_suspend(t), CORO_OK);
    assert_eq!(coro_resume(t), CORO_ESTALE);
    assert_eq!(unsafe { coro_await(p, ptr::null_mut()) }, CORO_ECANCELED);
    assert_eq!(DEFERS.load(SeqCst), 3);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static SERIAL: Mutex<()> = Mutex::new(());

unsafe extern "C" fn child(_env: *mut c_void) -> *mut c_void {
    coro_yield();
    7usize as *mut c_void
}
unsafe extern "C" fn parent(_env: *mut c_void) -> *mut c_void {
    let rt = unsafe { *(_env as *const usize) } as *mut coro_runtime;
    let mut total = 0usize;
    for _ in 0..100 {
        let mut p = coro_promise { id: 0 };
        assert_eq!(
            unsafe { coro_spawn(rt, Some(child), ptr::null(), 0, None, 0, &mut p) },
            CORO_OK
        );
        let mut r = ptr::null_mut();
        assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
        total += r as usize;
    }
    total as *mut c_void
}

#[test]
fn await_inside_a_coroutine() {
    let rt = runtime(2);
    let env = rt as usize;
    let mut p = coro_promise { id: 0 };
    assert_eq!(
        unsafe {
            coro_spawn(
                rt,
                Some(parent),
                (&env as *const usize).cast(),
                8,
                None,
                0,
                &mut p,
            )
        },
        CORO_OK
    );
    let mut r = ptr::null_mut();
    assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
    assert_eq!(r as usize, 700);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn misuse_outside_a_coroutine() {
    assert_eq!(coro_suspend(Some(stash), ptr::null_mut()), CORO_ESTATE);
    assert_eq!(coro_yield(), CORO_ESTATE);
    assert_eq!(coro_resume(coro_token { id: 0 }), CORO_EINVAL);
    assert_eq!(coro_cancel_async(coro_promise { id: 0 }), CORO_EINVAL);
    assert_eq!(coro_self_id(), 0);
    let _ = AtomicU64::new(0);
}

unsafe extern "C" fn await_self(_env: *mut c_void) -> *mut c_void {
    let me = coro_promise { id: coro_self_id() };
    let rc = unsafe { coro_await(me, ptr::null_mut()) };
    rc as isize as *mut c_void
}

#[test]
fn awaiting_itself_is_refused() {
    let rt = runtime(1);
    let mut p = coro_promise { id: 0 };
    assert_eq!(
        unsafe { coro_spawn(rt, Some(await_self), ptr::null(), 0, None, 0, &mut p) },
        CORO_OK
    );
    let mut r = ptr::null_mut();
    assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
    assert_eq!(r as isize, CORO_EINVAL as isize);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
