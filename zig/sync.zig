//! Mutex, Cond and Channel(T): DESIGN section 9's objects (coro_mutex,
//! coro_cond, coro_chan). Waiting suspends a coroutine and blocks a plain
//! thread; a cancelled waiter leaves the queue at once, is never handed
//! the lock, a signal or an item, and gets `error.Canceled`.
//!
//! Each is a plain value holding the library's pointer: copy it into the
//! args of the coroutines that share it. `deinit` frees it; freeing one
//! that is held or waited on is a bug, and panics.
const std = @import("std");
const coframe = @import("coframe.zig");
const c = coframe.c;
const Error = coframe.Error;
const Timeout = coframe.Timeout;

fn mustFree(rc: c_int, comptime what: []const u8) void {
    if (rc == c.CORO_OK) return;
    const err = coframe.errorFromCode(rc);
    std.debug.panic("coframe." ++ what ++ ".deinit: {s} ({s})", .{ @errorName(err), coframe.describe(err) });
}

/// A mutex whose waiters queue in FIFO order, handed from one owner to the
/// next; it may be held across a suspension (that is its purpose). The
/// owner is the coroutine (or plain thread) that locked it.
pub const Mutex = struct {
    ptr: *c.coro_mutex,

    pub fn init() Error!Mutex {
        var out: ?*c.coro_mutex = null;
        try coframe.check(c.coro_mutex_new(&out));
        return .{ .ptr = out.? };
    }

    pub fn deinit(m: *Mutex) void {
        mustFree(c.coro_mutex_free(m.ptr), "Mutex");
        m.* = undefined;
    }

    /// Takes the mutex, waiting in line.
    /// Errors: `Canceled`, `State` (the caller holds it already; a worker
    /// thread outside a coroutine), `LockHeld`, `OutOfMemory`.
    pub fn lock(m: Mutex) Error!void {
        return coframe.check(c.coro_mutex_lock(m.ptr, -1));
    }

    /// `lock`, giving up with `error.TimedOut`.
    pub fn timedLock(m: Mutex, timeout: Timeout) Error!void {
        return coframe.check(c.coro_mutex_lock(m.ptr, timeout.toDeadline()));
    }

    /// Takes the mutex if nobody holds it (the caller included).
    pub fn tryLock(m: Mutex) bool {
        return c.coro_mutex_trylock(m.ptr) == c.CORO_OK;
    }

    /// Releases it to the first waiter still waiting. Releasing a mutex
    /// the caller does not hold is a bug, and panics.
    pub fn unlock(m: Mutex) void {
        const rc = c.coro_mutex_unlock(m.ptr);
        if (rc != c.CORO_OK) std.debug.panic("coframe.Mutex.unlock: the caller does not hold the mutex ({s})", .{
            coframe.describe(coframe.errorFromCode(rc)),
        });
    }
};

/// A condition variable over a `Mutex`.
pub const Cond = struct {
    ptr: *c.coro_cond,

    pub fn init() Error!Cond {
        var out: ?*c.coro_cond = null;
        try coframe.check(c.coro_cond_new(&out));
        return .{ .ptr = out.? };
    }

    pub fn deinit(cond: *Cond) void {
        mustFree(c.coro_cond_free(cond.ptr), "Cond");
        cond.* = undefined;
    }

    /// Releases `m` (which the caller holds), waits for a signal, and takes
    /// `m` back before it returns, on an error too: a `defer m.unlock()`
    /// written after the `lock` stays right.
    /// Errors: `Canceled`, `State` (the caller does not hold `m`),
    /// `LockHeld`, `OutOfMemory`.
    pub fn wait(cond: Cond, m: Mutex) Error!void {
        return coframe.check(c.coro_cond_wait(cond.ptr, m.ptr, -1));
    }

    /// `wait`, giving up with `error.TimedOut` (holding `m` again).
    pub fn timedWait(cond: Cond, m: Mutex, timeout: Timeout) Error!void {
        return coframe.check(c.coro_cond_wait(cond.ptr, m.ptr, timeout.toDeadline()));
    }

    /// Wakes the first waiter still waiting (or keeps the signal for one on
    /// its way into its wait).
    pub fn signal(cond: Cond) void {
        _ = c.coro_cond_signal(cond.ptr); // CORO_EINVAL only for NULL
    }

    /// Wakes every waiter.
    pub fn broadcast(cond: Cond) void {
        _ = c.coro_cond_broadcast(cond.ptr);
    }
};

/// A bounded multi-producer, multi-consumer queue of `T` values, copied
/// in and out bytewise. Capacity 0 is a rendezvous: a send waits for a
/// receiver.
pub fn Channel(comptime T: type) type {
    return struct {
        const Self = @This();
        /// The library refuses 0-byte items: a zero-size T travels as one byte.
        const item_size = @max(@sizeOf(T), 1);

        ptr: *c.coro_chan,

        /// Errors: `Invalid` (a `T` above 1 MiB), `OutOfMemory`.
        pub fn init(capacity: usize) Error!Self {
            var out: ?*c.coro_chan = null;
            try coframe.check(c.coro_chan_new(item_size, capacity, &out));
            return .{ .ptr = out.? };
        }

        /// Frees the channel and whatever items are still in it.
        pub fn deinit(ch: *Self) void {
            mustFree(c.coro_chan_free(ch.ptr), "Channel");
            ch.* = undefined;
        }

        /// Hands `item` to a waiting receiver, or queues it, or waits for room.
        /// Errors: `Closed`, `Canceled`, `LockHeld`, `State` (a worker thread
        /// outside a coroutine would wait), `OutOfMemory`.
        pub fn send(ch: Self, item: T) Error!void {
            return ch.timedSend(item, .none);
        }

        /// `send`, giving up with `error.TimedOut`.
        pub fn timedSend(ch: Self, item: T, timeout: Timeout) Error!void {
            // The library copies item_size bytes from here: the item itself
            // (no second copy on a coroutine's stack), or one byte for a
            // zero-size T.
            const bytes: *const anyopaque = if (@sizeOf(T) == 0) &@as(u8, 0) else @ptrCast(&item);
            return coframe.check(c.coro_chan_send(ch.ptr, bytes, timeout.toDeadline()));
        }

        /// The next item, waiting for one. `error.Closed` once the channel
        /// is closed and empty. Errors: as `send`.
        pub fn recv(ch: Self) Error!T {
            return ch.timedRecv(.none);
        }

        /// `recv`, giving up with `error.TimedOut`.
        pub fn timedRecv(ch: Self, timeout: Timeout) Error!T {
            var item: T = undefined;
            var byte: u8 = undefined;
            const bytes: *anyopaque = if (@sizeOf(T) == 0) &byte else @ptrCast(&item);
            try coframe.check(c.coro_chan_recv(ch.ptr, bytes, timeout.toDeadline()));
            return item;
        }

        /// Closes it: sends (waiting ones too) fail with `error.Closed`;
        /// receivers take what is left, then get `error.Closed`.
        /// Errors: `Closed` (closed already).
        pub fn close(ch: Self) Error!void {
            return coframe.check(c.coro_chan_close(ch.ptr));
        }
    };
}
