//! `src/ffi` is the top layer (issue 20): the C ABI is a thin shell over
//! the core, and nothing below it takes anything from it. The handles'
//! C shapes live with the frame (`src/frame/handle.rs`) and `src/ffi`
//! re-exports them. This test reads the sources: a path into `ffi` from
//! any other module fails it.

use std::fs;
use std::path::{Path, PathBuf};

/// How a module names the ffi layer.
const INTO_FFI: &[&str] = &["crate::ffi", "super::ffi", "super::super::ffi"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn nothing_below_ffi_imports_from_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // The layer itself, and the crate root that declares it.
        if rel.starts_with("src/ffi/") || rel == "src/lib.rs" {
            continue;
        }
        let text = fs::read_to_string(file).expect("a readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if INTO_FFI.iter().any(|p| code.contains(p)) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "modules below src/ffi import from it (move what they need below it):\n{}",
        found.join("\n")
    );
}
