//! coframe: coroutines for C, C++ and Zig that can be resumed and cancelled
//! from any thread without a use-after-free.
//!
//! Every frame carries two references, the async one (the promise from
//! spawn) and the suspend one (the token of each suspension); see
//! `frame` for the rules and `docs/DESIGN.md` for the contract.
#![warn(unsafe_op_in_unsafe_fn)]

// Under `--cfg loom` only the state word, the worker inbox and the sync
// models are built:
// the loom models check them alone (frame/loom_state.rs,
// sched/loom_inbox.rs).
#[cfg(not(loom))]
pub mod context;
#[cfg(not(loom))]
pub mod coro;
#[cfg(not(loom))]
mod dump;
pub mod error;
#[cfg(not(loom))]
pub mod ffi;
pub mod frame;
#[cfg(not(loom))]
pub mod io;
mod loom;
#[cfg(not(loom))]
pub mod poll;
pub(crate) mod sanitize;
#[cfg(not(loom))]
pub mod sched;
#[cfg(loom)]
mod sched {
    mod inbox;
    #[cfg(test)]
    mod loom_inbox;
}
#[cfg(not(loom))]
pub mod stack;
#[cfg(not(loom))]
pub mod sync;
#[cfg(loom)]
mod sync {
    #[cfg(test)]
    mod loom_sync;
}
#[cfg(not(loom))]
mod util;

pub use error::{Error, Result};
