//! Where a thread blocked in `coro_await` sleeps: on its frame's slot.
//!
//! On Linux the sleeper waits on a word of the slot with a futex, an
//! event count: it takes a ticket, looks at the state, and sleeps only if
//! the ticket is still current; the completer bumps the word and wakes it.
//! Slots are never freed, so a completer that wakes late touches a word
//! that is still there, and a sleeper that wakes for an older generation
//! only looks again. Nothing is allocated: `std::thread::current()`, which
//! the other systems use, makes a foreign thread's handle on first use,
//! and glibc aborts when that registration cannot allocate.

#[cfg(target_os = "linux")]
pub use futex::Blocker;
#[cfg(not(target_os = "linux"))]
pub use parker::Blocker;

#[cfg(target_os = "linux")]
mod futex {
    use std::sync::atomic::{AtomicU32, Ordering::*};

    /// The event count: bumped by 2 per wake-up; bit 0 says a thread may
    /// be asleep on it, so a wake-up with nobody asleep makes no system
    /// call.
    pub struct Blocker(AtomicU32);

    const ASLEEP: u32 = 1;

    impl Default for Blocker {
        fn default() -> Blocker {
            Blocker::new()
        }
    }

    impl Blocker {
        pub const fn new() -> Blocker {
            Blocker(AtomicU32::new(0))
        }

        /// Called by the awaiter before it publishes itself.
        ///
        /// # Safety
        /// The caller holds the frame's `AWAITING` claim.
        pub unsafe fn prepare(&self) {}

        /// The awaiter did not publish itself after all.
        ///
        /// # Safety
        /// As for `prepare`.
        pub unsafe fn unprepare(&self) {}

        /// Taken before the awaiter looks at the state. Acquire: a ticket
        /// that reads a completer's bump also sees what it did before.
        pub fn ticket(&self) -> u32 {
            self.0.load(Acquire)
        }

        /// Sleeps unless a wake-up came after `ticket` was taken (it may
        /// also return for no reason: the caller looks again).
        pub fn sleep(&self, ticket: u32) {
            let mut expect = ticket;
            if expect & ASLEEP == 0 {
                match self
                    .0
                    .compare_exchange(expect, expect | ASLEEP, Relaxed, Relaxed)
                {
                    Ok(_) => expect |= ASLEEP,
                    Err(_) => return,
                }
            }
            // SAFETY: FUTEX_WAIT reads the aligned u32 behind the pointer,
            // which lives as long as the slot (forever), and sleeps only
            // while it still holds `expect`; no other memory is touched.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    expect,
                    core::ptr::null::<libc::timespec>(),
                );
            }
        }

        /// Wakes the awaiter.
        ///
        /// # Safety
        /// The caller swapped `awaiter::THREAD` out of the slot's awaiter
        /// word (only then may the other systems' handle be taken).
        pub unsafe fn wake(&self) {
            let before = self
                .0
                .fetch_update(Release, Relaxed, |v| Some(v.wrapping_add(2) & !ASLEEP))
                .unwrap_or_else(|v| v);
            if before & ASLEEP != 0 {
                // SAFETY: FUTEX_WAKE only looks the address up in the
                // kernel's wait queues; the word lives as long as the slot.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.0.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        i32::MAX,
                    );
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod parker {
    use core::cell::UnsafeCell;
    use std::thread::Thread;

    /// The blocked thread's handle, written by the awaiter before it
    /// publishes `awaiter::THREAD`, taken by the completer after it swaps
    /// that value out (the handshake orders the two).
    pub struct Blocker(UnsafeCell<Option<Thread>>);

    impl Default for Blocker {
        fn default() -> Blocker {
            Blocker::new()
        }
    }

    impl Blocker {
        pub const fn new() -> Blocker {
            Blocker(UnsafeCell::new(None))
        }

        /// # Safety
        /// The caller holds the frame's `AWAITING` claim.
        pub unsafe fn prepare(&self) {
            // SAFETY: only the awaiter, holding the AWAITING claim, writes.
            unsafe { *self.0.get() = Some(std::thread::current()) };
        }

        /// # Safety
        /// As for `prepare`.
        pub unsafe fn unprepare(&self) {
            // SAFETY: as in `prepare`; nobody reads an unpublished handle.
            unsafe { *self.0.get() = None };
        }

        pub fn ticket(&self) -> u32 {
            0
        }

        pub fn sleep(&self, _ticket: u32) {
            std::thread::park();
        }

        /// # Safety
        /// The caller swapped `awaiter::THREAD` out of the awaiter word.
        pub unsafe fn wake(&self) {
            // SAFETY: the completer swapped THREAD out: the awaiter's
            // write happened before, and nobody else touches it now.
            if let Some(t) = unsafe { (*self.0.get()).take() } {
                t.unpark();
            }
        }
    }
}
