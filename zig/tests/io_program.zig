//! A program written only against `std.Io`: it takes an `io: std.Io` and
//! nothing of coframe. `zig/tests/io_run.zig` runs it on `coframe.Io` and
//! on `std.Io.Threaded` and compares what `run` writes: the same lines,
//! whatever the implementation.
//!
//!   echo       a TCP echo server (an accept loop, one handler per
//!              connection in a group) and `connections` clients, each
//!              sending `messages` messages and checking every echo; then
//!              the server's future is cancelled while its handlers wait
//!              in a read: the accept loop gets error.Canceled, its
//!              `defer group.cancel` cancels the handlers, every `defer`
//!              runs once, and the clients see the connection closed
//!   select     `Io.Select` over a task that finishes after 5 ms and one
//!              that would sleep 10 s: the first comes back, the other is
//!              cancelled (its defer runs, its result is error.Canceled)
//!   protect    a task in `swapCancelProtection(.blocked)` finishes its
//!              sleep through a cancel; the next cancelation point after
//!              it gives error.Canceled, once; `recancel` re-arms it
//!   once       a task that swallows error.Canceled sleeps again without
//!              it (only the next cancelation point is cancelled)
//!   propagate  cancelling a task that awaits a future cancels the future
//!   groupwait  cancelling a task in `Group.await` cancels the group's
//!              tasks (their defers run) and its await answers
//!              error.Canceled once they all ended
//!   mutex      4 tasks add 1 under an `Io.Mutex` 2,000 times each
//!   timeout    `Io.Condition.waitTimeout` of 10 ms answers error.Timeout
//!              after at least 10 ms; `io.sleep` sleeps at least its time
const std = @import("std");
const Io = std.Io;
const net = Io.net;

pub const Options = struct {
    connections: u32 = 8,
    messages: u32 = 200,
    message_len: usize = 64,
};

const Counter = std.atomic.Value(u32);

// ------------------------------------------------------------------ echo

const EchoStats = struct {
    accepted: Counter = .init(0),
    handler_defers: Counter = .init(0),
    handlers_canceled: Counter = .init(0),
    handlers_saw_eof: Counter = .init(0),
    server_defers: Counter = .init(0),
    echoed_ok: Counter = .init(0),
    echoed_bad: Counter = .init(0),
    clients_saw_close: Counter = .init(0),
};

fn serve(io: Io, server: *net.Server, stats: *EchoStats) Io.Cancelable!void {
    defer _ = stats.server_defers.fetchAdd(1, .monotonic);
    var handlers: Io.Group = .init;
    defer handlers.cancel(io);
    while (true) {
        const stream = server.accept(io) catch |err| switch (err) {
            error.Canceled => |e| return e,
            else => continue,
        };
        _ = stats.accepted.fetchAdd(1, .monotonic);
        handlers.concurrent(io, handle, .{ io, stream, stats }) catch stream.close(io);
    }
}

fn handle(io: Io, stream: net.Stream, stats: *EchoStats) Io.Cancelable!void {
    defer {
        stream.close(io);
        _ = stats.handler_defers.fetchAdd(1, .monotonic);
    }
    var rbuf: [512]u8 = undefined;
    var wbuf: [512]u8 = undefined;
    var reader = stream.reader(io, &rbuf);
    var writer = stream.writer(io, &wbuf);
    while (true) {
        const data = reader.interface.peekGreedy(1) catch |err| switch (err) {
            error.EndOfStream => {
                _ = stats.handlers_saw_eof.fetchAdd(1, .monotonic);
                return;
            },
            error.ReadFailed => {
                if (reader.err.? == error.Canceled) {
                    _ = stats.handlers_canceled.fetchAdd(1, .monotonic);
                    return error.Canceled;
                }
                return;
            },
        };
        writer.interface.writeAll(data) catch return writeFailed(&writer);
        writer.interface.flush() catch return writeFailed(&writer);
        reader.interface.toss(data.len);
    }
}

fn writeFailed(w: *net.Stream.Writer) Io.Cancelable!void {
    if (w.err.? == error.Canceled) return error.Canceled;
}

fn fill(buf: []u8, id: u32, message: u32) void {
    for (buf, 0..) |*b, i| b.* = @truncate(id *% 31 +% message *% 7 +% @as(u32, @intCast(i)));
}

fn client(
    io: Io,
    address: net.IpAddress,
    id: u32,
    options: Options,
    stats: *EchoStats,
    done: *Io.Queue(u32),
    release: *Io.Event,
) Io.Cancelable!void {
    var stream = address.connect(io, .{ .mode = .stream }) catch |err| switch (err) {
        error.Canceled => |e| return e,
        else => {
            done.putOne(io, id) catch {};
            return;
        },
    };
    defer stream.close(io);
    var rbuf: [256]u8 = undefined;
    var wbuf: [256]u8 = undefined;
    var reader = stream.reader(io, &rbuf);
    var writer = stream.writer(io, &wbuf);
    var out: [4096]u8 = undefined;
    var in: [4096]u8 = undefined;
    const msg = out[0..options.message_len];
    const got = in[0..options.message_len];
    for (0..options.messages) |m| {
        fill(msg, id, @intCast(m));
        writer.interface.writeAll(msg) catch break;
        writer.interface.flush() catch break;
        reader.interface.readSliceAll(got) catch break;
        if (std.mem.eql(u8, msg, got)) {
            _ = stats.echoed_ok.fetchAdd(1, .monotonic);
        } else {
            _ = stats.echoed_bad.fetchAdd(1, .monotonic);
        }
    }
    done.putOne(io, id) catch |err| switch (err) {
        error.Canceled => |e| return e,
        error.Closed => return,
    };
    // Hold the connection open until the server was cancelled, so that
    // its handler is waiting in a read when the cancel comes.
    try release.wait(io);
    _ = reader.interface.takeByte() catch |err| switch (err) {
        error.EndOfStream => _ = stats.clients_saw_close.fetchAdd(1, .monotonic),
        error.ReadFailed => {},
    };
}

fn echo(io: Io, options: Options, out: *Io.Writer) !void {
    var stats: EchoStats = .{};
    const any: net.IpAddress = .{ .ip4 = .loopback(0) };
    var server = try any.listen(io, .{ .reuse_address = true });
    defer server.deinit(io);
    const address = server.socket.address;

    var server_future = try io.concurrent(serve, .{ io, &server, &stats });

    var done_buf: [64]u32 = undefined;
    var done: Io.Queue(u32) = .init(&done_buf);
    var release: Io.Event = .unset;
    var clients: Io.Group = .init;
    defer clients.cancel(io);
    for (0..options.connections) |i| {
        try clients.concurrent(io, client, .{ io, address, @as(u32, @intCast(i)), options, &stats, &done, &release });
    }
    for (0..options.connections) |_| _ = try done.getOne(io);

    // Every handler now waits in a read: cancel the server.
    const server_result = server_future.cancel(io);
    release.set(io);
    try clients.await(io);

    try out.print("echo: connections={d} accepted={d} round_trips_ok={d} bad={d}\n", .{
        options.connections, stats.accepted.load(.acquire), stats.echoed_ok.load(.acquire), stats.echoed_bad.load(.acquire),
    });
    try out.print("echo: server={any} server_defers={d} handler_defers={d} handlers_canceled={d} handlers_saw_eof={d} clients_saw_close={d}\n", .{
        server_result,
        stats.server_defers.load(.acquire),
        stats.handler_defers.load(.acquire),
        stats.handlers_canceled.load(.acquire),
        stats.handlers_saw_eof.load(.acquire),
        stats.clients_saw_close.load(.acquire),
    });
}

// ---------------------------------------------------------------- select

const Race = union(enum) {
    fast: u32,
    slow: Io.Cancelable!u32,
};

fn fast(io: Io) u32 {
    io.sleep(.fromMilliseconds(5), .awake) catch return 0;
    return 7;
}

fn slow(io: Io, defers: *Counter) Io.Cancelable!u32 {
    defer _ = defers.fetchAdd(1, .monotonic);
    try io.sleep(.fromSeconds(10), .awake);
    return 9;
}

fn selectTwo(io: Io, out: *Io.Writer) !void {
    var defers: Counter = .init(0);
    var buf: [2]Race = undefined;
    var select: Io.Select(Race) = .init(io, &buf);
    try select.concurrent(.slow, slow, .{ io, &defers });
    try select.concurrent(.fast, fast, .{io});
    const first = try select.await();
    const second = select.cancel();
    try out.print("select: first={any} second={any} slow_defers={d}\n", .{ first, second, defers.load(.acquire) });
}

// --------------------------------------------------------------- protect

const Protect = struct {
    started: Io.Event = .unset,
    slept_through: bool = false,
    check_after: ?anyerror = null,
    after_recancel: ?anyerror = null,
};

fn protectedTask(io: Io, p: *Protect) Io.Cancelable!u32 {
    const old = io.swapCancelProtection(.blocked);
    p.started.set(io);
    io.sleep(.fromMilliseconds(30), .awake) catch unreachable; // blocked: no cancelation point
    p.slept_through = true;
    _ = io.swapCancelProtection(old);
    io.checkCancel() catch |err| {
        p.check_after = err;
        io.recancel();
        io.sleep(.fromMilliseconds(1), .awake) catch |err2| {
            p.after_recancel = err2;
            return err2;
        };
        return 2;
    };
    return 1;
}

fn protect(io: Io, out: *Io.Writer) !void {
    var p: Protect = .{};
    var f = try io.concurrent(protectedTask, .{ io, &p });
    try p.started.wait(io);
    const r = f.cancel(io);
    try out.print("protect: result={any} slept_through={} check_after={any} after_recancel={any}\n", .{
        r, p.slept_through, p.check_after, p.after_recancel,
    });
}

// ------------------------------------------------------------------ once

fn swallow(io: Io, started: *Io.Event) Io.Cancelable!u32 {
    started.set(io);
    var value: u32 = 0;
    io.sleep(.fromSeconds(10), .awake) catch |err| switch (err) {
        error.Canceled => value += 40,
    };
    // Only the next cancelation point was cancelled: these run to the end.
    try io.sleep(.fromMilliseconds(2), .awake);
    try io.checkCancel();
    return value + 2;
}

fn once(io: Io, out: *Io.Writer) !void {
    var started: Io.Event = .unset;
    var f = try io.concurrent(swallow, .{ io, &started });
    try started.wait(io);
    try out.print("once: result={any}\n", .{f.cancel(io)});
}

// ------------------------------------------------------------- propagate

fn sleepy(io: Io, defers: *Counter) Io.Cancelable!u32 {
    defer _ = defers.fetchAdd(1, .monotonic);
    try io.sleep(.fromSeconds(10), .awake);
    return 1;
}

fn awaiter(io: Io, defers: *Counter, started: *Io.Event) Io.Cancelable!u32 {
    var inner = io.concurrent(sleepy, .{ io, defers }) catch |err| switch (err) {
        error.ConcurrencyUnavailable => return 0,
    };
    started.set(io);
    return inner.await(io);
}

fn propagate(io: Io, out: *Io.Writer) !void {
    var defers: Counter = .init(0);
    var started: Io.Event = .unset;
    var f = try io.concurrent(awaiter, .{ io, &defers, &started });
    try started.wait(io);
    const r = f.cancel(io);
    try out.print("propagate: outer={any} inner_defers={d}\n", .{ r, defers.load(.acquire) });
}

// ------------------------------------------------------------- groupwait

fn member(io: Io, defers: *Counter) Io.Cancelable!void {
    defer _ = defers.fetchAdd(1, .monotonic);
    try io.sleep(.fromSeconds(10), .awake);
}

fn groupAwaiter(io: Io, defers: *Counter, started: *Io.Event) Io.Cancelable!u32 {
    var g: Io.Group = .init;
    for (0..3) |_| g.concurrent(io, member, .{ io, defers }) catch return 0;
    started.set(io);
    try g.await(io);
    return 1;
}

fn groupWait(io: Io, out: *Io.Writer) !void {
    var defers: Counter = .init(0);
    var started: Io.Event = .unset;
    var f = try io.concurrent(groupAwaiter, .{ io, &defers, &started });
    try started.wait(io);
    const r = f.cancel(io);
    try out.print("groupwait: awaiter={any} member_defers={d}\n", .{ r, defers.load(.acquire) });
}

// ----------------------------------------------------------------- mutex

fn adder(io: Io, mutex: *Io.Mutex, total: *u64, n: u32) Io.Cancelable!void {
    for (0..n) |i| {
        try mutex.lock(io);
        defer mutex.unlock(io);
        total.* += 1;
        if (i % 64 == 0) try io.sleep(.fromNanoseconds(1000), .awake);
    }
}

fn mutexes(io: Io, out: *Io.Writer) !void {
    var mutex: Io.Mutex = .init;
    var total: u64 = 0;
    var g: Io.Group = .init;
    for (0..4) |_| try g.concurrent(io, adder, .{ io, &mutex, &total, 2000 });
    try g.await(io);
    try out.print("mutex: total={d}\n", .{total});
}

// --------------------------------------------------------------- timeout

fn timeouts(io: Io, out: *Io.Writer) !void {
    var mutex: Io.Mutex = .init;
    var cond: Io.Condition = .init;
    const t0 = Io.Clock.awake.now(io);
    try mutex.lock(io);
    const r = cond.waitTimeout(io, &mutex, .{ .duration = .{ .raw = .fromMilliseconds(10), .clock = .awake } });
    mutex.unlock(io);
    const waited = t0.durationTo(Io.Clock.awake.now(io));
    const t1 = Io.Clock.awake.now(io);
    try io.sleep(.fromMilliseconds(3), .awake);
    const slept = t1.durationTo(Io.Clock.awake.now(io));
    try out.print("timeout: wait={any} waited_10ms={} slept_3ms={}\n", .{
        r, waited.toMilliseconds() >= 10, slept.toNanoseconds() >= 3 * std.time.ns_per_ms,
    });
}

/// Runs every part; writes one or more lines per part to `out`.
pub fn run(io: Io, options: Options, out: *Io.Writer) !void {
    try echo(io, options, out);
    try selectTwo(io, out);
    try protect(io, out);
    try once(io, out);
    try propagate(io, out);
    try groupWait(io, out);
    try mutexes(io, out);
    try timeouts(io, out);
}
