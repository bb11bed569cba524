#!/usr/bin/env bash
# Re-measure every figure the README and the help pages quote on the shipped toy model, one after
# the other (never beside a training run or the tests: the figures are timed on 2 cores). Run it
# after replacing toyworld/weights/, then copy the figures from out/remeasure/*.log into the docs.
# About 45 min on this CPU with the six-block DiT. Pass step names to run only some of them:
#   bash scripts/remeasure.sh quality depth euler edit long mask_norm demo sanity
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=out/remeasure
mkdir -p "$OUT"
PY=(env PYTHONPATH=. .venv/bin/python)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(quality depth euler edit long mask_norm demo)

# the sweep quoted under Masked Attention Patch (README, help page), in one run
SWEEP="baseline,masked,masked blocks=first half,masked blocks=first half end=0.5,masked end=0.1,masked end=0.5"
SWEEP="$SWEEP,masked blocks=second half,masked union"
# how deep and how long on the six-block DiT (its own run in session 18, so its own baseline)
DEPTH="baseline,masked end=0.7,masked blocks=first third end=0.5,masked blocks=first two thirds end=0.5"
# the rows quoted under Temporal Intrinsic Denoise: its SAMPLER wraps euler, so all rows use euler
EULER="baseline,masked,masked +norm,masked +intrinsic,masked +intrinsic x0,masked +norm +intrinsic"

run() {
    local name=$1; shift
    local t0=$(date +%s)
    echo "[remeasure] $name: $*"
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "[remeasure] $name: exit $rc, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/$name.log"
    grep -v -E "^WARNING|torchaudio|Traceback|File \"|exec_module|_call_with_frames|^\s*$|import |ModuleNotFound|it/s\]" \
        "$OUT/$name.log" | tail -40
}

for s in "${steps[@]}"; do
    case $s in
        quality)   run quality "${PY[@]}" -m bench.quality --seeds 4 --cfg 3 --methods "$SWEEP" --out "$OUT/quality.json" ;;
        depth)     run depth "${PY[@]}" -m bench.quality --seeds 4 --cfg 3 --methods "$DEPTH" --out "$OUT/depth.json" ;;
        euler)     run euler "${PY[@]}" -m bench.quality --seeds 4 --cfg 3 --sampler euler --methods "$EULER" \
                       --out "$OUT/euler.json" ;;
        edit)      run edit "${PY[@]}" -m bench.edit --seeds 6 --steps 20 ;;
        long)      run long "${PY[@]}" -m bench.long_video --out "$OUT/long_video.json" ;;
        mask_norm) run mask_norm "${PY[@]}" -m bench.mask_norm ;;
        demo)      run demo bash scripts/demo.sh ;;
        sanity)    run sanity "${PY[@]}" -m toyworld.sanity --samples 30
                   run sanity2000 "${PY[@]}" -m toyworld.sanity --samples 30 --seed0 2000
                   run sanity3000 "${PY[@]}" -m toyworld.sanity --samples 30 --seed0 3000 ;;
        *) echo "unknown step $s (quality depth euler edit long mask_norm demo sanity)"; exit 2 ;;
    esac
done
