//! coro_mutex, coro_cond, coro_chan through the C ABI (DESIGN section 9):
//! hand-off order, deadlines, cancellation, misuse.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use coframe::ffi::*;

mod closure;
mod common;

use closure::{await_value, ms_from_now, settle, spawn, wait_for, P};

fn new_mutex() -> P<coro_mutex> {
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { coro_mutex_new(&mut m) }, CORO_OK);
    P(m)
}

fn new_cond() -> P<coro_cond> {
    let mut c = ptr::null_mut();
    assert_eq!(unsafe { coro_cond_new(&mut c) }, CORO_OK);
    P(c)
}

fn new_chan(size: usize, cap: usize) -> P<coro_chan> {
    let mut ch = ptr::null_mut();
    assert_eq!(unsafe { coro_chan_new(size, cap, &mut ch) }, CORO_OK);
    P(ch)
}

fn lock(m: P<coro_mutex>, deadline: i64) -> i32 {
    unsafe { coro_mutex_lock(m.get(), deadline) }
}

fn unlock(m: P<coro_mutex>) -> i32 {
    unsafe { coro_mutex_unlock(m.get()) }
}

fn send(ch: P<coro_chan>, v: u64, deadline: i64) -> i32 {
    unsafe { coro_chan_send(ch.get(), (&v as *const u64).cast(), deadline) }
}

fn recv(ch: P<coro_chan>, deadline: i64) -> (i32, u64) {
    let mut v = 0u64;
    let rc = unsafe { coro_chan_recv(ch.get(), (&mut v as *mut u64).cast(), deadline) };
    (rc, v)
}

// --- the mutex ---------------------------------------------------------

#[test]
fn the_mutex_hands_off_in_the_order_of_arrival() {
    let rt = common::runtime(2);
    let m = new_mutex();
    assert_eq!(lock(m, -1), CORO_OK, "the test thread takes it");
    static ORDER: StdMutex<Vec<usize>> = StdMutex::new(Vec::new());
    static ARRIVED: AtomicUsize = AtomicUsize::new(0);
    let mut ps = Vec::new();
    for i in 0..8 {
        ps.push(spawn(rt, 0, move || {
            ARRIVED.fetch_add(1, SeqCst);
            let rc = lock(m, -1);
            ORDER.lock().unwrap().push(i);
            // Held across a suspension: it may be.
            let y = coro_yield();
            unlock(m);
            (rc == CORO_OK && y == CORO_OK) as usize
        }));
        // One at a time into the queue.
        wait_for("arrival", || ARRIVED.load(SeqCst) == i + 1);
        settle();
    }
    assert_eq!(unlock(m), CORO_OK);
    for p in ps {
        assert_eq!(await_value(p), (CORO_OK, 1));
    }
    assert_eq!(*ORDER.lock().unwrap(), (0..8).collect::<Vec<_>>());
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn mutex_deadlines_and_trylock() {
    let rt = common::runtime(1);
    let m = new_mutex();
    assert_eq!(lock(m, -1), CORO_OK);
    assert_eq!(lock(m, -1), CORO_ESTATE, "the owner locks again");
    assert_eq!(unsafe { coro_mutex_trylock(m.get()) }, CORO_EBUSY);
    // A coroutine and a thread time out.
    let p = spawn(rt, 0, move || {
        let start = coro_now();
        let rc = lock(m, ms_from_now(30));
        ((rc == CORO_ETIMEDOUT) && coro_now() - start >= 30_000_000) as usize
    });
    let thread = std::thread::spawn(move || {
        let start = coro_now();
        let rc = lock(m, ms_from_now(30));
        (rc, coro_now() - start)
    });
    assert_eq!(
        await_value(p),
        (CORO_OK, 1),
        "the coroutine timed out, not before"
    );
    let (rc, waited) = thread.join().unwrap();
    assert_eq!(rc, CORO_ETIMEDOUT);
    assert!(waited >= 30_000_000);
    // Deadline 0 only tries.
    let p = spawn(rt, 0, move || (lock(m, 0) == CORO_ETIMEDOUT) as usize);
    assert_eq!(await_value(p), (CORO_OK, 1));
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(unlock(m), CORO_ESTATE, "unlocked already");
    assert_eq!(unsafe { coro_mutex_trylock(m.get()) }, CORO_OK);
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(lock(m, -2), CORO_EINVAL);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn mutex_misuse_answers_codes() {
    let rt = common::runtime(1);
    let m = new_mutex();
    assert_eq!(unsafe { coro_mutex_new(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_mutex_lock(ptr::null_mut(), -1) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_mutex_unlock(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_mutex_trylock(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_mutex_free(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(lock(m, -1), CORO_OK);
    // Another thread, and a coroutine, are not the owner.
    let other = std::thread::spawn(move || unlock(m)).join().unwrap();
    assert_eq!(other, CORO_ESTATE);
    let p = spawn(rt, 0, move || unlock(m) as usize);
    assert_eq!(await_value(p), (CORO_OK, CORO_ESTATE as usize));
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_ESTATE, "held");
    // Waited on.
    static PARKED: AtomicUsize = AtomicUsize::new(0);
    let p = spawn(rt, 0, move || {
        PARKED.store(1, SeqCst);
        let rc = lock(m, -1);
        unlock(m);
        rc as usize
    });
    wait_for("the waiter", || PARKED.load(SeqCst) == 1);
    settle();
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(await_value(p), (CORO_OK, 0));
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    // A worker thread outside a coroutine may not wait: an on_suspend
    // callback on a contended mutex.
    let m = new_mutex();
    assert_eq!(lock(m, -1), CORO_OK);
    static IN_CALLBACK: AtomicI32 = AtomicI32::new(1);
    unsafe extern "C" fn try_in_callback(t: coro_token, arg: *mut c_void) {
        IN_CALLBACK.store(unsafe { coro_mutex_lock(arg.cast(), -1) }, SeqCst);
        coro_resume(t);
    }
    let p = spawn(rt, 0, move || {
        coro_suspend(Some(try_in_callback), m.get().cast());
        0
    });
    assert_eq!(await_value(p).0, CORO_OK);
    assert_eq!(IN_CALLBACK.load(SeqCst), CORO_ESTATE);
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static DEFERS: AtomicUsize = AtomicUsize::new(0);
unsafe extern "C" fn count_defer(_: *mut c_void) {
    DEFERS.fetch_add(1, SeqCst);
}
unsafe extern "C" fn unlock_defer(m: *mut c_void) {
    unsafe { coro_mutex_unlock(m.cast()) };
}

#[test]
fn a_cancelled_waiter_is_never_handed_the_lock() {
    let rt = common::runtime(2);
    let m = new_mutex();
    assert_eq!(lock(m, -1), CORO_OK);
    static STEP: AtomicUsize = AtomicUsize::new(0);
    static GOT: AtomicUsize = AtomicUsize::new(0);
    // First in line, default mode: cancelled while it waits.
    let first = spawn(rt, 0, move || {
        coro_defer(Some(count_defer), ptr::null_mut());
        STEP.store(1, SeqCst);
        lock(m, -1);
        GOT.fetch_add(1, SeqCst);
        unlock(m);
        1
    });
    wait_for("the first waiter", || STEP.load(SeqCst) == 1);
    settle();
    // Second in line, cancel-returns mode: cancelled too, it sees it.
    static SECOND_SAW: AtomicI32 = AtomicI32::new(1);
    let second = spawn(rt, CORO_SPAWN_CANCEL_RETURNS, move || {
        STEP.store(2, SeqCst);
        let rc = lock(m, -1);
        SECOND_SAW.store(rc, SeqCst);
        rc as usize
    });
    wait_for("the second waiter", || STEP.load(SeqCst) == 2);
    settle();
    // Third in line gets it.
    let third = spawn(rt, 0, move || {
        STEP.store(3, SeqCst);
        let rc = lock(m, -1);
        unlock(m);
        rc as usize + 10
    });
    wait_for("the third waiter", || STEP.load(SeqCst) == 3);
    settle();
    assert_eq!(coro_cancel_async(first), CORO_OK);
    assert_eq!(
        DEFERS.load(SeqCst),
        1,
        "the parked waiter was finalized at once"
    );
    assert_eq!(coro_cancel_async(second), CORO_OK);
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(await_value(third), (CORO_OK, 10));
    assert_eq!(
        GOT.load(SeqCst),
        0,
        "the cancelled first waiter never got it"
    );
    // The second returns from its wait on its own worker, maybe after the
    // third is done: until then it is counted.
    wait_for("the second to return", || SECOND_SAW.load(SeqCst) != 1);
    assert_eq!(SECOND_SAW.load(SeqCst), CORO_ECANCELED);
    assert_eq!(
        unsafe { coro_mutex_free(m.get()) },
        CORO_OK,
        "nobody waits any more"
    );
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn a_defer_releases_the_lock_of_a_cancelled_holder() {
    let rt = common::runtime(1);
    let m = new_mutex();
    static HOLDS: AtomicUsize = AtomicUsize::new(0);
    let holder = spawn(rt, 0, move || {
        lock(m, -1);
        coro_defer(Some(unlock_defer), m.get().cast());
        HOLDS.store(1, SeqCst);
        coro_sleep_until(-1);
        0
    });
    wait_for("the holder", || HOLDS.load(SeqCst) == 1);
    settle();
    let waiter = spawn(rt, 0, move || {
        (lock(m, ms_from_now(5000)) == CORO_OK) as usize
    });
    settle();
    assert_eq!(coro_cancel_async(holder), CORO_OK);
    assert_eq!(await_value(waiter), (CORO_OK, 1), "the defer unlocked it");
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn threads_and_coroutines_share_a_mutex() {
    let rt = common::runtime(2);
    let m = new_mutex();
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = 20_000;
    let ps: Vec<_> = (0..3)
        .map(|_| {
            spawn(rt, 0, move || {
                for i in 0..n {
                    lock(m, -1);
                    let v = COUNT.load(Relaxed);
                    if i % 16 == 0 {
                        coro_yield();
                    }
                    COUNT.store(v + 1, Relaxed);
                    unlock(m);
                }
                0
            })
        })
        .collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n {
                    lock(m, -1);
                    let v = COUNT.load(Relaxed);
                    COUNT.store(v + 1, Relaxed);
                    unlock(m);
                }
            })
        })
        .collect();
    for p in ps {
        assert_eq!(await_value(p).0, CORO_OK);
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(COUNT.load(SeqCst), 5 * n);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

// --- the condition -------------------------------------------------------

#[test]
fn signal_wakes_one_broadcast_all_and_waits_relock() {
    let rt = common::runtime(2);
    let (m, c) = (new_mutex(), new_cond());
    static WOKEN: AtomicUsize = AtomicUsize::new(0);
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    static GO: AtomicUsize = AtomicUsize::new(0);
    let waiter = move || {
        lock(m, -1);
        WAITING.fetch_add(1, SeqCst);
        let mut ok = 0;
        while GO.load(SeqCst) == 0 {
            let rc = unsafe { coro_cond_wait(c.get(), m.get(), -1) };
            ok += (rc == CORO_OK) as usize;
        }
        WOKEN.fetch_add(1, SeqCst);
        // It holds the mutex again.
        let relocked = unsafe { coro_mutex_trylock(m.get()) } == CORO_EBUSY;
        unlock(m);
        (relocked && ok >= 1) as usize
    };
    let ps: Vec<_> = (0..4).map(|_| spawn(rt, 0, waiter)).collect();
    wait_for("four waiters", || WAITING.load(SeqCst) == 4);
    settle();
    // One signal wakes one, which sees GO still 0 and waits again.
    assert_eq!(unsafe { coro_cond_signal(c.get()) }, CORO_OK);
    settle();
    assert_eq!(WOKEN.load(SeqCst), 0);
    lock(m, -1);
    GO.store(1, SeqCst);
    assert_eq!(unsafe { coro_cond_broadcast(c.get()) }, CORO_OK);
    unlock(m);
    for p in ps {
        assert_eq!(await_value(p), (CORO_OK, 1));
    }
    assert_eq!(WOKEN.load(SeqCst), 4);
    // A timed-out wait holds the mutex again; a wait without it is refused.
    let p = spawn(rt, 0, move || {
        lock(m, -1);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), ms_from_now(20)) };
        let held = unsafe { coro_mutex_trylock(m.get()) } == CORO_EBUSY && unlock(m) == CORO_OK;
        let refused = unsafe { coro_cond_wait(c.get(), m.get(), -1) } == CORO_ESTATE;
        ((rc == CORO_ETIMEDOUT) && held && refused) as usize
    });
    assert_eq!(await_value(p), (CORO_OK, 1));
    // A thread waits too.
    let t = std::thread::spawn(move || {
        lock(m, -1);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), ms_from_now(10_000)) };
        let held = unlock(m) == CORO_OK;
        (rc, held)
    });
    std::thread::sleep(Duration::from_millis(50));
    let p = spawn(rt, 0, move || {
        lock(m, -1);
        unsafe { coro_cond_signal(c.get()) };
        unlock(m);
        0
    });
    assert_eq!(await_value(p).0, CORO_OK);
    assert_eq!(t.join().unwrap(), (CORO_OK, true));
    assert_eq!(unsafe { coro_cond_free(c.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn a_cancelled_cond_waiter_returns_with_the_mutex_and_the_signal_goes_on() {
    let rt = common::runtime(1);
    let (m, c) = (new_mutex(), new_cond());
    static STEP: AtomicUsize = AtomicUsize::new(0);
    static SAW: AtomicUsize = AtomicUsize::new(0);
    let cancelled = spawn(rt, CORO_SPAWN_CANCEL_RETURNS, move || {
        lock(m, -1);
        STEP.store(1, SeqCst);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), -1) };
        let held = unlock(m) == CORO_OK;
        SAW.store(1 + ((rc == CORO_ECANCELED) && held) as usize, SeqCst);
        0
    });
    wait_for("the first waiter", || STEP.load(SeqCst) == 1);
    settle();
    let second = spawn(rt, 0, move || {
        lock(m, -1);
        STEP.store(2, SeqCst);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), ms_from_now(5000)) };
        unlock(m);
        rc as usize
    });
    wait_for("the second waiter", || STEP.load(SeqCst) == 2);
    settle();
    assert_eq!(coro_cancel_async(cancelled), CORO_OK);
    assert_eq!(unsafe { coro_cond_signal(c.get()) }, CORO_OK);
    assert_eq!(
        await_value(second),
        (CORO_OK, 0),
        "the signal went to the live waiter"
    );
    wait_for("the cancelled waiter to return", || SAW.load(SeqCst) != 0);
    assert_eq!(
        SAW.load(SeqCst),
        2,
        "CORO_ECANCELED, with the mutex held again"
    );
    assert_eq!(unsafe { coro_cond_free(c.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn a_mutex_a_cond_wait_will_take_back_is_not_freed() {
    let rt = common::runtime(1);
    let (m, c) = (new_mutex(), new_cond());
    assert_eq!(unsafe { coro_cond_new(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_cond_free(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_cond_signal(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_cond_broadcast(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(
        unsafe { coro_cond_wait(ptr::null_mut(), m.get(), -1) },
        CORO_EINVAL
    );
    assert_eq!(
        unsafe { coro_cond_wait(c.get(), ptr::null_mut(), -1) },
        CORO_EINVAL
    );
    static STEP: AtomicUsize = AtomicUsize::new(0);
    // A coroutine waits on the condition: the mutex is free but bound.
    let waiter = spawn(rt, 0, move || {
        lock(m, -1);
        STEP.store(1, SeqCst);
        unsafe { coro_cond_wait(c.get(), m.get(), -1) };
        unlock(m);
        1
    });
    wait_for("the coroutine's wait", || STEP.load(SeqCst) == 1);
    settle();
    assert_eq!(
        unsafe { coro_mutex_trylock(m.get()) },
        CORO_OK,
        "released by the wait"
    );
    assert_eq!(unlock(m), CORO_OK);
    assert_eq!(
        unsafe { coro_mutex_free(m.get()) },
        CORO_ESTATE,
        "the waiter takes it back"
    );
    assert_eq!(unsafe { coro_cond_free(c.get()) }, CORO_ESTATE, "waited on");
    // Abandoned in the wait (default mode): the binding ends with it.
    assert_eq!(coro_cancel_async(waiter), CORO_OK);
    // A thread waits on the condition: bound as long.
    let t = std::thread::spawn(move || {
        lock(m, -1);
        STEP.store(2, SeqCst);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), ms_from_now(10_000)) };
        (rc, unlock(m))
    });
    wait_for("the thread's wait", || STEP.load(SeqCst) == 2);
    settle();
    assert_eq!(
        unsafe { coro_mutex_free(m.get()) },
        CORO_ESTATE,
        "the thread takes it back"
    );
    lock(m, -1);
    assert_eq!(unsafe { coro_cond_signal(c.get()) }, CORO_OK);
    unlock(m);
    assert_eq!(t.join().unwrap(), (CORO_OK, CORO_OK));
    assert_eq!(unsafe { coro_cond_free(c.get()) }, CORO_OK);
    assert_eq!(
        unsafe { coro_mutex_free(m.get()) },
        CORO_OK,
        "nobody takes it back now"
    );
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn a_cancelled_cond_waiter_takes_the_mutex_back_under_contention() {
    let rt = common::runtime(2);
    let (m, c) = (new_mutex(), new_cond());
    static STOP: AtomicUsize = AtomicUsize::new(0);
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    static BACK: AtomicI32 = AtomicI32::new(1);
    // Three coroutines keep the mutex handed from one to the next (each
    // yields while it holds it, so the others queue).
    let contenders: Vec<_> = (0..3)
        .map(|_| {
            spawn(rt, 0, move || {
                let mut n = 0;
                while STOP.load(SeqCst) == 0 {
                    assert_eq!(lock(m, -1), CORO_OK);
                    coro_yield();
                    assert_eq!(unlock(m), CORO_OK);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let waiter = spawn(rt, CORO_SPAWN_CANCEL_RETURNS, move || {
        assert_eq!(lock(m, -1), CORO_OK);
        WAITING.store(1, SeqCst);
        let rc = unsafe { coro_cond_wait(c.get(), m.get(), -1) };
        // It holds the mutex again, however long the queue.
        BACK.store(rc, SeqCst);
        unlock(m) as usize
    });
    wait_for("the cond waiter", || WAITING.load(SeqCst) == 1);
    settle();
    assert_eq!(coro_cancel_async(waiter), CORO_OK);
    // It cannot wait in line (cancelled): it must still get the mutex
    // while the others keep handing it on.
    wait_for("the cancelled waiter to take the mutex back", || {
        BACK.load(SeqCst) != 1
    });
    assert_eq!(BACK.load(SeqCst), CORO_ECANCELED);
    STOP.store(1, SeqCst);
    for p in contenders {
        let (rc, n) = await_value(p);
        assert_eq!(rc, CORO_OK);
        assert!(n > 0);
    }
    assert_eq!(unsafe { coro_cond_free(c.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_mutex_free(m.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn a_lock_left_by_a_finished_thread_is_nobody_elses() {
    let m = new_mutex();
    assert_eq!(
        std::thread::spawn(move || lock(m, -1)).join().unwrap(),
        CORO_OK
    );
    // Later threads may reuse the finished thread's stack and TLS
    // addresses; none of them is the owner.
    for _ in 0..8 {
        let rc = std::thread::spawn(move || unlock(m)).join().unwrap();
        assert_eq!(rc, CORO_ESTATE);
    }
    assert_eq!(unlock(m), CORO_ESTATE);
    assert_eq!(
        unsafe { coro_mutex_free(m.get()) },
        CORO_ESTATE,
        "still held"
    );
}

// --- the channel ---------------------------------------------------------

#[test]
fn channel_items_in_order_and_rendezvous() {
    let rt = common::runtime(2);
    let ch = new_chan(8, 4);
    let n = 10_000u64;
    let producer = spawn(rt, 0, move || {
        (0..n).all(|i| send(ch, i, -1) == CORO_OK) as usize
    });
    let consumer = spawn(rt, 0, move || {
        (0..n).all(|i| recv(ch, -1) == (CORO_OK, i)) as usize
    });
    assert_eq!(await_value(producer), (CORO_OK, 1));
    assert_eq!(await_value(consumer), (CORO_OK, 1), "in order, none lost");
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    // Rendezvous: a send waits for its receiver.
    let ch = new_chan(8, 0);
    assert_eq!(send(ch, 1, 0), CORO_ETIMEDOUT, "nobody receives");
    static SENT: AtomicUsize = AtomicUsize::new(0);
    let sender = spawn(rt, 0, move || {
        let rc = send(ch, 42, -1);
        SENT.store(1, SeqCst);
        rc as usize
    });
    settle();
    assert_eq!(SENT.load(SeqCst), 0, "blocked until received");
    assert_eq!(
        recv(ch, -1),
        (CORO_OK, 42),
        "a thread receives from a coroutine"
    );
    assert_eq!(await_value(sender), (CORO_OK, 0));
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn an_item_offered_to_a_cancelled_receiver_goes_to_the_next() {
    let rt = common::runtime(1);
    let ch = new_chan(8, 0);
    static STEP: AtomicUsize = AtomicUsize::new(0);
    let first = spawn(rt, 0, move || {
        STEP.store(1, SeqCst);
        recv(ch, -1).1 as usize
    });
    wait_for("the first receiver", || STEP.load(SeqCst) == 1);
    settle();
    let second = spawn(rt, CORO_SPAWN_CANCEL_RETURNS, move || {
        STEP.store(2, SeqCst);
        let (rc, v) = recv(ch, -1);
        (rc as i64 as usize) ^ (v as usize) << 8
    });
    wait_for("the second receiver", || STEP.load(SeqCst) == 2);
    settle();
    let third = spawn(rt, 0, move || {
        STEP.store(3, SeqCst);
        let (rc, v) = recv(ch, ms_from_now(5000));
        if rc == CORO_OK {
            v as usize
        } else {
            usize::MAX
        }
    });
    wait_for("the third receiver", || STEP.load(SeqCst) == 3);
    settle();
    assert_eq!(coro_cancel_async(first), CORO_OK);
    assert_eq!(coro_cancel_suspend(coro_token { id: 0 }), CORO_EINVAL);
    assert_eq!(coro_cancel_async(second), CORO_OK);
    assert_eq!(send(ch, 77, ms_from_now(5000)), CORO_OK);
    assert_eq!(
        await_value(third),
        (CORO_OK, 77),
        "the live receiver got it"
    );
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn close_wakes_waiters_and_receivers_drain_first() {
    let rt = common::runtime(1);
    let ch = new_chan(8, 2);
    assert_eq!(send(ch, 1, -1), CORO_OK);
    assert_eq!(send(ch, 2, -1), CORO_OK);
    static STEP: AtomicUsize = AtomicUsize::new(0);
    let blocked_sender = spawn(rt, 0, move || {
        STEP.store(1, SeqCst);
        send(ch, 3, -1) as i64 as usize
    });
    wait_for("the sender", || STEP.load(SeqCst) == 1);
    settle();
    assert_eq!(unsafe { coro_chan_close(ch.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_chan_close(ch.get()) }, CORO_ECLOSED);
    assert_eq!(
        await_value(blocked_sender),
        (CORO_OK, CORO_ECLOSED as i64 as usize)
    );
    assert_eq!(send(ch, 4, -1), CORO_ECLOSED);
    assert_eq!(recv(ch, -1), (CORO_OK, 1));
    assert_eq!(recv(ch, -1), (CORO_OK, 2));
    assert_eq!(recv(ch, -1).0, CORO_ECLOSED);
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    // A waiting receiver is woken by the close.
    let ch = new_chan(8, 1);
    let receiver = spawn(rt, 0, move || {
        STEP.store(2, SeqCst);
        recv(ch, -1).0 as i64 as usize
    });
    wait_for("the receiver", || STEP.load(SeqCst) == 2);
    settle();
    assert_eq!(
        unsafe { coro_chan_free(ch.get()) },
        CORO_ESTATE,
        "waited on"
    );
    assert_eq!(unsafe { coro_chan_close(ch.get()) }, CORO_OK);
    assert_eq!(
        await_value(receiver),
        (CORO_OK, CORO_ECLOSED as i64 as usize)
    );
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

#[test]
fn channel_misuse_and_deadlines() {
    let mut ch = ptr::null_mut();
    assert_eq!(
        unsafe { coro_chan_new(0, 4, &mut ch) },
        CORO_EINVAL,
        "item size 0"
    );
    assert_eq!(
        unsafe { coro_chan_new(usize::MAX, 4, &mut ch) },
        CORO_EINVAL
    );
    assert_eq!(
        unsafe { coro_chan_new(1 << 20, usize::MAX, &mut ch) },
        CORO_EINVAL
    );
    assert_eq!(unsafe { coro_chan_new(8, 4, ptr::null_mut()) }, CORO_EINVAL);
    let ch = new_chan(8, 1);
    assert_eq!(
        unsafe { coro_chan_send(ch.get(), ptr::null(), -1) },
        CORO_EINVAL
    );
    assert_eq!(
        unsafe { coro_chan_recv(ch.get(), ptr::null_mut(), -1) },
        CORO_EINVAL
    );
    assert_eq!(
        unsafe { coro_chan_send(ptr::null_mut(), ptr::null(), -1) },
        CORO_EINVAL
    );
    assert_eq!(recv(ch, 0).0, CORO_ETIMEDOUT);
    let start = coro_now();
    assert_eq!(recv(ch, ms_from_now(20)).0, CORO_ETIMEDOUT);
    assert!(coro_now() - start >= 20_000_000);
    assert_eq!(send(ch, 5, 0), CORO_OK);
    assert_eq!(send(ch, 6, ms_from_now(20)), CORO_ETIMEDOUT, "full");
    assert_eq!(recv(ch, -1), (CORO_OK, 5));
    assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    assert_eq!(unsafe { coro_chan_free(ptr::null_mut()) }, CORO_EINVAL);
    assert_eq!(unsafe { coro_chan_close(ptr::null_mut()) }, CORO_EINVAL);
    let msg = unsafe { core::ffi::CStr::from_ptr(coro_strerror(CORO_ECLOSED)) };
    assert_eq!(msg.to_str().unwrap(), "channel closed");
    let msg = unsafe { core::ffi::CStr::from_ptr(coro_strerror(CORO_EBUSY)) };
    assert_eq!(msg.to_str().unwrap(), "mutex held (try-lock)");
}

// --- cancellation around the edges of a wait -----------------------------

/// A cancel recorded while a coroutine runs, before it reaches a lock it
/// must wait for: the wait does not park (the worker finalizes it, or
/// requeues it with CORO_ECANCELED), and the mutex must not count it as
/// waiting ever after. Before, its "joining" count leaked and the mutex
/// could never be freed (CORO_ESTATE). Found by ffi-tests/sync_stress.c.
#[test]
fn a_cancel_before_the_park_leaves_no_waiter_counted() {
    let rt = common::runtime(2);
    for flags in [0, CORO_SPAWN_CANCEL_RETURNS] {
        let m = new_mutex();
        assert_eq!(lock(m, -1), CORO_OK);
        static ABOUT_TO_LOCK: AtomicUsize = AtomicUsize::new(0);
        static CANCELLED: AtomicUsize = AtomicUsize::new(0);
        static RC: AtomicI32 = AtomicI32::new(1);
        ABOUT_TO_LOCK.store(0, SeqCst);
        CANCELLED.store(0, SeqCst);
        RC.store(1, SeqCst);
        let p = spawn(rt, flags, move || {
            ABOUT_TO_LOCK.store(1, SeqCst);
            while CANCELLED.load(SeqCst) == 0 {
                std::hint::spin_loop();
            }
            RC.store(lock(m, -1), SeqCst);
            0
        });
        wait_for("the coroutine", || ABOUT_TO_LOCK.load(SeqCst) == 1);
        assert_eq!(coro_cancel_async(p), CORO_OK);
        CANCELLED.store(1, SeqCst);
        if flags != 0 {
            wait_for("its CORO_ECANCELED", || RC.load(SeqCst) != 1);
            assert_eq!(RC.load(SeqCst), CORO_ECANCELED);
        }
        settle();
        assert_eq!(unlock(m), CORO_OK);
        assert_eq!(
            unsafe { coro_mutex_free(m.get()) },
            CORO_OK,
            "a wait that never parked is still counted (flags {flags})"
        );
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

/// An item handed to a receiver, whose cancel then comes before it runs:
/// the receive returns the item (the cancel acts at its next suspension
/// point) rather than the body being dropped with it. Before, the
/// default-mode receiver was finalized without running and the item was
/// lost (406 of 1,000,000 in one ffi-tests/sync_stress.c run), and a
/// cancel-returns one got CORO_ECANCELED with the item in its buffer.
#[test]
fn an_item_handed_over_before_the_cancel_is_received() {
    // One worker, kept busy, so the receiver stays queued between the
    // hand-off and the cancel.
    let rt = common::runtime(1);
    for flags in [0, CORO_SPAWN_CANCEL_RETURNS] {
        let ch = new_chan(8, 0);
        static WAITING: AtomicUsize = AtomicUsize::new(0);
        static GOT: AtomicUsize = AtomicUsize::new(0);
        static BUSY: AtomicUsize = AtomicUsize::new(0);
        static RELEASE: AtomicUsize = AtomicUsize::new(0);
        static AFTER: AtomicUsize = AtomicUsize::new(0);
        for s in [&WAITING, &GOT, &BUSY, &RELEASE] {
            s.store(0, SeqCst);
        }
        AFTER.store(1, SeqCst);
        let receiver = spawn(rt, flags, move || {
            WAITING.store(1, SeqCst);
            let (rc, v) = recv(ch, -1);
            if rc == CORO_OK {
                GOT.store(v as usize, SeqCst);
            }
            // The next suspension point acts on the cancel: it never
            // returns (default mode) or says so (cancel-returns mode).
            AFTER.store(coro_yield() as isize as usize, SeqCst);
            0
        });
        wait_for("the receiver", || WAITING.load(SeqCst) == 1);
        settle();
        let busy = spawn(rt, 0, move || {
            BUSY.store(1, SeqCst);
            while RELEASE.load(SeqCst) == 0 {
                std::hint::spin_loop();
            }
            0
        });
        wait_for("the worker to be busy", || BUSY.load(SeqCst) == 1);
        assert_eq!(send(ch, 42, 0), CORO_OK, "handed to the waiting receiver");
        assert_eq!(coro_cancel_async(receiver), CORO_OK);
        RELEASE.store(1, SeqCst);
        assert_eq!(await_value(busy).0, CORO_OK);
        wait_for("the receiver to run", || GOT.load(SeqCst) != 0);
        settle();
        assert_eq!(
            GOT.load(SeqCst),
            42,
            "the item was received, the cancel acted after"
        );
        let after = if flags == 0 {
            1
        } else {
            CORO_ECANCELED as isize as usize
        };
        assert_eq!(
            AFTER.load(SeqCst),
            after,
            "the yield after it acted on the cancel"
        );
        assert_eq!(unsafe { coro_chan_free(ch.get()) }, CORO_OK);
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
