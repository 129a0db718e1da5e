//! Every lock the library takes must be one ThreadSanitizer can see
//! (`src/sanitize.rs`, rule 1): std's locks wait on futexes TSan does not
//! intercept, so memory they hand between threads (a `Vec` grown by two
//! spawning threads, say) is reported as a race in a C program built with
//! `-fsanitize=thread`. That happened once (issue 21: the stack arena's
//! valgrind list); this test keeps it from coming back. It reads the
//! sources: a std lock outside `sanitize.rs` fails it, unless it is on the
//! short list below with the reason it is allowed.

mod sources;

/// What a TSan-invisible synchronisation looks like in the source.
const INVISIBLE: &[&str] = &[
    "std::sync::Mutex",
    "std::sync::RwLock",
    "std::sync::Condvar",
    "std::sync::Barrier",
    "std::sync::Once",
    "std::sync::OnceLock",
    "std::sync::LazyLock",
    "std::sync::mpsc",
    "thread::park",
];

/// (file, pattern): allowed, and why.
const ALLOWED: &[(&str, &str)] = &[
    // The TSan build's own wrapper, and the idle fiber pool, which TSan
    // must not see (handing a fiber over is no edge of its own).
    ("src/sanitize.rs", ""),
    // Announced by hand: a release inside `call_once`, an acquire after.
    ("src/stack/overflow.rs", "std::sync::Once"),
    // Not Linux: std's park; the awaiter handshake announces the edge.
    ("src/frame/blocker.rs", "thread::park"),
    // Not Linux: a thread waiting on a sync object parks; the word it
    // waits for is announced (`ThreadWaiter::given`).
    ("src/sync/wait.rs", "thread::park"),
];

/// Whether `line` of `file` uses `pattern` where the list allows it.
fn allowed(file: &str, pattern: &str) -> bool {
    ALLOWED
        .iter()
        .any(|&(f, p)| f == file && (p.is_empty() || p == pattern))
}

/// The patterns `code` (a line without its comment) uses, also through
/// a grouped import such as `use std::sync::{Arc, Mutex};`.
fn uses(code: &str) -> Vec<&'static str> {
    let grouped = code
        .split_once("std::sync::{")
        .map(|(_, rest)| rest.split('}').next().unwrap_or(""));
    INVISIBLE
        .iter()
        .copied()
        .filter(|p| {
            code.contains(p)
                || grouped.is_some_and(|g| {
                    let name = p.trim_start_matches("std::sync::");
                    p.starts_with("std::sync::") && g.split(',').any(|item| item.trim() == name)
                })
        })
        .collect()
}

/// Loom models use loom's locks, which TSan never runs.
fn is_loom_model(file: &str) -> bool {
    file.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("loom_"))
}

#[test]
fn every_lock_of_the_library_is_visible_to_thread_sanitizer() {
    let mut found = Vec::new();
    for line in sources::lines() {
        if is_loom_model(&line.file) {
            continue;
        }
        for pattern in uses(&line.code) {
            if !allowed(&line.file, pattern) {
                found.push(format!("{}:{}: {}", line.file, line.number, line.text));
            }
        }
    }
    assert!(
        found.is_empty(),
        "locks ThreadSanitizer cannot see (use crate::sanitize::Mutex, or announce the \
         edge with sanitize::release/acquire and list it in this test):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    // The matcher itself: a std lock in code is found, one in a comment is not.
    let code = "let m: std::sync::Mutex<u8> = todo!(); // std::sync::Condvar";
    let before_comment = code.split("//").next().unwrap();
    assert_eq!(uses(before_comment), ["std::sync::Mutex"]);
    assert_eq!(
        uses("use std::sync::{Arc, Once, atomic::AtomicU8};"),
        ["std::sync::Once"]
    );
    assert!(uses("use std::sync::{Arc, OnceLockish};").is_empty());
    assert!(!allowed("src/stack/arena.rs", "std::sync::Mutex"));
    assert!(allowed("src/sanitize.rs", "std::sync::Mutex"));
}
