//! coframe for Zig: coroutines that can be resumed and cancelled from any
//! thread without a use-after-free, run by a multi-threaded scheduler with
//! an I/O poller, over libcoframe's C ABI (include/coframe.h).
//!
//!     var rt = try coframe.Runtime.init(.{ .workers = 2 });
//!     defer rt.deinit();
//!     var p = try rt.spawn(twice, .{21}); // copies the args tuple into the frame
//!     const v = try p.await();            // blocks a thread, suspends a coroutine
//!
//! Every body runs in cancel-returns mode: once cancelled, its suspension
//! point (a wait, `yield`, `suspend`, an `await`, a lock, a channel) returns
//! `error.Canceled`, so `try` unwinds it and its own `defer` and `errdefer`
//! run, the semantics zig#1363 asked for. docs/ZIG.md has every decision.
//! Written for Zig 0.17.1 (scripts/zig.sh pins it).
const std = @import("std");

/// The C API (include/coframe.h), for what this module does not wrap.
pub const c = @import("c.zig");

pub const Runtime = @import("Runtime.zig");
pub const SpawnOptions = Runtime.SpawnOptions;
pub const Promise = @import("promise.zig").Promise;
pub const AwaitResult = @import("promise.zig").AwaitResult;

/// A `std.Io` whose tasks are this runtime's coroutines (docs/ZIG-IO.md):
/// `var co: coframe.Io = undefined; try co.init(gpa, .{}); const io = co.io();`
pub const Io = @import("Io.zig");

/// The promise `rt.spawn(func, ...)` returns: for arrays and fields.
pub fn PromiseOf(comptime func: anytype) type {
    return Promise(Runtime.ReturnType(func));
}

const sync = @import("sync.zig");
pub const Mutex = sync.Mutex;
pub const Cond = sync.Cond;
pub const Channel = sync.Channel;

// ------------------------------------------------------------------ errors

/// Every error of the library, one per `CORO_E*` code.
pub const Error = error{
    /// `CORO_EINVAL`: a bad argument (a zeroed handle, a deadline below -1,
    /// a coroutine awaiting itself or one of another runtime, a bad fd).
    Invalid,
    /// `CORO_ESTALE`: the handle's reference was consumed already (a second
    /// resume of one token, a second await), or its frame was freed.
    Stale,
    /// `CORO_ESTATE`: not allowed here (a wait on a worker thread outside a
    /// coroutine, `yield` outside one, a lock its caller already holds).
    State,
    /// `CORO_ECANCELED`: the coroutine (or the awaited one) was cancelled.
    Canceled,
    /// `CORO_ETIMEDOUT`: the deadline passed first.
    TimedOut,
    /// `CORO_ENOMEM`.
    OutOfMemory,
    /// `CORO_ELOCKHELD`: a suspension while a noted blocking lock is held (CP.52).
    LockHeld,
    /// `CORO_ESHUTDOWN`: the runtime is shutting down or was shut down.
    Shutdown,
    /// `CORO_EIO`: the OS said no; `lastErrno()` says why.
    Io,
    /// `CORO_EBUSY`: a try-lock found the mutex held.
    Busy,
    /// `CORO_ECLOSED`: the channel is closed (and, for a receiver, empty).
    Closed,
    /// A code this version of the module does not know (a newer library).
    Unexpected,
};

/// The error for a negative `CORO_E*` code.
pub fn errorFromCode(rc: c_int) Error {
    return switch (rc) {
        c.CORO_EINVAL => error.Invalid,
        c.CORO_ESTALE => error.Stale,
        c.CORO_ESTATE => error.State,
        c.CORO_ECANCELED => error.Canceled,
        c.CORO_ETIMEDOUT => error.TimedOut,
        c.CORO_ENOMEM => error.OutOfMemory,
        c.CORO_ELOCKHELD => error.LockHeld,
        c.CORO_ESHUTDOWN => error.Shutdown,
        c.CORO_EIO => error.Io,
        c.CORO_EBUSY => error.Busy,
        c.CORO_ECLOSED => error.Closed,
        else => error.Unexpected,
    };
}

/// The `CORO_E*` code of an error (`error.Unexpected`: `CORO_EINVAL`).
pub fn codeFromError(err: Error) c_int {
    return switch (err) {
        error.Invalid, error.Unexpected => c.CORO_EINVAL,
        error.Stale => c.CORO_ESTALE,
        error.State => c.CORO_ESTATE,
        error.Canceled => c.CORO_ECANCELED,
        error.TimedOut => c.CORO_ETIMEDOUT,
        error.OutOfMemory => c.CORO_ENOMEM,
        error.LockHeld => c.CORO_ELOCKHELD,
        error.Shutdown => c.CORO_ESHUTDOWN,
        error.Io => c.CORO_EIO,
        error.Busy => c.CORO_EBUSY,
        error.Closed => c.CORO_ECLOSED,
    };
}

/// `CORO_OK` (0) or an error.
pub fn check(rc: c_int) Error!void {
    if (rc != c.CORO_OK) return errorFromCode(rc);
}

/// The library's text for an error (`coro_strerror`).
pub fn describe(err: Error) [:0]const u8 {
    return std.mem.span(c.coro_strerror(codeFromError(err)));
}

/// Why the last call that answered `error.Io` failed (the `errno` the
/// library kept). Read it at once, on the same thread: a coroutine is
/// pinned to its worker unless spawned `.migratable`.
pub fn lastErrno() std.posix.E {
    return @fromBackingInt(@intCast(std.c._errno().*));
}

// ------------------------------------------------------------------- time

/// When a wait gives up: `.none` (never), `.duration` (nanoseconds from
/// now), or `.deadline` (a `now()` value: CLOCK_MONOTONIC nanoseconds).
pub const Timeout = union(enum) {
    none,
    duration: u64,
    deadline: i64,

    /// The C API's deadline: -1 for none, else an absolute `now()` value.
    pub fn toDeadline(t: Timeout) i64 {
        return switch (t) {
            .none => -1,
            .duration => |d| deadlineIn(d),
            .deadline => |d| d,
        };
    }
};

/// CLOCK_MONOTONIC in nanoseconds: the clock of every deadline.
pub fn now() i64 {
    return c.coro_now();
}

/// The deadline `ns` nanoseconds from now (saturating).
pub fn deadlineIn(ns: u64) i64 {
    const n: i64 = @intCast(@min(ns, std.math.maxInt(i64)));
    return std.math.add(i64, now(), n) catch std.math.maxInt(i64);
}

// ------------------------------------------------------------------- waits

/// Lets the other runnable coroutines of this worker run.
/// Errors: `State` (not in a coroutine), `Canceled`, `LockHeld`.
pub fn yield() Error!void {
    return check(c.coro_yield());
}

/// Sleeps `ns` nanoseconds: suspends a coroutine, blocks a plain thread.
/// Errors: `Canceled`, `LockHeld`, `State` (a worker thread outside a
/// coroutine), `OutOfMemory`.
pub fn sleep(ns: u64) Error!void {
    return check(c.coro_sleep_until(deadlineIn(ns)));
}

/// Sleeps until `deadline` (a `now()` value) has passed; at once if it has.
/// Errors: as `sleep`, and `Invalid` (a negative deadline).
pub fn sleepUntil(deadline: i64) Error!void {
    if (deadline < 0) return error.Invalid;
    return check(c.coro_sleep_until(deadline));
}

/// Sleeps until cancelled: returns only `error.Canceled` (or an error
/// saying it cannot sleep here: `State`, `Invalid` outside a coroutine).
pub fn sleepForever() Error!void {
    try check(c.coro_sleep_until(-1));
    unreachable;
}

/// What `waitFd` waits for.
pub const Events = packed struct(u32) {
    readable: bool = false,
    writable: bool = false,
    _pad0: u6 = 0,
    /// `CORO_KEEP`: keep the descriptor registered after the wait (Linux;
    /// call `forgetFd` before closing it). docs/API.md, "Kept registrations".
    keep: bool = false,
    _pad1: u23 = 0,
};

comptime {
    std.debug.assert(@as(u32, @bitCast(Events{ .readable = true })) == c.CORO_READABLE);
    std.debug.assert(@as(u32, @bitCast(Events{ .writable = true })) == c.CORO_WRITABLE);
    std.debug.assert(@as(u32, @bitCast(Events{ .keep = true })) == c.CORO_KEEP);
}

/// Waits until `fd` is ready for one of `events` (error and hang-up count
/// as ready) or the timeout passes: suspends a coroutine, blocks a plain
/// thread in poll(2). Do not close `fd` while a coroutine waits on it.
/// Errors: `TimedOut`, `Canceled`, `Invalid` (a negative, closed or
/// unpollable fd), `LockHeld`, `State`, `OutOfMemory`, `Io` (`lastErrno`).
pub fn waitFd(fd: std.posix.fd_t, events: Events, timeout: Timeout) Error!void {
    return check(c.coro_wait_fd(fd, @bitCast(events), timeout.toDeadline()));
}

/// `waitFd(fd, .{ .readable = true }, timeout)`.
pub fn waitReadable(fd: std.posix.fd_t, timeout: Timeout) Error!void {
    return waitFd(fd, .{ .readable = true }, timeout);
}

/// `waitFd(fd, .{ .writable = true }, timeout)`.
pub fn waitWritable(fd: std.posix.fd_t, timeout: Timeout) Error!void {
    return waitFd(fd, .{ .writable = true }, timeout);
}

/// Drops what `.keep` waits left registered for `fd`; call it before
/// closing such a descriptor. Errors: `Invalid`, `State` (a wait on it runs).
pub fn forgetFd(fd: std.posix.fd_t) Error!void {
    return check(c.coro_fd_forget(fd));
}

// ------------------------------------------------------ blocking-style I/O

/// How `read`, `write`, `recv`, `send` and the `...Some` reads run.
pub const IoOptions = struct {
    /// For the whole call, all its waits together.
    timeout: Timeout = .none,
    /// `CORO_KEEP`: the waits keep the descriptor registered (Linux; call
    /// `forgetFd` before closing it). docs/API.md, "Kept registrations".
    keep: bool = false,
    /// Gets the count of bytes moved, also when the call fails: a
    /// timed-out transfer can go on from there.
    done: ?*usize = null,
};

/// How `accept` and `acceptAddress` run.
pub const AcceptOptions = struct {
    timeout: Timeout = .none,
    /// `CORO_KEEP` for the listener, as `IoOptions.keep`.
    keep: bool = false,
};

/// How `connect` runs.
pub const ConnectOptions = struct {
    timeout: Timeout = .none,
};

fn keepFlag(keep: bool) u32 {
    return if (keep) c.CORO_KEEP else 0;
}

/// One of the four C transfers, with `CORO_IO_SOME` when `some`.
fn transfer(comptime call: anytype, fd: std.posix.fd_t, ptr: anytype, len: usize, some: bool, opts: IoOptions) Error!usize {
    var n: usize = 0;
    const flags = keepFlag(opts.keep) | @as(u32, if (some) c.CORO_IO_SOME else 0);
    const rc = call(fd, ptr, len, flags, &n, opts.timeout.toDeadline());
    if (opts.done) |d| d.* = n;
    try check(rc);
    return n;
}

/// Reads all of `buf` from `fd` (`coro_read`): read(2) that waits while
/// nothing is ready, and goes on until `buf` is full. Suspends a coroutine
/// (`fd` must be non-blocking there), blocks a plain thread.
/// Errors: `Io` (`lastErrno()`: `.PIPE` at end of file before `buf.len`
/// bytes), `TimedOut`, `Canceled`, `Invalid` (a bad or closed fd, a
/// blocking fd in a coroutine), `LockHeld`, `State` (a worker thread
/// outside a coroutine that would have to wait), `OutOfMemory`.
pub fn read(fd: std.posix.fd_t, buf: []u8, opts: IoOptions) Error!void {
    _ = try transfer(c.coro_read, fd, buf.ptr, buf.len, false, opts);
}

/// Reads what has come, at least one byte (`coro_read` with
/// `CORO_IO_SOME`), waiting while nothing has: the count, 0 only at end of
/// file (or for an empty `buf`). Errors: as `read`'s.
pub fn readSome(fd: std.posix.fd_t, buf: []u8, opts: IoOptions) Error!usize {
    return transfer(c.coro_read, fd, buf.ptr, buf.len, true, opts);
}

/// Writes all of `bytes` to `fd` (`coro_write`), waiting while it is full.
/// A pipe or socket whose reader is gone raises SIGPIPE, as write(2)
/// does (`send` does not). Errors: as `read`'s (`.PIPE` from the system).
pub fn write(fd: std.posix.fd_t, bytes: []const u8, opts: IoOptions) Error!void {
    _ = try transfer(c.coro_write, fd, bytes.ptr, bytes.len, false, opts);
}

/// `read` for a socket (`coro_recv`, recv(2) with `MSG_DONTWAIT`): the
/// socket may be blocking or not. Errors: as `read`'s.
pub fn recv(fd: std.posix.fd_t, buf: []u8, opts: IoOptions) Error!void {
    _ = try transfer(c.coro_recv, fd, buf.ptr, buf.len, false, opts);
}

/// `readSome` for a socket (`coro_recv` with `CORO_IO_SOME`): 0 only when
/// the peer has closed. Errors: as `read`'s.
pub fn recvSome(fd: std.posix.fd_t, buf: []u8, opts: IoOptions) Error!usize {
    return transfer(c.coro_recv, fd, buf.ptr, buf.len, true, opts);
}

/// `write` for a socket (`coro_send`, send(2) with `MSG_DONTWAIT |
/// MSG_NOSIGNAL`): a gone peer is `Io` with `.PIPE`, never SIGPIPE.
/// Errors: as `read`'s.
pub fn send(fd: std.posix.fd_t, bytes: []const u8, opts: IoOptions) Error!void {
    _ = try transfer(c.coro_send, fd, bytes.ptr, bytes.len, false, opts);
}

/// Accepts a connection on `listener` (`coro_accept`), waiting until one
/// comes: its socket, non-blocking and close-on-exec, which the caller
/// closes. In a coroutine `listener` must be non-blocking.
/// Errors: `Io` (`lastErrno()`: `.MFILE`/`.NFILE` when out of
/// descriptors), `TimedOut`, `Canceled`, `Invalid`, `LockHeld`, `State`,
/// `OutOfMemory`.
pub fn accept(listener: std.posix.fd_t, opts: AcceptOptions) Error!std.posix.fd_t {
    var fd: c_int = -1;
    try check(c.coro_accept(listener, null, null, keepFlag(opts.keep), &fd, opts.timeout.toDeadline()));
    return fd;
}

/// A connection `acceptAddress` took: its socket and the peer's address.
pub const Accepted = struct {
    fd: std.posix.fd_t,
    address: std.Io.net.IpAddress,
};

const PosixAddress = std.Io.Threaded.PosixAddress;

/// `accept` that also gives the peer's address, for an IPv4 or IPv6
/// listener. A peer of another family (a Unix socket's listener) is
/// `error.Invalid`, its connection closed: use `accept` there.
pub fn acceptAddress(listener: std.posix.fd_t, opts: AcceptOptions) Error!Accepted {
    var storage: PosixAddress = undefined;
    var len: std.posix.socklen_t = @sizeOf(PosixAddress);
    var fd: c_int = -1;
    try check(c.coro_accept(listener, @ptrCast(&storage.any), &len, keepFlag(opts.keep), &fd, opts.timeout.toDeadline()));
    switch (storage.any.family) {
        std.posix.AF.INET, std.posix.AF.INET6 => return .{ .fd = fd, .address = std.Io.Threaded.addressFromPosix(&storage) },
        else => {
            _ = std.c.close(fd);
            return error.Invalid;
        },
    }
}

/// Connects the socket `fd` to `address` (`coro_connect`), waiting until
/// the connection is made, refused or the timeout passes. In a coroutine
/// `fd` must be non-blocking. After a failure the socket is of no further
/// use: close it. Errors: `Io` (`lastErrno()`: `.CONNREFUSED` and the
/// like), `TimedOut`, `Canceled`, `Invalid`, `LockHeld`, `State`,
/// `OutOfMemory`.
pub fn connect(fd: std.posix.fd_t, address: *const std.Io.net.IpAddress, opts: ConnectOptions) Error!void {
    var storage: PosixAddress = undefined;
    const len = std.Io.Threaded.addressToPosix(address, &storage);
    return connectSockaddr(fd, &storage.any, len, opts);
}

/// `connect` to an address of any family (a Unix socket's), given as
/// connect(2) takes it. Errors: as `connect`'s.
pub fn connectSockaddr(fd: std.posix.fd_t, address: *const std.posix.sockaddr, len: std.posix.socklen_t, opts: ConnectOptions) Error!void {
    return check(c.coro_connect(fd, @ptrCast(address), len, opts.timeout.toDeadline()));
}

// ----------------------------------------------------------------- suspend

/// The suspend reference of one suspension: consumed by exactly one
/// `resume` or `cancel`, from any thread. A plain value: copy it to where
/// the wake-up comes from. A second use answers `error.Stale`.
pub const Token = struct {
    handle: c.coro_token,

    /// Schedules the suspended coroutine on its worker; its `suspend`
    /// returns. On a cancelled coroutine it only drops the reference.
    /// Errors: `Stale` (consumed already), `Invalid` (a zeroed token).
    pub fn @"resume"(t: Token) Error!void {
        return check(c.coro_resume(t.handle));
    }

    /// Cancels the suspended coroutine: its `suspend` returns
    /// `error.Canceled`, and so does every suspension point after it.
    /// Errors: `Stale`, `Invalid`.
    pub fn cancel(t: Token) Error!void {
        return check(c.coro_cancel_suspend(t.handle));
    }

    pub fn id(t: Token) u64 {
        return t.handle.id;
    }
};

/// Suspends the calling coroutine. Once it has switched out,
/// `onSuspend(context, token)` runs on its worker (a copy of `context` on
/// the suspended coroutine's stack, valid while the callback runs);
/// whoever gets the token resumes or cancels it. Returns when resumed.
/// The callback must be short and must not block or suspend.
///
/// Errors: `Canceled` (the token was cancelled, or the coroutine was and
/// the token has been consumed: a pending `suspend` of a cancelled
/// coroutine returns only once its token is resumed or cancelled),
/// `State` (not in a coroutine), `LockHeld`.
pub fn @"suspend"(context: anytype, comptime onSuspend: fn (@TypeOf(context), Token) void) Error!void {
    const Context = @TypeOf(context);
    // A field after the context, so a zero-size context still has an address.
    const Holder = struct { context: Context, pad: u8 = 0 };
    const Callback = struct {
        fn call(token: c.coro_token, arg: ?*anyopaque) callconv(.c) void {
            const holder: *Holder = @ptrCast(@alignCast(arg.?));
            onSuspend(holder.context, .{ .handle = token });
        }
    };
    var holder: Holder = .{ .context = context };
    return check(c.coro_suspend(&Callback.call, @ptrCast(&holder)));
}

// ------------------------------------------------------------------- about

/// The running coroutine's id (its promise's value); 0 outside a coroutine.
pub fn selfId() u64 {
    return c.coro_self_id();
}

/// Whether the caller runs in a coroutine.
pub fn inCoroutine() bool {
    return c.coro_self_id() != 0;
}

/// Frames alive in this process, in every runtime: for leak checks.
pub fn liveFrames() u64 {
    return c.coro_live_frames();
}

/// The version of the library linked, from its header.
pub const version: std.SemanticVersion = .{
    .major = c.COFRAME_VERSION_MAJOR,
    .minor = c.COFRAME_VERSION_MINOR,
    .patch = c.COFRAME_VERSION_PATCH,
};
