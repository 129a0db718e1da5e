//! Stacks for stackful coroutines: pooled arenas, guard pages, overflow
//! reports.
//!
//! # Layout
//!
//! A [`StackPool`] maps *arenas*: one large `MAP_NORESERVE` mapping each,
//! carved into equal *slots*. A slot is a guard page followed by the usable
//! stack; stacks grow down, so a stack that runs out walks into its own guard:
//!
//! ```text
//!  arena base                                                    arena end
//!  | guard | usable stack 0 | guard | usable stack 1 | ... | guard | usable |
//!  ^ limit() of stack 0     ^ top of stack 0
//! ```
//!
//! Inside one slot (see `stack.rs`): `limit()` is the slot's first byte (the
//! guard included, as corosensei wants), `base()` is the slot's last byte + 1
//! minus whatever [`Stack::reserve_top`] handed out.
//!
//! # Rules
//!
//! 1. Memory is reserved, not committed: the mapping is `MAP_NORESERVE` and a
//!    page costs RSS only once a coroutine touches it. Transparent huge pages
//!    are refused on arenas, since one huge page would commit 2 MiB of thirty
//!    stacks at the first touch.
//! 2. Guards are installed with `MADV_GUARD_INSTALL` (Linux 6.13+), which
//!    leaves the arena one mapping however many stacks it holds. The first
//!    guard is checked to stop an access (an emulator may accept the advice
//!    and do nothing). If the kernel answers `EINVAL`, or the check finds
//!    no guard, the module falls back to `mprotect(PROT_NONE)` for every
//!    guard from then on; each guard then splits the mapping, and
//!    `vm.max_map_count` (65,530 by default) caps the process near 32,000
//!    stacks.
//! 3. Arenas grow geometrically: a pool's first arena holds
//!    [`FIRST_ARENA_SLOTS`] slots, each next one twice as many, up to
//!    [`ARENA_MAX_BYTES`] of address space (at least one slot). With 64 KiB
//!    stacks that is 16, 32, ..., 512, then 963 slots per arena. A pool never
//!    maps one stack at a time, and a runtime that runs three coroutines does
//!    not reserve 64 MiB (which strict overcommit, `vm.overcommit_memory=2`,
//!    would charge).
//! 4. Given-back stacks are reused LIFO, hot first. The [`HOT_STACKS`] most
//!    recently returned idle stacks keep their pages; a stack pushed out of
//!    that window is trimmed with `MADV_DONTNEED` over its usable part except
//!    its top page, so idle memory does not ratchet up to the peak.
//! 5. Every live arena is listed in a fixed, lock-free table (`registry.rs`,
//!    up to [`MAX_ARENAS`] arenas in the process). The `SIGSEGV`/`SIGBUS`
//!    handler ([`install_overflow_handler`]) looks the fault address up there;
//!    a hit in a guard page prints `coroutine N overflowed its S-byte stack`
//!    and aborts. Any other fault goes to the handler that was installed
//!    before ours (or to the default action). The handler runs on an
//!    alternate signal stack, so every thread that runs coroutines must hold
//!    an [`AltStack`]. A guard is one page: a C frame larger than that can
//!    step over it into the next slot unless the C code is built with
//!    `-fstack-clash-protection` (Rust code always probes).
//! 6. A [`Stack`] keeps its arena alive (it holds a counted `ArenaRef`,
//!    taken once, when the slot is carved), so a stack that outlives its pool is still valid
//!    memory. Stacks should all be given back before the pool drops; debug
//!    builds assert it.
//!
//! # The OS layer
//!
//! Every system call lives in one file per OS family, compiled as `sys`. It
//! provides:
//!
//! - `page_size() -> usize`
//! - `map(len) -> Result<NonNull<u8>>`: read-write, lazily committed
//!   address space; `unsafe unmap(ptr, len)`.
//! - `unsafe install_guard(ptr) -> Result<()>`: makes one page fault on any
//!   access; `guard_mode()` says how.
//! - `unsafe trim(ptr, len)`: drops the pages' contents and their RSS.
//! - `unsafe install_fault_handlers()`: the process-wide handler that calls
//!   `overflow::report_guard_hit(addr)` and then chains to the previous one.
//! - `altstack_enabled()`, `unsafe altstack_set(ptr, len)`,
//!   `altstack_disable_if(ptr)`: the calling thread's signal stack.
//!
//! Only Unix is written (`unix.rs`). A Windows port needs a `windows.rs` with
//! the same functions (`VirtualAlloc(MEM_RESERVE)`, `PAGE_GUARD`, a vectored
//! exception handler and `SetThreadStackGuarantee` in place of the
//! alternate stack) and the TEB fields of `Stack`.

#[cfg(unix)]
#[path = "unix.rs"]
mod sys;

#[cfg(not(unix))]
compile_error!(
    "coframe's stack module supports Unix only: a windows.rs providing the \
     functions listed in src/stack/mod.rs is still to be written"
);

mod arena;
mod overflow;
mod pool;
mod registry;
#[allow(clippy::module_inception)]
mod stack;
#[cfg(test)]
mod tests;

pub use overflow::{install_overflow_handler, set_running_id, AltStack};
pub use pool::StackPool;
pub use stack::Stack;

/// Usable bytes per stack when the configuration says 0.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;

/// The smallest usable size a pool hands out; smaller requests are raised.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// [`Stack::reserve_top`] refuses to leave less stack than this below the
/// reserved bytes.
pub const MIN_FREE_STACK: usize = 8 * 1024;

/// Idle stacks a pool keeps untrimmed (rule 4).
pub const HOT_STACKS: usize = 64;

/// Slots in a pool's first arena (rule 3).
pub const FIRST_ARENA_SLOTS: usize = 16;

/// Address space of a pool's largest arenas (rule 3).
pub const ARENA_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Arenas that may be live in the process at once, over all pools (rule 5).
pub const MAX_ARENAS: usize = registry::MAX_ARENAS;

/// Size of the alternate signal stack [`AltStack::install`] maps (plus a
/// guard page). The overflow handler itself needs a few hundred bytes; the
/// rest is for a chained handler and the kernel's signal frame (AVX-512
/// state alone is about 3 KiB).
pub const ALT_STACK_SIZE: usize = 64 * 1024;
