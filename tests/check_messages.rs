//! What check mode (debug builds, `COFRAME_CHECK=1`) prints about CP.52:
//! a suspension refused under a noted lock, and a coroutine that ends
//! with a lock still noted. Its own test crate (one process), since it
//! points this process's stderr at a file while it runs.

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;

use coframe::ffi::*;

mod closure;
mod common;

use closure::{await_value, spawn};

/// Runs `f` with fd 2 pointed at a temporary file; returns what went there.
fn stderr_of(f: impl FnOnce()) -> String {
    let mut file = tempfile();
    // SAFETY: plain descriptor calls; fd 2 is restored before returning.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 2) }, 2);
    f();
    assert_eq!(unsafe { libc::dup2(saved, 2) }, 2);
    unsafe { libc::close(saved) };
    let mut out = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut out).unwrap();
    out
}

fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("coframe-check-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

#[test]
fn check_mode_reports_cp52_misuse() {
    // On in debug builds anyway; in release builds through the variable,
    // set before the library first reads it (this crate's only test).
    std::env::set_var("COFRAME_CHECK", "1");
    let rt = common::runtime(1);
    let mut ids = [0u64; 2];
    let err = stderr_of(|| {
        // Suspends under a noted lock: refused, and reported.
        let p = spawn(rt, 0, || {
            coro_lock_note_acquire(c"the queue lock".as_ptr());
            let rc = coro_yield();
            coro_lock_note_release(c"the queue lock".as_ptr());
            (rc == CORO_ELOCKHELD) as usize
        });
        ids[0] = p.id;
        assert_eq!(await_value(p), (CORO_OK, 1));
        // Ends with a lock still noted.
        let p = spawn(rt, 0, || {
            coro_lock_note_acquire(c"the cache lock".as_ptr());
            0
        });
        ids[1] = p.id;
        assert_eq!(await_value(p), (CORO_OK, 0));
    });
    assert!(
        err.contains(&format!(
            "coframe: coroutine {} suspends while holding the queue lock (CP.52)",
            ids[0]
        )),
        "stderr was: {err}"
    );
    assert!(
        err.contains(&format!(
            "coframe: coroutine {} ended with 1 noted lock(s) not released, the last the cache lock",
            ids[1]
        )),
        "stderr was: {err}"
    );
    assert_eq!(err.lines().count(), 2, "nothing else reported: {err}");
    assert_eq!(unsafe { coro_runtime_shutdown(rt) }, CORO_OK);
}
