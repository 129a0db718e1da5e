#!/bin/sh
# Installs the built library into $DESTDIR$PREFIX (called by `make install`).
#
#   $LIBDIR/libcoframe.so.X.Y.Z       the shared library (soname libcoframe.so.X)
#   $LIBDIR/libcoframe.so.X -> libcoframe.so.X.Y.Z
#   $LIBDIR/libcoframe.so   -> libcoframe.so.X.Y.Z
#   $LIBDIR/libcoframe.a
#   $INCLUDEDIR/coframe.h, $INCLUDEDIR/coframe.hpp (the C++20 host)
#   $LIBDIR/pkgconfig/coframe.pc                       from pkg/coframe.pc.in
#   $LIBDIR/cmake/coframe/coframeConfig.cmake          from pkg/*.cmake.in
#   $LIBDIR/cmake/coframe/coframeConfigVersion.cmake
#   $PREFIX/share/coframe/coframe-gdb.py               gdb's coframe commands
#   $MANDIR/man3/coro_*.3, $MANDIR/man7/coframe.7      from DOCS_DIR (`make docs`)
#
# Environment: PREFIX (/usr/local), LIBDIR ($PREFIX/lib), INCLUDEDIR
# ($PREFIX/include), MANDIR ($PREFIX/share/man), DESTDIR (empty),
# BUILD_DIR (target/release), DOCS_DIR (target/docs).
# The version comes from Cargo.toml.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
MANDIR=${MANDIR:-$PREFIX/share/man}
DESTDIR=${DESTDIR:-}
BUILD_DIR=${BUILD_DIR:-$root/target/release}
DOCS_DIR=${DOCS_DIR:-$root/target/docs}

strip_slash() { # /a/b/ -> /a/b (but / stays /)
    p=$1
    while [ "${p%/}" != "$p" ] && [ "$p" != / ]; do p=${p%/}; done
    printf '%s\n' "$p"
}
PREFIX=$(strip_slash "$PREFIX")
LIBDIR=$(strip_slash "$LIBDIR")
INCLUDEDIR=$(strip_slash "$INCLUDEDIR")
MANDIR=$(strip_slash "$MANDIR")

for v in PREFIX LIBDIR INCLUDEDIR MANDIR; do
    eval "val=\$$v"
    case $val in
    /*) ;;
    *) echo "install: $v must be an absolute path, not '$val'" >&2; exit 1 ;;
    esac
done

# relpath FROM TO: TO relative to directory FROM (absolute paths, no . or ..)
relpath() {
    from=$1 to=$2 up=""
    while :; do
        case "$to/" in "${from%/}"/*) break ;; esac
        from=${from%/*}
        up="../$up"
    done
    rest=${to#"${from%/}"}
    rest=${rest#/}
    out="$up$rest"
    out=${out%/}
    printf '%s\n' "${out:-.}"
}

# pcpath DIR: DIR written relative to ${prefix} when it lies under PREFIX
pcpath() {
    case $1 in
    "$PREFIX") printf '%s\n' '${prefix}' ;;
    "$PREFIX"/*) printf '%s\n' "\${prefix}/${1#"$PREFIX"/}" ;;
    *) printf '%s\n' "$1" ;;
    esac
}

# sed replacement text: escape \, | and &
sedesc() { printf '%s\n' "$1" | sed 's/[\\|&]/\\&/g'; }

VERSION=$(sh "$root/scripts/version.sh" full)
MAJOR=$(sh "$root/scripts/version.sh" major)
VERSION_CORE="$MAJOR.$(sh "$root/scripts/version.sh" minor).$(sh "$root/scripts/version.sh" patch)"
DESCRIPTION=$(sed -n '/^\[package\]/,/^\[/s/^description *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
SIZEOF_VOID_P=$(( $(getconf LONG_BIT 2>/dev/null || echo 64) / 8 ))

# The system libraries a C program linking libcoframe.a needs: those of
# Rust's std for this target, as rustc reports them.
NATIVE_STATIC_LIBS=${NATIVE_STATIC_LIBS:-$(sh "$root/scripts/native-libs.sh")}
NATIVE_STATIC_LIBS_CMAKE=$(printf '%s\n' "$NATIVE_STATIC_LIBS" | tr ' ' '\n' |
    sed -n 's/^-l//p' | tr '\n' ';' | sed 's/;$//')

for f in libcoframe.so libcoframe.a; do
    if [ ! -f "$BUILD_DIR/$f" ]; then
        echo "install: $BUILD_DIR/$f is missing: run 'make build' first" >&2
        exit 1
    fi
done
if [ ! -f "$DOCS_DIR/man/man7/coframe.7" ]; then
    echo "install: $DOCS_DIR/man has no man pages: run 'make docs' first" >&2
    exit 1
fi

d_lib=$DESTDIR$LIBDIR
d_inc=$DESTDIR$INCLUDEDIR
d_pc=$d_lib/pkgconfig
d_cmake=$d_lib/cmake/coframe
d_share=$DESTDIR$PREFIX/share/coframe
d_man=$DESTDIR$MANDIR
real=libcoframe.so.$VERSION_CORE

echo "install: coframe $VERSION into ${DESTDIR:+$DESTDIR (staged) }$PREFIX"
install -d "$d_lib" "$d_inc" "$d_pc" "$d_cmake" "$d_share" "$d_man/man3" "$d_man/man7"

install -m 0755 "$BUILD_DIR/libcoframe.so" "$d_lib/$real"
ln -sf "$real" "$d_lib/libcoframe.so.$MAJOR"
ln -sf "$real" "$d_lib/libcoframe.so"
install -m 0644 "$BUILD_DIR/libcoframe.a" "$d_lib/libcoframe.a"

install -m 0644 "$root/include/coframe.h" "$d_inc/coframe.h"
install -m 0644 "$root/include/coframe.hpp" "$d_inc/coframe.hpp"

subst() { # subst TEMPLATE OUTPUT
    sed -e "s|@PREFIX@|$(sedesc "$PREFIX")|g" \
        -e "s|@PC_LIBDIR@|$(sedesc "$(pcpath "$LIBDIR")")|g" \
        -e "s|@PC_INCLUDEDIR@|$(sedesc "$(pcpath "$INCLUDEDIR")")|g" \
        -e "s|@REL_LIBDIR@|$(sedesc "$(relpath "$LIBDIR/cmake/coframe" "$LIBDIR")")|g" \
        -e "s|@REL_INCLUDEDIR@|$(sedesc "$(relpath "$LIBDIR/cmake/coframe" "$INCLUDEDIR")")|g" \
        -e "s|@DESCRIPTION@|$(sedesc "$DESCRIPTION")|g" \
        -e "s|@VERSION@|$(sedesc "$VERSION")|g" \
        -e "s|@VERSION_CORE@|$(sedesc "$VERSION_CORE")|g" \
        -e "s|@MAJOR@|$(sedesc "$MAJOR")|g" \
        -e "s|@SIZEOF_VOID_P@|$SIZEOF_VOID_P|g" \
        -e "s|@NATIVE_STATIC_LIBS@|$(sedesc "$NATIVE_STATIC_LIBS")|g" \
        -e "s|@NATIVE_STATIC_LIBS_CMAKE@|$(sedesc "$NATIVE_STATIC_LIBS_CMAKE")|g" \
        "$1" >"$2.tmp"
    if grep -n '@[A-Z_]*@' "$2.tmp" >&2; then
        echo "install: $1 has a placeholder install.sh does not know (above)" >&2
        rm -f "$2.tmp"
        exit 1
    fi
    chmod 0644 "$2.tmp"
    mv "$2.tmp" "$2"
}
subst "$root/pkg/coframe.pc.in" "$d_pc/coframe.pc"
subst "$root/pkg/coframeConfig.cmake.in" "$d_cmake/coframeConfig.cmake"
subst "$root/pkg/coframeConfigVersion.cmake.in" "$d_cmake/coframeConfigVersion.cmake"
# gdb: `source $PREFIX/share/coframe/coframe-gdb.py` (docs/DEBUGGING.md).
install -m 0644 "$root/scripts/coframe-gdb.py" "$d_share/coframe-gdb.py"
# `man coro_spawn`, `man coframe` (scripts/apiref.py wrote them).
install -m 0644 "$DOCS_DIR"/man/man3/*.3 "$d_man/man3/"
install -m 0644 "$DOCS_DIR/man/man7/coframe.7" "$d_man/man7/coframe.7"

echo "install: done"
for f in "$d_lib/$real" "$d_lib/libcoframe.so.$MAJOR" "$d_lib/libcoframe.so" \
    "$d_lib/libcoframe.a" "$d_inc/coframe.h" "$d_inc/coframe.hpp" "$d_pc/coframe.pc" \
    "$d_cmake/coframeConfig.cmake" "$d_cmake/coframeConfigVersion.cmake" \
    "$d_share/coframe-gdb.py" "$d_man/man7/coframe.7"; do
    [ -e "$f" ] && echo "  $f"
done
echo "  $d_man/man3/coro_*.3 ($(ls "$DOCS_DIR"/man/man3 | wc -l) pages)"
exit 0
