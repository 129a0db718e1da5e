//! Small helpers with no better home.

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
