//! Cancellation: a cancelled body gets error.Canceled from its suspension
//! point, `try` unwinds it, and its own `defer` and `errdefer` run once.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectError = std.testing.expectError;

const Seen = struct {
    defers: util.Counter = .{},
    errdefers: util.Counter = .{},
    continued: util.Counter = .{}, // bodies that went on past their suspension
    canceled: util.Counter = .{}, // bodies whose suspension said error.Canceled
    started: util.Counter = .{}, // bodies about to wait (a cancel after this reaches the wait)
    cell: util.TokenCell = .{},
};

fn parked(seen: *Seen) !u32 {
    defer seen.defers.bump();
    errdefer seen.errdefers.bump();
    coframe.@"suspend"(&seen.cell, util.park) catch |err| {
        if (err == error.Canceled) seen.canceled.bump();
        return err;
    };
    seen.continued.bump();
    return 7;
}

test "cancel: Token.cancel runs the body's defer and errdefer once; await says Canceled" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var seen: Seen = .{};
    var p = try rt.spawn(parked, .{&seen});
    const token = seen.cell.take() orelse return error.NeverSuspended;
    try token.cancel();
    try expectError(error.Canceled, p.await());
    try expectEqual(@as(u32, 1), seen.defers.get());
    try expectEqual(@as(u32, 1), seen.errdefers.get());
    try expectEqual(@as(u32, 1), seen.canceled.get());
    try expectEqual(@as(u32, 0), seen.continued.get());
    try expectError(error.Stale, token.@"resume"()); // consumed by the cancel
    try util.expectNoLeak(before);
}

test "cancel: a resumed body runs its defer, not its errdefer" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var seen: Seen = .{};
    var p = try rt.spawn(parked, .{&seen});
    const token = seen.cell.take() orelse return error.NeverSuspended;
    try token.@"resume"();
    try expectEqual(@as(u32, 7), try p.await());
    try expectEqual(@as(u32, 1), seen.defers.get());
    try expectEqual(@as(u32, 0), seen.errdefers.get());
    try expectEqual(@as(u32, 1), seen.continued.get());
}

test "cancel: Promise.cancel of a suspend: Canceled once its token is consumed" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var seen: Seen = .{};
    var p = try rt.spawn(parked, .{&seen});
    const token = seen.cell.take() orelse return error.NeverSuspended;
    try p.cancel();
    try expectEqual(@as(u64, 0), p.id()); // consumed
    try p.cancel(); // again: nothing (so `defer p.cancel() catch {}` is safe)
    try expectError(error.Stale, p.await());
    // The suspension is held by the token: the body waits for it.
    try expectEqual(@as(u32, 0), seen.defers.get());
    try token.@"resume"(); // on a cancelled coroutine: the body gets Canceled
    try std.testing.expect(seen.defers.reaches(1));
    try std.testing.expect(seen.errdefers.reaches(1));
    try expectEqual(@as(u32, 1), seen.canceled.get());
    try expectEqual(@as(u32, 0), seen.continued.get());
    try util.expectNoLeak(before);
}

fn blockedOn(ch: coframe.Channel(u32), seen: *Seen) !u32 {
    defer seen.defers.bump();
    errdefer seen.errdefers.bump();
    seen.started.bump();
    const v = ch.recv() catch |err| {
        if (err == error.Canceled) seen.canceled.bump();
        return err;
    };
    seen.continued.bump();
    return v;
}

fn sleeper(seen: *Seen) !void {
    defer seen.defers.bump();
    errdefer seen.errdefers.bump();
    seen.started.bump();
    coframe.sleep(3600 * std.time.ns_per_s) catch |err| {
        if (err == error.Canceled) seen.canceled.bump();
        return err;
    };
    seen.continued.bump();
}

test "cancel: Promise.cancel of bodies in library waits (a channel, a sleep)" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var ch = try coframe.Channel(u32).init(0);
    defer ch.deinit();
    var seen: Seen = .{};
    var a = try rt.spawn(blockedOn, .{ ch, &seen });
    var b = try rt.spawn(sleeper, .{&seen});
    // A coroutine cancelled before it first ran never runs its body (nor
    // its defers): cancel these once they are on their way into the wait.
    try std.testing.expect(seen.started.reaches(2));
    try a.cancel();
    try b.cancel();
    try std.testing.expect(seen.defers.reaches(2));
    try std.testing.expect(seen.errdefers.reaches(2));
    try expectEqual(@as(u32, 0), seen.continued.get());
    // No item was taken by the cancelled receiver: a send now finds nobody.
    try expectError(error.TimedOut, ch.timedSend(1, .{ .duration = std.time.ns_per_ms }));
    try util.expectNoLeak(before);
}

fn awaiter(rt: coframe.Runtime, seen: *Seen) !u32 {
    defer seen.defers.bump();
    errdefer seen.errdefers.bump();
    var child = try rt.spawn(parked, .{seen});
    return try child.await();
}

test "cancel: cancelling an awaiter cancels the child it awaits (down, not up)" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var seen: Seen = .{};
    var p = try rt.spawn(awaiter, .{ rt, &seen });
    const token = seen.cell.take() orelse return error.NeverSuspended; // the child's
    try p.cancel();
    // The awaiter, woken with error.Canceled on its worker, cancels the
    // child before its own defer runs; then the child's token is resumed.
    try std.testing.expect(seen.defers.reaches(1));
    try token.@"resume"(); // the child was cancelled with its awaiter
    try std.testing.expect(seen.defers.reaches(2)); // the awaiter's and the child's
    try std.testing.expect(seen.errdefers.reaches(2));
    try expectEqual(@as(u32, 0), seen.continued.get());
    try util.expectNoLeak(before);
}

fn counted(ch: coframe.Channel(u32), done: *util.Counter) !void {
    const v = try ch.recv();
    if (v == 99) done.bump();
}

test "detach: the coroutine runs on unwatched and its frame is freed" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var ch = try coframe.Channel(u32).init(0);
    defer ch.deinit();
    var done: util.Counter = .{};
    var p = try rt.spawn(counted, .{ ch, &done });
    try p.detach();
    try p.detach(); // consumed: nothing
    try expectError(error.Stale, p.await());
    try ch.send(99); // the detached body takes it
    try std.testing.expect(done.reaches(1));
    try util.expectNoLeak(before);
}

test "shutdown: Runtime.deinit cancels live bodies and their defers run" {
    const before = util.frames();
    var seen: Seen = .{};
    var ch = try coframe.Channel(u32).init(0);
    defer ch.deinit();
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    var ps: [6]coframe.PromiseOf(blockedOn) = undefined;
    for (&ps) |*p| p.* = try rt.spawn(blockedOn, .{ ch, &seen });
    var q = try rt.spawn(sleeper, .{&seen});
    try std.testing.expect(seen.started.reaches(7));
    rt.deinit();
    try expectEqual(@as(u32, 7), seen.defers.get());
    try expectEqual(@as(u32, 7), seen.errdefers.get());
    try expectEqual(@as(u32, 0), seen.continued.get());
    // Their frames are gone: the promises answer Stale.
    for (&ps) |*p| try expectError(error.Stale, p.await());
    try expectError(error.Stale, q.cancel());
    try util.expectNoLeak(before);
}
