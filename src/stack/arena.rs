//! An arena: one mapping carved into `[guard page][usable stack]` slots.
//!
//! The arena only owns the memory; which slots
//! are handed out is the pool's business (`pool.rs`), and a handed-out slot
//! is a `Stack` (`stack.rs`), which keeps its arena alive through an
//! `ArenaRef`.

use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicUsize, Ordering::*};

use corosensei::stack::valgrind::ValgrindStackRegistration;

use super::{registry, sys};
use crate::error::{Error, Result};
use crate::sanitize::Mutex;

pub(super) struct Arena {
    /// First byte of the mapping (the guard page of slot 0).
    base: NonNull<u8>,
    /// Bytes per slot: one guard page plus `usable`.
    slot_size: usize,
    /// Usable bytes per slot, a page multiple.
    usable: usize,
    /// Slots in the mapping.
    slots: usize,
    /// Our entry in the registry.
    entry: usize,
    /// The pool that carved this arena, so a stack given to the wrong pool
    /// is caught.
    pool_id: u64,
    /// Tells valgrind each carved slot is a stack, so switching to it is
    /// not reported as a wild stack-pointer move: once per slot, when it is
    /// carved, until the arena goes. (Kept here, not in each `Stack`, so a
    /// stack moved by value is three words.) Room for every slot is
    /// reserved with the arena, so carving never allocates; the lock is
    /// the `sanitize` one, as every lock of the library, because two
    /// threads that spawn carve at once.
    valgrind: Mutex<Vec<ValgrindStackRegistration>>,
}

// SAFETY: the arena is plain memory plus atomics. Who may touch which slot
// is decided by ownership of the `Stack` that holds it, not by the thread
// that holds the arena.
unsafe impl Send for Arena {}
// SAFETY: as above; shared access only reads the immutable fields (and the
// valgrind list, behind its mutex).
unsafe impl Sync for Arena {}

impl Arena {
    /// Maps an arena of `slots` slots of `page + usable` bytes and publishes
    /// it to the fault handler. No slot has its guard yet (see
    /// [`Arena::install_guard`]); nothing is committed.
    ///
    /// Errors: `NoMem` when the mapping fails or the registry is full;
    /// `Invalid` when the size overflows.
    pub(super) fn new(slots: usize, usable: usize, pool_id: u64) -> Result<Arena> {
        let page = sys::page_size();
        debug_assert!(slots > 0 && usable % page == 0);
        let slot_size = usable.checked_add(page).ok_or(Error::Invalid)?;
        let len = slot_size.checked_mul(slots).ok_or(Error::Invalid)?;
        let mut valgrind = Vec::new();
        valgrind
            .try_reserve_exact(slots)
            .map_err(|_| Error::NoMem)?;
        let base = sys::map(len)?;
        let info = registry::ArenaInfo {
            base: base.as_ptr() as usize,
            len,
            slot_size,
            usable,
        };
        let entry = match registry::register(&info) {
            Ok(entry) => entry,
            Err(e) => {
                // SAFETY: mapped above, never handed out.
                unsafe { sys::unmap(base, len) };
                return Err(e);
            }
        };
        Ok(Arena {
            base,
            slot_size,
            usable,
            slots,
            entry,
            pool_id,
            valgrind: Mutex::new(valgrind),
        })
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    pub(super) fn usable(&self) -> usize {
        self.usable
    }

    pub(super) fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// The first byte of slot `slot`: its guard page, the stack's `limit()`.
    pub(super) fn slot_start(&self, slot: usize) -> NonNull<u8> {
        assert!(slot < self.slots());
        // SAFETY: slot < slots, so the offset stays inside the mapping.
        unsafe { self.base.add(slot * self.slot_size) }
    }

    /// One past the last byte of slot `slot`: the top of its stack.
    pub(super) fn slot_end(&self, slot: usize) -> NonNull<u8> {
        assert!(slot < self.slots());
        // SAFETY: slot < slots, so the offset is at most the mapping's end.
        unsafe { self.base.add((slot + 1) * self.slot_size) }
    }

    /// Turns the first page of slot `slot` into its guard.
    ///
    /// Errors: `NoMem` (see `sys::install_guard`).
    ///
    /// # Safety
    ///
    /// Call once per slot, before the slot is used as a stack.
    pub(super) unsafe fn install_guard(&self, slot: usize) -> Result<()> {
        // SAFETY: the page is the slot's first, page-aligned, inside our
        // mapping, and unused (caller's contract).
        unsafe { sys::install_guard(self.slot_start(slot)) }
    }

    /// Registers `len` bytes at `start` (a slot being carved) as a stack
    /// with valgrind, until the arena is dropped. Never allocates: each
    /// slot is carved once, and `new` made room for all of them.
    pub(super) fn register_with_valgrind(&self, start: NonNull<u8>, len: usize) {
        let registration = ValgrindStackRegistration::new(start.as_ptr(), len);
        let mut all = self.valgrind.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert!(all.len() < all.capacity(), "a slot carved twice");
        all.push(registration);
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Retire the registry entry before the memory goes, so the handler
        // never takes a fault there for a guard hit.
        registry::unregister(self.entry);
        // SAFETY: every Stack holds an ArenaRef of its arena, so when the arena
        // drops no stack of it exists any more.
        unsafe { sys::unmap(self.base, self.slot_size * self.slots()) };
    }
}

/// A counted reference to an arena: what `Arc<Arena>` would be, but made
/// with an allocation that can fail (`CORO_ENOMEM`, not an abort). Every
/// `Stack` carved from the arena holds one, and so does the pool while it
/// carves from it; the last one to go unmaps the arena (rule 6 in
/// `mod.rs`).
pub(super) struct ArenaRef(NonNull<Counted>);

struct Counted {
    refs: AtomicUsize,
    arena: Arena,
}

// SAFETY: as for `Arc<Arena>`: the arena is `Send + Sync`, and the count
// is atomic.
unsafe impl Send for ArenaRef {}
// SAFETY: as above.
unsafe impl Sync for ArenaRef {}

impl ArenaRef {
    /// The first reference to `arena`. Errors: `NoMem` (the arena is then
    /// dropped: unmapped and unregistered).
    pub(super) fn new(arena: Arena) -> Result<ArenaRef> {
        let counted = crate::util::try_box(Counted {
            refs: AtomicUsize::new(1),
            arena,
        })?;
        Ok(ArenaRef(NonNull::from(Box::leak(counted))))
    }

    fn counted(&self) -> &Counted {
        // SAFETY: our reference keeps the allocation alive.
        unsafe { self.0.as_ref() }
    }
}

impl Deref for ArenaRef {
    type Target = Arena;
    fn deref(&self) -> &Arena {
        &self.counted().arena
    }
}

impl Clone for ArenaRef {
    fn clone(&self) -> ArenaRef {
        // Relaxed, as `Arc`: a new reference is made from an existing one.
        if self.counted().refs.fetch_add(1, Relaxed) > isize::MAX as usize {
            crate::util::die("coframe: an arena's reference count overflowed; aborting");
        }
        ArenaRef(self.0)
    }
}

impl Drop for ArenaRef {
    fn drop(&mut self) {
        let refs = &self.counted().refs;
        // Release, then acquire by the last one, as `Arc`; announced to
        // ThreadSanitizer, which does not see the library's atomics.
        crate::sanitize::release(refs);
        if refs.fetch_sub(1, Release) != 1 {
            return;
        }
        fence(Acquire);
        crate::sanitize::acquire(refs);
        // SAFETY: the last reference: nobody else can reach the arena, and
        // the allocation came from `try_box` in `new`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}
