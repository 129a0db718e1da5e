#!/bin/sh
# Prints the command that runs the pinned Zig compiler, for the Zig host
# test in ffi-tests. Debian 12 has no zig package: PyPI's `ziglang` wheel
# carries the compiler, installed the first time into a venv under
# target/ (about 10 s and 50 MB), and run as `python -m ziglang`.
#
# Usage: scripts/zig.sh        -> e.g. /path/target/zig-venv/bin/python3 -m ziglang
# Environment: ZIG, if set, is printed instead (a zig of your own).
set -eu

# The Zig language changes between releases; host.zig is written for this one.
ZIG_VERSION=0.17.1

if [ -n "${ZIG:-}" ]; then
    echo "$ZIG"
    exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/zig-venv
py=$venv/bin/python3
if [ "$("$py" -m ziglang version 2>/dev/null || true)" != "$ZIG_VERSION" ]; then
    command -v python3 >/dev/null 2>&1 || {
        echo "zig.sh: python3 is missing: run scripts/deps.sh (or apt-get install python3 python3-venv)" >&2
        exit 1
    }
    python3 -m venv "$venv" >&2 || {
        echo "zig.sh: python3 -m venv failed: apt-get install python3-venv, or run scripts/deps.sh as root" >&2
        exit 1
    }
    echo "zig.sh: installing ziglang==$ZIG_VERSION from PyPI into $venv" >&2
    "$py" -m pip install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" >&2 || {
        echo "zig.sh: pip could not install ziglang==$ZIG_VERSION (no network, or no such release?)" >&2
        exit 1
    }
fi
echo "$py -m ziglang"
