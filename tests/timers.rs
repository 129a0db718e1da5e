//! 100,000 concurrent sleepers (20,000 on a 32-bit target, whose address
//! space holds about 40,000 default stacks) with random deadlines: none
//! wakes early.
//! (How late they wake is a benchmark figure, `make bench`, not a test.)

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::*};

use coframe::ffi::*;

static EARLY: AtomicUsize = AtomicUsize::new(0);
static WOKE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn sleeper(env: *mut c_void) -> *mut c_void {
    let deadline = unsafe { *(env as *const i64) };
    assert_eq!(coro_sleep_until(deadline), CORO_OK);
    if coro_now() < deadline {
        EARLY.fetch_add(1, SeqCst);
    }
    WOKE.fetch_add(1, SeqCst);
    ptr::null_mut()
}

#[test]
fn many_sleepers_never_wake_early() {
    const N: usize = if cfg!(target_pointer_width = "64") {
        100_000
    } else {
        20_000
    };
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { coro_runtime_new(ptr::null(), &mut rt) }, CORO_OK);
    let start = coro_now();
    // xorshift: deadlines spread over 0.2 s to 1.2 s from now.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut promises = Vec::with_capacity(N);
    for _ in 0..N {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let deadline = start + 200_000_000 + (x % 1_000_000_000) as i64;
        let mut p = coro_promise { id: 0 };
        let rc = unsafe {
            coro_spawn(
                rt,
                Some(sleeper),
                (&deadline as *const i64).cast(),
                8,
                None,
                0,
                &mut p,
            )
        };
        // With mprotect guards (kernels before 6.13, emulators) every stack
        // costs two mappings, and vm.max_map_count stops the spawns near
        // 32,000 with a clean CORO_ENOMEM: test the sleepers that exist.
        if rc == CORO_ENOMEM && promises.len() >= 20_000 {
            eprintln!(
                "spawn {} answered CORO_ENOMEM: {} sleepers",
                promises.len() + 1,
                promises.len()
            );
            break;
        }
        assert_eq!(rc, CORO_OK);
        promises.push(p);
    }
    let spawned = promises.len();
    for p in promises {
        assert_eq!(unsafe { coro_await(p, ptr::null_mut()) }, CORO_OK);
    }
    assert_eq!(WOKE.load(SeqCst), spawned);
    assert_eq!(EARLY.load(SeqCst), 0, "a sleeper woke before its deadline");
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
