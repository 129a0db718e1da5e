//! The stack pool: carves slots out of arenas, lends them out as `Stack`s,
//! takes them back and reuses them hot first (rules 3 and 4 in `mod.rs`).

use core::fmt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use super::arena::{Arena, ArenaRef};
use super::stack::Stack;
use super::{
    sys, ARENA_MAX_BYTES, DEFAULT_STACK_SIZE, FIRST_ARENA_SLOTS, HOT_STACKS, MIN_STACK_SIZE,
};
use crate::error::{Error, Result};
use crate::sanitize::{Mutex, MutexGuard};

/// Hands out guarded stacks of one size; one per runtime. `Send + Sync`.
///
/// ```
/// use coframe::stack::StackPool;
/// fn send_sync<T: Send + Sync>() {}
/// send_sync::<StackPool>();
/// let pool = StackPool::new(0).unwrap();
/// let stack = pool.get().unwrap();
/// assert_eq!(stack.usable_size(), 64 * 1024);
/// pool.put(stack);
/// assert_eq!((pool.carved(), pool.idle()), (1, 1));
/// ```
pub struct StackPool {
    /// Usable bytes per stack, a page multiple.
    usable: usize,
    /// Stamped into our arenas, so `put` recognises a foreign stack.
    id: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Untrimmed idle stacks, the most recently returned at the back.
    hot: VecDeque<Stack>,
    /// Trimmed idle stacks, the most recently trimmed at the back.
    cold: Vec<Stack>,
    /// Idle stacks being trimmed outside the lock.
    trimming: usize,
    /// The arena new slots come from, and its next uncarved slot.
    current: Option<ArenaRef>,
    next_slot: usize,
    /// Arenas mapped so far (sets the size of the next one).
    arenas: usize,
    /// Slots carved so far.
    carved: usize,
}

/// Hands each pool a distinct id.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

impl StackPool {
    /// A pool of stacks with `usable` usable bytes each (0 means
    /// [`DEFAULT_STACK_SIZE`]), rounded up to the page size and raised to
    /// [`MIN_STACK_SIZE`]. A guard page lies below each stack. Maps nothing
    /// until the first `get`.
    ///
    /// Errors: `Invalid` when the size overflows once rounded; `NoMem`.
    pub fn new(usable: usize) -> Result<StackPool> {
        let page = sys::page_size();
        let usable = if usable == 0 {
            DEFAULT_STACK_SIZE
        } else {
            usable
        };
        let usable = usable
            .max(MIN_STACK_SIZE)
            .checked_next_multiple_of(page)
            .ok_or(Error::Invalid)?;
        // The slot (guard + usable) must be addressable too.
        usable.checked_add(page).ok_or(Error::Invalid)?;
        // Fallible, as every allocation a runtime's creation makes.
        let mut hot = VecDeque::new();
        hot.try_reserve_exact(HOT_STACKS)
            .map_err(|_| Error::NoMem)?;
        Ok(StackPool {
            usable,
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            inner: Mutex::new(Inner {
                hot,
                cold: Vec::new(),
                trimming: 0,
                current: None,
                next_slot: 0,
                arenas: 0,
                carved: 0,
            }),
        })
    }

    /// Usable bytes per stack.
    pub fn usable_size(&self) -> usize {
        self.usable
    }

    /// A stack: the most recently returned idle one, or a fresh slot.
    ///
    /// Errors: `NoMem` when a new arena cannot be mapped, the arena registry
    /// is full, or the guard page cannot be installed; `Invalid` when an
    /// arena's size overflows.
    pub fn get(&self) -> Result<Stack> {
        let (arena, slot) = {
            let mut inner = self.lock();
            if let Some(stack) = inner.hot.pop_back().or_else(|| inner.cold.pop()) {
                return Ok(stack);
            }
            // Room in `cold` for every stack carved, this one included,
            // so that `put` never allocates.
            let carved = inner.carved + 1;
            if inner.cold.capacity() < carved {
                let more = carved.next_power_of_two() - inner.cold.len();
                inner
                    .cold
                    .try_reserve_exact(more)
                    .map_err(|_| Error::NoMem)?;
            }
            inner.reserve_slot(self.usable, self.id)?
        };
        // The guard system call runs outside the lock.
        // SAFETY: reserve_slot hands out each slot exactly once.
        let carved = unsafe { Stack::carve(arena, slot) };
        if carved.is_err() {
            // The slot stays unused until its arena goes; do not count it.
            self.lock().carved -= 1;
        }
        carved
    }

    /// Gives a stack back. Its reservations are cleared; it is
    /// the next one `get` returns. If that pushes an idle stack out of the
    /// [`HOT_STACKS`] window, that older stack is trimmed (outside the lock).
    ///
    /// A stack from another pool is not taken: debug builds panic, release
    /// builds drop it (leaking its slot).
    pub fn put(&self, mut stack: Stack) {
        if stack.arena().pool_id() != self.id {
            debug_assert!(false, "stack given back to a pool that did not carve it");
            return;
        }
        stack.reset();
        let mut victim = {
            let mut inner = self.lock();
            if inner.hot.len() < HOT_STACKS {
                inner.hot.push_back(stack);
                return;
            }
            let victim = inner.hot.pop_front().expect("hot window is full");
            inner.hot.push_back(stack);
            inner.trimming += 1;
            victim
        };
        victim.trim();
        let mut inner = self.lock();
        inner.trimming -= 1;
        inner.cold.push(victim);
    }

    /// Stacks carved so far (each slot counts once, however often reused).
    pub fn carved(&self) -> usize {
        self.lock().carved
    }

    /// Stacks idle in the pool (equals `carved` when every stack is back).
    pub fn idle(&self) -> usize {
        let inner = self.lock();
        inner.hot.len() + inner.cold.len() + inner.trimming
    }

    /// Arenas this pool has mapped so far.
    pub fn arenas(&self) -> usize {
        self.lock().arenas
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock except allocation failure,
        // which aborts; a poisoned lock still holds consistent lists.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Picks the next uncarved slot, mapping a new arena when the current
    /// one is used up, and counts it as carved.
    fn reserve_slot(&mut self, usable: usize, pool_id: u64) -> Result<(ArenaRef, usize)> {
        let arena = match &self.current {
            Some(arena) if self.next_slot < arena.slots() => arena.clone(),
            _ => {
                let arena = Arena::new(self.next_arena_slots(usable), usable, pool_id)?;
                let arena = ArenaRef::new(arena)?;
                self.arenas += 1;
                self.next_slot = 0;
                self.current = Some(arena.clone());
                arena
            }
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        self.carved += 1;
        Ok((arena, slot))
    }

    /// Rule 3 in `mod.rs`: 16, 32, 64, ... slots, capped at ARENA_MAX_BYTES.
    fn next_arena_slots(&self, usable: usize) -> usize {
        let slot_size = usable + sys::page_size();
        let cap = (ARENA_MAX_BYTES / slot_size).max(1);
        // A multiply, not a shift: `checked_shl` lets the bits shifted out
        // go, and 16 << 28 is 0 on a 32-bit target.
        let doubled = 1usize
            .checked_shl(self.arenas.min(32) as u32)
            .and_then(|m| FIRST_ARENA_SLOTS.checked_mul(m));
        doubled.unwrap_or(usize::MAX).min(cap)
    }
}

impl Drop for StackPool {
    /// Drops the idle stacks; each arena is unmapped when its last stack
    /// goes. Every stack should have been given back first: one still out
    /// keeps its arena mapped (safe, but a leak, which debug builds report).
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let idle = inner.hot.len() + inner.cold.len();
        if !std::thread::panicking() {
            debug_assert_eq!(
                idle,
                inner.carved,
                "StackPool dropped with {} stack(s) not given back",
                inner.carved - idle
            );
        }
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("StackPool")
            .field("usable", &self.usable)
            .field("carved", &inner.carved)
            .field("hot", &inner.hot.len())
            .field("cold", &inner.cold.len())
            .field("arenas", &inner.arenas)
            .finish()
    }
}
