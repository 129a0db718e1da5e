#!/bin/sh
# Checks for the system packages that coframe's build and tests need and,
# when some are missing and this runs as root, installs them with apt-get.
# Without root it fails, naming what is missing. Fast and silent-ish when
# everything is present; `apt-get update` runs at most once, and only when
# something is missing.
#
# Usage: scripts/deps.sh [--check]   (--check: never install, only report)
#
# Debian/Ubuntu names (Debian 12, gcc 12). Other systems: the commands are
# checked, the libraries cannot be and are left to you.
set -eu

check_only=0
[ "${1:-}" = --check ] && check_only=1

# package:command  -- present when the command is on PATH
CMD_PKGS="
gcc:gcc
g++:g++
clang:clang++
make:make
valgrind:valgrind
gdb:gdb
pkg-config:pkg-config
cmake:cmake
python3:python3
groff-base:groff
mandoc:mandoc
man-db:man
dpkg-dev:dpkg-buildpackage
debhelper:dh
lintian:lintian
abigail-tools:abidiff
"
# packages checked with dpkg (libraries have no command to look for)
#   libc6-dev            headers and crt files for the C tests
#   libc6-dbg            lets valgrind name libc frames (valgrind recommends it)
#   libasan8 libtsan2    gcc 12's AddressSanitizer and ThreadSanitizer runtimes
#   libubsan1            gcc 12's UndefinedBehaviorSanitizer runtime
# (gcc 13/14 use the same runtime names; gcc 11 used libasan6/libtsan0.)
#   libclang-rt-14-dev   clang 14's sanitizer runtimes (Debian 12's clang is
#                        14; ffi-tests builds hpp_host with clang++ -fsanitize=address)
LIB_PKGS="libc6-dev libc6-dbg libasan8 libtsan2 libubsan1 libclang-rt-14-dev"
#   gcc-i686-linux-gnu, libc6-dev-i386-cross
#                        link the i686 tests; libc6-i386 and lib32gcc-s1 run
#                        them natively (scripts/ports.sh)
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user
#                        link the aarch64 tests and run them under qemu
# (amd64 hosts only; cross compilers, since Debian's gcc-multilib and the
# gcc-*-linux-gnu cross compilers cannot be installed together)
if command -v dpkg >/dev/null 2>&1 && [ "$(dpkg --print-architecture)" = amd64 ]; then
    LIB_PKGS="$LIB_PKGS gcc-i686-linux-gnu libc6-dev-i386-cross libc6-i386 lib32gcc-s1"
    LIB_PKGS="$LIB_PKGS gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
fi

# ---------------------------------------------------------------------------
# LATER ISSUES: add their requirements here.
#   Boost.Context (the side-by-side benchmarks, issue 4): benches/deps.sh
#     installs libboost-context-dev when `make bench` runs.
# clang++ (<coframe.hpp> is built and its compile-fail checks run with g++
#   and clang++, issue 18).
# gdb (with its Python, which Debian's gdb has): ffi-tests/gdb_helper.sh
#   runs scripts/coframe-gdb.py in it on a live process (issue 17).
# The Zig host test (ffi-tests/host.zig) runs PyPI's ziglang wheel from a
# venv that scripts/zig.sh makes: python3 with venv and ensurepip, which
# Debian packages apart (python3-venv); checked below.
# man-db: test-install and test-deb look the installed pages up with
#   man -w (without it those lookups would be skipped on a bare machine).
# groff-base and mandoc: `make test-docs` renders the generated man pages
#   with groff and lints them with `mandoc -Tlint` (scripts/test-docs.sh).
# dpkg-dev, debhelper, lintian: `make deb` builds the Debian packages with
# dpkg-buildpackage and debhelper, and test-deb runs lintian on them
# (issue 20; Rules-Requires-Root: no, so fakeroot is not needed).
# abigail-tools (abidw, abidiff): test-abi compares the ABI with the last
#   release's (scripts/abi.sh, issue 20).
# ---------------------------------------------------------------------------

# Rust is not a system package here: rustup installs it (Debian 12's rustc
# is older than Cargo.toml's rust-version). Only check it.
if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: cargo is not on PATH: install Rust stable with rustup" \
        "(components rustfmt and clippy), then run this again" >&2
    exit 1
fi
for comp in fmt clippy; do
    if ! cargo "$comp" --version >/dev/null 2>&1; then
        echo "deps: 'cargo $comp' is missing: rustup component add" \
            "$([ "$comp" = fmt ] && echo rustfmt || echo clippy)" >&2
        exit 1
    fi
done

missing=""
have_dpkg=0
command -v dpkg-query >/dev/null 2>&1 && have_dpkg=1

for entry in $CMD_PKGS; do
    pkg=${entry%%:*}
    cmd=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
done

# A venv needs ensurepip, which Debian's python3 leaves to python3-venv.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi

if [ "$have_dpkg" = 1 ]; then
    for pkg in $LIB_PKGS; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        case $status in
        ii*) ;;
        *) missing="$missing $pkg" ;;
        esac
    done
else
    echo "deps: no dpkg here: not checking$(printf ' %s' $LIB_PKGS); install their equivalents yourself" >&2
fi

if [ -z "$missing" ]; then
    echo "deps: all present"
    exit 0
fi

echo "deps: missing:$missing"
if [ "$check_only" = 1 ]; then
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: not root, so not installing. Run as root:" >&2
    echo "  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: no apt-get here: install these yourself:$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps: apt-get update"
apt-get update -qq </dev/null
echo "deps: apt-get install$missing"
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 $missing </dev/null

# Verify: a package name that installs but provides nothing we look for
# should fail here, not later in a test.
still=""
for entry in $CMD_PKGS; do
    cmd=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || still="$still ${entry%%:*}"
done
if [ -n "$still" ]; then
    echo "deps: still missing after install:$still" >&2
    exit 1
fi
echo "deps: installed$missing"
