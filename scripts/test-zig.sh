#!/bin/sh
# `make test-zig`: the Zig package (build.zig, zig/; docs/ZIG.md), one line
# per run as in ffi-tests (ffi-tests/run-test.sh), then
# "zig: N passed, N failed". With the Zig that scripts/zig.sh pins.
#
#   zig-fmt           zig fmt --check build.zig zig
#   zig-build-test    zig build test: the module's tests (zig/tests/), the
#                     example small (zig/examples/pipeline.zig), and the
#                     consumer project that takes the package by path
#   zig-valgrind      zig build valgrind: the tests under valgrind, fewer rounds
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
if command -v valgrind >/dev/null 2>&1; then
    run zig-valgrind $zig build valgrind --summary line
else
    run zig-valgrind sh -c 'echo "valgrind is missing: scripts/deps.sh installs it"; exit 77'
fi
run zig-safe         $zig build test -Doptimize=safe --summary line
run zig-readme       sh scripts/readme-zig.sh
sh ffi-tests/run-test.sh --summary "$results" zig
