#!/bin/sh
# `make test-abi`: the ABI checks of scripts/abi.sh on this tree, then the
# same checks on doctored copies, each of which must get the verdict noted:
#   1. target/release/libcoframe.so exports the coro_* functions of the
#      header, each at its node of src/ffi/coframe.map, and nothing else;
#   2. the header's ABI against the baseline abi/libcoframe.so.MAJOR.abi;
#   3. the symbols check fails for a library linked with a map that lacks a
#      function, one linked the way rustc links a cdylib (an anonymous
#      version script: no versions), and one that exports a non-coro_ name;
#   4. the baseline check fails for a removed function, a changed field of
#      coro_config, a changed parameter, a function added to the released
#      node; it passes for a field appended to coro_config, a function
#      added in a new node, and a removal under a new soname major.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
lib=$root/target/release/libcoframe.so
abi() { sh "$root/scripts/abi.sh" "$@"; }

if [ "$(uname -m)" != x86_64 ]; then
    sh "$root/scripts/skip.sh" "the ABI baseline is x86_64's; this host is $(uname -m)"
    exit 0
fi

echo "test-abi: symbols of $lib"
abi symbols "$lib"
echo "test-abi: the header's ABI against the baseline"
abi check

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coframe-test-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect pass|fail WHAT WHY-PATTERN CMD...: CMD must pass, or fail with a
# message matching WHY-PATTERN (so that it fails for the reason meant).
expect() {
    want=$1 what=$2 why=$3
    shift 3
    if "$@" >"$tmp/out" 2>&1; then got=pass; else got=fail; fi
    if [ "$got" = "$want" ] && { [ "$want" = pass ] || grep -q -- "$why" "$tmp/out"; }; then
        echo "  ok: $what: ${want}ed"
    else
        echo "  FAIL: $what: expected to $want${why:+ with '$why'}, got $got:" >&2
        sed 's/^/    /' "$tmp/out" >&2
        failures=$((failures + 1))
    fi
}

map=$root/src/ffi/coframe.map
header=$root/include/coframe.h

echo "test-abi: the symbols check on libraries linked from libcoframe.a"
# MAP=... link-so.sh links BUILD_DIR/libcoframe.so: give it a copy of the archive.
mkdir -p "$tmp/a" "$tmp/b" "$tmp/c"
for d in a b c; do ln -s "$root/target/release/libcoframe.a" "$tmp/$d/libcoframe.a"; done
grep -v '^    coro_now;$' "$map" >"$tmp/a/no-now.map"
MAP=$tmp/a/no-now.map sh "$root/scripts/link-so.sh" "$tmp/a"
expect fail "a function of the header missing from the map" "in no node of" \
    env MAP="$tmp/a/no-now.map" sh "$root/scripts/abi.sh" symbols "$tmp/a/libcoframe.so"
expect fail "the library linked without coro_now, checked against the full map" "missing:  coro_now@@" \
    abi symbols "$tmp/a/libcoframe.so"
sed 's/^COFRAME_[0-9.]* {$/{/' "$map" >"$tmp/b/anon.map"
MAP=$tmp/b/anon.map sh "$root/scripts/link-so.sh" "$tmp/b"
expect fail "exports without versions (an anonymous version script, as rustc gives a cdylib)" \
    "without a version" abi symbols "$tmp/b/libcoframe.so"
# A linker that adds an object defining coframe_stray, which the map exports.
printf 'int coframe_stray(void) { return 1; }\n' >"$tmp/c/stray.c"
"$CC" -fPIC -c -o "$tmp/c/stray.o" "$tmp/c/stray.c"
printf '#!/bin/sh\nexec %s "$@" %s\n' "$CC" "$tmp/c/stray.o" >"$tmp/c/cc"
chmod +x "$tmp/c/cc"
sed '/^    coro_now;$/a \    coframe_stray;' "$map" >"$tmp/c/stray.map"
CC=$tmp/c/cc MAP=$tmp/c/stray.map sh "$root/scripts/link-so.sh" "$tmp/c"
expect fail "a name that is not coro_* exported" "not coro_\*: coframe_stray" \
    abi symbols "$tmp/c/libcoframe.so"

echo "test-abi: the baseline check on doctored copies of the header and the map"
# doctor NAME SED-ON-HEADER SED-ON-MAP: copies in $tmp/NAME
doctor() {
    mkdir -p "$tmp/$1"
    sed "$2" "$header" >"$tmp/$1/coframe.h"
    sed "$3" "$map" >"$tmp/$1/coframe.map"
    cmp -s "$header" "$tmp/$1/coframe.h" && [ -n "$2" ] && { echo "test-abi: $1: the header edit matched nothing" >&2; exit 1; }
    cmp -s "$map" "$tmp/$1/coframe.map" && [ -n "$3" ] && { echo "test-abi: $1: the map edit matched nothing" >&2; exit 1; }
    return 0
}
checks() { env HEADER="$tmp/$1/coframe.h" MAP="$tmp/$1/coframe.map" sh "$root/scripts/abi.sh" check; }
major=$(sh "$root/scripts/version.sh" major)

doctor same '' ''
expect pass "unchanged copies" "" checks same

doctor removed '/^int64_t coro_now(void);$/d' '/^    coro_now;$/d'
expect fail "coro_now removed" "Removed function" checks removed
expect pass "coro_now removed under soname major $((major + 1))" "" \
    env MAJOR=$((major + 1)) HEADER="$tmp/removed/coframe.h" MAP="$tmp/removed/coframe.map" sh "$root/scripts/abi.sh" check

doctor field '/^typedef struct coro_config {$/,/^} coro_config;$/s/^  uint32_t workers;$/  uint64_t workers;/' ''
expect fail "coro_config.workers widened" "without a new soname major" checks field

doctor param 's/^void \*coro_frame_alloc(size_t size);$/void *coro_frame_alloc(uint32_t size);/' ''
expect fail "coro_frame_alloc's parameter changed" "without a new soname major" checks param

doctor grown '/^typedef struct coro_config {$/,/^} coro_config;$/s/^} coro_config;$/  uint64_t added_later;\n} coro_config;/' ''
expect pass "a field appended to coro_config" "" checks grown

added_fn='/^int64_t coro_now(void);$/a int coro_abi_probe(void);'
doctor added "$added_fn" \
    's/^};$/};\n\nCOFRAME_0.99 {\n  global:\n    coro_abi_probe;\n} COFRAME_0.1;/'
expect pass "coro_abi_probe added in a new node" "" checks added

doctor joined "$added_fn" '/^    coro_now;$/a \    coro_abi_probe;'
expect fail "coro_abi_probe added to the released node" "added to a node of the released ABI" checks joined

if [ "$failures" != 0 ]; then
    echo "test-abi: $failures of the doctored cases got the wrong verdict" >&2
    exit 1
fi
echo "test-abi: ok"
