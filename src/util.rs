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
