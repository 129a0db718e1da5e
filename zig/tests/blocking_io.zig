//! Blocking-style I/O: read/readSome/write, recv/recvSome/send, accept,
//! acceptAddress, connect; in coroutines (they suspend) and on a plain
//! thread (they block); errors, `done` on failure, cancellation.
const std = @import("std");
const coframe = @import("coframe");
const util = @import("util.zig");
const expectEqual = std.testing.expectEqual;
const expectEqualSlices = std.testing.expectEqualSlices;
const expectError = std.testing.expectError;
const expect = std.testing.expect;
const ms = std.time.ns_per_ms;
const fd_t = std.posix.fd_t;
const IpAddress = std.Io.net.IpAddress;

const Pipe = struct {
    r: fd_t,
    w: fd_t,

    /// Non-blocking ends unless `blocking`.
    fn open(blocking: bool) !Pipe {
        var fds: [2]fd_t = undefined;
        if (std.c.pipe2(&fds, .{ .NONBLOCK = !blocking, .CLOEXEC = true }) != 0) return error.NoPipe;
        return .{ .r = fds[0], .w = fds[1] };
    }

    fn close(p: Pipe) void {
        _ = std.c.close(p.r);
        if (p.w >= 0) _ = std.c.close(p.w);
    }
};

/// A TCP socket, non-blocking unless `blocking`.
fn tcpSocket(blocking: bool) !fd_t {
    const nb: c_uint = if (blocking) 0 else std.c.SOCK.NONBLOCK;
    const fd = std.c.socket(std.c.AF.INET, std.c.SOCK.STREAM | std.c.SOCK.CLOEXEC | nb, 0);
    if (fd < 0) return error.NoSocket;
    return fd;
}

/// A socket bound to 127.0.0.1 on a port the kernel picks, listening
/// unless `listening` is false (then a connect to it is refused), and
/// its address.
fn loopbackSocket(listening: bool, blocking: bool) !struct { fd_t, IpAddress } {
    const fd = try tcpSocket(blocking);
    errdefer _ = std.c.close(fd);
    var storage: std.Io.Threaded.PosixAddress = undefined;
    const len = std.Io.Threaded.addressToPosix(&IpAddress{ .ip4 = .loopback(0) }, &storage);
    if (std.c.bind(fd, &storage.any, len) != 0) return error.Bind;
    if (listening and std.c.listen(fd, 8) != 0) return error.Listen;
    return .{ fd, try localAddress(fd) };
}

fn localAddress(fd: fd_t) !IpAddress {
    var storage: std.Io.Threaded.PosixAddress = undefined;
    var len: std.posix.socklen_t = @sizeOf(@TypeOf(storage));
    if (std.c.getsockname(fd, &storage.any, &len) != 0) return error.Name;
    return std.Io.Threaded.addressFromPosix(&storage);
}

// ------------------------------------------------------------------ echo

const message_len = 1000;
const echo_rounds = 3;

/// Echoes one connection until the peer closes: the bytes echoed, and the
/// peer's port as accept saw it.
fn echoServer(listener: fd_t) !struct { usize, u16 } {
    const conn = try coframe.acceptAddress(listener, .{ .timeout = .{ .duration = 5000 * ms } });
    defer _ = std.c.close(conn.fd);
    var buf: [256]u8 = undefined; // smaller than a message: several recvSome per round
    var echoed: usize = 0;
    while (true) {
        const n = try coframe.recvSome(conn.fd, &buf, .{ .timeout = .{ .duration = 5000 * ms } });
        if (n == 0) break;
        try coframe.send(conn.fd, buf[0..n], .{});
        echoed += n;
    }
    return .{ echoed, conn.address.getPort() };
}

/// Sends `echo_rounds` messages and reads each back whole: its own port.
fn echoClient(address: IpAddress) !u16 {
    const fd = try tcpSocket(false);
    defer _ = std.c.close(fd);
    const deadline: coframe.Timeout = .{ .deadline = coframe.deadlineIn(5000 * ms) };
    try coframe.connect(fd, &address, .{ .timeout = deadline });
    for (0..echo_rounds) |round| {
        var msg: [message_len]u8 = undefined;
        for (&msg, 0..) |*b, i| b.* = @truncate(i * 7 + round);
        try coframe.send(fd, &msg, .{ .timeout = deadline });
        var back: [message_len]u8 = undefined;
        var got: usize = 0;
        try coframe.recv(fd, &back, .{ .timeout = deadline, .done = &got });
        if (got != message_len or !std.mem.eql(u8, &msg, &back)) return error.BadEcho;
    }
    return (try localAddress(fd)).getPort();
}

test "echo over 127.0.0.1: acceptAddress, recvSome, send against connect, send, recv" {
    const before = util.frames();
    const listener, const address = try loopbackSocket(true, false);
    defer _ = std.c.close(listener);
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var server = try rt.spawn(echoServer, .{listener});
    defer server.cancel() catch {};
    var client = try rt.spawn(echoClient, .{address});
    defer client.cancel() catch {};
    const client_port = try client.await();
    const echoed, const peer_port = try server.await();
    try expectEqual(@as(usize, message_len * echo_rounds), echoed);
    try expectEqual(client_port, peer_port);
    try util.expectNoLeak(before);
}

// ------------------------------------------------------ all bytes, some

fn readAll(fd: fd_t, len: usize) !struct { [12]u8, usize, i64 } {
    var buf: [12]u8 = @splat(0);
    var got: usize = 0;
    const t0 = coframe.now();
    try coframe.read(fd, buf[0..len], .{ .done = &got });
    return .{ buf, got, coframe.now() - t0 };
}

/// Writes "abcd", "efgh", "ijkl", 3 ms apart.
fn writeSlowly(fd: fd_t) !void {
    for ([_][]const u8{ "abcd", "efgh", "ijkl" }, 0..) |part, i| {
        if (i != 0) try coframe.sleep(3 * ms);
        try coframe.write(fd, part, .{});
    }
}

test "read waits for all the bytes across delayed writes from another coroutine" {
    const before = util.frames();
    const pipe = try Pipe.open(false);
    defer pipe.close();
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var reader = try rt.spawn(readAll, .{ pipe.r, 12 });
    defer reader.cancel() catch {};
    var writer = try rt.spawn(writeSlowly, .{pipe.w});
    try writer.await();
    const buf, const got, const took = try reader.await();
    try expectEqualSlices(u8, "abcdefghijkl", &buf);
    try expectEqual(@as(usize, 12), got);
    try expect(took >= 6 * ms); // after the third write, not the first
    try util.expectNoLeak(before);
}

fn readSomeOnce(fd: fd_t) !usize {
    var buf: [64]u8 = undefined;
    return coframe.readSome(fd, &buf, .{ .timeout = .{ .duration = 5000 * ms } });
}

test "readSome returns what came, and 0 at end of file" {
    const pipe = try Pipe.open(false);
    defer pipe.close();
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(readSomeOnce, .{pipe.r});
    try coframe.sleep(2 * ms);
    try coframe.write(pipe.w, "xyz", .{});
    try expectEqual(@as(usize, 3), try p.await());
    _ = std.c.close(pipe.w);
    var q = try rt.spawn(readSomeOnce, .{pipe.r});
    try expectEqual(@as(usize, 0), try q.await());
}

// ------------------------------------------------------- errors, `done`

fn readTimesOut(fd: fd_t) !struct { usize, [10]u8 } {
    var buf: [10]u8 = @splat(0);
    var got: usize = 99;
    coframe.read(fd, &buf, .{ .timeout = .{ .duration = 20 * ms }, .done = &got }) catch |err| {
        if (err != error.TimedOut) return err;
        return .{ got, buf };
    };
    return error.NoTimeout;
}

test "a read that times out says how many bytes came in done" {
    const pipe = try Pipe.open(false);
    defer pipe.close();
    try coframe.write(pipe.w, "hello", .{});
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(readTimesOut, .{pipe.r});
    const got, const buf = try p.await();
    try expectEqual(@as(usize, 5), got);
    try expectEqualSlices(u8, "hello", buf[0..5]);
}

/// The errno of an `error.Io` read, read on the coroutine's own thread.
fn readPastEnd(fd: fd_t) !struct { std.posix.E, usize } {
    var buf: [10]u8 = undefined;
    var got: usize = 99;
    coframe.read(fd, &buf, .{ .done = &got }) catch |err| {
        if (err != error.Io) return err;
        return .{ coframe.lastErrno(), got };
    };
    return error.NoError;
}

test "end of file before all the bytes: error.Io with EPIPE, done = what came" {
    var pipe = try Pipe.open(false);
    defer pipe.close();
    try coframe.write(pipe.w, "abc", .{});
    _ = std.c.close(pipe.w);
    pipe.w = -1;
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(readPastEnd, .{pipe.r});
    const e, const got = try p.await();
    try expectEqual(std.posix.E.PIPE, e);
    try expectEqual(@as(usize, 3), got);
}

fn connectErrno(address: IpAddress) !std.posix.E {
    const fd = try tcpSocket(false);
    defer _ = std.c.close(fd);
    coframe.connect(fd, &address, .{ .timeout = .{ .duration = 5000 * ms } }) catch |err| {
        if (err != error.Io) return err;
        return coframe.lastErrno();
    };
    return error.Connected;
}

test "a refused connect: error.Io with ECONNREFUSED" {
    // Bound but not listening: the port is ours, and a SYN to it gets RST.
    const fd, const address = try loopbackSocket(false, false);
    defer _ = std.c.close(fd);
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(connectErrno, .{address});
    try expectEqual(std.posix.E.CONNREFUSED, try p.await());
}

// ------------------------------------------------- blocking descriptors

/// Each call that cannot be told not to block, on a blocking descriptor.
fn blockingRefused(pipe: Pipe, listener: fd_t, address: IpAddress) !void {
    var buf: [1]u8 = undefined;
    try expectError(error.Invalid, coframe.read(pipe.r, &buf, .{}));
    try expectError(error.Invalid, coframe.readSome(pipe.r, &buf, .{}));
    try expectError(error.Invalid, coframe.write(pipe.w, "x", .{}));
    try expectError(error.Invalid, coframe.accept(listener, .{}));
    const fd = try tcpSocket(true);
    defer _ = std.c.close(fd);
    try expectError(error.Invalid, coframe.connect(fd, &address, .{}));
}

test "a blocking descriptor: refused in a coroutine, read on a plain thread" {
    const pipe = try Pipe.open(true);
    defer pipe.close();
    const listener, const address = try loopbackSocket(true, true);
    defer _ = std.c.close(listener);
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(blockingRefused, .{ pipe, listener, address });
    try p.await();

    // On this thread the same descriptors work: they block.
    try coframe.write(pipe.w, "ok", .{});
    var buf: [2]u8 = undefined;
    try coframe.read(pipe.r, &buf, .{});
    try expectEqualSlices(u8, "ok", &buf);
    // With a deadline: poll before each try, so the deadline holds.
    var got: usize = 99;
    try expectError(error.TimedOut, coframe.read(pipe.r, &buf, .{ .timeout = .{ .duration = 5 * ms }, .done = &got }));
    try expectEqual(@as(usize, 0), got);
}

// --------------------------------------------------------- cancellation

const Recorder = struct {
    started: util.Counter = .{},
    defers: util.Counter = .{},
    canceled: util.Counter = .{},
};

fn recvBlocked(fd: fd_t, rec: *Recorder) !void {
    defer rec.defers.bump();
    rec.started.bump();
    var buf: [8]u8 = undefined;
    // "ab" came; it waits for six more bytes, which never come.
    coframe.recv(fd, &buf, .{}) catch |err| {
        if (err == error.Canceled) rec.canceled.bump();
        return err;
    };
}

test "a coroutine cancelled in recv unwinds: its defers run once" {
    const before = util.frames();
    var fds: [2]fd_t = undefined;
    if (std.c.socketpair(std.c.AF.UNIX, std.c.SOCK.STREAM | std.c.SOCK.CLOEXEC, 0, &fds) != 0) return error.NoSocketPair;
    defer for (fds) |fd| {
        _ = std.c.close(fd);
    };
    try coframe.send(fds[1], "ab", .{});
    var rec: Recorder = .{};
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(recvBlocked, .{ fds[0], &rec });
    try expect(rec.started.reaches(1));
    try coframe.sleep(5 * ms); // into its wait
    try expectEqual(@as(u32, 0), rec.defers.get());
    try p.cancel();
    try expect(rec.defers.reaches(1));
    try util.expectNoLeak(before);
    try expectEqual(@as(u32, 1), rec.defers.get());
    try expectEqual(@as(u32, 1), rec.canceled.get());
    // The bytes it had taken went with it: none are left to read.
    var buf: [2]u8 = undefined;
    try expectError(error.TimedOut, coframe.recv(fds[0], &buf, .{ .timeout = .{ .duration = 0 } }));
}

// ------------------------------------------------------ acceptAddress

fn acceptUnix(listener: fd_t) !void {
    try expectError(error.Invalid, coframe.acceptAddress(listener, .{ .timeout = .{ .duration = 5000 * ms } }));
}

test "acceptAddress on a Unix socket's listener: error.Invalid" {
    const listener = std.c.socket(std.c.AF.UNIX, std.c.SOCK.STREAM | std.c.SOCK.CLOEXEC | std.c.SOCK.NONBLOCK, 0);
    if (listener < 0) return error.NoSocket;
    defer _ = std.c.close(listener);
    // An abstract name (a leading 0 byte): nothing on the file system;
    // the pid in it keeps runs at the same time apart.
    var un: std.posix.sockaddr.un = .{ .path = @splat(0) };
    const name = try std.fmt.bufPrint(un.path[1..], "coframe-zig-test-accept-{d}", .{std.c.getpid()});
    const len: std.posix.socklen_t = @intCast(@offsetOf(std.posix.sockaddr.un, "path") + 1 + name.len);
    if (std.c.bind(listener, @ptrCast(&un), len) != 0) return error.Bind;
    if (std.c.listen(listener, 1) != 0) return error.Listen;
    var rt = try coframe.Runtime.init(.{ .workers = 1 });
    defer rt.deinit();
    var p = try rt.spawn(acceptUnix, .{listener});
    const fd = std.c.socket(std.c.AF.UNIX, std.c.SOCK.STREAM | std.c.SOCK.CLOEXEC, 0);
    if (fd < 0) return error.NoSocket;
    defer _ = std.c.close(fd);
    try coframe.connectSockaddr(fd, @ptrCast(&un), len, .{}); // a plain thread: blocking is fine
    try p.await();
}
