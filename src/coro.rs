//! The operations of DESIGN section 8, in Rust. (skeleton: not built yet)
use core::ffi::{c_char, c_void};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sched::Runtime;

pub const SPAWN_CANCEL_RETURNS: u32 = 1;
pub const SPAWN_MIGRATABLE: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promise(pub u64);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub u64);

pub type Entry = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
pub type EnvDrop = unsafe extern "C" fn(*mut c_void);
pub type OnSuspend = unsafe extern "C" fn(crate::ffi::coro_token, *mut c_void);
pub type DeferFn = unsafe extern "C" fn(*mut c_void);

pub fn spawn(
    _rt: &Arc<Runtime>,
    _entry: Entry,
    _env: &[u8],
    _drop: Option<EnvDrop>,
    _flags: u32,
) -> Result<Promise> {
    Err(Error::Invalid)
}
pub fn suspend_with(_cb: OnSuspend, _arg: *mut c_void) -> Result<()> {
    Err(Error::State)
}
pub fn resume(_t: Token) -> Result<()> {
    Err(Error::Invalid)
}
pub fn cancel_suspend(_t: Token) -> Result<()> {
    Err(Error::Invalid)
}
pub fn await_promise(_p: Promise) -> Result<*mut c_void> {
    Err(Error::Invalid)
}
pub fn cancel_async(_p: Promise) -> Result<()> {
    Err(Error::Invalid)
}
pub fn detach(_p: Promise) -> Result<()> {
    Err(Error::Invalid)
}
pub fn yield_now() -> Result<()> {
    Err(Error::State)
}
pub fn defer(_f: DeferFn, _arg: *mut c_void, _err_only: bool) -> Result<()> {
    Err(Error::State)
}
pub fn lock_note(_what: *const c_char, _acquire: bool) -> Result<()> {
    Ok(())
}
pub fn self_id() -> u64 {
    0
}
pub fn live_frames() -> u64 {
    0
}
