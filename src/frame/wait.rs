//! What a parked frame waits on, in words any thread may read.
//!
//! The frame's `EXEC` owner (its running body, or whoever finalizes it)
//! writes the description before the body parks in one of the library's
//! waits and clears it once resumed; the finalizer reads it to undo the
//! wait (rule 7 in `frame/mod.rs`). Words, not a field of the body, so
//! that `coro_dump` may read them from any thread while the frame is
//! parked without touching the body (rule 3), checking the state word
//! before and after so that a description that changed under it is never
//! shown as the frame's (`crate::dump`); `scripts/coframe-gdb.py` decodes
//! them too.
//!
//! The words, 24 bytes as the enum they replace took:
//!
//! ```text
//! kind      u8   KIND_*; the others mean something only when it is not NONE
//! events    u8   CORO_READABLE | CORO_WRITABLE (fd); 1 for a send (sync)
//! worker    u16  the worker whose poller holds the wait (fd, sleep) or
//!                its deadline's timer (sync)
//! fd        i32  the descriptor (fd), -1 (sleep)
//! obj       u64  the child's promise (await), the poller key (fd, sleep),
//!                the object with its kind in the low bits (sync:
//!                `crate::sync::Obj::arg`)
//! deadline  i64  coro_now() nanoseconds, -1: none (fd, sleep, sync)
//! ```
//!
//! A poller wait writes its details before the poller is asked for a key
//! (while they are still in argument registers) and the key and the kind
//! after, so that the kind is never set for a wait that did not begin;
//! one store per field, no packing: 3 stores more than the enum took.
//!
//! A new kind of wait (a mutex, a channel) is one more `KIND_*` value,
//! one more `Wait` variant, its setter and its decoding in `get`, its line
//! in the dump (`crate::dump::describe_wait`) and in the gdb helper's
//! `wait_line` (`tests/gdb_helper.rs` keeps the helper's kinds equal to
//! these).

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU16, AtomicU64, AtomicU8, Ordering::*};

use super::handle::Promise;
use crate::sync::Obj;

/// `kind`: no library wait.
pub const KIND_NONE: u8 = 0;
/// Inside `coro_await` of the child whose promise is `obj`.
pub const KIND_AWAIT: u8 = 1;
/// Inside `coro_wait_fd` (fd >= 0) or `coro_sleep_until` (fd == -1).
pub const KIND_POLL: u8 = 2;
/// Waiting on a mutex, a condition or a channel (`crate::sync`).
pub const KIND_SYNC: u8 = 3;

/// A sync wait's deadline timer key when it has none (`Body::sync_timer`).
pub const NO_TIMER: u64 = u64::MAX;

// The worker field has 16 bits.
const _: () = assert!(crate::sched::MAX_WORKERS <= 1 << 16);

/// The library wait a parked frame is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    None,
    /// Inside `coro_await` of this child.
    Await(Promise),
    /// Inside `coro_wait_fd` (`fd` >= 0, for `events`) or
    /// `coro_sleep_until` (`fd` == -1): the wait's key in the poller of
    /// `worker`, the worker it began on. A migratable frame may run on
    /// another worker by the time the wait ends, and each poller's keys
    /// are its own (another poller may hold the same key). `deadline`:
    /// `coro_now()` nanoseconds, -1 for none.
    Poll {
        key: u64,
        worker: usize,
        fd: i32,
        events: u32,
        deadline: i64,
    },
    /// Waiting on a mutex, a condition or a channel (`sending`: a
    /// channel's send, else a receive), until `deadline` (-1: none).
    /// `worker` is the one whose poller holds the deadline's timer; its
    /// key, which only the `EXEC` owner needs, is `Body::sync_timer`. A
    /// waker that gives the frame what it waits for sets `Body::given`:
    /// then only the timer is left to undo.
    Sync {
        obj: Obj,
        sending: bool,
        worker: usize,
        deadline: i64,
    },
}

/// A frame's `Wait`, as words (see the module's table).
///
/// Every store is a release store (a plain move on x86): a dump that
/// reads a word and then, after an acquire fence, finds the state word
/// unchanged knows the word was not rewritten after the state changed
/// (`crate::dump`).
pub struct WaitCell {
    kind: AtomicU8,
    events: AtomicU8,
    worker: AtomicU16,
    fd: AtomicI32,
    obj: AtomicU64,
    deadline: AtomicI64,
}

impl Default for WaitCell {
    fn default() -> Self {
        WaitCell::new()
    }
}

impl WaitCell {
    pub const fn new() -> WaitCell {
        WaitCell {
            kind: AtomicU8::new(KIND_NONE),
            events: AtomicU8::new(0),
            worker: AtomicU16::new(0),
            fd: AtomicI32::new(-1),
            obj: AtomicU64::new(0),
            deadline: AtomicI64::new(-1),
        }
    }

    /// The body is about to park in `coro_await` of `child`. `EXEC`
    /// owner only, as every writer here.
    #[inline(always)]
    pub fn set_await(&self, child: Promise) {
        self.obj.store(child.0, Release);
        self.kind.store(KIND_AWAIT, Release);
    }

    /// The details of a poller wait about to begin; `set_poll` completes
    /// it once the poller gave its key. `events` keeps its low byte: the
    /// readable and writable bits (`CORO_KEEP` is above). Until then the kind stays as it
    /// was (`NONE`), so a wait that does not begin leaves nothing to undo.
    #[inline(always)]
    pub fn prepare_poll(&self, worker: usize, fd: i32, events: u32, deadline: i64) {
        self.events.store(events as u8, Release);
        self.worker.store(worker as u16, Release);
        self.fd.store(fd, Release);
        self.deadline.store(deadline, Release);
    }

    /// The poller wait prepared began with `key`: the body parks next.
    #[inline(always)]
    pub fn set_poll(&self, key: u64) {
        self.obj.store(key, Release);
        self.kind.store(KIND_POLL, Release);
    }

    /// The body is about to park in a sync object's wait.
    #[inline(always)]
    pub fn set_sync(&self, obj: Obj, sending: bool, worker: usize, deadline: i64) {
        self.events.store(sending as u8, Release);
        self.worker.store(worker as u16, Release);
        self.deadline.store(deadline, Release);
        self.obj.store(obj.arg(), Release);
        self.kind.store(KIND_SYNC, Release);
    }

    /// The body was resumed: no wait any more.
    #[inline(always)]
    pub fn clear(&self) {
        self.kind.store(KIND_NONE, Release);
    }

    /// The wait described. The `EXEC` owner reads what it wrote; any
    /// other reader validates with the state word.
    #[inline(always)]
    pub fn get(&self) -> Wait {
        match self.kind.load(Relaxed) {
            KIND_AWAIT => Wait::Await(Promise(self.obj.load(Relaxed))),
            KIND_POLL => Wait::Poll {
                key: self.obj.load(Relaxed),
                worker: self.worker.load(Relaxed) as usize,
                fd: self.fd.load(Relaxed),
                events: self.events.load(Relaxed) as u32,
                deadline: self.deadline.load(Relaxed),
            },
            KIND_SYNC => Wait::Sync {
                obj: Obj::from_arg(self.obj.load(Relaxed)),
                sending: self.events.load(Relaxed) != 0,
                worker: self.worker.load(Relaxed) as usize,
                deadline: self.deadline.load(Relaxed),
            },
            _ => Wait::None,
        }
    }

    /// `get`, then `clear` if there was a wait: what a finalizer undoes.
    #[inline(always)]
    pub fn take(&self) -> Wait {
        // Most frames end outside any wait: then the kind is only looked
        // at, with one compare whatever `get` decodes.
        if self.kind.load(Relaxed) == KIND_NONE {
            return Wait::None;
        }
        let wait = self.get();
        self.clear();
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wait_reads_back_as_written() {
        let cell = WaitCell::new();
        assert_eq!(cell.get(), Wait::None);
        cell.set_await(Promise::new(7, 3));
        assert_eq!(cell.get(), Wait::Await(Promise::new(7, 3)));
        for (key, worker, fd, events, deadline) in
            [(u64::MAX, 1023, i32::MAX, 3, i64::MAX), (0, 0, -1, 0, -1)]
        {
            cell.prepare_poll(worker, fd, events, deadline);
            cell.set_poll(key);
            let want = Wait::Poll {
                key,
                worker,
                fd,
                events,
                deadline,
            };
            assert_eq!(cell.get(), want);
        }
        assert_eq!(
            cell.take(),
            Wait::Poll {
                key: 0,
                worker: 0,
                fd: -1,
                events: 0,
                deadline: -1
            }
        );
        assert_eq!(cell.take(), Wait::None);
        let m = 0x1000 as *const crate::sync::Mutex;
        let ch = 0x2008 as *const crate::sync::Chan;
        for (obj, sending, worker, deadline) in [
            (Obj::Mutex(m), false, 3, -1),
            (Obj::Chan(ch), true, 1023, i64::MAX),
        ] {
            cell.set_sync(obj, sending, worker, deadline);
            let want = Wait::Sync {
                obj,
                sending,
                worker,
                deadline,
            };
            assert_eq!(cell.take(), want);
        }
        // A poller wait that did not begin leaves no wait.
        cell.prepare_poll(1, 5, 1, 9);
        assert_eq!(cell.get(), Wait::None);
    }
}
