//! A program built against the coframe package from another project.
//! README.md's Zig quick look is built and run in a copy of this project
//! (scripts/readme-zig.sh), with its own main.zig in place of this one.
const std = @import("std");
const coframe = @import("coframe");

fn greet(name: []const u8, times: u32) !usize {
    var n: usize = 0;
    for (0..times) |_| {
        try coframe.yield();
        n += name.len;
    }
    return n;
}

pub fn main() !void {
    var rt = try coframe.Runtime.init(.{ .workers = 2 });
    defer rt.deinit();
    var p = try rt.spawn(greet, .{ "consumer", 3 });
    const n = try p.await();
    std.debug.print("consumer: coframe {d}.{d}.{d} as a dependency: {d} bytes greeted\n", .{
        coframe.version.major, coframe.version.minor, coframe.version.patch, n,
    });
    if (n != 24) return error.WrongResult;
}
