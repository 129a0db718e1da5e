#!/bin/sh
# `make test-zig`: the Zig package (build.zig, zig/; docs/ZIG.md), one line
# per run as in ffi-tests (ffi-tests/run-test.sh), then
# "zig: N passed, N failed". With the Zig that scripts/zig.sh pins.
#
#   zig-fmt           zig fmt --check build.zig zig
#   zig-build-test    zig build test: the module's tests (zig/tests/), the
#                     example small (zig/examples/pipeline.zig), the
#                     consumer project that takes the package by path, and
#                     coframe.Io's tests (zig/tests/io_tests.zig, and
#                     io_run.zig's std.Io program on both implementations)
#   zig-io-coframe    zig/tests/io_program.zig, written only against std.Io,
#                     on coframe.Io; prints its report (docs/ZIG-IO.md)
#   zig-io-threaded   the same program on std.Io.Threaded
#   zig-io-same       both, and fails unless the reports are the same,
#                     line for line; zig-io-same-1-worker: on one worker,
#                     with 32 connections
#   zig-valgrind      zig build valgrind: the tests under valgrind, fewer
#                     rounds (coframe.Io's too, and a small zig-io-same)
#   zig-safe          zig build test -Doptimize=safe: the same, optimised with
#                     safety checks (ReleaseSafe)
#   zig-readme        README.md's Zig blocks (scripts/readme-zig.sh)
#
# Needs the library first (`make build`). The first run also fills Zig's
# global cache (the build runner, compiler_rt): about 1.5 minutes on 2 cores.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
zig=$(sh scripts/zig.sh) || exit 1
results=$root/target/zig-test-results
rm -f "$results"
run() { sh ffi-tests/run-test.sh "$results" "$@"; }

run zig-fmt          $zig fmt --check build.zig zig
run zig-build-test   $zig build test --summary line
run zig-io-coframe   $zig build io-run -- coframe
run zig-io-threaded  $zig build io-run -- threaded
run zig-io-same      $zig build io-run -- both
run zig-io-same-1-worker $zig build io-run -- both --workers 1 --connections 32
if command -v valgrind >/dev/null 2>&1; then
    run zig-valgrind $zig build valgrind --summary line
else
    run zig-valgrind sh -c 'echo "valgrind is missing: scripts/deps.sh installs it"; exit 77'
fi
run zig-safe         $zig build test -Doptimize=safe --summary line
run zig-readme       sh scripts/readme-zig.sh
sh ffi-tests/run-test.sh --summary "$results" zig
