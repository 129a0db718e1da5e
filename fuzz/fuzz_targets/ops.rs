//! Operation sequences against coframe's C ABI: `fuzz/harness/ops.rs`.
#![no_main]

#[path = "../harness/ops.rs"]
mod ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = ops::run(data) {
        panic!("{e}");
    }
});
