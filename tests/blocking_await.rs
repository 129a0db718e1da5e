//! A thread blocked in `coro_await` is woken by the coroutine's end, on
//! every interleaving the timing can produce: the end before the thread
//! looks, while it looks, just as it goes to sleep, and after it sleeps
//! (`frame/blocker.rs`). Each coroutine spins for a different time around
//! the awaiter's 64 looks and far beyond; a lost wake-up leaves the thread asleep, which
//! the watchdog turns into a failure instead of a hang. Several threads
//! await at once, so wake-ups for slots reused by another thread's frames
//! (a late wake of an older generation) happen too.

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coframe::ffi::*;

mod common;
use common::runtime;

const THREADS: usize = 3;
const ROUNDS: usize = 600;

/// Spins for `env` nanoseconds, then returns `env + 1`.
unsafe extern "C" fn spin(env: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a u64.
    let ns = unsafe { *(env as *const u64) };
    let until = Instant::now() + Duration::from_nanos(ns);
    while Instant::now() < until {
        core::hint::spin_loop();
    }
    (ns + 1) as usize as *mut c_void
}

#[test]
fn every_blocked_awaiter_wakes() {
    let rt = runtime(2) as usize;
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, finished) = (done.clone(), finished.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !finished.load(SeqCst) {
                if start.elapsed() > Duration::from_secs(60) {
                    // The stuck threads would keep the test from ending.
                    eprintln!(
                        "awaiters stuck: {} of {} awaits returned",
                        done.load(SeqCst),
                        THREADS * ROUNDS
                    );
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    // 0 to 1 ms, spread differently per thread: in 1,800
                    // awaits about 400 sleep (counted once with a
                    // temporary counter in `Blocker::sleep`).
                    let ns = ((i * 7919 + t * 104_729) % 1000) as u64 * 1000;
                    let mut p = coro_promise { id: 0 };
                    let env = (&ns as *const u64).cast();
                    // SAFETY: the env is a u64, copied by coro_spawn.
                    let rc =
                        unsafe { coro_spawn(rt as *mut _, Some(spin), env, 8, None, 0, &mut p) };
                    assert_eq!(rc, CORO_OK);
                    let mut out = core::ptr::null_mut();
                    // SAFETY: a promise from coro_spawn, awaited once.
                    assert_eq!(unsafe { coro_await(p, &mut out) }, CORO_OK);
                    assert_eq!(out as usize as u64, ns + 1);
                    done.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    finished.store(true, SeqCst);
    watchdog.join().unwrap();
    assert_eq!(done.load(SeqCst), THREADS * ROUNDS);
    // SAFETY: made by runtime() above; every frame was awaited.
    assert_eq!(unsafe { coro_runtime_shutdown(rt as *mut _) }, CORO_OK);
}
