//! Misuse the library detects, each shown answering its code (the rows of
//! docs/MISUSE.md that no other test showed): awaits from the wrong
//! place, a promise awaited twice at once, waits on a worker thread
//! outside a coroutine, and every suspension point refusing to suspend
//! while a blocking lock is noted held (CP.52).

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::*};

use coframe::ffi::*;

mod closure;
mod common;

use closure::{await_value, ms_from_now, settle, spawn, wait_for, P};

/// A coroutine parked in `coro_suspend`, its token in `TOKENS[i]`.
static TOKENS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

unsafe extern "C" fn stash(t: coro_token, arg: *mut c_void) {
    TOKENS[arg as usize].store(t.id, SeqCst);
}

/// Spawns a coroutine that parks once (token in `TOKENS[i]`), then returns 7.
fn parked(rt: *mut coro_runtime, i: usize) -> coro_promise {
    TOKENS[i].store(0, SeqCst);
    let p = spawn(rt, 0, move || {
        assert_eq!(coro_suspend(Some(stash), i as *mut c_void), CORO_OK);
        7
    });
    wait_for("the coroutine to park", || TOKENS[i].load(SeqCst) != 0);
    p
}

fn resume(i: usize) {
    let t = coro_token {
        id: TOKENS[i].swap(0, SeqCst),
    };
    assert_eq!(coro_resume(t), CORO_OK);
}

#[test]
fn a_coroutine_awaiting_another_runtimes_promise_is_refused() {
    let (rt1, rt2) = (common::runtime(1), common::runtime(1));
    let q = parked(rt2, 0);
    let p = spawn(rt1, 0, move || {
        let mut out = ptr::null_mut();
        (unsafe { coro_await(q, &mut out) }) as usize
    });
    assert_eq!(await_value(p), (CORO_OK, CORO_EINVAL as usize));
    // The refused await did not consume the promise.
    resume(0);
    assert_eq!(await_value(q), (CORO_OK, 7));
    assert_eq!(unsafe { coro_runtime_shutdown(rt1) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt2) }, CORO_OK);
}

#[test]
fn a_second_await_or_a_detach_while_one_awaits_is_stale() {
    let rt = common::runtime(1);
    let p = parked(rt, 1);
    static AWAITING: AtomicUsize = AtomicUsize::new(0);
    let first = std::thread::spawn(move || {
        AWAITING.store(1, SeqCst);
        await_value(p)
    });
    wait_for("the first awaiter", || AWAITING.load(SeqCst) == 1);
    settle();
    // The detach first: had the first await not begun, it would succeed
    // (and fail the test) rather than leave a second await waiting.
    assert_eq!(coro_detach(p), CORO_ESTALE, "the first await holds it");
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { coro_await(p, &mut out) }, CORO_ESTALE);
    assert_eq!(coro_cancel_async(p), CORO_ESTALE);
    resume(1);
    assert_eq!(
        first.join().unwrap(),
        (CORO_OK, 7),
        "the first await ends as it would"
    );
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

/// What each call answered in an `on_suspend` callback (a worker thread
/// outside any coroutine), in the order of `probe_waits`.
static IN_CALLBACK: [AtomicI32; 5] = [const { AtomicI32::new(1) }; 5];

#[derive(Clone, Copy)]
struct Objects {
    other: coro_promise,
    m: *mut coro_mutex,
    c: *mut coro_cond,
    empty: *mut coro_chan,
    full: *mut coro_chan,
}

unsafe extern "C" fn probe_waits(t: coro_token, arg: *mut c_void) {
    // SAFETY: the test's Objects, alive until the coroutine returns.
    let o = unsafe { *(arg as *const Objects) };
    let mut out = ptr::null_mut();
    let mut v = 0u64;
    // SAFETY: live objects; `v` is the channels' 8 bytes.
    let codes = unsafe {
        [
            coro_await(o.other, &mut out),
            // Uncontended: the worker takes the mutex without waiting,
            // then the condition wait refuses.
            match coro_mutex_lock(o.m, -1) {
                CORO_OK => {
                    let rc = coro_cond_wait(o.c, o.m, -1);
                    coro_mutex_unlock(o.m);
                    rc
                }
                rc => 100 + rc,
            },
            coro_chan_recv(o.empty, (&mut v as *mut u64).cast(), -1),
            coro_chan_send(o.full, (&v as *const u64).cast(), -1),
            // A deadline passed: only a try, never a wait.
            coro_chan_recv(o.empty, (&mut v as *mut u64).cast(), 0),
        ]
    };
    for (slot, rc) in IN_CALLBACK.iter().zip(codes) {
        slot.store(rc, SeqCst);
    }
    coro_resume(t);
}

fn new_objects(other: coro_promise) -> Objects {
    let mut o = Objects {
        other,
        m: ptr::null_mut(),
        c: ptr::null_mut(),
        empty: ptr::null_mut(),
        full: ptr::null_mut(),
    };
    unsafe {
        assert_eq!(coro_mutex_new(&mut o.m), CORO_OK);
        assert_eq!(coro_cond_new(&mut o.c), CORO_OK);
        assert_eq!(coro_chan_new(8, 1, &mut o.empty), CORO_OK);
        assert_eq!(coro_chan_new(8, 1, &mut o.full), CORO_OK);
        let v = 1u64;
        assert_eq!(
            coro_chan_send(o.full, (&v as *const u64).cast(), 0),
            CORO_OK
        );
    }
    o
}

fn free_objects(o: Objects) {
    unsafe {
        assert_eq!(coro_mutex_free(o.m), CORO_OK);
        assert_eq!(coro_cond_free(o.c), CORO_OK);
        assert_eq!(coro_chan_free(o.empty), CORO_OK);
        assert_eq!(coro_chan_free(o.full), CORO_OK);
    }
}

#[test]
fn a_worker_thread_outside_a_coroutine_never_waits() {
    let rt = common::runtime(1);
    let o = new_objects(parked(rt, 2));
    let probe = P(&o as *const Objects as *mut Objects);
    let p = spawn(rt, 0, move || {
        coro_suspend(Some(probe_waits), probe.get().cast()) as usize
    });
    assert_eq!(await_value(p), (CORO_OK, CORO_OK as usize));
    let codes: Vec<i32> = IN_CALLBACK.iter().map(|c| c.load(SeqCst)).collect();
    assert_eq!(
        codes,
        [
            CORO_ESTATE,
            CORO_ESTATE,
            CORO_ESTATE,
            CORO_ESTATE,
            CORO_ETIMEDOUT
        ],
        "await, cond wait, recv from an empty channel, send to a full one; a mere try"
    );
    resume(2);
    assert_eq!(
        await_value(o.other),
        (CORO_OK, 7),
        "the refused await took nothing"
    );
    free_objects(o);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn every_suspension_point_refuses_while_a_blocking_lock_is_noted() {
    let rt = common::runtime(1);
    let o = new_objects(parked(rt, 3));
    // Held by this thread, so the coroutine's lock would wait.
    let held = new_objects(coro_promise { id: 0 });
    assert_eq!(unsafe { coro_mutex_lock(held.m, -1) }, CORO_OK);
    let (fds, op, hp) = {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds, P(&o as *const Objects as *mut Objects), P(held.m))
    };
    let rfd = fds[0];
    let p = spawn(rt, 0, move || {
        // SAFETY: the test keeps the objects until this coroutine returns.
        let o = unsafe { *op.get() };
        let what = c"the test's lock".as_ptr();
        let mut out = ptr::null_mut();
        let mut v = 0u64;
        let mut byte = 0u8;
        let bp = (&mut byte as *mut u8).cast();
        let mut conn = -1;
        // SAFETY: all-zero is a valid sockaddr.
        let addr: libc::sockaddr = unsafe { core::mem::zeroed() };
        let addrlen = core::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
        assert_eq!(
            unsafe { coro_mutex_lock(o.m, -1) },
            CORO_OK,
            "before the note"
        );
        assert_eq!(coro_lock_note_acquire(what), CORO_OK);
        let codes = unsafe {
            [
                coro_yield(),
                coro_await(o.other, &mut out),
                coro_wait_fd(rfd, CORO_READABLE, -1),
                coro_sleep_until(ms_from_now(1)),
                coro_mutex_lock(hp.get(), -1),
                coro_cond_wait(o.c, o.m, -1),
                coro_chan_recv(o.empty, (&mut v as *mut u64).cast(), -1),
                coro_chan_send(o.full, (&v as *const u64).cast(), -1),
                // The blocking-style I/O calls refuse before they look at
                // the descriptor (a blocking pipe, with data or not).
                coro_read(rfd, bp, 1, 0, ptr::null_mut(), -1),
                coro_recv(rfd, bp, 1, 0, ptr::null_mut(), -1),
                coro_accept(rfd, ptr::null_mut(), ptr::null_mut(), 0, &mut conn, -1),
                coro_connect(rfd, &addr, addrlen, -1),
            ]
        };
        assert_eq!(coro_lock_note_release(what), CORO_OK);
        // The refusals left everything as it was: it still holds `m`.
        let still_held = unsafe { coro_mutex_unlock(o.m) } == CORO_OK;
        let refused = codes.iter().filter(|&&rc| rc == CORO_ELOCKHELD).count();
        if still_held {
            refused
        } else {
            100 + refused
        }
    });
    assert_eq!(
        await_value(p),
        (CORO_OK, 12),
        "twelve refusals, the mutex still held"
    );
    resume(3);
    assert_eq!(await_value(o.other), (CORO_OK, 7));
    assert_eq!(unsafe { coro_mutex_unlock(held.m) }, CORO_OK);
    free_objects(o);
    free_objects(held);
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
