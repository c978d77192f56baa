"""One frame pipeline on one device (issue #19): the compositor interface and its two backends,
the backend registry's reasons, the one counted host copy per frame, frames carrying their posed
vertices, the stage timer, and the run-time core importing nothing from the offline side."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from relit_hands import backends
from relit_hands.compositing import TRANSFERS, HandCompositor, compositor_availability
from relit_hands.compositor import Compositor
from relit_hands.engine import Engine
from relit_hands.scene import scene_preset
from relit_hands.stages import STUDENT_STAGES, StageTimer, StageTimings

ENGINE_DIR = Path(__file__).resolve().parents[1] / "engine"


def _cams(engine, scene, w=96, h=64):
    cam = engine.default_camera(scene, w, h)
    return [cam, *cam.stereo_pair()]


# ------------------------------------------------------------------ compositor interface

def test_gl_compositor_implements_the_interface_and_matches_uv_texture_rendering(engine, env):
    """composite_textures (the student path's last stage) draws exactly what Engine.render's
    'uv_texture' shading draws from the same textures and vertices, for every camera."""
    assert isinstance(engine.compositor, HandCompositor) and engine.compositor.name == "gl"
    scene = scene_preset("clasp")
    sides = [h.side for h in scene.hands]
    cams = _cams(engine, scene)
    posed = engine.pose(scene)
    verts = {s: posed[s].render_vertices[0] for s in sides}
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(len(sides), 32, 32, 3, generator=g) * 2.0                  # [H, R, R, 3] linear HDR
    timer = StageTimer("cpu")
    views = engine.compositor.composite_textures(sides, verts, tex, env, cams, readback="all", timer=timer)
    assert len(views) == len(cams) and list(timer.result()) == ["upload", "composite", "total"]
    for cam, v in zip(cams, views):
        ref = engine.render(scene, env, cam, shading="uv_texture", shadows=False,
                            radiance_textures={s: tex[i].numpy() for i, s in enumerate(sides)})
        np.testing.assert_array_equal(v["rgb"], ref.image)
        np.testing.assert_array_equal(v["hand_id"], ref.hand_id)
        assert v["device_image"] is None and v["rgb"].shape == (cam.height, cam.width, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the nvdiffrast compositor needs CUDA (GPU suite)")
def test_cuda_nvdiffrast_compositor_matches_the_gl_compositor(engine, env):
    if compositor_availability("cuda")["nvdiffrast"] is not True:
        pytest.skip(compositor_availability("cuda")["nvdiffrast"])
    from relit_hands.compositor_nvdiffrast import NvdiffrastCompositor

    scene = scene_preset("clasp")
    sides = [h.side for h in scene.hands]
    cams = _cams(engine, scene, 320, 240)
    posed = engine.pose(scene)
    tex = torch.rand(len(sides), 64, 64, 3, generator=torch.Generator().manual_seed(1))
    gl = engine.compositor.composite_textures(sides, {s: posed[s].render_vertices[0] for s in sides}, tex, env, cams,
                                              readback="rgb")
    nv = NvdiffrastCompositor("cuda")
    nv.attach_hands(engine.models, {})
    out = nv.composite_textures(sides, {s: posed[s].render_vertices[0].cuda() for s in sides}, tex.cuda(), env, cams,
                                readback="rgb")
    for a, b in zip(gl, out):
        mse = np.mean((a["rgb"].astype(np.float64) - b["rgb"].astype(np.float64)) ** 2)
        assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-12)) >= 35.0
        assert b["device_image"].is_cuda


# ------------------------------------------------------------------ one device, one registry

def test_registry_resolves_for_the_device_and_says_why_not():
    cpu = torch.device("cpu")
    assert backends.resolve("compositor", "auto", cpu) == "gl"
    assert backends.resolve("raycast", "auto", cpu) in ("embree", "grid", "torch")
    assert backends.resolve("inference", "auto", cpu) in ("onnxruntime", "torch")
    why = backends.availability("compositor", cpu)["nvdiffrast"]
    assert isinstance(why, str) and "CUDA" in why
    with pytest.raises(backends.BackendUnavailable, match="nvdiffrast.*CUDA"):
        backends.resolve("compositor", "nvdiffrast", cpu)
    with pytest.raises(backends.BackendUnavailable, match="triton.*CUDA"):
        backends.resolve("raycast", "triton", cpu)
    with pytest.raises(backends.BackendUnavailable, match="unknown raycast backend 'optix'"):
        backends.resolve("raycast", "optix", cpu)
    rep = backends.report("cpu")
    assert rep["device"] == "cpu" and set(rep) == {"device", *backends.KINDS}
    for kind in backends.KINDS:
        for name, ok in rep[kind].items():
            assert ok is True or (isinstance(ok, str) and ok), (kind, name, ok)
    if not torch.cuda.is_available():
        assert backends.resolve_device("auto").type == "cpu"
        with pytest.raises(backends.BackendUnavailable, match="no CUDA device"):
            backends.resolve_device("cuda")
        with pytest.raises(backends.BackendUnavailable, match="CUDA"):
            Engine(device="cpu", compositor="nvdiffrast")


def test_student_frame_copies_to_the_host_once_and_carries_its_vertices(engine, env):
    """Every copy of frame data to the host goes through compositing.to_host: one per student
    frame with the GL compositor (textures + vertices together; stereo included), none for a PBR
    frame with a given camera. The frames carry the posed vertices they were drawn with."""
    scene = scene_preset("clasp")
    cams = _cams(engine, scene)[1:]   # the stereo pair
    TRANSFERS.reset()
    sf = engine.render_student(scene, env, cams, n_lights=32, readback="rgb")
    assert TRANSFERS.count == 1 and TRANSFERS.device_bytes == 0     # on the CPU the copy is a no-op
    TRANSFERS.reset()
    f = engine.render(scene, env, cams[0], readback="rgb")
    assert TRANSFERS.count == 0
    posed = engine.pose(scene)
    for fr in (*sf.frames, f):
        assert sorted(fr.vertices) == sorted(h.side for h in scene.hands)
        for s, v in fr.vertices.items():
            torch.testing.assert_close(v, posed[s].render_vertices[0])
    assert isinstance(sf.timings_ms, StageTimings) and sf.timings_ms.clock == "wall"
    assert list(sf.timings_ms) == [*STUDENT_STAGES, "composite_per_view", "total"]
    assert len(sf.timings_ms["composite_per_view"]) == 2
    assert sf.timings_ms.total >= sum(sf.timings_ms[s] for s in STUDENT_STAGES) - 1e-6


def test_stage_timer_sums_repeated_marks_and_totals_the_frame():
    import time

    t = StageTimer("cpu")
    time.sleep(0.002)
    t.mark("a")
    time.sleep(0.002)
    t.mark("b")
    time.sleep(0.002)
    t.mark("a")
    r = t.result(("b", "a"), extra={"note": [1]})
    assert list(r) == ["b", "a", "note", "total"]
    assert r["a"] >= 3.5 and r["b"] >= 1.5
    assert r.total == pytest.approx(r["a"] + r["b"], abs=1e-6)


# ------------------------------------------------------------------ layout

def test_the_run_time_core_imports_nothing_from_the_offline_side():
    bad = []
    for p in sorted(ENGINE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for n in names:
                if n.split(".")[0] in ("tools", "viewer") or n.startswith(("relit_hands.tools", "relit_hands.viewer",
                                                                           "..tools", "..viewer", ".tools", ".viewer")):
                    bad.append(f"{p.name}: {n}")
    assert not bad, bad
    assert not (ENGINE_DIR / "gpu_frame.py").exists() and not (ENGINE_DIR / "capture.py").exists()
