#!/bin/sh
# Prints the system libraries a program linking libcoframe.a needs: those
# of Rust's std for the target, as rustc reports them (e.g. "-lgcc_s
# -lutil -lrt -lpthread -lm -ldl -lc"). Used by scripts/install.sh (the
# .pc file's Libs.private, the static CMake target) and by
# scripts/link-so.sh (the shared library's link).
# Usage: scripts/native-libs.sh [RUST_TARGET]   (default: the host)
set -eu

target=${1:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coframe-nsl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
libs=$(echo 'pub fn f() {}' | ${RUSTC:-rustc} ${target:+--target "$target"} --crate-type staticlib \
    --crate-name nsl --print native-static-libs -o "$tmp/libnsl.a" - 2>&1 |
    sed -n 's/.*native-static-libs: *//p' | head -n 1) || true
if [ -z "$libs" ]; then
    libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
    echo "native-libs: rustc did not report native-static-libs; using '$libs'" >&2
fi
printf '%s\n' "$libs"
