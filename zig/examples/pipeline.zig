//! coframe from Zig, shown by `make demo` (`zig build demo`):
//!
//!   1. a pipeline of coroutines over channels on two workers: producers
//!      send numbers, squarers square them, a summer adds the squares;
//!   2. cancellation mid-flight: requests that each hold a pipe wait for a
//!      reply; a quarter get one, the rest are cancelled, and each cancelled
//!      body's own `errdefer` and `defer` (which closes its pipe) run;
//!   3. wake-ups from other threads: coroutines suspend and hand their
//!      token to an "event" std.Thread that resumes them, while a
//!      "watchdog" std.Thread cancels the same coroutines at the same time
//!      (the two walk the coroutines in step): the race coframe exists for.
//!
//! Prints what happened and exits 1 if any figure is wrong.
//!
//!   coframe-pipeline [--quiet] [squarers [items]]   (default 4, 200000)
const std = @import("std");
const coframe = @import("coframe");

const Channel = coframe.Channel;
const ms = std.time.ns_per_ms;

var failures: u32 = 0;
var quiet = false;

fn say(comptime fmt: []const u8, args: anytype) void {
    if (!quiet) std.debug.print(fmt ++ "\n", args);
}

fn expect(ok: bool, comptime fmt: []const u8, args: anytype) void {
    if (ok) return;
    failures += 1;
    std.debug.print("WRONG: " ++ fmt ++ "\n", args);
}

const Count = std.atomic.Value(u64);

// ------------------------------------------------------------ 1. pipeline

fn produce(out: Channel(u64), from: u64, to: u64) !void {
    for (from..to) |v| try out.send(v);
}

fn square(in: Channel(u64), out: Channel(u64)) !u64 {
    var n: u64 = 0;
    while (in.recv()) |v| {
        try out.send(v * v);
        n += 1;
    } else |err| if (err != error.Closed) return err;
    return n;
}

fn sum(in: Channel(u64)) !u64 {
    var total: u64 = 0;
    while (in.recv()) |v| total += v else |err| if (err != error.Closed) return err;
    return total;
}

fn pipeline(rt: coframe.Runtime, squarers: usize, items: u64) !void {
    var numbers = try Channel(u64).init(64);
    defer numbers.deinit();
    var squares = try Channel(u64).init(64);
    defer squares.deinit();

    const t0 = coframe.now();
    var summer = try rt.spawn(sum, .{squares});
    defer summer.cancel() catch {};
    const workers = try std.heap.page_allocator.alloc(coframe.PromiseOf(square), squarers);
    defer std.heap.page_allocator.free(workers);
    for (workers) |*w| w.* = try rt.spawn(square, .{ numbers, squares });
    var producers: [3]coframe.PromiseOf(produce) = undefined;
    for (&producers, 0..) |*p, i| p.* = try rt.spawn(produce, .{ numbers, i * items / 3, (i + 1) * items / 3 });

    for (&producers) |*p| try p.await();
    try numbers.close(); // the squarers drain it, then see error.Closed
    var squared: u64 = 0;
    var busiest: u64 = 0;
    for (workers) |*w| {
        const n = try w.await();
        squared += n;
        busiest = @max(busiest, n);
    }
    try squares.close();
    const total = try summer.await();
    const dt = coframe.now() - t0;

    const want = (items - 1) * items * (2 * items - 1) / 6;
    say("1. pipeline: 3 producers -> {d} squarers -> 1 summer, over two channels of 64", .{squarers});
    say("   {d} numbers squared ({d} by the busiest squarer), sum of squares {d} (expected {d}), in {d} ms", .{
        squared, busiest, total, want, @divTrunc(dt, ms),
    });
    expect(squared == items, "{d} numbers squared, not {d}", .{ squared, items });
    expect(total == want, "the sum is {d}, not {d}", .{ total, want });
}

// ----------------------------------------------------- 2. cancel mid-flight

const Requests = struct {
    opened: Count = .init(0),
    closed: Count = .init(0),
    answered: Count = .init(0),
    cancelled: Count = .init(0), // errdefers that ran
    waiting: Count = .init(0),
};

/// A request: opens a pipe, waits for a reply on it, reads it. Its cleanup
/// is ordinary Zig: `defer` closes the pipe, `errdefer` counts a failure,
/// and a cancel arrives as error.Canceled from `waitReadable`.
fn request(id: u32, replies: Channel(std.c.fd_t), r: *Requests) !u8 {
    var fds: [2]std.c.fd_t = undefined;
    if (std.c.pipe(&fds) != 0) return error.NoPipe;
    _ = r.opened.fetchAdd(1, .seq_cst);
    defer {
        _ = std.c.close(fds[0]);
        _ = std.c.close(fds[1]);
        _ = r.closed.fetchAdd(1, .seq_cst);
    }
    errdefer _ = r.cancelled.fetchAdd(1, .seq_cst);

    if (id % 4 == 0) try replies.send(fds[1]); // the replier answers these
    _ = r.waiting.fetchAdd(1, .seq_cst);
    try coframe.waitReadable(fds[0], .none); // error.Canceled lands here
    var byte: [1]u8 = undefined;
    if (std.c.read(fds[0], &byte, 1) != 1) return error.NoReply;
    _ = r.answered.fetchAdd(1, .seq_cst);
    return byte[0];
}

fn replier(replies: Channel(std.c.fd_t)) !void {
    while (replies.recv()) |fd| {
        try coframe.sleep(ms / 10);
        _ = std.c.write(fd, "k", 1);
    } else |err| if (err != error.Closed) return err;
}

fn cancelMidFlight(rt: coframe.Runtime) !void {
    const n = 200;
    var r: Requests = .{};
    var replies = try Channel(std.c.fd_t).init(n);
    defer replies.deinit();
    var rep = try rt.spawn(replier, .{replies});
    var reqs: [n]coframe.PromiseOf(request) = undefined;
    for (&reqs, 0..) |*p, i| p.* = try rt.spawn(request, .{ @as(u32, @intCast(i)), replies, &r });

    // Wait for the answered quarter; the rest wait on their pipes.
    const deadline = coframe.now() + 10 * std.time.ns_per_s;
    while ((r.answered.load(.seq_cst) < n / 4 or r.waiting.load(.seq_cst) < n) and coframe.now() < deadline) try coframe.sleep(ms);
    var got: u32 = 0;
    var cancelled: u32 = 0;
    for (&reqs, 0..) |*p, i| {
        if (i % 4 == 0) {
            if ((try p.await()) == 'k') got += 1;
        } else {
            // Does not wait: the waiter is woken with error.Canceled and
            // unwinds on its worker.
            try p.cancel();
            cancelled += 1;
        }
    }
    try replies.close();
    try rep.await();
    while (r.closed.load(.seq_cst) < n and coframe.now() < deadline) try coframe.sleep(ms / 10);

    say("2. cancel mid-flight: {d} requests, each holding a pipe and waiting for a reply", .{n});
    say("   {d} got their reply; {d} were cancelled while waiting: their errdefer ran {d} times,", .{
        got, cancelled, r.cancelled.load(.seq_cst),
    });
    say("   and their defers closed {d} of the {d} pipes opened (the answered ones closed theirs)", .{
        r.closed.load(.seq_cst), r.opened.load(.seq_cst),
    });
    expect(got == n / 4, "{d} replies, not {d}", .{ got, n / 4 });
    expect(r.cancelled.load(.seq_cst) == n - n / 4, "{d} errdefers, not {d}", .{ r.cancelled.load(.seq_cst), n - n / 4 });
    expect(r.closed.load(.seq_cst) == n and r.opened.load(.seq_cst) == n, "{d} pipes closed of {d} opened", .{
        r.closed.load(.seq_cst), r.opened.load(.seq_cst),
    });
}

// ---------------------------------------------- 3. wake-ups from threads

const Waker = struct {
    tokens: []std.atomic.Value(u64), // published by the coroutines' suspend
    promises: []coframe.PromiseOf(waiter),
    ready: std.atomic.Value(usize) = .init(0), // coroutines suspended so far
    go: std.atomic.Value(u32) = .init(0),
    pos: [2]std.atomic.Value(usize) = .{ .init(0), .init(0) }, // the threads' places
    defers: Count = .init(0),
    resumed: Count = .init(0), // suspends that returned normally
    cancelled: Count = .init(0), // ... that returned error.Canceled
};

fn waiter(w: *Waker, i: usize) !void {
    defer _ = w.defers.fetchAdd(1, .seq_cst);
    const Park = struct {
        fn park(ctx: struct { *Waker, usize }, token: coframe.Token) void {
            ctx[0].tokens[ctx[1]].store(token.id(), .seq_cst);
            _ = ctx[0].ready.fetchAdd(1, .seq_cst);
        }
    };
    coframe.@"suspend"(.{ w, i }, Park.park) catch |err| {
        if (err == error.Canceled) _ = w.cancelled.fetchAdd(1, .seq_cst);
        return err;
    };
    _ = w.resumed.fetchAdd(1, .seq_cst);
}

/// The event thread: resumes the coroutines one by one.
fn eventThread(w: *Waker) void {
    while (w.go.load(.acquire) == 0) std.Thread.yield() catch {};
    for (w.tokens, 0..) |*t, i| {
        inStep(&w.pos[1], i);
        const token: coframe.Token = .{ .handle = .{ .id = t.load(.seq_cst) } };
        token.@"resume"() catch |err| std.debug.print("WRONG: resume: {s}\n", .{@errorName(err)});
        w.pos[0].store(i + 1, .release);
    }
}

/// The watchdog thread: cancels the same coroutines, in step with it.
fn watchdogThread(w: *Waker) void {
    while (w.go.load(.acquire) == 0) std.Thread.yield() catch {};
    for (w.promises, 0..) |*p, i| {
        inStep(&w.pos[0], i);
        p.cancel() catch |err| std.debug.print("WRONG: cancel: {s}\n", .{@errorName(err)});
        w.pos[1].store(i + 1, .release);
    }
}

/// Waits until the other thread is at most one coroutine behind.
fn inStep(other: *std.atomic.Value(usize), i: usize) void {
    var spins: u32 = 0;
    while (other.load(.acquire) < i) : (spins += 1) {
        if (spins < 64) std.atomic.spinLoopHint() else std.Thread.yield() catch {};
    }
}

fn wakeUps(rt: coframe.Runtime) !void {
    const n = 2000;
    var tokens: [n]std.atomic.Value(u64) = @splat(.init(0));
    var promises: [n]coframe.PromiseOf(waiter) = undefined;
    var w: Waker = .{ .tokens = &tokens, .promises = &promises };
    for (&promises, 0..) |*p, i| p.* = try rt.spawn(waiter, .{ &w, i });
    const deadline = coframe.now() + 10 * std.time.ns_per_s;
    while (w.ready.load(.seq_cst) < n and coframe.now() < deadline) std.Thread.yield() catch {};
    const events = try std.Thread.spawn(.{}, eventThread, .{&w});
    const watchdog = try std.Thread.spawn(.{}, watchdogThread, .{&w});
    w.go.store(1, .release);
    events.join();
    watchdog.join();
    while (w.defers.load(.seq_cst) < n and coframe.now() < deadline) std.Thread.yield() catch {};

    say("3. wake-ups from other threads: {d} coroutines suspended, each handing its token to an", .{n});
    say("   event thread that resumes it while a watchdog thread cancels it at the same moment:", .{});
    say("   {d} ran on before the cancel landed, {d} saw error.Canceled; {d} defers ran, one each", .{
        w.resumed.load(.seq_cst), w.cancelled.load(.seq_cst), w.defers.load(.seq_cst),
    });
    expect(w.resumed.load(.seq_cst) + w.cancelled.load(.seq_cst) == n, "{d} outcomes, not {d}", .{
        w.resumed.load(.seq_cst) + w.cancelled.load(.seq_cst), n,
    });
    expect(w.defers.load(.seq_cst) == n, "{d} defers, not {d}", .{ w.defers.load(.seq_cst), n });
}

pub fn main(init: std.process.Init) !void {
    const args = try init.minimal.args.toSlice(init.arena.allocator());
    var numbers: [2]u64 = .{ 4, 200_000 };
    var k: usize = 0;
    for (args[1..]) |arg| {
        if (std.mem.eql(u8, arg, "--quiet")) {
            quiet = true;
        } else if (k < 2) {
            numbers[k] = std.fmt.parseInt(u64, arg, 10) catch {
                std.debug.print("usage: coframe-pipeline [--quiet] [squarers [items]]\n", .{});
                std.process.exit(2);
            };
            k += 1;
        }
    }
    if (numbers[0] == 0 or numbers[1] < 3) {
        std.debug.print("coframe-pipeline: at least 1 squarer and 3 items\n", .{});
        std.process.exit(2);
    }

    const frames = coframe.liveFrames();
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    say("coframe {d}.{d}.{d} from Zig {s}: a runtime of 2 workers", .{
        coframe.version.major, coframe.version.minor, coframe.version.patch, @import("builtin").zig_version_string,
    });
    try pipeline(rt, @intCast(numbers[0]), numbers[1]);
    try cancelMidFlight(rt);
    try wakeUps(rt);
    rt.deinit();

    const left = coframe.liveFrames() - frames;
    say("every frame freed: {d} left after shutdown", .{left});
    expect(left == 0, "{d} frames left", .{left});
    if (failures != 0) {
        std.debug.print("coframe-pipeline: {d} wrong figures\n", .{failures});
        std.process.exit(1);
    }
    say("coframe-pipeline: all figures right", .{});
}
