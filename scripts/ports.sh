#!/bin/sh
# The library on targets other than the host (`make test-ports`):
#   - runs the Rust unit and integration tests built for 32-bit x86
#     (i686-unknown-linux-gnu), where a pointer and mio's token have 32
#     bits: what a Debian i386 or armhf build of the package would meet,
#     then the C tests built for i686 against that library
#     (make -C ffi-tests test-32);
#   - runs the Rust tests built for 64-bit ARM Linux under qemu-user
#     (another instruction set for corosensei's switch and the atomics;
#     qemu runs the threads on the host's x86 cores, so it does not
#     reproduce ARM's weaker memory ordering);
#   - compiles the library and its tests, with clippy's warnings as
#     errors, for macOS (kqueue, no clock_nanosleep), FreeBSD and 64-bit
#     ARM Linux. macOS and FreeBSD are compiled only: nothing here runs them.
# Installs the Rust targets with rustup; the runs need the i686 and
# aarch64 cross gcc, the i386 runtime and qemu-user (scripts/deps.sh
# installs them on amd64) and are skipped on other hosts.
set -eu

CARGO=${CARGO:-cargo}
RUN_32=i686-unknown-linux-gnu
RUN_ARM=aarch64-unknown-linux-gnu
LINT_TARGETS="x86_64-apple-darwin x86_64-unknown-freebsd $RUN_ARM"

host=$(rustc -vV | sed -n 's/^host: //p')
can_run=0
[ "$host" = x86_64-unknown-linux-gnu ] && can_run=1

want=$LINT_TARGETS
[ "$can_run" = 1 ] && want="$RUN_32 $want"
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

for t in $LINT_TARGETS; do
    echo "ports: cargo clippy --lib --tests --target $t -- -D warnings"
    $CARGO clippy --lib --tests --target "$t" -- -D warnings
done

if [ "$can_run" = 1 ]; then
    # Linked by the i686 cross gcc, run natively (the kernel runs i386
    # programs; libc6-i386 gives them their loader and libc).
    export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=i686-linux-gnu-gcc
    echo "ports: cargo test --target $RUN_32"
    $CARGO test --target "$RUN_32"
    echo "ports: the C tests built by i686-linux-gnu-gcc against the $RUN_32 library"
    $CARGO build --release --target "$RUN_32"
    # libcoframe.so linked by the cross gcc (GNU ld) with the version
    # script, as `make build` links the host's, and its exports checked.
    CC=i686-linux-gnu-gcc sh "$(dirname "$0")/link-so.sh" "$(dirname "$0")/../target/$RUN_32/release" "$RUN_32"
    sh "$(dirname "$0")/abi.sh" symbols "$(dirname "$0")/../target/$RUN_32/release/libcoframe.so"
    ${MAKE:-make} -C "$(dirname "$0")/../ffi-tests" test-32 CC32=i686-linux-gnu-gcc
    # 64-bit ARM under qemu-user, linked by the cross gcc. qemu-user answers
    # 0 to MADV_GUARD_INSTALL and installs nothing, so the library falls
    # back to mprotect guards there (src/stack/unix.rs checks the guard);
    # and its mincore refuses a range holding a PROT_NONE page, which
    # Linux does not, so the one test that counts resident pages that way
    # is left out here.
    echo "ports: cargo test --target $RUN_ARM, under qemu-aarch64"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
        $CARGO test --target "$RUN_ARM" -- --skip fresh_stacks_commit_nothing_and_a_touch_commits_one_page
else
    sh "$(dirname "$0")/skip.sh" "the i686 and qemu-aarch64 runs need an x86_64 Linux host (this is $host); the compile checks ran"
fi
