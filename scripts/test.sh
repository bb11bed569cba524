#!/usr/bin/env bash
# The one test command (README, CI): set up what is missing, then run every test tier.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m core` or `-k trajectory`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s)
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
t2=$(date +%s)
printf '\n[test] set-up %ds, tests %ds, total %ds (exit %d)\n' $((t1 - t0)) $((t2 - t1)) $((t2 - t0)) "$rc"
exit "$rc"
