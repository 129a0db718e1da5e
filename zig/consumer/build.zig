//! A project that uses coframe as a dependency by path, as any other Zig
//! project would: `zig build run` here builds and runs src/main.zig
//! (the coframe package's `zig build test` does exactly that).
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});
    // Options of the coframe package pass through: `zig build run
    // -Dsystem-coframe=true` links an installed libcoframe.
    const system = b.option(bool, "system-coframe", "Link an installed libcoframe") orelse false;
    const coframe = b.dependency("coframe", .{ .target = target, .optimize = optimize, .@"system-coframe" = system });

    const exe = b.addExecutable(.{
        .name = "consumer",
        .root_module = b.createModule(.{
            .root_source_file = b.path("src/main.zig"),
            .target = target,
            .optimize = optimize,
            .imports = &.{.{ .name = "coframe", .module = coframe.module("coframe") }},
        }),
    });
    b.installArtifact(exe);
    const run = b.addRunArtifact(exe);
    b.step("run", "Build and run the consumer").dependOn(&run.step);
}
