//! `src/ffi` is the top layer (issue 20): the C ABI is a thin shell over
//! the core, and nothing below it takes anything from it. The handles'
//! C shapes live with the frame (`src/frame/handle.rs`) and `src/ffi`
//! re-exports them. This test reads the sources: a path into `ffi` from
//! any other module fails it.

mod sources;

/// How a module names the ffi layer.
const INTO_FFI: &[&str] = &["crate::ffi", "super::ffi", "super::super::ffi"];

#[test]
fn nothing_below_ffi_imports_from_it() {
    let mut found = Vec::new();
    for line in sources::lines() {
        // The layer itself, and the crate root that declares it.
        if line.file.starts_with("src/ffi/") || line.file == "src/lib.rs" {
            continue;
        }
        if INTO_FFI.iter().any(|p| line.code.contains(p)) {
            found.push(format!("{}:{}: {}", line.file, line.number, line.text));
        }
    }
    assert!(
        found.is_empty(),
        "modules below src/ffi import from it (move what they need below it):\n{}",
        found.join("\n")
    );
}
