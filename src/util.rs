//! Small helpers with no better home.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Whether misuse the library can only afford to look for in a check mode
/// is looked for and reported: debug builds, or `COFRAME_CHECK=1`.
pub fn checking() -> bool {
    static CHECK: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
    let mut on = CHECK.load(Relaxed);
    if on == 0 {
        let env = std::env::var_os("COFRAME_CHECK").is_some_and(|v| v == "1");
        on = if cfg!(debug_assertions) || env { 2 } else { 1 };
        CHECK.store(on, Relaxed);
    }
    on == 2
}

/// Writes `msg` and a newline to stderr without allocating, then aborts.
/// Safe to call from a signal handler or with a corrupted heap.
pub fn die(msg: &str) -> ! {
    write_stderr(msg.as_bytes());
    write_stderr(b"\n");
    std::process::abort()
}

/// `write(2)` to stderr, retrying short writes; errors are ignored.
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length come from a live slice.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Sets the calling thread's `errno` (a `CORO_EIO` says why there).
pub fn set_errno(code: libc::c_int) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: the calling thread's errno.
    unsafe {
        *libc::__errno_location() = code
    };
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    // SAFETY: as above.
    unsafe {
        *libc::__error() = code
    };
}

/// `Box::new`, but a failed allocation is `Error::NoMem` instead of an
/// abort: the library answers `CORO_ENOMEM` where memory runs out, and
/// std's infallible constructors abort the process there.
pub fn try_box<T>(value: T) -> crate::Result<Box<T>> {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        // Nothing to allocate.
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(crate::Error::NoMem);
    }
    // SAFETY: `ptr` is a fresh allocation of `T`'s layout from the global
    // allocator, which is what `Box::from_raw` takes ownership of.
    unsafe {
        ptr.write(value);
        Ok(Box::from_raw(ptr))
    }
}

/// An empty `Vec` with room for `n` items, or `Error::NoMem`.
pub fn try_vec<T>(n: usize) -> crate::Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| crate::Error::NoMem)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_box_holds_its_value_and_drops_it_once() {
        use std::rc::Rc;
        let shared = Rc::new(());
        let b = try_box((7u64, shared.clone())).unwrap();
        assert_eq!(b.0, 7);
        assert_eq!(Rc::strong_count(&shared), 2);
        drop(b);
        assert_eq!(Rc::strong_count(&shared), 1);
        let unit = try_box(()).unwrap();
        assert_eq!(*unit, ());
        assert_eq!(try_vec::<u32>(10).unwrap().capacity(), 10);
    }
}
