#!/usr/bin/env bash
# The GPU suite of issue 16: one device call on a bare GPU machine (one H200, no registry), with
# the kit that benchmarks/gpu_kit.sh fetched on a CPU machine carried along (.whl/, .gl/).
#
#   device run, carry [".whl", ".gl"], timeout_s 600:
#     for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bash benchmarks/gpu_suite.sh
#   rehearsal on a CPU machine: bash benchmarks/gpu_rehearsal.sh
#
# Steps, in this order; each is time-boxed (`timeout`) and ends pass / skipped / FAILED with a
# one-line reason, and the later steps run whatever an earlier one did:
#   setup       pip install the kit's wheels with no index into $SITE_DIR (--no-deps --target),
#               map the repo's folders to the `relit_hands` package there (symlinks, as setup.py's
#               package_dir), PYTHONPATH; EGL loaders (+ the NVIDIA vendor file if needed)
#   machine     nvidia-smi, torch + CUDA
#   egl         a headless moderngl context (backend='egl'): the GL compositor's renderer
#   (nvdiffrast compiles in the background from here on: TORCH_CUDA_ARCH_LIST=9.0)
#   info        relit-hands info
#   cuda_tests  pytest -k cuda tests/test_raycast.py tests/test_uv_maps.py tests/test_inference.py tests/test_engine_pipeline.py tests/test_key_lights.py
#   nvdiffrast  wait for the background build (the GPU fast path's rasterizer)
#   check       benchmarks/gpu_check.py: every GPU stage vs the CPU reference on the same inputs
#               (visibility agreement, feature / UV maps, student textures, image vs GL: PSNR >= 35 dB)
#   bench_*     relit-hands bench at the acceptance settings, for every inference backend and
#               compositor available: two hands, R=512, N=256, mono 1920x1080 and stereo 2 x 1832x1920;
#               on --device cuda every stage is timed with CUDA events (the GPU timeline)
#   summary     summary.json (+ bench.json); acceptance: mono <= 2 ms, stereo <= 5 ms
# Results: at most 8 files in $OUT (when set, as on the device machine) else in
# benchmarks/results/gpu_<gpu>_<date>/: suite.log, summary.json, bench.json, check_gl.png,
# check_gpu.png, check_diff.png, bench_mono.png, bench_stereo.png. Whole suite: SUITE_BUDGET_S
# (default 470 s); a step that would start after the budget is spent is skipped (one line).
#
# Settings (environment; the defaults are the acceptance settings, for the device only):
#   FRAMES=100 WARMUP=10 BENCH_RESOLUTION=512 BENCH_LIGHTS=256 BENCH_MONO_SIZE=1920x1080
#   BENCH_STEREO_SIZE=1832x1920 BENCH_DEVICE=auto BENCH_TIMEOUT=60
#   CHECK_ARGS="--resolution 512 --lights 256 --size 1920x1080" PYTHON=python3
#   KIT_WHL=.whl KIT_GL=.gl SITE_DIR=/tmp/site SUITE_BUDGET_S=470
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PY=${PYTHON:-python3}
KIT_WHL=${KIT_WHL:-$ROOT/.whl}
KIT_GL=${KIT_GL:-$ROOT/.gl}
export SITE=${SITE_DIR:-/tmp/site}
BUDGET_S=${SUITE_BUDGET_S:-470}
export FRAMES=${FRAMES:-100} WARMUP=${WARMUP:-10}
export B_RES=${BENCH_RESOLUTION:-512} B_LIGHTS=${BENCH_LIGHTS:-256}
export B_MONO=${BENCH_MONO_SIZE:-1920x1080} B_STEREO=${BENCH_STEREO_SIZE:-1832x1920}
export B_DEVICE=${BENCH_DEVICE:-auto}
B_TIMEOUT=${BENCH_TIMEOUT:-60}
export CHECK_ARGS=${CHECK_ARGS:-"--resolution 512 --lights 256 --size 1920x1080"}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}     # nvdiffrast's JIT build: Hopper only
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
DATE=$(date +%Y%m%d_%H%M%S)
if [ -n "${OUT:-}" ]; then RES="$OUT"; else RES="$ROOT/benchmarks/results/gpu_suite_$DATE"; fi
mkdir -p "$RES" || { echo "gpu_suite: cannot create $RES"; exit 1; }
export WORK=$(mktemp -d /tmp/gpu_suite.XXXXXX)
exec > >(tee -a "$RES/suite.log") 2>&1
T0=$(date +%s)
STEPS="$WORK/steps.tsv"
: > "$STEPS"
echo "gpu_suite: $(date -Is) on $(hostname); python $($PY -c 'import sys; print(sys.version.split()[0])' 2>&1);" \
     "results -> $RES; work -> $WORK; budget ${BUDGET_S}s"

# ------------------------------------------------------------------ the step runner
record() {  # name status seconds reason
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS"
  echo "=== gpu_suite: $1: $2${4:+: $4} (${3}s)"
}
run_step() {  # name time_box_s function
  local name=$1 box=$2 fn=$3 left
  left=$((BUDGET_S - ($(date +%s) - T0)))
  echo
  echo "=== gpu_suite: $name (time box ${box}s, suite time left ${left}s)"
  if [ "$left" -lt 10 ]; then record "$name" skipped 0 "the suite's ${BUDGET_S}s budget is spent"; return; fi
  [ "$box" -gt "$left" ] && box=$left
  local log="$WORK/step_$name.log" t=$(date +%s.%N) rc reason status
  timeout -k 5 "$box" bash -c "$fn" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  local dt; dt=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 0 ]; then
    status=pass; reason=$(grep -E '^(NOTE|checks):' "$log" | tail -1)
  elif [ "$rc" = 3 ]; then
    status=skipped; reason=$(grep -E '^SKIP:' "$log" | tail -1 | sed 's/^SKIP: *//')
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status=FAILED; reason="timed out after ${box}s"
  else
    status=FAILED
    reason=$(grep -E '^FAIL:' "$log" | tail -1 | sed 's/^FAIL: *//')
    local exc; exc=$(grep -E '^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception)(:|$)' "$log" | tail -1)
    [ -n "$reason" ] && [ -n "$exc" ] && reason="$reason ($exc)"
    [ -n "$reason" ] || reason=$exc
    [ -n "$reason" ] || reason=$(grep -E 'Error|error:|FAILED|failed' "$log" | tail -1)
    [ -n "$reason" ] || reason=$(grep -v '^\s*$' "$log" | tail -1)
    reason="exit $rc: $reason"
  fi
  record "$name" "$status" "$dt" "$(echo "$reason" | tr '\t' ' ' | cut -c1-240)"
}

# ------------------------------------------------------------------ steps
step_setup() {
  set -e
  if ls "$KIT_WHL"/*.whl >/dev/null 2>&1; then
    echo "installing the kit ($KIT_WHL) into $SITE with no index:"; ls "$KIT_WHL"/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$KIT_WHL"/*.whl || { echo "FAIL: pip install --no-index --target $SITE of the kit failed"; exit 1; }
  else
    echo "NOTE: no kit wheels in $KIT_WHL: using what the interpreter has"
  fi
  # relit_hands without pip: the package's folders (setup.py package_dir) as symlinks in $SITE
  mkdir -p "$SITE"
  rm -rf "$SITE/relit_hands"; mkdir "$SITE/relit_hands"
  for f in "$ROOT"/engine/*; do [ "${f##*/}" = __pycache__ ] || ln -s "$f" "$SITE/relit_hands/"; done
  for sub in tools viewer shaders models; do ln -s "$ROOT/$sub" "$SITE/relit_hands/$sub"; done
  "$PY" - <<'EOF'
import importlib, importlib.util as u, sys
import relit_hands, relit_hands.tools.cli, relit_hands.models  # noqa: F401
print("relit_hands from", relit_hands.__file__)
need = ["numpy", "torch", "scipy", "cv2", "PIL", "tqdm", "matplotlib", "safetensors", "moderngl", "glcontext",
        "OpenEXR", "trimesh", "pytest"]
bad = []
for m in need:
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001
        bad.append(f"{m} ({type(e).__name__}: {e})")
opt = {m: u.find_spec(m) is not None for m in ("nvdiffrast", "triton", "onnxruntime", "tensorrt", "embreex")}
print("optional:", opt)
if bad:
    print("FAIL: not importable:", "; ".join(bad)); sys.exit(1)
print("NOTE: kit installed, relit_hands importable; optional", " ".join(k for k, v in opt.items() if v))
EOF
}
step_machine() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
if not torch.cuda.is_available():
    print('SKIP: no CUDA (torch.cuda.is_available() is False)'); raise SystemExit(3)
print('NOTE:', torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
}
step_egl() {
  ldconfig -p 2>/dev/null | grep -E 'libEGL.so.1|libGL.so.1' || echo "no libEGL/libGL in ldconfig's cache"
  "$PY" -c "
import moderngl
ctx = moderngl.create_context(standalone=True, backend='egl', require=330)
i = ctx.info
print('NOTE: EGL', i['GL_VENDOR'], '|', i['GL_RENDERER'], '|', i['GL_VERSION'])
ctx.release()" || { echo "FAIL: no headless EGL context (moderngl backend='egl')"; exit 1; }
}
step_info() {
  "$PY" -m relit_hands.tools.cli info || { echo "FAIL: relit-hands info failed"; exit 1; }
  "$PY" -m relit_hands.tools.cli info --json > "$WORK/info.json" || echo "(info --json failed)"
  echo "NOTE: relit-hands info ran"
}
step_cuda_tests() {
  "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda tests/test_raycast.py tests/test_uv_maps.py tests/test_inference.py tests/test_engine_pipeline.py tests/test_key_lights.py
  rc=$?
  [ "$rc" = 0 ] || { echo "FAIL: pytest -k cuda: exit $rc (see the log)"; exit 1; }
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "NOTE: CUDA tests passed"
  else
    echo "SKIP: no CUDA (the CUDA tests were collected and skipped)"; exit 3
  fi
}
nvdr_build() {  # in the background from the start of the tests: the JIT build of nvdiffrast's plugin
  "$PY" -c "
import time, torch
t = time.time()
import nvdiffrast.torch as dr
print('nvdiffrast', dr.__file__ if hasattr(dr, '__file__') else '')
if not torch.cuda.is_available():
    print('SKIP: no CUDA (nvdiffrast imported; its CUDA plugin is built on the GPU machine)'); raise SystemExit(3)
dr.RasterizeCudaContext(device='cuda')
print(f'NOTE: nvdiffrast CUDA plugin built and loaded in {time.time() - t:.1f}s')" > "$WORK/nvdr.log" 2>&1
  echo $? > "$WORK/nvdr.rc"
}
step_nvdiffrast() {
  while [ ! -f "$WORK/nvdr.rc" ]; do sleep 1; done
  cat "$WORK/nvdr.log"
  rc=$(cat "$WORK/nvdr.rc")
  [ "$rc" = 124 ] && echo "FAIL: nvdiffrast build timed out"
  exit "$rc"
}
step_check() {
  # shellcheck disable=SC2086
  "$PY" benchmarks/gpu_check.py --out "$WORK/check" $CHECK_ARGS
}
bench_one() {  # mode backend compositor
  local mode=$1 be=$2 comp=$3 sz name
  if [ "$comp" = nvdiffrast ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "SKIP: no CUDA"; exit 3
  fi
  if [ "$mode" = mono ]; then sz="--size $B_MONO"; else sz="--size $B_STEREO --stereo"; fi
  name="${mode}_${be}_${comp}"
  # shellcheck disable=SC2086
  "$PY" -m relit_hands.tools.cli bench --device "$B_DEVICE" --hands 2 --resolution "$B_RES" --lights "$B_LIGHTS" \
    --frames "$FRAMES" --warmup "$WARMUP" $sz --inference "$be" --compositor "$comp" \
    --out "$WORK/bench/$name" --json-name "bench_$name.json" --overwrite \
    || { echo "FAIL: relit-hands bench $name failed"; exit 1; }
  "$PY" -c "
import json; r = json.load(open('$WORK/bench/$name/bench_$name.json')); c = r['configs'][0]
print(f\"NOTE: {c['end_to_end']['median_ms']:.2f} ms median, p95 {c['end_to_end']['p95_ms']:.2f} ms ({c.get('inference_backend')})\")"
}
export -f step_setup step_machine step_egl step_info step_cuda_tests nvdr_build step_nvdiffrast step_check bench_one
export ROOT KIT_WHL KIT_GL

# ------------------------------------------------------------------ the run
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# EGL: the glvnd loaders (the .gl/ debs, unpacked by the run command; here too as root if missing)
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' && ls "$KIT_GL"/*.deb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "gpu_suite: unpacking $KIT_GL/*.deb into / (libEGL.so.1 was missing)"
  for f in "$KIT_GL"/*.deb; do dpkg -x "$f" /; done; ldconfig
fi
NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -f "$NV_EGL" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] \
   && ! ls /usr/share/glvnd/egl_vendor.d/*nvidia* /etc/glvnd/egl_vendor.d/*nvidia* >/dev/null 2>&1; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL
  echo "gpu_suite: __EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL"
fi

run_step setup 90 step_setup
run_step machine 30 step_machine
run_step egl 30 step_egl
(timeout -k 5 300 bash -c nvdr_build; r=$?; [ -f "$WORK/nvdr.rc" ] || echo "$r" > "$WORK/nvdr.rc") &
run_step info 45 step_info
run_step cuda_tests 120 step_cuda_tests
run_step nvdiffrast 240 step_nvdiffrast
run_step check 150 step_check

BACKENDS=$("$PY" -c "
from relit_hands.inference import available_backends
a = available_backends()
print(' '.join(['torch'] + [k for k in ('onnxruntime', 'tensorrt') if a[k] is True]))" 2>/dev/null || echo torch)
COMPOSITORS="gl nvdiffrast"
echo
echo "gpu_suite: inference backends: $BACKENDS; compositors: $COMPOSITORS; bench: R=$B_RES N=$B_LIGHTS" \
     "mono $B_MONO, stereo 2 x $B_STEREO, $FRAMES frames after $WARMUP, device $B_DEVICE"
for comp in $COMPOSITORS; do
  for be in $BACKENDS; do
    for mode in mono stereo; do
      run_step "bench_${mode}_${be}_${comp}" "$B_TIMEOUT" "bench_one $mode $be $comp"
    done
  done
done

# ------------------------------------------------------------------ summary + packing (<= 8 files)
echo
echo "=== gpu_suite: summary"
"$PY" - "$WORK" "$RES" "$BUDGET_S" "$(($(date +%s) - T0))" <<'EOF' || echo "gpu_suite: FAILED: summary: see above"
import glob, json, os, shutil, sys
work, res, budget, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
steps = []
for line in open(f"{work}/steps.tsv"):
    n, s, t, r = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
    steps.append({"step": n, "status": s, "seconds": float(t or 0), "reason": r})
load = lambda p: json.load(open(p)) if os.path.exists(p) else None
runs, full = [], {}
for p in sorted(glob.glob(f"{work}/bench/*/bench_*.json")):
    r = json.load(open(p))
    name = os.path.basename(p)[len("bench_"):-len(".json")]
    for c in r["configs"]:
        c.pop("frames", None)  # per-frame values stay out of what comes back (size); stats stay
    full[name] = r
    for c in r["configs"]:
        s = r["settings"]
        runs.append({"name": name, "config": c["name"], "backend": c.get("inference_backend"),
                     "compositor": c.get("compositor"), "raycast": c.get("raycast_backend"),
                     "stereo": s["stereo"], "size": s["size"], "R": s["resolution"], "N": s["lights"],
                     "frames": s["frames"], "device": s["device"],
                     "median_ms": c["end_to_end"]["median_ms"], "p95_ms": c["end_to_end"]["p95_ms"], "fps": c["fps"],
                     "stages_median_ms": {k: v["median_ms"] for k, v in c["stages"].items()},
                     "stage_timer": "CUDA events" if c.get("device") == "cuda" else "host wall clock",
                     "chart": os.path.join(os.path.dirname(p), f"bench_{name}.png")})
acc = {}
for stereo, limit in ((False, 2.0), (True, 5.0)):
    c = [x for x in runs if x["stereo"] == stereo]
    b = min(c, key=lambda x: x["median_ms"]) if c else None
    acc["stereo" if stereo else "mono"] = None if b is None else {
        "best": b["name"], "median_ms": b["median_ms"], "p95_ms": b["p95_ms"], "limit_ms": limit,
        "settings": {"size": b["size"], "R": b["R"], "N": b["N"]},
        # judged only at the acceptance settings (the rehearsal's small settings say nothing)
        "at_acceptance_settings": (b["R"], b["N"], list(b["size"])) == (512, 256, [1832, 1920] if stereo else [1920, 1080]),
        "device": b["device"]}
    if b is not None:
        acc["stereo" if stereo else "mono"]["met"] = (b["median_ms"] <= limit
                                                      if acc["stereo" if stereo else "mono"]["at_acceptance_settings"] else None)
    if b is not None and os.path.exists(b["chart"]):
        shutil.copy(b["chart"], f"{res}/bench_{'stereo' if stereo else 'mono'}.png")
for r in runs:
    r.pop("chart")
check = load(f"{work}/check/check.json")
for f in ("check_gl.png", "check_gpu.png", "check_diff.png"):
    if os.path.exists(f"{work}/check/{f}"):
        shutil.copy(f"{work}/check/{f}", f"{res}/{f}")
summary = {"tool": "benchmarks/gpu_suite.sh", "elapsed_s": elapsed, "budget_s": budget,
           "steps": steps, "counts": {k: sum(s["status"] == k for s in steps) for k in ("pass", "skipped", "FAILED")},
           "acceptance": acc, "check": check, "bench_runs": runs, "info": load(f"{work}/info.json")}
json.dump(summary, open(f"{res}/summary.json", "w"), indent=1, default=str)
if full:
    json.dump(full, open(f"{res}/bench.json", "w"), indent=1, default=str)
print(f"{'step':<32} {'status':<8} {'s':>6}  reason")
for s in steps:
    print(f"{s['step']:<32} {s['status']:<8} {s['seconds']:6.1f}  {s['reason']}")
for r in runs:
    print(f"{r['name']:<28} {str(r['backend']):<26} median {r['median_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  "
          f"{r['fps']:8.1f} fps  stages: " + " ".join(f"{k}={v:.2f}" for k, v in r["stages_median_ms"].items()))
print("acceptance:", json.dumps(acc))
print("counts:", summary["counts"])
EOF
n=$(find "$RES" -type f | wc -l)
echo "gpu_suite: done in $(($(date +%s) - T0))s -> $RES ($n files: $(cd "$RES" && ls | tr '\n' ' '))"
[ "$n" -le 8 ] || echo "gpu_suite: WARNING: $n files in $RES: only 8 come back from a device call"
sleep 1  # let the log's tee drain before the call returns
