//! host.zig: coframe from Zig, through `zig translate-c` of coframe.h
//! (DESIGN.md section 2's "reached from Zig"; the Makefile writes the
//! translation to build/coframe.zig).
//!
//!   copy       a coroutine reads its frame's own copy of the environment,
//!              not the caller's struct, which changes right after spawn
//!   resume     a coroutine suspends, the main thread resumes its token;
//!              a second resume and a second await answer CORO_ESTALE; the
//!              coro_defer ran once, the coro_errdefer not at all
//!   cancel     coro_cancel_suspend on a suspended coroutine runs its defer
//!              and its errdefer once each, the body never runs again, and
//!              the await answers CORO_ECANCELED
//!   returns    with CORO_SPAWN_CANCEL_RETURNS the cancelled suspension
//!              returns CORO_ECANCELED to the body, so its Zig `defer` runs
//!   yield      two coroutines on two workers yield 1,000 times each and
//!              count every turn
//!   misuse     coro_yield outside a coroutine: CORO_ESTATE; zeroed
//!              handles: CORO_EINVAL; coro_self_id outside: 0
//!
//! Ends with "zig_host: N passed, N failed"; exits 1 on any failure.
const std = @import("std");
const c = @import("coframe.zig");

var passed: u32 = 0;
var failed: u32 = 0;

fn check(ok: bool, what: []const u8) void {
    if (ok) {
        _ = @atomicRmw(u32, &passed, .Add, 1, .seq_cst);
    } else {
        _ = @atomicRmw(u32, &failed, .Add, 1, .seq_cst);
        std.debug.print("zig_host: CHECK failed: {s}\n", .{what});
    }
}

fn checkRc(rc: c_int, want: c_int, what: []const u8) void {
    if (rc == want) {
        _ = @atomicRmw(u32, &passed, .Add, 1, .seq_cst);
    } else {
        _ = @atomicRmw(u32, &failed, .Add, 1, .seq_cst);
        std.debug.print("zig_host: CHECK failed: {s}: got {d}, want {d}\n", .{ what, rc, want });
    }
}

/// Waits until `cell` is not 0 (a worker stores it) and takes it; 0 after
/// 10 s.
fn take(cell: *u64) u64 {
    const deadline = c.coro_now() + 10 * std.time.ns_per_s;
    while (c.coro_now() < deadline) {
        const v = @atomicRmw(u64, cell, .Xchg, 0, .seq_cst);
        if (v != 0) return v;
    }
    return 0;
}

/// Waits until `cell` reaches `want`; whether it did within 10 s.
fn reaches(cell: *u32, want: u32) bool {
    const deadline = c.coro_now() + 10 * std.time.ns_per_s;
    while (c.coro_now() < deadline) {
        if (@atomicLoad(u32, cell, .seq_cst) >= want) return true;
    }
    return false;
}

// ------------------------------------------------------------------ copy

const Args = extern struct { a: i64, b: i64 };

fn sumBody(env: ?*anyopaque) callconv(.c) ?*anyopaque {
    const args: *Args = @ptrCast(@alignCast(env.?));
    return @ptrFromInt(@as(usize, @intCast(args.a + args.b)));
}

fn testCopy(rt: ?*c.coro_runtime) void {
    var args = Args{ .a = 40, .b = 2 };
    var p = c.coro_promise{};
    checkRc(c.coro_spawn(rt, &sumBody, &args, @sizeOf(Args), null, 0, &p), c.CORO_OK, "copy: spawn");
    args.a = 1000; // the frame keeps its own copy (CP.51)
    var res: ?*anyopaque = null;
    checkRc(c.coro_await(p, &res), c.CORO_OK, "copy: await");
    check(@intFromPtr(res) == 42, "copy: the body read its own copy of the environment");
}

// ------------------------------------------------------- resume, cancel

var parked: u64 = 0; // the token of the last suspension
var defers: u32 = 0;
var errdefers: u32 = 0;
var continued: u32 = 0; // bodies that ran after their suspension

fn park(token: c.coro_token, arg: ?*anyopaque) callconv(.c) void {
    _ = arg;
    @atomicStore(u64, &parked, token.id, .seq_cst);
}

fn countDefer(arg: ?*anyopaque) callconv(.c) void {
    _ = arg;
    _ = @atomicRmw(u32, &defers, .Add, 1, .seq_cst);
}

fn countErrdefer(arg: ?*anyopaque) callconv(.c) void {
    _ = arg;
    _ = @atomicRmw(u32, &errdefers, .Add, 1, .seq_cst);
}

fn parkBody(env: ?*anyopaque) callconv(.c) ?*anyopaque {
    _ = env;
    checkRc(c.coro_defer(&countDefer, null), c.CORO_OK, "coro_defer");
    checkRc(c.coro_errdefer(&countErrdefer, null), c.CORO_OK, "coro_errdefer");
    checkRc(c.coro_suspend(&park, null), c.CORO_OK, "coro_suspend returns once resumed");
    _ = @atomicRmw(u32, &continued, .Add, 1, .seq_cst);
    return @ptrFromInt(7);
}

/// Spawns parkBody with the counters at 0 and returns the token of its
/// suspension (0 if none came).
fn spawnParked(rt: ?*c.coro_runtime, p: *c.coro_promise, what: []const u8) c.coro_token {
    @atomicStore(u32, &defers, 0, .seq_cst);
    @atomicStore(u32, &errdefers, 0, .seq_cst);
    @atomicStore(u32, &continued, 0, .seq_cst);
    checkRc(c.coro_spawn(rt, &parkBody, null, 0, null, 0, p), c.CORO_OK, what);
    const token = c.coro_token{ .id = take(&parked) };
    check(token.id != 0, what);
    return token;
}

fn testResume(rt: ?*c.coro_runtime) void {
    var p = c.coro_promise{};
    const token = spawnParked(rt, &p, "resume: spawned and suspended");
    checkRc(c.coro_resume(token), c.CORO_OK, "resume: first resume");
    checkRc(c.coro_resume(token), c.CORO_ESTALE, "resume: second resume of one token");
    var res: ?*anyopaque = null;
    checkRc(c.coro_await(p, &res), c.CORO_OK, "resume: await");
    check(@intFromPtr(res) == 7, "resume: the result");
    checkRc(c.coro_await(p, &res), c.CORO_ESTALE, "resume: second await");
    check(@atomicLoad(u32, &defers, .seq_cst) == 1, "resume: the defer ran once");
    check(@atomicLoad(u32, &errdefers, .seq_cst) == 0, "resume: no errdefer at completion");
}

fn testCancel(rt: ?*c.coro_runtime) void {
    var p = c.coro_promise{};
    const token = spawnParked(rt, &p, "cancel: spawned and suspended");
    checkRc(c.coro_cancel_suspend(token), c.CORO_OK, "cancel: cancel_suspend");
    checkRc(c.coro_await(p, null), c.CORO_ECANCELED, "cancel: await");
    check(@atomicLoad(u32, &defers, .seq_cst) == 1, "cancel: the defer ran once");
    check(@atomicLoad(u32, &errdefers, .seq_cst) == 1, "cancel: the errdefer ran once");
    check(@atomicLoad(u32, &continued, .seq_cst) == 0, "cancel: the body never ran again");
    checkRc(c.coro_resume(token), c.CORO_ESTALE, "cancel: the consumed token");
}

// -------------------------------------------------------------- returns

var zig_defers: u32 = 0;
var seen_rc: c_int = 1;

fn returnsBody(env: ?*anyopaque) callconv(.c) ?*anyopaque {
    _ = env;
    defer _ = @atomicRmw(u32, &zig_defers, .Add, 1, .seq_cst);
    @atomicStore(c_int, &seen_rc, c.coro_suspend(&park, null), .seq_cst);
    return null;
}

fn testReturns(rt: ?*c.coro_runtime) void {
    var p = c.coro_promise{};
    const flags: u32 = @intCast(c.CORO_SPAWN_CANCEL_RETURNS);
    checkRc(c.coro_spawn(rt, &returnsBody, null, 0, null, flags, &p), c.CORO_OK, "returns: spawn");
    const token = c.coro_token{ .id = take(&parked) };
    check(token.id != 0, "returns: the coroutine suspended");
    checkRc(c.coro_cancel_suspend(token), c.CORO_OK, "returns: cancel_suspend");
    checkRc(c.coro_await(p, null), c.CORO_ECANCELED, "returns: await");
    check(@atomicLoad(c_int, &seen_rc, .seq_cst) == c.CORO_ECANCELED, "returns: the body saw CORO_ECANCELED");
    check(@atomicLoad(u32, &zig_defers, .seq_cst) == 1, "returns: the body's Zig defer ran");
}

// ---------------------------------------------------------------- yield

var turns: u32 = 0;

fn yieldBody(env: ?*anyopaque) callconv(.c) ?*anyopaque {
    _ = env;
    var i: u32 = 0;
    while (i < 1000) : (i += 1) {
        _ = @atomicRmw(u32, &turns, .Add, 1, .seq_cst);
        if (c.coro_yield() != c.CORO_OK) return null;
    }
    return @ptrFromInt(1);
}

fn testYield(rt: ?*c.coro_runtime) void {
    var p: [2]c.coro_promise = .{ .{}, .{} };
    for (&p) |*one| checkRc(c.coro_spawn(rt, &yieldBody, null, 0, null, 0, one), c.CORO_OK, "yield: spawn");
    for (p) |one| {
        var res: ?*anyopaque = null;
        checkRc(c.coro_await(one, &res), c.CORO_OK, "yield: await");
        check(@intFromPtr(res) == 1, "yield: every coro_yield returned CORO_OK");
    }
    check(reaches(&turns, 2000), "yield: 2,000 turns");
}

// --------------------------------------------------------------- misuse

fn testMisuse() void {
    checkRc(c.coro_yield(), c.CORO_ESTATE, "misuse: coro_yield outside a coroutine");
    checkRc(c.coro_resume(c.coro_token{}), c.CORO_EINVAL, "misuse: zeroed token");
    checkRc(c.coro_await(c.coro_promise{}, null), c.CORO_EINVAL, "misuse: zeroed promise");
    check(c.coro_self_id() == 0, "misuse: coro_self_id outside a coroutine");
}

pub fn main() void {
    const frames = c.coro_live_frames();
    var cfg = c.coro_config{ .struct_size = @sizeOf(c.coro_config), .workers = 2, .stack_size = 0 };
    var rt: ?*c.coro_runtime = null;
    checkRc(c.coro_runtime_new(&cfg, &rt), c.CORO_OK, "coro_runtime_new");
    if (rt != null) {
        testCopy(rt);
        testResume(rt);
        testCancel(rt);
        testReturns(rt);
        testYield(rt);
        testMisuse();
        checkRc(c.coro_runtime_shutdown(rt), c.CORO_OK, "coro_runtime_shutdown");
    }
    check(c.coro_live_frames() == frames, "every frame was freed");
    const f = @atomicLoad(u32, &failed, .seq_cst);
    std.debug.print("zig_host: {d} passed, {d} failed\n", .{ @atomicLoad(u32, &passed, .seq_cst), f });
    if (f != 0) std.process.exit(1);
}
