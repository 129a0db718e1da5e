//! The tests of the Zig package: `zig build test`, and `zig build
//! valgrind` (the same tests built for valgrind, COFRAME_TEST_SMALL=1:
//! fewer rounds). docs/ZIG.md, "Tests", says what each file covers.
const std = @import("std");
const coframe = @import("coframe");

test {
    _ = @import("spawn.zig");
    _ = @import("cancel.zig");
    _ = @import("race.zig");
    _ = @import("waits.zig");
    _ = @import("sync.zig");
    _ = @import("misuse.zig");
    _ = @import("blocking_io.zig");
}

test "every declaration of the module and of the C API compiles" {
    std.testing.refAllDecls(coframe);
    std.testing.refAllDecls(coframe.c);
}
