//! Tests of the stack module against the real kernel.

use std::hint::black_box;
use std::time::Instant;

use corosensei::stack::Stack as _;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::registry::{self, GuardHit};
use super::sys::{self, GuardMode};
use super::*;
use crate::error::Error;

fn page() -> usize {
    sys::page_size()
}

/// Lines in /proc/self/maps: one per mapping (VMA).
fn maps_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// Pages of `start..start+len` in RAM, by mincore(2).
fn resident_pages(start: usize, len: usize) -> usize {
    let mut vec = vec![0u8; len / page()];
    // SAFETY: the range is page-aligned and mapped; vec has one byte per page.
    // (The byte is unsigned on Linux, signed on the BSDs and macOS.)
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr().cast()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// The usable range of a stack: (lowest usable byte, top).
fn usable_range(stack: &Stack) -> (usize, usize) {
    let limit = stack.limit().get();
    (limit + page(), limit + page() + stack.usable_size())
}

/// Writes one byte into every usable page of a stack.
fn touch_all(stack: &Stack) {
    let (low, top) = usable_range(stack);
    for addr in (low..top).step_by(page()) {
        // SAFETY: inside the stack's usable range, which we own.
        unsafe { (addr as *mut u8).write_volatile(0xA5) };
    }
}

#[test]
fn sizes_are_rounded_and_checked() {
    assert_eq!(StackPool::new(0).unwrap().usable_size(), DEFAULT_STACK_SIZE);
    assert_eq!(StackPool::new(1).unwrap().usable_size(), MIN_STACK_SIZE);
    let odd = 3 * page() + MIN_STACK_SIZE + 1;
    assert_eq!(
        StackPool::new(odd).unwrap().usable_size(),
        MIN_STACK_SIZE + 4 * page()
    );
    assert_eq!(StackPool::new(usize::MAX).err(), Some(Error::Invalid));
    assert_eq!(
        StackPool::new(usize::MAX - page()).err(),
        Some(Error::Invalid)
    );
}

#[test]
fn layout_matches_the_corosensei_contract() {
    let pool = StackPool::new(0).unwrap();
    let stack = pool.get().unwrap();
    let (base, limit) = (stack.base().get(), stack.limit().get());
    assert_eq!(base % 16, 0);
    assert_eq!(limit % page(), 0);
    assert_eq!(base - limit, DEFAULT_STACK_SIZE + page());
    assert!(base - limit - page() >= corosensei::stack::MIN_STACK_SIZE);
    pool.put(stack);
}

#[test]
fn carve_then_reuse_lifo() {
    let pool = StackPool::new(0).unwrap();
    let stacks: Vec<Stack> = (0..3).map(|_| pool.get().unwrap()).collect();
    let limits: Vec<usize> = stacks.iter().map(|s| s.limit().get()).collect();
    // Carved in order, one slot after another, within one arena.
    assert_eq!(limits[1] - limits[0], DEFAULT_STACK_SIZE + page());
    assert_eq!(limits[2] - limits[1], DEFAULT_STACK_SIZE + page());
    assert_eq!((pool.carved(), pool.idle(), pool.arenas()), (3, 0, 1));
    for s in stacks {
        pool.put(s);
    }
    assert_eq!((pool.carved(), pool.idle()), (3, 3));
    // The last one given back comes out first.
    let again: Vec<Stack> = (0..3).map(|_| pool.get().unwrap()).collect();
    let again_limits: Vec<usize> = again.iter().map(|s| s.limit().get()).collect();
    assert_eq!(again_limits, vec![limits[2], limits[1], limits[0]]);
    assert_eq!((pool.carved(), pool.idle()), (3, 0));
    // A fourth is carved fresh.
    let fourth = pool.get().unwrap();
    assert_eq!(
        fourth.limit().get(),
        limits[2] + DEFAULT_STACK_SIZE + page()
    );
    assert_eq!(pool.carved(), 4);
    pool.put(fourth);
    for s in again {
        pool.put(s);
    }
    assert_eq!(pool.idle(), 4);
}

#[test]
fn arenas_grow_geometrically() {
    let pool = StackPool::new(0).unwrap();
    let n = FIRST_ARENA_SLOTS + 2 * FIRST_ARENA_SLOTS + 1;
    let stacks: Vec<Stack> = (0..n).map(|_| pool.get().unwrap()).collect();
    // 16 + 32 slots, then a third arena.
    assert_eq!(pool.arenas(), 3);
    for s in stacks {
        pool.put(s);
    }
}

#[test]
fn reserve_top_bounds() {
    let pool = StackPool::new(MIN_STACK_SIZE).unwrap();
    let mut stack = pool.get().unwrap();
    let top = stack.base().get();
    let p = stack.reserve_top(1).unwrap();
    assert_eq!(p as usize, top - 16);
    assert_eq!(stack.base().get(), top - 16);
    // The reserved bytes are ours to write.
    // SAFETY: 16 reserved bytes at p.
    unsafe { p.write_bytes(0x5A, 16) };
    let q = stack.reserve_top(40).unwrap();
    assert_eq!(q as usize, top - 16 - 48);
    assert_eq!(stack.base().get() % 16, 0);
    // Up to MIN_FREE_STACK must remain: 16 KiB - 8 KiB = 8 KiB reservable.
    let rest = MIN_STACK_SIZE - MIN_FREE_STACK - 64;
    assert!(stack.reserve_top(rest).is_ok());
    assert_eq!(
        stack.base().get() - stack.limit().get() - page(),
        MIN_FREE_STACK
    );
    assert_eq!(stack.reserve_top(1), Err(Error::Invalid));
    assert_eq!(stack.reserve_top(usize::MAX), Err(Error::Invalid));
    assert_eq!(
        stack.reserve_top(0).map(|p| p as usize),
        Ok(stack.base().get())
    );
    // put() forgets the reservation.
    pool.put(stack);
    let stack = pool.get().unwrap();
    assert_eq!(stack.base().get(), top);
    pool.put(stack);
}

#[test]
fn a_guard_address_is_found_with_its_stack_size() {
    let pool = StackPool::new(0).unwrap();
    let a = pool.get().unwrap();
    let b = pool.get().unwrap();
    let guard_a = a.limit().get();
    let guard_b = b.limit().get();
    assert_eq!(
        registry::lookup_guard(guard_a + 8),
        Some(GuardHit {
            usable: DEFAULT_STACK_SIZE
        })
    );
    assert_eq!(
        registry::lookup_guard(guard_b + page() - 1),
        Some(GuardHit {
            usable: DEFAULT_STACK_SIZE
        })
    );
    // Usable memory is not a guard; neither is memory outside every arena.
    assert_eq!(registry::lookup_guard(guard_a + page()), None);
    assert_eq!(registry::lookup_guard(a.base().get() - 1), None);
    assert_eq!(registry::lookup_guard(8), None);
    pool.put(a);
    // An idle stack's guard is still a guard.
    assert!(registry::lookup_guard(guard_a).is_some());
    pool.put(b);
}

#[test]
fn arena_leaves_the_registry_when_the_pool_drops() {
    let pool = StackPool::new(0).unwrap();
    let s = pool.get().unwrap();
    let guard = s.limit().get();
    assert!(registry::lookup_guard(guard).is_some());
    pool.put(s);
    drop(pool);
    assert_eq!(registry::lookup_guard(guard), None);
}

#[test]
fn fresh_stacks_commit_nothing_and_a_touch_commits_one_page() {
    let pool = StackPool::new(256 * 1024).unwrap();
    let stacks: Vec<Stack> = (0..16).map(|_| pool.get().unwrap()).collect();
    for s in &stacks {
        let (low, top) = usable_range(s);
        assert_eq!(resident_pages(low, top - low), 0);
    }
    // One byte at the top of one stack: one page, not a 2 MiB huge page.
    let (low, top) = usable_range(&stacks[3]);
    // SAFETY: the top byte of a stack we own.
    unsafe { ((top - 1) as *mut u8).write_volatile(1) };
    assert_eq!(resident_pages(low, top - low), 1);
    let (first, _) = usable_range(&stacks[0]);
    let (_, last) = usable_range(&stacks[15]);
    assert_eq!(resident_pages(first, last - first), 1);
    for s in stacks {
        pool.put(s);
    }
}

#[test]
fn stacks_beyond_the_hot_window_are_trimmed() {
    let pool = StackPool::new(0).unwrap();
    let stacks: Vec<Stack> = (0..HOT_STACKS + 1).map(|_| pool.get().unwrap()).collect();
    let pages = DEFAULT_STACK_SIZE / page();
    for s in &stacks {
        touch_all(s);
        let (low, top) = usable_range(s);
        assert_eq!(resident_pages(low, top - low), pages);
    }
    let ranges: Vec<(usize, usize)> = stacks.iter().map(usable_range).collect();
    // Give back 0, 1, ..., 64: the 65th pushes stack 0 (the coldest) out of
    // the hot window, and only stack 0 is trimmed to its top page.
    for s in stacks {
        pool.put(s);
    }
    let (low, top) = ranges[0];
    assert_eq!(resident_pages(low, top - low), 1);
    // SAFETY: a trimmed page of an idle stack of ours; reading is harmless
    // (and, after MADV_DONTNEED, gives zero).
    assert_eq!(unsafe { (low as *const u8).read_volatile() }, 0);
    // The top page was kept, contents and all.
    // SAFETY: the top page of an idle stack of ours.
    let kept = unsafe { ((top - page()) as *const u8).read_volatile() };
    assert_eq!(kept, 0xA5);
    for &(low, top) in &ranges[1..] {
        assert_eq!(resident_pages(low, top - low), pages);
    }
    assert_eq!(pool.idle(), HOT_STACKS + 1);
    // Hot ones come back first (64 down to 1), the trimmed one last.
    let again: Vec<Stack> = (0..HOT_STACKS + 1).map(|_| pool.get().unwrap()).collect();
    assert_eq!(usable_range(&again[0]), ranges[HOT_STACKS]);
    assert_eq!(usable_range(&again[HOT_STACKS]), ranges[0]);
    assert_eq!(pool.carved(), HOT_STACKS + 1);
    for s in again {
        pool.put(s);
    }
}

#[test]
fn many_stacks_keep_the_maps_small() {
    let before = maps_lines();
    let pool = StackPool::new(0).unwrap();
    let start = Instant::now();
    let first = pool.get().unwrap();
    let mode = sys::guard_mode();
    // 100,000 stacks take 6.8 GB of address space (a 32-bit process has
    // 3) and, with mprotect guards, 200,000 mappings (the default
    // vm.max_map_count is 65,530: NoMem, as it should be).
    let n: usize = if cfg!(target_pointer_width = "64") && mode == GuardMode::Madvise {
        100_000
    } else {
        20_000
    };
    let stacks: Vec<Stack> = std::iter::once(first)
        .chain((1..n).map(|_| pool.get().unwrap()))
        .collect();
    let carve = start.elapsed();
    let during = maps_lines();
    eprintln!(
        "{n} stacks: carved in {carve:?} ({} arenas, guards by {mode:?}); \
         /proc/self/maps {before} -> {during} lines",
        pool.arenas()
    );
    assert_eq!(pool.carved(), n);
    if mode == GuardMode::Madvise {
        // Other tests run at the same time and add a few mappings; n
        // mprotect guards would add 2n.
        assert!(during < before + 1000, "maps grew {before} -> {during}");
    } else {
        eprintln!("MADV_GUARD_INSTALL unavailable: maps check skipped");
    }
    let start = Instant::now();
    for s in stacks {
        pool.put(s);
    }
    eprintln!("{n} stacks: given back in {:?}", start.elapsed());
    assert_eq!(pool.idle(), n);
    drop(pool);
    let after = maps_lines();
    assert!(
        after < before + 100,
        "arenas not unmapped: {before} -> {after}"
    );
}

#[test]
fn a_coroutine_runs_on_a_pool_stack() {
    let pool = StackPool::new(0).unwrap();
    for round in 0..2u64 {
        let mut stack = pool.get().unwrap();
        // The frame copies its environment to the top of the stack.
        let env = stack.reserve_top(24).unwrap().cast::<u64>();
        // SAFETY: 24 reserved, 16-byte aligned bytes.
        unsafe { env.write(41 + round) };
        let (low, top) = usable_range(&stack);
        let base = stack.base().get();
        let mut co = Coroutine::with_stack(stack, move |y: &Yielder<u64, usize>, input: u64| {
            let local = 0u8;
            let sp = black_box(&local) as *const u8 as usize;
            let input = input + y.suspend(sp);
            // SAFETY: the environment sits above base(), untouched by us.
            let value = unsafe { env.read() } + input;
            y.suspend(value as usize);
            value * 2
        });
        let CoroutineResult::Yield(sp) = co.resume(0) else {
            panic!("no first yield")
        };
        assert!(
            sp >= low && sp < base && base < top,
            "{sp:#x} not in {low:#x}..{base:#x}"
        );
        assert_eq!(co.resume(1), CoroutineResult::Yield(42 + round as usize));
        assert_eq!(co.resume(0), CoroutineResult::Return(2 * (42 + round)));
        let stack = co.into_stack();
        pool.put(stack);
    }
    assert_eq!(pool.carved(), 1);
}

#[test]
fn pool_is_shared_between_threads() {
    let pool = StackPool::new(0).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let pool = &pool;
            s.spawn(move || {
                let _alt = AltStack::install().unwrap();
                for _ in 0..2000 {
                    let a = pool.get().unwrap();
                    let b = pool.get().unwrap();
                    pool.put(b);
                    pool.put(a);
                }
            });
        }
    });
    assert!(pool.carved() <= 8);
    assert_eq!(pool.idle(), pool.carved());
}

#[test]
fn a_stack_may_outlive_its_pool() {
    let pool = StackPool::new(0).unwrap();
    let stack = pool.get().unwrap();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(pool)));
    // Debug builds report the stack that was not given back.
    assert_eq!(dropped.is_err(), cfg!(debug_assertions));
    // The arena is still mapped: the stack holds it.
    touch_all(&stack);
    let guard = stack.limit().get();
    assert!(registry::lookup_guard(guard).is_some());
    drop(stack);
    assert_eq!(registry::lookup_guard(guard), None);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "did not carve it")]
fn a_foreign_stack_is_refused() {
    let a = StackPool::new(0).unwrap();
    let b = StackPool::new(0).unwrap();
    let s = a.get().unwrap();
    b.put(s);
}

#[test]
fn alt_stack_is_installed_and_removed() {
    std::thread::spawn(|| {
        // Rust's std gave this thread a signal stack; take it away so ours
        // is installed.
        let off = libc::stack_t {
            ss_sp: core::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disabling needs no memory; std frees its own at exit.
        assert_eq!(unsafe { libc::sigaltstack(&off, core::ptr::null_mut()) }, 0);
        assert!(!sys::altstack_enabled());
        let alt = AltStack::install().unwrap();
        assert!(alt.is_own());
        assert!(sys::altstack_enabled());
        // A second one keeps the first.
        let nested = AltStack::install().unwrap();
        assert!(!nested.is_own());
        drop(nested);
        assert!(sys::altstack_enabled());
        drop(alt);
        assert!(!sys::altstack_enabled());
    })
    .join()
    .unwrap();
}

#[test]
fn install_overflow_handler_is_idempotent() {
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(install_overflow_handler))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    install_overflow_handler();
    // SAFETY: queries only.
    let current = unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut old);
        old
    };
    assert_ne!(current.sa_flags & libc::SA_ONSTACK, 0);
    assert_ne!(current.sa_flags & libc::SA_SIGINFO, 0);
}

/// Recurses with a 256-byte frame until the stack runs out.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = depth as u8;
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(black_box(frame)[0])
}

/// The forked child: overflows a coroutine stack owned by coroutine 42.
/// Never returns.
fn overflow_child(force_mprotect: bool) -> ! {
    let result = std::panic::catch_unwind(|| {
        if force_mprotect {
            sys::force_mprotect_guards();
        }
        // Drop the inherited signal stack so the one under test catches it.
        let off = libc::stack_t {
            ss_sp: core::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disabling needs no memory.
        unsafe { libc::sigaltstack(&off, core::ptr::null_mut()) };
        let alt = AltStack::install().unwrap();
        assert!(alt.is_own());
        let pool = StackPool::new(0).unwrap();
        // A few neighbours, so the overflowing stack is not the arena's first.
        let neighbours: Vec<Stack> = (0..3).map(|_| pool.get().unwrap()).collect();
        let stack = pool.get().unwrap();
        // What the scheduler's hook answers on a coroutine's thread.
        super::set_running_id(|| 42);
        if force_mprotect {
            assert_eq!(sys::guard_mode(), GuardMode::Mprotect);
        }
        let mut co = Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| recurse(0));
        let _ = co.resume(());
        drop(neighbours);
    });
    let msg: &[u8] = match &result {
        Ok(()) => b"child: the recursion returned\n",
        Err(e) => match (e.downcast_ref::<&str>(), e.downcast_ref::<String>()) {
            (Some(s), _) => s.as_bytes(),
            (_, Some(s)) => s.as_bytes(),
            _ => b"child: panic\n",
        },
    };
    crate::util::write_stderr(msg);
    // SAFETY: ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(3) }
}

/// Forks a child that overflows a coroutine stack; returns its wait status
/// and everything it wrote to stderr.
fn run_overflow_child(force_mprotect: bool) -> (libc::c_int, String) {
    // Before the fork: the child must not find the Once half run.
    install_overflow_handler();
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only uses fork-safe state (glibc's malloc, our
    // lock-free registry, its own new pool) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plumbing in the child; no core file for the expected abort.
        unsafe {
            libc::close(fds[0]);
            libc::dup2(fds[1], 2);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
        }
        overflow_child(force_mprotect);
    }
    // SAFETY: our write end; the child has its own copy.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: our child, our status variable; then our read end.
    unsafe {
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        libc::close(fds[0]);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

fn assert_overflow_reported(force_mprotect: bool) {
    let (status, stderr) = run_overflow_child(force_mprotect);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
        "child status {status:#x}, stderr: {stderr:?}"
    );
    assert!(
        stderr.contains("coroutine 42 overflowed its 65536-byte stack\n"),
        "stderr: {stderr:?}"
    );
}

#[test]
fn overflow_is_reported_and_aborts() {
    assert_overflow_reported(false);
}

#[test]
fn overflow_is_reported_with_mprotect_guards() {
    assert_overflow_reported(true);
}

/// A fault that is not a guard hit still reaches the previous handler (in a
/// test binary, Rust's own) or the default action: the process dies of
/// SIGSEGV, not SIGABRT, and no overflow is reported.
#[test]
fn other_faults_pass_through() {
    install_overflow_handler();
    // SAFETY: as in run_overflow_child; the child faults on purpose.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: no core file; then a write to an address that is never
        // mapped (the first page).
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            let null = black_box(16usize) as *mut u8;
            null.write_volatile(1);
            libc::_exit(3);
        }
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "child status {status:#x}"
    );
}
