//! The stack module's system calls on Unix (the `sys` contract in `mod.rs`).
//!
//! Linux gets the full treatment (`MAP_NORESERVE`, `MADV_GUARD_INSTALL`,
//! `MADV_NOHUGEPAGE`); other Unixes get `mprotect` guards and whatever their
//! `MADV_DONTNEED` does.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use std::io;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// `MADV_GUARD_INSTALL` (Linux 6.13+): turns the range into guard pages
/// without splitting the mapping. Not in libc 0.2 yet.
#[cfg(any(target_os = "linux", target_os = "android"))]
const MADV_GUARD_INSTALL: libc::c_int = 102;

#[cfg(any(target_os = "linux", target_os = "android"))]
const MAP_FLAGS: libc::c_int =
    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
// OpenBSD refuses a stack pointer outside MAP_STACK memory at every syscall.
#[cfg(any(target_os = "openbsd", target_os = "freebsd", target_os = "netbsd"))]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "openbsd",
    target_os = "freebsd",
    target_os = "netbsd"
)))]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// The OS page size, read once.
pub(super) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as usize } else { 4096 };
    assert!(
        page.is_power_of_two(),
        "page size {page} is not a power of two"
    );
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Reserves `len` bytes (a page multiple) of read-write address space that
/// costs nothing until touched.
///
/// Errors: `NoMem` when the kernel refuses the mapping.
pub(super) fn map(len: usize) -> Result<NonNull<u8>> {
    // SAFETY: an anonymous mapping at an address the kernel picks cannot
    // overlap memory anything else owns.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            MAP_FLAGS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::NoMem);
    }
    // Huge pages would commit 2 MiB (thirty stacks) at the first touch and
    // undo rule 1. Since Linux 6.7 MAP_STACK already implies this; older
    // kernels need the advice. A failure (THP compiled out) changes nothing.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: advice over the range we just mapped; it does not change the
    // contents.
    unsafe {
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
    }
    NonNull::new(p.cast()).ok_or(Error::NoMem)
}

/// Returns a mapping to the kernel.
///
/// # Safety
///
/// `ptr..ptr+len` must be a mapping made by [`map`] (or a whole part of one)
/// that nothing uses any more.
pub(super) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives us an unused mapping.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    debug_assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
}

/// How guard pages are made; chosen at the first guard and kept (rule 2).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GuardMode {
    /// No guard installed yet.
    Unknown,
    /// `madvise(MADV_GUARD_INSTALL)`: the mapping stays whole.
    Madvise,
    /// `mprotect(PROT_NONE)`: one more mapping per guard.
    Mprotect,
}

const MODE_UNKNOWN: u8 = 0;
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", test)),
    allow(dead_code)
)]
const MODE_MADVISE: u8 = 1;
const MODE_MPROTECT: u8 = 2;

/// Once a kernel has said `EINVAL` to `MADV_GUARD_INSTALL` we stop asking.
static GUARD_MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);

#[cfg(test)]
pub(super) fn guard_mode() -> GuardMode {
    match GUARD_MODE.load(Ordering::Relaxed) {
        MODE_MADVISE => GuardMode::Madvise,
        MODE_MPROTECT => GuardMode::Mprotect,
        _ => GuardMode::Unknown,
    }
}

/// Tests use this to run the `mprotect` fallback on a new kernel.
#[cfg(test)]
pub(super) fn force_mprotect_guards() {
    GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
}

/// Makes the page at `page` fault on any access.
///
/// Errors: `NoMem` when the kernel is out of memory or, with `mprotect`
/// guards, out of mappings (`vm.max_map_count`).
///
/// # Safety
///
/// `page` must be page-aligned, inside a mapping made by [`map`], and hold
/// nothing anyone will read again.
pub(super) unsafe fn install_guard(page: NonNull<u8>) -> Result<()> {
    let len = page_size();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if GUARD_MODE.load(Ordering::Relaxed) != MODE_MPROTECT {
        loop {
            // SAFETY: the caller gives us an unused page of our mapping.
            let rc = unsafe { libc::madvise(page.as_ptr().cast(), len, MADV_GUARD_INSTALL) };
            if rc == 0 {
                if GUARD_MODE.load(Ordering::Relaxed) == MODE_MADVISE {
                    return Ok(());
                }
                match guard_traps(page) {
                    Some(true) => {
                        GUARD_MODE.store(MODE_MADVISE, Ordering::Relaxed);
                        return Ok(());
                    }
                    // Unsure (no descriptor to look with): this guard is
                    // as good as the advice; the next one looks again.
                    None => return Ok(()),
                    Some(false) => {
                        GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
                        break;
                    }
                }
            }
            match io::Error::last_os_error().raw_os_error() {
                // The kernel gives up on a pending signal or a racing fault
                // and asks to be called again.
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                // Older than 6.13: the advice is unknown.
                Some(libc::EINVAL) => {
                    GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
                    break;
                }
                _ => return Err(Error::NoMem),
            }
        }
    }
    GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
    // SAFETY: as above.
    let rc = unsafe { libc::mprotect(page.as_ptr().cast(), len, libc::PROT_NONE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::NoMem)
    }
}

/// Whether the guard just installed at `page` really stops an access:
/// some emulators (qemu-user) answer 0 to advice they do not know and do
/// nothing. Asks the kernel to copy a byte from the page into a pipe,
/// which fails with `EFAULT` instead of raising a signal. `None` when no
/// pipe can be made (descriptors exhausted).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn guard_traps(page: NonNull<u8>) -> Option<bool> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: write only reads the byte at `page` (or fails with EFAULT);
    // then both descriptors are ours to close.
    let n = unsafe { libc::write(fds[1], page.as_ptr().cast(), 1) };
    let fault = n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT);
    // SAFETY: as above.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Some(fault)
}

/// Releases the pages of `ptr..ptr+len`; they read as zero afterwards (on
/// Linux) and cost no RSS until touched again.
///
/// # Safety
///
/// The range must be page-aligned, inside a mapping made by [`map`], and
/// hold nothing anyone will read again.
pub(super) unsafe fn trim(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives us dead pages of our mapping.
    let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    // A failure only costs memory, never correctness.
    debug_assert_eq!(rc, 0, "madvise(DONTNEED): {}", io::Error::last_os_error());
}

/// The `sigaction` in force before ours, per signal. Written once by
/// [`install_fault_handlers`] before our handler is installed, read only by
/// the handler afterwards.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);

// SAFETY: written once before any reader can exist (the handler is
// installed after the write), then only read.
unsafe impl Sync for Previous {}

static PREVIOUS_SEGV: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));
static PREVIOUS_BUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));

/// Installs [`on_fault`] for `SIGSEGV` and `SIGBUS` with
/// `SA_SIGINFO | SA_ONSTACK`, saving the previous actions for chaining.
///
/// # Safety
///
/// Call at most once per process (the caller holds a `Once`): the saved
/// actions are written without synchronisation.
pub(super) unsafe fn install_fault_handlers() {
    for (sig, previous) in [
        (libc::SIGSEGV, &PREVIOUS_SEGV),
        (libc::SIGBUS, &PREVIOUS_BUS),
    ] {
        // Read the old action first and publish ours second, so the handler
        // never finds the saved action half written.
        // SAFETY: a null new action only queries; the out-pointer is our
        // static, which nothing else writes (caller's contract).
        unsafe {
            let old = (*previous.0.get()).as_mut_ptr();
            libc::sigaction(sig, ptr::null(), old);
        }
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no
        // flags) that we then fill in.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = on_fault as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: the mask is ours; the action points at a handler that is
        // async-signal-safe and lives for the whole process.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, ptr::null_mut());
        }
    }
}

/// The process-wide `SIGSEGV`/`SIGBUS` handler: reports a guard-page hit and
/// aborts, or passes the fault on to whoever handled it before us.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Only a fault the kernel raised (si_code > 0) has an address; a
    // `kill -SEGV` carries a pid in that field.
    // SAFETY: SA_SIGINFO handlers get a valid siginfo_t, and si_addr is the
    // union member the kernel fills for SIGSEGV and SIGBUS.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code > 0 {
        super::overflow::report_guard_hit(addr);
    }
    let previous = if sig == libc::SIGBUS {
        &PREVIOUS_BUS
    } else {
        &PREVIOUS_SEGV
    };
    // SAFETY: written before this handler was installed, never written again.
    let previous = unsafe { (*previous.0.get()).assume_init_ref() };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Back to the default action, then return: the faulting instruction
        // runs again and the kernel kills the process the usual way (core
        // dump and all). An ignored SIGSEGV cannot be honoured for a real
        // fault, the kernel would reset it too.
        // SAFETY: an all-zero sigaction with SIG_DFL (0) is the default
        // action; sigaction is async-signal-safe.
        unsafe {
            let mut default: libc::sigaction = core::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, ptr::null_mut());
        }
        return;
    }
    // Someone (a JIT, a sanitizer, Rust's own main-thread guard check)
    // handled these signals before us: let them decide, as if we were not
    // here. Calling it, rather than reinstalling it, keeps our handler in
    // place for the next coroutine overflow.
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the saved value is a three-argument
        // handler, and we pass it the arguments the kernel gave us.
        unsafe {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(handler);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: without SA_SIGINFO the saved value is a one-argument
        // handler.
        unsafe {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(handler);
            f(sig);
        }
    }
}

/// Whether the calling thread already has an enabled alternate signal stack.
pub(super) fn altstack_enabled() -> bool {
    // SAFETY: a null new stack only queries into our local.
    unsafe {
        let mut old: libc::stack_t = core::mem::zeroed();
        libc::sigaltstack(ptr::null(), &mut old) == 0 && old.ss_flags & libc::SS_DISABLE == 0
    }
}

/// Makes `ptr..ptr+len` the calling thread's alternate signal stack.
///
/// Errors: `Io` (errno set) when the kernel refuses, e.g. `len` below
/// `MINSIGSTKSZ`.
///
/// # Safety
///
/// The memory must stay mapped, and unused by anything else, until
/// [`altstack_disable_if`] removes it on this thread.
pub(super) unsafe fn altstack_set(ptr: NonNull<u8>, len: usize) -> Result<()> {
    let stack = libc::stack_t {
        ss_sp: ptr.as_ptr().cast(),
        ss_flags: 0,
        ss_size: len,
    };
    // SAFETY: the caller keeps the memory for the kernel.
    if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(Error::Io)
    }
}

/// Disables the calling thread's alternate signal stack if it is the one at
/// `ptr`. Returns false if the thread is running on it right now (then it
/// stays, and its memory must not be freed).
pub(super) fn altstack_disable_if(ptr: NonNull<u8>) -> bool {
    // SAFETY: queries into a local, then disables; neither touches memory
    // we do not own.
    unsafe {
        let mut old: libc::stack_t = core::mem::zeroed();
        if libc::sigaltstack(ptr::null(), &mut old) != 0 || old.ss_sp != ptr.as_ptr().cast() {
            // Someone replaced it: ours is no longer in the kernel's hands.
            return true;
        }
        if old.ss_flags & libc::SS_ONSTACK != 0 {
            return false;
        }
        let off = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        libc::sigaltstack(&off, ptr::null_mut()) == 0
    }
}
