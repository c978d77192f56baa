"""The GPU kit / suite / rehearsal scripts (issue 16), the parts that fit a CI run.

The whole rehearsal (``bash benchmarks/gpu_rehearsal.sh``: a fresh venv with the GPU image's
packages + the kit, the suite offline) takes minutes and is run by hand; here: the scripts parse,
the kit folders are git-ignored, the suite's settings are the acceptance settings by default, and
the correctness check's CPU side runs (its CUDA checks skip with one line each).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["benchmarks/gpu_kit.sh", "benchmarks/gpu_suite.sh", "benchmarks/gpu_rehearsal.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses(script):
    p = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_kit_folders_are_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".whl/x.whl", ".gl/x.deb"):
        p = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert p.returncode == 0, f"{path} is not git-ignored: it would be committed"


def test_suite_defaults_are_the_acceptance_settings():
    s = (ROOT / "benchmarks/gpu_suite.sh").read_text()
    for want in ("BENCH_RESOLUTION:-512", "BENCH_LIGHTS:-256", "BENCH_MONO_SIZE:-1920x1080",
                 "BENCH_STEREO_SIZE:-1832x1920", "FRAMES:-100", "--no-index --no-deps", "--target"):
        assert want in s, want
    # the one command of the device call fits its 2000 characters
    kit = (ROOT / "benchmarks/gpu_kit.sh").read_text()
    cmd = "for f in .gl/*.deb; do dpkg -x \\$f /; done; ldconfig; bash benchmarks/gpu_suite.sh"
    assert cmd in kit and len(cmd) < 2000


def test_gpu_check_cpu_side(tmp_path):
    """gpu_check.py at tiny settings: the CPU reference and CPU-side checks pass; without CUDA each
    GPU check is 'skipped' with the one-line reason 'no CUDA'."""
    torch = pytest.importorskip("torch")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(tmp_path),
                        "--resolution", "64", "--lights", "32", "--size", "160x90", "--cpu-check-lights", "2"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads((tmp_path / "check.json").read_text())["checks"]
    assert r["cpu_reference"]["status"] == "pass"
    assert r["student_onnxruntime_cpu"]["status"] in ("pass", "skipped")
    assert r["visibility_cpu"]["status"] in ("pass", "skipped")
    gpu = ("visibility_cuda", "features_cuda", "uv_maps_cuda", "student_cuda", "frame_cuda")
    if not torch.cuda.is_available():
        assert all(r[k] == {"status": "skipped", "reason": "no CUDA"} for k in gpu), r
        assert "check frame_cuda: skipped: no CUDA" in p.stdout
    assert (tmp_path / "check_gl.png").is_file()



def test_gpu_check_dry_run_exercises_the_comparisons(tmp_path):
    """--dry-run-on-cpu runs the features / UV maps / student comparisons with CPU tensors, so their
    code has run before a GPU is lent (visibility and the whole GPU frame need CUDA: skipped)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real checks")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--out", str(tmp_path),
                        "--resolution", "64", "--lights", "32", "--size", "160x90", "--cpu-check-lights", "2",
                        "--dry-run-on-cpu"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads((tmp_path / "check.json").read_text())
    assert r["settings"]["dry_run"] is True
    c = r["checks"]
    assert c["features_cuda"]["status"] == c["uv_maps_cuda"]["status"] == c["student_cuda"]["status"] == "pass", c
    assert c["features_cuda"]["max_abs_diff"] == 0.0
    assert c["frame_cuda"]["reason"] == c["visibility_cuda"]["reason"] == "no CUDA (dry run)"
