//! Mutex, Cond and Channel(T) across coroutines on two workers and plain
//! threads.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectError = std.testing.expectError;
const expect = std.testing.expect;
const ms = std.time.ns_per_ms;

const Shared = struct {
    m: coframe.Mutex,
    total: u64 = 0, // guarded by m
    inside: std.atomic.Value(u32) = .init(0), // holders right now: never above 1
    overlap: util.Counter = .{},
    threads: [8]std.atomic.Value(std.Thread.Id) = @splat(.init(0)),
};

fn adder(s: *Shared, who: usize, rounds: u32) !void {
    s.threads[who].store(std.Thread.getCurrentId(), .seq_cst);
    for (0..rounds) |_| {
        try s.m.lock();
        defer s.m.unlock();
        if (s.inside.fetchAdd(1, .seq_cst) != 0) s.overlap.bump();
        const t = s.total;
        try coframe.yield(); // held across a suspension: others queue up
        s.total = t + 1;
        _ = s.inside.fetchSub(1, .seq_cst);
    }
}

test "Mutex: held across suspensions by coroutines on two workers, no update lost" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var s: Shared = .{ .m = try .init() };
    defer s.m.deinit();
    const rounds = util.rounds(500, 50);
    var ps: [8]coframe.PromiseOf(adder) = undefined;
    for (&ps, 0..) |*p, i| p.* = try rt.spawn(adder, .{ &s, i, rounds });
    for (&ps) |*p| try p.await();
    try expectEqual(@as(u64, 8 * rounds), s.total);
    try expectEqual(@as(u32, 0), s.overlap.get());
    // Spawns are spread over the workers: two threads ran them.
    var distinct: u32 = 1;
    for (s.threads[1..]) |*t| {
        if (t.load(.seq_cst) != s.threads[0].load(.seq_cst)) distinct = 2;
    }
    try expectEqual(@as(u32, 2), distinct);
}

fn holdUntil(m: coframe.Mutex, gate: coframe.Channel(u8), held: *util.Counter) !void {
    try m.lock();
    defer m.unlock();
    held.bump();
    _ = try gate.recv();
}

test "Mutex: tryLock, timedLock, a second lock by its owner" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var m = try coframe.Mutex.init();
    defer m.deinit();

    try expect(m.tryLock()); // this thread holds it
    try expect(!m.tryLock()); // held (by anyone: the caller too)
    try expectError(error.State, m.lock()); // its owner locking again
    m.unlock();

    var gate = try coframe.Channel(u8).init(1);
    defer gate.deinit();
    var held: util.Counter = .{};
    var p = try rt.spawn(holdUntil, .{ m, gate, &held });
    try expect(held.reaches(1));
    try expect(!m.tryLock());
    try expectError(error.TimedOut, m.timedLock(.{ .duration = 2 * ms }));
    try gate.send(0);
    try m.lock(); // waits for the coroutine's unlock
    m.unlock();
    try p.await();
}

fn producer(ch: coframe.Channel(u64), from: u64, n: u64) !void {
    for (from..from + n) |v| try ch.send(v);
}

fn consumer(ch: coframe.Channel(u64), sum: *std.atomic.Value(u64), count: *util.Counter) !void {
    while (ch.recv()) |v| {
        _ = sum.fetchAdd(v, .seq_cst);
        count.bump();
    } else |err| switch (err) {
        error.Closed => {},
        else => return err,
    }
}

test "Channel: producers and consumers on two workers; close drains, then Closed" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    const before = util.frames();
    for ([_]usize{ 0, 1, 16 }) |capacity| { // 0: rendezvous
        var ch = try coframe.Channel(u64).init(capacity);
        defer ch.deinit();
        var sum: std.atomic.Value(u64) = .init(0);
        var count: util.Counter = .{};
        const n: u64 = util.rounds(2000, 200);
        var producers: [3]coframe.PromiseOf(producer) = undefined;
        var consumers: [3]coframe.PromiseOf(consumer) = undefined;
        for (&consumers) |*p| p.* = try rt.spawn(consumer, .{ ch, &sum, &count });
        for (&producers, 0..) |*p, i| p.* = try rt.spawn(producer, .{ ch, i * n, n });
        for (&producers) |*p| try p.await();
        try ch.close();
        for (&consumers) |*p| try p.await();
        const all = 3 * n;
        try expectEqual(@as(u32, @intCast(all)), count.get());
        try expectEqual(all * (all - 1) / 2, sum.load(.seq_cst)); // every item once
        try expectError(error.Closed, ch.send(1));
        try expectError(error.Closed, ch.recv());
        try expectError(error.Closed, ch.close());
    }
    try util.expectNoLeak(before);
}

const Point = struct { x: f64, y: f64, tag: [3]u8 };

test "Channel: struct items, zero-size items, timeouts, and a plain thread's blocking recv" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var ch = try coframe.Channel(Point).init(2);
    defer ch.deinit();
    try ch.send(.{ .x = 1.5, .y = -2, .tag = "abc".* });
    const got = try ch.recv();
    try expectEqual(@as(f64, 1.5), got.x);
    try std.testing.expectEqualStrings("abc", &got.tag);
    try expectError(error.TimedOut, ch.timedRecv(.{ .duration = 2 * ms }));
    try ch.send(.{ .x = 0, .y = 0, .tag = "xyz".* });
    try ch.send(.{ .x = 0, .y = 0, .tag = "xyz".* });
    try expectError(error.TimedOut, ch.timedSend(.{ .x = 0, .y = 0, .tag = "  !".* }, .{ .deadline = coframe.now() + 2 * ms }));

    var ticks = try coframe.Channel(void).init(0);
    defer ticks.deinit();
    var p = try rt.spawn(tick, .{ticks});
    try ticks.recv(); // this thread blocks until the coroutine sends
    try p.await();
}

fn tick(ch: coframe.Channel(void)) !void {
    try coframe.sleep(ms);
    try ch.send({});
}

const Box = struct {
    m: coframe.Mutex,
    cond: coframe.Cond,
    ready: bool = false,
    value: u32 = 0,
    done: util.Counter = .{}, // waiters that returned (after their unlock)
    waiting: util.Counter = .{}, // cond.wait calls begun
};

fn waitForValue(b: *Box) !u32 {
    defer b.done.bump();
    try b.m.lock();
    defer b.m.unlock(); // also after an error of cond.wait: it took m back
    while (!b.ready) {
        b.waiting.bump();
        try b.cond.wait(b.m);
    }
    return b.value;
}

fn setValue(b: *Box, v: u32) !void {
    try coframe.sleep(2 * ms);
    try b.m.lock();
    defer b.m.unlock();
    b.value = v;
    b.ready = true;
    b.cond.broadcast();
}

test "Cond: wait, broadcast, timedWait; a cancelled waiter unwinds holding the mutex" {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var b: Box = .{ .m = try .init(), .cond = try .init() };
    defer b.m.deinit();
    defer b.cond.deinit();

    var w1 = try rt.spawn(waitForValue, .{&b});
    var w2 = try rt.spawn(waitForValue, .{&b});
    var s = try rt.spawn(setValue, .{ &b, 17 });
    try s.await();
    try expectEqual(@as(u32, 17), try w1.await());
    try expectEqual(@as(u32, 17), try w2.await());

    // timedWait on a plain thread: TimedOut, and m is held again.
    b.ready = false;
    try b.m.lock();
    try expectError(error.TimedOut, b.cond.timedWait(b.m, .{ .duration = 2 * ms }));
    try expect(!b.m.tryLock()); // still ours
    b.m.unlock();

    // A cancelled waiter: Canceled from cond.wait, its defer unlocks.
    const waits = b.waiting.get();
    var w3 = try rt.spawn(waitForValue, .{&b});
    try expect(b.waiting.reaches(waits + 1));
    try w3.cancel();
    try expect(b.done.reaches(3)); // it unwound, and its defer unlocked m
    try expect(b.m.tryLock());
    b.m.unlock();
    b.cond.signal(); // nobody waits: nothing happens
}
