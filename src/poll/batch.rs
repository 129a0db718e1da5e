//! The buffer a worker's poll fills: the events of one turn.
//!
//! On Linux it is our own `epoll_event` array, allocated with the runtime
//! (fallibly: a runtime's creation answers `CORO_ENOMEM` rather than
//! abort), and filled by `epoll_wait` on mio's epoll instance; mio's
//! `Events` has no constructor that can fail. The readiness each event
//! reports is read as mio reads it (`sys/unix/selector/epoll.rs`).
//! Elsewhere it is mio's `Events`, whose allocation aborts if it fails.

use std::io;
use std::time::Duration;

use mio::Poll;

use super::{READABLE, WRITABLE};
use crate::error::Result;

#[cfg(target_os = "linux")]
pub use epoll::Batch;
#[cfg(not(target_os = "linux"))]
pub use portable::Batch;

#[cfg(target_os = "linux")]
mod epoll {
    use super::*;
    use std::os::fd::AsRawFd;

    /// mio's cap on an epoll timeout (older kernels overflowed beyond it).
    const MAX_TIMEOUT_MS: u128 = 1_789_569;

    pub struct Batch {
        events: Vec<libc::epoll_event>,
    }

    impl Batch {
        /// Room for `capacity` events. Errors: `NoMem`.
        pub fn with_capacity(capacity: usize) -> Result<Batch> {
            Ok(Batch {
                events: crate::util::try_vec(capacity.max(1))?,
            })
        }

        /// Waits on `poll` until an event or `timeout` (`None`: forever;
        /// rounded up to milliseconds, never early).
        pub fn wait(&mut self, poll: &mut Poll, timeout: Option<Duration>) -> io::Result<()> {
            let ms = timeout.map_or(-1, |t| {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(MAX_TIMEOUT_MS) as libc::c_int
            });
            self.events.clear();
            let cap = self.events.capacity().min(libc::c_int::MAX as usize);
            // SAFETY: the buffer has room for `cap` events; epoll_wait
            // writes at most that many and says how many.
            let n = unsafe {
                libc::epoll_wait(
                    poll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    cap as libc::c_int,
                    ms,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: epoll_wait initialised the first `n` (<= cap) events.
            unsafe { self.events.set_len(n as usize) };
            Ok(())
        }

        /// Each event's token and readiness (`READABLE`, `WRITABLE`; an
        /// error or a hang-up counts as both, as mio's `is_*_closed`).
        pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
            self.events.iter().map(|e| {
                let flags = e.events as libc::c_int;
                let mut bits = 0;
                if flags & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    bits |= READABLE;
                }
                if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    bits |= WRITABLE;
                }
                (e.u64 as usize, bits)
            })
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use super::*;

    pub struct Batch {
        events: mio::Events,
    }

    impl Batch {
        pub fn with_capacity(capacity: usize) -> Result<Batch> {
            Ok(Batch {
                events: mio::Events::with_capacity(capacity),
            })
        }

        pub fn wait(&mut self, poll: &mut Poll, timeout: Option<Duration>) -> io::Result<()> {
            poll.poll(&mut self.events, timeout)
        }

        pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
            self.events.iter().map(|e| {
                let mut bits = 0;
                if e.is_readable() || e.is_read_closed() || e.is_error() {
                    bits |= READABLE;
                }
                if e.is_writable() || e.is_write_closed() || e.is_error() {
                    bits |= WRITABLE;
                }
                (e.token().0, bits)
            })
        }
    }
}
