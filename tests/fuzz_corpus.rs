//! Replays the fuzzer's corpus through the harness the fuzzer runs
//! (`fuzz/harness/ops.rs`), on the stable toolchain: every file under
//! `fuzz/corpus/ops/`, then every reproducer under `fuzz/regressions/ops/`.
//! See `fuzz/README.md`. Linux only: the harness counts descriptors in
//! `/proc/self/fd` and makes its pipes with `pipe2`.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../fuzz/harness/ops.rs"]
mod ops;

/// An input that runs this long has hung (the harness's own waits give
/// up after 5 s each).
const HANG_LIMIT: Duration = Duration::from_secs(120);

fn files_in(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Aborts the process, naming the input, if one input hangs.
fn watchdog(current: Arc<Mutex<(String, Instant)>>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !done.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            let (name, since) = current.lock().unwrap().clone();
            if since.elapsed() > HANG_LIMIT {
                eprintln!("fuzz corpus: {name} hung for {HANG_LIMIT:?}");
                std::process::abort();
            }
        }
    });
}

/// One test, inputs one at a time: `coro_live_frames()` counts the frames
/// of every runtime in the process, so no other test may run beside it.
#[test]
fn corpus_and_regressions_replay() {
    let corpus = files_in("corpus/ops");
    let regressions = files_in("regressions/ops");
    assert!(!corpus.is_empty(), "no corpus under fuzz/corpus/ops");
    let current = Arc::new(Mutex::new((String::new(), Instant::now())));
    let done = Arc::new(AtomicBool::new(false));
    watchdog(current.clone(), done.clone());
    // COFRAME_FUZZ_TRACE=1 prints each input's operations.
    let trace = std::env::var_os("COFRAME_FUZZ_TRACE").is_some();
    let mut failures = Vec::new();
    for path in corpus.iter().chain(regressions.iter()) {
        *current.lock().unwrap() = (path.display().to_string(), Instant::now());
        let data = std::fs::read(path).unwrap();
        match ops::run(&data) {
            Ok(log) if trace => eprintln!("{}:\n  {}", path.display(), log.join("\n  ")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    done.store(true, SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n\n{}",
        failures.len(),
        corpus.len() + regressions.len(),
        failures.join("\n\n")
    );
}
