//! Stack overflow reports: the fault handler's verdict and the per-thread
//! alternate signal stack it runs on (rule 5 in `mod.rs`).
//!
//! A coroutine that runs out of stack touches its guard page. The kernel
//! then has to push a signal frame, but the faulting stack is exhausted, so
//! the handler is installed with `SA_ONSTACK` and each thread that runs
//! coroutines owns an [`AltStack`]. Without one the kernel kills the process
//! with a plain `SIGSEGV` and no message.

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

use super::{registry, sys, ALT_STACK_SIZE};
use crate::error::Result;
use crate::util::write_stderr;

/// Installs the process-wide `SIGSEGV`/`SIGBUS` handler
/// (`SA_SIGINFO | SA_ONSTACK`) that reports guard-page hits. Idempotent and
/// thread-safe; the handler that was installed before is kept and called for
/// every fault that is not a guard hit.
pub fn install_overflow_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the Once runs this at most once per process.
        unsafe { sys::install_fault_handlers() };
        // std's `Once` waits on a futex TSan does not see: announce that
        // the saved handlers are written before any other caller returns.
        crate::sanitize::release(&INSTALL);
    });
    crate::sanitize::acquire(&INSTALL);
}

/// A `fn() -> u64` (null: none) that names the coroutine running on the
/// calling thread (0: none), for the overflow report; set by the scheduler
/// (`set_running_id`). A stack only grows while its coroutine runs, so the
/// thread that hits a guard page is running the coroutine that overflowed,
/// and nothing has to note at every spawn which coroutine took which stack.
static RUNNING_ID: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the function the overflow report asks which coroutine runs on the
/// faulting thread. It is called in the fault handler: it must not lock,
/// allocate or panic.
pub fn set_running_id(f: fn() -> u64) {
    RUNNING_ID.store(f as *mut (), Ordering::Release);
}

/// What `set_running_id`'s function answers on this thread (0: none set).
fn running_id() -> u64 {
    let f = RUNNING_ID.load(Ordering::Acquire);
    if f.is_null() {
        return 0;
    }
    // SAFETY: only `set_running_id` stores here, and it stores a
    // `fn() -> u64`.
    let f: fn() -> u64 = unsafe { core::mem::transmute(f) };
    f()
}

/// Called by the fault handler with the faulting address: if it lies in a
/// guard page of one of our stacks, writes
/// `coroutine N overflowed its S-byte stack` to stderr and aborts; otherwise
/// returns. Async-signal-safe: no lock, no allocation.
pub(super) fn report_guard_hit(addr: usize) {
    let Some(hit) = registry::lookup_guard(addr) else {
        return;
    };
    let mut msg = Message::new();
    msg.push(b"coroutine ");
    match running_id() {
        0 => msg.push(b"<unknown>"),
        id => msg.push_u64(id),
    }
    msg.push(b" overflowed its ");
    msg.push_u64(hit.usable as u64);
    msg.push(b"-byte stack\n");
    write_stderr(msg.as_bytes());
    std::process::abort();
}

/// A fixed buffer the handler formats into, since it may not allocate.
struct Message {
    bytes: [u8; 128],
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            bytes: [0; 128],
            len: 0,
        }
    }

    /// Appends what fits.
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The calling thread's alternate signal stack, on which the overflow
/// handler runs. Worker threads call [`AltStack::install`] when they start
/// and drop the guard when they end.
///
/// If the thread already has one (Rust's `std` gives one to threads it
/// spawns in a program whose `main` is Rust), that one is kept and the guard
/// does nothing.
///
/// Not `Send`: the alternate stack belongs to the thread that installed it.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<coframe::stack::AltStack>();
/// ```
pub struct AltStack {
    /// The mapping we made (guard page first), if we made one.
    mapping: Option<(NonNull<u8>, usize)>,
    _thread_bound: PhantomData<*const ()>,
}

impl AltStack {
    /// Gives the calling thread an alternate signal stack of
    /// [`ALT_STACK_SIZE`] bytes with a guard page below, unless it has one.
    ///
    /// Errors: `NoMem` when the memory cannot be mapped; `Io` when the kernel
    /// refuses the stack.
    pub fn install() -> Result<AltStack> {
        if sys::altstack_enabled() {
            return Ok(AltStack {
                mapping: None,
                _thread_bound: PhantomData,
            });
        }
        let page = sys::page_size();
        let len = ALT_STACK_SIZE + page;
        let mapping = sys::map(len)?;
        // SAFETY: the page after the guard is inside the mapping we just made.
        let stack = unsafe { mapping.add(page) };
        // A guard, so a handler that overruns the alternate stack faults
        // instead of scribbling over the memory below it.
        // SAFETY: our fresh mapping's first page, unused.
        let installed = unsafe { sys::install_guard(mapping) }
            // SAFETY: the memory stays ours until Drop disables it first.
            .and_then(|()| unsafe { sys::altstack_set(stack, ALT_STACK_SIZE) });
        if let Err(e) = installed {
            // SAFETY: never handed to the kernel as a signal stack.
            unsafe { sys::unmap(mapping, len) };
            return Err(e);
        }
        Ok(AltStack {
            mapping: Some((mapping, len)),
            _thread_bound: PhantomData,
        })
    }

    /// Whether this guard installed (and will remove) its own stack.
    pub fn is_own(&self) -> bool {
        self.mapping.is_some()
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let Some((mapping, len)) = self.mapping else {
            return;
        };
        // SAFETY: the stack starts one page into our mapping.
        let stack = unsafe { mapping.add(sys::page_size()) };
        if sys::altstack_disable_if(stack) {
            // SAFETY: the kernel no longer uses it as this thread's signal
            // stack, and `!Send` means no other thread installed it.
            unsafe { sys::unmap(mapping, len) };
        }
        // Otherwise a handler is running on it right now: leak it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_formats_numbers_by_hand() {
        let mut m = Message::new();
        m.push(b"x ");
        m.push_u64(0);
        m.push(b" ");
        m.push_u64(u64::MAX);
        assert_eq!(m.as_bytes(), b"x 0 18446744073709551615");
        let mut m = Message::new();
        m.push(&[b'a'; 200]);
        assert_eq!(m.as_bytes().len(), 128);
    }
}
