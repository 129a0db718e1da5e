//! Running Rust closures as coroutines through the C ABI, for the
//! integration tests that need many small bodies (`mod closure;`). Each
//! test crate uses a part of it.
#![allow(dead_code)]

use core::ffi::c_void;
use core::ptr;
use std::time::{Duration, Instant};

use coframe::ffi::*;

type Body = Box<dyn FnOnce() -> usize + Send>;

/// The frame's environment: the closure, until the coroutine takes it.
#[repr(C)]
struct Env {
    body: usize,
}

unsafe extern "C" fn trampoline(env: *mut c_void) -> *mut c_void {
    // SAFETY: the frame's copy of an `Env`.
    let env = unsafe { &mut *(env as *mut Env) };
    let body = std::mem::take(&mut env.body);
    // SAFETY: made by Box::into_raw in `spawn`, taken once.
    let f = unsafe { Box::from_raw(body as *mut Body) };
    f() as *mut c_void
}

unsafe extern "C" fn drop_env(env: *mut c_void) {
    // SAFETY: as above; a closure never taken (cancelled before it ran).
    let env = unsafe { &mut *(env as *mut Env) };
    if env.body != 0 {
        drop(unsafe { Box::from_raw(env.body as *mut Body) });
    }
}

pub fn spawn(
    rt: *mut coro_runtime,
    flags: u32,
    f: impl FnOnce() -> usize + Send + 'static,
) -> coro_promise {
    let body: Box<Body> = Box::new(Box::new(f));
    let env = Env {
        body: Box::into_raw(body) as usize,
    };
    let mut p = coro_promise { id: 0 };
    let rc = unsafe {
        coro_spawn(
            rt,
            Some(trampoline),
            (&env as *const Env).cast(),
            core::mem::size_of::<Env>(),
            Some(drop_env),
            flags,
            &mut p,
        )
    };
    assert_eq!(rc, CORO_OK);
    p
}

pub fn await_value(p: coro_promise) -> (i32, usize) {
    let mut r = ptr::null_mut();
    let rc = unsafe { coro_await(p, &mut r) };
    (rc, r as usize)
}

pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Gives a suspending coroutine time to park after it said it would.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(30));
}

pub fn ms_from_now(ms: i64) -> i64 {
    coro_now() + ms * 1_000_000
}

/// A raw pointer to share with coroutines (the tests outlive them).
pub struct P<T>(pub *mut T);
impl<T> Clone for P<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for P<T> {}
unsafe impl<T> Send for P<T> {}
impl<T> P<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}
