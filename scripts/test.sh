#!/usr/bin/env bash
# The one test command (README, CI): set up what is missing, then run every test tier.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m core` or `-k trajectory`.
# BOXDIRECTOR_COMFYUI picks another ComfyUI, a folder or a release tarball (scripts/setup.sh), e.g.
#   BOXDIRECTOR_COMFYUI=../shared/comfyui-0.28.0/comfyui-0.28.0.tar.gz bash scripts/test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

t0=$(date +%s)
target="$(bash scripts/setup.sh)"
comfy_dir="$(sed -n 's/^BOXDIRECTOR_COMFYUI=//p' <<<"$target")"
venv="$(sed -n 's/^BOXDIRECTOR_VENV=//p' <<<"$target")"
t1=$(date +%s)
rc=0
# The unpacked folder, not the tarball: the tests and the servers they start use it as it is.
BOXDIRECTOR_COMFYUI="$comfy_dir" "$venv/bin/python" -m pytest "$@" || rc=$?
t2=$(date +%s)
printf '\n[test] ComfyUI %s: set-up %ds, tests %ds, total %ds (exit %d)\n' \
  "$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$comfy_dir/comfyui_version.py")" \
  $((t1 - t0)) $((t2 - t1)) $((t2 - t0)) "$rc"
exit "$rc"
