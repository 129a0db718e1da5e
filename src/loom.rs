//! Swaps std's atomics for loom's under `--cfg loom`, as tokio's
//! `src/loom/mod.rs` does, so the frame state word and the worker inbox
//! are model-checked with the code that ships.
#![allow(unused_imports)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
