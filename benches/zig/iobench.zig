//! The same std.Io code on three `std.Io` implementations: coframe.Io,
//! std.Io.Threaded and std.Io.Uring (the standard library's evented one
//! on Linux). Each bench body takes an `io: std.Io` and nothing else; it
//! runs inside a task (`io.concurrent`), as a program's work would.
//!
//!   iobench OP_IMPL [--iters N] [--reps R] [--workers W]
//!
//!   OP    spawn     one op = `io.concurrent` of an empty function + `await`
//!                   (`concurrent`, not `async`: std.Io.Threaded runs an
//!                   `async` inline when its pool is busy, and it is)
//!         pingpong  one op = a round trip between two tasks over two
//!                   `Io.Queue(u32)` of capacity 1 (futex waits and wakes)
//!         echo      one op = a 64-byte loopback TCP round trip, client and
//!                   server tasks (std.Io.net); not on Uring, whose 0.17.1
//!                   netListenIp/netAccept/netConnectIp answer NetworkDown
//!   IMPL  coframe (W workers, default 2), threaded, uring
//!
//! `uring` is built only with `with_uring` set: in the pinned Zig 0.17.1,
//! std/Io/Uring.zig does not compile (its batch code names
//! `Io.Operation.net_accept`, which `Io.Operation` lacks), so the bench
//! says so and exits 2 instead of measuring.
//!
//! Prints one JSON line in benches/c/bench.h's shape (the median ns/op of
//! R repetitions after a warm-up, and every sample), as benches/run.py
//! reads it.
const std = @import("std");
const Io = std.Io;
const net = Io.net;
const coframe = @import("coframe");

/// std.Io.Uring does not compile in Zig 0.17.1 (see the top): set this to
/// try a later Zig.
const with_uring = false;
const Uring = if (with_uring) Io.Uring else void;

const Op = enum { spawn, pingpong, echo };
const Impl = enum { coframe, threaded, uring };

fn empty() u32 {
    return 1;
}

fn spawnLoop(io: Io, iters: u64) !void {
    var sum: u64 = 0;
    for (0..iters) |_| {
        var f = try io.concurrent(empty, .{});
        sum += f.await(io);
    }
    if (sum != iters) return error.Wrong;
}

fn ponger(io: Io, ping: *Io.Queue(u32), pong: *Io.Queue(u32)) Io.Cancelable!void {
    while (true) {
        const v = ping.getOne(io) catch |err| switch (err) {
            error.Canceled => |e| return e,
            error.Closed => return,
        };
        pong.putOne(io, v + 1) catch |err| switch (err) {
            error.Canceled => |e| return e,
            error.Closed => return,
        };
    }
}

fn pingpongLoop(io: Io, iters: u64) !void {
    var ping_buf: [1]u32 = undefined;
    var pong_buf: [1]u32 = undefined;
    var ping: Io.Queue(u32) = .init(&ping_buf);
    var pong: Io.Queue(u32) = .init(&pong_buf);
    var other = try io.concurrent(ponger, .{ io, &ping, &pong });
    defer other.cancel(io) catch {};
    for (0..iters) |i| {
        try ping.putOne(io, @truncate(i));
        if (try pong.getOne(io) != @as(u32, @truncate(i)) +% 1) return error.Wrong;
    }
    ping.close(io);
}

fn echoServer(io: Io, server: *net.Server) !void {
    const stream = try server.accept(io);
    defer stream.close(io);
    var buf: [64]u8 = undefined;
    while (true) {
        var data = [1][]u8{&buf};
        const n = stream.read(io, &data) catch |err| switch (err) {
            error.Canceled => |e| return e,
            else => return,
        };
        if (n == 0) return;
        var w = stream.writer(io, &.{});
        try w.interface.writeAll(buf[0..n]);
    }
}

fn echoLoop(io: Io, iters: u64) !void {
    const any: net.IpAddress = .{ .ip4 = .loopback(0) };
    var server = try any.listen(io, .{ .reuse_address = true });
    defer server.deinit(io);
    var srv = try io.concurrent(echoServer, .{ io, &server });
    defer srv.cancel(io) catch {};
    const stream = try server.socket.address.connect(io, .{ .mode = .stream });
    defer stream.close(io);
    var msg: [64]u8 = @splat('x');
    var got: [64]u8 = undefined;
    var w = stream.writer(io, &.{});
    var rbuf: [64]u8 = undefined;
    var r = stream.reader(io, &rbuf);
    for (0..iters) |_| {
        try w.interface.writeAll(&msg);
        try r.interface.readSliceAll(&got);
    }
}

fn body(io: Io, op: Op, iters: u64) anyerror!void {
    return switch (op) {
        .spawn => spawnLoop(io, iters),
        .pingpong => pingpongLoop(io, iters),
        .echo => echoLoop(io, iters),
    };
}

/// Runs `body` in a task and waits for it; the wall time of the whole.
fn timed(io: Io, op: Op, iters: u64) !u64 {
    const t0 = Io.Clock.awake.now(io);
    var task = try io.concurrent(body, .{ io, op, iters });
    try task.await(io);
    return @intCast(t0.durationTo(Io.Clock.awake.now(io)).toNanoseconds());
}

fn runAll(io: Io, op: Op, iters: u64, samples: []f64) !void {
    // A warm-up of a fixed size, so that callgrind's two runs (N1, N2)
    // differ by exactly N2 - N1 operations.
    _ = try timed(io, op, 100);
    for (samples) |*s| s.* = @as(f64, @floatFromInt(try timed(io, op, iters))) / @as(f64, @floatFromInt(iters));
}

pub fn main(init: std.process.Init) !void {
    const gpa = std.heap.c_allocator;
    var it = init.minimal.args.iterate();
    _ = it.skip();
    const mode = it.next() orelse return error.MissingMode;
    var iters: u64 = 10_000;
    var reps: usize = 5;
    var workers: u32 = 2;
    while (it.next()) |arg| {
        const val = it.next() orelse return error.MissingValue;
        if (std.mem.eql(u8, arg, "--iters")) {
            iters = try std.fmt.parseInt(u64, val, 10);
        } else if (std.mem.eql(u8, arg, "--reps")) {
            reps = try std.fmt.parseInt(usize, val, 10);
        } else if (std.mem.eql(u8, arg, "--workers")) {
            workers = try std.fmt.parseInt(u32, val, 10);
        } else return error.UnknownOption;
    }
    reps = std.math.clamp(reps, 1, 63);
    const sep = std.mem.indexOfScalar(u8, mode, '_') orelse return error.BadMode;
    const op = std.meta.stringToEnum(Op, mode[0..sep]) orelse return error.BadMode;
    const impl = std.meta.stringToEnum(Impl, mode[sep + 1 ..]) orelse return error.BadMode;

    var samples: [63]f64 = undefined;
    switch (impl) {
        .coframe => {
            var co: coframe.Io = undefined;
            try co.init(gpa, .{ .workers = workers });
            defer co.deinit();
            try runAll(co.io(), op, iters, samples[0..reps]);
        },
        .threaded => {
            var t: Io.Threaded = .init(gpa, .{});
            defer t.deinit();
            try runAll(t.io(), op, iters, samples[0..reps]);
        },
        .uring => {
            if (!with_uring) {
                try Io.File.stderr().writeStreamingAll(init.io, "iobench: std.Io.Uring does not compile in Zig 0.17.1 (set with_uring to try)\n");
                std.process.exit(2);
            }
            if (op == .echo) return error.UnavailableOnUring;
            var ev: Uring = undefined;
            try ev.init(gpa, .{});
            defer ev.deinit();
            try runAll(ev.io(), op, iters, samples[0..reps]);
        },
    }

    var sorted: [63]f64 = undefined;
    @memcpy(sorted[0..reps], samples[0..reps]);
    std.mem.sort(f64, sorted[0..reps], {}, std.sort.asc(f64));
    const med = if (reps % 2 == 1) sorted[reps / 2] else (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
    var buf: [4096]u8 = undefined;
    var w: Io.Writer = .fixed(&buf);
    try w.print("{{\"bench\":\"{s}\",\"iters\":{d},\"ns_per_op\":{d:.4},\"samples\":[", .{ mode, iters, med });
    for (samples[0..reps], 0..) |s, i| try w.print("{s}{d:.3}", .{ if (i == 0) "" else ",", s });
    try w.writeAll("]}\n");
    try Io.File.stdout().writeStreamingAll(init.io, w.buffered());
}
