#!/bin/sh
# run-test.sh: the runner behind `make test`.
#
#   run-test.sh RESULTS LABEL COMMAND [ARG...]
#       runs COMMAND under `timeout` (CORO_TEST_TIMEOUT seconds, default 300)
#       and appends "PASS LABEL", "FAIL LABEL (why)" or, when COMMAND exits
#       77 (a tool it needs is missing; it says which), "SKIP LABEL" to
#       RESULTS; always exits 0 so that every test runs.
#   run-test.sh --summary RESULTS [NAME]
#       prints every result and "NAME: N passed, N failed" (and ", N
#       skipped" if any; NAME is ffi-tests unless given); exits 1 if
#       anything failed or nothing passed.
set -u

if [ "$1" = "--summary" ]; then
    results=$2
    name=${3:-ffi-tests}
    [ -f "$results" ] || { echo "$name: no results"; exit 1; }
    echo "=================================================================="
    cat "$results"
    passed=$(grep -c '^PASS' "$results")
    failed=$(grep -c '^FAIL' "$results")
    skipped=$(grep -c '^SKIP' "$results")
    if [ "$skipped" -gt 0 ]; then
        echo "$name: $passed passed, $failed failed, $skipped skipped"
    else
        echo "$name: $passed passed, $failed failed"
    fi
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit $?
fi

results=$1
label=$2
shift 2
limit=${CORO_TEST_TIMEOUT:-300}
echo "=== $label: $*"
start=$(date +%s)
timeout -k 10 "$limit" "$@"
rc=$?
secs=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then
    line="PASS $label (${secs}s)"
elif [ $rc -eq 77 ]; then
    line="SKIP $label (a tool it needs is missing: see its output)"
else
    case $rc in
    124|137) why="timed out after ${limit}s" ;;
    99) why="valgrind reported errors" ;;
    *) if [ $rc -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exit status $rc"; fi ;;
    esac
    line="FAIL $label ($why, ${secs}s)"
fi
echo "--- $line"
echo "$line" >> "$results"
exit 0
