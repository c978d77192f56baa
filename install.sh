#!/usr/bin/env bash
# Set up Relit Hands on a fresh Debian/Ubuntu machine (Python >= 3.10; no GPU or display needed).
#   ./install.sh          system GL packages (Mesa EGL, Xvfb), .venv, CPU PyTorch, the package + viewer/asset/feature extras
#   ./install.sh --dev    ... plus the test tools
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

extras="viewer,assets,features,mano,eval,onnx"
for arg in "$@"; do
  case "$arg" in
    --dev) extras="$extras,train,dev" ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# 1. System packages: EGL/OpenGL through Mesa (llvmpipe renders on the CPU), Xvfb for the viewer;
#    optional: libllvm19 for Mitsuba 3's LLVM backend (the synthetic light stage).
apt_pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 xvfb xauth"
apt_optional="libllvm19"
missing=""
for p in $apt_pkgs $apt_optional; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $apt_pkgs >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $apt_optional >/dev/null 2>&1 ||
    echo "install.sh: note: $apt_optional is not available here; the light stage (Mitsuba LLVM) will not run" >&2
fi

# 2. Virtual environment.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# 3. PyTorch: the CPU build unless an NVIDIA driver is present (then pip's default CUDA build).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch>=2.1,<3"
  else
    .venv/bin/pip install -q torch==2.13.0
  fi
fi

# 4. The package (editable) with its extras.
.venv/bin/pip install -q -e ".[$extras]"
echo "Relit Hands installed in $(pwd)/.venv  (try: .venv/bin/relit-hands info)"
