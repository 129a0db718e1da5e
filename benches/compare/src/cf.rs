//! coframe, called through its C ABI (`coframe::ffi`): the same functions,
//! the same calling convention and the same handles a C program uses.
//!
//! Every timed loop runs inside a *driver* coroutine that reads the clock
//! before and after, so the figure is not blurred by the main thread's
//! spawn and wake-up; the driver returns the elapsed ns as its result.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::*};

use coframe::ffi::*;

use crate::util::{self, now_ns, sample, status_bytes, Args, Foreign, Hops, Report};

type Entry = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

#[inline(always)]
pub(crate) fn check(rc: i32, what: &str) {
    if rc != 0 {
        fail(rc, what);
    }
}

#[cold]
#[inline(never)]
fn fail(rc: i32, what: &str) -> ! {
    // SAFETY: coro_strerror returns a static NUL-terminated string.
    let msg = unsafe { core::ffi::CStr::from_ptr(coro_strerror(rc)) };
    eprintln!(
        "coframe bench: {what} failed: {rc} ({})",
        msg.to_string_lossy()
    );
    std::process::abort();
}

pub fn rt_new(workers: u32) -> *mut coro_runtime {
    let cfg = coro_config {
        struct_size: core::mem::size_of::<coro_config>() as u32,
        workers,
        stack_size: 0,
    };
    let mut rt = ptr::null_mut();
    // SAFETY: cfg and rt are valid for the call.
    check(
        unsafe { coro_runtime_new(&cfg, &mut rt) },
        "coro_runtime_new",
    );
    rt
}

pub fn rt_shutdown(rt: *mut coro_runtime) {
    // SAFETY: a runtime from rt_new, shut down once.
    check(
        unsafe { coro_runtime_shutdown(rt) },
        "coro_runtime_shutdown",
    );
}

/// `coro_spawn` with a copy of `env` (nothing to drop).
fn spawn<T: Copy>(rt: *mut coro_runtime, entry: Entry, env: &T) -> coro_promise {
    spawn_with(rt, entry, env, 0)
}

pub(crate) fn spawn_with<T: Copy>(
    rt: *mut coro_runtime,
    entry: Entry,
    env: &T,
    flags: u32,
) -> coro_promise {
    let mut p = coro_promise { id: 0 };
    let size = core::mem::size_of::<T>();
    let env_ptr = if size == 0 {
        ptr::null()
    } else {
        env as *const T as *const c_void
    };
    // SAFETY: env points at size readable bytes; p is writable.
    check(
        unsafe { coro_spawn(rt, Some(entry), env_ptr, size, None, flags, &mut p) },
        "coro_spawn",
    );
    p
}

pub(crate) fn await_value(p: coro_promise) -> u64 {
    let mut out: *mut c_void = ptr::null_mut();
    // SAFETY: out is writable.
    check(unsafe { coro_await(p, &mut out) }, "coro_await");
    out as usize as u64
}

/// Spawns a driver from the main thread and waits for its result.
fn drive<T: Copy>(rt: *mut coro_runtime, entry: Entry, env: &T) -> u64 {
    await_value(spawn(rt, entry, env))
}

pub(crate) unsafe fn env<T: Copy>(p: *mut c_void) -> T {
    // SAFETY: the caller spawned this entry with a T.
    unsafe { *(p as *const T) }
}

unsafe extern "C" fn empty(_env: *mut c_void) -> *mut c_void {
    ptr::null_mut()
}

// ---------------------------------------------------------------- yield

#[derive(Clone, Copy)]
struct Loop {
    rt: *mut coro_runtime,
    n: u64,
    /// Spawn flags for the coroutines the driver starts (ping-pong).
    flags: u32,
    /// Ping-pong: note the thread of every hop.
    note: bool,
}

unsafe extern "C" fn yielder(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a u64.
    let n: u64 = unsafe { env(e) };
    for _ in 0..n {
        check(coro_yield(), "coro_yield");
    }
    ptr::null_mut()
}

/// Two coroutines on one worker yielding in turn, `n` yields each.
unsafe extern "C" fn yield_driver(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Loop.
    let l: Loop = unsafe { env(e) };
    let t0 = now_ns();
    let a = spawn(l.rt, yielder, &l.n);
    let b = spawn(l.rt, yielder, &l.n);
    await_value(a);
    await_value(b);
    (now_ns() - t0) as usize as *mut c_void
}

// ---------------------------------------------------------------- spawn

unsafe extern "C" fn spawn_driver(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Loop.
    let l: Loop = unsafe { env(e) };
    let t0 = now_ns();
    for _ in 0..l.n {
        let p = spawn(l.rt, empty, &());
        // SAFETY: NULL result is allowed.
        check(unsafe { coro_await(p, ptr::null_mut()) }, "coro_await");
    }
    (now_ns() - t0) as usize as *mut c_void
}

// ---------------------------------------------------------------- parked coroutines

static PARKED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn keep_token(tok: coro_token, arg: *mut c_void) {
    // SAFETY: arg is the coroutine's cell in a token array that outlives it.
    unsafe { &*(arg as *const AtomicU64) }.store(tok.id, Release);
    PARKED.fetch_add(1, Release);
}

/// Suspends once, handing its token to `cell`; cancelled at shutdown.
unsafe extern "C" fn parker(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a cell pointer.
    let cell: *const AtomicU64 = unsafe { env(e) };
    let _ = coro_suspend(Some(keep_token), cell as *mut c_void);
    ptr::null_mut()
}

#[derive(Clone, Copy)]
struct Spawner {
    rt: *mut coro_runtime,
    cells: *const AtomicU64,
    count: usize,
}

/// Spawns one detached parker per cell. Runs as a coroutine, so spawns
/// to its own worker go straight to the local queue.
unsafe extern "C" fn spawner(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Spawner whose cells outlive the parkers.
    let s: Spawner = unsafe { env(e) };
    for i in 0..s.count {
        // SAFETY: i < count.
        let cell = unsafe { s.cells.add(i) };
        let p = spawn(s.rt, parker, &cell);
        check(coro_detach(p), "coro_detach");
    }
    ptr::null_mut()
}

/// Spawns one parker per cell (detached) from a coroutine and waits
/// until all are suspended.
fn park_many(rt: *mut coro_runtime, cells: &[AtomicU64]) {
    let start = PARKED.load(Acquire);
    let s = Spawner {
        rt,
        cells: cells.as_ptr(),
        count: cells.len(),
    };
    drive(rt, spawner, &s);
    while PARKED.load(Acquire) - start < cells.len() as u64 {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn cells(n: u64) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// yield_coframe / spawn_coframe_coro, with `--live K` parked coroutines
/// on the same (one-worker) runtime. With `--live2 K2` (> K) it then parks
/// more, up to K2, and measures again in the same process, so the two
/// figures of the scale comparison are taken back to back.
pub fn one_worker_loop(a: &Args, driver: Entry, ops_per_iter: u64) {
    let rt = rt_new(1);
    let parked = cells(a.live);
    let t_park = util::time(|| park_many(rt, &parked));
    let l = Loop {
        rt,
        n: a.iters,
        flags: 0,
        note: false,
    };
    let s = sample(a.reps, a.iters * ops_per_iter, || drive(rt, driver, &l));
    let mut r = Report::new(&a.bench);
    r.samples(a.iters, &s)
        .num("live", a.live as f64)
        .num("park_ms", t_park as f64 / 1e6);
    let mut more = Vec::new();
    if a.live2 > a.live {
        more = cells(a.live2 - a.live);
        let t_park2 = util::time(|| park_many(rt, &more));
        let s2 = sample(a.reps, a.iters * ops_per_iter, || drive(rt, driver, &l));
        let list: Vec<String> = s2.iter().map(|x| format!("{x:.3}")).collect();
        r.num("live2", a.live2 as f64)
            .num("ns_per_op_2", util::median(&s2))
            .raw("samples_2", &format!("[{}]", list.join(",")))
            .num("park2_ms", t_park2 as f64 / 1e6);
    }
    if a.live > 0 || !more.is_empty() {
        // Shutdown sweeps every slot, a number of times that depends on
        // timing: under callgrind that would not cancel out between N1
        // and N2. The memory bench shuts down 1,000,000 coroutines.
        r.print();
        std::process::exit(0);
    }
    rt_shutdown(rt);
    r.print();
}

pub fn yield_coframe(a: &Args) {
    one_worker_loop(a, yield_driver, 2);
}

pub fn spawn_coframe_coro(a: &Args) {
    one_worker_loop(a, spawn_driver, 1);
}

/// Spawn + await from the main thread (not a runtime thread).
pub fn spawn_coframe_thread(a: &Args) {
    let rt = rt_new(1);
    let s = sample(a.reps, a.iters, || {
        util::time(|| {
            for _ in 0..a.iters {
                let p = spawn(rt, empty, &());
                await_value(p);
            }
        })
    });
    rt_shutdown(rt);
    Report::new(&a.bench).samples(a.iters, &s).print();
}

// ---------------------------------------------------------------- cross-thread

/// Suspends, swaps its token into the mailbox and resumes whatever token
/// was there (the other coroutine's).
unsafe extern "C" fn hand_off(tok: coro_token, arg: *mut c_void) {
    // SAFETY: arg is the driver's mailbox, alive while the driver awaits.
    let mailbox = unsafe { &*(arg as *const AtomicU64) };
    let other = mailbox.swap(tok.id, AcqRel);
    if other != 0 {
        check(coro_resume(coro_token { id: other }), "coro_resume");
    }
}

#[derive(Clone, Copy)]
struct Ping {
    n: u64,
    mailbox: *const AtomicU64,
}

/// `NOTE`: note the thread of every hop (`pingpong_*_threads`).
unsafe extern "C" fn pinger<const NOTE: bool>(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Ping.
    let p: Ping = unsafe { env(e) };
    for _ in 0..p.n {
        if NOTE {
            HOPS.note();
        }
        check(
            coro_suspend(Some(hand_off), p.mailbox as *mut c_void),
            "coro_suspend",
        );
    }
    // SAFETY: the mailbox outlives both coroutines.
    let other = unsafe { &*p.mailbox }.swap(0, AcqRel);
    if other != 0 {
        check(coro_resume(coro_token { id: other }), "coro_resume");
    }
    ptr::null_mut()
}

/// Spawns the two pingers (round robin puts them on different workers
/// from each other) and times `n` round trips.
unsafe extern "C" fn ping_driver(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Loop.
    let l: Loop = unsafe { env(e) };
    let mailbox = AtomicU64::new(0);
    let p = Ping {
        n: l.n,
        mailbox: &mailbox,
    };
    let t0 = now_ns();
    let body = if l.note {
        pinger::<true>
    } else {
        pinger::<false>
    };
    let a = spawn_with(l.rt, body, &p, l.flags);
    let b = spawn_with(l.rt, body, &p, l.flags);
    await_value(a);
    await_value(b);
    (now_ns() - t0) as usize as *mut c_void
}

pub fn pingpong_coframe(a: &Args) {
    pingpong(a, 0);
}

/// The same with `CORO_SPAWN_MIGRATABLE`: the resumed pinger moves to the
/// resumer's idle worker, so both end up on one worker, as tokio's tasks do.
pub fn pingpong_coframe_migratable(a: &Args) {
    pingpong(a, CORO_SPAWN_MIGRATABLE);
}

fn pingpong(a: &Args, flags: u32) {
    let s = pingpong_loop(a, flags, false);
    Report::new(&a.bench).samples(a.iters, &s).print();
}

/// `pingpong_coframe` once, noting the thread of every hop (not timed).
pub fn pingpong_coframe_threads(a: &Args) {
    pingpong_loop(
        &Args {
            reps: 1,
            ..a.clone()
        },
        0,
        true,
    );
    HOPS.print(&a.bench);
}

/// `pingpong_coframe_migratable` once, noting the thread of every hop.
pub fn pingpong_coframe_migratable_threads(a: &Args) {
    pingpong_loop(
        &Args {
            reps: 1,
            ..a.clone()
        },
        CORO_SPAWN_MIGRATABLE,
        true,
    );
    HOPS.print(&a.bench);
}

static HOPS: Hops = Hops::new();

fn pingpong_loop(a: &Args, flags: u32, note: bool) -> Vec<f64> {
    let rt = rt_new(2);
    let l = Loop {
        rt,
        n: a.iters,
        flags,
        note,
    };
    let s = sample(a.reps, a.iters, || drive(rt, ping_driver, &l));
    rt_shutdown(rt);
    s
}

unsafe extern "C" fn to_foreign(tok: coro_token, arg: *mut c_void) {
    // SAFETY: arg is the Foreign the main thread keeps alive.
    let f = unsafe { &*(arg as *const Foreign) };
    f.give(tok.id);
}

#[derive(Clone, Copy)]
struct ForeignEnv {
    n: u64,
    f: *const Foreign,
}

unsafe extern "C" fn foreign_coro(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a ForeignEnv.
    let fe: ForeignEnv = unsafe { env(e) };
    for _ in 0..fe.n {
        check(
            coro_suspend(Some(to_foreign), fe.f as *mut c_void),
            "coro_suspend",
        );
    }
    ptr::null_mut()
}

/// The main thread (not a runtime thread) resumes a coroutine and sleeps
/// on a futex until it has suspended again: one round trip per resume.
pub fn foreign_coframe(a: &Args) {
    foreign(a, 0);
}

/// The same, but the main thread looks for the token before it sleeps,
/// as an idle worker does (`util::FOREIGN_LOOKS`). The figure is then the resume's, not the
/// bench thread's futex wake-up.
pub fn foreign_coframe_looks(a: &Args) {
    foreign(a, util::FOREIGN_LOOKS);
}

fn foreign(a: &Args, looks: u32) {
    let rt = rt_new(1);
    let f = Foreign::new(looks);
    let s = sample(a.reps, a.iters, || {
        let fe = ForeignEnv { n: a.iters, f: &f };
        let p = spawn(rt, foreign_coro, &fe);
        // The first suspension: not timed.
        let mut t = f.take();
        let t0 = now_ns();
        for i in 0..a.iters {
            check(coro_resume(coro_token { id: t }), "coro_resume");
            if i + 1 < a.iters {
                t = f.take();
            }
        }
        await_value(p);
        now_ns() - t0
    });
    rt_shutdown(rt);
    Report::new(&a.bench).samples(a.iters, &s).print();
}

// ---------------------------------------------------------------- memory

pub fn mem_coframe(a: &Args) {
    let rt = rt_new(a.workers);
    let parked = cells(a.count);
    // Touch the token array so it is in the "before" figure.
    for c in &parked {
        c.store(0, Relaxed);
    }
    let rss0 = status_bytes("VmRSS");
    let pte0 = status_bytes("VmPTE");
    let maps0 = util::map_count();
    let t_spawn = util::time(|| park_many(rt, &parked));
    let rss1 = status_bytes("VmRSS");
    let pte1 = status_bytes("VmPTE");
    let maps1 = util::map_count();
    let live = coro_live_frames();
    let t_shut = util::time(|| rt_shutdown(rt));
    let n = a.count as f64;
    Report::new(&a.bench)
        .num("count", n)
        .num("live_frames", live as f64)
        .num("rss_before", rss0 as f64)
        .num("rss_after", rss1 as f64)
        .num("rss_per_coroutine", (rss1 as f64 - rss0 as f64) / n)
        .num("pte_per_coroutine", (pte1 as f64 - pte0 as f64) / n)
        .num("maps_before", maps0 as f64)
        .num("maps_after", maps1 as f64)
        .num("max_map_count", read_max_map_count())
        .num("spawn_ms", t_spawn as f64 / 1e6)
        .num("shutdown_ms", t_shut as f64 / 1e6)
        .print();
}

pub fn read_max_map_count() -> f64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------- timers

static WOKEN: AtomicU64 = AtomicU64::new(0);
static STARTED_LATE: AtomicU64 = AtomicU64::new(0);
/// The clock origin of every sleeper's deadline, set once all are parked.
static BASE: AtomicI64 = AtomicI64::new(0);

#[derive(Clone, Copy)]
struct Sleeper {
    offset: i64,
    late: *const AtomicI64,
    cell: *const AtomicU64,
}

/// Parks once (phase 1: so the spawn loop's length does not matter),
/// then sleeps until BASE + offset and records how late it woke.
unsafe extern "C" fn sleeper(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Sleeper whose pointers outlive it.
    let s: Sleeper = unsafe { env(e) };
    check(
        coro_suspend(Some(keep_token), s.cell as *mut c_void),
        "coro_suspend",
    );
    let deadline = BASE.load(Acquire) + s.offset;
    // SAFETY: as above.
    let late = unsafe { &*s.late };
    if coro_now() >= deadline {
        // Resumed after its deadline (the resume loop was slower than the
        // margin): it says nothing about the timers.
        STARTED_LATE.fetch_add(1, Relaxed);
        late.store(i64::MAX, Relaxed);
    } else {
        check(coro_sleep_until(deadline), "coro_sleep_until");
        late.store(coro_now() - deadline, Relaxed);
    }
    WOKEN.fetch_add(1, Release);
    ptr::null_mut()
}

#[derive(Clone, Copy)]
struct SleepSpawner {
    rt: *mut coro_runtime,
    late: *const AtomicI64,
    cells: *const AtomicU64,
    count: usize,
    spread: i64,
}

unsafe extern "C" fn sleep_spawner(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a SleepSpawner whose arrays outlive the sleepers.
    let s: SleepSpawner = unsafe { env(e) };
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..s.count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // SAFETY: i < count for both arrays.
        let sl = unsafe {
            Sleeper {
                offset: (x % s.spread as u64) as i64,
                late: s.late.add(i),
                cell: s.cells.add(i),
            }
        };
        check(coro_detach(spawn(s.rt, sleeper, &sl)), "coro_detach");
    }
    ptr::null_mut()
}

#[derive(Clone, Copy)]
struct Resumer {
    cells: *const AtomicU64,
    count: usize,
}

/// Resumes every parked sleeper, yielding now and then so that the ones
/// queued on this worker are not held up behind the loop.
unsafe extern "C" fn resumer(e: *mut c_void) -> *mut c_void {
    // SAFETY: spawned with a Resumer over the parked cells.
    let r: Resumer = unsafe { env(e) };
    let t0 = coro_now();
    for i in 0..r.count {
        // SAFETY: i < count.
        let tok = unsafe { &*r.cells.add(i) }.swap(0, AcqRel);
        check(coro_resume(coro_token { id: tok }), "coro_resume");
        if i % 256 == 255 {
            check(coro_yield(), "coro_yield");
        }
    }
    (coro_now() - t0) as usize as *mut c_void
}

/// `--count` sleepers with deadlines uniform over `--secs`: all park
/// first; then the clock origin is set 250 ms ahead and all are resumed,
/// each sleeping until origin + its offset. Reports how late they woke.
pub fn timers_coframe(a: &Args) {
    let rt = rt_new(a.workers);
    let n = a.count as usize;
    let late: Vec<AtomicI64> = (0..n).map(|_| AtomicI64::new(i64::MIN)).collect();
    let parked = cells(a.count);
    let margin = 250_000_000i64;
    let s = SleepSpawner {
        rt,
        late: late.as_ptr(),
        cells: parked.as_ptr(),
        count: n,
        spread: ((a.secs * 1e9) as i64).max(1),
    };
    let start = PARKED.load(Acquire);
    let spawn_ns = util::time(|| {
        drive(rt, sleep_spawner, &s);
        while PARKED.load(Acquire) - start < n as u64 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    BASE.store(coro_now() + margin, Release);
    let resume_ns = drive(
        rt,
        resumer,
        &Resumer {
            cells: parked.as_ptr(),
            count: n,
        },
    );
    while WOKEN.load(Acquire) < n as u64 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    rt_shutdown(rt);
    let mut v: Vec<i64> = late
        .iter()
        .map(|c| c.load(Relaxed))
        .filter(|&l| l != i64::MAX)
        .collect();
    v.sort_unstable();
    let m = v.len().max(1);
    let pct = |p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(f64::NAN, |&x| x as f64 / 1e3)
    };
    let early = v.iter().filter(|&&l| l < 0).count();
    Report::new(&a.bench)
        .num("count", a.count as f64)
        .num("started_late", STARTED_LATE.load(Relaxed) as f64)
        .num("spread_s", a.secs)
        .num("p50_us", pct(0.50))
        .num("p90_us", pct(0.90))
        .num("p99_us", pct(0.99))
        .num("max_us", pct(1.0))
        .num(
            "mean_us",
            v.iter().map(|&l| l as f64).sum::<f64>() / m as f64 / 1e3,
        )
        .num("early", early as f64)
        .num("spawn_ms", spawn_ns as f64 / 1e6)
        .num("resume_ms", resume_ns as f64 / 1e6)
        .num("margin_ms", margin as f64 / 1e6)
        .print();
}
