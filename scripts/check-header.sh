#!/bin/sh
# The second half of the header drift check (`make test-drift`): the build
# has just rewritten include/coframe.h from src/ffi, so any difference from
# the committed file means the commit carries a stale header.
# (tests/header_drift.rs is the first half: it catches a header edited by
# hand, which the build does not rewrite.)
set -eu
cd "$(dirname "$0")/.."
msg="include/coframe.h differs from what src/ffi generates: commit the regenerated header"

if [ ! -e .git ] || ! command -v git >/dev/null 2>&1; then
    echo "check-header: not a git checkout: the committed header cannot be compared (tests/header_drift.rs still ran)"
    exit 0
fi
# safe.directory: CI may run as a user other than the clone's owner.
git_() { git -c safe.directory="$(pwd)" "$@"; }
if ! git_ ls-files --error-unmatch include/coframe.h >/dev/null 2>&1; then
    echo "check-header: include/coframe.h is not tracked by git" >&2
    echo "$msg" >&2
    exit 1
fi
if ! git_ diff --exit-code --stat -- include/coframe.h; then
    git_ --no-pager diff -- include/coframe.h | head -n 60 >&2
    echo "$msg" >&2
    exit 1
fi
echo "check-header: include/coframe.h matches the committed file"
