//! The library's own sources, line by line, for the tests that read them
//! (`tsan_visible_sync.rs`, `layers.rs`): each test file is its own crate
//! and includes this module.

use std::fs;
use std::path::{Path, PathBuf};

/// One line of a source under `src/`.
pub struct Line {
    /// The file, relative to the crate root, with `/` separators.
    pub file: String,
    /// 1-based.
    pub number: usize,
    /// The line up to a `//` comment.
    pub code: String,
    /// The whole line, trimmed, for reports.
    pub text: String,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every line of every `.rs` file under `src/`.
pub fn lines() -> Vec<Line> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut out = Vec::new();
    for path in &files {
        let file = path
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).expect("a readable source");
        for (n, line) in text.lines().enumerate() {
            out.push(Line {
                file: file.clone(),
                number: n + 1,
                code: line.split("//").next().unwrap_or("").to_string(),
                text: line.trim().to_string(),
            });
        }
    }
    out
}
