//! The two-reference frame.
//!
//! Every coroutine frame lives in a slot of a process-wide table (`table`)
//! and is governed by one atomic word (`state`). The rules, which the code
//! refers to by number:
//!
//! 1. A frame has two references. The async reference (the promise) is made
//!    by spawn and consumed once, by await, cancel_async or detach. A
//!    suspend reference (a token) is made by each park and consumed once,
//!    by resume or cancel_suspend.
//! 2. Besides the references, `EXEC` marks whoever owns the frame's
//!    execution: the queue or worker that runs it, or the thread that
//!    finalizes it. A frame is freed when it is `DONE` and neither
//!    reference nor `EXEC` remains, by the thread whose transition made it
//!    so, and only then (`Snapshot::must_free`).
//! 3. Only the `EXEC` owner touches the body (`Slot::body`). The worker
//!    copies what it needs out of the body before `park` gives `EXEC` up.
//! 4. Cancellation begins at the first cancel. In the default mode the
//!    thread that takes `EXEC` for it runs the wait's undo (rule 7), the
//!    defers (LIFO) and `env_drop`, once, and the body never runs again; a
//!    parked frame is finalized by the canceller before cancel returns, a
//!    running one by its worker at its next suspension point.
//! 5. In cancel-returns mode a cancellation leaves the body in charge: the
//!    pending suspension returns `CORO_ECANCELED` once its token is
//!    consumed, and so does every later one.
//! 6. Handles are numbers (`handle`), checked against the generation
//!    (promises) or the park sequence (tokens) inside the same
//!    compare-exchange that consumes them; a mismatch is `CORO_ESTALE`.
//!    Slots are never unmapped, so a stale handle reads only a live atomic.
//! 7. A library wait (await, and the poller's waits) parks with `LIB_HELD`:
//!    a cancellation consumes its token at once and undoes the wait
//!    (`wait::Wait`), e.g. an awaiter cancels its child (cancellation
//!    flows down). The wait is described in the slot (`Slot::wait`), where
//!    `coro_dump` reads it without touching the body.
//! 8. The await handshake (`Slot::awaiter`) carries the frame's generation,
//!    so an awaiter that registers late can never write into a reused slot.
//! 9. A user's `on_suspend` runs with the token already made but `EXEC`
//!    still the worker's (`State::park_holding`, then `unhold`): the
//!    callback may read the frame's environment, so a cancel or a resume
//!    that comes meanwhile is only recorded, and the worker acts on it when
//!    the callback returns. Nothing runs the defers or frees the frame
//!    while it runs (shutdown's sweep waits for it, as for a running
//!    body). The library's own waits park at once (`park_lib`): what runs
//!    after their park touches no frame memory.

#[cfg(not(loom))]
pub mod blocker;
pub mod handle;
#[cfg(not(loom))]
pub mod slot;
pub mod state;
#[cfg(not(loom))]
pub mod table;
#[cfg(not(loom))]
pub mod trace;
#[cfg(not(loom))]
pub mod wait;

#[cfg(all(test, loom))]
mod loom_state;

pub use handle::{Promise, Token};
