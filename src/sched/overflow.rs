//! Frames a worker's run queue could not take: it was full and the memory
//! to grow it was not there. They wait in a FIFO linked through their
//! slots' `link`, as an inbox links them (a frame queued on a worker is on
//! no inbox, so the field is free), which needs no memory at all.

use core::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;

use crate::frame::slot::Slot;
use crate::frame::table;

/// Index + 1 of the first and of the last frame; (0, 0) when empty.
pub(crate) struct Overflow(Cell<(u32, u32)>);

impl Overflow {
    pub(crate) const fn new() -> Overflow {
        Overflow(Cell::new((0, 0)))
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.get().0 == 0
    }

    /// Queues a frame behind the others. The caller owns its `EXEC`.
    #[cold]
    pub(crate) fn push(&self, slot: &'static Slot) {
        let id = slot.index() as u32 + 1;
        slot.link.store(0, Relaxed);
        match self.0.get() {
            (0, _) => self.0.set((id, id)),
            (first, last) => {
                let tail = table::slot(last as usize - 1).expect("queued frame exists");
                tail.link.store(id, Relaxed);
                self.0.set((first, id));
            }
        }
    }

    /// The oldest frame, taken out.
    pub(crate) fn pop(&self) -> Option<&'static Slot> {
        let (first, last) = self.0.get();
        if first == 0 {
            return None;
        }
        let slot = table::slot(first as usize - 1).expect("queued frame exists");
        let rest = if first == last {
            (0, 0)
        } else {
            (slot.link.load(Relaxed), last)
        };
        self.0.set(rest);
        Some(slot)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Overflow;
    use crate::frame::table;

    #[test]
    fn fifo_through_the_slots_links() {
        let slots: Vec<_> = (0..5).map(|_| table::alloc(None).unwrap()).collect();
        let o = Overflow::new();
        assert!(o.is_empty() && o.pop().is_none());
        for s in &slots[..3] {
            o.push(s);
        }
        assert!(core::ptr::eq(o.pop().unwrap(), slots[0]));
        // Pushes after pops keep the order, and a drained list starts over.
        o.push(slots[3]);
        for want in [slots[1], slots[2], slots[3]] {
            assert!(core::ptr::eq(o.pop().unwrap(), want));
        }
        assert!(o.is_empty() && o.pop().is_none());
        o.push(slots[4]);
        assert!(!o.is_empty());
        assert!(core::ptr::eq(o.pop().unwrap(), slots[4]));
        assert!(o.is_empty());
        for s in slots {
            table::free(s, None);
        }
    }
}
