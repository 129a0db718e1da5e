#!/bin/sh
# Compiles and runs every ```cpp block of README.md (the C++ quick look),
# so the README cannot show C++ that no longer builds or works: g++ (or
# $CXX) at -std=c++20 -Wall -Wextra -Wpedantic -Werror. Called by
# `make -C cpp-examples test` with the build directory and the library's.
#
#   readme-cpp.sh BUILD_DIR LIBDIR INCDIR
set -eu
out=$1 libdir=$2 incdir=$3
readme="$(dirname "$0")/../README.md"
mkdir -p "$out"
awk -v out="$out" '
    /^```cpp$/ { n++; file = sprintf("%s/readme-%d.cpp", out, n); inside = 1; next }
    /^```/     { inside = 0; next }
    inside     { print > file }
    END        { print n + 0 }
' "$readme" > "$out/readme-count"
n=$(cat "$out/readme-count")
[ "$n" -gt 0 ] || { echo "readme-cpp: no C++ block in README.md" >&2; exit 1; }
i=1
while [ "$i" -le "$n" ]; do
    src="$out/readme-$i.cpp"
    ${CXX:-g++} -std=c++20 -Wall -Wextra -Wpedantic -Werror -pthread -I"$incdir" "$src" \
        -o "$out/readme-$i" -L"$libdir" -lcoframe -lpthread
    if ! LD_LIBRARY_PATH="$libdir" timeout 60 "$out/readme-$i" > "$out/readme-$i.out" 2>&1; then
        echo "readme-cpp: README.md's C++ block $i failed:" >&2
        cat "$out/readme-$i.out" >&2
        exit 1
    fi
    i=$((i + 1))
done
echo "cpp-examples: README.md's $n C++ blocks built by ${CXX:-g++} and ran"
