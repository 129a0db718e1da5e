#!/bin/sh
# Compiles and runs every ```c block of README.md (the quick looks), so the
# README cannot show C that no longer builds or works. Called by
# `make -C c-examples test` with the build directory and the library's.
#
#   readme-c.sh BUILD_DIR LIBDIR INCDIR
set -eu
out=$1 libdir=$2 incdir=$3
readme="$(dirname "$0")/../README.md"
mkdir -p "$out"
awk -v out="$out" '
    /^```c$/ { n++; file = sprintf("%s/readme-%d.c", out, n); inside = 1; next }
    /^```/   { inside = 0; next }
    inside   { print > file }
    END      { print n + 0 }
' "$readme" > "$out/readme-count"
n=$(cat "$out/readme-count")
[ "$n" -gt 0 ] || { echo "readme-c: no C block in README.md" >&2; exit 1; }
i=1
while [ "$i" -le "$n" ]; do
    src="$out/readme-$i.c"
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -pthread -I"$incdir" "$src" \
        -o "$out/readme-$i" -L"$libdir" -lcoframe -lpthread
    if ! LD_LIBRARY_PATH="$libdir" timeout 60 "$out/readme-$i" > "$out/readme-$i.out"; then
        echo "readme-c: README.md's C block $i failed:" >&2
        cat "$out/readme-$i.out" >&2
        exit 1
    fi
    i=$((i + 1))
done
echo "c-examples: README.md's $n C blocks built and ran"
