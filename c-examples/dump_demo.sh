#!/bin/bash
# dump_demo.sh: the echo server's SIGUSR1 dump, shown and checked.
#
#   dump_demo.sh ECHO_SERVER [--quiet]
#
# Starts ECHO_SERVER (build/echo_server) with COFRAME_CHECK=1 on an
# ephemeral port, opens one connection and echoes a line through it, sends
# SIGUSR1, prints the dump the server writes (unless --quiet) and checks
# it: the acceptor and the connection each wait for their socket to be
# readable, with backtraces through coro_accept and coro_recv. Then SIGTERM, and the
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

# The echo comes from the connection's coroutine; the acceptor, on the
# other worker, may still be on its way back to its wait (a busy machine
# can preempt it there), and a dump shows it runnable then. So dump until
# both wait, a few times at most: the state the demo shows is the one a
# quiet server settles in.
dumps=0
n=0
for try in $(seq 20); do
    kill -USR1 "$pid"
    for _ in $(seq 100); do
        [ "$(grep -c '^coro_dump: end of runtime' "$out")" -gt "$dumps" ] && break
        sleep 0.1
    done
    [ "$(grep -c '^coro_dump: end of runtime' "$out")" -gt "$dumps" ] || fail "no dump after SIGUSR1"
    dumps=$((dumps + 1))
    # The last dump in the output.
    dump=$(awk '/^coro_dump: runtime/ { buf = "" } { buf = buf $0 "\n" } /^coro_dump: end of runtime/ { last = buf } END { printf "%s", last }' "$out")
    n=$(printf '%s\n' "$dump" | grep -c 'waits on: fd [0-9]* readable, no deadline')
    [ "$n" -ge 2 ] && break
    sleep 0.1
done
[ "$quiet" = --quiet ] || printf '%s\n' "$dump"

[ "$n" -ge 2 ] || fail "expected the acceptor and the connection waiting on their sockets ($dumps dumps)"
printf '%s\n' "$dump" | grep -q 'backtrace at its suspension:' || fail "no backtrace (COFRAME_CHECK=1)"
for call in coro_accept coro_recv; do
    printf '%s\n' "$dump" | grep -q " $call+0x" || fail "no $call frame in a backtrace"
done
printf '%s\n' "$dump" | grep -q ': 2 coroutines$' || fail "expected 2 coroutines"

exec 3<&-
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ "$rc" = 0 ] || fail "the server exited with status $rc"
exit 0
