#!/usr/bin/env bash
# The GPU kit (issue 16): everything the GPU machine lacks for benchmarks/gpu_suite.sh, fetched
# HERE (on a CPU machine with a package registry) into git-ignored folders that travel with a
# device call through `carry`.
#
#   bash benchmarks/gpu_kit.sh                    # cp312 wheels -> .whl/, GL/EGL .debs -> .gl/
#   bash benchmarks/gpu_kit.sh --no-embree        # leave embreex (14.6 MB, optional) out
#   KIT_PY=3.11 KIT_WHL=/tmp/x/whl KIT_GL=none bash benchmarks/gpu_kit.sh   # the rehearsal's kit
#
# What the GPU machine's image lacks (the device tool's KINDS.md lists what it has: torch, triton,
# numpy, scipy, opencv-python-headless, pillow, tqdm, matplotlib, safetensors, onnx, onnxruntime,
# scikit-image, pytest, pytest-timeout, setuptools, ninja, ...), and the run-time / test needs:
#   moderngl + glcontext   the OpenGL compositor (EGL headless on the NVIDIA driver)
#   openexr                OpenEXR I/O (engine/image_io.py)
#   trimesh                the CUDA tests build their meshes with it (tests/test_raycast.py)
#   diffrp-nvdiffrast      nvdiffrast's source as a wheel; compiles at first use (GPU fast path)
#   embreex  (optional)    CPU ray casting: the CPU reference of the visibility check
# and the GL/EGL loader .debs the device README names (the image has the NVIDIA driver's
# libraries, not the glvnd loaders).
#
# Then: checks that each wheel's requirements are in the kit or in the image, that there is one
# version of each, that working tree + kit stay under the 64 MiB a device call carries, and prints
# the `carry` list and the one command to give the device tool's `run`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
KIT_PY=${KIT_PY:-3.12}
KIT_WHL=${KIT_WHL:-.whl}
KIT_GL=${KIT_GL:-.gl}                     # 'none': no .debs (the rehearsal has Mesa's loaders)
LIMIT=$((64 * 1024 * 1024))
EMBREE=1
for a in "$@"; do
  case "$a" in
    --no-embree) EMBREE=0 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_kit: unknown option $a" >&2; exit 2 ;;
  esac
done
die() { echo "gpu_kit: FAILED: $*" >&2; exit 1; }

# The pinned kit: the versions this project is tested with on the CPU machines (.venv).
WHEELS="moderngl==5.13.0 glcontext==3.1.0 openexr==3.5.3 trimesh==5.2.0 diffrp-nvdiffrast==0.3.3.1"
[ "$EMBREE" = 1 ] && WHEELS="$WHEELS embreex==4.4.0.post1"
DEBS="libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2"
# What the image has (KINDS.md, 'Python packages already there'), as far as these wheels' needs go.
IMAGE_HAS="numpy torch triton scipy opencv-python-headless pillow tqdm matplotlib safetensors onnx onnxruntime
scikit-image pytest pytest-timeout setuptools packaging ninja"

PLAT=""
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do PLAT="$PLAT --platform manylinux_${n}_x86_64"; done
PLAT="$PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
mkdir -p "$KIT_WHL" || die "cannot create $KIT_WHL"
echo "gpu_kit: Python $KIT_PY wheels -> $KIT_WHL"
for w in $WHEELS; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$KIT_PY" --implementation cp \
    $PLAT -d "$KIT_WHL" "$w" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" \
    || true
  name=${w%%==*}; ver=${w##*==}
  norm=$(echo "$name" | tr '-' '_' | tr 'A-Z' 'a-z')
  ls "$KIT_WHL" | tr 'A-Z' 'a-z' | grep -q "^${norm}-${ver}-" || die "no wheel for $w (Python $KIT_PY, manylinux x86-64)"
done
# one version of each, nothing stale (a second version stops the whole --no-deps install)
"$PY" - "$KIT_WHL" $WHEELS <<'EOF' || die "stale or duplicate wheels in $KIT_WHL (see above)"
import os, re, sys
folder, want = sys.argv[1], sys.argv[2:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
want = {norm(w.split("==")[0]): w.split("==")[1] for w in want}
bad = 0
for f in sorted(os.listdir(folder)):
    if not f.endswith(".whl"):
        continue
    name, ver = f.split("-")[:2]
    if want.get(norm(name)) != ver:
        print(f"gpu_kit: removing {f} (not in the pinned kit)")
        os.remove(os.path.join(folder, f))
EOF
# every requirement of a kit wheel is in the kit or in the image
"$PY" - "$KIT_WHL" $IMAGE_HAS <<'EOF' || die "a kit wheel needs a package that is neither in the kit nor in the image"
import os, re, sys, zipfile
folder, image = sys.argv[1], sys.argv[2:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
have = {norm(x) for x in image}
wheels = [f for f in os.listdir(folder) if f.endswith(".whl")]
have |= {norm(f.split("-")[0]) for f in wheels}
missing = []
for f in wheels:
    with zipfile.ZipFile(os.path.join(folder, f)) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                req = norm(re.split(r"[\s;<>=!~\[(]", line.split(":", 1)[1].strip())[0])
                if req not in have:
                    missing.append(f"{f}: {req}")
for m in missing:
    print("gpu_kit: missing requirement", m)
sys.exit(1 if missing else 0)
EOF

if [ "$KIT_GL" != none ]; then
  echo "gpu_kit: GL/EGL loader .debs (amd64) -> $KIT_GL"
  mkdir -p "$KIT_GL" /tmp/amd64/partial || die "cannot create $KIT_GL"
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  need=0
  for d in $DEBS; do ls "$KIT_GL"/${d}_*_amd64.deb >/dev/null 2>&1 || need=1; done
  if [ "$need" = 1 ]; then
    apt-get $o update >/dev/null 2>&1 || die "apt-get update (amd64 lists) failed"
    (cd "$KIT_GL" && apt-get $o download $DEBS 2>&1 | grep -v "unsandboxed as root") \
      || die "apt-get download of $DEBS failed"
  fi
  for d in $DEBS; do
    [ "$(ls "$KIT_GL"/${d}_*_amd64.deb 2>/dev/null | wc -l)" = 1 ] || die "want exactly one ${d}_*_amd64.deb in $KIT_GL"
  done
fi

# sizes: what a device call carries = working tree (tracked + untracked-not-ignored) + the kit
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
kit=$(du -cb "$KIT_WHL" $([ "$KIT_GL" != none ] && echo "$KIT_GL") | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "gpu_kit: contents"
(cd "$KIT_WHL" && ls -l *.whl | awk '{ printf "  %10d  %s\n", $5, $9 }')
[ "$KIT_GL" != none ] && (cd "$KIT_GL" && ls -l *.deb | awk '{ printf "  %10d  %s\n", $5, $9 }')
echo "gpu_kit: kit $(mib "$kit") ($kit bytes); working tree $(mib "$tree") ($tree bytes);" \
     "together $(mib $((kit + tree))) of the $(mib $LIMIT) a call carries"
[ $((kit + tree)) -lt "$LIMIT" ] || die "working tree + kit = $((kit + tree)) bytes >= 64 MiB: try --no-embree"
if [ "$KIT_WHL" = .whl ] && [ "$KIT_GL" = .gl ]; then
  git check-ignore -q .whl/x.whl && git check-ignore -q .gl/x.deb || die ".whl/ and .gl/ must be git-ignored"
  echo
  echo "carry: [\".whl\", \".gl\"]"
  echo "run command (timeout_s 600):"
  echo "for f in .gl/*.deb; do dpkg -x \$f /; done; ldconfig; bash benchmarks/gpu_suite.sh"
fi
