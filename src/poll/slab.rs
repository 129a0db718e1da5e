//! Wait records: one per `coro_wait_fd` or `coro_sleep_until` in progress.
//!
//! A record's key (`gen << 32 | index`) is the mio token and the timer
//! key, so an event or a deadline for a record that has since ended finds
//! a different generation and is dropped. A released record is not reused
//! until the poller has finished one more turn (`Slab::turn`), because
//! an event for it may already sit in the batch epoll is returning
//! (tokio's `pending_release`).

/// How a wait ended; `Pending` until the poller decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ready,
    TimedOut,
}

pub struct Wait {
    gen: u32,
    live: bool,
    /// The waiting coroutine's token, once it has parked (0 before).
    pub token: u64,
    pub outcome: Outcome,
    /// The registered descriptor (a `dup` if the fd was already
    /// registered by another wait), -1 for a sleep.
    pub fd: i32,
    /// `fd` is our own `dup`, closed when the wait ends.
    pub dup: bool,
}

#[derive(Default)]
pub struct Slab {
    waits: Vec<Wait>,
    free: Vec<u32>,
    /// Released during the current turn: may still have events in flight.
    released_now: Vec<u32>,
    /// Released during the previous turn: free after this one.
    released_before: Vec<u32>,
    live: usize,
}

/// A key comes back from epoll as mio's token, a `usize`: on a 32-bit
/// target it has 32 bits, not 64, so the index gets 16 of them there.
pub(super) const TOKEN_BITS: u32 = if usize::BITS < 64 { usize::BITS } else { 64 };
const INDEX_BITS: u32 = TOKEN_BITS / 2;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// The most waits a slab holds at once (65,536 on a 32-bit target).
const MAX_WAITS: usize = (INDEX_MASK as usize).saturating_add(1);

/// The generation takes the bits above the index but the top one, so a
/// key never has `registration::HELD` set: the poller tags its held
/// registrations' epoll data with it (`mod.rs`).
const GEN_MASK: u32 = ((1u64 << (TOKEN_BITS - 1 - INDEX_BITS)) - 1) as u32;

pub fn key(index: u32, gen: u32) -> u64 {
    ((gen as u64) << INDEX_BITS) | index as u64
}

fn split(key: u64) -> (usize, u32) {
    ((key & INDEX_MASK) as usize, (key >> INDEX_BITS) as u32)
}

/// `reserve_one` failed: no memory, or every index is taken.
#[derive(Debug)]
pub struct Full;

impl Slab {
    /// Makes room for one more `insert`, and for every index the lists
    /// may then hold, so that neither `insert` nor `release` nor `turn`
    /// allocates: a wait can then fail to start (`CORO_ENOMEM`), never
    /// to end.
    pub fn reserve_one(&mut self) -> Result<(), Full> {
        if !self.free.is_empty() {
            return Ok(());
        }
        let n = self.waits.len() + 1;
        if n > MAX_WAITS {
            return Err(Full);
        }
        self.waits.try_reserve(1).map_err(|_| Full)?;
        for list in [
            &mut self.free,
            &mut self.released_now,
            &mut self.released_before,
        ] {
            list.try_reserve(n - list.len()).map_err(|_| Full)?;
        }
        Ok(())
    }

    /// A new pending wait; returns its key.
    pub fn insert(&mut self, fd: i32, dup: bool) -> u64 {
        self.live += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.waits.push(Wait {
                    gen: 0,
                    live: false,
                    token: 0,
                    outcome: Outcome::Pending,
                    fd: -1,
                    dup: false,
                });
                (self.waits.len() - 1) as u32
            }
        };
        let w = &mut self.waits[index as usize];
        w.live = true;
        w.token = 0;
        w.outcome = Outcome::Pending;
        w.fd = fd;
        w.dup = dup;
        key(index, w.gen)
    }

    /// The live wait `key` names, if it has not ended.
    pub fn get(&mut self, key: u64) -> Option<&mut Wait> {
        let (index, gen) = split(key);
        self.waits.get_mut(index).filter(|w| w.live && w.gen == gen)
    }

    /// Ends the wait `key`; its slot is reused two turns later.
    pub fn release(&mut self, key: u64) -> Option<Wait> {
        let (index, gen) = split(key);
        let w = self
            .waits
            .get_mut(index)
            .filter(|w| w.live && w.gen == gen)?;
        w.live = false;
        w.gen = w.gen.wrapping_add(1) & GEN_MASK;
        self.live -= 1;
        self.released_now.push(index as u32);
        Some(Wait {
            gen,
            live: false,
            token: w.token,
            outcome: w.outcome,
            fd: w.fd,
            dup: w.dup,
        })
    }

    /// The poller finished a turn: slots released before the turn began
    /// can no longer receive events.
    pub fn turn(&mut self) {
        self.free.append(&mut self.released_before);
        std::mem::swap(&mut self.released_before, &mut self.released_now);
    }

    /// Waits in progress.
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fit_mio_tokens_and_never_look_held() {
        let top = (MAX_WAITS - 1) as u32;
        for (index, gen) in [(0, 0), (top, 0), (0, GEN_MASK), (top, GEN_MASK)] {
            let k = key(index, gen);
            assert!(k <= usize::MAX as u64, "{k:#x} does not fit a token");
            assert_eq!(k & crate::poll::registration::HELD, 0);
            assert_eq!(split(k as usize as u64), (index as usize, gen));
        }
        // The generation wraps inside its mask.
        let mut s = Slab::default();
        let a = s.insert(3, false);
        s.waits[split(a).0].gen = GEN_MASK;
        let a = key(split(a).0 as u32, GEN_MASK);
        assert!(s.release(a).is_some());
        assert_eq!(s.waits[split(a).0].gen, 0);
    }

    #[test]
    fn stale_keys_miss_and_slots_wait_a_turn() {
        let mut s = Slab::default();
        let a = s.insert(3, false);
        assert!(s.get(a).is_some());
        assert!(s.release(a).is_some());
        assert!(s.get(a).is_none(), "a released key is stale");
        assert!(s.release(a).is_none());
        let b = s.insert(4, false);
        assert_ne!(split(b).0, split(a).0, "not reused during the same turn");
        s.turn();
        let c = s.insert(5, false);
        assert_ne!(split(c).0, split(a).0, "not reused after one turn");
        s.turn();
        let d = s.insert(6, false);
        assert_eq!(split(d).0, split(a).0, "reused after two turns");
        assert_ne!(d, a, "with a new generation");
        assert_eq!(s.live(), 3);
    }

    #[test]
    fn reserved_room_takes_inserts_and_releases_without_growing() {
        let mut s = Slab::default();
        let mut keys = Vec::new();
        for round in 0..3 {
            for i in 0..20 {
                s.reserve_one().unwrap();
                let caps = [
                    s.waits.capacity(),
                    s.free.capacity(),
                    s.released_now.capacity(),
                    s.released_before.capacity(),
                ];
                keys.push(s.insert(i, false));
                assert_eq!(s.waits.capacity(), caps[0], "insert grew (round {round})");
                // Every list can take every index without growing.
                for cap in &caps[1..] {
                    assert!(*cap >= s.waits.len());
                }
            }
            let caps = (
                s.free.capacity(),
                s.released_now.capacity(),
                s.released_before.capacity(),
            );
            for k in keys.drain(..) {
                assert!(s.release(k).is_some());
            }
            s.turn();
            s.turn();
            let after = (
                s.free.capacity(),
                s.released_now.capacity(),
                s.released_before.capacity(),
            );
            assert_eq!(caps, after, "release or turn grew a list");
        }
    }
}
