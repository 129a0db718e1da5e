//! Misuse answered with Zig errors, never undefined behaviour: stale
//! tokens, double awaits (of the same promise and of a copy, with results
//! in the return value and in a result slot), calls outside a coroutine,
//! handles after shutdown, bad arguments. And the error set's mapping.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectError = std.testing.expectError;
const expect = std.testing.expect;

fn parks(cell: *util.TokenCell) !u32 {
    try coframe.@"suspend"(cell, util.park);
    return 1;
}

test "misuse: a token resumed twice, or resumed after its cancel, is Stale" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var cell: util.TokenCell = .{};
    var p = try rt.spawn(parks, .{&cell});
    const t = cell.take().?;
    try t.@"resume"();
    try expectError(error.Stale, t.@"resume"());
    try expectError(error.Stale, t.cancel());
    try expectEqual(@as(u32, 1), try p.await());

    var q = try rt.spawn(parks, .{&cell});
    const u = cell.take().?;
    try u.cancel();
    try expectError(error.Stale, u.@"resume"());
    try expectError(error.Canceled, q.await());

    const zero: coframe.Token = .{ .handle = .{ .id = 0 } };
    try expectError(error.Invalid, zero.@"resume"());
}

fn quad() [4]u64 {
    return .{ 1, 2, 3, 4 };
}

fn one() u32 {
    return 1;
}

test "misuse: a second await, of the same promise or a copy, is Stale" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();

    var p = try rt.spawn(one, .{});
    var copy = p;
    var copy2 = p;
    try expectEqual(@as(u32, 1), try p.await());
    try expectError(error.Stale, p.await());
    try expectError(error.Stale, copy.await());
    try copy.cancel(); // that copy is marked consumed now: nothing
    try expectError(error.Stale, copy2.cancel());

    // With a result slot: the stale copy can never free the slot twice.
    var s = try rt.spawn(quad, .{});
    var scopy = s;
    var scopy2 = s;
    try expectEqual([4]u64{ 1, 2, 3, 4 }, try s.await());
    var reuse = try rt.spawn(quad, .{}); // likely the same slot, next generation
    try expectError(error.Stale, scopy.await());
    try expectError(error.Stale, scopy2.detach());
    try expectEqual([4]u64{ 1, 2, 3, 4 }, try reuse.await());
    try util.expectNoLeak(before);
}

fn awaitsItself(out: *std.atomic.Value(i32)) !void {
    // A promise value naming the running coroutine: waiting would never end.
    var self: coframe.PromiseOf(one) = .{ .handle = .{ .id = coframe.selfId() }, .slot = {}, .gen = {} };
    if (self.await()) |_| {} else |err| out.store(coframe.codeFromError(err), .seq_cst);
}

test "misuse: outside a coroutine, and a coroutine awaiting itself" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    try expectError(error.State, coframe.yield());
    var cell: util.TokenCell = .{};
    try expectError(error.State, coframe.@"suspend"(&cell, util.park));
    var rc: std.atomic.Value(i32) = .init(0);
    var p = try rt.spawn(awaitsItself, .{&rc});
    try p.await();
    try expectEqual(coframe.c.CORO_EINVAL, rc.load(.seq_cst));
}

test "misuse: handles after shutdown answer Stale and Shutdown" {
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    var cell: util.TokenCell = .{};
    var p = try rt.spawn(parks, .{&cell});
    const t = cell.take().?;
    try rt.shutdown();
    try expectError(error.Stale, t.@"resume"());
    try expectError(error.Stale, p.await());
    try expectError(error.Shutdown, rt.spawn(one, .{}));
    try expectError(error.Shutdown, rt.shutdown());
}

test "misuse: bad arguments" {
    try expectError(error.Invalid, coframe.Runtime.init(.{ .workers = 5000 }));
    try expectError(error.Invalid, coframe.Channel([2 << 20]u8).init(1));
    try expectError(error.Invalid, coframe.sleepUntil(-5));
}

test "errors: every code maps to its error and back; the library names each" {
    const codes = [_]c_int{
        coframe.c.CORO_EINVAL,    coframe.c.CORO_ESTALE, coframe.c.CORO_ESTATE,    coframe.c.CORO_ECANCELED,
        coframe.c.CORO_ETIMEDOUT, coframe.c.CORO_ENOMEM, coframe.c.CORO_ELOCKHELD, coframe.c.CORO_ESHUTDOWN,
        coframe.c.CORO_EIO,       coframe.c.CORO_EBUSY,  coframe.c.CORO_ECLOSED,
    };
    for (codes) |code| {
        const err = coframe.errorFromCode(code);
        try expectEqual(code, coframe.codeFromError(err));
        try expect(coframe.describe(err).len > 0);
    }
    try expectEqual(error.Unexpected, coframe.errorFromCode(-1000));
    try coframe.check(0);
    try expectError(error.Canceled, coframe.check(coframe.c.CORO_ECANCELED));
    try expectEqual(@as(usize, 0), coframe.version.major);
}
