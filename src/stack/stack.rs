//! One coroutine stack: a slot of an arena, lent out by a `StackPool`.
//!
//! ```text
//!  high addresses
//!  +---------------------------+ <- top: end of the slot (page-aligned)
//!  | reserved by reserve_top() |    the frame's copy of the environment
//!  +---------------------------+ <- base(): top - reserved, 16-byte aligned
//!  |                           |
//!  |  usable stack, grows down |
//!  |                           |
//!  +---------------------------+ <- limit() + one page
//!  |  guard page               |    any access faults (overflow report)
//!  +---------------------------+ <- limit(): start of the slot
//!  low addresses
//! ```

use core::fmt;
use corosensei::stack::StackPointer;

use super::arena::{Arena, ArenaRef};
use super::{sys, MIN_FREE_STACK};
use crate::error::{Error, Result};

/// A guarded coroutine stack from a [`StackPool`](super::StackPool).
///
/// Give it back with [`StackPool::put`](super::StackPool::put). Dropping it
/// instead is safe but leaks the slot: it is not reused, and its arena stays
/// mapped until the pool and every other stack of that arena are gone.
///
/// A `Stack` is `Send` (a coroutine may be created on one thread and run on
/// another) and `Sync` (shared, it only answers questions), but not
/// `Clone`: two coroutines on one stack would overwrite each other.
///
/// ```
/// fn send_sync<T: Send + Sync>() {}
/// send_sync::<coframe::stack::Stack>();
/// ```
///
/// ```compile_fail
/// fn clone<T: Clone>() {}
/// clone::<coframe::stack::Stack>();
/// ```
pub struct Stack {
    /// Keeps the memory mapped while this stack exists (rule 6 in `mod.rs`).
    arena: ArenaRef,
    /// Our slot in `arena`.
    slot: usize,
    /// The slot's top minus the bytes `reserve_top` handed out: what
    /// `base()` answers on every resume, kept here so a switch does not
    /// chase the arena for it. Three words in all: a spawn and a free move
    /// a stack by value several times.
    base: StackPointer,
}

impl Stack {
    /// Makes slot `slot` of `arena` a stack: installs its guard and
    /// registers it with valgrind.
    ///
    /// Errors: `NoMem` when the guard cannot be installed.
    ///
    /// # Safety
    ///
    /// Call once per slot: the slot must never have been carved before.
    pub(super) unsafe fn carve(arena: ArenaRef, slot: usize) -> Result<Stack> {
        // SAFETY: a fresh slot (caller's contract).
        unsafe { arena.install_guard(slot)? };
        let start = arena.slot_start(slot);
        let len = arena.slot_end(slot).as_ptr() as usize - start.as_ptr() as usize;
        let base = top(arena.slot_end(slot).as_ptr());
        arena.register_with_valgrind(start, len);
        Ok(Stack { arena, slot, base })
    }

    /// Usable bytes below the top, guard excluded, reservations included.
    pub fn usable_size(&self) -> usize {
        self.arena.usable()
    }

    /// Reserves `bytes` (rounded up to 16) at the top of the stack for the
    /// caller and returns a pointer to them; `base()` moves down below them.
    /// Successive calls reserve successive blocks, each below the previous
    /// one. The bytes are zero or left over from the stack's previous user;
    /// they stay valid as long as the stack is not given back.
    ///
    /// Errors: `Invalid` when less than [`MIN_FREE_STACK`] bytes of stack
    /// would remain below.
    pub fn reserve_top(&mut self, bytes: usize) -> Result<*mut u8> {
        let rounded = bytes.checked_add(15).ok_or(Error::Invalid)? & !15;
        let reserved = self.reserved().checked_add(rounded).ok_or(Error::Invalid)?;
        if reserved > self.usable_size().saturating_sub(MIN_FREE_STACK) {
            return Err(Error::Invalid);
        }
        // SAFETY: reserved <= usable, so the pointer stays inside our slot.
        let p = unsafe { self.arena.slot_end(self.slot).as_ptr().sub(reserved) };
        self.base = top(p);
        Ok(p)
    }

    /// Bytes handed out by `reserve_top`, a multiple of 16.
    fn reserved(&self) -> usize {
        self.arena.slot_end(self.slot).as_ptr() as usize - self.base.get()
    }

    /// Forgets the reservations; `put` calls this.
    pub(super) fn reset(&mut self) {
        self.base = top(self.arena.slot_end(self.slot).as_ptr());
    }

    /// Releases the usable pages except the top one (rule 4 in `mod.rs`).
    pub(super) fn trim(&mut self) {
        let page = sys::page_size();
        let start = self.arena.slot_start(self.slot);
        // Skip the guard (it stays a guard either way, FACTS, but its state
        // is not ours to reset) and keep the top page, which the next
        // coroutine touches first.
        let len = self.usable_size() - page;
        // SAFETY: the range is page-aligned, inside our slot, and we own the
        // slot with nothing on it (`&mut self` in the pool).
        unsafe { sys::trim(start.add(page), len) };
    }

    /// The arena this stack belongs to (for the pool's checks).
    pub(super) fn arena(&self) -> &Arena {
        &self.arena
    }
}

/// A stack top as corosensei takes it: checked for 0 once, when the top
/// moves, not on every resume.
fn top(p: *mut u8) -> StackPointer {
    StackPointer::new(p as usize).expect("a mapping is never at 0")
}

// SAFETY: the slot has a guard page below it (installed at carve, before the
// Stack exists) and at least MIN_STACK_SIZE - MIN_FREE_STACK >= 8 KiB usable
// below base(), more than corosensei's MIN_STACK_SIZE (4 KiB). base() and
// limit() are 16-byte aligned: the slot bounds are page-aligned and
// `reserved` is a multiple of 16. The memory stays mapped while `self` lives
// (it holds the arena).
unsafe impl corosensei::stack::Stack for Stack {
    #[inline]
    fn base(&self) -> StackPointer {
        self.base
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        StackPointer::new(self.arena.slot_start(self.slot).as_ptr() as usize)
            .expect("mapping is never at 0")
    }

    #[cfg(windows)]
    fn teb_fields(&self) -> corosensei::stack::StackTebFields {
        let page = sys::page_size();
        corosensei::stack::StackTebFields {
            StackBase: self.base().get(),
            StackLimit: self.limit().get() + page,
            DeallocationStack: self.limit().get(),
            GuaranteedStackBytes: 0,
        }
    }

    #[cfg(windows)]
    fn update_teb_fields(&mut self, _stack_limit: usize, _guaranteed_stack_bytes: usize) {
        // The whole slot is committed up front (no PAGE_GUARD growth), so
        // nothing the OS changes here needs keeping.
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use corosensei::stack::Stack as _;
        f.debug_struct("Stack")
            .field("limit", &format_args!("{:#x}", self.limit().get()))
            .field("base", &format_args!("{:#x}", self.base().get()))
            .field("usable", &self.usable_size())
            .field("reserved", &self.reserved())
            .finish()
    }
}
