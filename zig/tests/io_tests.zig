//! Tests of `coframe.Io` beyond io_program.zig: the paths a std.Io program
//! seldom takes, and the races of docs/ZIG-IO.md's rules.
//!
//!   threads     futex waits and wakes between plain threads and tasks,
//!               both ways; timeouts on both
//!   coroutine   Io calls from a coroutine that coframe.Io did not spawn
//!               (coro_spawn through the C API): they suspend it
//!   group       a group cancelled before its tasks ran: each task runs
//!               and its first cancelation point answers error.Canceled
//!   wake-cancel an `Io.Mutex` under contention while its waiters are
//!               cancelled at random: no wake-up is lost (rule 3), the
//!               count is exact
//!   race        cancel racing the task's end, 20,000 times: every future
//!               settles once, no task is left running
//!   refused     connect to a port nobody listens on: ConnectionRefused,
//!               as on std.Io.Threaded
//!   sleep       a sleeping task is cancelled within milliseconds
//!   connect     a connect with a timeout to a listener whose backlog is
//!               full answers error.Timeout after it (std.Io.Threaded
//!               0.17.1 panics on a connect timeout: coframe.Io only)
const std = @import("std");
const Io = std.Io;
const coframe = @import("coframe");
const c = coframe.c;

const testing = std.testing;
const gpa = std.heap.c_allocator;

fn small() bool {
    return std.c.getenv("COFRAME_TEST_SMALL") != null;
}

fn withIo(workers: u32, comptime body: fn (Io) anyerror!void) !void {
    var co: coframe.Io = undefined;
    try co.init(gpa, .{ .workers = workers });
    defer co.deinit();
    try body(co.io());
    // Tasks end just after they settle their future: give them a moment.
    var spins: usize = 0;
    while (co.liveTasks() != 0 and spins < 1000) : (spins += 1) try co.io().sleep(.fromMilliseconds(1), .awake);
    try testing.expectEqual(@as(usize, 0), co.liveTasks());
}

// ------------------------------------------------------------- threads

const Flag = struct {
    word: std.atomic.Value(u32) = .init(0),

    fn waitFor(f: *Flag, io: Io, v: u32) Io.Cancelable!void {
        while (true) {
            const cur = f.word.load(.acquire);
            if (cur == v) return;
            try io.futexWait(u32, &f.word.raw, cur);
        }
    }

    fn set(f: *Flag, io: Io, v: u32) void {
        f.word.store(v, .release);
        io.futexWake(u32, &f.word.raw, std.math.maxInt(u32));
    }
};

fn bounce(io: Io, a: *Flag, b: *Flag, rounds: u32) Io.Cancelable!void {
    for (1..rounds + 1) |i| {
        try a.waitFor(io, @intCast(i));
        b.set(io, @intCast(i));
    }
}

fn threadBody(io: Io) !void {
    var a: Flag = .{};
    var b: Flag = .{};
    const rounds: u32 = if (small()) 200 else 5000;
    // A task and a plain thread (this one) wake each other.
    var task = try io.concurrent(bounce, .{ io, &a, &b, rounds });
    for (1..rounds + 1) |i| {
        a.set(io, @intCast(i));
        try b.waitFor(io, @intCast(i));
    }
    try task.await(io);

    // A plain thread of its own, blocking in futexWait, woken by a task.
    var c1: Flag = .{};
    var c2: Flag = .{};
    const t = try std.Thread.spawn(.{}, struct {
        fn run(io2: Io, x: *Flag, y: *Flag, n: u32) void {
            bounce(io2, x, y, n) catch unreachable;
        }
    }.run, .{ io, &c1, &c2, rounds });
    var task2 = try io.concurrent(struct {
        fn run(io2: Io, x: *Flag, y: *Flag, n: u32) Io.Cancelable!void {
            for (1..n + 1) |i| {
                x.set(io2, @intCast(i));
                try y.waitFor(io2, @intCast(i));
            }
        }
    }.run, .{ io, &c1, &c2, rounds });
    try task2.await(io);
    t.join();

    // Timeouts, on a thread and in a task.
    var never: Flag = .{};
    const t0 = Io.Clock.awake.now(io);
    try io.futexWaitTimeout(u32, &never.word.raw, 0, .{ .duration = .{ .raw = .fromMilliseconds(5), .clock = .awake } });
    try testing.expect(t0.durationTo(Io.Clock.awake.now(io)).toNanoseconds() >= 5 * std.time.ns_per_ms);
    var task3 = try io.concurrent(struct {
        fn run(io2: Io, f: *Flag) Io.Cancelable!i96 {
            const s = Io.Clock.awake.now(io2);
            try io2.futexWaitTimeout(u32, &f.word.raw, 0, .{ .duration = .{ .raw = .fromMilliseconds(5), .clock = .awake } });
            return s.durationTo(Io.Clock.awake.now(io2)).toNanoseconds();
        }
    }.run, .{ io, &never });
    try testing.expect(try task3.await(io) >= 5 * std.time.ns_per_ms);
}

test "futex waits and wakes between plain threads and tasks, with timeouts" {
    try withIo(2, threadBody);
}

// ----------------------------------------------------------- coroutine

const CoroEnv = struct { io: Io, slept: *std.atomic.Value(u32) };

fn coroEntry(env: ?*anyopaque) callconv(.c) ?*anyopaque {
    const e: *CoroEnv = @ptrCast(@alignCast(env));
    // Not a coframe.Io task: its waits suspend it all the same.
    e.io.sleep(.fromMilliseconds(2), .awake) catch return null;
    var m: Io.Mutex = .init;
    m.lock(e.io) catch return null;
    m.unlock(e.io);
    _ = e.slept.fetchAdd(1, .acq_rel);
    return @ptrFromInt(1);
}

fn coroutineBody(io: Io) !void {
    var co: *coframe.Io = @alignCast(@fieldParentPtr("threaded", @as(*Io.Threaded, @ptrCast(@alignCast(io.userdata)))));
    var slept: std.atomic.Value(u32) = .init(0);
    var env: CoroEnv = .{ .io = io, .slept = &slept };
    var promises: [8]c.coro_promise = undefined;
    for (&promises) |*p| try testing.expectEqual(c.CORO_OK, c.coro_spawn(co.runtime(), &coroEntry, &env, @sizeOf(CoroEnv), null, 0, p));
    for (promises) |p| {
        var res: ?*anyopaque = null;
        try testing.expectEqual(c.CORO_OK, c.coro_await(p, &res));
        try testing.expectEqual(@as(usize, 1), @intFromPtr(res));
    }
    try testing.expectEqual(@as(u32, 8), slept.load(.acquire));
}

test "Io calls from a coroutine that coframe.Io did not spawn" {
    try withIo(2, coroutineBody);
}

// --------------------------------------------------------------- group

fn firstPoint(io: Io, saw: *std.atomic.Value(u32), ran: *std.atomic.Value(u32)) Io.Cancelable!void {
    _ = ran.fetchAdd(1, .acq_rel);
    io.checkCancel() catch |err| {
        _ = saw.fetchAdd(1, .acq_rel);
        return err;
    };
}

fn groupBody(io: Io) !void {
    var saw: std.atomic.Value(u32) = .init(0);
    var ran: std.atomic.Value(u32) = .init(0);
    var g: Io.Group = .init;
    // This is a plain thread: the tasks queue on the one worker, and the
    // cancel may come before some of them ran.
    for (0..64) |_| try g.concurrent(io, firstPoint, .{ io, &saw, &ran });
    g.cancel(io);
    try testing.expectEqual(@as(u32, 64), ran.load(.acquire));
    // Those that ran before the cancel passed their point; the others saw it.
    try testing.expect(saw.load(.acquire) <= 64);
    try testing.expect(g.token.load(.acquire) == null);
}

test "a cancelled group's tasks still run, and see error.Canceled at their first point" {
    try withIo(1, groupBody);
}

// --------------------------------------------------------- wake-cancel

fn contender(io: Io, m: *Io.Mutex, total: *u64, done: *std.atomic.Value(u32), n: u32) Io.Cancelable!void {
    for (0..n) |_| {
        m.lock(io) catch |err| {
            _ = done.fetchAdd(1, .acq_rel);
            return err;
        };
        total.* += 1;
        m.unlock(io);
    }
    _ = done.fetchAdd(1, .acq_rel);
}

fn wakeCancelBody(io: Io) !void {
    const rounds: usize = if (small()) 5 else 50;
    for (0..rounds) |r| {
        var m: Io.Mutex = .init;
        var total: u64 = 0;
        var done: std.atomic.Value(u32) = .init(0);
        var futures: [8]Io.Future(Io.Cancelable!void) = undefined;
        for (&futures) |*f| f.* = try io.concurrent(contender, .{ io, &m, &total, &done, 500 });
        // Cancel every other one while the others contend.
        for (&futures, 0..) |*f, i| if ((i + r) % 2 == 0) {
            f.cancel(io) catch {};
        };
        for (&futures) |*f| f.await(io) catch {};
        // The survivors each added 500; nobody hung on a lost wake-up.
        try testing.expectEqual(@as(u32, 8), done.load(.acquire));
        try testing.expect(total >= 4 * 500);
        try testing.expect(m.tryLock());
        m.unlock(io);
    }
}

test "cancelled mutex waiters lose no wake-up" {
    try withIo(2, wakeCancelBody);
}

// ---------------------------------------------------------------- race

fn quick(io: Io, i: u32) Io.Cancelable!u32 {
    if (i % 3 == 0) try io.checkCancel();
    if (i % 5 == 0) io.sleep(.fromNanoseconds(1), .awake) catch |err| return err;
    return i;
}

fn raceBody(io: Io) !void {
    const n: u32 = if (small()) 500 else 20_000;
    var finished: u32 = 0;
    var canceled: u32 = 0;
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        var f = try io.concurrent(quick, .{ io, i });
        if (f.cancel(io)) |v| {
            try testing.expectEqual(i, v);
            finished += 1;
        } else |_| canceled += 1;
    }
    try testing.expectEqual(n, finished + canceled);
}

test "cancel racing the end of a task" {
    try withIo(2, raceBody);
}

// ------------------------------------------------------------- refused

fn refusedOn(io: Io) !void {
    // A port that was just free: bind, read it, close.
    const any: Io.net.IpAddress = .{ .ip4 = .loopback(0) };
    var server = try any.listen(io, .{});
    const address = server.socket.address;
    server.deinit(io);
    try testing.expectError(error.ConnectionRefused, address.connect(io, .{ .mode = .stream }));
}

fn refusedTask(io: Io) !void {
    var f = try io.concurrent(refusedOn, .{io});
    try f.await(io);
}

test "connect to a closed port: ConnectionRefused on both Io implementations" {
    try withIo(2, refusedTask);
    var t: Io.Threaded = .init(gpa, .{});
    defer t.deinit();
    try refusedOn(t.io());
}

// --------------------------------------------------------------- sleep

fn longSleep(io: Io) Io.Cancelable!void {
    try io.sleep(.fromSeconds(30), .awake);
}

fn sleepBody(io: Io) !void {
    var f = try io.concurrent(longSleep, .{io});
    try io.sleep(.fromMilliseconds(2), .awake);
    const t0 = Io.Clock.awake.now(io);
    try testing.expectError(error.Canceled, f.cancel(io));
    try testing.expect(t0.durationTo(Io.Clock.awake.now(io)).toMilliseconds() < 1000);
}

test "a sleeping task is cancelled at once" {
    try withIo(2, sleepBody);
}

// ------------------------------------------------------------- connect

fn connectTimeout(io: Io) !void {
    // A listener that never accepts, with the smallest backlog: once its
    // queue is full the kernel drops the SYNs, and a connect waits.
    const any: Io.net.IpAddress = .{ .ip4 = .loopback(0) };
    var server = try any.listen(io, .{ .kernel_backlog = 1 });
    defer server.deinit(io);
    var streams: [16]Io.net.Stream = undefined;
    var n: usize = 0;
    defer for (streams[0..n]) |st| st.close(io);
    var timed_out = false;
    while (n < streams.len and !timed_out) {
        const t0 = Io.Clock.awake.now(io);
        if (server.socket.address.connect(io, .{ .mode = .stream, .timeout = .{ .duration = .{ .raw = .fromMilliseconds(50), .clock = .awake } } })) |st| {
            streams[n] = st;
            n += 1;
        } else |err| switch (err) {
            error.Timeout => {
                const ms = t0.durationTo(Io.Clock.awake.now(io)).toMilliseconds();
                try testing.expect(ms >= 50 and ms < 1000);
                timed_out = true;
            },
            else => return err,
        }
    }
    try testing.expect(timed_out);
}

fn connectTask(io: Io) !void {
    var f = try io.concurrent(connectTimeout, .{io});
    try f.await(io);
}

test "a connect to a full backlog answers error.Timeout after its timeout" {
    try withIo(2, connectTask);
}
