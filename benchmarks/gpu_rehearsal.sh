#!/usr/bin/env bash
# Rehearsal of benchmarks/gpu_suite.sh on a CPU machine (issue 16): the suite runs in a fresh
# virtual environment that holds only packages the GPU machine's image has (KINDS.md) plus the kit,
# with NO network (a new network namespace when `unshare -n` works, and pip told --no-index with no
# config), so every install and import step and every non-CUDA step is proven before a device is
# lent. The CUDA steps must end "skipped: no CUDA" (one line each), never FAILED.
#
#   bash benchmarks/gpu_rehearsal.sh            # ~5-8 min on 2 cores (first run: + venv build)
#
# Differences from the device, on purpose:
#   - Python 3.11, cp311 wheels: Debian 12 has no python3.12 package (apt-cache policy python3.12
#     is empty); the kit's wheels for 3.11 are fetched by the same gpu_kit.sh (KIT_PY=3.11);
#   - torch is the local CPU build (2.13.0), triton from PyPI; the image has torch 2.11 + CUDA 13;
#   - small bench and check settings (below) instead of the acceptance settings, device cpu;
#   - the .gl/ loader .debs are unpacked into a scratch root (proves they are whole), not into /
#     (this machine has Mesa's EGL; the suite's EGL step uses it).
# Preparing (venv, kit) uses the registry; the suite itself does not.
# Environment: REHEARSAL_DIR (default /tmp/relit_gpu_rehearsal), REHEARSAL_PYTHON (python3.11).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REH=${REHEARSAL_DIR:-/tmp/relit_gpu_rehearsal}
HOSTPY=${REHEARSAL_PYTHON:-python3.11}
VENV="$REH/venv"
die() { echo "gpu_rehearsal: FAILED: $*" >&2; exit 1; }
mkdir -p "$REH" || die "cannot create $REH"
KIT_PY=$("$HOSTPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') || die "no $HOSTPY"

# 1. the image's packages (those this project touches; KINDS.md lists them), nothing of the kit
IMAGE_PKGS="torch==2.13.0 numpy scipy opencv-python-headless pillow tqdm matplotlib safetensors pytest pytest-timeout
triton onnx onnxruntime scikit-image setuptools packaging"
if [ ! -f "$VENV/.image_ok" ]; then
  echo "gpu_rehearsal: building $VENV (Python $KIT_PY) with the image's packages"
  rm -rf "$VENV"
  "$HOSTPY" -m venv "$VENV" || die "venv"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $IMAGE_PKGS 2>&1 | grep -v "is ignored: it is neither" \
    ; [ "${PIPESTATUS[0]}" = 0 ] || die "installing the image's packages"
  touch "$VENV/.image_ok"
fi
"$VENV/bin/python" - <<'EOF' || die "the rehearsal venv holds a kit package: rebuild it (rm -r REHEARSAL_DIR/venv)"
import importlib.util as u
leak = [m for m in ("moderngl", "glcontext", "OpenEXR", "trimesh", "nvdiffrast", "embreex", "relit_hands")
        if u.find_spec(m) is not None]
print("gpu_rehearsal: kit packages already in the venv:", leak or "none")
raise SystemExit(1 if leak else 0)
EOF

# 2. the kit for this Python (same script, same pins), and the device kit's .debs unpack cleanly
KIT_PY=$KIT_PY KIT_WHL="$REH/whl" KIT_GL=none bash benchmarks/gpu_kit.sh | grep -v "^ " || die "gpu_kit.sh ($KIT_PY)"
if ls .gl/*.deb >/dev/null 2>&1; then
  rm -rf "$REH/glroot"; mkdir -p "$REH/glroot"
  for f in .gl/*.deb; do dpkg -x "$f" "$REH/glroot" || die "dpkg -x $f"; done
  ls "$REH"/glroot/usr/lib/x86_64-linux-gnu/libEGL.so.1 "$REH"/glroot/usr/lib/x86_64-linux-gnu/libGL.so.1 \
    >/dev/null || die ".gl/ debs lack libEGL.so.1 / libGL.so.1"
  echo "gpu_rehearsal: .gl/*.deb unpack (scratch root): libEGL.so.1, libGL.so.1 present"
else
  echo "gpu_rehearsal: no .gl/ (run benchmarks/gpu_kit.sh for the device kit)"
fi

# 3. the suite, offline, small settings
NET="unshare -n"
$NET true 2>/dev/null || { NET=""; echo "gpu_rehearsal: unshare -n unavailable: offline by pip settings only"; }
rm -rf "$REH/site" "$REH/out"; mkdir -p "$REH/out"
echo "gpu_rehearsal: running the suite ${NET:+under '$NET' (no network)}"
t0=$(date +%s)
# shellcheck disable=SC2086
env -u PIP_FIND_LINKS -u PYTHONPATH -u VIRTUAL_ENV PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null \
  PATH="$VENV/bin:$PATH" PYTHON="$VENV/bin/python" KIT_WHL="$REH/whl" KIT_GL=/nonexistent SITE_DIR="$REH/site" \
  OUT="$REH/out" SUITE_BUDGET_S=${SUITE_BUDGET_S:-1500} \
  FRAMES=${FRAMES:-3} WARMUP=${WARMUP:-1} BENCH_RESOLUTION=${BENCH_RESOLUTION:-128} BENCH_LIGHTS=${BENCH_LIGHTS:-64} \
  BENCH_MONO_SIZE=${BENCH_MONO_SIZE:-320x180} BENCH_STEREO_SIZE=${BENCH_STEREO_SIZE:-160x180} BENCH_DEVICE=cpu \
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-240} CHECK_ARGS="${CHECK_ARGS:---resolution 128 --lights 64 --size 320x180}" \
  $NET bash benchmarks/gpu_suite.sh > "$REH/suite_stdout.log" 2>&1
echo "gpu_rehearsal: suite exit $? after $(($(date +%s) - t0))s (log: $REH/out/suite.log)"
sed -n '/=== gpu_suite: summary/,$p' "$REH/out/suite.log"

# 4. verdict: nothing FAILED; whatever was skipped was skipped for want of CUDA; <= 8 files
"$VENV/bin/python" - "$REH/out" <<'EOF'
import json, os, sys
out = sys.argv[1]
files = sorted(os.listdir(out))
s = json.load(open(f"{out}/summary.json"))
bad = [x for x in s["steps"] if x["status"] == "FAILED"]
odd = [x for x in s["steps"] if x["status"] == "skipped" and "no CUDA" not in x["reason"]]
need = {"setup", "egl", "info", "check"} | {x["step"] for x in s["steps"] if x["step"].startswith("bench_") and x["step"].endswith("_gl")}
notpass = [n for n in need if not any(x["step"] == n and x["status"] == "pass" for x in s["steps"])]
chk = s["check"]["checks"] if s.get("check") else {}
chk_bad = [k for k, v in chk.items() if v["status"] == "fail" or (v["status"] == "skipped" and v["reason"] != "no CUDA"
                                                                   and not k.endswith("_cpu"))]
print(f"gpu_rehearsal: {len(files)} files back: {' '.join(files)}")
print(f"gpu_rehearsal: steps {s['counts']}; check: " + ", ".join(f"{k}={v['status']}" for k, v in chk.items()))
ok = not bad and not odd and not notpass and not chk_bad and len(files) <= 8 and chk
for what, v in (("FAILED steps", bad), ("skipped not for want of CUDA", odd), ("CPU steps that did not pass", notpass),
                ("checks", chk_bad)):
    if v:
        print(f"gpu_rehearsal: {what}: {v}")
print("gpu_rehearsal: PASS" if ok else "gpu_rehearsal: FAIL")
sys.exit(0 if ok else 1)
EOF
