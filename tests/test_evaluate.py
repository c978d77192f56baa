"""Evaluation harness: metric values on synthetic pairs, masks, the split guard, end to end."""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from relit_hands.tools import evaluate as ev
from relit_hands.tools.evaluate import (EvaluationError, MetricSettings, compute_metrics, psnr_linear,
                                        reference_settings, select_frames, ssim_masked)

HAS_FLIP = ev.flip_available() is not None


def smooth_image(h=160, w=200, seed=0, lo=0.2, hi=0.7):
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w, 3)), (4, 4, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + (hi - lo) * img).astype(np.float32)


def box_mask(h=160, w=200):
    m = np.zeros((h, w), np.uint8)
    m[20:140, 30:170] = 1
    m[60:100, 100:170] = 2
    return m


SETTINGS = MetricSettings(peak=1.0, flip_start_exposure=0.0, flip_stop_exposure=2.0, flip_num_exposures=3)


# ------------------------------------------------------------------------------ metrics
def test_identical_images():
    ref, m = smooth_image(), box_mask()
    out = compute_metrics(ref, ref.copy(), m, SETTINGS)
    assert out["psnr_linear"] == ev.PSNR_CAP_DB  # documented cap for MSE = 0
    assert out["psnr_display"] == ev.PSNR_CAP_DB
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["lpips"] is None
    if HAS_FLIP:
        assert out["flip"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_known_gaussian_noise_psnr(sigma):
    rng = np.random.default_rng(1)
    h, w = 256, 256
    ref = np.full((h, w, 3), 0.5, np.float32)  # far from the clip range [0, peak] for these sigmas
    test = (ref + rng.normal(0.0, sigma, ref.shape)).astype(np.float32)
    m = np.zeros((h, w), np.uint8)
    m[16:240, 16:240] = 1
    peak = 1.0
    expected = 10 * math.log10(peak ** 2 / sigma ** 2)
    assert psnr_linear(ref, test, m, peak) == pytest.approx(expected, abs=0.2)
    # a different peak is a pure offset of 20 log10(peak ratio): no per-image rescaling
    assert psnr_linear(ref, test, m, 2.0) == pytest.approx(expected + 20 * math.log10(2.0), abs=0.2)
    assert 0.0 < ssim_masked(ref, test, m, peak) < 1.0


def test_metrics_order_with_noise_level():
    ref, m = smooth_image(), box_mask()
    rng = np.random.default_rng(2)
    small = compute_metrics(ref, ref + rng.normal(0, 0.01, ref.shape).astype(np.float32), m, SETTINGS)
    large = compute_metrics(ref, ref + rng.normal(0, 0.08, ref.shape).astype(np.float32), m, SETTINGS)
    assert small["psnr_linear"] > large["psnr_linear"] + 10
    assert small["ssim"] > large["ssim"]
    if HAS_FLIP:
        assert 0 < small["flip"] < large["flip"]


def test_pixels_outside_the_hand_change_nothing():
    ref, m = smooth_image(seed=3), box_mask()
    rng = np.random.default_rng(4)
    test = (ref * 0.8 + rng.normal(0, 0.03, ref.shape)).astype(np.float32)
    before = compute_metrics(ref, test, m, SETTINGS)
    outside = m == 0
    ref2, test2 = ref.copy(), test.copy()
    ref2[outside] = rng.random((int(outside.sum()), 3)) * 50.0   # bright junk in the reference background
    test2[outside] = rng.random((int(outside.sum()), 3)) * 7.0   # and different junk in the test background
    after = compute_metrics(ref2, test2, m, SETTINGS)
    for k in ("psnr_linear", "psnr_display", "ssim", "flip"):
        assert after[k] == before[k], k
    # ... while a change inside the hand does change them
    test3 = test.copy()
    test3[60:80, 40:60] += 0.3
    inside = compute_metrics(ref, test3, m, SETTINGS)
    assert inside["psnr_linear"] < before["psnr_linear"] and inside["ssim"] < before["ssim"]


def test_reference_settings_follow_flip_rule():
    ref = smooth_image()
    s = reference_settings(ref.reshape(-1, 3))
    assert s.peak == pytest.approx(np.percentile(ref, ev.PEAK_PERCENTILE))
    y = ref.reshape(-1, 3) @ ev.REC709_LUMA
    assert s.flip_start_exposure == pytest.approx(math.log2(ev._aces_xmax() / np.percentile(y, 99.9)))
    assert s.flip_stop_exposure == pytest.approx(math.log2(ev._aces_xmax() / np.median(y)))
    if HAS_FLIP:  # our x_max is FLIP's own (for a constant image FLIP's start = log2(x_max / Y))
        import flip_evaluator
        _, _, p = flip_evaluator.evaluate(np.ones((32, 32, 3), np.float32), np.ones((32, 32, 3), np.float32), "HDR")
        assert p["startExposure"] == pytest.approx(math.log2(ev._aces_xmax()), abs=1e-5)
    assert reference_settings(ref.reshape(-1, 3), peak=3.0).peak == 3.0


# ------------------------------------------------------------------------------ tiny capture
@dataclass
class Frame:
    id: str
    kind: str
    split: str
    scene: object
    env_id: str
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    lights_on: list = field(default_factory=list)
    images: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)


class MemoryCapture:
    """A capture with the loader's interface, held in memory (references made by the test)."""

    def __init__(self, cameras, frames, images, masks):
        self.cameras, self.frames, self._images, self._masks = cameras, frames, images, masks

    def frames_by(self, kind=None, split=None):
        return [f for f in self.frames if (kind is None or f.kind == kind) and (split is None or f.split == split)]

    def environment(self, frame):
        from relit_hands.environment import EnvironmentMap
        return EnvironmentMap.from_name_or_path(frame.env_id).rotate(frame.yaw_deg, frame.pitch_deg)

    def image(self, frame, cam_id):
        return self._images[frame.id, cam_id].copy()

    def mask(self, frame, cam_id):
        return self._masks[frame.id, cam_id].copy()


NOISE_SIGMA = 0.01


def make_memory_capture():
    """3 env frames (2 held out: one hand / two hands; 1 train) x 2 cameras, 72x56 pixels.
    References: the engine's own PBR render with shadows (+ a little noise in camera 'c1')."""
    try:
        from relit_hands.engine import Engine
    except Exception as e:  # pragma: no cover
        pytest.skip(f"engine unavailable: {e}")
    from relit_hands.scene import scene_preset
    try:
        engine = Engine(shadow_map_size=512)
    except RuntimeError as e:
        pytest.skip(f"no OpenGL context: {e}")
    frames = [Frame("env_000", "env", "heldout", scene_preset("point"), "studio", 30.0),
              Frame("env_001", "env", "heldout", scene_preset("clasp"), "sky_sun", -60.0),
              Frame("env_002", "env", "train", scene_preset("fist"), "studio", 0.0),
              Frame("olat_000", "olat", "train", scene_preset("fist"), "", 0.0)]
    base = engine.default_camera(scene_preset("clasp"), 72, 56)
    from relit_hands.camera import Camera
    from scipy.spatial.transform import Rotation
    r2 = Rotation.from_euler("y", 20, degrees=True).as_matrix()
    cams = {"c0": base, "c1": Camera(base.K, base.R @ r2.T, base.t, 72, 56)}
    images, masks = {}, {}
    rng = np.random.default_rng(5)
    cap = MemoryCapture(cams, frames, images, masks)
    for f in frames:
        f.images = {c: f"images/{f.id}/{c}.exr" for c in cams}
        f.masks = {c: f"masks/{f.id}/{c}.png" for c in cams}
        for c, cam in cams.items():
            env = cap.environment(f) if f.kind == "env" else cap.environment(frames[0])
            out = engine.render(f.scene, env, cam, return_linear=True, background="none", shadows=True)
            img = out.linear.copy()
            if c == "c1":
                img = img + rng.normal(0, NOISE_SIGMA, img.shape).astype(np.float32) * out.mask[..., None]
            img[~out.mask] = 0.05  # a flat "background" the metrics must ignore
            images[f.id, c] = img.astype(np.float32)
            masks[f.id, c] = np.where(out.mask, out.hand_id + 1, 0).astype(np.uint8)
    engine.release()
    return cap


@pytest.fixture(scope="module")
def tiny_capture():
    return make_memory_capture()


def test_split_guard(tiny_capture):
    ids = [f.id for f in select_frames(tiny_capture)]
    assert ids == ["env_000", "env_001"]  # default: every held-out env frame, nothing else
    with pytest.raises(EvaluationError, match="training"):
        select_frames(tiny_capture, ["env_000", "env_002"])
    with pytest.raises(EvaluationError, match="training"):
        select_frames(tiny_capture, ["olat_000"])
    with pytest.raises(EvaluationError, match="unknown"):
        select_frames(tiny_capture, ["nope"])
    assert [f.id for f in select_frames(tiny_capture, max_frames=1)] == ["env_000"]


def test_unknown_renderer_and_registry():
    with pytest.raises(EvaluationError, match="unknown renderer"):
        ev.get_renderer_spec("does_not_exist")
    assert {"pbr", "pbr_noshadow"} <= set(ev.available_renderers())
    with pytest.raises(ValueError):
        ev.register_renderer("pbr", lambda ctx: None, "clash")


def test_end_to_end(tiny_capture, tmp_path):
    # a plugin renderer: the reference of camera c0 itself (so 'perfect' on c0), registered like
    # the teacher / student will be
    def factory(ctx):
        return lambda frame, camera, env: ctx.capture.image(frame, next(
            c for c, cam in ctx.capture.cameras.items() if cam is camera))
    ev.register_renderer("oracle", factory, "the reference itself (test)", overwrite=True)
    out = tmp_path / "eval"
    data = ev.evaluate(tiny_capture, ["pbr", "pbr_noshadow", "oracle"], out, command="relit-hands eval TEST",
                       progress=False, grid_rows=2, engine_kwargs={"shadow_map_size": 512})
    for name in ("report.md", "metrics.json", "per_frame.png", "grid_pbr.png", "grid_pbr_noshadow.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    js = json.loads((out / "metrics.json").read_text())
    assert js["command"] == "relit-hands eval TEST" and js["frames"] == ["env_000", "env_001"]
    assert "not available" in js["lpips"]
    report = (out / "report.md").read_text()
    assert report.splitlines()[5] == "relit-hands eval TEST"  # the exact command at the top
    R = js["results"]
    # pbr rendered the references: exact on c0 (capped PSNR, SSIM 1), noise-limited on c1
    c0 = [r for r in R["pbr"]["per_image"] if r["camera"] == "c0"]
    c1 = [r for r in R["pbr"]["per_image"] if r["camera"] == "c1"]
    assert len(c0) == len(c1) == 2
    for r in c0:
        assert r["psnr_linear"] == ev.PSNR_CAP_DB and r["ssim"] == pytest.approx(1.0, abs=1e-6)
        if HAS_FLIP:
            assert r["flip"] == pytest.approx(0.0, abs=1e-6)
        assert r["silhouette_iou"] == 1.0
    peak = js["settings"]["peak"]
    for r in c1:
        assert r["psnr_linear"] == pytest.approx(10 * math.log10(peak ** 2 / NOISE_SIGMA ** 2), abs=1.0)
    # without shadows: worse than with shadows on the exact camera, and subsets / envs are consistent
    nos = {(r["frame"], r["camera"]): r for r in R["pbr_noshadow"]["per_image"]}
    for r in c0:
        assert nos[r["frame"], "c0"]["psnr_linear"] < r["psnr_linear"]
    all_recs = R["pbr_noshadow"]["per_image"]
    assert R["pbr_noshadow"]["overall"]["psnr_linear"] == pytest.approx(np.mean([r["psnr_linear"] for r in all_recs]))
    assert set(R["pbr"]["by_subset"]) == {"single_hand", "two_hands"}
    assert set(R["pbr"]["by_environment"]) == {"studio", "sky_sun"}
    two = [r["ssim"] for r in all_recs if r["subset"] == "two_hands"]
    assert R["pbr_noshadow"]["by_subset"]["two_hands"]["ssim"] == pytest.approx(np.mean(two))
    assert R["oracle"]["by_camera"]["c0"]["psnr_linear"] == ev.PSNR_CAP_DB
    # numbers in the report are the JSON's
    assert f"{R['pbr_noshadow']['overall']['psnr_linear']:.2f}" in report
    assert f"{peak:.5g}" in report
    # the split guard holds through evaluate() too
    with pytest.raises(EvaluationError, match="training"):
        ev.evaluate(tiny_capture, ["pbr"], tmp_path / "x", frames=["env_002"], progress=False)


def test_cli_eval(tiny_capture, tmp_path, monkeypatch, capsys):
    """`relit-hands eval` end to end (argument parsing, exact command, outputs, split guard exit)."""
    from relit_hands.tools import cli
    cap_dir = tmp_path / "cap"
    cap_dir.mkdir()
    monkeypatch.setattr(ev, "load_capture", lambda path: tiny_capture)
    monkeypatch.setattr(ev, "ENGINE_KWARGS", {"shadow_map_size": 512})
    out = tmp_path / "out"
    argv = ["eval", "--capture", str(cap_dir), "--renderer", "pbr_noshadow", "--out", str(out),
            "--cameras", "c0", "--frames", "env_001", "--no-progress"]
    assert cli.main(argv) == 0
    js = json.loads((out / "metrics.json").read_text())
    assert js["command"] == "relit-hands " + " ".join(argv)
    assert js["frames"] == ["env_001"] and js["cameras"] == ["c0"]
    assert "relit-hands " + " ".join(argv) in (out / "report.md").read_text().splitlines()[:8]
    assert (out / "grid_pbr_noshadow.png").is_file() and (out / "per_frame.png").is_file()
    printed = capsys.readouterr().out
    assert f"{js['results']['pbr_noshadow']['overall']['psnr_linear']:.2f}" in printed
    # the split guard: a train frame is refused with a one-line error and exit status 2
    assert cli.main(["eval", "--capture", str(cap_dir), "--renderer", "pbr", "--out", str(tmp_path / "o2"),
                     "--frames", "env_002"]) == 2
    assert "training" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "metrics.json").exists()


def test_cli_eval_on_disk_capture(tiny_capture, tmp_path, monkeypatch):
    """The same tiny capture written with CaptureWriter and read back by the real loader."""
    capmod = pytest.importorskip("relit_hands.tools.capture")
    from relit_hands import environment as envmod
    from relit_hands.tools import cli

    root = tmp_path / "cap"
    w = capmod.CaptureWriter(root, "tiny", {"tool": "tests/test_evaluate.py"})
    for cid, cam in tiny_capture.cameras.items():
        w.add_camera(cid, cam)
    shipped = envmod.EnvironmentMap._shipped_dir()
    for eid in ("studio", "sky_sun"):
        w.add_environment(eid, Path(shipped) / f"{eid}.hdr")
    for f in tiny_capture.frames_by(kind="env"):
        w.add_frame(f.id, "env", f.split, f.scene, env={"id": f.env_id, "yaw_deg": f.yaw_deg})
        for cid in tiny_capture.cameras:
            w.write_view(f.id, cid, tiny_capture.image(f, cid), tiny_capture.mask(f, cid), half=False)
    w.write()
    monkeypatch.setattr(ev, "ENGINE_KWARGS", {"shadow_map_size": 512})
    out = tmp_path / "out"
    assert cli.main(["eval", "--capture", str(root), "--renderer", "pbr", "--out", str(out), "--no-progress",
                     "--grid-rows", "1"]) == 0
    js = json.loads((out / "metrics.json").read_text())
    assert js["frames"] == ["env_000", "env_001"]
    assert js["results"]["pbr"]["by_camera"]["c0"]["psnr_linear"] == ev.PSNR_CAP_DB
    assert cli.main(["eval", "--capture", str(root), "--renderer", "pbr", "--out", str(out),
                     "--frames", "env_002"]) == 2
    # a capture still being rendered: the training frame's images are missing -> still evaluates
    # (and a relative --capture path works)
    removed = list((root / "images" / "env_002").glob("*"))
    assert removed
    for p in removed:
        p.unlink()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", "--capture", "cap", "--renderer", "pbr", "--out", str(out), "--no-progress",
                     "--grid-rows", "1"]) == 0
    # ...but a missing reference of an evaluated frame is a clear error
    next((root / "images" / "env_000").glob("*")).unlink()
    assert cli.main(["eval", "--capture", str(root), "--renderer", "pbr", "--out", str(out),
                     "--no-progress"]) == 2


def _noisy_copy(cap, sigma, seed, cams, generator):
    """``cap``'s held-out frames with camera ``cams`` only: the c0 reference (the exact PBR render)
    plus Gaussian noise of std ``sigma`` on the hand pixels."""
    import copy
    rng = np.random.default_rng(seed)
    frames, images, masks = [], {}, {}
    for f in cap.frames_by(kind="env", split="heldout"):
        g = copy.copy(f)
        g.images = {c: f.images[c] for c in cams}
        g.masks = {c: f.masks[c] for c in cams}
        frames.append(g)
        for c in cams:
            m = cap.mask(f, c) > 0
            images[f.id, c] = (cap.image(f, "c0") + rng.normal(0, sigma, m.shape + (3,)) * m[..., None]).astype(np.float32)
            masks[f.id, c] = cap.mask(f, c)
    out = MemoryCapture(cap.cameras, frames, images, masks)
    out.generator = generator
    return out


def test_noise_reference_ceiling_and_noise_corrected_psnr(tiny_capture, tmp_path):
    """Two renders of the same truth with independent noise (sigma) give the ceiling
    10 log10(peak^2 / sigma^2); a renderer with a known bias gets its bias back after the noise is
    subtracted; the exact renderer scores the ceiling."""
    sigma = 0.02
    gen = {"preset": "t", "spp": 8}
    a = _noisy_copy(tiny_capture, sigma, 1, ["c0", "c1"], {**gen, "noise_seed": 0})
    b = _noisy_copy(tiny_capture, sigma, 2, ["c0"], {**gen, "noise_seed": 1})  # no second c1 render
    truth = {f.id: tiny_capture.image(f, "c0") for f in tiny_capture.frames}

    def factory(scale):
        return lambda ctx: (lambda frame, camera, env: truth[frame.id] * scale)
    ev.register_renderer("exact", factory(1.0), "the noise-free truth (test)", overwrite=True)
    ev.register_renderer("bright", factory(1.05), "5% too bright (test)", overwrite=True)
    data = ev.evaluate(a, ["exact", "bright"], tmp_path / "e", noise_reference=b, progress=False, grid_rows=1,
                       cameras=["c0", "c1"], engine_kwargs={"shadow_map_size": 256})
    peak = data["settings"]["peak"]
    rn = data["reference_noise"]["groups"]
    assert rn["all"]["n_images"] == 2 and set(rn) == {"all", "studio", "sky_sun"}
    recs = data["results"]["exact"]["per_image"]
    assert all(("ref_noise_mse" in r) == (r["camera"] == "c0") for r in recs)
    ceiling = 10 * math.log10(peak ** 2 / sigma ** 2)
    assert rn["all"]["ceiling_psnr_pooled"] == pytest.approx(ceiling, abs=0.3)
    assert rn["all"]["ceiling_psnr_interior_pooled"] == pytest.approx(ceiling, abs=0.4)  # the noise is on every pixel
    ex, br = rn["all"]["renderers"]["exact"], rn["all"]["renderers"]["bright"]
    assert ex["psnr_linear_pooled"] == pytest.approx(rn["all"]["ceiling_psnr_pooled"], abs=0.3)
    assert ex["psnr_noise_corrected_pooled"] is None or ex["psnr_noise_corrected_pooled"] > ceiling + 10
    bias = np.mean([np.mean((np.clip(1.05 * truth[f.id], 0, peak) - np.clip(truth[f.id], 0, peak))[a.mask(f, "c0") > 0] ** 2)
                    for f in a.frames])
    assert br["psnr_noise_corrected_pooled"] == pytest.approx(10 * math.log10(peak ** 2 / bias), abs=0.5)
    assert br["psnr_linear_pooled"] < br["psnr_noise_corrected_pooled"] - 1  # the noise hid part of it
    bias_in = np.mean([np.mean((np.clip(1.05 * truth[f.id], 0, peak) - np.clip(truth[f.id], 0, peak))[
        ev.interior_hand_mask(a.mask(f, "c0"))] ** 2) for f in a.frames])
    assert br["psnr_noise_corrected_interior_pooled"] == pytest.approx(10 * math.log10(peak ** 2 / bias_in), abs=0.5)
    report = (tmp_path / "e" / "report.md").read_text()
    assert "### Reference noise" in report and f"{rn['all']['ceiling_psnr']:.2f}" in report
    # --noise-views-only: just the images with a second render (c0), each with its noise estimate
    only = ev.evaluate(a, ["exact"], tmp_path / "o", noise_reference=b, progress=False, grid_rows=1,
                       cameras=["c0", "c1"], engine_kwargs={"shadow_map_size": 256}, noise_views_only=True)
    recs = only["results"]["exact"]["per_image"]
    assert {r["camera"] for r in recs} == {"c0"} and all("ref_noise_mse" in r for r in recs)
    with pytest.raises(EvaluationError, match="needs --noise-reference"):
        ev.evaluate(a, ["exact"], tmp_path / "n", progress=False, noise_views_only=True)
    # not a second render of the same capture: refused with the reason
    for gen_b, msg in (({**gen, "noise_seed": 0}, "same sampler seed"), ({**gen, "spp": 16, "noise_seed": 1}, "spp")):
        b.generator = gen_b
        with pytest.raises(EvaluationError, match=msg):
            ev.evaluate(a, ["exact"], tmp_path / "x", noise_reference=b, progress=False)
    b.generator = {**gen, "noise_seed": 1}
    b.frames[0].yaw_deg += 10.0
    with pytest.raises(EvaluationError, match="differs"):
        ev.evaluate(a, ["exact"], tmp_path / "x", noise_reference=b, progress=False)


def test_seam_band_error_ratio_sees_errors_along_the_uv_chart_borders(tiny_capture, tmp_path):
    """--seam-band: extra error confined to the screen pixels over the asset's UV chart borders gives
    a band / interior ratio far above 1 ((0.05 / 0.01)^2 = 25 where nothing is clipped); the same
    error spread evenly over the hand gives ~1."""
    from relit_hands.tools.seam_measure import screen_band_masks, seam_band_texture

    def factory(where):
        def make(ctx):
            a = ctx.engine.asset
            tex = seam_band_texture(a.proxy_uvs, a.proxy_uv_faces, ev.SEAM_BAND_RESOLUTION, 2)

            def render(frame, camera, env):
                cid = next(c for c, cam in ctx.capture.cameras.items() if cam is camera)
                ref = np.asarray(ctx.capture.image(frame, cid), np.float32)
                band, _ = screen_band_masks(ctx.engine, frame.scene, camera, tex, edge_px=ev.SEAM_EDGE_PX)
                hand = ctx.capture.mask(frame, cid) > 0
                region = band if where == "band" else hand
                return ref + 0.01 * hand[..., None] + 0.04 * region[..., None].astype(np.float32)
            return render
        return make

    ev.register_renderer("seam_error", factory("band"), "error on the seams only (test)", overwrite=True)
    ev.register_renderer("even_error", factory("hand"), "the same error everywhere (test)", overwrite=True)
    data = ev.evaluate(tiny_capture, ["seam_error", "even_error"], tmp_path / "eval", progress=False,
                       cameras=["c0"], seam_band_px=2, engine_kwargs={"shadow_map_size": 512})
    seam, even = (data["results"][n]["seam_band"] for n in ("seam_error", "even_error"))
    assert seam["n_images"] == even["n_images"] == 2 and seam["band_pixels"] > 20
    assert seam["ratio"] > 10 and even["ratio"] == pytest.approx(1.0, abs=0.05)
    assert data["seam_band"]["band_px"] == 2
    assert "Error along the UV chart borders" in (tmp_path / "eval" / "report.md").read_text()


def test_interior_hand_mask_drops_the_silhouette_ring():
    lab = np.zeros((8, 10), np.uint8)
    lab[1:7, 1:5] = 1          # right hand 6 x 4
    lab[1:7, 5:9] = 2          # left hand touching it
    lab[0:3, 8:10] = 2         # touching the image border
    inner = ev.interior_hand_mask(lab)
    expect = np.zeros_like(inner)
    expect[2:6, 2:4] = True    # right: one pixel in from the background and from the left hand
    expect[2:6, 6:8] = True    # left: column 8 touches the background below its border block
    assert np.array_equal(inner, expect), np.argwhere(inner != expect)
    assert not inner[0].any() and not inner[:, -1].any()    # the image border counts as silhouette
    assert np.array_equal(ev.interior_hand_mask(lab[..., None].repeat(3, -1)), inner)


def test_interior_psnr_ignores_errors_on_the_silhouette_only(tiny_capture, tmp_path):
    """A renderer exact inside the hand and off on its one-pixel silhouette ring: full-mask PSNR
    pays for the ring, the interior figures are exact (capped); one off everywhere pays in both."""
    def factory(where):
        def make(ctx):
            def render(frame, camera, env):
                cid = next(c for c, cam in ctx.capture.cameras.items() if cam is camera)
                ref = np.asarray(ctx.capture.image(frame, cid), np.float32)
                lab = ctx.capture.mask(frame, cid)
                region = (lab > 0) & ~ev.interior_hand_mask(lab) if where == "ring" else lab > 0
                return ref + 0.2 * region[..., None].astype(np.float32)
            return render
        return make

    ev.register_renderer("ring_error", factory("ring"), "error on the silhouette ring only (test)", overwrite=True)
    ev.register_renderer("all_error", factory("all"), "the same error on every hand pixel (test)", overwrite=True)
    data = ev.evaluate(tiny_capture, ["ring_error", "all_error"], tmp_path / "eval", progress=False, grid_rows=1,
                       cameras=["c0"], engine_kwargs={"shadow_map_size": 256})
    ring, every = (data["results"][n]["overall"] for n in ("ring_error", "all_error"))
    assert ring["psnr_linear_interior"] == ring["psnr_linear_interior_pooled"] == ev.PSNR_CAP_DB
    assert ring["psnr_linear"] < 60 and every["psnr_linear_interior_pooled"] < 60
    for r in data["results"]["ring_error"]["per_image"]:
        lab = tiny_capture.mask(next(f for f in tiny_capture.frames if f.id == r["frame"]), "c0")
        assert r["interior_pixels"] == int(ev.interior_hand_mask(lab).sum()) < int((lab > 0).sum())
    assert f"{every['psnr_linear_interior_pooled']:.2f}" in (tmp_path / "eval" / "report.md").read_text()
