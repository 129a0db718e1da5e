#!/bin/sh
# Compiles and runs every ```cpp block of a markdown file (README.md's C++
# quick look, docs/CPP.md's programs), so the documents cannot show C++
# that no longer builds or works: g++ (or $CXX) at -std=c++20 -Wall
# -Wextra -Wpedantic -Werror. Each block is a whole program; it must exit
# 0, with stdin empty. Called by `make -C cpp-examples test` (README.md)
# and scripts/test-docs.sh (docs/CPP.md) with the build directory and the
# library's.
#
#   readme-cpp.sh MARKDOWN BUILD_DIR LIBDIR INCDIR
#   readme-cpp.sh MARKDOWN BUILD_DIR pkg-config   the installed coframe
#                                                 instead, through pkg-config
#                                                 (scripts/test-deb.sh)
set -eu
. "$(dirname "$0")/readme-flags.sh"
name=$(basename "$md" .md)
mkdir -p "$out"
awk -v out="$out" -v name="$name" '
    /^```cpp$/ { n++; file = sprintf("%s/%s-%d.cpp", out, name, n); inside = 1; next }
    /^```/     { inside = 0; next }
    inside     { print > file }
    END        { print n + 0 }
' "$md" > "$out/$name-count"
n=$(cat "$out/$name-count")
[ "$n" -gt 0 ] || { echo "readme-cpp: no C++ block in $md" >&2; exit 1; }
i=1
while [ "$i" -le "$n" ]; do
    src="$out/$name-$i.cpp"
    ${CXX:-g++} -std=c++20 -Wall -Wextra -Wpedantic -Werror -pthread "$src" \
        -o "$out/$name-$i" "$@" -lpthread
    if ! timeout 60 "$out/$name-$i" </dev/null > "$out/$name-$i.out" 2>&1; then
        echo "readme-cpp: $md's C++ block $i failed:" >&2
        cat "$out/$name-$i.out" >&2
        exit 1
    fi
    i=$((i + 1))
done
echo "readme-cpp: $md's $n C++ blocks built by ${CXX:-g++} and ran"
