//! The process-wide table of live arenas that the fault handler reads.
//!
//! A signal handler may not lock, allocate or follow a pointer that another
//! thread might be freeing, so the table is a fixed array of atomics in
//! static memory. An entry is published by storing its length last
//! (`Release`) and retired by clearing the length first; the handler reads
//! the length first (`Acquire`) and skips zero.
//!
//! A fault racing with the unmapping of its own arena is not the overflow of
//! a live stack (a running stack keeps its arena alive, rule 6 in `mod.rs`);
//! the handler may then report it as an overflow, nothing worse.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Arenas live at once in the process, over all pools (rule 5 in `mod.rs`).
pub(super) const MAX_ARENAS: usize = 4096;

struct Entry {
    /// Owned by an arena (set by `register`, cleared by `unregister`).
    claimed: AtomicBool,
    /// First byte of the arena.
    base: AtomicUsize,
    /// Bytes in the arena; 0 while the entry is not published.
    len: AtomicUsize,
    /// Bytes per slot, guard page included.
    slot_size: AtomicUsize,
    /// Usable bytes per slot (`slot_size` minus the guard).
    usable: AtomicUsize,
}

impl Entry {
    const fn new() -> Entry {
        Entry {
            claimed: AtomicBool::new(false),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            slot_size: AtomicUsize::new(0),
            usable: AtomicUsize::new(0),
        }
    }
}

static TABLE: [Entry; MAX_ARENAS] = [const { Entry::new() }; MAX_ARENAS];

/// Entries at this index and above have never been claimed; the handler
/// scans below it only.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// What the table says about one arena.
pub(super) struct ArenaInfo {
    pub(super) base: usize,
    pub(super) len: usize,
    pub(super) slot_size: usize,
    pub(super) usable: usize,
}

/// Publishes an arena; returns its entry index for `unregister`.
///
/// Errors: `NoMem` when [`MAX_ARENAS`] arenas are live.
pub(super) fn register(info: &ArenaInfo) -> Result<usize> {
    for (i, entry) in TABLE.iter().enumerate() {
        if entry
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        entry.base.store(info.base, Ordering::Relaxed);
        entry.slot_size.store(info.slot_size, Ordering::Relaxed);
        entry.usable.store(info.usable, Ordering::Relaxed);
        entry.len.store(info.len, Ordering::Release);
        HIGH_WATER.fetch_max(i + 1, Ordering::Release);
        return Ok(i);
    }
    Err(Error::NoMem)
}

/// Retires entry `index`; after this the handler no longer looks at the
/// arena.
pub(super) fn unregister(index: usize) {
    let entry = &TABLE[index];
    entry.len.store(0, Ordering::Release);
    entry.claimed.store(false, Ordering::Release);
}

/// A fault inside a guard page.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GuardHit {
    /// Usable bytes of that stack.
    pub(super) usable: usize,
}

/// The guard page that holds `addr`, if any. Async-signal-safe: atomic loads
/// only, no locks, no allocation, no panics.
pub(super) fn lookup_guard(addr: usize) -> Option<GuardHit> {
    let high = HIGH_WATER.load(Ordering::Acquire).min(MAX_ARENAS);
    for entry in TABLE.iter().take(high) {
        let len = entry.len.load(Ordering::Acquire);
        if len == 0 {
            continue;
        }
        let base = entry.base.load(Ordering::Relaxed);
        let Some(offset) = addr.checked_sub(base) else {
            continue;
        };
        if offset >= len {
            continue;
        }
        let slot_size = entry.slot_size.load(Ordering::Relaxed);
        let usable = entry.usable.load(Ordering::Relaxed);
        if slot_size == 0 || usable >= slot_size {
            return None;
        }
        // The guard is the low `slot_size - usable` bytes of each slot.
        if offset % slot_size >= slot_size - usable {
            return None;
        }
        return Some(GuardHit { usable });
    }
    None
}
