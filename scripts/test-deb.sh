#!/bin/sh
# `make test-deb`: the Debian packages, installed on this machine
# (docs/BUILD.md, "Debian packages"):
#   1. `make deb` builds libcoframe0, libcoframe-dev and libcoframe0-dbgsym
#      into target/deb/; lintian checks them: an E: line fails, the W:, I:
#      and P: lines are printed (an unstripped library is an E:);
#   2. dpkg -i installs the three;
#   3. against the installed files only (pkg-config reads only the packaged
#      coframe.pc; no -I or -L into this tree, no LD_LIBRARY_PATH): the
#      compiler finds the packaged headers, coframe.pc and the CMake package
#      name the multiarch libdir, man finds the pages, and README.md's C,
#      C++ and Zig quick looks build and run (scripts/readme-c.sh and
#      readme-cpp.sh through pkg-config, scripts/readme-zig.sh with
#      -Dsystem-coframe=true), linked to the packaged libcoframe.so.X; the
#      packaged coframe-gdb.py lists and walks coroutines in gdb
#      (ffi-tests/gdb_helper.sh) with the types from the dbgsym package;
#   4. dpkg --purge removes the three, leaving no file of theirs.
# Needs root for dpkg (it fails without, as scripts/deps.sh does); skipped
# where there is no dpkg. Refuses to run when the packages, or files they
# hold, are already installed: it would overwrite and then remove them.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
MAKE=${MAKE:-make}
CC=${CC:-cc}
CXX=${CXX:-c++}
pkgs="libcoframe0 libcoframe-dev libcoframe0-dbgsym"

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
step() { echo "test-deb: $*"; }

if ! command -v dpkg >/dev/null 2>&1; then
    sh "$root/scripts/skip.sh" "no dpkg here: the Debian packages are not tested"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "not root, and dpkg -i needs root: run 'make test-deb' as root"
# known PKG: prints dpkg's status of PKG ("ii "); fails when it is not installed
known() {
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)
    case $status in
    "" | un*) return 1 ;;
    *) echo "$status" ;;
    esac
}
for p in $pkgs; do
    if s=$(known "$p"); then
        fail "$p is installed already ($s): this test would replace, then purge it; 'dpkg --purge $pkgs' first"
    fi
done

VERSION=$(sh "$root/scripts/version.sh" full)
MAJOR=$(sh "$root/scripts/version.sh" major)
real=libcoframe.so.$MAJOR.$(sh "$root/scripts/version.sh" minor).$(sh "$root/scripts/version.sh" patch)
debversion=$(printf '%s\n' "$VERSION" | sed 's/-/~/')
arch=$(dpkg --print-architecture)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=/usr/lib/$ma
debdir=$root/target/deb
deb_lib=$debdir/libcoframe0_${debversion}_$arch.deb
deb_dev=$debdir/libcoframe-dev_${debversion}_$arch.deb
deb_dbg=$debdir/libcoframe0-dbgsym_${debversion}_$arch.deb

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coframe-test-deb.XXXXXX")
installed=0
cleanup() {
    # shellcheck disable=SC2086  # $pkgs is a list
    if [ "$installed" = 1 ] && ! dpkg --purge $pkgs >/dev/null 2>&1; then
        echo "test-deb: 'dpkg --purge $pkgs' failed: remove them by hand" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step "make deb"
"$MAKE" --no-print-directory -C "$root" deb >"$tmp/deb.log" 2>&1 ||
    { cat "$tmp/deb.log" >&2; fail "make deb failed"; }
for f in "$deb_lib" "$deb_dev" "$deb_dbg"; do
    [ -f "$f" ] || fail "make deb made no $f"
done

step "lintian --pedantic --display-info"
rc=0
lintian --pedantic --display-info "$debdir/coframe_${debversion}_$arch.changes" >"$tmp/lintian.log" 2>&1 || rc=$?
grep '^[A-Z]: ' "$tmp/lintian.log" | sed 's/^/  /' || true
if grep -q '^E: ' "$tmp/lintian.log"; then
    fail "lintian reports errors (the E: lines above)"
fi
[ "$rc" = 0 ] || { cat "$tmp/lintian.log" >&2; fail "lintian failed (exit $rc)"; }

# Every path of the packages, and which of them exist before dpkg -i: a
# file that exists would be overwritten and then purged.
for d in "$deb_lib" "$deb_dev" "$deb_dbg"; do
    dpkg-deb --fsys-tarfile "$d" | tar -t
done | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^$' | sort -u >"$tmp/paths"
exist() { while read -r p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done <"$tmp/paths"; }
exist >"$tmp/before"
while read -r p; do
    [ -d "$p" ] && [ ! -L "$p" ] || fail "$p exists already (a make install PREFIX=/usr?): remove it first"
done <"$tmp/before"

step "dpkg -i $(basename "$deb_lib") $(basename "$deb_dev") $(basename "$deb_dbg")"
installed=1
dpkg -i "$deb_lib" "$deb_dev" "$deb_dbg" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i failed"; }

# From here on, only what the packages installed: pkg-config sees only the
# multiarch pkgconfig directory, and nothing points into this tree.
unset LD_LIBRARY_PATH LIBRARY_PATH CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH \
    PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
PKG_CONFIG_LIBDIR=$libdir/pkgconfig
export PKG_CONFIG_LIBDIR

step "the compiler finds the packaged headers"
for h in coframe.h coframe.hpp; do
    # the file named by the first line marker of the preprocessed #include
    got=$(printf '#include <%s>\n' "$h" | "$CXX" -std=c++20 -x c++ -E - 2>/dev/null |
        sed -n "s|^# [0-9]* \"\\(.*/$h\\)\".*|\\1|p" | head -n 1)
    [ "$got" = "/usr/include/$h" ] || fail "#include <$h> reads '$got', not /usr/include/$h"
done
# The Zig package translates its own include/coframe.h: the same file.
cmp -s "$root/include/coframe.h" /usr/include/coframe.h ||
    fail "/usr/include/coframe.h differs from include/coframe.h"

step "coframe.pc and the CMake package name $libdir"
v=$(pkg-config --modversion coframe) || fail "pkg-config finds no coframe.pc in $PKG_CONFIG_LIBDIR"
[ "$v" = "$VERSION" ] || fail "coframe.pc says $v, Cargo.toml $VERSION"
v=$(pkg-config --variable=libdir coframe)
[ "$v" = "$libdir" ] || fail "coframe.pc's libdir is $v, not $libdir"
if command -v cmake >/dev/null 2>&1; then
    mkdir -p "$tmp/cmake"
    # A language, as a real project has: CMake searches lib/<multiarch>/
    # only once it knows the compiler's CMAKE_LIBRARY_ARCHITECTURE.
    cat >"$tmp/cmake/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(locate C)
find_package(coframe $VERSION EXACT REQUIRED)
get_target_property(lib coframe::coframe IMPORTED_LOCATION)
get_target_property(inc coframe::coframe INTERFACE_INCLUDE_DIRECTORIES)
message(STATUS "coframe: \${lib} \${inc}")
EOF
    cmake -S "$tmp/cmake" -B "$tmp/cmake/b" >"$tmp/cmake.log" 2>&1 ||
        { cat "$tmp/cmake.log" >&2; fail "find_package(coframe $VERSION) failed"; }
    got=$(sed -n 's/^-- coframe: //p' "$tmp/cmake.log")
    [ "$got" = "$libdir/$real /usr/include" ] ||
        fail "find_package(coframe) gives '$got', not '$libdir/$real /usr/include'"
else
    step "cmake is not installed: the CMake package not checked (scripts/deps.sh installs it)"
fi

if command -v man >/dev/null 2>&1; then
    step "man 3 coro_spawn, man 7 coframe"
    for page in 3/coro_spawn 7/coframe; do
        got=$(MANPATH= man -w "${page%/*}" "${page#*/}" 2>/dev/null || true)
        want=/usr/share/man/man${page%/*}/${page#*/}.${page%/*}.gz
        [ "$got" = "$want" ] || fail "man ${page%/*} ${page#*/} finds '$got', not $want"
    done
else
    step "no man here: the man pages not looked up"
fi

# linked BINARY: the program loads the packaged libcoframe.so.X and has no
# run path (into this tree or anywhere).
linked() {
    if objdump -p "$1" | grep -E '^ *(RPATH|RUNPATH) '; then fail "$1 has a run path"; fi
    got=$(ldd "$1" | awk -v so="libcoframe.so.$MAJOR" '$1 == so { print $3 }')
    [ -n "$got" ] && [ "$(readlink -f "$got")" = "$(readlink -f "$libdir/libcoframe.so.$MAJOR")" ] ||
        fail "$1 loads '$got', not $libdir/libcoframe.so.$MAJOR"
}

step "README.md's C quick looks, via pkg-config"
CC=$CC sh "$root/scripts/readme-c.sh" "$root/README.md" "$tmp/c" pkg-config || fail "a C quick look failed against the packages"
linked "$tmp/c/README-1"

step "README.md's C++ quick look, via pkg-config"
CXX=$CXX sh "$root/scripts/readme-cpp.sh" "$root/README.md" "$tmp/cpp" pkg-config || fail "the C++ quick look failed against the packages"
linked "$tmp/cpp/README-1"

if sh "$root/scripts/zig.sh" >/dev/null 2>"$tmp/zig.log"; then
    step "README.md's Zig quick look, -Dsystem-coframe=true"
    # `install --prefix`: a copy of the program to check, out of Zig's cache
    sh "$root/scripts/readme-zig.sh" zig-readme-deb install --prefix "$tmp/zig-out" -Dsystem-coframe=true ||
        fail "the Zig quick look failed against the packages"
    linked "$tmp/zig-out/bin/consumer"
else
    cat "$tmp/zig.log" >&2
    fail "no Zig (scripts/zig.sh failed): the Zig quick look cannot be checked"
fi

# gdb finds the debug info by the library's build-id; the packaged
# coframe-gdb.py reads coframe's types from it.
step "gdb's coframe list and coframe bt (the packaged coframe-gdb.py) with libcoframe0-dbgsym"
# shellcheck disable=SC2046  # pkg-config's flags are meant to be split
"$CC" -std=c11 -g -pthread -o "$tmp/gdb_target" "$root/ffi-tests/gdb_target.c" $(pkg-config --cflags --libs coframe) ||
    fail "ffi-tests/gdb_target.c does not build against the packages"
linked "$tmp/gdb_target"
rc=0
COFRAME_GDB_PY=/usr/share/coframe/coframe-gdb.py sh "$root/ffi-tests/gdb_helper.sh" "$tmp/gdb_target" >"$tmp/gdb.log" 2>&1 || rc=$?
case $rc in
0) ;;
77) step "$(tail -n 1 "$tmp/gdb.log"): not checked" ;;
*) cat "$tmp/gdb.log" >&2; fail "coframe-gdb.py does not work with the packaged library and its debug info" ;;
esac

step "dpkg --purge $pkgs"
# shellcheck disable=SC2086
dpkg --purge $pkgs >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --purge failed"; }
installed=0
for p in $pkgs; do
    if s=$(known "$p"); then fail "$p is still known to dpkg after the purge ($s)"; fi
done
exist >"$tmp/after"
if ! cmp -s "$tmp/before" "$tmp/after"; then
    diff "$tmp/before" "$tmp/after" | sed -n 's/^> /  left: /p' >&2
    fail "the purge left files of the packages (above)"
fi
if ldconfig -p | grep -q libcoframe; then
    fail "ldconfig still lists libcoframe after the purge"
fi

step "ok"
