//! The blocking-style I/O calls of the C ABI (`src/io`): libdill's
//! `brecv`/`bsend`, each with a deadline.

use core::ffi::{c_int, c_void};

use super::{guard, invalid, status};
use crate::io::{self, Transfer};

/// `coro_read`/`coro_recv` flag: return as soon as some bytes arrived
/// (`*done` is 0 at end of file) instead of waiting for all `len`.
pub const CORO_IO_SOME: u32 = 0x200;

const _: () = assert!(CORO_IO_SOME == io::IO_SOME);

/// `io::transfer` for C: `*done`, when not NULL, gets the count moved,
/// also when the call fails.
///
/// # Safety
/// As the four calls below.
unsafe fn transfer(
    op: Transfer,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
    deadline_ns: i64,
) -> c_int {
    guard(|| {
        let mut moved = 0;
        // The pointer is only written through for a read.
        let buf = buf.cast_mut().cast();
        // SAFETY: the caller's promise on `buf`, passed on.
        let r = unsafe { io::transfer(op, fd, buf, len, flags, &mut moved, deadline_ns) };
        if !done.is_null() {
            // SAFETY: a non-NULL `done` is writable (the caller's promise).
            unsafe { *done = moved };
        }
        status(r)
    })
}

/// Reads `len` bytes from `fd` into `buf`, all of them unless `flags` has
/// `CORO_IO_SOME`, waiting while none are ready: read(2) that waits. In a
/// coroutine it suspends and `fd` must be non-blocking; on a plain thread
/// it blocks. `*done` (`done` may be NULL) says how many bytes arrived,
/// also on failure. `flags`: `CORO_IO_SOME`, `CORO_KEEP` (the waits keep
/// `fd` registered; see `coro_fd_forget`). `deadline_ns`: `coro_now()`
/// clock, -1 none.
///
/// # Safety
/// `buf` points at `len` writable bytes; `done` is NULL or writable.
///
/// Errors: `CORO_EINVAL` (bad fd, flags or deadline, NULL `buf`, a
/// blocking `fd` in a coroutine), `CORO_ETIMEDOUT`, `CORO_ECANCELED`
/// (cancel-returns mode), `CORO_ELOCKHELD`, `CORO_ESTATE` (a foreign
/// frame, or a worker thread outside a coroutine that must wait),
/// `CORO_ENOMEM`, `CORO_EIO` (errno says why; `EPIPE`: end of file before
/// `len` bytes).
#[no_mangle]
pub unsafe extern "C" fn coro_read(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's promises, passed on.
    unsafe { transfer(Transfer::Read, fd, buf, len, flags, done, deadline_ns) }
}

/// Writes all `len` bytes of `buf` to `fd`, waiting while it is full:
/// write(2) that waits and finishes. As `coro_read` otherwise; `flags`:
/// `CORO_KEEP`. Writing to a pipe or socket whose reader is gone raises
/// `SIGPIPE` as write(2) does; `coro_send` does not.
///
/// # Safety
/// `buf` points at `len` readable bytes; `done` is NULL or writable.
///
/// Errors: as `coro_read`'s (`EPIPE` comes from the system here).
#[no_mangle]
pub unsafe extern "C" fn coro_write(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's promises, passed on.
    unsafe { transfer(Transfer::Write, fd, buf, len, flags, done, deadline_ns) }
}

/// `coro_read` for a socket, through recv(2) with `MSG_DONTWAIT`: `fd`
/// may be blocking or not.
///
/// # Safety
/// As `coro_read`'s.
///
/// Errors: as `coro_read`'s.
#[no_mangle]
pub unsafe extern "C" fn coro_recv(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's promises, passed on.
    unsafe { transfer(Transfer::Recv, fd, buf, len, flags, done, deadline_ns) }
}

/// `coro_write` for a socket, through send(2) with `MSG_DONTWAIT` and
/// `MSG_NOSIGNAL` (a gone peer is `CORO_EIO` with `EPIPE`, never a
/// signal; macOS lacks the flag: set `SO_NOSIGPIPE`): `fd` may be
/// blocking or not.
///
/// # Safety
/// As `coro_write`'s.
///
/// Errors: as `coro_read`'s.
#[no_mangle]
pub unsafe extern "C" fn coro_send(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: u32,
    done: *mut usize,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's promises, passed on.
    unsafe { transfer(Transfer::Send, fd, buf, len, flags, done, deadline_ns) }
}

/// Accepts a connection on the listening socket `fd`, waiting until one
/// comes, and gives its socket in `*out_fd`: non-blocking and
/// close-on-exec, ready for `coro_recv`/`coro_send` in a coroutine.
/// `addr` and `addrlen` are accept(2)'s (both NULL: no address). In a
/// coroutine `fd` must be non-blocking. `flags`: `CORO_KEEP`.
///
/// # Safety
/// `addr` is NULL or points at `*addrlen` writable bytes; `addrlen` is
/// NULL or writable; `out_fd` is writable.
///
/// Errors: `CORO_EINVAL` (bad fd, flags, deadline, NULL `out_fd`, `addr`
/// without `addrlen`, a blocking `fd` in a coroutine), `CORO_ETIMEDOUT`,
/// `CORO_ECANCELED`, `CORO_ELOCKHELD`, `CORO_ESTATE`, `CORO_ENOMEM`,
/// `CORO_EIO` (errno says why: `EMFILE` when out of descriptors).
#[no_mangle]
pub unsafe extern "C" fn coro_accept(
    fd: c_int,
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
    flags: u32,
    out_fd: *mut c_int,
    deadline_ns: i64,
) -> c_int {
    guard(|| {
        if out_fd.is_null() {
            return invalid();
        }
        // SAFETY: the caller's promises on `addr` and `addrlen`.
        match unsafe { io::accept(fd, addr, addrlen, flags, deadline_ns) } {
            Ok(conn) => {
                // SAFETY: checked non-NULL; writable by the caller's promise.
                unsafe { *out_fd = conn };
                0
            }
            Err(e) => e.code(),
        }
    })
}

/// Connects the socket `fd` to `addr`, waiting at most until
/// `deadline_ns`. In a coroutine `fd` must be non-blocking; on a plain
/// thread a blocking socket connects within connect(2) itself, with the
/// system's timeout instead of the deadline. After a failure the socket
/// is of no further use: close it.
///
/// # Safety
/// `addr` points at `addrlen` readable bytes.
///
/// Errors: `CORO_EINVAL` (bad fd or deadline, NULL `addr`, a blocking `fd`
/// in a coroutine), `CORO_ETIMEDOUT`, `CORO_ECANCELED`, `CORO_ELOCKHELD`,
/// `CORO_ESTATE`, `CORO_ENOMEM`, `CORO_EIO` (errno says why, e.g.
/// `ECONNREFUSED`).
#[no_mangle]
pub unsafe extern "C" fn coro_connect(
    fd: c_int,
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
    deadline_ns: i64,
) -> c_int {
    // SAFETY: the caller's promise on `addr`.
    guard(|| status(unsafe { io::connect(fd, addr, addrlen, deadline_ns) }))
}
