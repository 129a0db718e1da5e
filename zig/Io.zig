//! `coframe.Io`: a `std.Io` whose fibers are coframe's coroutines.
//!
//! `async`, `concurrent` and the group calls spawn a coframe coroutine
//! (stackful, on a guarded stack, `CORO_SPAWN_CANCEL_RETURNS`) per task;
//! `await`, `cancel`, the group waits, futexes, `sleep` and the TCP calls
//! suspend a coroutine and block a plain thread. Everything else forwards
//! to an embedded `std.Io.Threaded` and runs on the calling thread.
//! docs/ZIG-IO.md gives every decision; the numbered rules below are
//! referred to from the code.
//!
//! 1. Cancellation is this file's, not coframe's. std.Io's cancel is
//!    one-shot ("only the next cancelation point returns error.Canceled"),
//!    maskable (`swapCancelProtection`) and re-armable (`recancel`);
//!    coframe's cancel-returns mode is sticky (every later suspension
//!    answers CORO_ECANCELED), so a cancelled task could not even await
//!    its own group in a `defer`. A fiber keeps a request flag and
//!    publishes the token of each cancelable suspension; a cancel sets the
//!    flag and resumes that token. Tokens are generation-checked, so a
//!    resume that arrives late (the waiter was already woken) answers
//!    CORO_ESTALE and does nothing.
//! 2. Waits that coframe holds itself (`coro_wait_fd`, `coro_sleep_until`)
//!    cannot be ended by a token resume. A cancelable fiber therefore
//!    suspends on its own token, and its `on_suspend` callback hands the
//!    library wait to a helper coroutine, which resumes the fiber's token
//!    when the wait ends. Each fiber keeps one helper, parked between
//!    waits and migratable, so that it follows the fiber's worker; one
//!    that was overtaken (the fiber was woken by something else) is
//!    cancelled (default mode: it never runs again) and replaced.
//! 3. A futex wait ended by a cancel returns as a spurious wake-up, as
//!    std.Io.Threaded's and std.Io.Uring's do: error.Canceled comes from
//!    the cancelation point at the start of the caller's retry. So a
//!    waiter never takes a wake (`Mutex.unlock` hands out exactly one)
//!    and then answers error.Canceled without looking at the word again.
//! 4. A fiber finds its record through `coro_self_id()`: the id's low 32
//!    bits are its frame slot + 1 (docs/API.md, "Handles"), which indexes
//!    a process-wide table written by the fiber itself at its start and
//!    cleared at its end. A coroutine not made by this file (no entry)
//!    uses the same suspending waits, without Io cancellation.
const CoIo = @This();

const builtin = @import("builtin");
const std = @import("std");
const c = @import("c.zig");

const Io = std.Io;
const Threaded = Io.Threaded;
const Alignment = std.mem.Alignment;
const Allocator = std.mem.Allocator;
const assert = std.debug.assert;
const posix = std.posix;
const net = Io.net;

/// Forward target; `io().userdata` points here, so the forwarded entries
/// of the vtable are Threaded's own functions, called unchanged.
threaded: Threaded,
/// Threaded's vtable, copied, with this file's functions put over it.
vtable: Io.VTable,
/// Threaded's own, for the calls that forward and for the locks.
base: *const Io.VTable,
rt: *c.coro_runtime,
owns_runtime: bool,
gpa: Allocator,
futex_buckets: [futex_bucket_count]FutexBucket,
/// Tasks (futures and group members) whose body has not returned yet.
live_tasks: std.atomic.Value(usize),

pub const InitOptions = struct {
    /// Run on this runtime (not shut down by `deinit`). null: make one.
    runtime: ?*c.coro_runtime = null,
    /// Workers of the runtime made here; 0: one per CPU.
    workers: u32 = 0,
    /// Usable stack bytes per task (the runtime made here): Zig's std
    /// keeps big buffers on the stack, and Debug frames are large.
    /// Reserved lazily (untouched pages cost nothing); a guard page below.
    stack_size: usize = 256 * 1024,
    /// For the embedded `std.Io.Threaded`, which runs what forwards.
    threaded: Threaded.InitOptions = .{},
};

pub const InitError = error{ OutOfMemory, SystemResources };

/// `self` must stay where it is until `deinit`: `io()` points into it.
/// `gpa` must be thread-safe; it holds futures, group states and
/// environments larger than 512 bytes.
pub fn init(self: *CoIo, gpa: Allocator, options: InitOptions) InitError!void {
    var rt: *c.coro_runtime = undefined;
    const owns = options.runtime == null;
    if (options.runtime) |r| {
        rt = r;
    } else {
        var cfg: c.coro_config = .{
            .struct_size = @sizeOf(c.coro_config),
            .workers = options.workers,
            .stack_size = options.stack_size,
        };
        var out: ?*c.coro_runtime = null;
        switch (c.coro_runtime_new(&cfg, &out)) {
            c.CORO_OK => rt = out.?,
            c.CORO_ENOMEM => return error.OutOfMemory,
            else => return error.SystemResources,
        }
    }
    self.* = .{
        .threaded = Threaded.init(gpa, options.threaded),
        .vtable = undefined,
        .base = undefined,
        .rt = rt,
        .owns_runtime = owns,
        .gpa = gpa,
        .futex_buckets = @splat(.{}),
        .live_tasks = .init(0),
    };
    self.base = self.threaded.io().vtable;
    var v = self.base.*;
    v.async = async;
    v.concurrent = concurrent;
    v.await = await;
    v.cancel = cancel;
    v.groupAsync = groupAsync;
    v.groupConcurrent = groupConcurrent;
    v.groupAwait = groupAwait;
    v.groupCancel = groupCancel;
    v.recancel = recancel;
    v.swapCancelProtection = swapCancelProtection;
    v.checkCancel = checkCancel;
    v.futexWait = futexWait;
    v.futexWaitUncancelable = futexWaitUncancelable;
    v.futexWake = futexWake;
    v.operate = operate;
    v.now = now;
    v.sleep = sleep;
    v.netListenIp = netListenIp;
    v.netAccept = netAccept;
    v.netConnectIp = netConnectIp;
    self.vtable = v;
}

/// Every future must have been awaited or cancelled and every group
/// awaited or cancelled (as `std.Io.Uring` asserts). Shuts the runtime
/// down if `init` made it, then the embedded `std.Io.Threaded`.
pub fn deinit(self: *CoIo) void {
    if (self.owns_runtime) _ = c.coro_runtime_shutdown(self.rt);
    self.threaded.deinit();
    self.* = undefined;
}

pub fn io(self: *CoIo) Io {
    return .{ .userdata = &self.threaded, .vtable = &self.vtable };
}

/// The runtime the tasks run on.
pub fn runtime(self: *const CoIo) *c.coro_runtime {
    return self.rt;
}

/// Tasks whose body has not returned yet (tests, leak checks).
pub fn liveTasks(self: *const CoIo) usize {
    return self.live_tasks.load(.acquire);
}

fn from(userdata: ?*anyopaque) *CoIo {
    const t: *Threaded = @ptrCast(@alignCast(userdata));
    return @alignCast(@fieldParentPtr("threaded", t));
}

/// Threaded's Io: its futex backs this file's locks and the parkers of
/// plain threads.
fn tio(self: *CoIo) Io {
    return .{ .userdata = &self.threaded, .vtable = self.base };
}

// ------------------------------------------------------------- fibers

/// A task's cancellation state (rule 1). Only `cancel_requested` and
/// `wait_token` are touched by other threads.
const Fiber = struct {
    id: u64 = 0,
    cancel_requested: std.atomic.Value(bool) = .init(false),
    /// The token of the cancelable suspension in progress, 0 if none.
    wait_token: std.atomic.Value(u64) = .init(0),
    protection: Io.CancelProtection = .unblocked,
    /// error.Canceled was returned and `recancel` was not called since.
    acknowledged: bool = false,
    /// The kept helper (rule 2), and its promise. Only the task touches
    /// these (and its `on_suspend` callbacks, while it is suspended).
    helper: ?*HelperCtl = null,
    helper_promise: c.coro_promise = .{ .id = 0 },

    fn cancelable(f: *const Fiber) bool {
        return f.protection == .unblocked and !f.acknowledged;
    }

    /// A cancelation point with nothing to wait for.
    fn check(f: *Fiber) Io.Cancelable!void {
        if (!f.cancelable()) return;
        if (f.cancel_requested.load(.acquire)) return f.deliver();
    }

    fn deliver(f: *Fiber) error{Canceled} {
        f.acknowledged = true;
        return error.Canceled;
    }

    /// In `on_suspend`: gives the wait to the kept helper, spawning it if
    /// there is none. false: no memory for one.
    fn handToHelper(f: *Fiber, s: *Suspension, token: u64) bool {
        if (f.helper) |h| {
            const t = h.park_token.swap(0, .acq_rel);
            if (t != 0) {
                h.take(s, token);
                s.kept = h;
                _ = c.coro_resume(.{ .id = t });
                return true;
            }
            f.retireHelper(s.io);
        }
        const h = s.io.gpa.create(HelperCtl) catch return false;
        h.* = .{};
        h.take(s, token);
        const env: HelperCtl.Env = .{ .ctl = h, .gpa = &s.io.gpa };
        var promise: c.coro_promise = .{ .id = 0 };
        if (c.coro_spawn(s.io.rt, &HelperCtl.entry, &env, @sizeOf(HelperCtl.Env), &HelperCtl.drop, c.CORO_SPAWN_MIGRATABLE, &promise) != c.CORO_OK) {
            s.io.gpa.destroy(h);
            return false;
        }
        f.helper = h;
        f.helper_promise = promise;
        s.kept = h;
        return true;
    }

    /// Lets the kept helper go: cancelled (parked, it ends at once; still
    /// waiting, its wait ends and it never runs again).
    fn retireHelper(f: *Fiber, self: *CoIo) void {
        const h = f.helper orelse return;
        _ = c.coro_cancel_async(f.helper_promise);
        h.unref(self.gpa);
        f.helper = null;
        f.helper_promise = .{ .id = 0 };
    }

    /// From any thread, while the record is alive (the caller holds a
    /// reference to the future, or the group's lock with the task listed).
    fn requestCancel(f: *Fiber) void {
        f.cancel_requested.store(true, .seq_cst);
        const t = f.wait_token.load(.seq_cst);
        if (t != 0) _ = c.coro_resume(.{ .id = t });
    }
};

/// Rule 4: frame slot -> the fiber running in it.
const registry = struct {
    const chunk_len = 4096;
    const max_chunks = 4096;
    const Entry = struct { id: u64 = 0, fiber: ?*Fiber = null };
    var chunks: [max_chunks]std.atomic.Value(?*[chunk_len]Entry) = @splat(.init(null));

    fn slotOf(id: u64) usize {
        return @as(u32, @truncate(id)) -% 1;
    }

    fn entry(id: u64, make: bool) ?*Entry {
        const slot = slotOf(id);
        const ci = slot / chunk_len;
        if (ci >= max_chunks) return null;
        const chunk = chunks[ci].load(.acquire) orelse blk: {
            if (!make) return null;
            const fresh = std.heap.page_allocator.create([chunk_len]Entry) catch return null;
            fresh.* = @splat(.{});
            if (chunks[ci].cmpxchgStrong(null, fresh, .acq_rel, .acquire)) |other| {
                std.heap.page_allocator.destroy(fresh);
                break :blk other.?;
            }
            break :blk fresh;
        };
        return &chunk[slot % chunk_len];
    }

    /// Whether the fiber is registered (false: it runs as a plain
    /// coroutine, without Io cancellation).
    fn set(id: u64, f: *Fiber) bool {
        const e = entry(id, true) orelse return false;
        e.* = .{ .id = id, .fiber = f };
        return true;
    }

    fn clear(id: u64) void {
        const e = entry(id, false) orelse return;
        if (e.id == id) e.* = .{};
    }

    fn get(id: u64) ?*Fiber {
        const e = entry(id, false) orelse return null;
        return if (e.id == id) e.fiber else null;
    }
};

/// Who calls: a plain thread, a coroutine this file did not make, or a
/// task of some coframe.Io.
const Caller = union(enum) {
    thread,
    coroutine,
    fiber: *Fiber,

    fn get() Caller {
        const id = c.coro_self_id();
        if (id == 0) return .thread;
        return if (registry.get(id)) |f| .{ .fiber = f } else .coroutine;
    }

    fn fiberIfCancelable(caller: Caller) ?*Fiber {
        return switch (caller) {
            .fiber => |f| if (f.cancelable()) f else null,
            else => null,
        };
    }
};

threadlocal var thread_protection: Io.CancelProtection = .unblocked;

// ------------------------------------------------------------ waiting

/// Who to wake: a suspended coroutine's token, or a plain thread's parker.
const Waiter = struct {
    token: u64 = 0,
    parker: ?*Parker = null,

    fn wake(w: Waiter, self: *CoIo) void {
        if (w.token != 0) {
            _ = c.coro_resume(.{ .id = w.token });
        } else if (w.parker) |p| {
            p.word.store(1, .release);
            self.tio().futexWake(u32, &p.word.raw, 1);
        }
    }
};

/// A plain thread's wake-up word. Thread-local, so a late wake never
/// writes freed memory; at worst it wakes a later wait spuriously, and
/// every wait here re-checks its condition.
const Parker = struct { word: std.atomic.Value(u32) = .init(0) };
threadlocal var thread_parker: Parker = .{};

fn parkThread(self: *CoIo, p: *Parker, deadline: i64) void {
    const t = self.tio();
    while (p.word.load(.acquire) == 0) {
        if (deadline < 0) {
            t.futexWaitUncancelable(u32, &p.word.raw, 0);
        } else {
            const left = deadline - c.coro_now();
            if (left <= 0) return;
            t.futexWaitTimeout(u32, &p.word.raw, 0, .{ .duration = .{
                .raw = .fromNanoseconds(left),
                .clock = .awake,
            } }) catch {};
        }
    }
}

/// How a suspension ended, as far as the waiting code can tell; it
/// inspects its own state for the rest.
const Outcome = enum {
    /// Resumed: a wake, the deadline, readiness, or spuriously.
    resumed,
    /// A cancel request is pending and the fiber may be cancelled.
    cancel_pending,
    /// coframe cancelled the coroutine (runtime shutdown): it cannot
    /// suspend again.
    shutdown,
};

/// One suspension (rules 1 and 2). `enqueue`, if any, runs in `on_suspend`
/// with the waiter; it returns false when the condition holds already
/// (then the coroutine is resumed at once). `fd >= 0` or `deadline >= 0`
/// hands the wait to a helper: the task's kept one, or one spawned for
/// this wait alone (a coroutine coframe.Io did not make).
const Suspension = struct {
    enqueue: ?*const fn (ctx: *anyopaque, w: Waiter) bool = null,
    ctx: *anyopaque = undefined,
    fd: c_int = -1,
    events: u32 = 0,
    deadline: i64 = -1,
    /// The task suspending, if it is one: it keeps its helper.
    fiber: ?*Fiber = null,
    /// Publish the token for Io cancellation (rule 1).
    cancelable: bool = false,
    io: *CoIo,
    /// A helper spawned for this wait alone.
    helper: c.coro_promise = .{ .id = 0 },
    /// The kept helper that took this wait.
    kept: ?*HelperCtl = null,
    helper_failed: bool = false,

    fn onSuspend(token: c.coro_token, arg: ?*anyopaque) callconv(.c) void {
        const s: *Suspension = @ptrCast(@alignCast(arg));
        if (s.enqueue) |enqueue| {
            if (!enqueue(s.ctx, .{ .token = token.id })) {
                _ = c.coro_resume(token);
                return;
            }
        }
        if (s.fd >= 0 or s.deadline >= 0) {
            const ok = if (s.fiber) |f| f.handToHelper(s, token.id) else s.spawnOnce(token.id);
            if (!ok) {
                s.helper_failed = true;
                _ = c.coro_resume(token);
                return;
            }
        }
        if (s.cancelable) {
            const f = s.fiber.?;
            f.wait_token.store(token.id, .seq_cst);
            if (f.cancel_requested.load(.seq_cst)) _ = c.coro_resume(token);
        }
    }

    fn spawnOnce(s: *Suspension, token: u64) bool {
        const env: HelperEnv = .{ .token = token, .deadline = s.deadline, .fd = s.fd, .events = s.events };
        if (c.coro_spawn(s.io.rt, &HelperEnv.entry, &env, @sizeOf(HelperEnv), null, 0, &s.helper) == c.CORO_OK) return true;
        s.helper = .{ .id = 0 };
        return false;
    }

    /// Suspends the calling coroutine (rule 2: no other thread may end a
    /// library wait, so a helper does it).
    fn run(s: *Suspension) Outcome {
        const rc = c.coro_suspend(&onSuspend, s);
        if (s.cancelable) s.fiber.?.wait_token.store(0, .seq_cst);
        if (s.helper.id != 0) _ = c.coro_cancel_async(s.helper);
        if (s.kept) |h| {
            // Not parked again: it did not end its wait (a cancel, a wake or
            // the shutdown woke us), or has not parked yet. Let it go.
            if (h.park_token.load(.acquire) == 0) s.fiber.?.retireHelper(s.io);
        }
        if (rc != c.CORO_OK) return .shutdown;
        if (s.cancelable) if (s.fiber.?.cancel_requested.load(.acquire)) return .cancel_pending;
        return .resumed;
    }
};

/// A helper spawned for one wait (rule 2), for coroutines that coframe.Io
/// did not make: waits on `fd` (or sleeps until `deadline`), then resumes
/// the waiter's token. Default mode, so a cancel (the waiter is back
/// already) ends it where it waits.
const HelperEnv = extern struct {
    token: u64,
    deadline: i64,
    fd: c_int,
    events: u32,

    fn entry(env: ?*anyopaque) callconv(.c) ?*anyopaque {
        const h: *HelperEnv = @ptrCast(@alignCast(env));
        _ = if (h.fd >= 0) c.coro_wait_fd(h.fd, h.events, h.deadline) else c.coro_sleep_until(h.deadline);
        _ = c.coro_resume(.{ .id = h.token });
        return null;
    }
};

/// A task's kept helper (rule 2): one coroutine per task that does its
/// library waits one after the other. It parks between waits; the task's
/// `on_suspend` writes the next wait here and resumes it. Spawned
/// `CORO_SPAWN_MIGRATABLE` (its code keeps no thread-local state), so
/// that resume, made on the task's worker while that worker has nothing
/// else to run, moves it there: the wait registers with the task's own
/// epoll and the wake-up stays on one thread. A helper that did not park
/// again when the task got back (it was woken by something else) is
/// cancelled and replaced at the next wait. Two references: the task's,
/// dropped when it lets the helper go, and the helper's, dropped by its
/// `env_drop`, after which its body never runs; so the helper only ever
/// writes here while the block is alive.
const HelperCtl = struct {
    refs: std.atomic.Value(u32) = .init(2),
    fd: c_int = -1,
    events: u32 = 0,
    deadline: i64 = -1,
    task_token: u64 = 0,
    /// The helper's token while it is parked, 0 while it works.
    park_token: std.atomic.Value(u64) = .init(0),

    fn unref(h: *HelperCtl, gpa: Allocator) void {
        if (h.refs.fetchSub(1, .acq_rel) == 1) gpa.destroy(h);
    }

    fn take(h: *HelperCtl, s: *const Suspension, token: u64) void {
        h.fd = s.fd;
        h.events = s.events;
        h.deadline = s.deadline;
        h.task_token = token;
    }

    const Env = extern struct {
        ctl: *HelperCtl,
        gpa: *const Allocator,
    };

    const Park = struct { ctl: *HelperCtl, task_token: u64 };

    fn entry(raw: ?*anyopaque) callconv(.c) ?*anyopaque {
        const env: *Env = @ptrCast(@alignCast(raw));
        const h = env.ctl;
        while (true) {
            const fd = h.fd;
            _ = if (fd >= 0) c.coro_wait_fd(fd, h.events, h.deadline) else c.coro_sleep_until(h.deadline);
            var park: Park = .{ .ctl = h, .task_token = h.task_token };
            if (c.coro_suspend(&parked, &park) != c.CORO_OK) return null;
        }
    }

    /// Parked: say so, then wake the task, last (it may let us go at once).
    fn parked(token: c.coro_token, arg: ?*anyopaque) callconv(.c) void {
        const park: *Park = @ptrCast(@alignCast(arg));
        park.ctl.park_token.store(token.id, .release);
        _ = c.coro_resume(.{ .id = park.task_token });
    }

    fn drop(raw: ?*anyopaque) callconv(.c) void {
        const env: *Env = @ptrCast(@alignCast(raw));
        env.ctl.unref(env.gpa.*);
    }
};

/// Waits for `fd` (readiness, `events`), or until `deadline` if `fd` is -1,
/// or for a cancel. Returns when any of them came (or spuriously): the
/// caller retries its system call and watches its deadline.
fn waitFd(self: *CoIo, caller: Caller, fd: c_int, events: u32, deadline: i64) Io.Cancelable!void {
    switch (caller) {
        .thread => {
            if (fd >= 0) {
                _ = c.coro_wait_fd(fd, events, deadline);
            } else if (deadline >= 0) {
                _ = c.coro_sleep_until(deadline);
            } else {
                // Sleep forever: nothing wakes a plain thread's parker here.
                thread_parker.word.store(0, .release);
                self.parkThread(&thread_parker, -1);
            }
        },
        .coroutine => {
            const rc = if (fd >= 0) c.coro_wait_fd(fd, events, deadline) else c.coro_sleep_until(deadline);
            if (rc == c.CORO_ECANCELED) return error.Canceled;
        },
        .fiber => |f| {
            if (!f.cancelable()) {
                _ = if (fd >= 0) c.coro_wait_fd(fd, events, deadline) else c.coro_sleep_until(deadline);
                return;
            }
            if (f.cancel_requested.load(.acquire)) return f.deliver();
            var s: Suspension = .{ .fd = fd, .events = events, .deadline = deadline, .fiber = f, .cancelable = true, .io = self };
            switch (s.run()) {
                .resumed => {},
                .cancel_pending => return f.deliver(),
                .shutdown => return f.deliver(),
            }
            if (s.helper_failed) {
                // No memory for the helper: wait here, not cancelable.
                _ = if (fd >= 0) c.coro_wait_fd(fd, events, deadline) else c.coro_sleep_until(deadline);
            }
        },
    }
}

/// Suspends a coroutine or parks a thread until woken through the waiter
/// that `enqueue` stores, the deadline, or (a cancelable fiber) a cancel.
fn waitQueued(
    self: *CoIo,
    caller: Caller,
    cancelable: bool,
    enqueue: *const fn (ctx: *anyopaque, w: Waiter) bool,
    ctx: *anyopaque,
    deadline: i64,
) Outcome {
    switch (caller) {
        .thread => {
            const p = &thread_parker;
            p.word.store(0, .release);
            if (!enqueue(ctx, .{ .parker = p })) return .resumed;
            self.parkThread(p, deadline);
            return .resumed;
        },
        .coroutine, .fiber => {
            var s: Suspension = .{
                .enqueue = enqueue,
                .ctx = ctx,
                .deadline = deadline,
                .fiber = if (caller == .fiber) caller.fiber else null,
                .cancelable = cancelable,
                .io = self,
            };
            return s.run();
        },
    }
}

/// A `std.Io.Timeout` as an absolute `coro_now()` deadline (CLOCK_MONOTONIC
/// ns), -1 for none. Other clocks' deadlines are moved onto it by their
/// distance from now.
fn deadlineOf(self: *CoIo, timeout: Io.Timeout) i64 {
    const max = std.math.maxInt(i64);
    return switch (timeout) {
        .none => -1,
        .duration => |d| blk: {
            const ns = std.math.clamp(d.raw.toNanoseconds(), 0, max);
            break :blk c.coro_now() +| @as(i64, @intCast(ns));
        },
        .deadline => |d| blk: {
            if (d.clock == .awake) break :blk @intCast(std.math.clamp(d.raw.toNanoseconds(), 0, max));
            const left = d.raw.toNanoseconds() - self.base.now(&self.threaded, d.clock).toNanoseconds();
            break :blk c.coro_now() +| @as(i64, @intCast(std.math.clamp(left, 0, max)));
        },
    };
}

// ------------------------------------------------------------ futures

/// A future: the task's fiber record, its result, and the hand-over to
/// its awaiter. Two references: the task's, dropped when its body has
/// returned, and the awaiter's, dropped after the result was copied.
const Future = struct {
    fiber: Fiber = .{},
    state: std.atomic.Value(State) = .init(.pending),
    refs: std.atomic.Value(u32) = .init(2),
    awaiter: Waiter = .{},
    /// The task ended with its cancel acknowledged (not re-armed).
    acknowledged_at_end: bool = false,
    alloc_len: usize,
    alloc_align: Alignment,
    result_offset: usize,

    const State = enum(u32) { pending, awaited, done };

    fn create(gpa: Allocator, result_len: usize, result_align: Alignment) ?*Future {
        const alignment = result_align.max(.of(Future));
        const offset = result_align.forward(@sizeOf(Future));
        const len = offset + result_len;
        const mem = gpa.rawAlloc(len, alignment, @returnAddress()) orelse return null;
        const f: *Future = @ptrCast(@alignCast(mem));
        f.* = .{ .alloc_len = len, .alloc_align = alignment, .result_offset = offset };
        return f;
    }

    fn result(f: *Future) [*]u8 {
        return @as([*]u8, @ptrCast(f)) + f.result_offset;
    }

    fn unref(f: *Future, gpa: Allocator) void {
        if (f.refs.fetchSub(1, .acq_rel) != 1) return;
        const mem: [*]u8 = @ptrCast(f);
        gpa.rawFree(mem[0..f.alloc_len], f.alloc_align, @returnAddress());
    }

    /// The task is done: publish the result, wake the awaiter.
    fn finish(f: *Future, self: *CoIo) void {
        f.acknowledged_at_end = f.fiber.acknowledged;
        if (f.state.swap(.done, .acq_rel) == .awaited) f.awaiter.wake(self);
        f.unref(self.gpa);
    }

    fn enqueueAwaiter(ctx: *anyopaque, w: Waiter) bool {
        const f: *Future = @ptrCast(@alignCast(ctx));
        f.awaiter = w;
        return f.state.cmpxchgStrong(.pending, .awaited, .acq_rel, .acquire) == null;
    }
};

/// The environment of a task's frame: a header, then the context bytes
/// (`async`'s arguments), copied into the frame by `coro_spawn`.
const TaskEnv = struct {
    io: *CoIo,
    start: union { future: *const fn (*const anyopaque, *anyopaque) void, group: *const fn (*const anyopaque) void },
    context_offset: u32,
    started: bool = false,
    finished: bool = false,
    kind: union(enum) {
        future: *Future,
        group: GroupTask,
    },

    fn context(env: *TaskEnv) *const anyopaque {
        return @as([*]u8, @ptrCast(env)) + env.context_offset;
    }

    /// The frame's entry: runs the task (the same for futures and groups).
    fn entry(raw: ?*anyopaque) callconv(.c) ?*anyopaque {
        const env: *TaskEnv = @ptrCast(@alignCast(raw));
        const self = env.io;
        env.started = true;
        const fiber: *Fiber = switch (env.kind) {
            .future => |f| &f.fiber,
            .group => |*g| &g.fiber,
        };
        fiber.id = c.coro_self_id();
        const registered = registry.set(fiber.id, fiber);
        switch (env.kind) {
            .future => |f| env.start.future(env.context(), f.result()),
            .group => |*g| {
                g.join();
                env.start.group(env.context());
            },
        }
        fiber.retireHelper(self);
        if (registered) registry.clear(fiber.id);
        env.end(self);
        return null;
    }

    fn end(env: *TaskEnv, self: *CoIo) void {
        env.finished = true;
        _ = self.live_tasks.fetchSub(1, .acq_rel);
        switch (env.kind) {
            .future => |f| f.finish(self),
            .group => |*g| g.leave(self),
        }
    }

    /// `env_drop`: a task the runtime cancelled before it ran (shutdown)
    /// still settles its future or group, so nothing waits for it forever.
    fn drop(raw: ?*anyopaque) callconv(.c) void {
        const env: *TaskEnv = @ptrCast(@alignCast(raw));
        if (env.finished) return;
        if (!env.started) {
            if (env.kind == .group) {
                // Never joined the list: nothing to unlink.
                env.kind.group.joined = false;
            }
        }
        env.end(env.io);
    }
};

/// Builds a task's environment and spawns its frame. false: no frame
/// (no memory, or a context alignment above the 16 bytes coro_spawn
/// keeps); nothing was spawned and the caller still owns everything.
fn spawnTask(
    self: *CoIo,
    header: TaskEnv,
    context: []const u8,
    context_alignment: Alignment,
) bool {
    if (context_alignment.compare(.gt, .@"16")) return false;
    const offset = context_alignment.forward(@sizeOf(TaskEnv));
    const len = offset + context.len;
    var local: [512]u8 align(16) = undefined;
    const buf: []align(16) u8 = if (len <= local.len)
        local[0..len]
    else
        self.gpa.alignedAlloc(u8, .@"16", len) catch return false;
    defer if (len > local.len) self.gpa.free(buf);
    const env: *TaskEnv = @ptrCast(buf.ptr);
    env.* = header;
    env.context_offset = @intCast(offset);
    @memcpy(buf[offset..][0..context.len], context);
    _ = self.live_tasks.fetchAdd(1, .acq_rel);
    var promise: c.coro_promise = .{ .id = 0 };
    const rc = c.coro_spawn(self.rt, &TaskEnv.entry, buf.ptr, len, &TaskEnv.drop, c.CORO_SPAWN_CANCEL_RETURNS, &promise);
    if (rc != c.CORO_OK) {
        _ = self.live_tasks.fetchSub(1, .acq_rel);
        return false;
    }
    // The future or the group settles the task; nobody awaits the frame.
    _ = c.coro_detach(promise);
    return true;
}

fn spawnFuture(
    self: *CoIo,
    result_len: usize,
    result_alignment: Alignment,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque, result: *anyopaque) void,
) ?*Future {
    const f = Future.create(self.gpa, result_len, result_alignment) orelse return null;
    const header: TaskEnv = .{
        .io = self,
        .start = .{ .future = start },
        .context_offset = 0,
        .kind = .{ .future = f },
    };
    if (!self.spawnTask(header, context, context_alignment)) {
        f.refs.store(1, .monotonic);
        f.unref(self.gpa);
        return null;
    }
    return f;
}

fn async(
    userdata: ?*anyopaque,
    result: []u8,
    result_alignment: Alignment,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque, result: *anyopaque) void,
) ?*Io.AnyFuture {
    const self = from(userdata);
    if (self.spawnFuture(result.len, result_alignment, context, context_alignment, start)) |f|
        return @ptrCast(f);
    // No frame to be had: run it here (std.Io allows `async` to).
    start(context.ptr, result.ptr);
    return null;
}

fn concurrent(
    userdata: ?*anyopaque,
    result_len: usize,
    result_alignment: Alignment,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque, result: *anyopaque) void,
) Io.ConcurrentError!*Io.AnyFuture {
    const self = from(userdata);
    const f = self.spawnFuture(result_len, result_alignment, context, context_alignment, start) orelse
        return error.ConcurrencyUnavailable;
    return @ptrCast(f);
}

/// Waits until the future's task is done. A cancel of a cancelable
/// awaiter goes down to the task, as in std.Io.Threaded: the awaiter
/// cancels it, waits for it, and gets its own cancel back (`recancel`)
/// unless the task acknowledged it.
fn awaitDone(self: *CoIo, f: *Future, may_cancel: bool) void {
    const caller = Caller.get();
    var propagated = false;
    while (f.state.load(.acquire) != .done) {
        const cancelable = may_cancel and !propagated and caller.fiberIfCancelable() != null;
        const outcome = self.waitQueued(caller, cancelable, &Future.enqueueAwaiter, f, -1);
        if (f.state.load(.acquire) == .done) break;
        // Not woken by the task: take the registration back, unless the
        // task is finishing (then it is waking us; the result is there).
        if (f.state.cmpxchgStrong(.awaited, .pending, .acq_rel, .acquire)) |s| {
            if (s == .done) break;
        }
        switch (outcome) {
            .resumed => {},
            .cancel_pending, .shutdown => if (!propagated) {
                propagated = true;
                if (caller == .fiber and outcome == .cancel_pending) caller.fiber.acknowledged = true;
                f.fiber.requestCancel();
            },
        }
    }
    if (propagated and caller == .fiber and !f.acknowledged_at_end) {
        // The task did not take the cancel: it is ours again.
        caller.fiber.acknowledged = false;
    }
}

fn await(userdata: ?*anyopaque, any_future: *Io.AnyFuture, result: []u8, result_alignment: Alignment) void {
    _ = result_alignment;
    const self = from(userdata);
    const f: *Future = @ptrCast(@alignCast(any_future));
    self.awaitDone(f, true);
    @memcpy(result, f.result()[0..result.len]);
    f.unref(self.gpa);
}

fn cancel(userdata: ?*anyopaque, any_future: *Io.AnyFuture, result: []u8, result_alignment: Alignment) void {
    _ = result_alignment;
    const self = from(userdata);
    const f: *Future = @ptrCast(@alignCast(any_future));
    if (f.state.load(.acquire) != .done) f.fiber.requestCancel();
    self.awaitDone(f, false);
    @memcpy(result, f.result()[0..result.len]);
    f.unref(self.gpa);
}

// ------------------------------------------------------------- groups

/// What `Io.Group.token` points at while the group has had tasks since it
/// was last awaited or cancelled. Allocated by the first spawn, freed by
/// `groupAwait`/`groupCancel` once no task runs.
const GroupState = struct {
    mutex: Io.Mutex = .init,
    running: usize = 0,
    canceled: bool = false,
    /// Tasks that started and have not ended: what a cancel reaches.
    head: ?*GroupTask = null,
    awaiter: ?Waiter = null,

    fn lock(g: *GroupState, self: *CoIo) void {
        g.mutex.lockUncancelable(self.tio());
    }

    fn unlock(g: *GroupState, self: *CoIo) void {
        g.mutex.unlock(self.tio());
    }

    fn enqueueAwaiter(ctx: *anyopaque, w: Waiter) bool {
        const a: *GroupAwait = @ptrCast(@alignCast(ctx));
        const g = a.state;
        g.lock(a.io);
        defer g.unlock(a.io);
        if (g.running == 0) return false;
        g.awaiter = w;
        return true;
    }

    /// Under the lock.
    fn cancelAll(g: *GroupState) void {
        g.canceled = true;
        var it = g.head;
        while (it) |t| : (it = t.next) t.fiber.requestCancel();
    }
};

const GroupAwait = struct { io: *CoIo, state: *GroupState };

/// A group task's part of its frame's environment.
const GroupTask = struct {
    io: *CoIo,
    state: *GroupState,
    fiber: Fiber = .{},
    prev: ?*GroupTask = null,
    next: ?*GroupTask = null,
    joined: bool = false,

    /// At the start of the body: listed, so cancels reach it.
    fn join(t: *GroupTask) void {
        const g = t.state;
        g.lock(t.io);
        defer g.unlock(t.io);
        t.next = g.head;
        if (g.head) |h| h.prev = t;
        g.head = t;
        t.joined = true;
        if (g.canceled) t.fiber.cancel_requested.store(true, .seq_cst);
    }

    /// At the end: unlisted and counted out; the last one wakes the awaiter.
    fn leave(t: *GroupTask, self: *CoIo) void {
        const g = t.state;
        var w: ?Waiter = null;
        g.lock(self);
        if (t.joined) {
            if (t.prev) |p| p.next = t.next else g.head = t.next;
            if (t.next) |n| n.prev = t.prev;
        }
        g.running -= 1;
        if (g.running == 0) {
            w = g.awaiter;
            g.awaiter = null;
        }
        g.unlock(self);
        // `g` may be freed from here on.
        if (w) |waiter| waiter.wake(self);
    }
};

fn groupState(self: *CoIo, group: *Io.Group) ?*GroupState {
    if (group.token.load(.acquire)) |t| return @ptrCast(@alignCast(t));
    const fresh = self.gpa.create(GroupState) catch return null;
    fresh.* = .{};
    if (group.token.cmpxchgStrong(null, fresh, .acq_rel, .acquire)) |other| {
        self.gpa.destroy(fresh);
        return @ptrCast(@alignCast(other.?));
    }
    return fresh;
}

fn spawnGroupTask(
    self: *CoIo,
    group: *Io.Group,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque) void,
) bool {
    const g = self.groupState(group) orelse return false;
    g.lock(self);
    g.running += 1;
    g.unlock(self);
    const header: TaskEnv = .{
        .io = self,
        .start = .{ .group = start },
        .context_offset = 0,
        .kind = .{ .group = .{ .io = self, .state = g } },
    };
    if (self.spawnTask(header, context, context_alignment)) return true;
    g.lock(self);
    g.running -= 1;
    g.unlock(self);
    return false;
}

fn groupAsync(
    userdata: ?*anyopaque,
    group: *Io.Group,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque) void,
) void {
    const self = from(userdata);
    if (!self.spawnGroupTask(group, context, context_alignment, start)) start(context.ptr);
}

fn groupConcurrent(
    userdata: ?*anyopaque,
    group: *Io.Group,
    context: []const u8,
    context_alignment: Alignment,
    start: *const fn (context: *const anyopaque) void,
) Io.ConcurrentError!void {
    const self = from(userdata);
    if (!self.spawnGroupTask(group, context, context_alignment, start)) return error.ConcurrencyUnavailable;
}

/// Waits until no task of the group runs; frees its state. `may_cancel`:
/// a cancel of the awaiter cancels the group and is answered with
/// error.Canceled once the group is done (std.Io.Threaded's order).
fn groupWait(self: *CoIo, group: *Io.Group, g: *GroupState, may_cancel: bool) Io.Cancelable!void {
    const caller = Caller.get();
    var canceled = false;
    var ctx: GroupAwait = .{ .io = self, .state = g };
    while (true) {
        const cancelable = may_cancel and !canceled and caller.fiberIfCancelable() != null;
        const outcome = self.waitQueued(caller, cancelable, &GroupState.enqueueAwaiter, &ctx, -1);
        g.lock(self);
        g.awaiter = null;
        const done = g.running == 0;
        if (!done and outcome != .resumed and !canceled) {
            canceled = true;
            if (caller == .fiber and outcome == .cancel_pending) caller.fiber.acknowledged = true;
            g.cancelAll();
        }
        g.unlock(self);
        if (done) break;
    }
    group.token.store(null, .release);
    self.gpa.destroy(g);
    if (canceled and may_cancel) return error.Canceled;
}

fn groupAwait(userdata: ?*anyopaque, group: *Io.Group, token: *anyopaque) Io.Cancelable!void {
    const self = from(userdata);
    const g: *GroupState = @ptrCast(@alignCast(token));
    return self.groupWait(group, g, true);
}

fn groupCancel(userdata: ?*anyopaque, group: *Io.Group, token: *anyopaque) void {
    const self = from(userdata);
    const g: *GroupState = @ptrCast(@alignCast(token));
    g.lock(self);
    g.cancelAll();
    g.unlock(self);
    self.groupWait(group, g, false) catch unreachable;
}

// ------------------------------------------------------- cancellation

fn recancel(userdata: ?*anyopaque) void {
    _ = userdata;
    switch (Caller.get()) {
        .fiber => |f| {
            assert(f.acknowledged); // recancel without a prior error.Canceled
            f.acknowledged = false;
        },
        else => {},
    }
}

fn swapCancelProtection(userdata: ?*anyopaque, new: Io.CancelProtection) Io.CancelProtection {
    _ = userdata;
    switch (Caller.get()) {
        .fiber => |f| {
            const old = f.protection;
            f.protection = new;
            return old;
        },
        else => {
            const old = thread_protection;
            thread_protection = new;
            return old;
        },
    }
}

fn checkCancel(userdata: ?*anyopaque) Io.Cancelable!void {
    _ = userdata;
    switch (Caller.get()) {
        .fiber => |f| return f.check(),
        else => {},
    }
}

// ------------------------------------------------------------ futexes

const futex_bucket_count = 256;

const FutexBucket = struct {
    mutex: Io.Mutex = .init,
    head: ?*FutexNode = null,
    tail: ?*FutexNode = null,
};

/// On the waiter's stack, listed in its bucket while it waits.
const FutexNode = struct {
    io: *CoIo,
    ptr: *const u32,
    expected: u32,
    waiter: Waiter = .{},
    prev: ?*FutexNode = null,
    next: ?*FutexNode = null,
    listed: bool = false,

    fn enqueue(ctx: *anyopaque, w: Waiter) bool {
        const n: *FutexNode = @ptrCast(@alignCast(ctx));
        const b = n.io.bucket(n.ptr);
        b.mutex.lockUncancelable(n.io.tio());
        defer b.mutex.unlock(n.io.tio());
        if (@atomicLoad(u32, n.ptr, .acquire) != n.expected) return false;
        n.waiter = w;
        n.prev = b.tail;
        n.next = null;
        if (b.tail) |t| t.next = n else b.head = n;
        b.tail = n;
        n.listed = true;
        return true;
    }

    /// After the wait: unlisted (a wake did it, or the waiter does now).
    fn settle(n: *FutexNode) void {
        const b = n.io.bucket(n.ptr);
        b.mutex.lockUncancelable(n.io.tio());
        defer b.mutex.unlock(n.io.tio());
        if (n.listed) unlink(b, n);
    }

    fn unlink(b: *FutexBucket, n: *FutexNode) void {
        if (n.prev) |p| p.next = n.next else b.head = n.next;
        if (n.next) |x| x.prev = n.prev else b.tail = n.prev;
        n.listed = false;
    }
};

fn bucket(self: *CoIo, ptr: *const u32) *FutexBucket {
    const h = (@intFromPtr(ptr) >> 2) *% 0x9E3779B97F4A7C15;
    return &self.futex_buckets[@intCast(h >> (64 - 8))];
}

fn futexWaitInner(self: *CoIo, ptr: *const u32, expected: u32, deadline: i64, may_cancel: bool) Io.Cancelable!void {
    const caller = Caller.get();
    const cancelable = may_cancel and caller.fiberIfCancelable() != null;
    if (cancelable) try caller.fiber.check();
    if (@atomicLoad(u32, ptr, .acquire) != expected) return;
    if (deadline >= 0 and c.coro_now() >= deadline) return;
    var node: FutexNode = .{ .io = self, .ptr = ptr, .expected = expected };
    const outcome = self.waitQueued(caller, cancelable, &FutexNode.enqueue, &node, deadline);
    // Woken, timed out, or interrupted by a cancel (rule 3): the caller
    // looks at the word again, and its retry's check delivers the cancel.
    node.settle();
    if (outcome == .shutdown and may_cancel) return error.Canceled;
}

fn futexWait(userdata: ?*anyopaque, ptr: *const u32, expected: u32, timeout: Io.Timeout) Io.Cancelable!void {
    const self = from(userdata);
    return self.futexWaitInner(ptr, expected, self.deadlineOf(timeout), true);
}

fn futexWaitUncancelable(userdata: ?*anyopaque, ptr: *const u32, expected: u32) void {
    const self = from(userdata);
    self.futexWaitInner(ptr, expected, -1, false) catch {};
}

fn futexWake(userdata: ?*anyopaque, ptr: *const u32, max_waiters: u32) void {
    const self = from(userdata);
    const b = self.bucket(ptr);
    var left = max_waiters;
    while (left > 0) {
        var batch: [32]Waiter = undefined;
        var n: usize = 0;
        var more = false;
        b.mutex.lockUncancelable(self.tio());
        var it = b.head;
        while (it) |node| {
            it = node.next;
            if (node.ptr != ptr) continue;
            if (n == batch.len or left == 0) {
                more = left > 0;
                break;
            }
            FutexNode.unlink(b, node);
            batch[n] = node.waiter;
            n += 1;
            left -= 1;
        }
        b.mutex.unlock(self.tio());
        // The nodes may be gone now; the waiters are copies.
        for (batch[0..n]) |w| w.wake(self);
        if (!more) break;
    }
}

// -------------------------------------------------------- time, sleep

fn now(userdata: ?*anyopaque, clock: Io.Clock) Io.Timestamp {
    const self = from(userdata);
    return switch (clock) {
        .awake => .fromNanoseconds(c.coro_now()),
        else => self.base.now(userdata, clock),
    };
}

fn sleep(userdata: ?*anyopaque, timeout: Io.Timeout) Io.Cancelable!void {
    const self = from(userdata);
    const deadline = self.deadlineOf(timeout);
    const caller = Caller.get();
    if (caller == .fiber) try caller.fiber.check();
    while (deadline < 0 or c.coro_now() < deadline) {
        try self.waitFd(caller, -1, 0, deadline);
    }
}

// ------------------------------------------------------------ network

const PosixAddress = Threaded.PosixAddress;

fn errnoOf(rc: anytype) posix.E {
    return posix.errno(rc);
}

/// The cancelation point at the start of a network call, as Threaded's
/// `Syscall.start` has it.
fn netCheck(caller: Caller) Io.Cancelable!void {
    if (caller == .fiber) try caller.fiber.check();
}

fn netListenIp(
    userdata: ?*anyopaque,
    address: *const net.IpAddress,
    options: net.IpAddress.ListenOptions,
) net.IpAddress.ListenError!net.Socket {
    const self = from(userdata);
    try netCheck(Caller.get());
    const socket = try self.base.netListenIp(userdata, address, options);
    // accept4 has no per-call flag: the listener is non-blocking.
    setNonblocking(socket.handle, true) catch |err| {
        self.base.netClose(userdata, (&socket)[0..1]);
        return err;
    };
    return socket;
}

fn setNonblocking(fd: posix.fd_t, on: bool) error{Unexpected}!void {
    const flags = posix.system.fcntl(fd, posix.F.GETFL, @as(c_int, 0));
    if (errnoOf(flags) != .SUCCESS) return error.Unexpected;
    const nb: c_int = @bitCast(@as(u32, @bitCast(posix.O{ .NONBLOCK = true })));
    const want: c_int = if (on) flags | nb else flags & ~nb;
    if (errnoOf(posix.system.fcntl(fd, posix.F.SETFL, want)) != .SUCCESS) return error.Unexpected;
}

fn netAccept(
    userdata: ?*anyopaque,
    listen_fd: net.Socket.Handle,
    options: net.Server.AcceptOptions,
) net.Server.AcceptError!net.Socket {
    _ = options;
    const self = from(userdata);
    const caller = Caller.get();
    try netCheck(caller);
    var storage: PosixAddress = undefined;
    while (true) {
        var addr_len: posix.socklen_t = @sizeOf(PosixAddress);
        // Accepted sockets are blocking (Linux does not inherit O_NONBLOCK):
        // reads and writes here pass MSG_DONTWAIT, and what forwards to
        // Threaded (sendfile, batches) gets the blocking socket it expects.
        const rc = posix.system.accept4(listen_fd, &storage.any, &addr_len, posix.SOCK.CLOEXEC);
        switch (errnoOf(rc)) {
            .SUCCESS => return .{ .handle = @intCast(rc), .address = Threaded.addressFromPosix(&storage) },
            .INTR => continue,
            .AGAIN => try self.waitFd(caller, listen_fd, c.CORO_READABLE, -1),
            .CONNABORTED => return error.ConnectionAborted,
            .INVAL => return error.SocketNotListening,
            .MFILE => return error.ProcessFdQuotaExceeded,
            .NFILE => return error.SystemFdQuotaExceeded,
            .NOBUFS, .NOMEM => return error.SystemResources,
            .PROTO => return error.ProtocolFailure,
            .PERM => return error.BlockedByFirewall,
            .BADF, .FAULT, .NOTSOCK, .OPNOTSUPP => |e| return Threaded.errnoBug(e),
            else => |e| return posix.unexpectedErrno(e),
        }
    }
}

fn connectErrno(e: posix.E) net.IpAddress.ConnectError {
    return switch (e) {
        .ADDRNOTAVAIL => error.AddressUnavailable,
        .AFNOSUPPORT => error.AddressFamilyUnsupported,
        .ALREADY => error.ConnectionPending,
        .CONNREFUSED => error.ConnectionRefused,
        .CONNRESET => error.ConnectionResetByPeer,
        .HOSTUNREACH => error.HostUnreachable,
        .NETUNREACH => error.NetworkUnreachable,
        .TIMEDOUT => error.Timeout,
        .ACCES, .PERM => error.AccessDenied,
        .NETDOWN => error.NetworkDown,
        .BADF, .CONNABORTED, .FAULT, .ISCONN, .NOENT, .NOTSOCK, .PROTOTYPE => Threaded.errnoBug(e),
        else => posix.unexpectedErrno(e),
    };
}

fn netConnectIp(
    userdata: ?*anyopaque,
    address: *const net.IpAddress,
    options: net.IpAddress.ConnectOptions,
) net.IpAddress.ConnectError!net.Socket {
    const self = from(userdata);
    const caller = Caller.get();
    try netCheck(caller);
    const deadline = self.deadlineOf(options.timeout);
    const family = Threaded.posixAddressFamily(address);
    const mode, const protocol = try Threaded.posixSocketModeProtocol(family, options.mode, options.protocol);
    const fd: posix.fd_t = while (true) {
        const rc = posix.system.socket(family, mode | posix.SOCK.CLOEXEC | posix.SOCK.NONBLOCK, protocol);
        switch (errnoOf(rc)) {
            .SUCCESS => break @intCast(rc),
            .INTR => continue,
            .AFNOSUPPORT => return error.AddressFamilyUnsupported,
            .INVAL => return error.ProtocolUnsupportedBySystem,
            .MFILE => return error.ProcessFdQuotaExceeded,
            .NFILE => return error.SystemFdQuotaExceeded,
            .NOBUFS, .NOMEM => return error.SystemResources,
            .PROTONOSUPPORT => return error.ProtocolUnsupportedByAddressFamily,
            .PROTOTYPE => return error.SocketModeUnsupported,
            else => |e| return posix.unexpectedErrno(e),
        }
    };
    errdefer Threaded.closeFd(fd);
    var storage: PosixAddress = undefined;
    var addr_len = Threaded.addressToPosix(address, &storage);
    const in_progress = while (true) {
        switch (errnoOf(posix.system.connect(fd, &storage.any, addr_len))) {
            .SUCCESS => break false,
            .INTR => continue,
            .AGAIN, .INPROGRESS => break true,
            else => |e| return connectErrno(e),
        }
    };
    if (in_progress and !isWritable(fd)) {
        // In progress: wait until writable, then ask how it went.
        while (true) {
            if (deadline >= 0 and c.coro_now() >= deadline) return error.Timeout;
            try self.waitFd(caller, fd, c.CORO_WRITABLE, deadline);
            if (isWritable(fd)) break;
        }
    }
    var so_error: i32 = 0;
    var so_len: posix.socklen_t = @sizeOf(i32);
    if (errnoOf(posix.system.getsockopt(fd, posix.SOL.SOCKET, posix.SO.ERROR, @ptrCast(&so_error), &so_len)) != .SUCCESS)
        return error.Unexpected;
    if (so_error != 0) return connectErrno(@fromBackingInt(@intCast(so_error)));
    setNonblocking(fd, false) catch return error.Unexpected;
    addr_len = @sizeOf(PosixAddress);
    if (errnoOf(posix.system.getsockname(fd, &storage.any, &addr_len)) != .SUCCESS) return error.Unexpected;
    return .{ .handle = fd, .address = Threaded.addressFromPosix(&storage) };
}

/// `poll` with no timeout: whether `fd` is writable (or in error) now.
fn isWritable(fd: posix.fd_t) bool {
    var pfd = [1]posix.pollfd{.{ .fd = fd, .events = posix.POLL.OUT, .revents = 0 }};
    const rc = posix.system.poll(&pfd, 1, 0);
    return errnoOf(rc) == .SUCCESS and rc == 1;
}

fn operate(userdata: ?*anyopaque, operation: Io.Operation) Io.Cancelable!Io.Operation.Result {
    const self = from(userdata);
    switch (operation) {
        .net_read => |o| return .{ .net_read = self.netRead(o.socket_handle, o.data, o.control) catch |err| switch (err) {
            error.Canceled => |e| return e,
            else => |e| e,
        } },
        .net_write => |o| return .{ .net_write = self.netWrite(o.socket_handle, o.header, o.data, o.splat, o.control) catch |err| switch (err) {
            error.Canceled => |e| return e,
            else => |e| e,
        } },
        else => return self.base.operate(userdata, operation),
    }
}

const max_iovecs = Threaded.max_iovecs_len;

fn netRead(self: *CoIo, fd: net.Socket.Handle, data: [][]u8, control: []u8) net.Stream.Reader.Error!net.Stream.ReadResult {
    const caller = Caller.get();
    try netCheck(caller);
    var iovecs: [max_iovecs]posix.iovec = undefined;
    var n: usize = 0;
    for (data) |buf| {
        if (n == iovecs.len) break;
        if (buf.len != 0) {
            iovecs[n] = .{ .base = buf.ptr, .len = buf.len };
            n += 1;
        }
    }
    var msg: posix.msghdr = .{
        .name = null,
        .namelen = 0,
        .iov = &iovecs,
        .iovlen = @intCast(n),
        .control = control.ptr,
        .controllen = @intCast(control.len),
        .flags = 0,
    };
    const flags: u32 = posix.MSG.DONTWAIT |
        @as(u32, if (@hasDecl(posix.MSG, "CMSG_CLOEXEC")) posix.MSG.CMSG_CLOEXEC else 0);
    while (true) {
        const rc = posix.system.recvmsg(fd, &msg, flags);
        switch (errnoOf(rc)) {
            .SUCCESS => return .{
                .data_len = @intCast(rc),
                .control_len = msg.controllen,
                .control_truncated = (msg.flags & posix.MSG.CTRUNC) != 0,
            },
            .INTR => continue,
            .AGAIN => try self.waitFd(caller, fd, c.CORO_READABLE, -1),
            .NOBUFS, .NOMEM => return error.SystemResources,
            .NOTCONN, .PIPE => return error.SocketUnconnected,
            .CONNRESET => return error.ConnectionResetByPeer,
            .TIMEDOUT => return error.ConnectionTimedOut,
            .NETDOWN => return error.NetworkDown,
            .INVAL, .FAULT, .BADF => |e| return Threaded.errnoBug(e),
            else => |e| return posix.unexpectedErrno(e),
        }
    }
}

fn addBuf(v: []posix.iovec_const, i: *@FieldType(posix.msghdr_const, "iovlen"), bytes: []const u8) void {
    if (bytes.len == 0 or i.* == v.len) return;
    v[i.*] = .{ .base = bytes.ptr, .len = bytes.len };
    i.* += 1;
}

fn netWrite(
    self: *CoIo,
    fd: net.Socket.Handle,
    header: []const u8,
    data: []const []const u8,
    splat: usize,
    control: []const u8,
) net.Stream.Writer.Error!usize {
    const caller = Caller.get();
    try netCheck(caller);
    var iovecs: [max_iovecs]posix.iovec_const = undefined;
    var msg: posix.msghdr_const = .{
        .name = null,
        .namelen = 0,
        .iov = &iovecs,
        .iovlen = 0,
        .control = if (control.len == 0) null else @constCast(control.ptr),
        .controllen = @intCast(control.len),
        .flags = 0,
    };
    addBuf(&iovecs, &msg.iovlen, header);
    for (data[0 .. data.len - 1]) |bytes| addBuf(&iovecs, &msg.iovlen, bytes);
    const pattern = data[data.len - 1];
    // As Threaded's netWritePosix: a one-byte pattern splatted goes
    // through a small buffer, a longer one is repeated in the vector.
    var splat_buffer: [Threaded.splat_buffer_size]u8 = undefined;
    if (iovecs.len - msg.iovlen != 0) switch (splat) {
        0 => {},
        1 => addBuf(&iovecs, &msg.iovlen, pattern),
        else => switch (pattern.len) {
            0 => {},
            1 => {
                const buf = splat_buffer[0..@min(splat_buffer.len, splat)];
                @memset(buf, pattern[0]);
                addBuf(&iovecs, &msg.iovlen, buf);
                var remaining = splat - buf.len;
                while (remaining > splat_buffer.len and iovecs.len - msg.iovlen != 0) {
                    addBuf(&iovecs, &msg.iovlen, &splat_buffer);
                    remaining -= splat_buffer.len;
                }
                addBuf(&iovecs, &msg.iovlen, splat_buffer[0..@min(remaining, splat_buffer.len)]);
            },
            else => for (0..@min(splat, iovecs.len - msg.iovlen)) |_| addBuf(&iovecs, &msg.iovlen, pattern),
        },
    };
    if (msg.iovlen == 0) return 0;
    const flags: u32 = posix.MSG.NOSIGNAL | posix.MSG.DONTWAIT;
    while (true) {
        const rc = posix.system.sendmsg(fd, &msg, flags);
        switch (errnoOf(rc)) {
            .SUCCESS => return @intCast(rc),
            .INTR => continue,
            .AGAIN => try self.waitFd(caller, fd, c.CORO_WRITABLE, -1),
            .ALREADY => return error.FastOpenAlreadyInProgress,
            .CONNRESET => return error.ConnectionResetByPeer,
            .NOBUFS, .NOMEM => return error.SystemResources,
            .PIPE, .NOTCONN => return error.SocketUnconnected,
            .AFNOSUPPORT => return error.AddressFamilyUnsupported,
            .HOSTUNREACH => return error.HostUnreachable,
            .NETUNREACH => return error.NetworkUnreachable,
            .TIMEDOUT => return error.ConnectionTimedOut,
            .NETDOWN => return error.NetworkDown,
            .ACCES, .BADF, .DESTADDRREQ, .FAULT, .INVAL, .ISCONN, .MSGSIZE, .NOTSOCK, .OPNOTSUPP => |e| return Threaded.errnoBug(e),
            else => |e| return posix.unexpectedErrno(e),
        }
    }
}
