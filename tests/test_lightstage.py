"""Synthetic light stage (Mitsuba 3, LLVM on CPU): the tiny preset end to end, linearity in the
lights, projection / mask alignment, the environment-map orientation, resume and shards.

Runs in well under a minute on 2 CPU cores (96x96 images, 8 spp for the capture; 64x64 at
64 spp for the linearity check)."""
import json
from pathlib import Path

import numpy as np
import pytest

mi = pytest.importorskip("mitsuba")

from relit_hands.tools.capture import Capture  # noqa: E402
from relit_hands.tools import lightstage as ls  # noqa: E402


@pytest.fixture(scope="module")
def renderer():
    try:
        return ls.LightStageRenderer()
    except RuntimeError as e:  # no LLVM / CUDA backend
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, renderer):
    out = tmp_path_factory.mktemp("ls") / "tiny"
    summary = ls.run("tiny", out, quiet=True)
    return out, summary


def test_llvm_env_is_set():
    import os

    path = ls.ensure_llvm_env()
    if path is None:
        pytest.skip("no libLLVM 19 on this machine")
    assert os.environ["DRJIT_LIBLLVM_PATH"] == path


def test_tiny_capture(tiny):
    out, s = tiny
    cap = Capture.load(out)
    assert len(cap.cameras) >= 8 and len(cap.lights) >= 64
    kinds = {f.kind for f in cap.frames}
    assert kinds == {"olat", "group", "env"}
    assert all(f.split == "heldout" for f in cap.frames_by(kind="env"))
    assert all(len(f.lights_on) == 1 for f in cap.frames_by(kind="olat"))
    assert any(len(f.scene.hands) == 2 for f in cap.frames_by(kind="olat"))       # interacting hands
    assert any(len(f.scene.hands) == 2 for f in cap.frames_by(kind="env"))
    assert {h.side for f in cap.frames for h in f.scene.hands} == {"right", "left"}
    assert s["complete"] and s["views_done"] == len(cap.frames) * len(cap.cameras)
    assert s["seconds_per_image"] > 0 and s["spp"] == 8
    saved = json.loads((out / "summary.json").read_text())
    assert saved["frames_by_kind"]["env"] == len(cap.frames_by(kind="env"))
    assert (out / "contact_sheet.png").is_file() and saved["contact_sheet"]["tiles"]
    f = cap.frames[0]
    img, m = cap.image(f, "cam00"), cap.mask(f, "cam00")
    assert img.shape == (96, 96, 3) and np.isfinite(img).all() and img.min() >= 0
    assert (m > 0).mean() > 0.02 and img[m > 0].mean() > 0            # the hand is in view, lit
    # background of a point-lit frame is black (nothing behind the hands)
    assert img[m == 0].mean() < 0.05 * img[m > 0].mean()


def test_resume_skips_finished_images(tiny):
    out, _ = tiny
    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.exr")}
    s = ls.run("tiny", out, quiet=True)
    assert s["rendered_this_run"] == 0 and s["complete"]
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.exr")} == before


def test_shards_split_the_frames(tmp_path, renderer):
    out = tmp_path / "sharded"
    ls.run("tiny", out, shard=(1, 3), quiet=True, frame_limit=3)
    done = sorted(p.parent.name for p in (out / "images").rglob("*.exr"))
    assert set(done) == {"f000001"} and len(done) == 8
    assert (out / "summary_shard1of3.json").is_file()
    cap = Capture.load(out, check_files=False)
    assert len(cap.frames) == 3


def test_fingertips_project_inside_the_hand_mask(tiny, renderer):
    """Every fingertip keypoint (3-D, from the same skinning as the render) projects inside the
    foreground mask in every view (within one pixel: a tip on the silhouette may fall on a pixel
    whose centre just misses the finger)."""
    out, _ = tiny
    cap = Capture.load(out)
    from scipy.ndimage import maximum_filter

    checked = 0
    for f in cap.frames:
        posed = ls.posed_vertices(f.scene, renderer.models)
        tips = np.concatenate([o.keypoints[0, 16:21].numpy() for o in posed.values()])
        for cid, cam in cap.cameras.items():
            m = maximum_filter(cap.mask(f, cid), size=3)
            uv, z = cam.project(tips, return_depth=True)
            assert (z > 0).all()
            col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
            assert ((col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)).all(), (f.id, cid)
            inside = m[row, col] > 0
            assert inside.all(), f"frame {f.id} camera {cid}: tips {np.nonzero(~inside)[0]} outside the mask"
            checked += len(tips)
    assert checked >= 5 * 8 * len(cap.frames)


def _spread_scene(renderer):
    from relit_hands.scene import single_hand_scene

    return ls._recenter(single_hand_scene("spread"), renderer.models)


def test_render_alpha_matches_raycast_mask(renderer):
    """The rendered coverage (Mitsuba sensor from K, R, t) and the ray-cast mask (our
    Camera.pixel_rays) line up: same centroid to 0.1 pixel, >= 95% agreement."""
    from relit_hands.scene import scene_preset

    cams, pos, inten = ls.build_rig(8, 64, 80, 64)
    scene = ls._recenter(scene_preset("clasp"), renderer.models)
    sub = {k: cams[k] for k in ("cam01", "cam05")}
    ms = renderer.build(scene, sub, lights=(pos[:1], inten[:1]))
    masks = renderer.masks(ms, sub)
    for i, cid in enumerate(sub):
        _, alpha = renderer.render(ms, i, 16, 3)
        fg = masks[cid] > 0
        assert {1, 2} <= set(np.unique(masks[cid]))         # both hands, by value
        yy, xx = np.mgrid[:64, :80]
        ca = np.array([(alpha * xx).sum(), (alpha * yy).sum()]) / alpha.sum()
        cm = np.array([xx[fg].mean(), yy[fg].mean()])
        assert np.abs(ca - cm).max() < 0.1, (cid, ca, cm)
        assert ((alpha > 0.5) == fg).mean() > 0.95


def test_linearity_two_lights_equal_the_sum(renderer):
    """Light transport is linear: I(a+b) = I(a) + I(b) up to Monte-Carlo noise.

    64x64, 64 spp, the same seed for the three renders. Tolerances: the hand's total radiance
    agrees within 2%, and the per-pixel difference I(a+b) - I(a) - I(b), averaged over 4x4
    blocks, has an RMS no larger than 1.3x that of pure noise (two renders of I(a+b) with
    different seeds) -- i.e. no structure beyond the noise."""
    cams, pos, inten = ls.build_rig(8, 64, 64, 64)
    scene = _spread_scene(renderer)
    cam = {"cam00": cams["cam00"]}
    c0 = cams["cam00"].center / np.linalg.norm(cams["cam00"].center)
    ldir = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    a, b = np.argsort(-(ldir @ c0))[[0, 3]]          # two lights on the camera's side
    shapes = renderer.hand_shapes(scene)
    spp, seed = 64, 11

    def img(lights, s=seed):
        ms = renderer.build(None, cam, lights=(pos[lights], inten[lights]), shapes=shapes)
        return renderer.render(ms, 0, spp, s)[0].astype(np.float64)

    Ia, Ib, Iab, Iab2 = img([a]), img([b]), img([a, b]), img([a, b], seed + 1)
    tot = Ia.sum() + Ib.sum()
    assert tot > 0
    assert abs(Iab.sum() - tot) / tot < 0.02

    def blocks(x):
        return x.reshape(16, 4, 16, 4, 3).mean((1, 3))

    d_lin = blocks(Iab - Ia - Ib)
    d_noise = blocks(Iab - Iab2)
    r_lin, r_noise = np.sqrt((d_lin ** 2).mean()), np.sqrt((d_noise ** 2).mean())
    assert r_lin < 1.3 * r_noise, (r_lin, r_noise)


def test_environment_orientation_single_bright_pixel(renderer):
    """One bright pixel of an equirect map (our convention, rotated by yaw/pitch) appears
    where our Camera projects its world direction (Mitsuba envmap conversion)."""
    from relit_hands.camera import Camera
    from relit_hands.environment import EnvironmentMap

    H = 64
    img = np.zeros((H, 2 * H, 3), np.float32)
    r, c = 20, 93
    img[r, c] = 1000.0
    env = EnvironmentMap(img, name="dot").rotate(40.0, 10.0)
    d = env.uv_to_direction(np.array([(c + 0.5) / (2 * H), (r + 0.5) / H]))
    d = d / np.linalg.norm(d)
    # look slightly off the dot so a flip would move it
    up = np.array([0.0, 1.0, 0.0])
    side = np.cross(d, up)
    side /= np.linalg.norm(side)
    cam = Camera.look_at((0, 0, 0), d + 0.15 * side + 0.1 * up, fov_y_deg=40, width=96, height=96)
    ms = renderer.mi.load_dict({"type": "scene", "integrator": {"type": "path"},
                                "s": renderer.sensor_dict(cam), "env": renderer.env_emitter(env)})
    out = np.asarray(renderer.mi.render(ms, spp=16, seed=1))[..., :3].sum(-1)
    assert out.max() > 10 * max(out.mean(), 1e-9)
    yy, xx = np.mgrid[:96, :96]
    w = np.where(out > 0.2 * out.max(), out, 0.0)
    centroid = np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum() + 0.5   # pixel centres
    expect = cam.project(d * 100.0)
    assert np.linalg.norm(centroid - expect) < 1.5, (centroid, expect)


def test_cli_forwards(tmp_path, capsys):
    from relit_hands.tools.cli import main

    with pytest.raises(SystemExit) as e:
        main(["lightstage", "--help"])
    assert e.value.code == 0
    assert "--shard" in capsys.readouterr().out


def test_path_traced_skin_and_pbr_baseline_agree_under_uniform_light(renderer):
    """Radiometric cross-check of the two renderers: under a uniform white environment (L = 1)
    the path-traced skin (medium + tint calibrated to the albedo texture) and the engine's PBR
    baseline both reflect ~ the linear albedo (+ a little specular); their mean hand radiance
    agrees within 6% per channel (measured 2-4%; 256 spp)."""
    from relit_hands import Engine, EnvironmentMap, scene_preset

    scene = scene_preset("flat")
    env = EnvironmentMap(np.ones((64, 128, 3), np.float32), name="white")
    engine = Engine()
    try:
        cam = engine.default_camera(scene, 96, 96)
        pbr = engine.render(scene, env, cam, return_linear=True, background="none", shadows=False)
    finally:
        engine.release()
    img, alpha = renderer.render(renderer.build(scene, {"c": cam}, env=env), 0, 256, 1)
    m = pbr.mask & (alpha > 0.99)
    assert m.sum() > 1000
    ratio = img[m].mean(0) / pbr.linear[m].mean(0)
    assert np.all(np.abs(ratio - 1.0) < 0.06), ratio


def test_noise_seed_renders_the_same_frames_with_other_noise(tiny, tmp_path):
    """--noise-seed: same frames, masks and expected radiance, independent Monte Carlo noise; the
    evaluation harness turns the pair into a reference-noise ceiling."""
    from relit_hands.tools import evaluate as ev

    out, _ = tiny
    out2 = tmp_path / "tiny_noise1"
    s = ls.run("tiny", out2, quiet=True, kinds=["env"], views_per_frame=2, noise_seed=1)
    assert s["rendered_this_run"] > 0 and s["settings"]["noise_seed"] == 1
    a, b = Capture.load(out), Capture.load(out2, check_files=False)
    assert [(f.id, f.env_id, f.yaw_deg) for f in a.frames] == [(f.id, f.env_id, f.yaw_deg) for f in b.frames]
    pairs = [(f, c) for f in b.frames_by(kind="env") for c in b.cameras if Path(f.images[c]).is_file()]
    assert len(pairs) == 2 * len(b.frames_by(kind="env"))
    diff, rel = [], []
    for f2, c in pairs:
        f = a.frame(f2.id)
        m = a.mask(f, c)
        assert np.array_equal(m, b.mask(f2, c))
        x, y = a.image(f, c)[m > 0], b.image(f2, c)[m > 0]
        diff.append(np.abs(x - y).mean() / x.mean())
        rel.append(abs(x.mean() - y.mean()) / x.mean())
    assert min(diff) > 0.01          # independent noise (8 spp)...
    assert np.mean(rel) < 0.05       # ...around the same expected image
    with pytest.raises(ValueError, match="noise seed"):  # no resuming into another seed's capture
        ls.run("tiny", out2, quiet=True, kinds=["env"], views_per_frame=2, noise_seed=2)
    data = ev.evaluate(out, ["pbr"], tmp_path / "eval", noise_reference=out2, progress=False, grid_rows=1,
                       engine_kwargs={"shadow_map_size": 256})
    g = data["reference_noise"]["groups"]["all"]
    assert g["n_images"] == len(pairs)
    assert data["results"]["pbr"]["overall"]["psnr_linear"] < g["ceiling_psnr"]
    assert "### Reference noise" in (tmp_path / "eval" / "report.md").read_text()
    with pytest.raises(ev.EvaluationError, match="same sampler seed"):
        ev.evaluate(out, ["pbr"], tmp_path / "eval2", noise_reference=out, progress=False)
