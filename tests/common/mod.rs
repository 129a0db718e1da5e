//! Helpers shared by the integration tests (each test file is its own
//! crate and includes this module).

use core::ptr;

use coframe::ffi::*;

/// A runtime with `workers` workers (0: one per CPU).
pub fn runtime(workers: u32) -> *mut coro_runtime {
    let cfg = coro_config {
        struct_size: core::mem::size_of::<coro_config>() as u32,
        workers,
        stack_size: 0,
    };
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { coro_runtime_new(&cfg, &mut rt) }, CORO_OK);
    rt
}
