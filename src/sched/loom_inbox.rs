//! Loom models of the worker inbox (`inbox.rs`): every interleaving of
//! pushes from other threads with the worker taking, sleeping and waking,
//! and with shutdown closing it. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_`.
//!
//! The worker sleeps on a model of its poller's waker, a flag behind a
//! condition variable (an eventfd: a wake is kept until the sleeper takes
//! it), so a lost wake-up leaves it blocked forever, which loom reports as
//! a deadlock. The links are loom atomics, so a push whose frame the worker
//! could take before seeing its link would lose a frame, which the models
//! assert against.

use loom::sync::atomic::AtomicU32;
use loom::sync::atomic::Ordering::Relaxed;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::inbox::{Head, Push};

/// What the worker's poller does for the inbox: a remembered wake.
#[derive(Default)]
struct Waker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Waker {
    fn wake(&self) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn sleep(&self) {
        let mut woken = self.woken.lock().unwrap();
        while !*woken {
            woken = self.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}

struct Model {
    head: Head,
    /// Each frame's slot link, indexed by frame (index + 1).
    links: Vec<AtomicU32>,
    /// The inbox's waking lock (`Runtime::push_remote`, `stop_workers`).
    waking: Mutex<()>,
    waker: Waker,
}

impl Model {
    fn new(frames: usize) -> Arc<Model> {
        Arc::new(Model {
            head: Head::new(),
            links: (0..=frames).map(|_| AtomicU32::new(0)).collect(),
            waking: Mutex::new(()),
            waker: Waker::default(),
        })
    }

    /// `Runtime::push_remote`: true if queued.
    fn push(&self, frame: u32) -> bool {
        let mut waking = None;
        loop {
            match self
                .head
                .push(frame, &self.links[frame as usize], waking.is_some())
            {
                Push::Queued { wake } => {
                    if wake {
                        self.waker.wake();
                    }
                    return true;
                }
                Push::NeedsLock => waking = Some(self.waking.lock().unwrap()),
                Push::Closed => return false,
            }
        }
    }

    /// `Runtime::stop_workers`.
    fn close(&self) {
        let _waking = self.waking.lock().unwrap();
        self.head.close();
        self.waker.wake();
    }

    /// The worker's loop (`worker::run`): takes what was pushed, oldest
    /// first, until `done` says so or the inbox is closed and empty;
    /// sleeps only through `try_sleep`.
    fn work(&self, done: impl Fn(&[u32]) -> bool) -> Vec<u32> {
        let mut got = Vec::new();
        loop {
            let mut next = self.head.take();
            if next != 0 {
                let mut batch = Vec::new();
                while next != 0 {
                    batch.push(next);
                    next = self.links[next as usize].load(Relaxed);
                }
                got.extend(batch.into_iter().rev());
                continue;
            }
            if done(&got) || self.head.closed_and_empty() {
                return got;
            }
            if self.head.try_sleep() {
                self.waker.sleep();
                self.head.woke();
            }
        }
    }
}

#[test]
fn loom_inbox_two_pushers_no_frame_or_wake_lost() {
    loom::model(|| {
        let m = Model::new(2);
        let pushers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|frame| {
                let m = m.clone();
                thread::spawn(move || assert!(m.push(frame)))
            })
            .collect();
        let mut got = m.work(|got| got.len() == 2);
        for p in pushers {
            p.join().unwrap();
        }
        got.sort();
        assert_eq!(got, vec![1, 2]);
    });
}

#[test]
fn loom_inbox_one_pusher_keeps_its_order() {
    loom::model(|| {
        let m = Model::new(2);
        let pusher = {
            let m = m.clone();
            thread::spawn(move || {
                assert!(m.push(1));
                assert!(m.push(2));
            })
        };
        let got = m.work(|got| got.len() == 2);
        pusher.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

#[test]
fn loom_inbox_close_races_a_push() {
    loom::model(|| {
        let m = Model::new(1);
        let pusher = {
            let m = m.clone();
            thread::spawn(move || m.push(1))
        };
        let closer = {
            let m = m.clone();
            thread::spawn(move || m.close())
        };
        // The worker stops only once closed and empty.
        let got = m.work(|_| false);
        let queued = pusher.join().unwrap();
        closer.join().unwrap();
        // A frame that was queued is run before the worker stops; one
        // refused was never queued.
        assert_eq!(got, if queued { vec![1] } else { vec![] });
    });
}
