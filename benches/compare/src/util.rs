//! Timing, process memory, futex and the JSON line every bench prints.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, Ordering::Relaxed};
use std::time::Instant;

/// Command line: `compare BENCH [--iters N] [--reps R] [--live K] [--live2 K2] [--count N] [--secs S] [--workers W]`.
#[derive(Clone)]
pub struct Args {
    pub bench: String,
    pub iters: u64,
    pub reps: usize,
    pub live: u64,
    pub live2: u64,
    pub count: u64,
    pub secs: f64,
    pub workers: u32,
}

impl Args {
    pub fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let bench = it.next().unwrap_or_else(|| usage());
        let mut a = Args {
            bench,
            iters: 100_000,
            reps: 5,
            live: 0,
            live2: 0,
            count: 100_000,
            secs: 2.0,
            workers: 2,
        };
        while let Some(flag) = it.next() {
            let v = it.next().unwrap_or_else(|| usage());
            match flag.as_str() {
                "--iters" => a.iters = v.parse().unwrap_or_else(|_| usage()),
                "--reps" => a.reps = v.parse().unwrap_or_else(|_| usage()),
                "--live" => a.live = v.parse().unwrap_or_else(|_| usage()),
                "--live2" => a.live2 = v.parse().unwrap_or_else(|_| usage()),
                "--count" => a.count = v.parse().unwrap_or_else(|_| usage()),
                "--secs" => a.secs = v.parse().unwrap_or_else(|_| usage()),
                "--workers" => a.workers = v.parse().unwrap_or_else(|_| usage()),
                _ => usage(),
            }
        }
        a.reps = a.reps.max(1);
        a.iters = a.iters.max(1);
        a
    }
}

fn usage() -> ! {
    eprintln!("usage: compare BENCH [--iters N] [--reps R] [--live K] [--live2 K2] [--count N] [--secs S] [--workers W]");
    eprintln!("benches: {}", crate::BENCHES.join(" "));
    std::process::exit(2);
}

/// Counts how many hops of a ping-pong ran on another thread than the
/// hop before: what a "cross-thread" bench actually crosses. Used only by
/// the `*_threads` benches, never inside a timed or counted loop.
pub struct Hops {
    last: AtomicU64,
    hops: AtomicU64,
    changes: AtomicU64,
}

impl Hops {
    pub const fn new() -> Hops {
        Hops {
            last: AtomicU64::new(0),
            hops: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// One hop, on the calling thread.
    pub fn note(&self) {
        let me = thread_tag();
        if self.last.swap(me, Relaxed) != me {
            self.changes.fetch_add(1, Relaxed);
        }
        self.hops.fetch_add(1, Relaxed);
    }

    /// Prints the bench's JSON line: hops and the share that changed thread.
    pub fn print(&self, bench: &str) {
        let (hops, changes) = (self.hops.load(Relaxed), self.changes.load(Relaxed));
        println!(
            "{{\"bench\":\"{bench}\",\"hops\":{hops},\"thread_changes\":{changes},\"changed_share\":{:.4}}}",
            changes as f64 / hops.max(1) as f64
        );
    }
}

/// A number for the calling thread (1, 2, ... in order of first use).
/// Not inlined: a coroutine that moved threads must look it up afresh
/// after each suspension (a cached thread-local address would be the old
/// thread's).
#[inline(never)]
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: u64 = NEXT.fetch_add(1, Relaxed);
    }
    TAG.with(|t| *t)
}

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `one_rep` (which returns elapsed ns for `ops` operations) once to
/// warm up and then `reps` times; returns ns/op samples.
pub fn sample(reps: usize, ops: u64, mut one_rep: impl FnMut() -> u64) -> Vec<f64> {
    if reps > 1 {
        one_rep();
    }
    (0..reps).map(|_| one_rep() as f64 / ops as f64).collect()
}

pub fn time(f: impl FnOnce()) -> u64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as u64
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// A `/proc/self/status` field in bytes (e.g. "VmRSS", "VmPTE").
pub fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            if let Some(rest) = rest.strip_prefix(':') {
                let kb: u64 = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                return kb * 1024;
            }
        }
    }
    0
}

/// Lines of /proc/self/maps. Reads into a buffer reserved up front: near
/// `vm.max_map_count` a fresh allocation may itself fail.
pub fn map_count_into(buf: &mut String) -> usize {
    use std::io::Read;
    buf.clear();
    match std::fs::File::open("/proc/self/maps").and_then(|mut f| f.read_to_string(buf)) {
        Ok(_) => buf.lines().count(),
        Err(_) => 0,
    }
}

pub fn map_count() -> usize {
    map_count_into(&mut String::new())
}

pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// A futex sequence word: the waker bumps it, then wakes a waiter if one
/// said it sleeps (the caller keeps that count).
pub struct Event {
    seq: AtomicU32,
}

impl Event {
    pub const fn new() -> Event {
        Event {
            seq: AtomicU32::new(0),
        }
    }
    pub fn current(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }
    pub fn wait(&self, seen: u32) {
        futex_wait(&self.seq, seen);
    }
    pub fn bump(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
    pub fn wake(&self) {
        futex_wake(&self.seq);
    }
}

/// Pause-loop looks of a foreign thread that looks before it sleeps
/// (about 1.5 µs here), then 64 looks giving its CPU away: as an idle
/// coframe worker does.
const FOREIGN_PAUSES: u32 = 50;
pub const FOREIGN_LOOKS: u32 = FOREIGN_PAUSES + 64;

/// Where a coroutine or task hands a value (a token, or 1) to a thread
/// the runtime does not own, which sleeps on a futex until it comes.
pub struct Foreign {
    value: AtomicU64,
    event: Event,
    waiting: AtomicU64,
    /// How many times `take` looks before it sleeps (0 or FOREIGN_LOOKS).
    looks: u32,
}

impl Foreign {
    pub fn new(looks: u32) -> Foreign {
        Foreign {
            value: AtomicU64::new(0),
            event: Event::new(),
            waiting: AtomicU64::new(0),
            looks,
        }
    }

    /// Hands over `v` (not 0) and wakes the thread if it sleeps.
    pub fn give(&self, v: u64) {
        self.value.store(v, Ordering::SeqCst);
        self.event.bump();
        if self.waiting.load(Ordering::SeqCst) != 0 {
            self.event.wake();
        }
    }

    /// Waits for the value handed over and takes it.
    pub fn take(&self) -> u64 {
        loop {
            for i in 0..self.looks {
                if self.value.load(Ordering::Acquire) != 0 {
                    break;
                }
                if i < FOREIGN_PAUSES {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            let seen = self.event.current();
            let v = self.value.swap(0, Ordering::SeqCst);
            if v != 0 {
                return v;
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if self.value.load(Ordering::SeqCst) == 0 {
                self.event.wait(seen);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One bench's output: a JSON object on one line of stdout.
pub struct Report {
    fields: Vec<(String, String)>,
}

impl Report {
    pub fn new(bench: &str) -> Report {
        let mut r = Report { fields: Vec::new() };
        r.str("bench", bench);
        r
    }
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
        self.fields.push((k.into(), format!("\"{v}\"")));
        self
    }
    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        let s = if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        };
        self.fields.push((k.into(), s));
        self
    }
    pub fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.fields.push((k.into(), json.into()));
        self
    }
    pub fn samples(&mut self, iters: u64, samples: &[f64]) -> &mut Self {
        self.num("iters", iters as f64);
        self.num("ns_per_op", median(samples));
        let list: Vec<String> = samples.iter().map(|x| format!("{x:.3}")).collect();
        self.fields
            .push(("samples".into(), format!("[{}]", list.join(","))));
        self
    }
    pub fn print(&self) {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!("{{{}}}", body.join(","));
    }
}
