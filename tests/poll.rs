//! The poller through the C ABI: fd readiness, deadlines, cancellation.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};

use coframe::ffi::*;

mod common;

fn runtime() -> *mut coro_runtime {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { coro_runtime_new(ptr::null(), &mut rt) }, CORO_OK);
    rt
}

fn socketpair() -> [i32; 2] {
    let mut fds = [0; 2];
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) },
        0
    );
    fds
}

unsafe extern "C" fn wait_readable(env: *mut c_void) -> *mut c_void {
    let fd = unsafe { *(env as *const i32) };
    let rc = coro_wait_fd(fd, CORO_READABLE, -1);
    rc as isize as *mut c_void
}

#[test]
fn wait_fd_wakes_on_data() {
    let rt = runtime();
    let fds = socketpair();
    let p = spawn_on_fd(rt, wait_readable, &fds[0]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_byte(fds[1]);
    await_ok(p);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    unsafe { libc::close(fds[0]) };
    unsafe { libc::close(fds[1]) };
}

static LATE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn wait_with_deadline(env: *mut c_void) -> *mut c_void {
    let fd = unsafe { *(env as *const i32) };
    let deadline = coro_now() + 30_000_000;
    let rc = coro_wait_fd(fd, CORO_READABLE, deadline);
    if coro_now() < deadline {
        LATE.fetch_add(1, SeqCst);
    }
    rc as isize as *mut c_void
}

#[test]
fn wait_fd_times_out_not_before_its_deadline() {
    let rt = runtime();
    let fds = socketpair();
    let p = spawn_on_fd(rt, wait_with_deadline, &fds[0]);
    let mut r = ptr::null_mut();
    assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
    assert_eq!(r as isize, CORO_ETIMEDOUT as isize);
    assert_eq!(LATE.load(SeqCst), 0, "woke before the deadline");
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}

static CLOSED: AtomicI32 = AtomicI32::new(0);
/// Set by `wait_and_defer_close` just before it waits.
static WAITING: AtomicI32 = AtomicI32::new(0);

unsafe extern "C" fn close_fd(arg: *mut c_void) {
    unsafe { libc::close(arg as usize as i32) };
    CLOSED.fetch_add(1, SeqCst);
}

unsafe extern "C" fn wait_and_defer_close(env: *mut c_void) -> *mut c_void {
    let fd = unsafe { *(env as *const i32) };
    coro_defer(Some(close_fd), fd as usize as *mut c_void);
    WAITING.store(1, SeqCst);
    let rc = coro_wait_fd(fd, CORO_READABLE, -1);
    rc as isize as *mut c_void
}

unsafe extern "C" fn sleep_forever(_env: *mut c_void) -> *mut c_void {
    coro_sleep_until(-1) as isize as *mut c_void
}

#[test]
fn cancel_and_shutdown_end_waits() {
    let rt = runtime();
    let fds = socketpair();
    let p = spawn_on_fd(rt, wait_and_defer_close, &fds[0]);
    // Not a bare sleep: on a loaded machine the coroutine may not have
    // started 20 ms after its spawn (an i686 run under load saw that).
    // From its flag to its park is a few instructions.
    let started = std::time::Instant::now();
    while WAITING.load(SeqCst) == 0 && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(coro_cancel_async(p), CORO_OK);
    assert_eq!(
        CLOSED.load(SeqCst),
        1,
        "the defer closed the fd before cancel returned"
    );
    // Cancel-returns mode: the wait returns CORO_ECANCELED.
    let mut q = coro_promise { id: 0 };
    assert_eq!(
        unsafe {
            coro_spawn(
                rt,
                Some(sleep_forever),
                ptr::null(),
                0,
                None,
                CORO_SPAWN_CANCEL_RETURNS,
                &mut q,
            )
        },
        CORO_OK
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(coro_cancel_suspend(coro_token { id: 0 }), CORO_EINVAL);
    // Many sleepers left for shutdown to end.
    for _ in 0..1000 {
        let mut s = coro_promise { id: 0 };
        assert_eq!(
            unsafe { coro_spawn(rt, Some(sleep_forever), ptr::null(), 0, None, 0, &mut s) },
            CORO_OK
        );
        assert_eq!(coro_detach(s), CORO_OK);
    }
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    unsafe { libc::close(fds[1]) };
}

#[test]
fn bad_descriptors_are_refused() {
    assert_eq!(coro_wait_fd(-1, CORO_READABLE, -1), CORO_EINVAL);
    assert_eq!(coro_wait_fd(0, 0, -1), CORO_EINVAL);
    assert_eq!(coro_wait_fd(0, 8, -1), CORO_EINVAL);
}

/// Spawns `entry` with a copy of `*fd` as its environment.
fn spawn_on_fd(
    rt: *mut coro_runtime,
    entry: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    fd: &i32,
) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    let env = (fd as *const i32).cast();
    assert_eq!(
        unsafe { coro_spawn(rt, Some(entry), env, 4, None, 0, &mut p) },
        CORO_OK
    );
    p
}

fn await_ok(p: coro_promise) {
    let mut r = ptr::null_mut();
    assert_eq!(unsafe { coro_await(p, &mut r) }, CORO_OK);
    assert_eq!(r as isize, CORO_OK as isize);
}

fn write_byte(fd: i32) {
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

fn read_byte(fd: i32) {
    let mut b = 0u8;
    assert_eq!(unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) }, 1);
}

/// Two coroutines of one worker wait on one descriptor at once (the second
/// through a duplicate, since one epoll registers a descriptor once): one
/// byte wakes both.
#[test]
fn two_waits_on_one_descriptor_on_one_worker() {
    let rt = common::runtime(1);
    let fds = socketpair();
    let a = spawn_on_fd(rt, wait_readable, &fds[0]);
    let b = spawn_on_fd(rt, wait_readable, &fds[0]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_byte(fds[1]);
    await_ok(a);
    await_ok(b);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    unsafe { libc::close(fds[0]) };
    unsafe { libc::close(fds[1]) };
}

/// A descriptor waited on again and again keeps waking its waits (the
/// registration a ready wait leaves behind is re-armed), and so does a new
/// file that takes over a closed descriptor's number (the kernel dropped
/// the old registration; the wait adds one for the new file).
#[test]
fn waits_rearm_and_survive_a_reused_descriptor_number() {
    let rt = common::runtime(1);
    let fds = socketpair();
    for _ in 0..3 {
        let p = spawn_on_fd(rt, wait_readable, &fds[0]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        write_byte(fds[1]);
        await_ok(p);
        read_byte(fds[0]);
    }
    let fresh = socketpair();
    // fds[0]'s number now names `fresh[0]`'s file; the old file is closed.
    assert_eq!(unsafe { libc::dup2(fresh[0], fds[0]) }, fds[0]);
    unsafe { libc::close(fresh[0]) };
    unsafe { libc::close(fds[1]) };
    let p = spawn_on_fd(rt, wait_readable, &fds[0]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_byte(fresh[1]);
    await_ok(p);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
    unsafe { libc::close(fds[0]) };
    unsafe { libc::close(fresh[1]) };
}

// A migratable coroutine that moved to another worker while it waited
// must end its wait in the poller it began it in. Found by
// ffi-tests/chaos.c (issue 21): the wait was ended in the new worker's
// poller, by key, and each worker's keys start at 0, so it ended another
// coroutine's wait there (that coroutine never woke: its event and its
// deadline found no record) and left its own record, registration and
// descriptor duplicate in the old poller for good.

static MOVER_TID: AtomicUsize = AtomicUsize::new(0);
static MOVER_PARKED: AtomicUsize = AtomicUsize::new(0);
static VICTIM_TID: AtomicUsize = AtomicUsize::new(0);
static VICTIM_PARKED: AtomicUsize = AtomicUsize::new(0);
static VICTIM_WOKE: AtomicUsize = AtomicUsize::new(0);
static CANCELLER_TID: AtomicUsize = AtomicUsize::new(0);

/// The calling thread (a number: pthread_t is an integer or a pointer).
fn tid() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Cancel-returns and migratable: parks in a wait on its first worker's
/// poller; once cancelled, notes where it runs.
unsafe extern "C" fn mover(_env: *mut c_void) -> *mut c_void {
    MOVER_PARKED.store(1, SeqCst);
    let rc = coro_sleep_until(-1);
    MOVER_TID.store(tid(), SeqCst);
    rc as isize as *mut c_void
}

/// Waits for its deadline on the other worker: the first wait there, so
/// its key is the mover's key too.
unsafe extern "C" fn victim(_env: *mut c_void) -> *mut c_void {
    VICTIM_TID.store(tid(), SeqCst);
    VICTIM_PARKED.store(1, SeqCst);
    let rc = coro_sleep_until(coro_now() + 300_000_000);
    VICTIM_WOKE.store(1, SeqCst);
    rc as isize as *mut c_void
}

unsafe extern "C" fn nothing(_env: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

/// Runs on the victim's worker, whose queue is then empty: the mover it
/// cancels is resumed here and moves here (docs/API.md, migratable).
unsafe extern "C" fn canceller(env: *mut c_void) -> *mut c_void {
    CANCELLER_TID.store(tid(), SeqCst);
    let p = coro_promise {
        id: unsafe { *(env as *const u64) },
    };
    coro_cancel_async(p) as isize as *mut c_void
}

fn spawn_flags(rt: *mut coro_runtime, entry: Entry, env: &[u8], flags: u32) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    assert_eq!(
        unsafe {
            coro_spawn(
                rt,
                Some(entry),
                env.as_ptr().cast(),
                env.len(),
                None,
                flags,
                &mut p,
            )
        },
        CORO_OK
    );
    p
}

type Entry = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

fn wait_for(flag: &AtomicUsize) {
    let start = std::time::Instant::now();
    while flag.load(SeqCst) == 0 {
        assert!(
            start.elapsed().as_secs() < 10,
            "a coroutine never got there"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // It set the flag just before its wait: let it park.
    std::thread::sleep(std::time::Duration::from_millis(20));
}

#[test]
fn a_migrated_coroutine_ends_its_wait_in_the_poller_it_began_it_in() {
    let rt = common::runtime(2);
    // Spawns go round robin: worker 0, 1, 0, 1.
    let moving = spawn_flags(
        rt,
        mover,
        &[],
        CORO_SPAWN_MIGRATABLE | CORO_SPAWN_CANCEL_RETURNS,
    );
    wait_for(&MOVER_PARKED);
    let victim_p = spawn_flags(rt, victim, &[], 0);
    wait_for(&VICTIM_PARKED);
    let filler = spawn_flags(rt, nothing, &[], 0);
    let cancel = spawn_flags(rt, canceller, &moving.id.to_ne_bytes(), 0);
    let mut r = ptr::null_mut();
    assert_eq!(unsafe { coro_await(cancel, &mut r) }, CORO_OK);
    assert_eq!(r as isize, CORO_OK as isize);
    assert_eq!(unsafe { coro_await(filler, ptr::null_mut()) }, CORO_OK);
    let start = std::time::Instant::now();
    while MOVER_TID.load(SeqCst) == 0 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // What the test relies on: all three met on the victim's worker.
    assert_eq!(CANCELLER_TID.load(SeqCst), VICTIM_TID.load(SeqCst));
    assert_eq!(
        MOVER_TID.load(SeqCst),
        VICTIM_TID.load(SeqCst),
        "the cancelled mover did not move to the canceller's idle worker"
    );
    // The victim's deadline (300 ms) must still end its wait.
    let start = std::time::Instant::now();
    while VICTIM_WOKE.load(SeqCst) == 0 && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        VICTIM_WOKE.load(SeqCst),
        1,
        "the victim's wait was ended by the mover's and never woke"
    );
    assert_eq!(unsafe { coro_await(victim_p, &mut r) }, CORO_OK);
    assert_eq!(r as isize, CORO_OK as isize);
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
