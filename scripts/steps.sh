#!/bin/sh
# Runs the steps of `make test`: each is a make target, run in order with a
# banner. Steps before a ':' argument must pass, or the run stops there;
# after it, every step runs even when an earlier one failed (set
# FAIL_FAST=1 to stop at the first failure), so one run shows every broken
# step. A step may call scripts/skip.sh to count as skipped.
# Ends with a table and one line: "coframe: N passed, N failed[, N skipped]".
# Exit status: 0 when no step failed.
#
# Usage: scripts/steps.sh STEP... [: STEP...]
set -u

MAKE=${MAKE:-make}
FAIL_FAST=${FAIL_FAST:-0}

describe() {
    case $1 in
    deps) echo "system packages (scripts/deps.sh)" ;;
    build) echo "cargo build --release" ;;
    lint) echo "cargo fmt --check; cargo clippy --all-targets -- -D warnings" ;;
    test-rust) echo "cargo test --release" ;;
    test-loom) echo "loom models: RUSTFLAGS='--cfg loom' cargo test --release --lib loom_ (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3})" ;;
    test-ports) echo "other targets: cargo test for i686 Linux (and its C tests) and aarch64 Linux under qemu; cargo clippy for macOS, FreeBSD, aarch64 (scripts/ports.sh)" ;;
    test-drift) echo "header drift: tests/header_drift.rs and git diff -- include/coframe.h" ;;
    test-abi) echo "ABI: only coro_* exported, each at its node of src/ffi/coframe.map; abidiff against abi/libcoframe.so.MAJOR.abi (scripts/test-abi.sh)" ;;
    test-ffi) echo "C ABI tests from C, C++ and Zig (plain, ASan, valgrind, TSan against the tsan build): make -C ffi-tests test" ;;
    test-examples) echo "examples: make -C c-examples test; make -C cpp-examples test; make -C python-examples test" ;;
    test-zig) echo "Zig package: zig build test (also under valgrind and the safe mode), README.md's Zig block (scripts/test-zig.sh)" ;;
    test-install) echo "make install into a temporary DESTDIR, build and run a program against it" ;;
    test-deb) echo "Debian packages: make deb, lintian, dpkg -i, README.md's C, C++ and Zig quick looks against them, dpkg --purge (scripts/test-deb.sh)" ;;
    test-docs) echo "the API reference from coframe.h (scripts/apiref.py): a man page per function, roff lint, HTML links; docs/TUTORIAL.md's C blocks built and run" ;;
    test-cinstall) echo "cargo cinstall (cargo-c) installs what make install installs (scripts/test-cinstall.sh)" ;;
    *) echo "make $1" ;;
    esac
}

total=0
for s in "$@"; do [ "$s" = : ] || total=$((total + 1)); done

skipfile=$(mktemp "${TMPDIR:-/tmp}/coframe-steps.XXXXXX")
trap 'rm -f "$skipfile"' EXIT
COFRAME_STEP_SKIP_FILE=$skipfile
export COFRAME_STEP_SKIP_FILE

passed=0 failed=0 skipped=0 i=0
required=1 stop=""
table=""
failed_steps=""
t_start=$(date +%s)

for step in "$@"; do
    if [ "$step" = : ]; then
        required=0
        continue
    fi
    i=$((i + 1))
    if [ -n "$stop" ]; then
        table="$table$(printf '  %-7s %-14s' 'NOT RUN' "$step")
"
        continue
    fi
    printf '\n==> [%d/%d] %s: %s\n' "$i" "$total" "$step" "$(describe "$step")"
    : >"$skipfile"
    t0=$(date +%s)
    if "$MAKE" --no-print-directory "$step"; then
        if [ -s "$skipfile" ]; then
            result=SKIP
            skipped=$((skipped + 1))
        else
            result=PASS
            passed=$((passed + 1))
        fi
    else
        result=FAIL
        failed=$((failed + 1))
        failed_steps="$failed_steps $step"
        if [ "$required" = 1 ]; then
            stop="$step is required"
        elif [ "$FAIL_FAST" = 1 ]; then
            stop="FAIL_FAST=1"
        fi
    fi
    dt=$(($(date +%s) - t0))
    note=""
    [ "$result" = SKIP ] && note=$(head -n 1 "$skipfile")
    printf '<== [%d/%d] %s: %s (%ss)\n' "$i" "$total" "$step" "$result" "$dt"
    table="$table$(printf '  %-7s %-14s %5ss  %s' "$result" "$step" "$dt" "$note")
"
done

elapsed=$(($(date +%s) - t_start))
printf '\n==> summary (%dm%02ds)\n' $((elapsed / 60)) $((elapsed % 60))
printf '%s' "$table"
[ -n "$stop" ] && echo "  stopped early: $stop"
[ -n "$failed_steps" ] && echo "  failed:$failed_steps"
line="coframe: $passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
