//! The waits: yield, sleep, sleepUntil, waitReadable/waitWritable with
//! deadlines, now, selfId; in coroutines (they suspend) and on a plain
//! thread (they block).
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectError = std.testing.expectError;
const expect = std.testing.expect;
const ms = std.time.ns_per_ms;

const Pipe = struct {
    r: std.c.fd_t,
    w: std.c.fd_t,

    fn open() !Pipe {
        var fds: [2]std.c.fd_t = undefined;
        if (std.c.pipe(&fds) != 0) return error.NoPipe;
        return .{ .r = fds[0], .w = fds[1] };
    }

    fn close(p: Pipe) void {
        _ = std.c.close(p.r);
        _ = std.c.close(p.w);
    }
};

fn sleepsFor(ns: u64) !i64 {
    const t0 = coframe.now();
    try coframe.sleep(ns);
    return coframe.now() - t0;
}

fn sleepsUntil(deadline: i64) !i64 {
    try coframe.sleepUntil(deadline);
    return coframe.now();
}

test "sleep and sleepUntil: never early, in a coroutine and on a thread" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var p = try rt.spawn(sleepsFor, .{5 * ms});
    try expect(try p.await() >= 5 * ms);

    const deadline = coframe.now() + 3 * ms;
    var q = try rt.spawn(sleepsUntil, .{deadline});
    try expect(try q.await() >= deadline);

    // A deadline already past returns at once.
    var r = try rt.spawn(sleepsUntil, .{@as(i64, 0)});
    _ = try r.await();

    // On a plain thread they block.
    const t0 = coframe.now();
    try coframe.sleep(2 * ms);
    try expect(coframe.now() - t0 >= 2 * ms);
    try expectError(error.Invalid, coframe.sleepUntil(-2));
}

fn readOne(fd: std.c.fd_t, timeout: coframe.Timeout) !u8 {
    try coframe.waitReadable(fd, timeout);
    var b: [1]u8 = undefined;
    if (std.c.read(fd, &b, 1) != 1) return error.ReadFailed;
    return b[0];
}

fn writeLater(fd: std.c.fd_t, byte: u8) !void {
    try coframe.sleep(2 * ms);
    try coframe.waitWritable(fd, .{ .duration = 1000 * ms });
    if (std.c.write(fd, &[1]u8{byte}, 1) != 1) return error.WriteFailed;
}

/// When the wait timed out, and how long after it began.
fn timesOut(fd: std.c.fd_t, timeout: coframe.Timeout) !struct { i64, i64 } {
    const t0 = coframe.now();
    coframe.waitReadable(fd, timeout) catch |err| {
        const t = coframe.now();
        if (err == error.TimedOut) return .{ t, t - t0 };
        return err;
    };
    return error.NotTimedOut;
}

test "waitReadable/waitWritable: readiness, and deadlines (duration and absolute)" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const pipe = try Pipe.open();
    defer pipe.close();

    // Nothing to read: the deadline passes, not earlier.
    var a = try rt.spawn(timesOut, .{ pipe.r, coframe.Timeout{ .duration = 5 * ms } });
    try expect((try a.await())[1] >= 5 * ms);
    const deadline = coframe.now() + 3 * ms;
    var b = try rt.spawn(timesOut, .{ pipe.r, coframe.Timeout{ .deadline = deadline } });
    try expect((try b.await())[0] >= deadline);
    // A deadline already past only looks.
    var c = try rt.spawn(timesOut, .{ pipe.r, coframe.Timeout{ .deadline = coframe.now() } });
    _ = try c.await();

    // A writer on the other worker wakes the reader.
    var reader = try rt.spawn(readOne, .{ pipe.r, coframe.Timeout.none });
    var writer = try rt.spawn(writeLater, .{ pipe.w, @as(u8, 'z') });
    try writer.await();
    try expectEqual(@as(u8, 'z'), try reader.await());

    // On a plain thread they block in poll(2).
    const t0 = coframe.now();
    try expectError(error.TimedOut, coframe.waitReadable(pipe.r, .{ .duration = 2 * ms }));
    try expect(coframe.now() - t0 >= 2 * ms);
    try coframe.waitWritable(pipe.w, .none);
    try expectError(error.Invalid, coframe.waitReadable(-1, .none));
}

fn waitsForever(fd: std.c.fd_t, started: *util.Counter, defers: *util.Counter, errdefers: *util.Counter) !void {
    defer defers.bump();
    errdefer errdefers.bump();
    started.bump();
    try coframe.waitReadable(fd, .none);
    return error.NotCanceled;
}

test "waitReadable: a cancelled waiter gets error.Canceled and unwinds" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    const pipe = try Pipe.open();
    defer pipe.close();
    var started: util.Counter = .{};
    var defers: util.Counter = .{};
    var errdefers: util.Counter = .{};
    var p = try rt.spawn(waitsForever, .{ pipe.r, &started, &defers, &errdefers });
    try expect(started.reaches(1)); // (cancelled before it ran, it would never run)
    try p.cancel();
    try expect(defers.reaches(1));
    try expectEqual(@as(u32, 1), errdefers.get());
    try util.expectNoLeak(before);
}

fn yieldsAndCounts(turns: *util.Counter, n: u32) !void {
    for (0..n) |_| {
        turns.bump();
        try coframe.yield();
    }
}

fn identity(out: *std.atomic.Value(u64)) void {
    out.store(coframe.selfId(), .seq_cst);
}

test "yield, selfId, now, inCoroutine" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var turns: util.Counter = .{};
    var a = try rt.spawn(yieldsAndCounts, .{ &turns, 1000 });
    var b = try rt.spawn(yieldsAndCounts, .{ &turns, 1000 });
    try a.await();
    try b.await();
    try expectEqual(@as(u32, 2000), turns.get());

    var id: std.atomic.Value(u64) = .init(0);
    var p = try rt.spawn(identity, .{&id});
    const pid = p.id();
    try p.await();
    try expectEqual(pid, id.load(.seq_cst)); // a coroutine's id is its promise's
    try expectEqual(@as(u64, 0), coframe.selfId());
    try expect(!coframe.inCoroutine());
    const t0 = coframe.now();
    try expect(coframe.now() >= t0);
    try expect(coframe.deadlineIn(std.math.maxInt(u64)) == std.math.maxInt(i64));
}
