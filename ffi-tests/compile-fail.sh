#!/bin/sh
# compile-fail.sh: the compile-time checks of <coframe.hpp> (docs/CPP.md,
# "Hazards caught at compile time").
#
#   compile-fail.sh CXX
#
# Each compile-fail/NAME.cpp is compiled twice with CXX at
# -std=c++20 -Wall -Wextra -Wpedantic -Werror:
#   - as it is, the positive twin: it must compile (so that the test
#     cannot pass because of an unrelated error);
#   - with -DCOFRAME_FAIL, which swaps in the hazard: it must not
#     compile, and the first line of the compiler's output that says
#     "error" must contain every text of the file's "// expect: TEXT"
#     lines (e.g. CP.53).
# Prints PASS/FAIL per file and "compile-fail (CXX): N passed, N failed";
# exits 1 on any failure, 77 if CXX is not installed.
# Environment: CORO_INCDIR (default ../include), CXXFLAGS_EXTRA.
set -u

cxx=${1:?usage: compile-fail.sh CXX}
here=$(cd "$(dirname "$0")" && pwd)
inc=${CORO_INCDIR:-$here/../include}
if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "compile-fail: $cxx is not installed (scripts/deps.sh installs g++ and clang++)"
    exit 77
fi
flags="-std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I$inc ${CXXFLAGS_EXTRA:-}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
pass=0
fail=0
for src in "$here"/compile-fail/*.cpp; do
    name=$(basename "$src" .cpp)
    why=""
    # shellcheck disable=SC2086  # flags are meant to be split
    if ! "$cxx" $flags "$src" >"$out" 2>&1; then
        why="the positive twin does not compile: $(grep -m1 'error' "$out")"
    # shellcheck disable=SC2086
    elif "$cxx" $flags -DCOFRAME_FAIL "$src" >"$out" 2>&1; then
        why="it compiles with -DCOFRAME_FAIL"
    else
        first=$(grep -m1 'error' "$out")
        for want in $(sed -n 's|^// expect: *||p' "$src"); do
            case $first in
            *"$want"*) ;;
            *) why="the first error does not contain '$want': $first" ;;
            esac
        done
    fi
    if [ -z "$why" ]; then
        echo "PASS $name: $(grep -m1 'error' "$out" | cut -c1-160)"
        pass=$((pass + 1))
    else
        echo "FAIL $name ($cxx): $why"
        fail=$((fail + 1))
    fi
done
echo "compile-fail ($cxx): $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
