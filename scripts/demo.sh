#!/usr/bin/env bash
# The main-job command (README): set up what is missing, then run the toy-world demo through a real
# ComfyUI server: the shipped tiny Wan 2.1 model draws "a red circle" with and without box control;
# out/demo/ gets the side-by-side video (webp, gif, mp4) and the figures (figures.json).
# Extra arguments go to `python -m toyworld.demo`, e.g. `bash scripts/demo.sh --seeds 0,1,2,3`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s)
rc=0
.venv/bin/python -m toyworld.demo "$@" || rc=$?
t2=$(date +%s)
printf '\n[demo] set-up %ds, demo %ds, total %ds (exit %d)\n' $((t1 - t0)) $((t2 - t1)) $((t2 - t0)) "$rc"
exit "$rc"
