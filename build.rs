//! Generates `include/coframe.h` from `src/ffi`.
//!
//! The header is committed. Every build writes the bindings twice: to
//! `$OUT_DIR/coframe.h` (always; its path is exported to the crate's tests
//! as `COFRAME_GENERATED_HEADER`) and to `include/coframe.h` (unless
//! `COFRAME_NO_HEADER` is set). `tests/header_drift.rs` compares the two,
//! and `make test` also runs `git diff --exit-code -- include/coframe.h`,
//! which catches a committed header that is older than `src/ffi`.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/frame/handle.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=COFRAME_NO_HEADER");

    // Never unloaded (DF_1_NODELETE): the library installs a process-wide
    // SIGSEGV/SIGBUS handler (stack overflow reports) and hands out
    // runtime cells that outlive their runtimes, so its code and data must
    // outlive a dlclose. std's threads pinned it by accident (their
    // thread-local destructors); the workers are plain pthreads now.
    // Only cargo-c (feature capi) has cargo link a cdylib, and sets the
    // soname itself; `make build` links libcoframe.so with
    // scripts/link-so.sh, which gives the linker the same flag.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if env::var_os("CARGO_FEATURE_CAPI").is_some() && (os == "linux" || os == "freebsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = match cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        // The handles' C shapes live with the frame (src/ffi re-exports them).
        .with_src(crate_dir.join("src/frame/handle.rs"))
        .with_config(config)
        .generate()
    {
        Ok(bindings) => bindings,
        Err(e) => panic!("cbindgen failed: {e}"),
    };

    // The copy the drift test compares against: OUT_DIR is always writable,
    // so this is written even when the source tree must not be touched.
    let generated = out_dir.join("coframe.h");
    bindings.write_to_file(&generated);
    println!(
        "cargo:rustc-env=COFRAME_GENERATED_HEADER={}",
        generated.display()
    );

    // Packagers building from a read-only tree (or `cargo package`, which
    // forbids build scripts that modify the source) set COFRAME_NO_HEADER:
    // the committed header is then used as it is.
    if env::var_os("COFRAME_NO_HEADER").is_none() {
        bindings.write_to_file(crate_dir.join("include").join("coframe.h"));
    }
}
