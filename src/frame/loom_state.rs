//! Loom models of the state word: every interleaving of two consuming
//! calls on one frame. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
//!
//! The body lives in a `loom::cell::UnsafeCell`, so loom itself reports any
//! access that `EXEC` ownership failed to serialise (rule 3), and every
//! model checks: defers ran once, the env was dropped once, the frame was
//! freed once and not touched after, and await saw the right status.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

use super::state::*;

#[derive(Default)]
struct Body {
    defers: usize,
    env_drops: usize,
    body_resumed: bool,
    callback_reads: usize,
    freed: usize,
}

struct Frame {
    state: State,
    body: UnsafeCell<Body>,
}

impl Frame {
    fn spawn(cancel_returns: bool) -> (Arc<Frame>, u32) {
        let f = Arc::new(Frame {
            state: State::new(),
            body: UnsafeCell::new(Body::default()),
        });
        let gen = f.state.init(cancel_returns);
        (f, gen)
    }

    fn parked(cancel_returns: bool) -> (Arc<Frame>, u32, u32) {
        let (f, gen) = Frame::spawn(cancel_returns);
        let Park::Parked { seq } = f.state.park_holding() else {
            unreachable!()
        };
        assert_eq!(f.state.unhold(), Unhold::Parked);
        (f, gen, seq)
    }

    /// The worker suspends the body with a user's `on_suspend`
    /// (harness::run): parks holding `EXEC`, runs the callback, which
    /// hands the token out through `handed` and reads the environment,
    /// then does what `unhold` says. `Some(seq)`: a token was made, and
    /// whoever it was handed to consumes it (it may have already).
    fn suspend_with_callback(&self, handed: Option<&AtomicU32>) -> Option<u32> {
        match self.state.park_holding() {
            Park::Parked { seq } => {
                if let Some(h) = handed {
                    h.store(seq + 1, SeqCst);
                }
                // The callback reads the frame: loom reports it if a
                // finalizer or a free could touch the body meanwhile.
                self.touch(|b| b.callback_reads += 1);
                match self.state.unhold() {
                    Unhold::Parked => {}
                    Unhold::Requeue => self.run(),
                    Unhold::Finalize => self.finalize(),
                }
                Some(seq)
            }
            Park::Finalize => {
                self.finalize();
                None
            }
            Park::Requeue => {
                self.run();
                None
            }
        }
    }

    fn touch<R>(&self, f: impl FnOnce(&mut Body) -> R) -> R {
        self.body.with_mut(|b| {
            // SAFETY: loom checks the exclusivity this relies on.
            let b = unsafe { &mut *b };
            assert_eq!(b.freed, 0, "frame touched after it was freed");
            f(b)
        })
    }

    /// The EXEC owner ends the frame (harness::finalize).
    fn finalize(&self) {
        self.touch(|b| {
            b.defers += 1;
            b.env_drops += 1;
        });
        match self.state.complete(self.state.load().has(CANCELLED)) {
            Complete::Kept => {}
            Complete::Free => self.free(),
            Complete::WakeAwaiter => {
                if self.state.release_exec() {
                    self.free()
                }
            }
        }
    }

    /// A worker runs a scheduled frame (harness::run) to completion.
    fn run(&self) {
        let s = self.state.load();
        if s.has(CANCELLED) && !s.has(CANCEL_RETURNS) {
            return self.finalize();
        }
        self.touch(|b| b.body_resumed = true);
        self.finalize();
    }

    fn free(&self) {
        self.touch(|b| b.freed += 1);
        // Re-open the cell: the slot is reused, not unmapped.
        // SAFETY: the freeing thread is the frame's last owner; loom checks it.
        self.body.with_mut(|b| unsafe { (*b).freed = 0 });
        // SAFETY: as above.
        self.body.with_mut(|b| unsafe { (*b).defers += 1000 });
        self.state.release();
    }

    fn act(&self, c: Consume) {
        match c {
            Consume::Schedule => self.run(),
            Consume::Finalize => self.finalize(),
            Consume::Dropped => {}
            Consume::Free => self.free(),
        }
    }

    /// After every thread joined: the frame was freed exactly once and its
    /// defers ran once (the 1000 marks the free).
    fn check_freed_once(&self) -> Body {
        // SAFETY: every thread joined; Body is plain counters (no Drop).
        let b = self.body.with(|b| unsafe { std::ptr::read(b) });
        assert_eq!(b.defers, 1001, "defers once, then freed once");
        assert_eq!(b.env_drops, 1);
        let s = self.state.load();
        assert_eq!(s.0 & 0xff, 0, "slot left free: {s:?}");
        b
    }
}

fn both_modes(f: impl Fn(bool) + Sync + Send + 'static) {
    let f = std::sync::Arc::new(f);
    for cr in [false, true] {
        let f = f.clone();
        loom::model(move || f(cr));
    }
}

#[test]
fn loom_suspend_vs_cancel_async() {
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        let worker = {
            let f = f.clone();
            thread::spawn(move || f.suspend_with_callback(None))
        };
        assert_eq!(f.state.cancel_async(gen, false).map(|c| f.act(c)), Ok(()));
        if let Some(seq) = worker.join().unwrap() {
            // The token's holder comes late; cancel-returns resumes the body.
            let c = f.state.consume_token(seq, false).unwrap();
            f.act(c);
        }
        f.check_freed_once();
    });
}

#[test]
fn loom_resume_vs_cancel_async() {
    both_modes(|cr| {
        let (f, gen, seq) = Frame::parked(cr);
        let poller = {
            let f = f.clone();
            thread::spawn(move || {
                let c = f
                    .state
                    .consume_token(seq, false)
                    .expect("the token is valid once");
                f.act(c);
                assert_eq!(f.state.consume_token(seq, false), Err(Stale));
            })
        };
        let c = f
            .state
            .cancel_async(gen, false)
            .expect("the promise is valid once");
        f.act(c);
        poller.join().unwrap();
        assert_eq!(f.state.cancel_async(gen, false), Err(Stale));
        f.check_freed_once();
    });
}

#[test]
fn loom_resume_vs_cancel_suspend() {
    both_modes(|cr| {
        let (f, gen, seq) = Frame::parked(cr);
        let resumer = {
            let f = f.clone();
            thread::spawn(move || f.state.consume_token(seq, false).map(|c| f.act(c)).is_ok())
        };
        let cancelled = f.state.consume_token(seq, true).map(|c| f.act(c)).is_ok();
        let resumed = resumer.join().unwrap();
        assert!(cancelled ^ resumed, "exactly one consumes the token");
        // The promise's holder collects: await while done or after.
        loop {
            match f.state.await_start(gen, || ()).unwrap().0 {
                AwaitStart::Ready { cancelled: c, free } => {
                    assert_eq!(c, cancelled, "await reports the cancellation");
                    if free {
                        f.free();
                    }
                    break;
                }
                AwaitStart::Wait => {
                    while !f.state.load().has(DONE) {
                        thread::yield_now();
                    }
                    let (c, free) = f.state.await_finish(gen).unwrap();
                    assert_eq!(c, cancelled);
                    if free {
                        f.free();
                    }
                    break;
                }
            }
        }
        let b = f.check_freed_once();
        // Cancel-returns mode hands the cancellation to the body.
        assert_eq!(b.body_resumed, resumed || cr);
    });
}

#[test]
fn loom_await_vs_cancel_suspend() {
    both_modes(|cr| {
        let (f, gen, seq) = Frame::parked(cr);
        let awaiter = {
            let f = f.clone();
            thread::spawn(move || match f.state.await_start(gen, || ()).unwrap().0 {
                AwaitStart::Ready { cancelled, free } => {
                    if free {
                        f.free();
                    }
                    cancelled
                }
                AwaitStart::Wait => {
                    while !f.state.load().has(DONE) {
                        thread::yield_now();
                    }
                    let (cancelled, free) = f.state.await_finish(gen).unwrap();
                    if free {
                        f.free();
                    }
                    cancelled
                }
            })
        };
        let c = f.state.consume_token(seq, true).unwrap();
        f.act(c);
        assert!(awaiter.join().unwrap(), "await returns CORO_ECANCELED");
        f.check_freed_once();
    });
}

#[test]
fn loom_detach_vs_completion() {
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        let worker = {
            let f = f.clone();
            thread::spawn(move || f.run())
        };
        let c = f.state.detach(gen).unwrap();
        f.act(c);
        worker.join().unwrap();
        assert_eq!(f.state.detach(gen), Err(Stale));
        let b = f.check_freed_once();
        assert!(b.body_resumed);
    });
}

#[test]
fn loom_cancel_async_while_running() {
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        // The body runs, reaches a suspension point (park), and, if it
        // parked, its token's holder resumes it and it completes.
        let worker = {
            let f = f.clone();
            thread::spawn(move || {
                f.touch(|b| b.body_resumed = true);
                f.suspend_with_callback(None)
            })
        };
        let c = f.state.cancel_async(gen, false).unwrap();
        f.act(c);
        if let Some(seq) = worker.join().unwrap() {
            let c = f.state.consume_token(seq, false).unwrap();
            f.act(c);
        }
        f.check_freed_once();
    });
}

/// Shutdown's sweep (`force_free`) against the owner of a finished frame's
/// last reference, which frees it: an awaiter that finds it done, or the
/// worker that completes a detached frame. One of them frees it, once.
#[test]
fn loom_shutdown_sweep_vs_last_owner() {
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        f.run();
        let sweep = {
            let f = f.clone();
            thread::spawn(move || {
                if f.state.force_free(gen) {
                    f.free();
                }
            })
        };
        if let Ok((AwaitStart::Ready { free: true, .. }, _)) = f.state.await_start(gen, || ()) {
            f.free();
        }
        sweep.join().unwrap();
        f.check_freed_once();
    });
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        assert_eq!(f.state.detach(gen), Ok(Consume::Dropped));
        let sweep = {
            let f = f.clone();
            thread::spawn(move || {
                if f.state.force_free(gen) {
                    f.free();
                }
            })
        };
        f.run();
        sweep.join().unwrap();
        f.check_freed_once();
    });
}

/// An awaited child run nested on its awaiter's thread ends the await in
/// the step that completes it (`complete_awaited`), while another thread
/// cancels the same promise (a misuse that must stay safe): exactly one of
/// them consumes the promise, and the frame is freed once.
#[test]
fn loom_nested_await_vs_cancel_async() {
    both_modes(|cr| {
        let (f, gen) = Frame::spawn(cr);
        let awaiter = {
            let f = f.clone();
            thread::spawn(move || {
                f.touch(|b| {
                    b.body_resumed = true;
                    b.defers += 1;
                    b.env_drops += 1;
                });
                match f.state.complete_awaited(gen, f.state.load().has(CANCELLED)) {
                    CompleteAwaited::Taken { free, .. } => {
                        if free {
                            f.free();
                        }
                        true
                    }
                    CompleteAwaited::NotTaken => {
                        match f.state.complete(f.state.load().has(CANCELLED)) {
                            Complete::Kept => {}
                            Complete::Free => f.free(),
                            Complete::WakeAwaiter => panic!("nobody else awaits"),
                        }
                        assert_eq!(f.state.await_start(gen, || ()), Err(Stale));
                        false
                    }
                }
            })
        };
        let cancelled = f.state.cancel_async(gen, false);
        if let Ok(c) = cancelled {
            f.act(c);
        }
        let awaited = awaiter.join().unwrap();
        assert_eq!(awaited, cancelled.is_err(), "one of them took the promise");
        f.check_freed_once();
    });
}

/// A frame whose body suspends on another thread (the worker), and the
/// token its callback hands out, once it has (the callback may still run).
fn callback_on_a_worker(cr: bool) -> (Arc<Frame>, u32, u32, thread::JoinHandle<Option<u32>>) {
    let (f, gen) = Frame::spawn(cr);
    let handed = Arc::new(AtomicU32::new(0));
    let worker = {
        let (f, handed) = (f.clone(), handed.clone());
        thread::spawn(move || f.suspend_with_callback(Some(&handed)))
    };
    let seq = take_token(&handed);
    (f, gen, seq, worker)
}

/// Waits for the callback to hand the token out (`seq + 1`, 0: not yet).
fn take_token(handed: &AtomicU32) -> u32 {
    loop {
        match handed.load(SeqCst) {
            0 => thread::yield_now(),
            n => return n - 1,
        }
    }
}

/// Rule 9: another thread consumes the token while the worker still runs
/// the `on_suspend` that handed it out (a resume or a cancel_suspend, as
/// a poller thread or a canceller does): the callback's reads never race
/// a finalizer or a free, and the frame ends once.
#[test]
fn loom_token_consumed_during_its_callback() {
    for cancel in [false, true] {
        both_modes(move |cr| {
            let (f, gen, seq, worker) = callback_on_a_worker(cr);
            let c = f.state.consume_token(seq, cancel).unwrap();
            f.act(c);
            assert_eq!(worker.join().unwrap(), Some(seq));
            // The promise's holder ends it, whatever happened.
            if let Ok(c) = f.state.cancel_async(gen, false) {
                f.act(c);
            } else {
                panic!("the promise is still held");
            }
            let b = f.check_freed_once();
            assert_eq!(b.callback_reads, 1);
        });
    }
}

/// Rule 9: the promise's holder cancels, and shutdown sweeps, while the
/// worker runs the callback: neither finalizes nor frees the frame under
/// it; the token, handed out, still drops later.
#[test]
fn loom_cancel_and_shutdown_during_the_callback() {
    both_modes(|cr| {
        let (f, gen, seq, worker) = callback_on_a_worker(cr);
        let c = f.state.cancel_async(gen, false).unwrap();
        f.act(c);
        // Shutdown's sweep: take over what is parked, free what is done.
        match f.state.shutdown_cancel(gen) {
            Consume::Finalize => f.finalize(),
            Consume::Schedule => f.run(),
            Consume::Dropped | Consume::Free => {}
        }
        let swept = f.state.force_free(gen);
        if swept {
            f.free();
        }
        assert_eq!(worker.join().unwrap(), Some(seq));
        // The token's holder comes last; the sweep goes round again.
        if let Ok(c) = f.state.consume_token(seq, false) {
            f.act(c);
        }
        if !swept {
            if let Consume::Schedule = f.state.shutdown_cancel(gen) {
                f.run();
            }
            if f.state.force_free(gen) {
                f.free();
            }
        }
        let b = f.check_freed_once();
        assert_eq!(b.callback_reads, 1);
    });
}
