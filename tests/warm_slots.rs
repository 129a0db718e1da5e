//! A worker keeps the slots of frames it freed with their coroutine,
//! waiting at the top of its loop, and starts its next spawns in them
//! (`Local::keep_warm`). These tests pin down what that must not change:
//! every frame starts its own entry from the beginning, a frame abandoned
//! inside its entry never lends its coroutine to the next one, and a
//! frame cancelled before it ran never runs (rule 5), warm slot or not.
//! And a worker that stops gives its warm slots' stacks back to its pool
//! and the slots to the table, as plain free ones that a second runtime
//! then uses (a worker that forgot would trip the slot cache's assertion
//! in the debug build, which `make test` runs too).
//! One test only: it counts live frames, which the whole process shares.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use coframe::ffi::*;

mod common;
use common::runtime;

/// Entries started, by any child below.
static STARTS: AtomicU64 = AtomicU64::new(0);
/// The last suspended child's token.
static TOKEN: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn hand_token(t: coro_token, _arg: *mut c_void) {
    TOKEN.store(t.id, SeqCst);
}

/// Counts its start, then suspends; 5 if resumed, 6 if cancelled.
unsafe extern "C" fn counts_then_suspends(_env: *mut c_void) -> *mut c_void {
    STARTS.fetch_add(1, SeqCst);
    if coro_suspend(Some(hand_token), ptr::null_mut()) == CORO_OK {
        5 as *mut c_void
    } else {
        6 as *mut c_void
    }
}

/// Counts its start and returns the number in its environment.
unsafe extern "C" fn counts_and_echoes(env: *mut c_void) -> *mut c_void {
    STARTS.fetch_add(1, SeqCst);
    // SAFETY: spawned below with a u64 environment.
    unsafe { *(env as *const u64) as usize as *mut c_void }
}

fn spawn(rt: *mut coro_runtime, entry: coro_entry, env: &[u8], flags: u32) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    let rc = unsafe {
        coro_spawn(
            rt,
            entry,
            env.as_ptr().cast(),
            env.len(),
            None,
            flags,
            &mut p,
        )
    };
    assert_eq!(rc, CORO_OK);
    p
}

fn await_value(p: coro_promise) -> (i32, u64) {
    let mut r = ptr::null_mut();
    let rc = unsafe { coro_await(p, &mut r) };
    (rc, r as usize as u64)
}

/// Runs the three cases many times over (more rounds than a worker keeps
/// warm slots); returns 0, or the number of the first check that failed.
unsafe extern "C" fn parent(env: *mut c_void) -> *mut c_void {
    // SAFETY: spawned below with its runtime's address.
    let rt = unsafe { *(env as *const usize) } as *mut coro_runtime;
    let fail = |n: usize| n as *mut c_void;
    for round in 0..100u64 {
        // An abandoned frame: suspended, cancelled in the default mode,
        // its token dropped. Its coroutine is inside the entry.
        let starts = STARTS.load(SeqCst);
        TOKEN.store(0, SeqCst);
        let p = spawn(rt, Some(counts_then_suspends), &[], 0);
        if coro_yield() != CORO_OK {
            return fail(1);
        }
        let token = TOKEN.load(SeqCst);
        if STARTS.load(SeqCst) != starts + 1 || token == 0 {
            return fail(2);
        }
        if coro_cancel_async(p) != CORO_OK {
            return fail(3);
        }
        let rc = coro_cancel_suspend(coro_token { id: token });
        if rc != CORO_OK && rc != CORO_ESTALE {
            return fail(4);
        }
        // The next frame starts its own entry, with its own environment:
        // it must not resume the abandoned one's coroutine.
        let starts = STARTS.load(SeqCst);
        let p = spawn(rt, Some(counts_and_echoes), &round.to_ne_bytes(), 0);
        if await_value(p) != (CORO_OK, round) || STARTS.load(SeqCst) != starts + 1 {
            return fail(5);
        }
        // Cancelled before it ran, in cancel-returns mode, in a slot whose
        // last frame returned (warm): its entry never starts.
        let starts = STARTS.load(SeqCst);
        let p = spawn(
            rt,
            Some(counts_then_suspends),
            &[],
            CORO_SPAWN_CANCEL_RETURNS,
        );
        if coro_cancel_async(p) != CORO_OK || coro_yield() != CORO_OK {
            return fail(6);
        }
        if STARTS.load(SeqCst) != starts {
            return fail(7);
        }
    }
    ptr::null_mut()
}

#[test]
fn warm_slots_start_each_frame_afresh_and_never_reuse_an_abandoned_coroutine() {
    let live = coro_live_frames();
    // The second runtime takes the slots the first one's worker kept warm,
    // stripped of their coroutines, from the table.
    for _ in 0..2 {
        let rt = runtime(1);
        let env = (rt as usize).to_ne_bytes();
        let (rc, failed) = await_value(spawn(rt, Some(parent), &env, 0));
        assert_eq!(rc, CORO_OK);
        assert_eq!(failed, 0, "check {failed} failed (see `parent`)");
        // The worker frees the parent once it lets go of it, which may be
        // just after the await returned here: wait for it, as
        // ffi-tests/check.h's CHECK_FRAMES_BACK_TO does (before the
        // shutdown, whose sweep would free a leaked frame too).
        let deadline = Instant::now() + Duration::from_secs(10);
        while coro_live_frames() != live && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            coro_live_frames(),
            live,
            "a frame was not freed, or freed twice"
        );
        assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    }
}
