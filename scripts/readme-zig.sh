#!/bin/sh
# Builds and runs every ```zig block of README.md (the Zig quick look), so
# the README cannot show Zig that no longer builds or works. Each block
# becomes the main.zig of a copy of zig/consumer/ (a project that takes the
# coframe package by path) under target/zig-readme/, built and run by
# `zig build run` with the pinned Zig (scripts/zig.sh). Run by `make
# test-zig`.
#
#   readme-zig.sh [DIR [OPTION...]]
#
# DIR: the build directory's name in target/ (zig-readme); it stays there,
# as zig/consumer's build.zig.zon takes the package at ../.. from it. The
# OPTIONs (and steps) go to `zig build run` (scripts/test-deb.sh passes
# zig-readme-deb install --prefix DIR -Dsystem-coframe=true).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
zig=$(sh "$root/scripts/zig.sh")
out=$root/target/${1:-zig-readme}
if [ $# -gt 0 ]; then shift; fi
mkdir -p "$out/src"
cp "$root/zig/consumer/build.zig" "$root/zig/consumer/build.zig.zon" "$out/"
awk -v out="$out" '
    /^```zig$/ { n++; file = sprintf("%s/readme-%d.zig", out, n); inside = 1; next }
    /^```/     { inside = 0; next }
    inside     { print > file }
    END        { print n + 0 }
' "$root/README.md" > "$out/readme-count"
n=$(cat "$out/readme-count")
[ "$n" -gt 0 ] || { echo "readme-zig: no Zig block in README.md" >&2; exit 1; }
i=1
while [ "$i" -le "$n" ]; do
    cp "$out/readme-$i.zig" "$out/src/main.zig"
    if ! (cd "$out" && timeout 300 $zig build run "$@") > "$out/readme-$i.out" 2>&1; then
        echo "readme-zig: README.md's Zig block $i failed:" >&2
        cat "$out/readme-$i.out" >&2
        exit 1
    fi
    i=$((i + 1))
done
echo "readme-zig: README.md's $n Zig blocks built by Zig $($zig version) and ran"
