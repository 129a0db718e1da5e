//! Handles as C sees them: 64-bit values, never pointers.
//!
//! ```text
//! promise:  gen (32) << 32 | 0 << 31 | slot + 1 (31)
//! token:    seq (32) << 32 | 1 << 31 | slot + 1 (31)
//! ```
//!
//! Zero is never a handle (slot + 1 >= 1), so a zeroed struct is
//! `CORO_EINVAL`; a promise passed as a token (or the reverse) is too.

use crate::error::{Error, Result};

const KIND_TOKEN: u64 = 1 << 31;
const SLOT_MASK: u64 = KIND_TOKEN - 1;

/// Largest slot index a handle can name.
pub const MAX_SLOTS: usize = SLOT_MASK as usize;

// The C ABI's shapes of `Promise` and `Token`, here so that the layers
// below `src/ffi` need nothing from it; it re-exports them, and build.rs
// has cbindgen read this file too.

/// The async reference: consumed by `coro_await`, `coro_cancel_async` or
/// `coro_detach`. Slot index and generation; a zeroed value is invalid.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct coro_promise {
    pub id: u64,
}

/// The suspend reference: consumed by `coro_resume` or `coro_cancel_suspend`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct coro_token {
    pub id: u64,
}

/// The async reference: consumed by await, cancel_async or detach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Promise(pub u64);

/// The suspend reference of one suspension: consumed by resume or
/// cancel_suspend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub u64);

impl Promise {
    pub fn new(slot: usize, gen: u32) -> Promise {
        Promise(((gen as u64) << 32) | (slot as u64 + 1))
    }
    /// `(slot, gen)`, or `Invalid` for zero and for tokens.
    /// One comparison: zero and every token wrap to a slot out of range.
    #[inline]
    pub fn split(self) -> Result<(usize, u32)> {
        let slot = (self.0 as u32).wrapping_sub(1);
        if slot >= SLOT_MASK as u32 {
            return Err(Error::Invalid);
        }
        Ok((slot as usize, (self.0 >> 32) as u32))
    }
}

impl Token {
    pub fn new(slot: usize, seq: u32) -> Token {
        Token(((seq as u64) << 32) | KIND_TOKEN | (slot as u64 + 1))
    }
    /// `(slot, seq)`, or `Invalid` for zero and for promises.
    /// One comparison, as `Promise::split`: zero, every promise and a
    /// token of slot + 1 == 0 wrap to a slot out of range.
    #[inline]
    pub fn split(self) -> Result<(usize, u32)> {
        let slot = (self.0 as u32).wrapping_sub(KIND_TOKEN as u32 + 1);
        if slot >= SLOT_MASK as u32 {
            return Err(Error::Invalid);
        }
        Ok((slot as usize, (self.0 >> 32) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kinds_are_distinct() {
        let p = Promise::new(41, 0x00ab_cdef);
        assert_eq!(p.split(), Ok((41, 0x00ab_cdef)));
        let t = Token::new(41, u32::MAX);
        assert_eq!(t.split(), Ok((41, u32::MAX)));
        assert_eq!(Promise(t.0).split(), Err(Error::Invalid));
        assert_eq!(Token(p.0).split(), Err(Error::Invalid));
        assert_eq!(Promise(0).split(), Err(Error::Invalid));
        assert_eq!(Token(0).split(), Err(Error::Invalid));
        assert_eq!(Token(KIND_TOKEN).split(), Err(Error::Invalid));
        // The ends of the range, and the high half left alone.
        let last = MAX_SLOTS - 1;
        assert_eq!(Promise::new(last, 7).split(), Ok((last, 7)));
        assert_eq!(Token::new(last, 7).split(), Ok((last, 7)));
        assert_eq!(Promise::new(0, u32::MAX).split(), Ok((0, u32::MAX)));
        assert_eq!(Token::new(0, 0).split(), Ok((0, 0)));
        assert_eq!(Promise(u32::MAX as u64).split(), Err(Error::Invalid));
        assert_eq!(Token(1).split(), Err(Error::Invalid));
    }
}
