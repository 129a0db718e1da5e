#!/bin/bash
# dump_demo.sh: the echo server's SIGUSR1 dump, shown and checked.
#
#   dump_demo.sh ECHO_SERVER [--quiet]
#
# Starts ECHO_SERVER (build/echo_server) with COFRAME_CHECK=1 on an
# ephemeral port, opens one connection and echoes a line through it, sends
# SIGUSR1, prints the dump the server writes (unless --quiet) and checks
# it: the acceptor and the connection each wait for their socket to be
# readable, with a backtrace through coro_wait_fd. Then SIGTERM, and the
# server must exit 0. Bash, for its /dev/tcp.
set -u
server=$1
quiet=${2:-}
out=$(mktemp)
trap 'rm -f "$out"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null' EXIT

fail() { echo "dump_demo: $*" >&2; [ -s "$out" ] && sed 's/^/  | /' "$out" >&2; exit 1; }

# Waits up to 10 s for a line matching $1 in the server's output.
wait_for() {
    for _ in $(seq 100); do
        grep -q "$1" "$out" && return 0
        sleep 0.1
    done
    return 1
}

COFRAME_CHECK=1 "$server" 0 >"$out" 2>&1 &
pid=$!
wait_for "listening on" || fail "the server did not start"
port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\) .*/\1/p' "$out")
[ -n "$port" ] || fail "no port in the server's first line"

exec 3<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to port $port"
echo "hello, coroutine" >&3
read -r -t 10 reply <&3 || fail "no echo"
[ "$reply" = "hello, coroutine" ] || fail "echoed '$reply'"

kill -USR1 "$pid"
wait_for "coro_dump: end of runtime" || fail "no dump after SIGUSR1"
dump=$(sed -n '/^coro_dump: runtime/,/^coro_dump: end of runtime/p' "$out")
[ "$quiet" = --quiet ] || printf '%s\n' "$dump"

n=$(printf '%s\n' "$dump" | grep -c 'waits on: fd [0-9]* readable, no deadline')
[ "$n" -ge 2 ] || fail "expected the acceptor and the connection waiting on their sockets"
printf '%s\n' "$dump" | grep -q 'backtrace at its suspension:' || fail "no backtrace (COFRAME_CHECK=1)"
printf '%s\n' "$dump" | grep -q ' coro_wait_fd+0x' || fail "no coro_wait_fd frame in a backtrace"
printf '%s\n' "$dump" | grep -q ': 2 coroutines$' || fail "expected 2 coroutines"

exec 3<&-
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ "$rc" = 0 ] || fail "the server exited with status $rc"
exit 0
