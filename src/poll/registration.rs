//! Arming a descriptor in a worker's epoll for one wait, and disarming it.
//!
//! On Linux a registration outlives its wait: it is made `EPOLLONESHOT`,
//! so the event that ends a wait also disarms it, and the next wait on the
//! same descriptor re-arms it with one `EPOLL_CTL_MOD` instead of an
//! `EPOLL_CTL_ADD` and an `EPOLL_CTL_DEL` per wait (the echo bench's
//! syscalls, docs/bench/HISTORY.md). A wait that ends any other way (its
//! deadline, a cancellation) deletes the registration, so an armed
//! registration always belongs to a wait in progress.
//!
//! A descriptor the program closed drops out of the epoll set by itself;
//! if its number is reused, `EPOLL_CTL_MOD` on the new file fails with
//! `ENOENT` (epoll keys registrations by file and number) and the wait
//! adds it afresh. Elsewhere (kqueue, through mio) each wait registers and
//! deregisters.
//!
//! A wait with `CORO_KEEP` instead holds the descriptor registered for
//! good, edge-triggered for both directions, under a token naming the
//! descriptor rather than the wait (`hold`), as tokio does: later waits
//! make no system call at all, and readiness that comes while nobody
//! waits is remembered for the next wait (`mod.rs`). The program promises
//! `coro_fd_forget` before it closes the descriptor, since nothing else
//! would tell us the number now names another file (libdill's `fdclean`).
//! Linux only; elsewhere `CORO_KEEP` waits are ordinary ones.

use std::io;
use std::os::fd::RawFd;

use mio::Registry;

use super::{READABLE, WRITABLE};

/// Whether a registration left behind by a wait that ended ready is
/// disarmed (so may stay) rather than still armed.
pub const KEPT_WHEN_READY: bool = cfg!(target_os = "linux");

/// Whether `CORO_KEEP` holds registrations (`hold`).
pub const HOLDS: bool = cfg!(target_os = "linux");

/// The bit that marks a held registration's epoll data; the low 32 bits
/// are the descriptor. Wait keys never have it (`slab::GEN_MASK`).
/// It is the top bit of mio's token, a `usize`: bit 31 on a 32-bit target.
pub const HELD: u64 = 1 << (super::slab::TOKEN_BITS - 1);

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::os::fd::AsRawFd;

    /// `epoll_ctl` for `events`, with `flags` (`EPOLLONESHOT`, `EPOLLET`).
    fn ctl(
        registry: &Registry,
        op: i32,
        fd: RawFd,
        token: u64,
        events: u32,
        flags: u32,
    ) -> io::Result<()> {
        let mut want = flags;
        if events & READABLE != 0 {
            want |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if events & WRITABLE != 0 {
            want |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events: want,
            u64: token,
        };
        // SAFETY: a valid epoll descriptor (the registry's) and a valid
        // event; the kernel copies it.
        if unsafe { libc::epoll_ctl(registry.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Modifies our registration of `fd` if `registered` (unless the
    /// program closed the descriptor since: then adds), otherwise adds one
    /// (unless one exists after all: then modifies it).
    fn set(
        registry: &Registry,
        registered: bool,
        fd: RawFd,
        token: u64,
        events: u32,
        flags: u32,
    ) -> io::Result<()> {
        let (first, missing, second) = if registered {
            (libc::EPOLL_CTL_MOD, libc::ENOENT, libc::EPOLL_CTL_ADD)
        } else {
            (libc::EPOLL_CTL_ADD, libc::EEXIST, libc::EPOLL_CTL_MOD)
        };
        match ctl(registry, first, fd, token, events, flags) {
            Err(e) if e.raw_os_error() == Some(missing) => {
                ctl(registry, second, fd, token, events, flags)
            }
            r => r,
        }
    }

    /// Arms `fd` for one event under `key`. `kept`: a finished wait left
    /// a disarmed registration behind.
    pub fn arm(
        registry: &Registry,
        fd: RawFd,
        key: u64,
        events: u32,
        kept: bool,
    ) -> io::Result<()> {
        set(registry, kept, fd, key, events, libc::EPOLLONESHOT as u32)
    }

    /// Holds `fd` registered, edge-triggered, for both directions, under
    /// the token `HELD | fd`. `registered`: a registration of ours exists.
    pub fn hold(registry: &Registry, fd: RawFd, registered: bool) -> io::Result<()> {
        let token = HELD | fd as u32 as u64;
        let both = READABLE | WRITABLE;
        set(registry, registered, fd, token, both, libc::EPOLLET as u32)
    }

    /// Adds `fd`, which must not be registered yet.
    pub fn add(registry: &Registry, fd: RawFd, key: u64, events: u32) -> io::Result<()> {
        let oneshot = libc::EPOLLONESHOT as u32;
        ctl(registry, libc::EPOLL_CTL_ADD, fd, key, events, oneshot)
    }

    pub fn remove(registry: &Registry, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `ctl`. A descriptor the program already closed is
        // not registered any more: the error is expected then.
        unsafe { libc::epoll_ctl(registry.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Interest, Token};

    fn interest(events: u32) -> Interest {
        match events & (READABLE | WRITABLE) {
            READABLE => Interest::READABLE,
            WRITABLE => Interest::WRITABLE,
            _ => Interest::READABLE | Interest::WRITABLE,
        }
    }

    pub fn arm(
        registry: &Registry,
        fd: RawFd,
        key: u64,
        events: u32,
        _kept: bool,
    ) -> io::Result<()> {
        add(registry, fd, key, events)
    }

    pub fn add(registry: &Registry, fd: RawFd, key: u64, events: u32) -> io::Result<()> {
        registry.register(&mut SourceFd(&fd), Token(key as usize), interest(events))
    }

    /// Never called: `HOLDS` is false here.
    pub fn hold(_: &Registry, _: RawFd, _: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn remove(registry: &Registry, fd: RawFd) {
        let _ = registry.deregister(&mut SourceFd(&fd));
    }
}

pub use imp::{add, arm, hold, remove};
