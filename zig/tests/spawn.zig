//! spawn copies the args tuple; await gives values and errors of every size.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectError = std.testing.expectError;

fn sumLater(gate: coframe.Channel(u8), a: i64, b: i64) !i64 {
    _ = try gate.recv(); // the caller changes its tuple meanwhile
    return a + b;
}

test "spawn: the frame keeps its own copy of the args tuple" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var gate = try coframe.Channel(u8).init(1);
    defer gate.deinit();

    var args: struct { coframe.Channel(u8), i64, i64 } = .{ gate, 40, 2 };
    var p = try rt.spawn(sumLater, args);
    defer p.cancel() catch {};
    args[1] = 1000; // after spawn: the body must not see it
    args[2] = 1000;
    try gate.send(0);
    try expectEqual(@as(i64, 42), try p.await());
    try expectEqual(@as(i64, 1000), args[1]);
}

const Big = struct { bytes: [1024]u8, sum: u32 };

fn sumBig(gate: coframe.Channel(u8), big: Big) !u32 {
    _ = try gate.recv();
    var s: u32 = 0;
    for (big.bytes) |b| s += b;
    return s + big.sum;
}

test "spawn: a 1 KiB argument is copied whole" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var gate = try coframe.Channel(u8).init(1);
    defer gate.deinit();

    var big: Big = .{ .bytes = @splat(1), .sum = 7 };
    var p = try rt.spawn(sumBig, .{ gate, big });
    defer p.cancel() catch {};
    big.bytes = @splat(0);
    big.sum = 0;
    try gate.send(0);
    try expectEqual(@as(u32, 1024 + 7), try p.await());
}

fn nothing() void {}
fn byte(x: u8) u8 {
    return x +% 1;
}
fn word(x: u64) u64 {
    return x * 3;
}
fn maybe(x: u32) ?u32 {
    return if (x == 0) null else x;
}
fn flag(x: bool) bool {
    return !x;
}
fn pointer(x: *u32) *u32 {
    return x;
}

const Oops = error{Oops};
fn smallOk(x: u32) Oops!u32 {
    return x + 1;
}
fn smallErr(x: u32) Oops!u32 {
    _ = x;
    return error.Oops;
}
fn inferred(fail: bool) !void {
    if (fail) return error.Inferred;
}

const Quad = [4]u64;
fn quad(x: u64) Quad {
    return .{ x, x + 1, x + 2, x + 3 };
}
fn wide(x: u64) u128 {
    return @as(u128, x) << 64 | x;
}
fn text(fail: bool) anyerror![]const u8 {
    if (fail) return error.NoText;
    return "a slice is wider than a word";
}

test "await: results of every size (in the entry's return value, or in a result slot)" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();

    var p0 = try rt.spawn(nothing, .{});
    try p0.await();
    var p1 = try rt.spawn(byte, .{@as(u8, 255)});
    try expectEqual(@as(u8, 0), try p1.await());
    var p2 = try rt.spawn(word, .{@as(u64, 1 << 40)});
    try expectEqual(@as(u64, 3 << 40), try p2.await());
    var p3 = try rt.spawn(maybe, .{@as(u32, 0)});
    try expectEqual(@as(?u32, null), try p3.await());
    var p4 = try rt.spawn(maybe, .{@as(u32, 9)});
    try expectEqual(@as(?u32, 9), try p4.await());
    var p5 = try rt.spawn(flag, .{false});
    try expectEqual(true, try p5.await());
    var cell: u32 = 5;
    var p6 = try rt.spawn(pointer, .{&cell});
    try expectEqual(&cell, try p6.await());

    // Larger than a word: a result slot.
    var p7 = try rt.spawn(quad, .{@as(u64, 10)});
    try expectEqual(Quad{ 10, 11, 12, 13 }, try p7.await());
    var p8 = try rt.spawn(wide, .{@as(u64, 0xabcdef)});
    try expectEqual(@as(u128, 0xabcdef) << 64 | 0xabcdef, try p8.await());
    var p9 = try rt.spawn(text, .{false});
    try std.testing.expectEqualStrings("a slice is wider than a word", try p9.await());
}

test "await: the body's errors come through, merged with coframe.Error" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();

    var ok = try rt.spawn(smallOk, .{@as(u32, 1)});
    try expectEqual(@as(u32, 2), try ok.await());
    var bad = try rt.spawn(smallErr, .{@as(u32, 1)});
    const r = bad.await();
    try expectError(error.Oops, r);
    // The merged set: a switch over it names both kinds.
    if (r) |_| unreachable else |err| switch (err) {
        error.Oops => {},
        error.Canceled, error.Stale => unreachable,
        else => unreachable,
    }
    var inf_ok = try rt.spawn(inferred, .{false});
    try inf_ok.await();
    var inf_bad = try rt.spawn(inferred, .{true});
    try expectError(error.Inferred, inf_bad.await());
    var slot_bad = try rt.spawn(text, .{true});
    try expectError(error.NoText, slot_bad.await());
}

fn spawnsChild(rt: coframe.Runtime, x: u64) !u64 {
    var child = try rt.spawn(word, .{x});
    return try child.await(); // suspends this coroutine, not its worker
}

test "await in a coroutine: a coroutine spawns and awaits another" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var p = try rt.spawn(spawnsChild, .{ rt, @as(u64, 14) });
    try expectEqual(@as(u64, 42), try p.await());
}

fn yields(done: *util.Counter) !void {
    // A migratable body may change workers at a suspension point.
    for (0..100) |_| try coframe.yield();
    done.bump();
}

test "spawnOptions: migratable bodies run and finish" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var done: util.Counter = .{};
    var ps: [8]coframe.PromiseOf(yields) = undefined;
    for (&ps) |*p| p.* = try rt.spawnOptions(.{ .migratable = true }, yields, .{&done});
    for (&ps) |*p| try p.await();
    try expectEqual(@as(u32, 8), done.get());
    try util.expectNoLeak(before);
}

fn bigResultLater(gate: coframe.Channel(u8)) !Quad {
    _ = try gate.recv();
    return .{ 1, 2, 3, 4 };
}

test "result slots: many in flight, reused, and none leaks" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    var gate = try coframe.Channel(u8).init(64);
    defer gate.deinit();
    for (0..util.rounds(50, 5)) |_| {
        var ps: [32]coframe.PromiseOf(bigResultLater) = undefined;
        for (&ps) |*p| p.* = try rt.spawn(bigResultLater, .{gate});
        for (ps) |_| try gate.send(0);
        for (&ps, 0..) |*p, i| {
            if (i % 4 == 3) {
                try p.detach(); // the frame alone gives its slot back
            } else {
                try expectEqual(Quad{ 1, 2, 3, 4 }, try p.await());
            }
        }
    }
    try util.expectNoLeak(before);
}
