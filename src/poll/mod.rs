//! The I/O poller and timers of one runtime: a dedicated thread that
//! blocks in mio's `Poll::poll` until a registered descriptor is ready or
//! the earliest deadline passes, then resumes the waiting coroutines.
//!
//! A dedicated thread rather than workers taking turns at the poll:
//! coroutines are pinned, so a ready event must reach one particular
//! worker's queue wherever it was polled; with a dedicated poller the
//! workers sleep on their own inbox alone and nothing they do is delayed
//! by a worker stuck in `epoll_wait`. The cost is one cross-thread wake-up
//! per event batch (measured in `make bench`).
//!
//! A wait is a record in `slab` keyed by generation and index; the key is
//! the mio token and the timer key. The waiting coroutine parks as a
//! library wait (rule 7 in `frame/mod.rs`): its token is stored in the
//! record, and whoever ends the wait first (an event, the deadline, or a
//! cancellation, which consumes the token through the state word) wins.
//!
//! # Implementation notes
//! One mutex guards the records and the timers; the poller holds it only
//! to sort a batch, never across `poll`. A new deadline earlier than the
//! one the poller sleeps until wakes it through mio's `Waker`.

mod slab;
mod timer;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token as MioToken, Waker};

pub use slab::Outcome;
use slab::Slab;
use timer::Timers;

use crate::error::{Error, Result};
use crate::frame::Token;
use crate::sanitize::{Mutex, MutexGuard};

/// `coro_wait_fd` event bits.
pub const READABLE: u32 = 1;
pub const WRITABLE: u32 = 2;

const WAKER: MioToken = MioToken(usize::MAX);
const NO_DEADLINE: i64 = i64::MAX;

struct Inner {
    slab: Slab,
    timers: Timers,
    /// The deadline the poller sleeps until; a new, earlier one wakes it.
    sleeping_until: i64,
}

pub struct Poller {
    registry: Registry,
    waker: Waker,
    inner: Mutex<Inner>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Monotonic clock, nanoseconds (`coro_now`).
pub fn now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // time_t and c_long are i64 here; the casts keep 32-bit targets building.
    #[allow(clippy::unnecessary_cast)]
    let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
    ns
}

impl Poller {
    /// Creates the poller and starts its thread.
    pub fn start(name: String) -> Result<Arc<Poller>> {
        let poll = Poll::new().map_err(|_| Error::Io)?;
        let registry = poll.registry().try_clone().map_err(|_| Error::Io)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|_| Error::Io)?;
        let poller = Arc::new(Poller {
            registry,
            waker,
            inner: Mutex::new(Inner {
                slab: Slab::default(),
                timers: Timers::default(),
                sleeping_until: NO_DEADLINE,
            }),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let p = poller.clone();
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || p.run(poll))
            .map_err(|_| Error::Io)?;
        *poller.thread.lock().unwrap() = Some(handle);
        Ok(poller)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops and joins the thread. Waits still registered are the
    /// caller's to end first (shutdown cancels every coroutine before).
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// Waits in progress and pending deadlines (for tests and stats).
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.slab.live(), inner.timers.len())
    }

    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<u64> = Vec::with_capacity(1024);
        while !self.stop.load(Acquire) {
            let deadline = self.lock().timers.next().unwrap_or(NO_DEADLINE);
            let timeout = match deadline {
                NO_DEADLINE => None,
                // mio's timeout is in milliseconds, rounded up: never early.
                d => Some(Duration::from_nanos(d.saturating_sub(now()).max(0) as u64)),
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    crate::util::die("coframe: the poller's epoll_wait failed; aborting");
                }
            }
            let mut inner = self.lock();
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                if let Some(w) = inner.slab.get(event.token().0 as u64) {
                    if w.outcome == Outcome::Pending {
                        w.outcome = Outcome::Ready;
                        if w.token != 0 {
                            ready.push(w.token);
                        }
                    }
                }
            }
            let t = now();
            while let Some(key) = inner.timers.pop_due(t) {
                if let Some(w) = inner.slab.get(key) {
                    if w.outcome == Outcome::Pending {
                        w.outcome = Outcome::TimedOut;
                        if w.token != 0 {
                            ready.push(w.token);
                        }
                    }
                }
            }
            inner.slab.turn();
            inner.sleeping_until = inner.timers.next().unwrap_or(NO_DEADLINE);
            drop(inner);
            for token in ready.drain(..) {
                // A cancellation may have consumed the token first: ESTALE.
                let _ = crate::coro::resume(Token(token));
            }
        }
    }

    /// Starts a wait for `fd` (or, with `fd < 0`, only for `deadline`).
    /// Returns its key. `Ok(None)`: the descriptor cannot be polled
    /// (a regular file), so it is ready now.
    pub fn begin(&self, fd: RawFd, events: u32, deadline: i64) -> Result<Option<u64>> {
        let mut key = None;
        if fd >= 0 {
            let interest = match events & (READABLE | WRITABLE) {
                READABLE => Interest::READABLE,
                WRITABLE => Interest::WRITABLE,
                _ => Interest::READABLE | Interest::WRITABLE,
            };
            let (k, registered) = self.register(fd, interest)?;
            if !registered {
                return Ok(None);
            }
            key = Some(k);
        }
        if key.is_some() && deadline < 0 {
            // An fd wait without a deadline: register() did all there is.
            return Ok(key);
        }
        let mut inner = self.lock();
        let key = match key {
            Some(k) => k,
            None => inner.slab.insert(-1, false),
        };
        if deadline >= 0 {
            inner.timers.add(deadline, key);
            if deadline < inner.sleeping_until {
                inner.sleeping_until = deadline;
                drop(inner);
                let _ = self.waker.wake();
            }
        }
        Ok(Some(key))
    }

    /// Registers `fd` under a new record; `false` if epoll refuses the
    /// kind of file (EPERM: always ready).
    fn register(&self, fd: RawFd, interest: Interest) -> Result<(u64, bool)> {
        let key = self.lock().slab.insert(fd, false);
        let mut source_fd = fd;
        let mut dup = false;
        loop {
            match self.registry.register(
                &mut SourceFd(&source_fd),
                MioToken(key as usize),
                interest,
            ) {
                Ok(()) => break,
                // Another wait registered this fd: epoll keys registrations
                // by descriptor, so register a duplicate of it instead.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !dup => {
                    // SAFETY: dup of a caller's descriptor; we close it.
                    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                    if d < 0 {
                        self.lock().slab.release(key);
                        return Err(Error::Io);
                    }
                    source_fd = d;
                    dup = true;
                }
                Err(e) => {
                    if dup {
                        // SAFETY: our own duplicate.
                        unsafe { libc::close(source_fd) };
                    }
                    self.lock().slab.release(key);
                    return match e.raw_os_error() {
                        Some(libc::EPERM) => Ok((key, false)),
                        Some(libc::EBADF) | Some(libc::EINVAL) | Some(libc::ELOOP) => {
                            Err(Error::Invalid)
                        }
                        Some(libc::ENOMEM) | Some(libc::ENOSPC) => Err(Error::NoMem),
                        _ => Err(Error::Io),
                    };
                }
            }
        }
        if dup {
            if let Some(w) = self.lock().slab.get(key) {
                w.fd = source_fd;
                w.dup = true;
            }
        }
        Ok((key, true))
    }

    /// Hands the parked waiter's token to the wait. If the wait already
    /// ended (an event or the deadline came first), resumes it at once.
    pub fn park(&self, key: u64, token: Token) {
        let mut inner = self.lock();
        let Some(w) = inner.slab.get(key) else {
            // Ended by a cancellation, which consumed the token.
            return;
        };
        if w.outcome == Outcome::Pending {
            w.token = token.0;
            return;
        }
        drop(inner);
        let _ = crate::coro::resume(token);
    }

    /// Ends the wait `key` and says how it ended. Called by the waiter
    /// once resumed, or by its cancellation.
    pub fn end(&self, key: u64) -> Outcome {
        let w = {
            let mut inner = self.lock();
            let Some(w) = inner.slab.release(key) else {
                return Outcome::Pending;
            };
            let Inner { slab, timers, .. } = &mut *inner;
            if timers.len() > 1024 && timers.len() > 2 * slab.live() {
                timers.retain(|k| slab.get(k).is_some());
            }
            w
        };
        if w.fd >= 0 {
            // Deregistering a descriptor the program already closed fails
            // (epoll dropped it itself); nothing to do then.
            let _ = self.registry.deregister(&mut SourceFd(&w.fd));
            if w.dup {
                // SAFETY: our own duplicate.
                unsafe { libc::close(w.fd) };
            }
        }
        w.outcome
    }
}

/// Blocks the calling thread (not a coroutine) until `fd` is ready or the
/// deadline passes: the `coro_wait_fd` of plain threads.
pub fn wait_fd_blocking(fd: RawFd, events: u32, deadline: i64) -> Result<()> {
    let mut want: libc::c_short = 0;
    if events & READABLE != 0 {
        want |= libc::POLLIN;
    }
    if events & WRITABLE != 0 {
        want |= libc::POLLOUT;
    }
    loop {
        let timeout_ms = if deadline < 0 {
            -1
        } else {
            let left = deadline - now();
            if left <= 0 {
                0
            } else {
                ((left + 999_999) / 1_000_000).min(i32::MAX as i64) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events: want,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::Io);
        }
        if n > 0 {
            return if p.revents & libc::POLLNVAL != 0 {
                Err(Error::Invalid)
            } else {
                Ok(())
            };
        }
        if deadline >= 0 && now() >= deadline {
            return Err(Error::TimedOut);
        }
    }
}

/// Sleeps the calling thread until `deadline`.
pub fn sleep_blocking(deadline: i64) {
    let ts = libc::timespec {
        tv_sec: deadline / 1_000_000_000,
        tv_nsec: deadline % 1_000_000_000,
    };
    // SAFETY: a valid absolute timespec; EINTR is retried.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}
