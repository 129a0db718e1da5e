//! coframe: coroutines for C, C++ and Zig that can be resumed and cancelled
//! from any thread without a use-after-free.
//!
//! Every frame carries two references, the async one (the promise from
//! spawn) and the suspend one (the token of each suspension); see
//! `frame` for the rules and `docs/DESIGN.md` for the contract.
#![warn(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod coro;
pub mod error;
pub mod ffi;
pub mod frame;
mod loom;
pub mod sched;
pub mod stack;
mod util;

pub use error::{Error, Result};
