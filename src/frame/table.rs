//! The process-wide table of frame slots.
//!
//! Slots live in chunks of 4,096 that are allocated on demand and never
//! freed, so any handle, however stale, names memory that is still a
//! `Slot`; the generation in the state word decides whether it is still
//! the frame the handle was made for. Free slots are reused LIFO, so a
//! hot spawn/await loop stays on one cache-warm slot.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};

use super::handle::MAX_SLOTS;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::sanitize::Mutex;

const CHUNK_BITS: usize = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 4096;
const _: () = assert!(MAX_CHUNKS * CHUNK <= MAX_SLOTS);

struct FreeList {
    free: Vec<u32>,
    /// Slots below this index exist; above it, none was handed out yet.
    fresh: usize,
}

struct Table {
    chunks: [AtomicPtr<Slot>; MAX_CHUNKS],
    free: Mutex<FreeList>,
    live: AtomicU64,
}

static TABLE: Table = Table {
    chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS],
    free: Mutex::new(FreeList {
        free: Vec::new(),
        fresh: 0,
    }),
    live: AtomicU64::new(0),
};

/// The slot at `index`, if its chunk exists.
#[inline]
pub fn slot(index: usize) -> Option<&'static Slot> {
    let chunk = TABLE.chunks.get(index >> CHUNK_BITS)?.load(Acquire);
    if chunk.is_null() {
        return None;
    }
    // SAFETY: a non-null chunk pointer points at CHUNK slots that are never
    // freed, and the index is masked into that range.
    Some(unsafe { &*chunk.add(index & (CHUNK - 1)) })
}

/// Takes a free slot, from `cache` if it has one (refilled from the
/// table in batches, so a worker takes the table's lock once per batch).
/// The caller owns the slot until it publishes a frame in it.
#[inline]
pub fn alloc(cache: Option<&mut Vec<u32>>) -> Result<(usize, &'static Slot)> {
    let Some(cache) = cache else {
        return alloc_one();
    };
    match cache.pop() {
        Some(i) => {
            TABLE.live.fetch_add(1, Relaxed);
            let index = i as usize;
            Ok((index, slot(index).expect("cached slot exists")))
        }
        None => refill_and_alloc(cache),
    }
}

/// `alloc` with an empty cache: the locked path, out of line so the
/// common one saves no registers for it.
#[cold]
#[inline(never)]
fn refill_and_alloc(cache: &mut Vec<u32>) -> Result<(usize, &'static Slot)> {
    {
        let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = list.free.len().min(BATCH);
        let at = list.free.len() - n;
        cache.extend(list.free.drain(at..));
    }
    match cache.pop() {
        Some(i) => {
            TABLE.live.fetch_add(1, Relaxed);
            let index = i as usize;
            Ok((index, slot(index).expect("cached slot exists")))
        }
        None => alloc_one(),
    }
}

/// Puts a slot back, into `cache` while it holds fewer than `2 * BATCH`.
/// The caller freed the frame in it.
#[inline]
pub fn free(index: usize, cache: Option<&mut Vec<u32>>) {
    TABLE.live.fetch_sub(1, Relaxed);
    if let Some(cache) = cache {
        if cache.len() < 2 * BATCH {
            cache.push(index as u32);
            return;
        }
    }
    free_locked(index);
}

#[cold]
#[inline(never)]
fn free_locked(index: usize) {
    let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
    list.free.push(index as u32);
}

/// Gives a worker's cached slots back to the table (the worker is stopping).
pub fn flush(cache: &mut Vec<u32>) {
    let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
    list.free.append(cache);
}

/// Slots a cache takes from the table at once.
const BATCH: usize = 32;

fn alloc_one() -> Result<(usize, &'static Slot)> {
    let index = {
        let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
        match list.free.pop() {
            Some(i) => i as usize,
            None => {
                let i = list.fresh;
                if i >= MAX_CHUNKS * CHUNK {
                    return Err(Error::NoMem);
                }
                if i & (CHUNK - 1) == 0 {
                    let chunk: Box<[Slot]> = (i..i + CHUNK).map(|j| Slot::new(j as u32)).collect();
                    let ptr = Box::leak(chunk).as_mut_ptr();
                    TABLE.chunks[i >> CHUNK_BITS].store(ptr, Release);
                }
                list.fresh = i + 1;
                i
            }
        }
    };
    TABLE.live.fetch_add(1, Relaxed);
    Ok((index, slot(index).expect("allocated slot exists")))
}

/// Frames allocated and not yet freed, in all runtimes.
pub fn live() -> u64 {
    TABLE.live.load(Relaxed)
}

/// Every slot that was ever handed out, for shutdown's sweep.
pub fn for_each(mut f: impl FnMut(usize, &'static Slot)) {
    let fresh = TABLE.free.lock().unwrap_or_else(|e| e.into_inner()).fresh;
    for i in 0..fresh {
        if let Some(s) = slot(i) {
            f(i, s);
        }
    }
}
