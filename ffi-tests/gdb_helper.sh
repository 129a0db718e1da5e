#!/bin/sh
# gdb_helper.sh: scripts/coframe-gdb.py on a live process, in gdb's batch mode.
#
#   gdb_helper.sh GDB_TARGET
#
# COFRAME_GDB_PY names another copy of the helper (scripts/test-deb.sh: the
# packaged /usr/share/coframe/coframe-gdb.py).
# Runs GDB_TARGET (gdb_target.c) under gdb, stops it in gdb_stop_here() while
# one coroutine is suspended inside gdb_parked_here() and another waits on a
# pipe, and checks that `coframe list` lists both (id, state, references, the
# wait) and that `coframe bt gdb_parked_id` shows gdb_parked_here's frame, and
# gdb_parked_body's below it; then the program must run on and exit 0 (the
# helper gave the thread its registers back). Exit 77 (a skip, for
# run-test.sh) only when gdb or its Python is missing: scripts/deps.sh
# installs gdb.
set -u
target=$1
helper=${COFRAME_GDB_PY:-$(dirname "$0")/../scripts/coframe-gdb.py}

if ! command -v gdb >/dev/null 2>&1; then
    echo "gdb_helper: SKIP: gdb is not installed (scripts/deps.sh installs it)"
    exit 77
fi
if ! gdb -nx -batch -ex 'python print("py-ok")' 2>/dev/null | grep -q py-ok; then
    echo "gdb_helper: SKIP: this gdb has no Python (scripts/coframe-gdb.py needs it)"
    exit 77
fi

# No thread-exit notes: gdb writes them to the pipe the program writes its
# summary to, and one landed in the middle of that line.
out=$(gdb -nx -batch -x "$helper" \
    -ex 'set print thread-events off' \
    -ex 'break gdb_stop_here' -ex run \
    -ex 'coframe list' \
    -ex 'coframe bt gdb_parked_id' \
    -ex 'coframe bt gdb_waiting_id' \
    -ex 'bt 1' \
    -ex continue \
    --args "$target" 2>&1)
printf '%s\n' "$out"

fail=0
expect() {
    if printf '%s\n' "$out" | grep -q -- "$1"; then
        echo "gdb_helper: ok: $2"
    else
        echo "gdb_helper: FAILED: $2 (no line matching '$1')"
        fail=1
    fi
}
ids=$(printf '%s\n' "$out" | sed -n 's/^gdb_target: coroutine \([0-9]*\) suspended in gdb_parked_here, coroutine \([0-9]*\) waits on fd \([0-9]*\)$/\1 \2 \3/p')
set -- $ids
if [ $# -ne 3 ]; then
    echo "gdb_helper: FAILED: gdb_target did not say which coroutines it made"
    exit 1
fi
parked=$1 waiting=$2 fd=$3
locker=$(printf '%s\n' "$out" | sed -n 's/^gdb_target: coroutine \([0-9]*\) waits for mutex \(0x[0-9a-f]*\)$/\1 \2/p')
set -- $locker
if [ $# -ne 2 ]; then
    echo "gdb_helper: FAILED: gdb_target did not say which coroutine waits for its mutex"
    exit 1
fi
locking=$1 mutex=$2
expect "^coroutine $parked (runtime [0-9]*) on worker 0: suspended; promise held; token held by the user\$" \
    "coframe list shows the suspended coroutine $parked"
expect "^coroutine $waiting (runtime [0-9]*) on worker 0: waiting in the library; promise held; token held by the library\$" \
    "coframe list shows the waiting coroutine $waiting"
expect "^  waits on: fd $fd readable, no deadline\$" "and what it waits on"
expect "^coroutine $locking (runtime [0-9]*) on worker 0: waiting in the library; promise held; token held by the library\$" \
    "coframe list shows the coroutine $locking waiting for the mutex"
expect "^  waits on: lock of mutex $mutex, no deadline\$" "and which mutex"
expect "^coframe: 3 coroutines\$" "and no other"
expect "^coroutine $parked: its stack at its last switch out" "coframe bt finds the saved stack"
expect "^#[0-9]* .* in gdb_parked_here (.*) at .*gdb_target.c:[0-9]*\$" \
    "its backtrace shows gdb_parked_here"
expect "^#[0-9]* .* in gdb_parked_body (.*) at .*gdb_target.c:[0-9]*\$" \
    "and gdb_parked_body below it"
expect "^#[0-9][0-9]* .*coframe::ffi::coro_suspend (" "and the library's coro_suspend above it"
expect "^#[0-9]* .* in waiting_body (.*) at .*gdb_target.c:[0-9]*\$" \
    "the waiting coroutine's backtrace shows waiting_body"
if printf '%s\n' "$out" | grep -q "stack_init_trampoline"; then
    echo "gdb_helper: FAILED: bt went past the coroutine's entry into corosensei's trampoline"
    fail=1
fi
expect "^#0  gdb_stop_here () at .*gdb_target.c" "the thread's own stack is back after bt"
expect "^gdb_target: [0-9]* passed, 0 failed\$" "the program ran on to its end"
expect "^\[Inferior 1 (process [0-9]*) exited normally\]\$" "and exited 0"
exit $fail
