#!/bin/sh
# make fuzz: the cargo-fuzz target `ops` (fuzz/README.md) for
# FUZZ_SECONDS seconds, on the nightly toolchain, under AddressSanitizer
# (coframe's `asan` feature announces its stack switches to ASan).
set -eu

seconds=${FUZZ_SECONDS:-300}
cargo=${CARGO:-cargo}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "make fuzz: needs the nightly toolchain (libFuzzer's instrumentation);" >&2
    echo "install it with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! "$cargo" +nightly fuzz --version >/dev/null 2>&1; then
    echo "make fuzz: installing cargo-fuzz"
    "$cargo" install cargo-fuzz --locked
fi

cd "$(dirname "$0")/../fuzz"
# detect_stack_use_after_return=0: a coroutine abandoned in the middle of
# its body (a default-mode cancel of a suspended one, in most inputs)
# keeps its ASan fake stack, so with it on the process grows input by
# input (fuzz/README.md). COFRAME_NO_HEADER: leave include/coframe.h alone.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=0} \
COFRAME_NO_HEADER=1 \
    exec nice -n 10 "$cargo" +nightly fuzz run ops --features asan corpus/ops -- \
    -max_total_time="$seconds" -timeout=30 -max_len=1024
