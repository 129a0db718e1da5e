#!/bin/sh
# The library on targets other than the host (`make test-ports`):
#   - runs the Rust unit and integration tests built for 32-bit x86
#     (i686-unknown-linux-gnu), where a pointer and mio's token have 32
#     bits: what a Debian i386 or armhf build of the package would meet,
#     then the C tests built with -m32 against that library
#     (make -C ffi-tests test-32);
#   - compiles the library and its tests, with clippy's warnings as
#     errors, for macOS (kqueue, no clock_nanosleep), FreeBSD and 64-bit
#     ARM Linux. Compiled only: nothing here can run them.
# Installs the Rust targets with rustup; the 32-bit run needs gcc-multilib
# (scripts/deps.sh installs it on amd64) and is skipped on other hosts.
set -eu

CARGO=${CARGO:-cargo}
RUN_32=i686-unknown-linux-gnu
CHECK_ONLY="x86_64-apple-darwin x86_64-unknown-freebsd aarch64-unknown-linux-gnu"

host=$(rustc -vV | sed -n 's/^host: //p')
run32=0
[ "$host" = x86_64-unknown-linux-gnu ] && run32=1

want=$CHECK_ONLY
[ "$run32" = 1 ] && want="$RUN_32 $want"
installed=$(rustup target list --installed 2>/dev/null) || {
    echo "ports: rustup is not on PATH: it installs the targets this step builds for" >&2
    exit 1
}
for t in $want; do
    if ! printf '%s\n' "$installed" | grep -qx "$t"; then
        echo "ports: rustup target add $t"
        rustup target add "$t"
    fi
done

for t in $CHECK_ONLY; do
    echo "ports: cargo clippy --lib --tests --target $t -- -D warnings"
    $CARGO clippy --lib --tests --target "$t" -- -D warnings
done

if [ "$run32" = 1 ]; then
    echo "ports: cargo test --target $RUN_32"
    $CARGO test --target "$RUN_32"
    echo "ports: the C tests built with -m32 against the $RUN_32 library"
    $CARGO build --release --target "$RUN_32"
    ${MAKE:-make} -C "$(dirname "$0")/../ffi-tests" test-32
else
    sh "$(dirname "$0")/skip.sh" "the 32-bit run needs an x86_64 Linux host (this is $host); the compile checks ran"
fi
