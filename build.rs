//! Generates `include/coframe.h` from `src/ffi` and sets the shared
//! library's soname. The header is committed; `tests/header_drift.rs`
//! fails when the committed copy differs from what the source generates.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=COFRAME_NO_HEADER");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcoframe.so.0");
    }

    // Packagers building from a read-only tree can skip regeneration.
    if env::var_os("COFRAME_NO_HEADER").is_some() {
        return;
    }
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let header = crate_dir.join("include").join("coframe.h");
    match cbindgen::Builder::new()
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(&header);
        }
        Err(e) => panic!("cbindgen failed: {e}"),
    }
}
