//! A coroutine that awaits a child its worker has queued, and nothing
//! else, runs the child at once, nested (`Local::run_awaited_now`). These
//! tests pin down what that must not change: who is running, where a
//! suspension's callback runs, and that the worker still gets to its
//! timers while a coroutine spawns and awaits in a loop.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use coframe::ffi::*;

mod common;
use common::runtime;

fn spawn(rt: *mut coro_runtime, entry: coro_entry, env: &[u8]) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    let rc = unsafe { coro_spawn(rt, entry, env.as_ptr().cast(), env.len(), None, 0, &mut p) };
    assert_eq!(rc, CORO_OK);
    p
}

fn await_value(p: coro_promise) -> (i32, u64) {
    let mut r = ptr::null_mut();
    let rc = unsafe { coro_await(p, &mut r) };
    (rc, r as usize as u64)
}

fn rt_of(env: *mut c_void) -> *mut coro_runtime {
    // SAFETY: every parent below is spawned with its runtime's address.
    unsafe { *(env as *const usize) as *mut coro_runtime }
}

unsafe extern "C" fn own_id(_env: *mut c_void) -> *mut c_void {
    coro_self_id() as usize as *mut c_void
}

/// Spawns children that return their own id and awaits each: the child
/// must see itself as running, and the parent itself again afterwards.
unsafe extern "C" fn ids_parent(env: *mut c_void) -> *mut c_void {
    let rt = rt_of(env);
    let me = coro_self_id();
    for _ in 0..1000 {
        let p = spawn(rt, Some(own_id), &[]);
        let (rc, child_said) = await_value(p);
        // The id came back through a pointer: 32 bits of it on a 32-bit
        // target.
        if rc != CORO_OK || child_said != p.id as usize as u64 || coro_self_id() != me {
            return 1 as *mut c_void;
        }
    }
    ptr::null_mut()
}

#[test]
fn an_awaited_child_runs_as_itself_and_the_awaiter_stays_itself() {
    let rt = runtime(1);
    let env = (rt as usize).to_ne_bytes();
    let (rc, failed) = await_value(spawn(rt, Some(ids_parent), &env));
    assert_eq!(rc, CORO_OK);
    assert_eq!(
        failed, 0,
        "a child saw another id, or the parent lost its own"
    );
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static TOKEN: AtomicU64 = AtomicU64::new(0);
/// What `coro_self_id` said inside the suspension's callback (+1, so 0
/// means "not yet").
static ID_IN_CALLBACK: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn hand_token(t: coro_token, _arg: *mut c_void) {
    ID_IN_CALLBACK.store(coro_self_id() + 1, SeqCst);
    TOKEN.store(t.id, SeqCst);
}

unsafe extern "C" fn suspends_then_returns(_env: *mut c_void) -> *mut c_void {
    if coro_suspend(Some(hand_token), ptr::null_mut()) != CORO_OK {
        return ptr::null_mut();
    }
    77 as *mut c_void
}

unsafe extern "C" fn suspending_parent(env: *mut c_void) -> *mut c_void {
    let p = spawn(rt_of(env), Some(suspends_then_returns), &[]);
    let (rc, v) = await_value(p);
    if rc != CORO_OK {
        return ptr::null_mut();
    }
    v as usize as *mut c_void
}

#[test]
fn an_awaited_child_that_suspends_hands_its_token_from_outside_any_coroutine() {
    let rt = runtime(1);
    let env = (rt as usize).to_ne_bytes();
    let parent = spawn(rt, Some(suspending_parent), &env);
    let token = loop {
        match TOKEN.load(SeqCst) {
            0 => std::thread::yield_now(),
            t => break t,
        }
    };
    // The callback runs after the switch, as on the worker: no coroutine
    // is current there, neither the child nor the parent it ran in.
    assert_eq!(ID_IN_CALLBACK.load(SeqCst), 1);
    assert_eq!(coro_resume(coro_token { id: token }), CORO_OK);
    assert_eq!(await_value(parent), (CORO_OK, 77));
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static WOKE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn sleeper(_env: *mut c_void) -> *mut c_void {
    let rc = coro_sleep_until(coro_now() + 1_000_000);
    WOKE.store(rc == CORO_OK, SeqCst);
    ptr::null_mut()
}

unsafe extern "C" fn empty(_env: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

/// Spawns and awaits empty children until the sleeper has woken, or
/// gives up after 2,000,000 (seconds, not a millisecond).
unsafe extern "C" fn spawn_loop(env: *mut c_void) -> *mut c_void {
    let rt = rt_of(env);
    for _ in 0..2_000_000 {
        if WOKE.load(SeqCst) {
            return ptr::null_mut();
        }
        let (rc, _) = await_value(spawn(rt, Some(empty), &[]));
        if rc != CORO_OK {
            return 2 as *mut c_void;
        }
    }
    1 as *mut c_void
}

#[test]
fn a_spawn_and_await_loop_leaves_its_worker_time_for_timers() {
    let rt = runtime(1);
    let env = (rt as usize).to_ne_bytes();
    let sleeping = spawn(rt, Some(sleeper), &[]);
    let looping = spawn(rt, Some(spawn_loop), &env);
    assert_eq!(
        await_value(looping),
        (CORO_OK, 0),
        "the sleeper never woke while the loop ran"
    );
    assert_eq!(await_value(sleeping).0, CORO_OK);
    assert!(WOKE.load(SeqCst));
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

/// A parent that a plain thread cancels while it runs, and that then
/// spawns a child and awaits it (`wait_for` holds it until the cancel is
/// done); `CHILD_RAN`, `CONTINUED` and `ERRDEFERS` say what happened.
struct CancelCase {
    /// The child spins until the cancel is done (else the parent does,
    /// before it spawns the child).
    child_waits: bool,
    /// The parent spawns the child first and yields until it has finished,
    /// then spins until the cancel is done, then awaits.
    child_first: bool,
    running: AtomicBool,
    cancelled: AtomicBool,
    child_ran: AtomicBool,
    continued: AtomicBool,
    await_rc: AtomicU64,
    errdefers: AtomicU64,
}

impl CancelCase {
    const fn new(child_waits: bool, child_first: bool) -> CancelCase {
        CancelCase {
            child_waits,
            child_first,
            running: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            child_ran: AtomicBool::new(false),
            continued: AtomicBool::new(false),
            await_rc: AtomicU64::new(0),
            errdefers: AtomicU64::new(0),
        }
    }

    fn wait_for_cancel(&self) {
        while !self.cancelled.load(SeqCst) {
            std::thread::yield_now();
        }
    }
}

/// The env of both coroutines: the runtime and the case.
#[repr(C)]
struct CaseEnv {
    rt: usize,
    case: *const CancelCase,
}

fn case_of(env: *mut c_void) -> (*mut coro_runtime, &'static CancelCase) {
    // SAFETY: spawned below with a CaseEnv whose case is a static.
    let e = unsafe { &*(env as *const CaseEnv) };
    (e.rt as *mut coro_runtime, unsafe { &*e.case })
}

unsafe extern "C" fn count_errdefer(arg: *mut c_void) {
    // SAFETY: registered with a static case.
    unsafe { &*(arg as *const CancelCase) }
        .errdefers
        .fetch_add(1, SeqCst);
}

unsafe extern "C" fn case_child(env: *mut c_void) -> *mut c_void {
    let (_, case) = case_of(env);
    case.child_ran.store(true, SeqCst);
    if case.child_waits {
        case.running.store(true, SeqCst);
        case.wait_for_cancel();
    }
    5 as *mut c_void
}

unsafe extern "C" fn case_parent(env: *mut c_void) -> *mut c_void {
    let (rt, case) = case_of(env);
    let arg = case as *const CancelCase as *mut c_void;
    assert_eq!(coro_errdefer(Some(count_errdefer), arg), CORO_OK);
    if !case.child_waits && !case.child_first {
        case.running.store(true, SeqCst);
        case.wait_for_cancel();
    }
    let p = spawn_case(rt, case_child, case, 0);
    if case.child_first {
        // The child runs whole on this worker while the parent yields.
        while !case.child_ran.load(SeqCst) {
            assert_eq!(coro_yield(), CORO_OK);
        }
        case.running.store(true, SeqCst);
        case.wait_for_cancel();
    }
    let (rc, _) = await_value(p);
    case.await_rc.store(rc as u64, SeqCst);
    case.continued.store(true, SeqCst);
    ptr::null_mut()
}

/// Spawns `entry` on `rt` with a `CaseEnv` for `case`, with `flags`.
fn spawn_case(
    rt: *mut coro_runtime,
    entry: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    case: &'static CancelCase,
    flags: u32,
) -> coro_promise {
    let env = CaseEnv {
        rt: rt as usize,
        case,
    };
    let mut p = coro_promise { id: 0 };
    let size = core::mem::size_of::<CaseEnv>();
    let env_ptr = (&env as *const CaseEnv).cast();
    let rc = unsafe { coro_spawn(rt, Some(entry), env_ptr, size, None, flags, &mut p) };
    assert_eq!(rc, CORO_OK);
    p
}

/// Runs `case` with its parent spawned with `flags`; returns when the
/// parent's errdefer has run.
fn run_cancel_case(case: &'static CancelCase, flags: u32) {
    let rt = runtime(1);
    let parent = spawn_case(rt, case_parent, case, flags);
    while !case.running.load(SeqCst) {
        std::thread::yield_now();
    }
    assert_eq!(coro_cancel_async(parent), CORO_OK);
    case.cancelled.store(true, SeqCst);
    while case.errdefers.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    assert_eq!(case.errdefers.load(SeqCst), 1);
}

/// Runs `default` and `returns` (the same case) in both cancel modes: the
/// default-mode parent must never go on past its await, and the
/// cancel-returns one must get CORO_ECANCELED from it.
fn cancel_acted_on_in_both_modes(default: &'static CancelCase, returns: &'static CancelCase) {
    run_cancel_case(default, 0);
    assert!(
        !default.continued.load(SeqCst),
        "the cancelled parent went on"
    );
    run_cancel_case(returns, CORO_SPAWN_CANCEL_RETURNS);
    assert!(returns.continued.load(SeqCst));
    assert_eq!(returns.await_rc.load(SeqCst), CORO_ECANCELED as u64);
}

static PENDING: CancelCase = CancelCase::new(false, false);

/// Cancelled before its await, the parent parks in it and its
/// cancellation cancels the child, which the worker has not run yet: the
/// child must not run nested in its place, nor the await return.
#[test]
fn an_awaiter_cancelled_before_its_await_does_not_run_its_child() {
    run_cancel_case(&PENDING, 0);
    assert!(
        !PENDING.continued.load(SeqCst),
        "the cancelled parent went on"
    );
    assert!(
        !PENDING.child_ran.load(SeqCst),
        "the cancelled parent's child ran"
    );
}

static RUNNING: CancelCase = CancelCase::new(true, false);
static RUNNING_CR: CancelCase = CancelCase::new(true, false);

/// Cancelled while its child runs nested in its await, the parent acts on
/// the cancel when the child is done, as a parked parent would have: in
/// default mode it never goes on; in cancel-returns mode the await
/// returns CORO_ECANCELED, not the child's value.
#[test]
fn an_awaiter_cancelled_while_its_child_runs_nested_does_not_go_on() {
    cancel_acted_on_in_both_modes(&RUNNING, &RUNNING_CR);
}

static DONE_FIRST: CancelCase = CancelCase::new(false, true);
static DONE_FIRST_CR: CancelCase = CancelCase::new(false, true);

/// Cancelled while it runs, after its child has already finished: its
/// await need not wait, but it is still a suspension point, so the cancel
/// is acted on there. Default mode: the parent never goes on (it did, with
/// the child's value, before this was fixed); cancel-returns mode: the
/// await returns CORO_ECANCELED.
#[test]
fn an_awaiter_cancelled_after_its_child_finished_does_not_go_on() {
    cancel_acted_on_in_both_modes(&DONE_FIRST, &DONE_FIRST_CR);
    assert!(DONE_FIRST.child_ran.load(SeqCst));
    assert!(DONE_FIRST_CR.child_ran.load(SeqCst));
}
