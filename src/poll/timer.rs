//! Deadlines: a binary heap of `(deadline, wait key)`, O(log n) to add and
//! to pop. A wait that ends early leaves its entry behind; the poller drops
//! it when it comes due, because the key's generation no longer matches
//! (lazy deletion keeps cancellation O(1)), or sooner, in one sweep, when
//! such entries outnumber the live ones (so memory follows the live waits,
//! not the wait rate times the deadline).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(i64, u64)>>,
}

impl Timers {
    /// Makes room for one more `add`, which then does not allocate.
    pub fn reserve_one(&mut self) -> Result<(), std::collections::TryReserveError> {
        self.heap.try_reserve(1)
    }

    pub fn add(&mut self, deadline: i64, key: u64) {
        self.heap.push(Reverse((deadline, key)));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Removes and returns a key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<u64> {
        match self.heap.peek() {
            Some(Reverse((d, _))) if *d <= now => self.heap.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }

    /// Drops the entries `live` rejects (waits that ended early). O(n):
    /// the poller calls it only when stale entries outnumber live ones.
    pub fn retain(&mut self, mut live: impl FnMut(u64) -> bool) {
        self.heap.retain(|Reverse((_, k))| live(*k));
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_never_early() {
        let mut t = Timers::default();
        for (i, d) in [50, 10, 30, 10, 40].iter().enumerate() {
            t.add(*d, i as u64);
        }
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(9), None);
        let mut due = vec![t.pop_due(10).unwrap(), t.pop_due(10).unwrap()];
        due.sort();
        assert_eq!(due, vec![1, 3]);
        assert_eq!(t.pop_due(35), Some(2));
        assert_eq!(t.pop_due(35), None);
        assert_eq!(t.len(), 2);
    }
}
