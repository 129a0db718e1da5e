//! The machine's own floor for a cross-thread hand-off: two plain
//! threads pass one word back and forth, each spinning until it is its
//! turn. No library, no sleeping: what one round trip of a cache line
//! between the two CPUs costs in this run. On the test VM it falls in two
//! modes from one process to the next (about 25 ns or 120-190 ns per round
//! trip in one run; 35-90 or 320-380 ns in an earlier week), as the
//! hypervisor moves the vCPUs; coframe's pinned pair follows the same
//! placement (docs/bench/HISTORY.md).

use crate::util::{now_ns, sample, Args, Report};
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Tells the answering thread to stop (never a turn: turns stay far below).
const STOP: u64 = u64::MAX;

/// One op = one round trip: the main thread writes an odd turn, the
/// other thread answers with the next even one.
pub fn handoff_spin(a: &Args) {
    let turn = AtomicU64::new(0);
    let s = std::thread::scope(|scope| {
        scope.spawn(|| loop {
            let v = turn.load(Acquire);
            if v == STOP {
                break;
            }
            if v % 2 == 1 {
                turn.store(v + 1, Release);
            }
            core::hint::spin_loop();
        });
        let mut t = 0;
        let s = sample(a.reps, a.iters, || {
            let t0 = now_ns();
            for _ in 0..a.iters {
                turn.store(t + 1, Release);
                while turn.load(Acquire) != t + 2 {
                    core::hint::spin_loop();
                }
                t += 2;
            }
            now_ns() - t0
        });
        turn.store(STOP, Release);
        s
    });
    Report::new(&a.bench).samples(a.iters, &s).print();
}
