#!/bin/sh
# `make test-cinstall`: `cargo cinstall` (cargo-c) installs what `make
# install` installs, into two temporary DESTDIRs with the same prefix and
# libdir: the same files and links, the same headers byte for byte, the
# same coframe.pc fields, and libraries with the same soname and the same
# exported names. Three differences are expected and checked as such:
#   - no CMake package (lib/cmake/coframe/): cargo-c installs files only
#     into the include and data directories, and these two are written at
#     install time from the libdir, includedir, version and target;
#   - no man pages (share/man/): `make docs` generates them with
#     scripts/apiref.py, and cargo-c installs only files of the source tree
#     or of the build script's output;
#   - the library's exports carry no symbol versions: cargo-c has cargo
#     link a cdylib, whose anonymous version script wins (scripts/link-so.sh).
# Skipped where cargo-c is not installed. Set KEEP=1 to keep the directory.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
MAKE=${MAKE:-make}
CARGO=${CARGO:-cargo}
prefix=/usr/local
libdir=$prefix/lib

if ! $CARGO cinstall --version >/dev/null 2>&1; then
    sh "$root/scripts/skip.sh" "cargo-c is not installed: cargo install cargo-c --locked" \
        "(with Rust 1.95: --version 0.10.24+cargo-0.98.0)"
    exit 0
fi

testname=test-cinstall
. "$root/scripts/testdir.sh"

echo "test-cinstall: $($CARGO cinstall --version | head -n 1)"
echo "test-cinstall: cargo cinstall --release --destdir D1 --prefix $prefix --libdir $libdir"
(cd "$root" && $CARGO cinstall --release --destdir "$tmp/d1" --prefix "$prefix" --libdir "$libdir") \
    >"$tmp/cinstall.log" 2>&1 || { cat "$tmp/cinstall.log" >&2; fail "cargo cinstall failed"; }
echo "test-cinstall: make install DESTDIR=D2 PREFIX=$prefix"
"$MAKE" --no-print-directory -C "$root" install DESTDIR="$tmp/d2" PREFIX="$prefix" \
    >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install failed"; }

# Each file as "path" and each link as "path -> target".
listing() {
    (cd "$1" && find . \( -type f -o -type l \) | sort | while read -r f; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f"; fi
    done)
}
listing "$tmp/d1" >"$tmp/d1.list"
listing "$tmp/d2" >"$tmp/d2.all"
cmake=$(grep -c "^\./${libdir#/}/cmake/coframe/" "$tmp/d2.all" || true)
man=$(grep -c "^\./${prefix#/}/share/man/" "$tmp/d2.all" || true)
[ "$cmake" -gt 0 ] && [ "$man" -gt 0 ] || fail "make install installed no CMake files or no man pages: update this test"
grep -v -e "^\./${libdir#/}/cmake/coframe/" -e "^\./${prefix#/}/share/man/" "$tmp/d2.all" >"$tmp/d2.list"
if ! diff -u "$tmp/d2.list" "$tmp/d1.list" >"$tmp/list.diff"; then
    cat "$tmp/list.diff" >&2
    fail "cargo cinstall (+) and make install (-) install different files (CMake's and the man pages left aside)"
fi
echo "  same $(wc -l <"$tmp/d1.list") files and links (make install also: $cmake CMake files, $man man pages)"

for h in coframe.h coframe.hpp; do
    cmp "$tmp/d1$prefix/include/$h" "$tmp/d2$prefix/include/$h" || fail "the installed $h differ"
done

# The .pc files: the same fields, in any order, comments aside.
pcfields() { grep -v '^#' "$1" | grep -v '^[[:space:]]*$' | sort; }
pc=${libdir#/}/pkgconfig/coframe.pc
pcfields "$tmp/d2/$pc" >"$tmp/d2.pc"
pcfields "$tmp/d1/$pc" >"$tmp/d1.pc"
if ! diff -u "$tmp/d2.pc" "$tmp/d1.pc" >&2; then
    fail "cargo-c's coframe.pc (+) and make install's (-) differ"
fi
echo "  coframe.pc: the same $(wc -l <"$tmp/d1.pc") fields"

real=$(sed -n 's|^\./.*/\(libcoframe\.so\.[0-9]*\.[0-9]*\.[0-9]*\)$|\1|p' "$tmp/d1.list")
[ -n "$real" ] || fail "no libcoframe.so.X.Y.Z installed"
for d in d1 d2; do
    objdump -p "$tmp/$d$libdir/$real" | awk '$1 == "SONAME" { print $2 }' >"$tmp/$d.soname"
    nm -D --defined-only "$tmp/$d$libdir/$real" | awk '{ print $3 }' | grep -v '^COFRAME_' >"$tmp/$d.syms"
done
cmp -s "$tmp/d1.soname" "$tmp/d2.soname" || fail "sonames differ: $(cat "$tmp/d1.soname") and $(cat "$tmp/d2.soname")"
sed 's/@.*//' "$tmp/d2.syms" | sort >"$tmp/d2.names"
sort "$tmp/d1.syms" >"$tmp/d1.names"
diff -u "$tmp/d2.names" "$tmp/d1.names" >&2 || fail "the libraries export different names"
grep -q '@' "$tmp/d1.syms" && fail "cargo-c's library has symbol versions now: update this test and docs/BUILD.md"
echo "  $real: soname $(cat "$tmp/d1.soname"), the same $(wc -l <"$tmp/d1.names") exported names (cargo-c's unversioned)"
echo "test-cinstall: ok"
