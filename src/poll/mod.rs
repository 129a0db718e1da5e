//! The I/O poller and timers of one worker: its own epoll instance
//! (through mio), which the worker polls between batches of coroutines
//! and blocks in when it has nothing to run.
//!
//! One poller per worker, polled by that worker, rather than a poller
//! thread: coroutines are pinned (DESIGN section 3), and a coroutine only
//! ever begins a wait on the worker it is pinned to, so registering it
//! with that worker's epoll means its event is found by the thread that
//! will run it. No event crosses a thread, and no third thread competes
//! for the cores (the echo bench in docs/bench/HISTORY.md measured both).
//! The worker sleeps in `epoll_wait` with the earliest deadline as its
//! timeout; a push to its inbox from another thread wakes it through
//! mio's `Waker` (DESIGN section 4).
//!
//! A wait is a record in `slab` keyed by generation and index; the key is
//! the mio token and the timer key. The waiting coroutine parks as a
//! library wait (rule 7 in `frame/mod.rs`): its token is stored in the
//! record, and whoever ends the wait first (an event, the deadline, or a
//! cancellation, which consumes the token through the state word) wins.
//!
//! # Implementation notes
//! One mutex guards the records and the timers, because a cancellation
//! may end a wait from any thread; the worker holds it only to sort a
//! batch, never across `epoll_wait`. `Registry` calls are thread-safe.

mod batch;
mod registration;
mod slab;
mod timer;

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::time::Duration;

use mio::{Poll, Registry, Token as MioToken, Waker};

use batch::Batch;

pub use slab::Outcome;
use slab::Slab;
use timer::Timers;

use crate::error::{Error, Result};
use crate::sanitize::{Mutex, MutexGuard};

/// `coro_wait_fd` event bits.
pub const READABLE: u32 = 1;
pub const WRITABLE: u32 = 2;
/// `coro_wait_fd` flag: hold the registration after the wait
/// (`registration.rs`).
pub const KEEP: u32 = 0x100;

const WAKER: MioToken = MioToken(usize::MAX);

struct Inner {
    slab: Slab,
    timers: Timers,
    regs: Registrations,
}

impl Inner {
    /// Room for one more wait in every table a wait may enter, so that
    /// starting it allocates nothing after this and ending it never does:
    /// exhausted memory fails the wait's start with `CORO_ENOMEM`.
    fn reserve_one(&mut self) -> Result<()> {
        self.slab.reserve_one().map_err(|_| Error::NoMem)?;
        self.timers.reserve_one().map_err(|_| Error::NoMem)?;
        self.regs.0.try_reserve(1).map_err(|_| Error::NoMem)
    }
}

pub struct Poller {
    registry: Registry,
    waker: Waker,
    inner: Mutex<Inner>,
    /// Waits in progress, read without the lock by the worker to skip
    /// `epoll_wait` between batches when there is nothing to look for.
    live: AtomicUsize,
    /// Check mode (`util::checking`): a held registration's descriptor is
    /// checked to still name its file at every wait (one `fstat`).
    check: bool,
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

/// What a worker keeps to poll: its epoll instance and the buffers.
pub struct Polling {
    poll: Poll,
    events: Batch,
    /// Tokens of the waits the last turn ended, for the worker to resume.
    pub ready: Vec<u64>,
}

/// Events one turn takes from epoll at most, and ready waits a worker has
/// room for before its first turn grows the list.
const BATCH: usize = 1024;

impl Poller {
    /// Creates a worker's poller (an epoll instance and its waker), and
    /// what its worker polls it with. Errors: `Io` (no descriptor, for
    /// one), `NoMem`.
    pub fn new() -> Result<(Poller, Polling)> {
        let poll = Poll::new().map_err(|_| Error::Io)?;
        let registry = poll.registry().try_clone().map_err(|_| Error::Io)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|_| Error::Io)?;
        let polling = Polling {
            poll,
            events: Batch::with_capacity(BATCH)?,
            ready: crate::util::try_vec(BATCH)?,
        };
        let poller = Poller {
            registry,
            waker,
            inner: Mutex::new(Inner {
                slab: Slab::default(),
                timers: Timers::default(),
                regs: Registrations::default(),
            }),
            live: AtomicUsize::new(0),
            check: crate::util::checking(),
        };
        Ok((poller, polling))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the worker if it sleeps in `turn` (or makes its next `turn`
    /// return at once).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Whether any wait is in progress (a hint: no lock).
    pub fn has_waits(&self) -> bool {
        self.live.load(Relaxed) != 0
    }

    /// One poll by the worker: collects events and due deadlines into
    /// `p.ready`. `block`: sleep in `epoll_wait` until an event, the
    /// earliest deadline or `wake`; otherwise only look.
    pub fn turn(&self, p: &mut Polling, block: bool) {
        // Room for a token per wait in progress, before epoll hands out
        // events that must not be dropped. Waits start only on this
        // worker, which is here, so their number cannot grow meanwhile.
        // Without the memory, this turn does not poll (the worker comes
        // back: exhausted memory slows the waits, it does not lose them).
        let live = self.live.load(Relaxed);
        if p.ready.capacity() < live
            && p.ready
                .try_reserve(live.saturating_sub(p.ready.len()))
                .is_err()
        {
            return;
        }
        let timeout = if !block {
            Some(Duration::ZERO)
        } else {
            // mio's timeout is in milliseconds, rounded up: never early.
            self.lock()
                .timers
                .next()
                .map(|d| Duration::from_nanos(d.saturating_sub(now()).max(0) as u64))
        };
        if let Err(e) = p.events.wait(&mut p.poll, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                crate::util::die("coframe: a worker's epoll_wait failed; aborting");
            }
        }
        let mut inner = self.lock();
        let Inner { slab, regs, .. } = &mut *inner;
        for (token, bits) in p.events.iter() {
            if token == WAKER.0 {
                continue;
            }
            let mut key = token as u64;
            if key & registration::HELD != 0 {
                let fd = (key & !registration::HELD) as u32 as RawFd;
                let Some(Reg::Held(held)) = regs.0.get_mut(&fd) else {
                    continue; // forgotten since
                };
                let pending = held.waiter.filter(|&w| {
                    bits & held.want != 0
                        && slab.get(w).is_some_and(|w| w.outcome == Outcome::Pending)
                });
                let Some(waiter) = pending else {
                    // Edge-triggered: no event comes again for this
                    // readiness, so the next wait finds it here.
                    held.ready |= bits;
                    continue;
                };
                held.ready |= bits & !held.want;
                key = waiter;
            }
            if let Some(w) = slab.get(key) {
                if w.outcome == Outcome::Pending {
                    w.outcome = Outcome::Ready;
                    if w.token != 0 {
                        p.ready.push(w.token);
                    }
                }
            }
        }
        if inner.timers.next().is_some() {
            let t = now();
            while let Some(key) = inner.timers.pop_due(t) {
                if let Some(w) = inner.slab.get(key) {
                    if w.outcome == Outcome::Pending {
                        w.outcome = Outcome::TimedOut;
                        if w.token != 0 {
                            p.ready.push(w.token);
                        }
                    }
                }
            }
        }
        inner.slab.turn();
    }

    /// Starts a wait for `fd` (or, with `fd < 0`, only for `deadline`).
    /// Returns its key. `Ok(None)`: the descriptor cannot be polled
    /// (a regular file), so it is ready now. Called by the waiting
    /// coroutine, on the worker that polls this poller.
    pub fn begin(&self, fd: RawFd, events: u32, deadline: i64) -> Result<Option<u64>> {
        if fd < 0 {
            let mut inner = self.lock();
            inner.reserve_one()?;
            return Ok(Some(self.insert(&mut inner, -1, deadline)));
        }
        self.register(fd, events, deadline)
    }

    /// A new wait record, with its deadline (if `deadline >= 0`). The
    /// worker is running the waiting coroutine, so it is not asleep: its
    /// next sleep takes the deadline into account. A record released
    /// early leaves its timer entry behind (lazy deletion, `timer.rs`).
    fn insert(&self, inner: &mut Inner, fd: RawFd, deadline: i64) -> u64 {
        self.insert_in(&mut inner.slab, &mut inner.timers, fd, deadline)
    }

    /// `insert`, for a caller that holds other parts of `Inner` too.
    fn insert_in(&self, slab: &mut Slab, timers: &mut Timers, fd: RawFd, deadline: i64) -> u64 {
        let key = slab.insert(fd, false);
        self.live.store(slab.live(), Relaxed);
        if deadline >= 0 {
            timers.add(deadline, key);
        }
        key
    }

    fn release(&self, inner: &mut Inner, key: u64) -> Option<slab::Wait> {
        let w = inner.slab.release(key);
        self.live.store(inner.slab.live(), Relaxed);
        w
    }

    /// Registers `fd` for a new record; `None` if epoll refuses the kind
    /// of file (EPERM: always ready).
    fn register(&self, fd: RawFd, events: u32, deadline: i64) -> Result<Option<u64>> {
        let keep = events & KEEP != 0 && registration::HOLDS;
        let (key, kept) = {
            let mut inner = self.lock();
            inner.reserve_one()?;
            if self.check {
                inner.regs.drop_if_stale(fd, file_id(fd));
            }
            let Inner { slab, timers, regs } = &mut *inner;
            let claim = regs.claim(fd, events, keep, || {
                self.insert_in(slab, timers, fd, deadline)
            });
            match claim {
                // Readiness a held registration kept: no record was made.
                Claim::ReadyNow => return Ok(None),
                Claim::Held { key, ctl: None } => return Ok(Some(key)),
                // Under the lock, unlike the one-shot kind: `forget`
                // changes held registrations from any thread.
                Claim::Held {
                    key,
                    ctl: Some(registered),
                } => {
                    let Err(e) = registration::hold(&self.registry, fd, registered) else {
                        if self.check {
                            inner.regs.set_file(fd, file_id(fd));
                        }
                        return Ok(Some(key));
                    };
                    inner.regs.0.remove(&fd);
                    if registered {
                        registration::remove(&self.registry, fd);
                    }
                    self.release(&mut inner, key);
                    return wait_error(e);
                }
                Claim::OneShot { key, kept } => (key, kept),
            }
        };
        // epoll keys registrations by descriptor: a second wait on a
        // descriptor another wait here has armed registers a duplicate.
        let shared = kept.is_none();
        let (source_fd, r) = match kept {
            Some(kept) => (fd, registration::arm(&self.registry, fd, key, events, kept)),
            None => {
                // SAFETY: dup of a caller's descriptor; closed when the wait ends.
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if d < 0 {
                    self.release(&mut self.lock(), key);
                    return Err(Error::Io);
                }
                (d, registration::add(&self.registry, d, key, events))
            }
        };
        if r.is_ok() && !shared {
            return Ok(Some(key));
        }
        let mut inner = self.lock();
        if let Err(e) = r {
            self.release(&mut inner, key);
            if shared {
                // SAFETY: our own duplicate.
                unsafe { libc::close(source_fd) };
            } else {
                inner.regs.unclaim(fd, false);
            }
            return wait_error(e);
        }
        if shared {
            if let Some(w) = inner.slab.get(key) {
                w.fd = source_fd;
                w.dup = true;
            }
        }
        Ok(Some(key))
    }

    /// `coro_fd_forget` for this poller: drops what it keeps of `fd` (a
    /// held registration, or a disarmed one-shot one). `State`: a wait on
    /// `fd` holds it now; it stays.
    pub fn forget(&self, fd: RawFd) -> Result<()> {
        let mut inner = self.lock();
        match inner.regs.0.get(&fd) {
            Some(Reg::Held(h)) if h.waiter.is_some() => Err(Error::State),
            Some(Reg::Armed) => Err(Error::State),
            Some(Reg::Held(_)) | Some(Reg::Kept) => {
                registration::remove(&self.registry, fd);
                inner.regs.0.remove(&fd);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Hands the parked waiter's token to the wait. `Some(token)`: the wait
    /// already ended (an event or the deadline came first), so the caller
    /// resumes it at once.
    pub fn park(&self, key: u64, token: u64) -> Option<u64> {
        let mut inner = self.lock();
        let Some(w) = inner.slab.get(key) else {
            // Ended by a cancellation, which consumed the token.
            return None;
        };
        if w.outcome == Outcome::Pending {
            w.token = token;
            return None;
        }
        Some(token)
    }

    /// Ends the wait `key` and says how it ended. Called by the waiter
    /// once resumed, or by its cancellation (from any thread).
    pub fn end(&self, key: u64) -> Outcome {
        let mut inner = self.lock();
        let Some(w) = self.release(&mut inner, key) else {
            return Outcome::Pending;
        };
        if w.dup {
            registration::remove(&self.registry, w.fd);
            // SAFETY: our own duplicate.
            unsafe { libc::close(w.fd) };
        } else if w.fd >= 0 && !inner.regs.end_held(w.fd, key) {
            let kept = registration::KEPT_WHEN_READY && w.outcome == Outcome::Ready;
            if !kept {
                // Under the lock: once unclaimed, this worker may arm the
                // descriptor again for its next wait.
                registration::remove(&self.registry, w.fd);
            }
            inner.regs.unclaim(w.fd, kept);
        }
        let Inner { slab, timers, .. } = &mut *inner;
        if timers.len() > 1024 && timers.len() > 2 * slab.live() {
            timers.retain(|k| slab.get(k).is_some());
        }
        w.outcome
    }
}

/// This poller's registrations of programs' descriptors (duplicates
/// aside): armed by a wait in progress, or kept disarmed after a wait that
/// ended ready. A map, not a table indexed by descriptor: a program may
/// pass any `int`, and the kernel judges it only afterwards.
#[derive(Default)]
struct Registrations(HashMap<RawFd, Reg, BuildHasherDefault<FdHasher>>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// One-shot, armed for a wait in progress.
    Armed,
    /// One-shot, disarmed by the event that ended the last wait.
    Kept,
    /// Edge-triggered for both directions, for good (`CORO_KEEP`), until
    /// `coro_fd_forget`.
    Held(Held),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Readiness (`READABLE`, `WRITABLE`) that came while no wait wanted
    /// it: the next wait that wants it takes it and does not suspend.
    ready: u32,
    /// The wait it belongs to now, and the events it wants.
    waiter: Option<u64>,
    want: u32,
    /// Check mode: the file (`file_id`) it was registered for.
    file: Option<(u64, u64)>,
}

impl Held {
    fn new(waiter: u64, want: u32) -> Held {
        Held {
            ready: 0,
            waiter: Some(waiter),
            want,
            file: None,
        }
    }
}

/// What a wait found registered for its descriptor, with the key of the
/// record made for it.
enum Claim {
    /// The readiness it wants came already; no record was made.
    ReadyNow,
    /// Held for this wait; `ctl: Some(registered)`: it must be made.
    Held { key: u64, ctl: Option<bool> },
    /// One-shot: `kept: None` if another wait has it armed, else whether
    /// a disarmed registration was kept.
    OneShot { key: u64, kept: Option<bool> },
}

impl Registrations {
    /// Claims `fd` for a new wait, whose record `new_wait` makes (and
    /// returns the key of), unless a held registration already has the
    /// readiness the wait asks for: then that is taken and no record is
    /// made. A held registration serves every wait on its descriptor,
    /// `keep` or not, one at a time. One lookup in the map either way.
    fn claim(
        &mut self,
        fd: RawFd,
        events: u32,
        keep: bool,
        new_wait: impl FnOnce() -> u64,
    ) -> Claim {
        let want = events & (READABLE | WRITABLE);
        match self.0.entry(fd) {
            Entry::Occupied(mut e) => match e.get_mut() {
                Reg::Held(h) if h.waiter.is_none() => {
                    if h.ready & want != 0 {
                        h.ready &= !want;
                        return Claim::ReadyNow;
                    }
                    let key = new_wait();
                    h.waiter = Some(key);
                    h.want = want;
                    Claim::Held { key, ctl: None }
                }
                Reg::Held(_) | Reg::Armed => Claim::OneShot {
                    key: new_wait(),
                    kept: None,
                },
                r @ Reg::Kept => {
                    let key = new_wait();
                    if keep {
                        *r = Reg::Held(Held::new(key, want));
                        Claim::Held {
                            key,
                            ctl: Some(true),
                        }
                    } else {
                        *r = Reg::Armed;
                        Claim::OneShot {
                            key,
                            kept: Some(true),
                        }
                    }
                }
            },
            Entry::Vacant(e) => {
                let key = new_wait();
                if keep {
                    e.insert(Reg::Held(Held::new(key, want)));
                    Claim::Held {
                        key,
                        ctl: Some(false),
                    }
                } else {
                    e.insert(Reg::Armed);
                    Claim::OneShot {
                        key,
                        kept: Some(false),
                    }
                }
            }
        }
    }

    /// Check mode: if `fd` is held by no wait and no longer names the file
    /// it was registered for (`file`: what it names now), the program
    /// closed it without `coro_fd_forget`. Says so and drops the entry, so
    /// this wait registers the new file afresh.
    #[cold]
    fn drop_if_stale(&mut self, fd: RawFd, file: Option<(u64, u64)>) {
        let stale = matches!(self.0.get(&fd),
            Some(Reg::Held(h)) if h.waiter.is_none() && (file.is_none() || h.file != file));
        if stale {
            eprintln!(
                "coframe: descriptor {fd} was closed without coro_fd_forget after a CORO_KEEP \
                 wait; registering it again (COFRAME_CHECK)"
            );
            self.0.remove(&fd);
        }
    }

    /// Check mode: the file a held registration was just made for.
    fn set_file(&mut self, fd: RawFd, file: Option<(u64, u64)>) {
        if let Some(Reg::Held(h)) = self.0.get_mut(&fd) {
            h.file = file;
        }
    }

    /// The wait `key` on `fd` ended: true if it was a held registration's,
    /// which stays registered.
    fn end_held(&mut self, fd: RawFd, key: u64) -> bool {
        match self.0.get_mut(&fd) {
            Some(Reg::Held(h)) if h.waiter == Some(key) => {
                h.waiter = None;
                true
            }
            _ => false,
        }
    }

    /// The wait holding `fd` ended; `kept`: its disarmed registration stays.
    /// Never allocates: the wait's claim made the entry, which is
    /// rewritten in place (`insert` reserves room first, even for a key it
    /// holds, and aborted the process when the allocation failed: seen as
    /// "memory allocation of 928 bytes failed" in the chaos run with the
    /// address space capped).
    fn unclaim(&mut self, fd: RawFd, kept: bool) {
        if kept {
            if let Some(r) = self.0.get_mut(&fd) {
                *r = Reg::Kept;
            }
        } else {
            self.0.remove(&fd);
        }
    }
}

/// Descriptors are small distinct integers: a multiplicative hash spreads
/// them well enough, at a fraction of SipHash's cost.
#[derive(Default)]
struct FdHasher(u64);

impl Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_i32(&mut self, fd: i32) {
        self.0 = (fd as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The file `fd` names (device, inode), for check mode; `None` if `fstat`
/// fails (a closed descriptor).
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain data; fstat writes it or fails.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a valid pointer to a stat buffer; any fd value is allowed.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// The result of a wait whose registration epoll refused.
fn wait_error(e: std::io::Error) -> Result<Option<u64>> {
    match e.raw_os_error() {
        Some(libc::EPERM) => Ok(None),
        Some(libc::EBADF) | Some(libc::EINVAL) | Some(libc::ELOOP) => Err(Error::Invalid),
        Some(libc::ENOMEM) | Some(libc::ENOSPC) => Err(Error::NoMem),
        _ => Err(Error::Io),
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
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn sleep_blocking(deadline: i64) {
    // Narrowing casts on 32-bit targets: a monotonic deadline counts from
    // boot, far inside a 32-bit time_t.
    #[allow(clippy::unnecessary_cast)]
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
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

/// Sleeps the calling thread until `deadline`, where there is no
/// `clock_nanosleep` (macOS): relative sleeps on the same monotonic
/// clock until it has passed, so an interrupted or short sleep only
/// loops.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn sleep_blocking(deadline: i64) {
    loop {
        let left = deadline - now();
        if left <= 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_nanos(left as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: &Registrations, fd: RawFd) -> Held {
        match r.0.get(&fd) {
            Some(Reg::Held(h)) => *h,
            _ => panic!("fd {fd} is not held"),
        }
    }

    /// `claim` for a wait whose record would get `key`.
    fn claim(r: &mut Registrations, fd: RawFd, key: u64, events: u32, keep: bool) -> Claim {
        r.claim(fd, events, keep, || key)
    }

    /// A wait's end rewrites its registration in place: with the map full
    /// to its capacity, it does not grow (an allocation there could only
    /// abort).
    #[test]
    fn ending_a_wait_does_not_allocate() {
        let mut r = Registrations::default();
        let mut fd = 0;
        while r.0.is_empty() || r.0.len() < r.0.capacity() {
            assert!(matches!(
                claim(&mut r, fd, fd as u64, READABLE, false),
                Claim::OneShot { .. }
            ));
            fd += 1;
        }
        let full = r.0.capacity();
        r.unclaim(0, true);
        r.unclaim(1, false);
        r.unclaim(2, true);
        assert_eq!(r.0.capacity(), full);
        assert!(matches!(r.0.get(&0), Some(Reg::Kept)));
        assert!(!r.0.contains_key(&1));
    }

    #[test]
    fn a_held_registration_is_made_once_and_serves_one_wait_at_a_time() {
        let mut r = Registrations::default();
        // Key 0 is a real key (index 0, generation 0).
        assert!(matches!(
            claim(&mut r, 5, 0, READABLE | KEEP, true),
            Claim::Held {
                key: 0,
                ctl: Some(false)
            }
        ));
        assert!(
            matches!(
                claim(&mut r, 5, 7, WRITABLE, true),
                Claim::OneShot { key: 7, kept: None }
            ),
            "held by key 0"
        );
        assert!(!r.end_held(5, 7), "not the holder");
        assert!(r.end_held(5, 0));
        assert_eq!(held(&r, 5).waiter, None);
        // Registered already: no system call, kept or not.
        assert!(matches!(
            claim(&mut r, 5, 8, READABLE, false),
            Claim::Held { key: 8, ctl: None }
        ));
        assert_eq!(held(&r, 5).want, READABLE);
        assert!(r.end_held(5, 8));
    }

    #[test]
    fn readiness_that_came_while_nobody_waited_ends_the_next_wait_once() {
        let mut r = Registrations::default();
        claim(&mut r, 5, 1, READABLE | KEEP, true);
        r.end_held(5, 1);
        if let Some(Reg::Held(h)) = r.0.get_mut(&5) {
            h.ready = READABLE | WRITABLE;
        }
        let mut records = 0;
        let ready = r.claim(5, READABLE, true, || {
            records += 1;
            2
        });
        assert!(matches!(ready, Claim::ReadyNow));
        assert_eq!(records, 0, "no record for a wait ready at once");
        assert_eq!(
            held(&r, 5).ready,
            WRITABLE,
            "only what the wait wanted is taken"
        );
        assert_eq!(
            held(&r, 5).waiter,
            None,
            "a wait ready at once holds nothing"
        );
        assert!(matches!(
            claim(&mut r, 5, 3, READABLE, true),
            Claim::Held { key: 3, ctl: None }
        ));
        assert!(
            matches!(
                claim(&mut r, 5, 4, WRITABLE, true),
                Claim::OneShot { key: 4, kept: None }
            ),
            "while a wait holds it, its readiness stays for the holder's next"
        );
    }

    #[test]
    fn one_shot_registrations_become_held_only_when_kept() {
        let mut r = Registrations::default();
        assert!(matches!(
            claim(&mut r, 6, 1, READABLE, false),
            Claim::OneShot {
                key: 1,
                kept: Some(false)
            }
        ));
        assert!(
            matches!(
                claim(&mut r, 6, 2, READABLE, true),
                Claim::OneShot { key: 2, kept: None }
            ),
            "armed"
        );
        r.unclaim(6, true);
        assert!(matches!(
            claim(&mut r, 6, 3, READABLE, false),
            Claim::OneShot {
                key: 3,
                kept: Some(true)
            }
        ));
        r.unclaim(6, true);
        assert!(matches!(
            claim(&mut r, 6, 4, READABLE | KEEP, true),
            Claim::Held {
                key: 4,
                ctl: Some(true)
            }
        ));
        assert_eq!(held(&r, 6).waiter, Some(4));
    }

    #[test]
    fn check_mode_drops_a_held_entry_whose_number_names_another_file() {
        let mut r = Registrations::default();
        claim(&mut r, 7, 1, READABLE | KEEP, true);
        r.set_file(7, Some((1, 10)));
        r.drop_if_stale(7, Some((1, 10)));
        assert!(r.0.contains_key(&7), "same file: kept, while held");
        r.end_held(7, 1);
        r.drop_if_stale(7, Some((1, 10)));
        assert!(r.0.contains_key(&7), "same file: kept");
        r.drop_if_stale(7, Some((1, 11)));
        assert!(!r.0.contains_key(&7), "another file: dropped");
        assert!(matches!(
            claim(&mut r, 7, 2, READABLE | KEEP, true),
            Claim::Held {
                key: 2,
                ctl: Some(false)
            }
        ));
    }
}
