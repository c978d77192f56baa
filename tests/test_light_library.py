"""The light library (issue #17): seeded maps, energies, splits, the split guard, user folders, the
make-light-library command and the student set's library option. CPU only, small maps."""
import hashlib
import json
import math
import shutil

import numpy as np
import pytest

from relit_hands.environment import EnvironmentMap, equirect_solid_angles, luminance
from relit_hands.image_io import read_png, write_hdr_image
from relit_hands.tools import light_library as ll
from relit_hands.tools.cli import main as cli_main
from relit_hands.tools.light_library import (DISK_RADIANCE_MAX, ENERGY_RANGES, FAMILIES, HELD_OUT_FAMILY,
                                             TRAIN_FAMILIES, LightEntry, LightLibrary, SplitError, generate,
                                             require_split, split_of)
from relit_hands.tools.make_environments import HALF_MAX

H = 32


def energy(img):
    h = img.shape[0]
    return float(luminance(equirect_solid_angles(h, 2 * h) @ img.astype(np.float64).sum(axis=1)))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_maps_are_seeded_valid_and_within_their_energy_range(family):
    lo, hi = ENERGY_RANGES[family]
    energies = []
    for seed in range(6):
        img, params = generate(family, seed, H, with_params=True)
        assert img.shape == (H, 2 * H, 3) and img.dtype == np.float32
        assert np.isfinite(img).all() and img.min() >= 0 and img.max() < DISK_RADIANCE_MAX < HALF_MAX
        e = energy(img)
        assert e == pytest.approx(params["total_energy"], rel=1e-4) and lo <= e <= hi
        energies.append(e)
        assert np.array_equal(img, generate(family, seed, H))           # bit-identical on a second call
    assert max(energies) / min(energies) > 1.5                          # intensity is randomised
    a, b = generate(family, 0, H), generate(family, 1, H)
    shape_a, shape_b = a / a.mean(), b / b.mean()                         # differ beyond a global scale
    assert np.abs(shape_a - shape_b).mean() > 0.1


def test_same_scene_at_every_height_and_peaks_bounded_at_high_resolution():
    small, params = generate("sun", 2, 32, with_params=True)
    big, params_big = generate("sun", 2, 256, with_params=True)
    assert params == params_big and params["sun_visible"]
    assert energy(big) == pytest.approx(energy(small), rel=1e-4)
    assert big.max() < DISK_RADIANCE_MAX
    # the sun is where its parameters say: the brightest pixel of the big map
    r, c = np.unravel_index(np.argmax(luminance(big)), big.shape[:2])
    el = 90 - (r + 0.5) * 180 / 256
    az = ((c + 0.5) / 512 - 0.5) * 360
    assert abs(el - params["sun_elevation_deg"]) < 1.5
    assert abs((az - params["sun_azimuth_deg"] + 180) % 360 - 180) < 1.5
    # the radius rule itself: a 40-unit sun can never exceed the disk radiance limit
    rgb = np.array([40.0, 37.0, 33.0])
    r = math.radians(ll._disk_radius(rgb, 0.25, 1024))
    assert rgb.max() / (math.pi * r * r) <= DISK_RADIANCE_MAX * 1.0001


def test_sun_family_covers_grazing_set_and_behind_suns():
    els, azs = [], []
    for seed in range(60):
        rng = ll._family_rng("sun", seed)
        ll._loguniform(rng, *ENERGY_RANGES["sun"])
        az = rng.uniform(-180, 180)
        el = rng.uniform(-8, 8) if rng.random() < 0.3 else rng.uniform(8, 88)
        els.append(el)
        azs.append(az)
    els, azs = np.array(els), np.array(azs)
    assert (els < 0).any() and (np.abs(els) < 8).sum() >= 8 and (els > 60).any()
    assert (np.abs(azs) < 45).any() and (np.abs(azs) > 135).any()
    _, p = generate("sun", int(np.argmin(els)), H, with_params=True)
    assert p["sun_elevation_deg"] == pytest.approx(els.min()) and not p["sun_visible"]


def test_splits_are_disjoint_with_documented_proportions_and_held_out_family():
    n = 2000
    for f in TRAIN_FAMILIES:
        splits = [split_of(f, s) for s in range(n)]
        frac = {k: splits.count(k) / n for k in ("train", "val", "test")}
        assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["val"] - 0.1) < 0.02 and abs(frac["test"] - 0.1) < 0.02
    assert {split_of(HELD_OUT_FAMILY, s) for s in range(n)} == {"test"}
    ids = {s: {e.id for e in LightLibrary.generated(count=100, split=s).entries()} for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert all(len(v) == 100 * len(TRAIN_FAMILIES) + (100 if s == "test" else 0) for s, v in ids.items())
    assert not any(i.startswith(HELD_OUT_FAMILY) for i in ids["train"] | ids["val"])
    lib = LightLibrary.generated(count=50)
    assert len(lib) == 50 * len(FAMILIES) and {e.split for e in lib.entries()} == {"train", "val", "test"}
    assert all(e.split == split_of(e.family, e.seed) for e in lib.entries())
    gen = LightLibrary.from_spec("gen:7")
    assert len(gen) == 7 * len(TRAIN_FAMILIES) and {e.split for e in gen.entries()} == {"train"}
    assert {e.family for e in gen.entries()} == set(TRAIN_FAMILIES)


def test_split_guard_refuses_wrong_and_forged_splits():
    lib = LightLibrary.generated(count=40)
    train, test = lib.entries("train"), lib.entries("test")
    require_split(train, {"train"}, "training")                          # fine
    with pytest.raises(SplitError, match=rf"training: light map {test[0].id} is in the 'test' split"):
        require_split(train + test, {"train"}, "training")
    held = next(e for e in test if e.family == HELD_OUT_FAMILY)
    with pytest.raises(SplitError, match="held out of training"):
        require_split(held, {"train", "val"}, "training")
    with pytest.raises(SplitError, match=rf"evaluation: light map {train[0].id} is in the 'train' split"):
        require_split(train[0], {"test"}, "evaluation")
    forged = LightEntry("color-000003", "color", "train", 3)
    with pytest.raises(SplitError, match="recorded as 'train' but the split rule assigns 'test'"):
        require_split([forged], {"train"}, "training")
    assert issubclass(SplitError, ValueError)


def test_sample_and_load():
    lib = LightLibrary.generated(["sun", "studio"], count=10)
    a = lib.sample(np.random.default_rng(5), 4, "train")
    b = lib.sample(np.random.default_rng(5), 4, "train")
    assert a == b and len({e.id for e in a}) == 4 and all(e.split == "train" for e in a)
    env = lib.load(a[0], height=H)
    assert isinstance(env, EnvironmentMap) and env.name == a[0].id
    assert np.array_equal(env.image, generate(a[0].family, a[0].seed, H))


def _user_maps(folder, n=12):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        write_hdr_image(folder / f"map{i:02d}.hdr", rng.uniform(0, 2, (8, 16, 3)).astype(np.float32) * (i + 1))
    return sorted(folder.glob("*.hdr"))


def test_user_folder_is_split_by_content(tmp_path):
    files = _user_maps(tmp_path / "user")
    lib = LightLibrary.from_folder(tmp_path / "user")
    assert [e.id for e in lib.entries()] == [f"file-{p.stem}" for p in files]
    for e, p in zip(lib.entries(), files):
        u = int.from_bytes(hashlib.sha256(p.read_bytes()).digest()[:8], "big") / 2**64
        assert e.split == ("train" if u < 0.8 else "val" if u < 0.9 else "test") and e.family == "file"
    assert lib.entries() == LightLibrary.from_folder(tmp_path / "user").entries()   # deterministic
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(files[3], renamed / "zzz.hdr")
    assert LightLibrary.from_folder(renamed).entries()[0].split == lib.entries()[3].split
    env = lib.load(lib.entries()[2])
    assert env.name == "file-map02" and env.image.shape == (8, 16, 3)


def test_cli_writes_maps_manifest_and_preview(tmp_path, capsys):
    out, png = tmp_path / "lib", tmp_path / "preview.png"
    rc = cli_main(["make-light-library", "--out", str(out), "--families", "sun", "color", "--count", "3",
                   "--height", str(H), "--preview", str(png), "--no-progress"])
    assert rc == 0
    man = json.loads((out / "library.json").read_text())
    ids = [e["id"] for e in man["entries"]]
    assert ids == [f"{f}-{s:06d}" for f in ("sun", "color") for s in range(3)]
    for e in man["entries"]:
        env = EnvironmentMap.load(out / e["file"])
        ref = generate(e["family"], e["seed"], H)
        assert e["split"] == split_of(e["family"], e["seed"])
        assert (np.abs(env.image - ref).max(-1) <= 0.01 * ref.max(-1)).all()   # RGBE: shared exponent, 8-bit
        assert e["total_energy_luminance"] == pytest.approx(energy(ref), rel=0.01)
        assert e["peak"] == pytest.approx(float(env.image.max())) and e["peak"] < HALF_MAX
    assert man["splits"]["test"] >= 3                                       # all color maps
    prev = read_png(png)
    assert prev.shape[1] == 4 * 384 and prev.std() > 5
    # the folder is a library again, with the recorded splits
    again = LightLibrary.from_folder(out)
    assert [e.id for e in again.entries()] == ids and all(e.path is not None for e in again.entries())
    # train-only libraries hold no held-out maps
    assert cli_main(["make-light-library", "--out", str(tmp_path / "tr"), "--count", "2", "--height", str(H),
                     "--split", "train", "--no-progress"]) == 0
    tr = json.loads((tmp_path / "tr" / "library.json").read_text())
    assert len(tr["entries"]) == 2 * len(TRAIN_FAMILIES) and {e["split"] for e in tr["entries"]} == {"train"}


def test_cli_from_folder(tmp_path):
    files = _user_maps(tmp_path / "user", n=4)
    assert cli_main(["make-light-library", "--out", str(tmp_path / "o"), "--from-folder", str(tmp_path / "user"),
                     "--no-progress"]) == 0
    man = json.loads((tmp_path / "o" / "library.json").read_text())
    assert [e["split"] for e in man["entries"]] == [ll.file_split(p) for p in files]
    assert [e["source_sha256"] for e in man["entries"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "count must be a positive integer, got 0"),
    (["--families", "moon"], "unknown light family 'moon'"),
    (["--from-folder", "NOPE"], "no such light-library folder"),
    (["--families", "color", "--split", "train"], "held out of training"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    args = [a.replace("NOPE", str(tmp_path / "missing")) for a in args]
    rc = cli_main(["make-light-library", "--out", str(tmp_path / "o"), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and message in err and err.startswith("relit-hands make-light-library: error:")
    assert not (tmp_path / "o").exists()


def test_student_set_draws_train_maps_and_refuses_others(tmp_path):
    from relit_hands.tools.relight import StudentEnvironments, build_parser, make_student_set

    envs = StudentEnvironments(light_library="gen:3", per_pose=4)
    rng = np.random.default_rng(0)
    drawn = envs.for_pose(rng) + envs.for_pose(rng)
    for env_id, env in drawn:
        family, seed = env_id.rsplit("-", 1)
        assert family in TRAIN_FAMILIES and split_of(family, int(seed)) == "train" and env.name == env_id
        assert np.array_equal(env.image, generate(family, int(seed), ll.DEFAULT_HEIGHT))
    assert envs.describe()["light_library"]["train_maps"] == 3 * len(TRAIN_FAMILIES)
    assert StudentEnvironments().describe() == {"environments": EnvironmentMap.list_shipped()}  # unchanged default

    # a library folder whose manifest marks a held-out map as train is refused before any teacher work
    assert cli_main(["make-light-library", "--out", str(tmp_path / "lib"), "--families", "sun", "color",
                     "--count", "4", "--height", str(H), "--no-progress"]) == 0
    man_path = tmp_path / "lib" / "library.json"
    man = json.loads(man_path.read_text())
    next(e for e in man["entries"] if e["family"] == "color")["split"] = "train"
    man_path.write_text(json.dumps(man))
    with pytest.raises(SplitError, match=r"color-0000\d\d is recorded as 'train'"):
        make_student_set(tmp_path / "no_teacher", tmp_path / "set", light_library=str(tmp_path / "lib"))
    with pytest.raises(ValueError, match="either --envs or --light-library"):
        StudentEnvironments(envs=["studio"], light_library="gen:2")
    args = build_parser().parse_args(["--teacher", "t", "--out", "o", "--light-library", "gen:5",
                                      "--envs-per-pose", "3"])
    assert args.light_library == "gen:5" and args.envs_per_pose == 3
