//! The process-wide table of frame slots.
//!
//! Slots live in chunks of 4,096 that are allocated on demand and never
//! freed, so any handle, however stale, names memory that is still a
//! `Slot`; the generation in the state word decides whether it is still
//! the frame the handle was made for. Free slots are reused LIFO, so a
//! hot spawn/await loop stays on one cache-warm slot.

use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering::*};

use super::handle::MAX_SLOTS;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::sanitize::Mutex;

const CHUNK_BITS: usize = 12;
/// Slots per chunk (`scripts/coframe-gdb.py` walks chunks of this many).
pub const CHUNK: usize = 1 << CHUNK_BITS;
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
    /// Frames allocated minus frames freed, by threads without a cache
    /// and by caches that are gone. Each cache counts its own in
    /// `caches`: a worker's spawn and free then make no atomic
    /// read-modify-write on a line every thread shares (two of them cost
    /// 62 -> 75 ns per spawn + await on one worker).
    live: AtomicI64,
    caches: Mutex<Vec<CacheCount>>,
}

/// A slot cache's own count, listed in `Table::caches` from its creation
/// to its drop, which removes it before the count's box goes.
struct CacheCount(*const AtomicI64);

// SAFETY: only read (an atomic) while listed, under the list's lock.
unsafe impl Send for CacheCount {}

static TABLE: Table = Table {
    chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CHUNKS],
    free: Mutex::new(FreeList {
        free: Vec::new(),
        fresh: 0,
    }),
    live: AtomicI64::new(0),
    caches: Mutex::new(Vec::new()),
};

/// A worker's free slots (see `alloc`), with its own count of the frames
/// allocated minus freed through it. Only its owner changes the count,
/// with a load and a store; `live` reads it from any thread.
pub struct SlotCache {
    /// The slots themselves, not their indices: a slot knows its index,
    /// and an index would cost a chunk lookup per spawn.
    slots: Vec<&'static Slot>,
    /// Free slots that kept their coroutine and its stack, for the
    /// owner's next spawns (`alloc_warm`). The owner empties it
    /// (`drain_warm`) before the cache drops: the stacks are its runtime's.
    /// A fixed array, so keeping one is a store, with no growth path; the
    /// cells from `warm_len` on are stale (taking one leaves it as it is).
    warm: [Option<&'static Slot>; WARM],
    warm_len: usize,
    /// Boxed, so the table's list can point at it while the cache moves.
    live: Box<AtomicI64>,
}

/// Warm slots a cache keeps at most.
const WARM: usize = 16;

impl SlotCache {
    /// A worker's cache, made when its runtime is (every allocation of a
    /// runtime's creation can fail: `NoMem`).
    pub fn new() -> Result<SlotCache> {
        let live = crate::util::try_box(AtomicI64::new(0))?;
        // Room for the most it holds (`free` keeps at most 2 * BATCH, a
        // refill comes only when empty, `drain_warm` adds WARM), so a free
        // never allocates.
        let slots = crate::util::try_vec(2 * BATCH + WARM)?;
        let mut caches = TABLE.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.try_reserve(1).map_err(|_| Error::NoMem)?;
        caches.push(CacheCount(&*live));
        Ok(SlotCache {
            slots,
            warm: [None; WARM],
            warm_len: 0,
            live,
        })
    }

    /// A free slot that kept its coroutine, if there is one.
    #[inline]
    pub fn alloc_warm(&mut self) -> Option<&'static Slot> {
        let at = self.warm_len.checked_sub(1)?;
        let slot = (*self.warm.get(at)?)?;
        self.warm_len = at;
        self.count(1);
        Some(slot)
    }

    /// Whether `free_warm` would take another slot.
    #[inline]
    pub fn has_warm_room(&self) -> bool {
        self.warm_len < WARM
    }

    /// Puts back the slot of a frame the caller freed and whose coroutine
    /// it left in the slot. The caller saw `has_warm_room`.
    #[inline(always)]
    pub fn free_warm(&mut self, slot: &'static Slot) {
        if let Some(cell) = self.warm.get_mut(self.warm_len) {
            *cell = Some(slot);
            self.warm_len += 1;
            self.count(-1);
        } else {
            debug_assert!(false, "free_warm without room");
        }
    }

    /// Hands each warm slot to `strip`, which takes its coroutine away,
    /// and keeps the slot as a plain free one.
    pub fn drain_warm(&mut self, mut strip: impl FnMut(&'static Slot)) {
        let len = core::mem::take(&mut self.warm_len);
        for slot in self.warm[..len].iter().flatten() {
            strip(slot);
            self.slots.push(slot);
        }
    }

    #[inline]
    fn count(&self, delta: i64) {
        self.live.store(self.live.load(Relaxed) + delta, Relaxed);
    }
}

impl Drop for SlotCache {
    /// Gives the slots back (the worker is stopping) and moves the count
    /// to the table's, under the lock `live` sums under, so no frame is
    /// counted twice or missed.
    fn drop(&mut self) {
        debug_assert!(self.warm_len == 0, "a slot cache dropped warm slots");
        TABLE
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .extend(self.slots.drain(..).map(|s| s.index() as u32));
        let mut caches = TABLE.caches.lock().unwrap_or_else(|e| e.into_inner());
        TABLE.live.fetch_add(self.live.swap(0, Relaxed), Relaxed);
        let mine: *const AtomicI64 = &*self.live;
        caches.retain(|c| c.0 != mine);
    }
}

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
pub fn alloc(cache: Option<&mut SlotCache>) -> Result<&'static Slot> {
    let Some(cache) = cache else {
        return alloc_one();
    };
    match cache.slots.pop() {
        Some(s) => {
            cache.count(1);
            Ok(s)
        }
        None => refill_and_alloc(cache),
    }
}

/// `alloc` with an empty cache: the locked path, out of line so the
/// common one saves no registers for it.
#[cold]
#[inline(never)]
fn refill_and_alloc(cache: &mut SlotCache) -> Result<&'static Slot> {
    {
        let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = list.free.len().min(BATCH);
        let at = list.free.len() - n;
        let free = list.free.drain(at..);
        cache
            .slots
            .extend(free.map(|i| slot(i as usize).expect("freed slot exists")));
    }
    match cache.slots.pop() {
        Some(s) => {
            cache.count(1);
            Ok(s)
        }
        None => alloc_one(),
    }
}

/// Puts a slot back, into `cache` while it holds fewer than `2 * BATCH`.
/// The caller freed the frame in it.
#[inline]
pub fn free(slot: &'static Slot, cache: Option<&mut SlotCache>) {
    match cache {
        Some(cache) => {
            cache.count(-1);
            if cache.slots.len() < 2 * BATCH {
                cache.slots.push(slot);
                return;
            }
        }
        None => {
            TABLE.live.fetch_sub(1, Relaxed);
        }
    }
    free_locked(slot.index());
}

#[cold]
#[inline(never)]
fn free_locked(index: usize) {
    let mut list = TABLE.free.lock().unwrap_or_else(|e| e.into_inner());
    list.free.push(index as u32);
}

/// Slots a cache takes from the table at once.
const BATCH: usize = 32;

fn alloc_one() -> Result<&'static Slot> {
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
                    new_chunk(&mut list.free, i)?;
                }
                list.fresh = i + 1;
                i
            }
        }
    };
    TABLE.live.fetch_add(1, Relaxed);
    Ok(slot(index).expect("allocated slot exists"))
}

/// Makes the chunk of slots from `first` on. Both allocations may fail
/// (a capped address space), and then nothing changed. The free list gets
/// room for every slot that will then exist, so giving a slot back (on
/// any thread, in any state) never allocates.
#[cold]
fn new_chunk(free: &mut Vec<u32>, first: usize) -> Result<()> {
    let mut chunk: Vec<Slot> = Vec::new();
    chunk.try_reserve_exact(CHUNK).map_err(|_| Error::NoMem)?;
    free.try_reserve_exact(first + CHUNK - free.len())
        .map_err(|_| Error::NoMem)?;
    let check = crate::util::checking();
    chunk.extend((first..first + CHUNK).map(|j| Slot::new(j as u32, check)));
    let ptr = Box::leak(chunk.into_boxed_slice()).as_mut_ptr();
    TABLE.chunks[first >> CHUNK_BITS].store(ptr, Release);
    Ok(())
}

/// Frames allocated and not yet freed, in all runtimes: exact once the
/// threads that allocate and free are quiet. A frame allocated through one
/// cache and freed through another counts +1 in one and -1 in the other.
pub fn live() -> u64 {
    let caches = TABLE.caches.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a listed count is alive: its cache removes it (under this
    // lock) before the box goes.
    let sum = caches
        .iter()
        .map(|c| unsafe { &*c.0 }.load(Relaxed))
        .sum::<i64>()
        + TABLE.live.load(Relaxed);
    sum as u64
}

/// Every slot that was ever handed out, for shutdown's sweep.
pub fn for_each(mut f: impl FnMut(&'static Slot)) {
    let fresh = TABLE.free.lock().unwrap_or_else(|e| e.into_inner()).fresh;
    for i in 0..fresh {
        if let Some(s) = slot(i) {
            f(s);
        }
    }
}
