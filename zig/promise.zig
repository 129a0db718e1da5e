//! `Promise(T)`: the async reference of a spawned coroutine, and where its
//! result waits for the awaiter.
//!
//! The C entry returns one pointer-sized value, and a frame is freed as
//! soon as it is awaited, so a result cannot be read out of the frame.
//! A result that fits in a `usize` (with no stricter alignment) travels in
//! that return value: no memory. A larger one goes into a result slot
//! taken at spawn and released by both sides, the frame (after its body
//! returned) and the promise (once consumed). Slots come from a pool per
//! result type and are never freed, only reused, and each use has its
//! own generation: a copy of a consumed promise, or a promise whose frame
//! a runtime's shutdown freed, can only release a slot of its own
//! generation, never someone else's (the library's own rule for stale
//! handles, docs/ZIG.md).
const std = @import("std");
const coframe = @import("coframe.zig");
const c = coframe.c;
const Error = coframe.Error;

/// Whether a `T` result travels in the entry's return value.
pub fn inlineResult(comptime T: type) bool {
    return @sizeOf(T) <= @sizeOf(usize) and @alignOf(T) <= @alignOf(usize);
}

pub fn encode(comptime T: type, value: T) ?*anyopaque {
    if (@sizeOf(T) == 0) return null;
    var word: usize = 0;
    @memcpy(std.mem.asBytes(&word)[0..@sizeOf(T)], std.mem.asBytes(&value));
    return @ptrFromInt(word);
}

pub fn decode(comptime T: type, ptr: ?*anyopaque) T {
    var value: T = undefined;
    if (@sizeOf(T) == 0) return value;
    const word: usize = @intFromPtr(ptr);
    @memcpy(std.mem.asBytes(&value), std.mem.asBytes(&word)[0..@sizeOf(T)]);
    return value;
}

/// What `await` returns for a body returning `T`: the body's own error
/// set (if `T` is an error union) merged with `coframe.Error`.
pub fn AwaitResult(comptime T: type) type {
    return switch (@typeInfo(T)) {
        .error_union => |eu| (eu.error_set || Error)!eu.payload,
        else => Error!T,
    };
}

/// The result slot of one coroutine whose result is larger than a `usize`.
fn ResultSlot(comptime T: type) type {
    return struct {
        const Slot = @This();

        /// gen << 2 | PROMISE | FRAME: which sides still hold this use.
        state: std.atomic.Value(u64),
        next_free: ?*Slot,
        /// Every slot ever made, so none is ever unreachable (leak checkers).
        next_all: ?*Slot,
        value: T,

        const FRAME: u64 = 1;
        const PROMISE: u64 = 2;

        var lock: std.c.pthread_mutex_t = std.c.PTHREAD_MUTEX_INITIALIZER;
        var free_list: ?*Slot = null;
        var all: ?*Slot = null;

        pub const Taken = struct { slot: *Slot, gen: u64 };

        /// A slot held by both sides, and its generation.
        pub fn acquire() Error!Taken {
            _ = std.c.pthread_mutex_lock(&lock);
            const reused = free_list;
            if (reused) |s| free_list = s.next_free;
            _ = std.c.pthread_mutex_unlock(&lock);
            const s = reused orelse blk: {
                const fresh = std.heap.c_allocator.create(Slot) catch return error.OutOfMemory;
                fresh.* = .{ .state = .init(0), .next_free = null, .next_all = null, .value = undefined };
                _ = std.c.pthread_mutex_lock(&lock);
                fresh.next_all = all;
                all = fresh;
                _ = std.c.pthread_mutex_unlock(&lock);
                break :blk fresh;
            };
            const gen = s.state.load(.acquire) >> 2;
            s.state.store(gen << 2 | PROMISE | FRAME, .release);
            return .{ .slot = s, .gen = gen };
        }

        /// The frame's side (its env_drop): exactly once per use.
        pub fn releaseFrame(s: *Slot) void {
            const old = s.state.fetchAnd(~FRAME, .acq_rel);
            std.debug.assert(old & FRAME != 0);
            if (old & PROMISE == 0) s.recycle(old >> 2);
        }

        /// The promise's side: only if `gen` is still this slot's use and
        /// its promise side has not let go yet; else nothing.
        pub fn releasePromise(s: *Slot, gen: u64) void {
            var old = s.state.load(.acquire);
            while (old >> 2 == gen and old & PROMISE != 0) {
                old = s.state.cmpxchgWeak(old, old & ~PROMISE, .acq_rel, .acquire) orelse {
                    if (old & FRAME == 0) s.recycle(gen);
                    return;
                };
            }
        }

        fn recycle(s: *Slot, gen: u64) void {
            s.value = undefined;
            s.state.store((gen + 1) << 2, .release);
            _ = std.c.pthread_mutex_lock(&lock);
            s.next_free = free_list;
            free_list = s;
            _ = std.c.pthread_mutex_unlock(&lock);
        }
    };
}

/// The async reference of a coroutine whose body returns `T`: consumed by
/// exactly one `await`, `cancel` or `detach`. It is one reference: keep it
/// in one variable (its methods take a pointer and mark it consumed); a
/// copy consumed a second time answers `error.Stale`.
pub fn Promise(comptime T: type) type {
    return struct {
        const Self = @This();
        const in_place = inlineResult(T);
        pub const Slot = ResultSlot(T);

        /// Zeroed once consumed.
        handle: c.coro_promise,
        slot: if (in_place) void else *Slot,
        gen: if (in_place) void else u64,

        /// The body's return type.
        pub const Value = T;

        /// Waits for the coroutine (suspends a coroutine, blocks a plain
        /// thread) and returns what its body returned. Consumes the
        /// promise, unless it answers `LockHeld`, `State` or `Invalid`
        /// (then nothing happened: try again elsewhere, or cancel).
        ///
        /// Errors: `Canceled` (the coroutine was cancelled, or the awaiting
        /// one was: then the awaited one is cancelled too), `Stale` (this
        /// promise, or a copy, was consumed already; or its runtime shut
        /// down and freed the frame), `State` (on a worker thread outside a
        /// coroutine), `Invalid` (a coroutine awaiting itself or one of
        /// another runtime), `LockHeld`; and the body's own errors.
        pub fn await(p: *Self) AwaitResult(T) {
            if (p.handle.id == 0) return error.Stale;
            var res: ?*anyopaque = null;
            const rc = c.coro_await(p.handle, &res);
            switch (rc) {
                c.CORO_OK, c.CORO_ECANCELED, c.CORO_ESTALE => {},
                else => return coframe.errorFromCode(rc), // not consumed
            }
            p.handle = .{ .id = 0 };
            if (rc != c.CORO_OK) {
                p.releaseSlot();
                return coframe.errorFromCode(rc);
            }
            if (comptime in_place) return decode(T, res);
            const value = p.slot.value;
            p.releaseSlot();
            return value;
        }

        /// Cancels the coroutine and consumes the promise, without waiting
        /// for the coroutine: a body waiting in a library wait (a sleep, an
        /// fd, a lock, a channel, an await) is woken with `error.Canceled`
        /// and unwinds on its worker; one in `suspend` gets it once its
        /// token is resumed or cancelled; a running one at its next
        /// suspension point; one that never ran never runs. Its `defer`s
        /// run then, so observe them (a counter, a channel) or shut the
        /// runtime down to know they ran. Nothing, if this promise was
        /// consumed already: `defer p.cancel() catch {};` never leaves a
        /// coroutine running unwatched.
        /// Errors: `Stale` (a copy consumed it, or shutdown freed its frame).
        pub fn cancel(p: *Self) Error!void {
            if (p.handle.id == 0) return;
            const rc = c.coro_cancel_async(p.handle);
            return p.consumed(rc);
        }

        /// Lets the coroutine run to its end unwatched; its frame is freed
        /// then. Nothing, if this promise was consumed already.
        /// Errors: `Stale`.
        pub fn detach(p: *Self) Error!void {
            if (p.handle.id == 0) return;
            const rc = c.coro_detach(p.handle);
            return p.consumed(rc);
        }

        /// The coroutine's id (`coframe.selfId()` in it); 0 once consumed.
        pub fn id(p: Self) u64 {
            return p.handle.id;
        }

        fn consumed(p: *Self, rc: c_int) Error!void {
            if (rc == c.CORO_OK or rc == c.CORO_ESTALE) {
                p.handle = .{ .id = 0 };
                p.releaseSlot();
            }
            return coframe.check(rc);
        }

        fn releaseSlot(p: *Self) void {
            if (comptime !in_place) p.slot.releasePromise(p.gen);
        }
    };
}
