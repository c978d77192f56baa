"""Evaluation set v2: the lighting subsets (tools/eval_subsets.py), the light stage's plan of
held-out frames (lightstage.plan_eval_frames), the evaluation's split guard, asset and subsets,
and a tiny eval_v2-style capture rendered with Mitsuba and evaluated end to end."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from relit_hands.environment import EnvironmentMap
from relit_hands.hand_model import HandAsset, HandModel
from relit_hands.scene import HandState, Scene, scene_preset
from relit_hands.tools import eval_subsets as es
from relit_hands.tools import lightstage as ls
from relit_hands.tools.evaluate import EvaluationError, capture_engine_kwargs, guard_evaluation_maps
from relit_hands.tools.light_library import split_of


@pytest.fixture(scope="module")
def v2_models():
    asset = HandAsset.load(ls.preset_asset_path(ls.PRESETS["eval_v2"]))
    return {s: HandModel(asset, s) for s in ("right", "left")}


def test_backlit_and_family():
    assert es.is_backlit([0, 0, 1.0], [0, 0, 0], np.array([0.0, 0.0, -1.0]))
    assert not es.is_backlit([0, 0, 1.0], [0, 0, 0], np.array([0.0, 0.0, 1.0]))
    assert not es.is_backlit([0, 0, 1.0], [0, 0, 0], np.array([0.0, 1.0, 0.0]))        # 90 deg: top light
    assert es.env_family("sun-000011") == "sun" and es.env_family("color-000002") == "color"
    assert es.env_family("sky_sun") == "shipped" and es.env_family("studio") == "shipped"


def test_dominant_direction_finds_the_bright_pixel():
    img = np.full((32, 64, 3), 0.05, np.float32)
    img[8, 40] = 5000.0
    env = EnvironmentMap(img, name="spot")
    d = es.dominant_direction(env)
    lit = env.pixel_directions()[8, 40]
    assert np.degrees(np.arccos(np.clip(d @ lit, -1, 1))) < 20   # within one of 64 light regions


def test_interhand_shadow_fraction(v2_models):
    shadow = scene_preset("shadow")   # the upper hand above the lower one (+Y)
    assert es.interhand_shadow_fraction(v2_models, shadow, np.array([0.0, 1.0, 0.0])) > 0.2
    assert es.interhand_shadow_fraction(v2_models, scene_preset("spread"), np.array([0.0, 1.0, 0.0])) == 0.0
    # hands far apart never shadow each other
    apart = Scene([HandState("right", np.zeros(45, np.float32), transl=np.array([0.3, 0, 0], np.float32)),
                   HandState("left", np.zeros(45, np.float32), transl=np.array([-0.3, 0, 0], np.float32))])
    assert es.interhand_shadow_fraction(v2_models, apart, np.array([0.0, 1.0, 0.0])) == 0.0


@pytest.fixture(scope="module")
def small_plan(v2_models):
    preset = dict(ls.PRESETS["eval_v2"])
    preset["eval_frames"] = dict(preset["eval_frames"], two_hand=3, shadow=1, single=5,
                                 library=dict(split="test", per_family=2, height=32))
    cams, _, _ = ls.build_rig(preset["cameras"], preset["lights"], 64, 64)
    lib, entries = ls.eval_environments(preset["eval_frames"]["library"])
    envs = {e.id: lib.load(e, 32) for e in entries}
    return preset, cams, envs, ls.plan_eval_frames(preset, cams, v2_models, envs)


def test_eval_plan(small_plan, v2_models):
    preset, cams, envs, frames = small_plan
    assert len(frames) == 8 and all(f.kind == "env" and f.split == "heldout" for f in frames)
    assert sum(len(f.scene.hands) == 2 for f in frames) / len(frames) >= 1 / 3
    assert all(split_of(*(f.env["id"].split("-")[0], int(f.env["id"].split("-")[1]))) == "test" for f in frames)
    shadow = [f for f in frames if "interhand_shadow" in f.tag]
    assert len(shadow) == 1
    d = es.dominant_direction(envs[shadow[0].env["id"]])
    assert es.interhand_shadow_fraction(v2_models, shadow[0].scene, d) >= es.SHADOW_FRACTION
    c0 = next(iter(cams.values())).center
    for f in frames:
        if "backlit" in f.tag:
            d = es.dominant_direction(envs[f.env["id"]].rotate(f.env["yaw_deg"], f.env["pitch_deg"]))
            az_light, az_cam = np.arctan2(d[0], -d[2]), np.arctan2(c0[0], -c0[2])
            assert abs((np.degrees(az_light - az_cam) + 180) % 360 - 180) > 170   # opposite azimuths
    assert sum("backlit" in f.tag for f in frames) >= 2
    again = ls.plan_eval_frames(preset, cams, v2_models, envs)
    assert [(f.env, f.tag) for f in again] == [(f.env, f.tag) for f in frames]


def test_dev_set_uses_the_val_split_and_its_own_poses():
    """dev_v2 is eval_v2's recipe on the light library's val split (maps no training step and no
    evaluation frame uses) with its own seed; the evaluation harness accepts its maps."""
    dev, ev = ls.PRESETS["dev_v2"], ls.PRESETS["eval_v2"]
    assert dev["seed"] != ev["seed"] and dev["asset"] == ev["asset"]
    assert {k: v for k, v in dev["eval_frames"].items() if k != "library"} == \
        {k: v for k, v in ev["eval_frames"].items() if k != "library"}
    _, dev_maps = ls.eval_environments(dict(dev["eval_frames"]["library"], per_family=3))
    _, eval_maps = ls.eval_environments(dict(ev["eval_frames"]["library"], per_family=3))
    assert {e.split for e in dev_maps} == {"val"} and "color" not in {e.family for e in dev_maps}
    assert not {e.id for e in dev_maps} & {e.id for e in eval_maps}
    guard_evaluation_maps([SimpleNamespace(env_id=e.id) for e in dev_maps])


def test_evaluation_refuses_training_maps():
    def frame(eid):
        return SimpleNamespace(env_id=eid)

    train_seed = next(s for s in range(100) if split_of("sun", s) == "train")
    test_seed = next(s for s in range(100) if split_of("sun", s) == "test")
    guard_evaluation_maps([frame("studio"), frame(f"sun-{test_seed:06d}"), frame("color-000003")])
    with pytest.raises(EvaluationError, match=f"sun-{train_seed:06d}"):
        guard_evaluation_maps([frame(f"sun-{train_seed:06d}")])


def test_capture_engine_kwargs_follow_the_generator():
    cap = SimpleNamespace(generator={"settings": dict(ls.PRESETS["eval_v2"])})
    kw = capture_engine_kwargs(cap)
    assert kw["asset"].is_file() and kw["asset"].parent.name == "hand_v2"
    assert capture_engine_kwargs(SimpleNamespace(generator={"settings": dict(ls.PRESETS["tiny"])})) == {}


def test_tiny_eval_v2_capture_renders_and_evaluates(tmp_path, monkeypatch):
    pytest.importorskip("mitsuba")
    try:
        ls.setup_mitsuba("auto")
    except RuntimeError as e:
        pytest.skip(str(e))
    from relit_hands.tools.capture import Capture
    from relit_hands.tools.evaluate import evaluate

    preset = dict(ls.PRESETS["eval_v2"], cameras=2, lights=8, width=48, height=48, spp=4)
    preset["eval_frames"] = dict(preset["eval_frames"], two_hand=1, shadow=1, single=1,
                                 library=dict(split="test", per_family=1, height=32))
    monkeypatch.setitem(ls.PRESETS, "eval_tiny", preset)
    out = tmp_path / "eval_tiny"
    s = ls.run("eval_tiny", out, quiet=True)
    cap = Capture.load(out)
    assert s["complete"] and len(cap.frames) == 2 and {f.kind for f in cap.frames} == {"env"}
    assert all((out / "environments" / f"{f.env_id}.hdr").is_file() for f in cap.frames)
    assert cap.generator["settings"]["asset"] == "hand_v2"
    res = evaluate(out, ["pbr"], tmp_path / "report", progress=False)
    lighting = res["results"]["pbr"]["by_lighting"]
    assert "interhand_shadow" in lighting and any(k.startswith("family:") for k in lighting)
    assert {r["lighting"]["family"] for r in res["results"]["pbr"]["per_image"]} <= set(es.env_family(f.env_id)
                                                                                         for f in cap.frames)
    # a partial capture (a view not rendered yet): an error, unless --allow-partial evaluates the rest
    f0 = cap.frames[0]
    Path(f0.images["cam00"]).unlink()
    with pytest.raises(EvaluationError, match="missing"):
        evaluate(out, ["pbr"], tmp_path / "report2", progress=False)
    part = evaluate(out, ["pbr"], tmp_path / "report3", progress=False, allow_partial=True)
    n = len(res["results"]["pbr"]["per_image"])
    assert len(part["results"]["pbr"]["per_image"]) == n - 1


def test_turntable_and_external_sheet_never_overwrite_foreign_files(tmp_path):
    """The viewer's turntable folder and lightstage --sheet outside the capture refuse files
    relit-hands did not write (the last two output gaps of issue #18)."""
    from relit_hands.validation import OutputError, OutputFolder, OutputSet

    foreign = tmp_path / "holiday"
    foreign.mkdir()
    (foreign / "photo.png").write_bytes(b"not ours")
    with pytest.raises(OutputError, match="holiday"):
        OutputFolder(foreign, "turntable", label="turntable folder").create()
    again = OutputFolder(tmp_path / "tt", "turntable", label="turntable folder").create()
    OutputFolder(again, "turntable", label="turntable folder").create()   # its own folder: fine
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"someone's picture")
    from relit_hands.tools.cli import main

    rc = main(["lightstage", "--preset", "tiny", "--out", str(tmp_path / "cap"), "--sheet", str(sheet)])
    assert rc == 2 and not (tmp_path / "cap" / "images").exists()        # refused before rendering
    OutputSet(owned=[str(sheet)]).check(sheet, "--sheet")                  # the capture's own sheet
    assert sheet.read_bytes() == b"someone's picture" and (foreign / "photo.png").read_bytes() == b"not ours"
