//! A coframe runtime: worker threads, each with its run queue and poller.
//! A plain value (one pointer): copy it into the args of the coroutines
//! that spawn others.
const Runtime = @This();

const std = @import("std");
const coframe = @import("coframe.zig");
const c = coframe.c;
const promise = @import("promise.zig");
const Error = coframe.Error;

ptr: *c.coro_runtime,

pub const Options = struct {
    /// Worker threads; 0: one per available CPU (at most 1,024).
    workers: u32 = 0,
    /// Usable stack bytes per coroutine (at least 16 KiB, rounded up to
    /// pages; a guard page lies below, and an overflow is reported as
    /// "coroutine N overflowed its S-byte stack"); 0: the library's 64 KiB.
    /// The default is 256 KiB in Debug builds, whose frames are large and
    /// whose panic handler needs about 192 KiB to print a stack trace from
    /// a coroutine; 0 (64 KiB) in the release modes. Stacks are reserved,
    /// not committed: a coroutine costs the pages it touches.
    stack_size: usize = default_stack_size,
};

pub const default_stack_size: usize = if (@import("builtin").mode == .debug) 256 * 1024 else 0;

/// Starts the workers. Errors: `OutOfMemory`, `Io` (a thread or a
/// descriptor could not be had: `coframe.lastErrno()`), `Invalid`.
pub fn init(options: Options) Error!Runtime {
    const cfg: c.coro_config = .{
        .struct_size = @sizeOf(c.coro_config),
        .workers = options.workers,
        .stack_size = options.stack_size,
    };
    var out: ?*c.coro_runtime = null;
    try coframe.check(c.coro_runtime_new(&cfg, &out));
    return .{ .ptr = out.? };
}

/// Cancels every live coroutine (their suspension points return
/// `error.Canceled`, so their `defer`s run), waits for them, joins the
/// workers. Handles of its coroutines answer `error.Stale` afterwards.
/// Errors: `State` (called from one of its own workers), `Shutdown` (twice).
pub fn shutdown(rt: Runtime) Error!void {
    return coframe.check(c.coro_runtime_shutdown(rt.ptr));
}

/// `shutdown`, which must succeed: calling it from one of the runtime's
/// own coroutines, or twice, is a bug and panics.
pub fn deinit(rt: *Runtime) void {
    rt.shutdown() catch |err| std.debug.panic("coframe.Runtime.deinit: {s} ({s})", .{ @errorName(err), coframe.describe(err) });
    rt.* = undefined;
}

/// The C handle, for the C API (`coframe.c`).
pub fn native(rt: Runtime) *c.coro_runtime {
    return rt.ptr;
}

/// Writes every live coroutine (id, state, worker, references, what it
/// waits on) to `fd`: `coro_dump`, docs/DEBUGGING.md.
pub fn dump(rt: Runtime, fd: std.posix.fd_t) Error!void {
    return coframe.check(c.coro_dump(rt.ptr, fd));
}

pub const SpawnOptions = struct {
    /// The body keeps no thread-local state across a suspension, so the
    /// scheduler may move it to another worker (`CORO_SPAWN_MIGRATABLE`).
    /// Zig's `threadlocal` variables and `errno` are thread-local state.
    migratable: bool = false,
};

/// The return type of a function.
pub fn ReturnType(comptime func: anytype) type {
    return @typeInfo(@TypeOf(func)).@"fn".return_type.?;
}

/// Starts `func` with `args` (a tuple) as a coroutine. The tuple's bytes
/// are copied into the frame, which owns them until it is freed: the
/// caller may change or drop its tuple at once (a pointer in it still
/// points where it did). The body runs in cancel-returns mode.
///
/// Errors: `Shutdown`, `OutOfMemory`, `Invalid`.
pub fn spawn(rt: Runtime, comptime func: anytype, args: anytype) Error!coframe.Promise(ReturnType(func)) {
    return rt.spawnOptions(.{}, func, args);
}

/// `spawn` with options.
pub fn spawnOptions(
    rt: Runtime,
    options: SpawnOptions,
    comptime func: anytype,
    args: anytype,
) Error!coframe.Promise(ReturnType(func)) {
    const T = ReturnType(func);
    const Args = @TypeOf(args);
    const P = coframe.Promise(T);
    const Slot = P.Slot;

    // The frame's environment: the args tuple and, for a result that does
    // not fit in the entry's pointer-sized return value, its slot.
    const Env = struct {
        args: Args,
        slot: if (promise.inlineResult(T)) void else *Slot,

        fn entry(env_ptr: ?*anyopaque) callconv(.c) ?*anyopaque {
            var zero: @This() = undefined;
            const env: *@This() = if (@sizeOf(@This()) == 0) &zero else @ptrCast(@alignCast(env_ptr.?));
            const result: T = @call(.auto, func, env.args);
            if (comptime promise.inlineResult(T)) return promise.encode(T, result);
            env.slot.value = result;
            return null;
        }

        fn drop(env_ptr: ?*anyopaque) callconv(.c) void {
            const env: *@This() = @ptrCast(@alignCast(env_ptr.?));
            env.slot.releaseFrame();
        }
    };
    comptime {
        if (@alignOf(Env) > 16) @compileError("coframe.spawn: the args tuple of " ++ @typeName(@TypeOf(func)) ++
            " needs an alignment above 16, more than the frame's copy has");
    }

    var out: P = undefined;
    var env: Env = undefined;
    env.args = args;
    if (comptime !promise.inlineResult(T)) {
        const s = try Slot.acquire();
        env.slot = s.slot;
        out.slot = s.slot;
        out.gen = s.gen;
    } else {
        out.slot = {};
        out.gen = {};
    }
    var flags: u32 = @intCast(c.CORO_SPAWN_CANCEL_RETURNS);
    if (options.migratable) flags |= @intCast(c.CORO_SPAWN_MIGRATABLE);
    const drop: c.coro_env_drop = if (comptime promise.inlineResult(T)) null else &Env.drop;
    const env_ptr: ?*const anyopaque = if (@sizeOf(Env) == 0) null else @ptrCast(&env);
    const rc = c.coro_spawn(rt.ptr, &Env.entry, env_ptr, @sizeOf(Env), drop, flags, &out.handle);
    if (rc != c.CORO_OK) {
        // The environment stays the caller's: give the slot back.
        if (comptime !promise.inlineResult(T)) {
            out.slot.releaseFrame();
            out.slot.releasePromise(out.gen);
        }
        return coframe.errorFromCode(rc);
    }
    return out;
}
