#!/bin/sh
# coframe's ABI checks (docs/API.md, "ABI and versioning").
#
#   scripts/abi.sh symbols LIB  LIB exports exactly the names of the version
#                               script, each at its node, and nothing else;
#                               the script names exactly the functions of
#                               the header
#   scripts/abi.sh dump OUT     the ABI of the header and the version script
#                               as libabigail XML (abidw)
#   scripts/abi.sh check        that ABI against the committed baseline of
#                               the last release (abidiff), and the nodes
#                               of the baseline unchanged
#                               coro_config may grow at its end: it starts
#                               with struct_size, which tells the library
#                               how much of it the caller knows
#   scripts/abi.sh baseline     rewrites the baseline (`make abi-baseline`)
#
# The ABI is read from the header, not from libcoframe.so's debug info.
# That is Rust's: the opaque handles (coro_runtime, coro_mutex...) show
# their insides and every type reachable from them, so a change to a
# private field would read as an ABI change, and its type names move with
# rustc. Instead each function of the header becomes a C stub (its
# prototype as gcc -aux-info prints it, with an empty body), compiled with
# -g into a shared object linked with the same version script and soname,
# and abidw reads that. `symbols` ties the stub to the real library: the
# same names at the same nodes.
#
# Environment (scripts/test-abi.sh points these at doctored copies):
# HEADER (include/coframe.h), MAP (src/ffi/coframe.map), MAJOR
# (scripts/version.sh major), BASELINE (the abi/libcoframe.so.*.abi file),
# GCC (gcc: -aux-info is gcc's).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
HEADER=${HEADER:-$root/include/coframe.h}
MAP=${MAP:-$root/src/ffi/coframe.map}
MAJOR=${MAJOR:-$(sh "$root/scripts/version.sh" major)}
GCC=${GCC:-gcc}

fail() { echo "abi: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/coframe-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# prototypes HEADER: its prototypes, one a line, as gcc normalises them:
#   int coro_runtime_new (const struct coro_config *, struct coro_runtime **);
prototypes() {
    printf '#include "%s"\n' "$1" >"$tmp/h.c"
    "$GCC" -aux-info "$tmp/aux" -fsyntax-only "$tmp/h.c" || fail "$1 does not compile"
    grep "^/\* [^ ]*/$(basename "$1"):[0-9]*:[A-Z]* \*/ extern " "$tmp/aux" |
        sed 's|^/\* [^*]* \*/ extern ||'
}

# The header's function names, sorted.
header_names() {
    prototypes "$HEADER" | sed -n 's/^[^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\) (.*/\1/p' | sort
}

# "name node" for each exported name of the version script, sorted. The
# script keeps to one form, which this insists on rather than half-parse:
# a comment at the top, then nodes "NODE {" ... "};" or "} PARENT;", with
# "global:" and "local:" and one "name;" a line.
map_pairs() {
    awk -v map="$MAP" '
    function bad(why) { printf "abi: FAIL: %s:%d: %s: %s\n", map, NR, why, $0 > "/dev/stderr"; err = 1 }
    incomment { if (/\*\//) incomment = 0; next }
    /^[ \t]*\/\*/ { if (!/\*\//) incomment = 1; next }
    /^[ \t]*$/ { next }
    node == "" && /^[A-Z][A-Z0-9_]*_[0-9]+\.[0-9]+ \{$/ { node = $1; scope = ""; next }
    node == "" { bad("expected \"NODE {\" (NODE like COFRAME_0.1)"); next }
    /^\}( [A-Z][A-Z0-9_]*_[0-9]+\.[0-9]+)?;$/ { node = ""; next }
    /^  (global|local):$/ { scope = $1; next }
    scope == "global:" && /^    [A-Za-z_][A-Za-z0-9_]*;$/ { sub(/;$/, "", $1); print $1, node; next }
    scope == "local:" && /^    \*;$/ { next }
    { bad("not a line of the form this script reads") }
    END { if (node != "") { $0 = ""; bad("node " node " is not closed") } exit err }
    ' "$MAP" >"$tmp/pairs" || fail "$MAP: see above"
    sort "$tmp/pairs"
}

# The symbols check: the header, the version script and LIB's exports agree.
symbols() {
    lib=$1
    [ -f "$lib" ] || fail "$lib is missing: run make build"
    header_names >"$tmp/h.names"
    map_pairs >"$tmp/m.pairs"
    cut -d' ' -f1 "$tmp/m.pairs" >"$tmp/m.names"
    [ -s "$tmp/h.names" ] || fail "no functions found in $HEADER"
    dup=$(uniq -d "$tmp/m.names")
    [ -z "$dup" ] || fail "$MAP lists these more than once:" $dup
    missing=$(comm -23 "$tmp/h.names" "$tmp/m.names")
    [ -z "$missing" ] || fail "in $HEADER but in no node of $MAP (add them to the newest node):" $missing
    extra=$(comm -13 "$tmp/h.names" "$tmp/m.names")
    [ -z "$extra" ] || fail "in $MAP but not functions of $HEADER:" $extra

    # Defined dynamic symbols as "name@@node" (or a bare name: no version).
    # The nodes' own symbols (ABS, size 0, named as a node) are left out.
    cut -d' ' -f2 "$tmp/m.pairs" | sort -u >"$tmp/m.nodes"
    readelf --dyn-syms -W "$lib" | awk 'NR > 3 && $7 != "UND" && ($5 == "GLOBAL" || $5 == "WEAK") { print $7, $3, $8 }' |
        while read -r ndx size name; do
            if [ "$ndx" = ABS ] && [ "$size" = 0 ] && grep -qx "$name" "$tmp/m.nodes"; then continue; fi
            echo "$name"
        done | sort >"$tmp/exports"
    [ -s "$tmp/exports" ] || fail "$lib exports nothing"
    unversioned=$(grep -v '@' "$tmp/exports" || true)
    [ -z "$unversioned" ] || fail "$lib exports these without a version:" $unversioned
    other=$(sed 's/@.*//' "$tmp/exports" | grep -v '^coro_' || true)
    [ -z "$other" ] || fail "$lib exports names that are not coro_*:" $other
    sed 's/ /@@/' "$tmp/m.pairs" | sort >"$tmp/want"
    if ! cmp -s "$tmp/want" "$tmp/exports"; then
        diff "$tmp/want" "$tmp/exports" | sed -n 's/^< /  missing:  /p; s/^> /  unwanted: /p' >&2
        fail "$lib does not export the names of $MAP at their nodes (above)"
    fi
    echo "abi: $(basename "$lib"): $(wc -l <"$tmp/exports") coro_* functions, each at its node of $(basename "$MAP"); nothing else exported"
}

# dump OUT [HEADER]: the ABI of HEADER and MAP, through a C stub built from them.
dump() {
    out=$1 header=${2:-$HEADER}
    command -v abidw >/dev/null 2>&1 || fail "abidw is missing (Debian: abigail-tools; scripts/deps.sh installs it)"
    map_pairs >/dev/null
    mkdir -p "$tmp/stub"
    {
        printf '/* Generated by scripts/abi.sh: the functions of %s with empty bodies. */\n' "$(basename "$header")"
        printf '#include "%s"\n' "$header"
        prototypes "$header" | sed 's/;$/ { __builtin_trap(); }/'
    } >"$tmp/stub/coframe-abi.c"
    # C2x: the prototypes carry no parameter names. Relative paths, so
    # that the dump does not name this temporary directory.
    (cd "$tmp/stub" && "$GCC" -std=c2x -g -fPIC -shared -o "libcoframe.so.$MAJOR" coframe-abi.c \
        -Wl,--version-script="$MAP" -Wl,--no-undefined-version -Wl,-soname,"libcoframe.so.$MAJOR") ||
        fail "the stub built from $header and $MAP does not link"
    (cd "$tmp/stub" && abidw --no-corpus-path --no-comp-dir-path --no-show-locs \
        --out-file "$out" "libcoframe.so.$MAJOR") || fail "abidw failed"
}

# The baseline: the one abi/libcoframe.so.*.abi, unless BASELINE says.
baseline_file() {
    if [ -n "${BASELINE:-}" ]; then echo "$BASELINE"; return; fi
    set -- "$root"/abi/libcoframe.so.*.abi
    [ $# = 1 ] && [ -f "$1" ] || fail "expected one abi/libcoframe.so.*.abi, found: $*"
    echo "$1"
}

check() {
    base=$(baseline_file)
    command -v abidiff >/dev/null 2>&1 || fail "abidiff is missing (Debian: abigail-tools; scripts/deps.sh installs it)"
    base_major=$(sed -n "s/.* soname='libcoframe\.so\.\([0-9]*\)'.*/\1/p" "$base" | head -n 1)
    [ -n "$base_major" ] || fail "$base names no soname libcoframe.so.N"
    # coro_config's fields past those of the baseline are left out: they
    # were appended, the only change to it that is allowed.
    n=$(sed -n "/<class-decl name='coro_config'/,/<\/class-decl>/p" "$base" | grep -c '<data-member')
    mkdir -p "$tmp/h"
    awk -v n="$n" '
    /^typedef struct coro_config \{$/ { inside = 1 }
    inside && /^\} coro_config;$/ { inside = 0 }
    inside && /^  [A-Za-z_][^;]*;$/ && ++k > n { print "abi: coro_config grew:" $0 > "/dev/stderr"; next }
    { print }
    ' "$HEADER" >"$tmp/h/$(basename "$HEADER")"
    dump "$tmp/new.abi" "$tmp/h/$(basename "$HEADER")"

    # A node of the last release is frozen: the functions that were in it
    # stay there (abidiff sees a move as a removal) and none join it.
    sed -n "s/.*<elf-symbol name='\([^']*\)' version='\([^']*\)'.*/\1 \2/p" "$base" | sort >"$tmp/base.pairs"
    cut -d' ' -f2 "$tmp/base.pairs" | sort -u >"$tmp/base.nodes"
    map_pairs | while read -r name node; do
        if grep -qx "$node" "$tmp/base.nodes" && ! grep -qx "$name $node" "$tmp/base.pairs"; then
            echo "$name $node"
        fi
    done >"$tmp/joined"
    if [ "$base_major" = "$MAJOR" ] && [ -s "$tmp/joined" ]; then
        sed 's/^/  /' "$tmp/joined" >&2
        fail "functions added to a node of the released ABI in $(basename "$base") (above): put them in a new node, COFRAME_<major>.<minor> of the next release"
    fi

    # Exit status bits: 1 error, 2 usage, 4 ABI change, 8 incompatible.
    # Added functions are not a change here (--no-added-syms).
    rc=0
    abidiff --no-added-syms --fail-no-debug-info "$base" "$tmp/new.abi" >"$tmp/report" 2>&1 || rc=$?
    if [ $((rc & 3)) != 0 ]; then
        cat "$tmp/report" >&2
        fail "abidiff failed (status $rc)"
    fi
    if [ "$rc" = 0 ]; then
        echo "abi: no change from $(basename "$base") but additions"
        return 0
    fi
    cat "$tmp/report"
    if [ "$base_major" != "$MAJOR" ]; then
        echo "abi: the changes above come with a new soname major ($base_major -> $MAJOR): allowed;" \
            "record the new ABI with make abi-baseline when it is released"
        return 0
    fi
    fail "the ABI of libcoframe.so.$MAJOR changed from $(basename "$base") (above) without a new soname major"
}

case ${1:-} in
symbols) symbols "${2:?usage: scripts/abi.sh symbols LIB}" ;;
dump) dump "${2:?usage: scripts/abi.sh dump OUT}" ;;
check) check ;;
baseline)
    mkdir -p "$root/abi"
    dump "$tmp/new.abi"
    rm -f "$root"/abi/libcoframe.so.*.abi
    mv "$tmp/new.abi" "$root/abi/libcoframe.so.$MAJOR.abi"
    echo "abi: wrote abi/libcoframe.so.$MAJOR.abi"
    ;;
*) echo "usage: scripts/abi.sh symbols LIB | dump OUT | check | baseline" >&2; exit 2 ;;
esac
