# shellcheck shell=sh
# Sourced by the test scripts that stage files in a temporary directory,
# after they set $testname to their name: makes $tmp, removed on exit unless
# KEEP=1 (then it is named), and defines fail().
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coframe-$testname.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "$testname: keeping $tmp"
else
    trap 'rm -rf "$tmp"' EXIT
fi
fail() { echo "$testname: FAIL: $*" >&2; exit 1; }
