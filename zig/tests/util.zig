//! What the tests share: a counter, waiting for one, the run's size.
const std = @import("std");
const coframe = @import("coframe");

/// A counter that coroutines bump and the test reads.
pub const Counter = struct {
    n: std.atomic.Value(u32) = .init(0),

    pub fn bump(c: *Counter) void {
        _ = c.n.fetchAdd(1, .seq_cst);
    }

    pub fn get(c: *Counter) u32 {
        return c.n.load(.seq_cst);
    }

    /// Whether it reaches `want` within 10 s (spinning, yielding the CPU).
    pub fn reaches(c: *Counter, want: u32) bool {
        const deadline = coframe.now() + 10 * std.time.ns_per_s;
        while (coframe.now() < deadline) {
            if (c.get() >= want) return true;
            std.Thread.yield() catch {};
        }
        return c.get() >= want;
    }
};

/// A cell a coroutine's `suspend` callback puts its token in.
pub const TokenCell = struct {
    id: std.atomic.Value(u64) = .init(0),

    pub fn put(cell: *TokenCell, token: coframe.Token) void {
        cell.id.store(token.handle.id, .seq_cst);
    }

    /// The token put there (taking it out), or null after 10 s.
    pub fn take(cell: *TokenCell) ?coframe.Token {
        const deadline = coframe.now() + 10 * std.time.ns_per_s;
        while (coframe.now() < deadline) {
            const id = cell.id.swap(0, .seq_cst);
            if (id != 0) return .{ .handle = .{ .id = id } };
            std.Thread.yield() catch {};
        }
        return null;
    }
};

/// The `onSuspend` that parks the token in a `TokenCell`.
pub fn park(cell: *TokenCell, token: coframe.Token) void {
    cell.put(token);
}

/// COFRAME_TEST_SMALL set (the valgrind run): fewer rounds.
pub fn small() bool {
    return std.c.getenv("COFRAME_TEST_SMALL") != null;
}

/// `full` rounds, or `reduced` in a small run.
pub fn rounds(full: u32, reduced: u32) u32 {
    return if (small()) reduced else full;
}

/// Frames alive now: `expectNoLeak` compares with it.
pub fn frames() u64 {
    return coframe.liveFrames();
}

/// Every frame made since `before` was freed (within 10 s: detached and
/// cancelled frames are freed by their workers).
pub fn expectNoLeak(before: u64) !void {
    const deadline = coframe.now() + 10 * std.time.ns_per_s;
    while (coframe.liveFrames() > before and coframe.now() < deadline) std.Thread.yield() catch {};
    try std.testing.expectEqual(before, coframe.liveFrames());
}
