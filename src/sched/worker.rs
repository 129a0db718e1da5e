//! One worker thread: run the local queue, refill it from the inbox,
//! sleep when both are empty.

use core::cell::{Cell, RefCell};
use core::ptr;
use std::collections::VecDeque;
use std::sync::Arc;

use super::{harness, Runtime};
use crate::stack::AltStack;

/// After this many local runs the worker looks at its inbox even if the
/// local queue is not empty, so remote wake-ups are not starved.
const INBOX_INTERVAL: u32 = 61;

struct Local {
    rt: *const Runtime,
    index: usize,
    queue: RefCell<VecDeque<u32>>,
}

thread_local! {
    static LOCAL: Cell<*const Local> = const { Cell::new(ptr::null()) };
}

#[inline(never)]
fn local() -> *const Local {
    LOCAL.with(|l| l.get())
}

#[inline(never)]
fn set_local(l: *const Local) {
    LOCAL.with(|c| c.set(l));
}

/// Whether the calling thread is one of any runtime's workers.
pub(crate) fn on_worker() -> bool {
    !local().is_null()
}

/// The runtime whose worker the calling thread is.
pub(crate) fn current_runtime() -> Option<&'static Runtime> {
    // SAFETY: LOCAL is non-null only while `run` holds the runtime's Arc,
    // and the reference is used only for the duration of a callback that
    // runs inside `run`.
    unsafe { local().as_ref().map(|l| &*l.rt) }
}

/// Queues `index` locally if the calling thread is `worker` of `rt`.
pub(super) fn push_local(rt: &Runtime, worker: usize, index: usize) -> bool {
    // SAFETY: LOCAL points at the `Local` on this worker's own stack while
    // `run` is active, and is null otherwise.
    let Some(l) = (unsafe { local().as_ref() }) else {
        return false;
    };
    if !ptr::eq(l.rt, rt) || l.index != worker {
        return false;
    }
    l.queue.borrow_mut().push_back(index as u32);
    true
}

/// The worker thread's body.
pub(super) fn run(rt: Arc<Runtime>, index: usize) {
    // Without an alternate stack a coroutine's overflow could not be reported.
    let _alt = AltStack::install().ok();
    let me = Local {
        rt: Arc::as_ptr(&rt),
        index,
        queue: RefCell::new(VecDeque::new()),
    };
    set_local(&me);
    let inbox = &rt.inboxes[index];
    let mut ticks = 0u32;
    loop {
        ticks = ticks.wrapping_add(1);
        if ticks % INBOX_INTERVAL != 0 {
            let next = me.queue.borrow_mut().pop_front();
            if let Some(frame) = next {
                harness::run(frame as usize);
                continue;
            }
        }
        let mut q = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !q.frames.is_empty() {
                me.queue.borrow_mut().extend(q.frames.drain(..));
                break;
            }
            if !me.queue.borrow().is_empty() {
                break;
            }
            if q.closed {
                drop(q);
                set_local(ptr::null());
                return;
            }
            q.sleeping = true;
            q = inbox.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            q.sleeping = false;
        }
    }
}
