#!/bin/sh
# `make test-install`: installs coframe into a temporary DESTDIR, checks the
# layout (the man pages included), then builds and runs pkg/check/main.c
# against the staged copy
#   1. through pkg-config (shared library), as C and as C++, and
#      pkg/check/hpp.cpp over <coframe.hpp> as C++20,
#   2. through pkg-config --static (libcoframe.a, no libcoframe.so needed),
#   3. through CMake's find_package(coframe) (coframe::coframe and
#      coframe::coframe_static; hpp.cpp too), when cmake is installed
#      (scripts/deps.sh installs it),
#   4. from Zig: zig/consumer/ (a project taking the Zig package by path)
#      built with -Dsystem-coframe=true, which finds the staged library
#      through the same pkg-config, with the Zig scripts/zig.sh pins.
# Set KEEP=1 to keep the temporary directory.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
MAKE=${MAKE:-make}
CC=${CC:-cc}
CXX=${CXX:-c++}
prefix=/usr/local

testname=test-install
. "$root/scripts/testdir.sh"
stage=$tmp/stage
libdir=$stage$prefix/lib

step() { echo "test-install: $*"; }

VERSION=$(sh "$root/scripts/version.sh" full)
MAJOR=$(sh "$root/scripts/version.sh" major)
MINOR=$(sh "$root/scripts/version.sh" minor)
PATCH=$(sh "$root/scripts/version.sh" patch)
real=libcoframe.so.$MAJOR.$MINOR.$PATCH
expect="-DEXPECT_MAJOR=$MAJOR -DEXPECT_MINOR=$MINOR -DEXPECT_PATCH=$PATCH"

step "make install DESTDIR=$stage PREFIX=$prefix"
"$MAKE" --no-print-directory -C "$root" install DESTDIR="$stage" PREFIX="$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "make install failed"; }

step "layout"
[ -f "$libdir/$real" ] && [ ! -L "$libdir/$real" ] || fail "$real is not a regular file"
for link in "libcoframe.so.$MAJOR" libcoframe.so; do
    [ -L "$libdir/$link" ] || fail "$link is not a symlink"
    [ "$(readlink "$libdir/$link")" = "$real" ] || fail "$link does not point at $real"
done
for f in lib/libcoframe.a include/coframe.h include/coframe.hpp lib/pkgconfig/coframe.pc \
    lib/cmake/coframe/coframeConfig.cmake lib/cmake/coframe/coframeConfigVersion.cmake \
    share/coframe/coframe-gdb.py share/man/man7/coframe.7 share/man/man3/coro_spawn.3; do
    [ -f "$stage$prefix/$f" ] || fail "$prefix/$f was not installed"
done
# man(1) finds a function's page under the staged MANPATH.
if command -v man >/dev/null 2>&1; then
    page=$(man -M "$stage$prefix/share/man" -w 3 coro_await) || fail "man cannot find coro_await(3) in the install"
    [ "$page" = "$stage$prefix/share/man/man3/coro_await.3" ] || fail "man coro_await found $page"
fi
soname=$(objdump -p "$libdir/$real" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = "libcoframe.so.$MAJOR" ] || fail "soname is '$soname', not libcoframe.so.$MAJOR"

# pkg-config sees only the staged .pc; the sysroot maps its /usr/local paths
# into the stage.
PKG_CONFIG_LIBDIR=$libdir/pkgconfig
PKG_CONFIG_PATH=$libdir/pkgconfig
PKG_CONFIG_SYSROOT_DIR=$stage
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

step "pkg-config --modversion coframe"
modversion=$(pkg-config --modversion coframe) || fail "pkg-config cannot read coframe.pc"
[ "$modversion" = "$VERSION" ] || fail "coframe.pc says $modversion, Cargo.toml says $VERSION"
cflags=$(pkg-config --cflags coframe)
libs=$(pkg-config --libs coframe)
static_libs=$(pkg-config --static --libs coframe)
echo "  cflags: $cflags"
echo "  libs:   $libs"
echo "  static: $static_libs"

step "C, shared, via pkg-config"
# shellcheck disable=SC2086  # pkg-config output is meant to be split
"$CC" -std=c11 -Wall -Wextra -Werror $expect -o "$tmp/check_c" "$root/pkg/check/main.c" $cflags $libs ||
    fail "cannot build against the installed shared library"
LD_LIBRARY_PATH=$libdir "$tmp/check_c" || fail "the C program failed"
objdump -p "$tmp/check_c" | grep -q "NEEDED *libcoframe.so.$MAJOR\$" ||
    fail "the program does not record libcoframe.so.$MAJOR as NEEDED"
# ...and the version node of what it calls (src/ffi/coframe.map).
objdump -T "$tmp/check_c" | grep -q ' (COFRAME_[0-9]*\.[0-9]*) *coro_strerror$' ||
    fail "the program's coro_strerror carries no COFRAME_ version: is the installed library versioned?"

step "C++, shared, via pkg-config"
# shellcheck disable=SC2086
"$CXX" -x c++ -std=c++17 -Wall -Wextra -Werror $expect -o "$tmp/check_cxx" "$root/pkg/check/main.c" $cflags $libs ||
    fail "coframe.h does not compile as C++"
LD_LIBRARY_PATH=$libdir "$tmp/check_cxx" || fail "the C++ program failed"

step "C++20 over <coframe.hpp>, shared, via pkg-config"
# shellcheck disable=SC2086
"$CXX" -std=c++20 -Wall -Wextra -Wpedantic -Werror -pthread -o "$tmp/check_hpp" "$root/pkg/check/hpp.cpp" \
    $cflags $libs || fail "coframe.hpp does not compile against the installed files"
LD_LIBRARY_PATH=$libdir "$tmp/check_hpp" || fail "the C++20 program failed"

step "C, static, via pkg-config --static"
# The archive first, by path, so the linker cannot prefer the .so;
# --as-needed drops the -lcoframe that pkg-config adds again.
# shellcheck disable=SC2086
"$CC" -std=c11 -Wall -Wextra -Werror $expect -o "$tmp/check_static" "$root/pkg/check/main.c" $cflags \
    "$libdir/libcoframe.a" -Wl,--as-needed $static_libs ||
    fail "cannot link libcoframe.a with pkg-config --static --libs"
if objdump -p "$tmp/check_static" | grep -q 'NEEDED *libcoframe'; then
    fail "the static program still needs libcoframe.so"
fi
"$tmp/check_static" || fail "the static program failed"

if command -v cmake >/dev/null 2>&1; then
    step "CMake find_package(coframe $VERSION): coframe::coframe, coframe::coframe_static"
    cmake -S "$root/pkg/check" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$stage$prefix" \
        -DEXPECT_VERSION="$VERSION" -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 ||
        { cat "$tmp/cmake.log" >&2; fail "cmake could not configure against the installed package"; }
    cmake --build "$tmp/cmake" >>"$tmp/cmake.log" 2>&1 ||
        { cat "$tmp/cmake.log" >&2; fail "cmake could not build against the installed package"; }
    LD_LIBRARY_PATH=$libdir "$tmp/cmake/check_shared" || fail "the CMake shared program failed"
    "$tmp/cmake/check_static" || fail "the CMake static program failed"
    LD_LIBRARY_PATH=$libdir "$tmp/cmake/check_hpp" || fail "the CMake C++20 program failed"
    # A version from another major series must be refused.
    mkdir -p "$tmp/cmake-major"
    printf 'cmake_minimum_required(VERSION 3.13)\nproject(m NONE)\nfind_package(coframe %s REQUIRED)\n' \
        "$((MAJOR + 1)).0" >"$tmp/cmake-major/CMakeLists.txt"
    if cmake -S "$tmp/cmake-major" -B "$tmp/cmake-major/b" -DCMAKE_PREFIX_PATH="$stage$prefix" >/dev/null 2>&1; then
        fail "find_package(coframe $((MAJOR + 1)).0) accepted $VERSION"
    fi
else
    step "cmake is not installed: CMake package not checked (scripts/deps.sh installs it)"
fi

if zig=$(sh "$root/scripts/zig.sh" 2>"$tmp/zig.log"); then
    step "Zig: zig/consumer with -Dsystem-coframe=true, via pkg-config"
    (cd "$root/zig/consumer" && $zig build install run -Dsystem-coframe=true --cache-dir "$tmp/zig-cache" \
        --prefix "$tmp/zig-out" --summary none) || fail "the Zig consumer failed against the installed library"
    runpath=$(objdump -p "$tmp/zig-out/bin/consumer" | awk '$1 == "RUNPATH" { print $2 }')
    case $runpath in
    "$libdir"*) ;;
    *) fail "the Zig consumer's RUNPATH is '$runpath', not the installed $libdir" ;;
    esac
else
    cat "$tmp/zig.log" >&2
    step "no Zig (scripts/zig.sh failed): the Zig package not checked against the install"
fi

step "ok"
