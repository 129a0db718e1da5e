//! A worker's local run queue: a FIFO ring whose capacity is a power of
//! two, so a push and a pop are a mask and a compare each. It grows when
//! full and never shrinks (a worker's queue is as long as its busiest
//! moment). `VecDeque` does the same job with more arithmetic per call,
//! which the yield round trip pays twice.

/// First capacity: enough for a busy worker without an early regrow.
const FIRST: usize = 64;

pub(crate) struct RunQueue<T: Copy> {
    /// Empty until the first push, then a power of two long.
    buf: Vec<T>,
    /// `buf.len() - 1` (wrapping: all ones while `buf` is empty), kept so
    /// that a push and a pop mask without computing it.
    mask: usize,
    /// Positions of the oldest item and of the next push; they only grow
    /// (wrapping), and `tail - head` is the length.
    head: usize,
    tail: usize,
}

impl<T: Copy> RunQueue<T> {
    pub(crate) const fn new() -> RunQueue<T> {
        RunQueue {
            buf: Vec::new(),
            mask: usize::MAX,
            head: 0,
            tail: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    pub(crate) fn len(&self) -> usize {
        self.tail.wrapping_sub(self.head)
    }

    /// Queues `item`, or gives it back if the ring is full and cannot
    /// grow (no memory).
    #[inline]
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        if self.tail.wrapping_sub(self.head) == self.mask.wrapping_add(1) && !self.grow(item) {
            return Err(item);
        }
        let at = self.tail & self.mask;
        // SAFETY: after `grow`, `buf.len()` is a power of two (at least
        // FIRST) and `mask` is one less, so the masked position is in bounds.
        unsafe { *self.buf.get_unchecked_mut(at) = item };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.head == self.tail {
            return None;
        }
        let at = self.head & self.mask;
        // SAFETY: the queue is not empty, so `buf` was grown to a power of
        // two, `mask` is one less, and the masked position is in bounds.
        let item = unsafe { *self.buf.get_unchecked(at) };
        self.head = self.head.wrapping_add(1);
        Some(item)
    }

    /// `push(item)` then `pop()`, in one step: the oldest item, with
    /// `item` queued behind the rest (or `item` itself, if the queue is
    /// empty). No room check: the pop frees the place the push takes.
    #[inline]
    pub(crate) fn rotate(&mut self, item: T) -> T {
        if self.head == self.tail {
            return item;
        }
        // SAFETY: as in `pop` and `push`; the queue is not empty, so `buf`
        // has been grown, and after the pop it has a free place.
        unsafe {
            let first = *self.buf.get_unchecked(self.head & self.mask);
            *self.buf.get_unchecked_mut(self.tail & self.mask) = item;
            self.head = self.head.wrapping_add(1);
            self.tail = self.tail.wrapping_add(1);
            first
        }
    }

    /// The most recently pushed item, taken back, if `is_it` says it is
    /// the one wanted; it then leaves the queue as if never pushed.
    #[inline]
    pub(crate) fn take_last_if(&mut self, is_it: impl FnOnce(T) -> bool) -> Option<T> {
        if self.head == self.tail {
            return None;
        }
        let last = self.tail.wrapping_sub(1);
        // SAFETY: as in `pop`.
        let item = unsafe { *self.buf.get_unchecked(last & self.mask) };
        if !is_it(item) {
            return None;
        }
        self.tail = last;
        Some(item)
    }

    /// The newest of the last `within` items for which `wanted` holds,
    /// taken out; the others keep their order.
    pub(crate) fn take_newest_where(
        &mut self,
        within: usize,
        mut wanted: impl FnMut(T) -> bool,
    ) -> Option<T> {
        for back in 1..=within.min(self.len()) {
            let at = self.tail.wrapping_sub(back);
            // SAFETY: `at` is one of the queue's positions, so, as in
            // `pop`, the masked position is in bounds; so are the ones
            // between it and the tail moved below.
            let item = unsafe { *self.buf.get_unchecked(at & self.mask) };
            if wanted(item) {
                // Close the gap: the newer items move one place down.
                let mut p = at;
                while p.wrapping_add(1) != self.tail {
                    let next = p.wrapping_add(1);
                    // SAFETY: as above.
                    unsafe {
                        *self.buf.get_unchecked_mut(p & self.mask) =
                            *self.buf.get_unchecked(next & self.mask)
                    };
                    p = next;
                }
                self.tail = self.tail.wrapping_sub(1);
                return Some(item);
            }
        }
        None
    }

    /// Doubles the ring (or makes the first one), keeping the order; `fill`
    /// only initialises the new cells. `false`, with nothing changed, if
    /// the memory is not there.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, fill: T) -> bool {
        let cap = (self.buf.len() * 2).max(FIRST);
        let mut buf = Vec::new();
        if buf.try_reserve_exact(cap).is_err() {
            return false;
        }
        while let Some(item) = self.pop() {
            buf.push(item);
        }
        let len = buf.len();
        buf.resize(cap, fill);
        self.buf = buf;
        self.mask = cap - 1;
        self.head = 0;
        self.tail = len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RunQueue;

    #[test]
    fn fifo_across_growth_and_wrap() {
        let mut q = RunQueue::new();
        assert!(q.is_empty() && q.pop().is_none());
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        // Keep the queue partly full while it wraps and grows several times.
        for round in 0..2000u32 {
            for _ in 0..(round % 7) + 1 {
                q.push(next_in).unwrap();
                next_in += 1;
            }
            for _ in 0..(round % 5) {
                if let Some(v) = q.pop() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
        }
        while let Some(v) = q.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(q.is_empty());
    }

    #[test]
    fn take_last_if_takes_only_the_newest_and_only_when_asked() {
        let mut q = RunQueue::new();
        assert_eq!(q.take_last_if(|_| true), None);
        for v in 0..100u32 {
            q.push(v).unwrap();
        }
        assert_eq!(q.take_last_if(|v| v == 98), None);
        assert_eq!(q.take_last_if(|v| v == 99), Some(99));
        assert_eq!(q.take_last_if(|v| v == 99), None);
        q.push(100).unwrap();
        let mut out = Vec::new();
        while let Some(v) = q.pop() {
            out.push(v);
        }
        let want: Vec<u32> = (0..99).chain([100]).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn take_newest_where_looks_only_at_the_newest_and_keeps_the_order() {
        let mut q = RunQueue::new();
        assert_eq!(q.take_newest_where(8, |_| true), None);
        // Wrap the ring first, so the gap closes across its end.
        for v in 0..60u32 {
            q.push(v).unwrap();
        }
        for _ in 0..60 {
            q.pop();
        }
        for v in 0..10u32 {
            q.push(v).unwrap();
        }
        // 2 is not among the last 4 (9, 8, 7, 6).
        assert_eq!(q.take_newest_where(4, |v| v == 2), None);
        // The newest even one among them.
        assert_eq!(q.take_newest_where(4, |v| v % 2 == 0), Some(8));
        assert_eq!(q.take_newest_where(4, |v| v == 6), Some(6));
        assert_eq!(q.take_newest_where(100, |v| v == 0), Some(0));
        assert_eq!(q.len(), 7);
        let mut out = Vec::new();
        while let Some(v) = q.pop() {
            out.push(v);
        }
        assert_eq!(out, vec![1, 2, 3, 4, 5, 7, 9]);
    }

    #[test]
    fn rotate_is_push_then_pop_full_or_not() {
        // Compare against a model queue driven by push then pop, with the
        // ring full (capacity 64) and wrapped at times.
        let mut q = RunQueue::new();
        let mut model = std::collections::VecDeque::new();
        assert_eq!(q.rotate(7u32), 7, "an empty queue gives the item back");
        assert!(q.is_empty());
        let mut next = 0u32;
        for round in 0..500u32 {
            while q.len() < (round as usize * 7) % 65 {
                q.push(next).unwrap();
                model.push_back(next);
                next += 1;
            }
            for _ in 0..(round % 9) {
                let item = next;
                next += 1;
                model.push_back(item);
                let want = model.pop_front().unwrap();
                assert_eq!(q.rotate(item), want);
                assert_eq!(q.len(), model.len());
            }
            for _ in 0..(round % 4) {
                assert_eq!(q.pop(), model.pop_front());
            }
        }
        while let Some(v) = q.pop() {
            assert_eq!(Some(v), model.pop_front());
        }
        assert!(model.is_empty());
    }
}
