#!/bin/sh
# Compiles and runs every ```c block of a markdown file (README.md's quick
# looks, docs/TUTORIAL.md's steps), so the documents cannot show C that no
# longer builds or works: each block is a whole program, built with
# -std=c11 -Wall -Wextra -Werror -pthread, and must exit 0. Called by
# `make -C c-examples test` (README.md) and scripts/test-docs.sh (the
# tutorial) with the build directory and the library's.
#
#   readme-c.sh MARKDOWN BUILD_DIR LIBDIR INCDIR
#   readme-c.sh MARKDOWN BUILD_DIR pkg-config   the installed coframe
#                                               instead, through pkg-config
#                                               (scripts/test-deb.sh)
set -eu
. "$(dirname "$0")/readme-flags.sh"
name=$(basename "$md" .md)
mkdir -p "$out"
awk -v out="$out" -v name="$name" '
    /^```c$/ { n++; file = sprintf("%s/%s-%d.c", out, name, n); inside = 1; next }
    /^```/   { inside = 0; next }
    inside   { print > file }
    END      { print n + 0 }
' "$md" > "$out/$name-count"
n=$(cat "$out/$name-count")
[ "$n" -gt 0 ] || { echo "readme-c: no C block in $md" >&2; exit 1; }
i=1
while [ "$i" -le "$n" ]; do
    src="$out/$name-$i.c"
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -pthread "$src" \
        -o "$out/$name-$i" "$@" -lpthread ||
        { echo "readme-c: $md's C block $i does not build" >&2; exit 1; }
    if ! timeout 60 "$out/$name-$i" > "$out/$name-$i.out" 2>&1; then
        echo "readme-c: $md's C block $i failed:" >&2
        cat "$out/$name-$i.out" >&2
        exit 1
    fi
    i=$((i + 1))
done
echo "readme-c: $md's $n C blocks built and ran"
