//! The peers: corosensei (raw switching), may (a stackful runtime) and
//! tokio (the async runtime a Rust user would pick), each shaped like the
//! coframe bench it stands beside.

// `black_box(())` as a suspend's or resume's input keeps the compiler from
// seeing through the switch; clippy's unit_arg would have it dropped.
#![allow(clippy::unit_arg)]

use std::hint::black_box;
use std::sync::Arc;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::util::{self, now_ns, sample, status_bytes, Args, Foreign, Hops, Report};

const STACK: usize = 64 * 1024;

// ---------------------------------------------------------------- corosensei

/// One resume + one suspend of a coroutine on a reused stack.
pub fn yield_corosensei(a: &Args) {
    resume_round_trips(a, |y| y.suspend(black_box(())));
}

/// The suspend of `yield_corosensei_fn`, a call away from the loop as
/// `coro_yield` is from a coroutine's code.
#[inline(never)]
fn suspend_in_a_call(y: &Yielder<(), ()>) {
    y.suspend(black_box(()));
}

/// `yield_corosensei` with the suspend one (non-inlined) call deep. Every
/// library yield is reached that way, and it costs corosensei's switch its
/// return-address prediction: the switch out returns to the resumer, not
/// to the caller that the CPU's return stack expects, and the next resume
/// lands in a function whose `ret` it mispredicts too.
pub fn yield_corosensei_fn(a: &Args) {
    resume_round_trips(a, suspend_in_a_call);
}

/// Times `a.iters` resumes of a coroutine whose body calls `suspend` in
/// a loop, and prints the report. Generic, so a closure is inlined into
/// the body and a non-inlined function stays a direct call.
fn resume_round_trips(a: &Args, suspend: impl Fn(&Yielder<(), ()>) + 'static) {
    let stack = DefaultStack::new(STACK).expect("stack");
    let mut co = Coroutine::with_stack(stack, move |y: &Yielder<(), ()>, ()| loop {
        suspend(y);
    });
    let n = a.iters;
    let s = sample(a.reps, n, || {
        util::time(|| {
            for _ in 0..n {
                black_box(co.resume(black_box(())));
            }
        })
    });
    Report::new(&a.bench).samples(n, &s).print();
    // Dropping a suspended coroutine unwinds it; not timed.
    drop(co);
}

/// Create + run to completion + drop, the stack taken back each time.
pub fn spawn_corosensei(a: &Args) {
    let mut stack = Some(DefaultStack::new(STACK).expect("stack"));
    let n = a.iters;
    let s = sample(a.reps, n, || {
        util::time(|| {
            for _ in 0..n {
                let mut co =
                    Coroutine::with_stack(stack.take().unwrap(), |_y: &Yielder<(), ()>, ()| {
                        black_box(())
                    });
                black_box(co.resume(()));
                stack = Some(co.into_stack());
            }
        })
    });
    Report::new(&a.bench).samples(n, &s).print();
}

/// Coroutines with `DefaultStack::default()` (1 MiB, mprotect guard),
/// each suspended once, until creating one fails.
pub fn mem_corosensei(a: &Args) {
    let mut maps_buf = String::with_capacity(32 << 20);
    let rss0 = status_bytes("VmRSS");
    let maps0 = util::map_count_into(&mut maps_buf);
    let mut all: Vec<Coroutine<(), (), ()>> = Vec::with_capacity(a.count as usize);
    let mut error = String::from("none (count reached)");
    let t0 = now_ns();
    while (all.len() as u64) < a.count {
        let stack = match DefaultStack::new(1024 * 1024) {
            Ok(s) => s,
            Err(e) => {
                error = e.to_string();
                break;
            }
        };
        let mut co = Coroutine::with_stack(stack, |y: &Yielder<(), ()>, ()| {
            y.suspend(());
        });
        if let CoroutineResult::Return(()) = co.resume(()) {
            unreachable!();
        }
        all.push(co);
    }
    let t_ns = now_ns() - t0;
    let rss1 = status_bytes("VmRSS");
    let maps1 = util::map_count_into(&mut maps_buf);
    let n = all.len() as f64;
    Report::new(&a.bench)
        .num("count", n)
        .str("error", &error)
        .num("rss_per_coroutine", (rss1 as f64 - rss0 as f64) / n)
        .num("maps_before", maps0 as f64)
        .num("maps_after", maps1 as f64)
        .num("max_map_count", crate::cf::read_max_map_count())
        .num("spawn_ms", t_ns as f64 / 1e6)
        .print();
    // Unwinding 32,000 stacks is not what is measured: leave.
    std::process::exit(0);
}

// ---------------------------------------------------------------- may

/// Two may coroutines on one worker calling `yield_now` in turn.
pub fn yield_may(a: &Args) {
    may::config().set_workers(1);
    let n = a.iters;
    let s = sample(a.reps, 2 * n, || {
        util::time(|| {
            let body = move || {
                for _ in 0..n {
                    may::coroutine::yield_now();
                }
            };
            // SAFETY: the bodies touch no thread-local state.
            let x = unsafe { may::coroutine::spawn(body) };
            // SAFETY: as above.
            let y = unsafe { may::coroutine::spawn(body) };
            x.join().unwrap();
            y.join().unwrap();
        })
    });
    Report::new(&a.bench).samples(n, &s).print();
}

// ---------------------------------------------------------------- tokio

fn multi(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `tokio::spawn(async {}).await` on a current-thread runtime, inside block_on.
pub fn spawn_tokio(a: &Args) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n = a.iters;
    let s = sample(a.reps, n, || {
        rt.block_on(async {
            let t0 = now_ns();
            for _ in 0..n {
                tokio::spawn(async {}).await.unwrap();
            }
            now_ns() - t0
        })
    });
    Report::new(&a.bench).samples(n, &s).print();
}

/// Two tasks on a two-worker runtime ping-ponging through two `Notify`s.
pub fn pingpong_tokio(a: &Args) {
    let s = pingpong_tokio_loop::<false>(a);
    Report::new(&a.bench).samples(a.iters, &s).print();
}

/// `pingpong_tokio` once, noting the thread of every hop (not timed).
pub fn pingpong_tokio_threads(a: &Args) {
    pingpong_tokio_loop::<true>(&Args {
        reps: 1,
        ..a.clone()
    });
    HOPS.print(&a.bench);
}

static HOPS: Hops = Hops::new();

fn pingpong_tokio_loop<const NOTE: bool>(a: &Args) -> Vec<f64> {
    let rt = multi(2);
    let n = a.iters;
    sample(a.reps, n, || {
        rt.block_on(async {
            let ping = Arc::new(Notify::new());
            let pong = Arc::new(Notify::new());
            let (ping2, pong2) = (ping.clone(), pong.clone());
            let t0 = now_ns();
            let x = tokio::spawn(async move {
                for _ in 0..n {
                    if NOTE {
                        HOPS.note();
                    }
                    ping.notify_one();
                    pong.notified().await;
                }
            });
            let y = tokio::spawn(async move {
                for _ in 0..n {
                    ping2.notified().await;
                    if NOTE {
                        HOPS.note();
                    }
                    pong2.notify_one();
                }
            });
            x.await.unwrap();
            y.await.unwrap();
            now_ns() - t0
        })
    })
}

/// Two tasks pinned to two threads, as coframe's pinned pair is: each
/// thread runs its own current-thread runtime (a tokio program pins a task
/// to a thread this way), and the tasks ping-pong through two `Notify`s,
/// so every hop wakes the other thread.
pub fn pingpong_tokio_pinned(a: &Args) {
    let n = a.iters;
    let s = sample(a.reps, n, || {
        let ping = Arc::new(Notify::new());
        let pong = Arc::new(Notify::new());
        let start = Arc::new(std::sync::Barrier::new(2));
        let (ping2, pong2, start2) = (ping.clone(), pong.clone(), start.clone());
        let other = std::thread::spawn(move || {
            let rt = current_thread();
            start2.wait();
            rt.block_on(async {
                tokio::spawn(async move {
                    for _ in 0..n {
                        ping2.notified().await;
                        pong2.notify_one();
                    }
                })
                .await
                .unwrap()
            })
        });
        let rt = current_thread();
        start.wait();
        let t0 = now_ns();
        rt.block_on(async {
            tokio::spawn(async move {
                for _ in 0..n {
                    ping.notify_one();
                    pong.notified().await;
                }
            })
            .await
            .unwrap()
        });
        let t = now_ns() - t0;
        other.join().unwrap();
        t
    });
    Report::new(&a.bench).samples(n, &s).print();
}

fn current_thread() -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_current_thread();
    if std::env::var_os("NOIO").is_none() {
        b.enable_all();
    }
    b.build().expect("tokio runtime")
}

/// The main thread (not a runtime thread) wakes a task on a one-worker
/// runtime and sleeps on a futex until the task answers: coframe's
/// `foreign_coframe` with a `Notify` for the resume.
pub fn foreign_tokio(a: &Args) {
    foreign_tokio_with(a, 0);
}

/// The same, the main thread looking before it sleeps.
pub fn foreign_tokio_looks(a: &Args) {
    foreign_tokio_with(a, util::FOREIGN_LOOKS);
}

fn foreign_tokio_with(a: &Args, looks: u32) {
    let rt = multi(1);
    let n = a.iters;
    let s = sample(a.reps, n, || {
        let f = Arc::new(Foreign::new(looks));
        let wake = Arc::new(Notify::new());
        let (f2, wake2) = (f.clone(), wake.clone());
        let task = rt.spawn(async move {
            // As the coroutine's first suspension: before the clock starts.
            f2.give(1);
            for i in 0..n {
                wake2.notified().await;
                if i + 1 < n {
                    f2.give(1);
                }
            }
        });
        f.take();
        let t0 = now_ns();
        for i in 0..n {
            wake.notify_one();
            if i + 1 < n {
                f.take();
            }
        }
        rt.block_on(task).unwrap();
        now_ns() - t0
    });
    Report::new(&a.bench).samples(n, &s).print();
}

const MSG: usize = 64;

async fn echo_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => {
                if s.write_all(&buf[..k]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn accept_loop(l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                tokio::spawn(echo_conn(s));
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

/// One connection, a 64-byte message out and back: client and server
/// tasks on a runtime of `--workers` (2) threads.
pub fn echo_rtt_tokio(a: &Args) {
    let rt = multi(a.workers as usize);
    let n = a.iters;
    let port = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(accept_loop(l));
        port
    });
    let s = sample(a.reps, n, || {
        rt.block_on(async {
            tokio::spawn(async move {
                let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                c.set_nodelay(true).unwrap();
                let out = [7u8; MSG];
                let mut back = [0u8; MSG];
                let t0 = now_ns();
                for _ in 0..n {
                    c.write_all(&out).await.unwrap();
                    c.read_exact(&mut back).await.unwrap();
                }
                now_ns() - t0
            })
            .await
            .unwrap()
        })
    });
    Report::new(&a.bench).samples(n, &s).print();
    rt.shutdown_background();
}

/// The throughput server: prints `{"port":P}`, echoes until stdin closes.
pub fn echo_server_tokio(a: &Args) {
    use std::io::{Read, Write};
    let rt = multi(a.workers as usize);
    let port = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(accept_loop(l));
        port
    });
    println!("{{\"port\":{port}}}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    rt.shutdown_background();
}
