//! The committed `include/coframe.h` must be exactly what cbindgen makes of
//! `src/ffi` (DESIGN section 6).
//!
//! `build.rs` writes the bindings to `$OUT_DIR/coframe.h` on every build and
//! names that file in `COFRAME_GENERATED_HEADER`. It also rewrites
//! `include/coframe.h`, so this test catches a header edited by hand (or one
//! kept with `COFRAME_NO_HEADER`); a committed header older than `src/ffi`
//! is caught by `make test`'s `git diff --exit-code -- include/coframe.h`.

use std::fs;
use std::path::{Path, PathBuf};

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include/coframe.h")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn committed_header_matches_generated() {
    let generated_path = Path::new(env!("COFRAME_GENERATED_HEADER"));
    let generated = read(generated_path);
    let committed = read(&committed_path());
    if generated == committed {
        return;
    }
    let (line, (want, have)) = generated
        .lines()
        .chain(std::iter::repeat("<end of file>"))
        .zip(committed.lines().chain(std::iter::repeat("<end of file>")))
        .enumerate()
        .find(|(_, (g, c))| g != c)
        .expect("the files differ, so some line differs");
    panic!(
        "include/coframe.h differs from what src/ffi generates: commit the regenerated header\n\
         first difference at line {}:\n  generated: {want}\n  committed: {have}\n\
         generated copy: {}\n\
         (a plain `cargo build` rewrites include/coframe.h unless COFRAME_NO_HEADER is set; \
         if it did not, touch src/ffi/mod.rs)",
        line + 1,
        generated_path.display(),
    );
}

/// The version macros C sees follow Cargo.toml's version.
#[test]
fn header_version_macros_match_cargo_version() {
    let header = read(&committed_path());
    for (name, want) in [
        ("COFRAME_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("COFRAME_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("COFRAME_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let prefix = format!("#define {name} ");
        let have = header
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("include/coframe.h does not define {name}"))
            .trim();
        assert_eq!(
            have, want,
            "{name} is {have} in include/coframe.h but Cargo.toml's version says {want}"
        );
    }
}
