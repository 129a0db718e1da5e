//! Status codes shared by the Rust core and the C ABI.
//!
//! The core returns `Result<T, Error>`; `src/ffi` turns an `Error` into the
//! negative `CORO_E*` integer C sees. Nothing read from C is an `Error`: C
//! passes plain integers, and `Error::from_code` is the only way back.

use core::fmt;

/// Why a call failed. Each variant maps to one `CORO_E*` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A NULL or zeroed handle, a bad flag, a bad argument.
    Invalid,
    /// A handle whose reference was already consumed, or whose frame is gone.
    Stale,
    /// The call is not allowed here: `coro_suspend` outside a coroutine.
    State,
    /// The coroutine was cancelled.
    Canceled,
    /// The deadline passed.
    TimedOut,
    /// Out of memory, stacks or frame slots.
    NoMem,
    /// A blocking lock is held across a suspension (CP.52).
    LockHeld,
    /// The runtime is shutting down or gone.
    Shutdown,
    /// The operating system failed; `errno` says why.
    Io,
    /// A try-lock found the mutex held.
    Busy,
    /// The channel is closed.
    Closed,
    /// Not a failure: a wait began in a foreign frame, whose host returns
    /// from its resume; `coro_frame_resumed` gives the wait's answer once
    /// the frame runs again (`context::foreign`). Code +1.
    Pending,
}

/// Every failure, in code order (`CORO_EINVAL` first); not `Pending`,
/// which is none.
pub const ALL: [Error; 11] = [
    Error::Invalid,
    Error::Stale,
    Error::State,
    Error::Canceled,
    Error::TimedOut,
    Error::NoMem,
    Error::LockHeld,
    Error::Shutdown,
    Error::Io,
    Error::Busy,
    Error::Closed,
];

impl Error {
    /// The integer C sees: negative for a failure.
    pub const fn code(self) -> i32 {
        match self {
            Error::Invalid => -1,
            Error::Stale => -2,
            Error::State => -3,
            Error::Canceled => -4,
            Error::TimedOut => -5,
            Error::NoMem => -6,
            Error::LockHeld => -7,
            Error::Shutdown => -8,
            Error::Io => -9,
            Error::Busy => -10,
            Error::Closed => -11,
            Error::Pending => 1,
        }
    }

    /// The error for a C status code, `None` for 0 and unknown codes.
    pub fn from_code(code: i32) -> Option<Error> {
        if code == Error::Pending.code() {
            return Some(Error::Pending);
        }
        ALL.iter().copied().find(|e| e.code() == code)
    }

    /// A short description, NUL-terminated for C.
    pub const fn message(self) -> &'static str {
        match self {
            Error::Invalid => "invalid argument or handle\0",
            Error::Stale => "stale handle: reference already consumed or frame freed\0",
            Error::State => "operation not allowed in this state (outside a coroutine?)\0",
            Error::Canceled => "coroutine cancelled\0",
            Error::TimedOut => "deadline passed\0",
            Error::NoMem => "out of memory, stacks or frame slots\0",
            Error::LockHeld => "blocking lock held across a suspension\0",
            Error::Shutdown => "runtime shut down\0",
            Error::Io => "operating system error (see errno)\0",
            Error::Busy => "mutex held (try-lock)\0",
            Error::Closed => "channel closed\0",
            Error::Pending => "wait begun in a foreign frame: return from resume\0",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.message();
        f.write_str(&m[..m.len() - 1])
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for (i, e) in ALL.iter().enumerate() {
            assert_eq!(e.code(), -(i as i32) - 1);
            assert_eq!(Error::from_code(e.code()), Some(*e));
            assert!(e.message().ends_with('\0'));
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(1), Some(Error::Pending));
        assert!(Error::Pending.code() > 0 && !ALL.contains(&Error::Pending));
        assert_eq!(Error::from_code(-100), None);
    }
}
