//! Runs `io_program.zig` (written only against `std.Io`) on `coframe.Io`,
//! on `std.Io.Threaded`, or on both, and prints what it wrote.
//!
//!   io_run coframe|threaded|both [--connections N] [--messages M] [--workers W]
//!
//! `both` runs it on each, prints both reports and exits 1 unless they are
//! the same, line for line. Exits 1 on any error. `make test` and
//! `zig build test` run `both`.
const std = @import("std");
const Io = std.Io;
const coframe = @import("coframe");
const program = @import("io_program.zig");

const Which = enum { coframe, threaded, both };

fn runOn(which: Which, gpa: std.mem.Allocator, options: program.Options, workers: u32, report: *Io.Writer.Allocating) !void {
    switch (which) {
        .coframe => {
            var co: coframe.Io = undefined;
            try co.init(gpa, .{ .workers = workers });
            defer co.deinit();
            try program.run(co.io(), options, &report.writer);
            if (co.liveTasks() != 0) return error.TasksLeftRunning;
        },
        .threaded => {
            var t: Io.Threaded = .init(gpa, .{});
            defer t.deinit();
            try program.run(t.io(), options, &report.writer);
        },
        .both => unreachable,
    }
}

pub fn main(init: std.process.Init) !void {
    const gpa = init.gpa;
    const io = init.io;
    var which: Which = .both;
    var options: program.Options = .{};
    var workers: u32 = 2;
    var it = init.minimal.args.iterate();
    _ = it.skip();
    while (it.next()) |arg| {
        if (std.mem.eql(u8, arg, "--connections")) {
            options.connections = try std.fmt.parseInt(u32, it.next() orelse return error.MissingValue, 10);
        } else if (std.mem.eql(u8, arg, "--messages")) {
            options.messages = try std.fmt.parseInt(u32, it.next() orelse return error.MissingValue, 10);
        } else if (std.mem.eql(u8, arg, "--workers")) {
            workers = try std.fmt.parseInt(u32, it.next() orelse return error.MissingValue, 10);
        } else {
            which = std.meta.stringToEnum(Which, arg) orelse return error.UnknownArgument;
        }
    }

    const stdout = Io.File.stdout();
    switch (which) {
        .coframe, .threaded => {
            var report: Io.Writer.Allocating = .init(gpa);
            defer report.deinit();
            const t0 = Io.Clock.awake.now(io);
            try runOn(which, gpa, options, workers, &report);
            const ms = t0.durationTo(Io.Clock.awake.now(io)).toMilliseconds();
            try stdout.writeStreamingAll(io, report.written());
            var line: [128]u8 = undefined;
            try stdout.writeStreamingAll(io, try std.fmt.bufPrint(&line, "io_run: {t} done in {d} ms\n", .{ which, ms }));
        },
        .both => {
            var a: Io.Writer.Allocating = .init(gpa);
            defer a.deinit();
            var b: Io.Writer.Allocating = .init(gpa);
            defer b.deinit();
            try runOn(.coframe, gpa, options, workers, &a);
            try runOn(.threaded, gpa, options, workers, &b);
            try stdout.writeStreamingAll(io, "--- coframe.Io\n");
            try stdout.writeStreamingAll(io, a.written());
            try stdout.writeStreamingAll(io, "--- std.Io.Threaded\n");
            try stdout.writeStreamingAll(io, b.written());
            if (!std.mem.eql(u8, a.written(), b.written())) {
                try stdout.writeStreamingAll(io, "io_run: the reports differ\n");
                return error.ReportsDiffer;
            }
            try stdout.writeStreamingAll(io, "io_run: the same report on coframe.Io and std.Io.Threaded\n");
        },
    }
}

test "io_program gives the same report on coframe.Io and std.Io.Threaded" {
    const gpa = std.testing.allocator;
    const options: program.Options = .{ .connections = 4, .messages = 50 };
    var a: Io.Writer.Allocating = .init(gpa);
    defer a.deinit();
    var b: Io.Writer.Allocating = .init(gpa);
    defer b.deinit();
    try runOn(.coframe, gpa, options, 2, &a);
    try runOn(.threaded, gpa, options, 2, &b);
    try std.testing.expectEqualStrings(b.written(), a.written());
}
