//! The Zig package of coframe (docs/ZIG.md). Written for Zig 0.17.1, the
//! version scripts/zig.sh pins.
//!
//!   zig build test      the module's tests (zig/tests/), the example in its
//!                       test mode, and a consumer project that takes this
//!                       package as a dependency by path (zig/consumer/)
//!   zig build demo      runs the example, zig/examples/pipeline.zig
//!                       (arguments after `--` go to it)
//!   zig build valgrind  the tests under valgrind, built for valgrind
//!                       (baseline CPU, LLVM's DWARF), fewer rounds
//!   zig build           installs the example and the tests to zig-out/bin
//!
//! Options:
//!   -Dsystem-coframe=true  link an installed libcoframe, found through
//!                          pkg-config (then the linker's search path)
//!   -Dcoframe-lib=DIR      link the libcoframe.so in DIR (an rpath to DIR is set)
//!   (neither)              link the one `make` builds here: target/release
//!
//! Another project adds coframe with
//!   .dependencies = .{ .coframe = .{ .path = "path/to/coframe" } },
//! in its build.zig.zon and
//!   exe.root_module.addImport("coframe", b.dependency("coframe", .{}).module("coframe"));
//! in its build.zig (zig/consumer/ does exactly this).
const std = @import("std");

/// Where libcoframe comes from.
const Link = union(enum) {
    /// An installed one: pkg-config, then the linker's search path.
    system,
    /// The libcoframe.so in this absolute directory, which is the rpath too.
    dir: []const u8,
};

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});

    const system_lib = b.option(bool, "system-coframe", "Link an installed libcoframe (pkg-config, then the linker's search path)") orelse false;
    const lib_dir = b.option([]const u8, "coframe-lib", "Directory holding the libcoframe.so to link (default: target/release)");
    if (system_lib and lib_dir != null) std.debug.panic("coframe: -Dsystem-coframe and -Dcoframe-lib exclude each other", .{});
    const link: Link = if (system_lib)
        .system
    else
        .{ .dir = absolute(b, lib_dir orelse b.pathJoin(&.{ rootPath(b), "target", "release" })) };

    // The module `coframe`, for this package and the ones that depend on it.
    const coframe = b.addModule("coframe", moduleOptions(b, target, optimize));
    linkCoframe(b, coframe, link);

    // ----------------------------------------------------------------
    // Tests: zig/tests/*.zig against the module, as another package sees it.
    const tests = addTests(b, coframe, target, optimize, null);
    b.installArtifact(tests);
    const test_step = b.step("test", "Run the tests of the Zig package");
    test_step.dependOn(&b.addRunArtifact(tests).step);

    // The tests under valgrind: a build of their own, since valgrind 3.19
    // knows neither every instruction of the native CPU nor the DWARF 5
    // forms of Zig's own backend. The runner's plain mode: one line a test.
    const vg_target = b.resolveTargetQuery(.{ .cpu_model = .baseline });
    const vg_coframe = b.createModule(moduleOptions(b, vg_target, optimize));
    linkCoframe(b, vg_coframe, link);
    const vg_tests = addTests(b, vg_coframe, vg_target, optimize, true);
    // (`env`, not setEnvironmentVariable, which would freeze the whole
    // environment of the configure run into the cached configuration.)
    const valgrind = b.addSystemCommand(&.{
        "env",                              "COFRAME_TEST_SMALL=1",       "valgrind",
        "-q",                               "--error-exitcode=99",        "--leak-check=full",
        "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "--fair-sched=yes",
    });
    valgrind.addArtifactArg(vg_tests);
    valgrind.has_side_effects = true;
    const valgrind_step = b.step("valgrind", "Run the tests under valgrind (fewer rounds)");
    valgrind_step.dependOn(&valgrind.step);

    // ----------------------------------------------------------------
    // The example: zig/examples/pipeline.zig.
    const example = b.addExecutable(.{
        .name = "coframe-pipeline",
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig/examples/pipeline.zig"),
            .target = target,
            .optimize = optimize,
            .imports = &.{.{ .name = "coframe", .module = coframe }},
        }),
    });
    b.installArtifact(example);
    const demo = b.addRunArtifact(example);
    demo.addPassthruArgs();
    b.step("demo", "Run the example (zig/examples/pipeline.zig)").dependOn(&demo.step);
    // In `zig build test`: a small run, checked by its exit status.
    const example_small = b.addRunArtifact(example);
    example_small.addArgs(&.{ "--quiet", "4", "300" });
    test_step.dependOn(&example_small.step);

    // The consumer project: a package that takes this one by path, built
    // and run by a `zig build` of its own.
    const consumer = b.addSystemCommand(&.{ b.graph.zig_exe, "build", "run" });
    consumer.setCwd(b.path("zig/consumer"));
    consumer.has_side_effects = true;
    test_step.dependOn(&consumer.step);

    // ----------------------------------------------------------------
    // coframe.Io (issue 19, points 3 and 4; docs/ZIG-IO.md): zig/Io.zig,
    // in the module as `coframe.Io`.
    //   zig/tests/io_tests.zig   its own tests, in `zig build test`
    //   zig/tests/io_run.zig     runs zig/tests/io_program.zig (written only
    //                            against std.Io) on coframe.Io and on
    //                            std.Io.Threaded: `zig build io-run -- both`
    //                            fails unless the two reports are the same;
    //                            `zig build test` runs that too
    //   benches/zig/iobench.zig  the bench (`zig build iobench`: fast mode,
    //                            baseline CPU, for callgrind; make bench)
    const io_tests = addIoTest(b, coframe, target, optimize, "zig/tests/io_tests.zig", "coframe-io-test", null);
    b.installArtifact(io_tests);
    test_step.dependOn(&b.addRunArtifact(io_tests).step);
    const io_run = addIoExe(b, coframe, target, optimize, "zig/tests/io_run.zig", "coframe-io-run", null);
    b.installArtifact(io_run);
    const io_run_step = b.addRunArtifact(io_run);
    io_run_step.addPassthruArgs();
    b.step("io-run", "Run the std.Io program on coframe.Io and/or std.Io.Threaded (-- coframe|threaded|both)").dependOn(&io_run_step.step);
    const io_same = b.addRunArtifact(io_run);
    io_same.addArg("both");
    io_same.expectExitCode(0);
    test_step.dependOn(&io_same.step);
    // Under valgrind with the tests above: io_tests and a small `both`.
    const vg_io_tests = addIoTest(b, vg_coframe, vg_target, optimize, "zig/tests/io_tests.zig", "coframe-io-test-valgrind", true);
    const vg_io_run = addIoExe(b, vg_coframe, vg_target, optimize, "zig/tests/io_run.zig", "coframe-io-run-valgrind", true);
    for ([_]*std.Build.Step.Compile{ vg_io_tests, vg_io_run }) |bin| {
        const run = b.addSystemCommand(&.{
            "env",                              "COFRAME_TEST_SMALL=1",       "valgrind",
            "-q",                               "--error-exitcode=99",        "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "--fair-sched=yes",
        });
        run.addArtifactArg(bin);
        if (bin == vg_io_run) run.addArgs(&.{ "both", "--connections", "4", "--messages", "20" });
        run.has_side_effects = true;
        valgrind_step.dependOn(&run.step);
    }
    // The bench: fast, for the baseline CPU (valgrind decodes it; the C
    // benches are baseline too), whatever -Doptimize says.
    const bench_coframe = b.createModule(moduleOptions(b, vg_target, .fast));
    linkCoframe(b, bench_coframe, link);
    const iobench = b.addExecutable(.{
        .name = "iobench",
        .root_module = b.createModule(.{
            .root_source_file = b.path("benches/zig/iobench.zig"),
            .target = vg_target,
            .optimize = .fast,
            .link_libc = true,
            .imports = &.{.{ .name = "coframe", .module = bench_coframe }},
        }),
    });
    b.step("iobench", "Install benches/zig/iobench.zig (fast, baseline CPU) to zig-out/bin").dependOn(&b.addInstallArtifact(iobench, .{}).step);
    // ----------------------------------------------------------------
}

fn addIoTest(
    b: *std.Build,
    coframe: *std.Build.Module,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
    root: []const u8,
    name: []const u8,
    use_llvm: ?bool,
) *std.Build.Step.Compile {
    return b.addTest(.{ .name = name, .use_llvm = use_llvm, .root_module = ioModule(b, coframe, target, optimize, root) });
}

fn addIoExe(
    b: *std.Build,
    coframe: *std.Build.Module,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
    root: []const u8,
    name: []const u8,
    use_llvm: ?bool,
) *std.Build.Step.Compile {
    return b.addExecutable(.{ .name = name, .use_llvm = use_llvm, .root_module = ioModule(b, coframe, target, optimize, root) });
}

fn ioModule(
    b: *std.Build,
    coframe: *std.Build.Module,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
    root: []const u8,
) *std.Build.Module {
    return b.createModule(.{
        .root_source_file = b.path(root),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .imports = b.graph.arena.dupe(std.Build.Module.Import, &.{
            .{ .name = "coframe", .module = coframe },
        }) catch @panic("OOM"),
    });
}

/// zig/coframe.zig, importing the C API: include/coframe.h through
/// translate-c, a module only zig/c.zig imports (Zig 0.17 has no @cImport).
fn moduleOptions(b: *std.Build, target: std.Build.ResolvedTarget, optimize: std.builtin.Optimize) std.Build.Module.CreateOptions {
    const translate = b.addTranslateC(.{
        .root_source_file = b.path("include/coframe.h"),
        .target = target,
        .optimize = optimize,
    });
    return .{
        .root_source_file = b.path("zig/coframe.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .imports = b.graph.arena.dupe(std.Build.Module.Import, &.{
            .{ .name = "coframe_h", .module = translate.createModule() },
        }) catch @panic("OOM"),
    };
}

fn linkCoframe(b: *std.Build, m: *std.Build.Module, link: Link) void {
    switch (link) {
        .system => m.linkSystemLibrary("coframe", .{ .use_pkg_config = .yes }),
        .dir => |dir| {
            // Check that the library is there, with the soname link next to
            // it (`make` makes it; cargo alone does not). The check's output
            // directory (which holds no header) joins the include path, so
            // that every compilation using the module, a dependent
            // package's too, comes after the check.
            const check = b.addSystemCommand(&.{
                "sh", "-c",
                \\test -f "$1/libcoframe.so" || {
                \\    echo "coframe: $1/libcoframe.so is missing: run 'make' in the coframe tree, or use -Dcoframe-lib=DIR or -Dsystem-coframe=true" >&2
                \\    exit 1
                \\}
                \\test -e "$1/libcoframe.so.0" || ln -sf libcoframe.so "$1/libcoframe.so.0"
                \\echo "$1"
                ,
                "sh", dir,
            });
            check.has_side_effects = true;
            m.addIncludePath(check.captureStdOut(.{}).dirname());
            m.addLibraryPath(.{ .cwd_relative = dir });
            m.addRPath(.{ .cwd_relative = dir });
            m.linkSystemLibrary("coframe", .{ .use_pkg_config = .no });
        },
    }
}

fn addTests(
    b: *std.Build,
    coframe: *std.Build.Module,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.Optimize,
    use_llvm: ?bool,
) *std.Build.Step.Compile {
    return b.addTest(.{
        .name = if (use_llvm == true) "coframe-test-valgrind" else "coframe-test",
        .use_llvm = use_llvm,
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig/tests/main.zig"),
            .target = target,
            .optimize = optimize,
            .link_libc = true,
            .imports = b.graph.arena.dupe(std.Build.Module.Import, &.{
                .{ .name = "coframe", .module = coframe },
            }) catch @panic("OOM"),
        }),
    });
}

/// The package's root directory (as given: absolute when `zig build` runs
/// in it, relative with --build-file).
fn rootPath(b: *std.Build) []const u8 {
    return b.root.root_dir.path orelse ".";
}

/// `p` made absolute against the current directory: an rpath must be.
fn absolute(b: *std.Build, p: []const u8) []const u8 {
    if (std.fs.path.isAbsolute(p)) return p;
    const cwd = std.process.currentPathAlloc(b.graph.io, b.graph.arena) catch @panic("coframe: cannot read the current directory");
    return std.fs.path.resolve(b.graph.arena, &.{ cwd, p }) catch @panic("OOM");
}
