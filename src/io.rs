//! Blocking-style descriptor I/O (libdill's `brecv`/`bsend`): each call
//! reads as the blocking call it replaces, takes a deadline, and waits for
//! its descriptor through `coro::wait_fd`, so in a coroutine it suspends and
//! on a plain thread it blocks in poll(2).
//!
//! The pattern is the one every example carried by hand: try the system
//! call first, wait only on `EAGAIN`. A call that would never wait still
//! begins as a suspension point (a cancel or a held lock is answered at
//! once, whatever the descriptor's state), so a body's misuse does not
//! depend on timing.
//!
//! In a coroutine the descriptor must not block the worker: `recv` and
//! `send` pass `MSG_DONTWAIT`, so any socket will do; `read`, `write`,
//! `accept` and `connect` have no such flag, so their descriptor must be
//! `O_NONBLOCK` (`Error::Invalid` otherwise). On a plain thread a blocking
//! descriptor is fine: with a deadline the call polls before each try.

use core::ffi::c_void;

use crate::context;
use crate::coro;
use crate::error::{Error, Result};
use crate::poll::{KEEP, READABLE, WRITABLE};
use crate::util::set_errno;

/// `coro_read`/`coro_recv` flag: return once some bytes arrived (0 at end
/// of file) instead of waiting for all of them.
pub const IO_SOME: u32 = 0x200;

/// The four transfers; they differ only in their system call and the way
/// they wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transfer {
    Read,
    Write,
    Recv,
    Send,
}

impl Transfer {
    fn reads(self) -> bool {
        matches!(self, Transfer::Read | Transfer::Recv)
    }

    fn event(self) -> u32 {
        if self.reads() {
            READABLE
        } else {
            WRITABLE
        }
    }

    /// Whether the call itself never blocks (a per-call flag), so the
    /// descriptor's own mode does not matter.
    fn per_call_nonblocking(self) -> bool {
        matches!(self, Transfer::Recv | Transfer::Send)
    }

    /// One system call over `len` bytes at `buf`: the count, or `errno`.
    ///
    /// # Safety
    /// `buf` points at `len` bytes, writable when `self.reads()`.
    unsafe fn once(self, fd: i32, buf: *mut u8, len: usize) -> core::result::Result<usize, i32> {
        let buf = buf.cast::<c_void>();
        // SAFETY: the caller's promise on `buf`; the calls take no other
        // memory.
        let n = unsafe {
            match self {
                Transfer::Read => libc::read(fd, buf, len),
                Transfer::Write => libc::write(fd, buf, len),
                Transfer::Recv => libc::recv(fd, buf, len, libc::MSG_DONTWAIT),
                Transfer::Send => libc::send(fd, buf, len, libc::MSG_DONTWAIT | NO_SIGPIPE),
            }
        };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    }
}

/// `send` never raises `SIGPIPE` where the platform has the flag (macOS
/// has a socket option instead, left to the program).
#[cfg(not(target_vendor = "apple"))]
const NO_SIGPIPE: i32 = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
const NO_SIGPIPE: i32 = 0;

/// Who is calling, which decides how a wait happens and what is allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A stackful coroutine: waits suspend it.
    Coroutine,
    /// A plain thread (or a worker outside a coroutine, whose wait
    /// `coro::wait_fd` refuses): waits block it.
    Thread,
}

/// Begins a call: a foreign frame cannot run a loop of waits (each of its
/// waits ends its resume), so it is refused; a coroutine's call is a
/// suspension point from its first instruction. `read_fd`: the descriptor
/// of a read, for which it also answers whether the coroutine's last kept
/// read on it came up short (`coro::note_drained`).
fn caller(read_fd: Option<i32>) -> Result<(Caller, bool)> {
    match context::running() {
        Some(me) if me.is_foreign() => Err(Error::State),
        Some(me) => Ok((Caller::Coroutine, coro::blocking_call_point(me, read_fd)?)),
        None => Ok((Caller::Thread, false)),
    }
}

/// Whether `fd` is in non-blocking mode.
fn nonblocking(fd: i32) -> Result<bool> {
    // SAFETY: F_GETFL reads the descriptor's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(failed(errno()));
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Whether calls on `fd` may be tried before a wait: `Invalid` for a
/// blocking descriptor in a coroutine, which would block its worker.
fn may_try_first(fd: i32, per_call_nonblocking: bool, caller: Caller) -> Result<bool> {
    if per_call_nonblocking || nonblocking(fd)? {
        return Ok(true);
    }
    match caller {
        Caller::Coroutine => Err(Error::Invalid),
        Caller::Thread => Ok(false),
    }
}

/// The error of a failed system call whose `errno` is `err` (left in
/// `errno` for the caller): a closed descriptor is bad input, as in
/// `coro_wait_fd`; the rest is the system's.
fn failed(err: i32) -> Error {
    set_errno(err);
    if err == libc::EBADF {
        Error::Invalid
    } else {
        Error::Io
    }
}

fn would_block(err: i32) -> bool {
    err == libc::EAGAIN || err == libc::EWOULDBLOCK
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Checks `flags` and `deadline` as every call here does.
fn check(fd: i32, flags: u32, allowed: u32, deadline: i64) -> Result<()> {
    if fd < 0 || deadline < -1 || flags & !allowed != 0 {
        return Err(Error::Invalid);
    }
    Ok(())
}

/// Moves `len` bytes between `fd` and `buf` (`coro_read`, `coro_write`,
/// `coro_recv`, `coro_send`); `*done` counts the bytes moved, also when it
/// fails. With `IO_SOME` (reads only) it returns after the first bytes, or
/// with `*done == 0` at end of file; without it, end of file before `len`
/// bytes is `Io` with `errno` `EPIPE` (libdill's answer).
///
/// # Safety
/// `buf` points at `len` bytes, writable for a read, for the whole call.
pub unsafe fn transfer(
    op: Transfer,
    fd: i32,
    buf: *mut u8,
    len: usize,
    flags: u32,
    done: &mut usize,
    deadline: i64,
) -> Result<()> {
    *done = 0;
    let allowed = if op.reads() { KEEP | IO_SOME } else { KEEP };
    check(fd, flags, allowed, deadline)?;
    if buf.is_null() && len > 0 {
        return Err(Error::Invalid);
    }
    let keep = flags & KEEP != 0;
    let (caller, drained) = caller(op.reads().then_some(fd))?;
    if len == 0 {
        return Ok(());
    }
    let try_first = may_try_first(fd, op.per_call_nonblocking(), caller)?;
    let wait = op.event() | (flags & KEEP);
    // With a kept registration (edge-triggered), a short read drained the
    // socket and a short write filled it: the next try would only say
    // EAGAIN, so wait for the edge first, as CORO_KEEP asks and as tokio
    // clears readiness after a short read. Streams only: a datagram is
    // short by nature (docs/API.md).
    let mut wait_first = keep && drained;
    loop {
        if wait_first || (!try_first && deadline >= 0) {
            // (A blocking descriptor on a plain thread: the call itself
            // would ignore the deadline.)
            coro::wait_fd(fd, wait, deadline)?;
        }
        let asked = len - *done;
        // SAFETY: `done < len`, and the caller's promise covers the rest.
        match unsafe { op.once(fd, buf.add(*done), asked) } {
            Ok(0) if op.reads() => {
                if flags & IO_SOME != 0 {
                    return Ok(());
                }
                set_errno(libc::EPIPE);
                return Err(Error::Io);
            }
            Ok(0) => {
                // write(2) of a non-zero count made no progress.
                set_errno(libc::EIO);
                return Err(Error::Io);
            }
            Ok(n) => {
                *done += n;
                wait_first = keep && n < asked;
                if *done == len || flags & IO_SOME != 0 {
                    if wait_first && caller == Caller::Coroutine {
                        coro::note_drained(fd);
                    }
                    return Ok(());
                }
            }
            Err(libc::EINTR) => wait_first = false,
            Err(err) if would_block(err) => {
                wait_first = false;
                coro::wait_fd(fd, wait, deadline)?
            }
            Err(err) => return Err(failed(err)),
        }
    }
}

/// Accepts a connection on the listening socket `fd` (`coro_accept`): the
/// new socket is non-blocking and close-on-exec, so the same calls serve
/// it in a coroutine. `addr` and `addrlen` are accept(2)'s, NULL for
/// none. A connection that failed before it was taken is skipped, as
/// accept(2)'s manual asks.
///
/// # Safety
/// `addr` is NULL or points at `*addrlen` writable bytes; `addrlen` is
/// NULL (only with a NULL `addr`) or writable.
pub unsafe fn accept(
    fd: i32,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    flags: u32,
    deadline: i64,
) -> Result<i32> {
    check(fd, flags, KEEP, deadline)?;
    if !addr.is_null() && addrlen.is_null() {
        return Err(Error::Invalid);
    }
    let (caller, _) = caller(None)?;
    let try_first = may_try_first(fd, false, caller)?;
    let wait = READABLE | (flags & KEEP);
    loop {
        if !try_first && deadline >= 0 {
            coro::wait_fd(fd, wait, deadline)?;
        }
        // SAFETY: the caller's promise on `addr` and `addrlen`.
        match unsafe { accept_once(fd, addr, addrlen) } {
            Ok(conn) => return Ok(conn),
            Err(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => {}
            Err(err) if would_block(err) => coro::wait_fd(fd, wait, deadline)?,
            Err(err) => return Err(failed(err)),
        }
    }
}

/// One accept(2), the new socket non-blocking and close-on-exec.
///
/// # Safety
/// As `accept`'s.
#[cfg(not(target_vendor = "apple"))]
unsafe fn accept_once(
    fd: i32,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> core::result::Result<i32, i32> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: the caller's promise on `addr` and `addrlen`.
    let conn = unsafe { libc::accept4(fd, addr, addrlen, flags) };
    if conn < 0 {
        Err(errno())
    } else {
        Ok(conn)
    }
}

/// macOS has no accept4: the flags are set after the fact (a fork in
/// between may inherit the socket; the program's own fork is its to
/// order).
#[cfg(target_vendor = "apple")]
unsafe fn accept_once(
    fd: i32,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> core::result::Result<i32, i32> {
    // SAFETY: the caller's promise on `addr` and `addrlen`.
    let conn = unsafe { libc::accept(fd, addr, addrlen) };
    if conn < 0 {
        return Err(errno());
    }
    // SAFETY: plain descriptor flag calls on the new socket.
    unsafe {
        libc::fcntl(conn, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(conn, libc::F_SETFL, libc::O_NONBLOCK);
    }
    Ok(conn)
}

/// Connects the socket `fd` to `addr` (`coro_connect`), waiting at most
/// until `deadline`. After a failure or a timeout the socket's state is
/// unspecified, as after connect(2): close it.
///
/// # Safety
/// `addr` points at `addrlen` readable bytes.
pub unsafe fn connect(
    fd: i32,
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
    deadline: i64,
) -> Result<()> {
    check(fd, 0, 0, deadline)?;
    if addr.is_null() || addrlen == 0 {
        return Err(Error::Invalid);
    }
    let (caller, _) = caller(None)?;
    // A blocking socket on a plain thread connects in the call itself,
    // with the kernel's timeout: connect(2) has nothing to poll first.
    may_try_first(fd, false, caller)?;
    // SAFETY: the caller's promise on `addr`.
    if unsafe { libc::connect(fd, addr, addrlen) } == 0 {
        return Ok(());
    }
    match errno() {
        // Interrupted, the connection goes on in the background, as for a
        // non-blocking socket.
        libc::EINPROGRESS | libc::EINTR => {}
        err => return Err(failed(err)),
    }
    coro::wait_fd(fd, WRITABLE, deadline)?;
    match socket_error(fd)? {
        0 => Ok(()),
        err => Err(failed(err)),
    }
}

/// The pending error of socket `fd` (`SO_ERROR`), which clears it.
fn socket_error(fd: i32) -> Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(failed(errno()));
    }
    Ok(err)
}
