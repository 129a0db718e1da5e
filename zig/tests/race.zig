//! The race the library exists for, from Zig: tokens resumed on one
//! std.Thread while a third thread cancels the same coroutines (as
//! ffi-tests/race.c does in C). A batch of coroutines suspends; thread A
//! and thread B then walk the batch in lock step, so each coroutine gets
//! its two operations at nearly the same moment. For every coroutine its
//! `defer` runs exactly once, its `errdefer` exactly when its `suspend`
//! said error.Canceled, and no frame is left behind.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;

const Outcome = enum(u8) { pending, resumed, canceled, other };

const Slot = struct {
    cell: util.TokenCell = .{},
    promise: coframe.PromiseOf(body) = undefined,
    defers: std.atomic.Value(u32) = .init(0),
    errdefers: std.atomic.Value(u32) = .init(0),
    outcome: std.atomic.Value(Outcome) = .init(.pending),
    token: coframe.Token = undefined,
    results: [2]?coframe.Error = .{ null, null }, // what A's and B's calls said
};

fn body(s: *Slot, suspended: *util.Counter) !void {
    defer _ = s.defers.fetchAdd(1, .seq_cst);
    errdefer _ = s.errdefers.fetchAdd(1, .seq_cst);
    const Park = struct {
        fn park(ctx: struct { *Slot, *util.Counter }, token: coframe.Token) void {
            ctx[0].cell.put(token);
            ctx[1].bump();
        }
    };
    coframe.@"suspend"(.{ s, suspended }, Park.park) catch |err| {
        s.outcome.store(if (err == error.Canceled) .canceled else .other, .seq_cst);
        return err;
    };
    s.outcome.store(.resumed, .seq_cst);
}

const Op = enum { resume_token, cancel_token, cancel_promise };

/// Waits (spinning, then yielding the CPU) until `pos` reaches `want`.
fn waitFor(pos: *std.atomic.Value(u32), want: u32) void {
    var spins: u32 = 0;
    while (pos.load(.acquire) < want) {
        spins += 1;
        if (spins < 64) std.atomic.spinLoopHint() else std.Thread.yield() catch {};
    }
}

const Shared = struct {
    slots: []Slot,
    batch: std.atomic.Value(u32) = .init(0), // batches started
    pos: [2]std.atomic.Value(u32) = .{ .init(0), .init(0) }, // A's and B's place in it
    batches: u32,
};

/// Thread `me` (0: A, 1: B) does `op` on every slot of every batch, never
/// more than one slot ahead of the other thread.
fn racer(sh: *Shared, me: u1, op: Op) void {
    var seen: u32 = 0;
    while (seen < sh.batches) {
        waitFor(&sh.batch, seen + 1);
        seen += 1;
        for (sh.slots, 0..) |*s, i| {
            waitFor(&sh.pos[1 - me], @intCast(i)); // lock step
            const r = switch (op) {
                .resume_token => s.token.@"resume"(),
                .cancel_token => s.token.cancel(),
                .cancel_promise => s.promise.cancel(),
            };
            s.results[me] = if (r) |_| null else |err| err;
            sh.pos[me].store(@intCast(i + 1), .release);
        }
    }
}

const Totals = struct { resumed: u32 = 0, canceled: u32 = 0, ok: [2]u32 = .{ 0, 0 }, stale: [2]u32 = .{ 0, 0 } };

fn race(a: Op, b: Op, batches: u32, batch_size: u32, workers: u32) !Totals {
    var rt = try coframe.Runtime.init(.{ .workers = workers });
    defer rt.deinit();
    const slots = try std.testing.allocator.alloc(Slot, batch_size);
    defer std.testing.allocator.free(slots);
    var sh: Shared = .{ .slots = slots, .batches = batches };
    const ta = try std.Thread.spawn(.{}, racer, .{ &sh, 0, a });
    const tb = try std.Thread.spawn(.{}, racer, .{ &sh, 1, b });
    defer {
        ta.join();
        tb.join();
    }
    var totals: Totals = .{};
    for (0..batches) |_| {
        var suspended: util.Counter = .{};
        for (slots) |*s| {
            s.* = .{};
            s.promise = try rt.spawn(body, .{ s, &suspended });
        }
        if (!suspended.reaches(batch_size)) return error.NeverSuspended;
        for (slots) |*s| s.token = s.cell.take().?;
        sh.pos[0].store(0, .release);
        sh.pos[1].store(0, .release);
        _ = sh.batch.fetchAdd(1, .release); // go
        waitFor(&sh.pos[0], batch_size);
        waitFor(&sh.pos[1], batch_size);
        for (slots) |*s| {
            if (a != .cancel_promise and b != .cancel_promise) {
                // The promise is still ours: await says how it ended.
                if (s.promise.await()) |_| {} else |err| try expectEqual(error.Canceled, err);
            }
            const deadline = coframe.now() + 10 * std.time.ns_per_s;
            while (s.defers.load(.seq_cst) == 0 and coframe.now() < deadline) std.Thread.yield() catch {};
            // Exactly once each, and the errdefer exactly for a cancelled body.
            try expectEqual(@as(u32, 1), s.defers.load(.seq_cst));
            const outcome = s.outcome.load(.seq_cst);
            try std.testing.expect(outcome == .resumed or outcome == .canceled);
            try expectEqual(@as(u32, @intFromBool(outcome == .canceled)), s.errdefers.load(.seq_cst));
            switch (outcome) {
                .resumed => totals.resumed += 1,
                .canceled => totals.canceled += 1,
                else => unreachable,
            }
            for (s.results, 0..) |r, who| {
                if (r) |err| {
                    try expectEqual(error.Stale, err);
                    totals.stale[who] += 1;
                } else totals.ok[who] += 1;
            }
        }
    }
    return totals;
}

test "race: Token.resume on thread A against Promise.cancel on thread B" {
    const before = util.frames();
    const batches = util.rounds(100, 10);
    const size = 100;
    for ([_]u32{ 1, 2 }) |workers| {
        const t = try race(.resume_token, .cancel_promise, batches, size, workers);
        // Two references, two consumers: both calls always succeed.
        try expectEqual(batches * size, t.ok[0]);
        try expectEqual(batches * size, t.ok[1]);
        try expectEqual(batches * size, t.resumed + t.canceled);
    }
    try util.expectNoLeak(before);
}

test "race: Token.resume on thread A against Token.cancel of the same token on thread B" {
    const before = util.frames();
    const batches = util.rounds(100, 10);
    const size = 100;
    const t = try race(.resume_token, .cancel_token, batches, size, 2);
    // One reference, two consumers: exactly one wins, the other gets
    // error.Stale, and the body saw the winner's verdict.
    try expectEqual(batches * size, t.ok[0] + t.ok[1]);
    try expectEqual(batches * size, t.stale[0] + t.stale[1]);
    try expectEqual(t.ok[0], t.resumed);
    try expectEqual(t.ok[1], t.canceled);
    try util.expectNoLeak(before);
}
