#!/bin/sh
# Marks the current `make test` step as skipped (scripts/steps.sh counts it)
# and says why. Usage: scripts/skip.sh REASON
echo "SKIP: $*"
if [ -n "${COFRAME_STEP_SKIP_FILE:-}" ]; then
    printf '%s\n' "$*" >>"$COFRAME_STEP_SKIP_FILE"
fi
