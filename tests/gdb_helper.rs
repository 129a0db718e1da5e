//! `scripts/coframe-gdb.py` decodes the library's memory with constants of
//! its own (a gdb script cannot read Rust's `const`s): they must stay the
//! library's. `ffi-tests/gdb_helper.sh` runs the script itself in gdb.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use coframe::frame::state::{self, Snapshot};
use coframe::frame::{table, wait, Promise, Token};

/// `NAME = VALUE` lines at the top level of the script, VALUE an integer,
/// hexadecimal, or `A << B`.
fn constants() -> HashMap<String, u64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/coframe-gdb.py");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let int = |s: &str| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(" = ") else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            continue;
        }
        let value = value.split('#').next().unwrap_or("");
        let v = match value.split_once("<<") {
            Some((a, b)) => int(a).zip(int(b)).map(|(a, b)| a << b),
            None => int(value),
        };
        if let Some(v) = v {
            out.insert(name.to_string(), v);
        }
    }
    out
}

#[test]
fn the_gdb_helpers_constants_are_the_librarys() {
    let c = constants();
    let get = |name: &str| {
        *c.get(name)
            .unwrap_or_else(|| panic!("{name} is not in the script"))
    };
    for (name, value) in [
        ("ASYNC_REF", state::ASYNC_REF),
        ("AWAITING", state::AWAITING),
        ("SUSPEND_REF", state::SUSPEND_REF),
        ("LIB_HELD", state::LIB_HELD),
        ("EXEC", state::EXEC),
        ("CANCELLED", state::CANCELLED),
        ("DONE", state::DONE),
        ("CANCEL_RETURNS", state::CANCEL_RETURNS),
        ("KIND_NONE", wait::KIND_NONE as u64),
        ("KIND_AWAIT", wait::KIND_AWAIT as u64),
        ("KIND_POLL", wait::KIND_POLL as u64),
        ("KIND_SYNC", wait::KIND_SYNC as u64),
        ("READABLE", coframe::ffi::CORO_READABLE as u64),
        ("WRITABLE", coframe::ffi::CORO_WRITABLE as u64),
    ] {
        assert_eq!(get(name), value, "{name}");
    }
    // The flags, and the generation's place in the word.
    let flags = get("FLAGS");
    assert!(Snapshot(!flags).is_free() && !Snapshot(flags).is_free());
    let (shift, mask) = (get("GEN_SHIFT"), get("GEN_MASK"));
    assert_eq!(Snapshot(mask << shift).gen() as u64, mask);
    assert_eq!(Snapshot(1 << shift).gen(), 1);
    // A promise (an id) and a token.
    assert_eq!(Promise::new(5, 7).0, 7 << 32 | 6);
    assert_eq!(Token::new(5, 7).0, 7 << 32 | get("KIND_TOKEN") | 6);
    // The script reads chunks of the table's size.
    let text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/coframe-gdb.py"))
            .unwrap();
    assert!(
        text.contains(&format!("self.chunk = {}  # table.rs CHUNK", table::CHUNK)),
        "the script's chunk size is not table::CHUNK ({})",
        table::CHUNK
    );
}
