"""Bad-input matrix (issue #18): every entry point, as a careless or hostile user would use it.

Each case generates its bad fixture in a fresh folder, snapshots every file there (bytes + mtime),
runs the command in-process (``relit_hands.tools.cli.main``) or the API call, and asserts:
the exit status (2 for bad input) or the error type (a ``ValueError`` subclass), ONE line of
message that names the input (argument or file), no traceback, no pre-existing file changed,
no new file left behind, and a bounded run time. A few cases need a subprocess (the viewer's
headless mode, a capped address space).

``test_matrix_totals`` prints the totals table for the README's reliability section.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from relit_hands.tools.cli import main

TIME_LIMIT_S = 60.0
POSE45 = [0.0] * 45


# ------------------------------------------------------------------------------------ fixtures

def _snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p.relative_to(folder))] = (p.read_bytes(), st.st_mtime_ns)
    return out


def _write_hdr_header(path: Path, w: int, h: int, payload: bytes = b"\x00" * 64):
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {h} +X {w}\n".encode() + payload)


def _exr(path: Path, img):
    from relit_hands.image_io import write_hdr_image

    write_hdr_image(path, np.asarray(img, np.float32))


def _student_file(path: Path, meta_edit=None, tensor_edit=None, raw_meta=None):
    """A real (tiny) student, then its metadata / tensors edited."""
    from safetensors.torch import save_file

    from relit_hands.student import META_KEY, StudentNet, model_meta

    model = StudentNet(4, base=4, levels=2, static_channels=2, resolution=16, feature_names=list("abcd"))
    meta = model_meta(model)
    if meta_edit:
        meta_edit(meta)
    tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(path), metadata={META_KEY: raw_meta if raw_meta is not None else json.dumps(meta)})
    return path


def _teacher_file(path: Path, config_edit=None, raw_meta=None):
    from safetensors.torch import save_file

    from relit_hands.tools.teacher import META_KEY, TeacherNet

    model = TeacherNet(resolution=8, latent_channels=2, pose_code=2, trunk_channels=4, head_channels=4)
    meta = {"format_version": 1, "config": dict(model.config)}
    if config_edit:
        config_edit(meta["config"])
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={META_KEY: raw_meta if raw_meta is not None else json.dumps(meta)})
    return path


def _capture(root: Path):
    from relit_hands.camera import Camera
    from relit_hands.tools.capture import CaptureWriter
    from relit_hands.environment import EnvironmentMap
    from relit_hands.scene import scene_preset

    w = CaptureWriter(root, name="bad", generator={"tool": "test"})
    w.add_camera("cam00", Camera.look_at((0, 0, 0.5), (0, 0, 0), width=8, height=8))
    w.add_light(0, (0.0, 1.0, 0.0), (1.0, 1.0, 1.0))
    w.add_environment("studio", EnvironmentMap.from_name_or_path("studio").source)
    w.add_frame("f0", "olat", "train", scene_preset("fist"), lights_on=[0])
    w.write()
    w.write_view("f0", "cam00", np.ones((8, 8, 3), np.float32), np.ones((8, 8), np.uint8))
    return root


def _edit_json(path: Path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _npz_bomb(path: Path, n_bytes: int = 200 * 1024 * 1024):
    """An npz whose 'pose' member inflates to ``n_bytes`` (stored compressed in ~200 KB)."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % (n_bytes // 8)
    header = header + " " * (64 - (len(header) + 11) % 64) + "\n"
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("pose.npy", "w", force_zip64=True) as f:
            f.write(head)
            chunk = b"\x00" * (1 << 20)
            for _ in range(n_bytes >> 20):
                f.write(chunk)


# --------------------------------------------------------------------------------- the cases
# Each case: (id, kind, build) with build(tmp) -> (argv | callable, needle); a callable must raise
# a ValueError whose message contains needle. Needles are argument names or file names.

CASES: list = []


def case(kind, cid, build):
    CASES.append((f"{kind}:{cid}", kind, build))


def _arg(cmd_argv, opt, value, needle=None):
    return lambda tmp: ([*cmd_argv, f"{opt}={value}"], needle or opt)


# --- CLI arguments ------------------------------------------------------------------------
BAD_FLOATS = ["nan", "inf", "-inf", "abc", "1e400", ""]
RENDER = ["render", "--shading", "pbr", "--size", "64x48", "--out", "o.png"]
for opt in ("--yaw", "--pitch", "--env-exposure", "--exposure"):
    for v in BAD_FLOATS:
        case("argument", f"render{opt}={v}", _arg(RENDER, opt, v))
for opt, v in (("--env-exposure", "200"), ("--exposure", "-200"), ("--yaw", "1e300"), ("--lights", "0"),
               ("--lights", "-1"), ("--lights", "100000"), ("--lights", "abc"), ("--lights", "64.5"),
               ("--size", "0x0"), ("--size", "10x10"), ("--size", "99999x10"), ("--size", "abc"),
               ("--size", "nanxnan"), ("--size", "64x48x3"), ("--tonemap", "bogus"), ("--shading", "bogus")):
    case("argument", f"render{opt}={v}", _arg(RENDER, opt, v))
CS = ["contact-sheet", "--scenes", "fist", "--tile", "32x32", "--out", "cs.png"]
for opt, v in (("--columns", "0"), ("--columns", "-1"), ("--columns", "abc"), ("--columns", "1000"),
               ("--yaw", "nan"), ("--tile", "0x0")):
    case("argument", f"contact-sheet{opt}={v}", _arg(CS, opt, v))
for v in ("studio@nan", "studio@inf", "studio@abc", "studio@1e400", "nosuch_env"):
    case("argument", f"contact-sheet--envs={v}", lambda tmp, v=v: ([*CS, "--envs", v], v.split("@")[0]))
FE = ["features", "--size", "64x48", "--out", "fe.png"]
for opt, v in (("--lights", "0"), ("--lights", "5000"), ("--tile", "0"), ("--tile", "-5"), ("--yaw", "nan"),
               ("--resolution", "100")):
    case("argument", f"features{opt}={v}", _arg(FE, opt, v))
VIEW = ["view", "--headless", "--frames", "2", "--size", "64x48", "--screenshot", "v.png"]
for opt, v in (("--render-scale", "nan"), ("--render-scale", "0"), ("--render-scale", "2"),
               ("--render-scale", "inf"), ("--max-fps", "nan"), ("--max-fps", "-1"), ("--frames", "-1"),
               ("--frames", "abc"), ("--size", "0x0"), ("--env", "nosuch_env"), ("--scene", "nosuch_scene")):
    needle = {"--env": "nosuch_env", "--scene": "nosuch_scene"}.get(opt, opt)
    case("argument", f"view{opt}={v}", _arg(VIEW, opt, v, needle))
BENCH = ["bench", "--shading", "pbr", "--size", "64x48", "--out", "b"]
for opt, v in (("--frames", "0"), ("--frames", "-1"), ("--frames", "abc"), ("--threads", "-1"), ("--threads", "0"),
               ("--warmup", "-1"), ("--lights", "0"), ("--resolution", "0"), ("--deg-per-frame", "nan"),
               ("--base", "0"), ("--levels", "99"), ("--json-name", "../x.json"), ("--json-name", "x.txt")):
    case("argument", f"bench{opt}={v}", _arg(BENCH, opt, v))
TT = ["train-teacher", "--capture", "cap", "--out", "run"]
for opt, v in (("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "abc"), ("--steps", "0"),
               ("--steps", "-1"), ("--resolution", "0"), ("--threads", "-1"), ("--cams", "0"),
               ("--latent-lr", "nan")):
    case("argument", f"train-teacher{opt}={v}", _arg(TT, opt, v))
TS = ["train-student", "--data", "set", "--out", "run"]
for opt, v in (("--lr", "nan"), ("--steps", "0"), ("--batch", "0"), ("--lr-min", "nan"),
               ("--weight-decay", "inf"), ("--base", "0"), ("--levels", "99"), ("--threads", "-1")):
    case("argument", f"train-student{opt}={v}", _arg(TS, opt, v))
for opt, v in (("--texture-size", "0"), ("--texture-size", "-1"), ("--texture-size", "99999"),
               ("--texture-size", "abc"), ("--scale", "nan"), ("--scale", "5"), ("--skin-tone", "nan"),
               ("--skin-tone", "2"), ("--seed", "-1")):
    case("argument", f"build-asset{opt}={v}", _arg(["build-asset", "--out", "asset"], opt, v))
for v in ("0", "-5", "99999", "abc"):
    case("argument", f"make-envs--height={v}", _arg(["make-envs", "--out", "envs"], "--height", v))


# --- pose / scene files ---------------------------------------------------------------------
def _pose_case(cid, content, name="pose.json", side="--pose-right"):
    def build(tmp):
        p = tmp / name
        if callable(content):
            content(p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return [*RENDER, side, str(p)], name
    case("pose-file", cid, build)


for cid, text in {
    "top-level-number": "5", "top-level-string": '"hello"', "top-level-list": "[1, 2, 3]",
    "top-level-null": "null", "hands-number": '{"hands": 5}', "hands-empty": '{"hands": []}',
    "hands-three": json.dumps({"hands": [{"pose": POSE45}] * 3}), "hands-of-numbers": '{"hands": [1, 2]}',
    "hands-of-empty": '{"hands": [{}, {}]}', "pose-object": '{"pose": {}}', "pose-string": '{"pose": "abc"}',
    "pose-null": '{"pose": null}', "pose-44": json.dumps({"pose": [0.0] * 44}),
    "pose-nested": json.dumps({"pose": [[0.0] * 45]}), "pose-strings": json.dumps({"pose": ["x"] * 45}),
    "pose-NaN-literal": '{"pose": [NaN' + ", 0" * 44 + "]}",
    "pose-overflow": '{"pose": [1e999' + ", 0" * 44 + "]}",
    "pose-huge-angle": json.dumps({"pose": [1e6] + [0.0] * 44}),
    "transl-huge": json.dumps({"pose": POSE45, "transl": [1e10, 0, 0]}),
    "global-orient-short": json.dumps({"pose": POSE45, "global_orient": [0, 0]}),
    "side-number": json.dumps({"pose": POSE45, "side": 5}),
    "deep-nesting": "[" * 100000 + "]" * 100000,
    "deep-in-pose": '{"pose": ' + "[" * 5000 + "]" * 5000 + "}",
    "invalid-json": '{"pose": [0, 0,',
    "empty": "",
}.items():
    _pose_case(cid, text)
_pose_case("binary", b"\x00\xff\xfe garbage \x89PNG")
_pose_case("not-utf8", b'{"pose": "\xff\xfe"}')
_pose_case("too-large", lambda p: p.write_text('{"pose": [' + "0," * (9 * 1024 * 1024) + "0]}"))
_pose_case("wrong-ext", json.dumps({"pose": POSE45}), name="pose.txt")
_pose_case("npz-corrupt", b"PK\x03\x04 not really a zip", name="pose.npz")
_pose_case("npz-wrong-shape", lambda p: np.savez(p, pose=np.zeros(7)), name="pose.npz")
_pose_case("npz-bomb", _npz_bomb, name="pose.npz")
_pose_case("scene-no-left", json.dumps({"hands": [{"side": "right", "pose": POSE45}]}), side="--pose-left")
case("pose-file", "missing", lambda tmp: ([*RENDER, "--pose-right", str(tmp / "nope.json")], "nope.json"))
case("pose-file", "directory", lambda tmp: ((tmp / "d.json").mkdir(), [*RENDER, "--pose-right", str(tmp / "d.json")])[1:]
     + ("d.json",))


# --- environment maps -------------------------------------------------------------------------
def _env_case(cid, make, name):
    def build(tmp):
        make(tmp / name)
        return [*RENDER, "--env", str(tmp / name)], name
    case("environment", cid, build)


_env_case("hdr-empty", lambda p: p.write_bytes(b""), "e.hdr")
_env_case("hdr-garbage", lambda p: p.write_bytes(b"this is not an image" * 10), "e.hdr")
_env_case("hdr-no-end-of-header", lambda p: p.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n"), "e.hdr")
_env_case("hdr-bad-resolution", lambda p: p.write_bytes(b"#?RADIANCE\n\n-Y abc +X 8\n" + b"\0" * 99), "e.hdr")
_env_case("hdr-huge-header", lambda p: _write_hdr_header(p, 200000, 100000, b"\x02\x02" * 300000), "e.hdr")
_env_case("hdr-truncated", lambda p: _write_hdr_header(p, 64, 32, b"\x02\x02\x00\x40"), "e.hdr")
_env_case("hdr-huge-radiance", lambda p: p.write_bytes(_rgbe_huge()), "e.hdr")
_env_case("exr-huge-radiance", lambda p: _exr(p, np.full((8, 16, 3), 1e30)), "e.exr")
_env_case("exr-not-2to1", lambda p: _exr(p, np.ones((8, 8, 3))), "e.exr")
_env_case("exr-1-row", lambda p: _exr(p, np.ones((1, 2, 3))), "e.exr")
_env_case("exr-garbage", lambda p: p.write_bytes(b"v/1\x01" + b"\xff" * 200), "e.exr")
_env_case("png-not-hdr", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "e.png")
_env_case("no-extension", lambda p: p.write_bytes(b"#?RADIANCE\n"), "envfile")
case("environment", "directory", lambda tmp: ((tmp / "d.hdr").mkdir(), [*RENDER, "--env", str(tmp / "d.hdr")])[1:]
     + ("d.hdr",))
case("environment", "unknown-name", lambda tmp: ([*RENDER, "--env", "nosuch_env"], "nosuch_env"))


def _rgbe_huge() -> bytes:
    """A 16x8 Radiance file whose pixels are 2^100 (finite in RGBE, ~1e30 as float)."""
    rows = b"".join(bytes([128, 128, 128, 128 + 101]) * 16 for _ in range(8))
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8 +X 16\n" + rows


# --- outputs (data loss) ----------------------------------------------------------------------
def _out_case(cid, build):
    case("output", cid, build)


def _pose_json(tmp, name="myhand.json"):
    (tmp / name).write_text(json.dumps({"side": "right", "pose": POSE45}))
    return tmp / name


_out_case("summary-is-pose-file", lambda tmp: (["render", "--pose-right", str(_pose_json(tmp)), "--shading", "pbr",
                                                "--size", "64x48", "--out", str(tmp / "myhand.png")], "myhand.json"))
_out_case("exr-is-env-input", lambda tmp: (_exr(tmp / "env.exr", np.ones((8, 16, 3))),
                                           [*RENDER, "--env", str(tmp / "env.exr"), "--exr", str(tmp / "env.exr")])[1:]
          + ("env.exr",))
_out_case("out-foreign-png", lambda tmp: ((tmp / "o.png").write_bytes(b"mine"), RENDER)[1:] + ("o.png",))
_out_case("summary-foreign-json", lambda tmp: ((tmp / "o.json").write_text('{"mine": 1}'), RENDER)[1:] + ("o.json",))
_out_case("exr-foreign", lambda tmp: ((tmp / "keep.exr").write_bytes(b"mine"),
                                      [*RENDER, "--exr", "keep.exr"])[1:] + ("keep.exr",))
_out_case("out-wrong-suffix", lambda tmp: (["render", "--out", "o.jpg"], "o.jpg"))
_out_case("exr-wrong-suffix", lambda tmp: ([*RENDER, "--exr", "o.tiff"], "o.tiff"))
_out_case("out-is-folder", lambda tmp: ((tmp / "f.png").mkdir(), [*RENDER[:-1], "f.png"])[1:] + ("f.png",))
_out_case("contact-sheet-foreign", lambda tmp: ((tmp / "cs.png").write_bytes(b"mine"), CS)[1:] + ("cs.png",))
_out_case("features-foreign-json", lambda tmp: ((tmp / "fe.json").write_text("[1]"), FE)[1:] + ("fe.json",))
_out_case("bench-foreign-json", lambda tmp: ((tmp / "b").mkdir(), (tmp / "b" / "bench.json").write_text("{}"),
                                             BENCH)[2:] + ("bench.json",))
_out_case("bench-out-is-file", lambda tmp: ((tmp / "b").write_text("x"), BENCH)[1:] + ("--out",))
_out_case("view-screenshot-foreign", lambda tmp: ((tmp / "v.png").write_bytes(b"mine"), VIEW)[1:] + ("v.png",))
_out_case("view-script-is-summary", lambda tmp: ((tmp / "v.json").write_text("[]"),
                                                 [*VIEW, "--script", "v.json"])[1:] + ("v.json",))



# --- outputs of the other writing commands (issue #18, second pass) -------------------------------
EG = ["export-gltf", "--lights", "32", "--out", "h.glb"]
CA_ASSET = str(Path(__file__).resolve().parents[1] / "models" / "hand")
CA = ["compare-assets", "--assets", CA_ASSET, "--size", "64", "--out", "ca.png"]
SM = ["seam-measure", "--scenes", "fist", "--envs", "studio", "--out", "sm.json"]
LL = ["make-light-library", "--out", "lib", "--families", "sun", "--count", "1", "--height", "16", "--no-progress"]
EVAL = ["eval", "--capture", "cap", "--renderer", "pbr", "--out", "ev", "--no-progress"]
MS = ["make-student-set", "--teacher", "t.safetensors", "--out", "ss", "--no-progress"]
LS = ["lightstage", "--preset", "tiny", "--out", "ls", "--quiet"]


def _write(path: Path, data="mine"):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _map(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    _exr(path, np.ones((8, 16, 3)))


def _marker(folder: Path, kind: str):
    return _write(folder / ".relit-hands.json", json.dumps({"written_by": "relit-hands", "kind": kind}))


def _pre(make, argv, needle):
    """A case whose fixture ``make(tmp)`` is written first; then ``argv`` is refused naming ``needle``."""
    return lambda tmp: (make(tmp), argv)[1:] + (needle,)


# single-file outputs: an existing file relit-hands did not write, an input, a wrong suffix
_out_case("export-gltf-foreign-glb", _pre(lambda t: _write(t / "h.glb", b"glTF mine"), EG, "h.glb"))
_out_case("export-gltf-foreign-json", _pre(lambda t: _write(t / "h.json", '{"mine": 1}'), EG, "h.json"))
_out_case("export-gltf-summary-is-pose", lambda tmp: (["export-gltf", "--pose-right", str(_pose_json(tmp)),
                                                       "--out", str(tmp / "myhand.glb")], "myhand.json"))
_out_case("export-gltf-wrong-suffix", lambda tmp: (["export-gltf", "--out", "h.png"], "h.png"))
_out_case("compare-assets-foreign-png", _pre(lambda t: _write(t / "ca.png", b"mine"), CA, "ca.png"))
_out_case("compare-assets-foreign-json", _pre(lambda t: _write(t / "ca.json", "[1]"), CA, "ca.json"))
_out_case("compare-assets-wrong-suffix", lambda tmp: ([*CA[:-1], "ca.jpg"], "ca.jpg"))
_out_case("seam-measure-foreign-json", _pre(lambda t: _write(t / "sm.json", '{"mine": 1}'), SM, "sm.json"))
_out_case("seam-measure-wrong-suffix", lambda tmp: ([*SM[:-1], "sm.txt"], "sm.txt"))
_out_case("light-library-preview-foreign", _pre(lambda t: _write(t / "p.png", b"mine"),
                                                [*LL, "--preview", "p.png"], "p.png"))
_out_case("light-library-preview-wrong-suffix", _pre(lambda t: _map(t / "maps" / "a.exr"),
                                                     ["make-light-library", "--out", "lib", "--from-folder", "maps",
                                                      "--preview", "maps/a.exr", "--no-progress"], "a.exr"))
# folder outputs: a non-empty folder relit-hands did not write, a folder of another kind, an input folder, a file
for cmd, argv, out in (("light-library", LL, "lib"), ("eval", EVAL, "ev"), ("make-student-set", MS, "ss"),
                       ("train-teacher", TT, "run"), ("train-student", TS, "run"), ("lightstage", LS, "ls")):
    _out_case(f"{cmd}-foreign-folder", _pre(lambda t, out=out: _write(t / out / "notes.txt"), argv, out))
    _out_case(f"{cmd}-other-kind", _pre(lambda t, out=out, cmd=cmd: _marker(
        t / out, "view" if cmd != "eval" else "train-student"), argv, out))
    _out_case(f"{cmd}-out-is-file", _pre(lambda t, out=out: _write(t / out), argv, out))
_out_case("light-library-out-is-input", _pre(lambda t: _map(t / "maps" / "a.exr"),
                                             ["make-light-library", "--out", "maps", "--from-folder", "maps",
                                              "--no-progress"], "maps"))
_out_case("eval-out-is-capture", _pre(lambda t: _write(t / "cap" / "capture.json", "{}"),
                                      [*EVAL[:-3], "--out", "cap", "--overwrite"], "cap"))
_out_case("make-student-set-out-is-teacher-folder", _pre(lambda t: _write(t / "tr" / "t.safetensors", b"x"),
                                                         ["make-student-set", "--teacher", "tr/t.safetensors",
                                                          "--out", "tr", "--overwrite"], "tr"))
_out_case("train-teacher-out-is-capture", _pre(lambda t: _write(t / "cap" / "capture.json", "{}"),
                                               ["train-teacher", "--capture", "cap", "--out", "cap", "--overwrite"],
                                               "cap"))
_out_case("train-student-out-is-data", _pre(lambda t: _write(t / "set" / "manifest.json", "{}"),
                                            ["train-student", "--data", "set", "--out", "set", "--overwrite"], "set"))
_out_case("train-student-run-is-teacher-run", _pre(lambda t: _marker(t / "run", "train-teacher"),
                                                   [*TS, "--resume"], "train-teacher"))

# bad numbers of those commands
for opt, v in (("--yaw", "nan"), ("--pitch", "abc"), ("--env-exposure", "inf"), ("--exposure", "200"),
               ("--lights", "0"), ("--resolution", "0"), ("--tonemap", "bogus")):
    case("argument", f"export-gltf{opt}={v}", _arg(EG, opt, v))
for opt, v in (("--size", "0"), ("--size", "abc")):
    case("argument", f"compare-assets{opt}={v}", _arg(CA, opt, v))
for opt, v in (("--band-px", "0"), ("--band-px", "abc")):
    case("argument", f"seam-measure{opt}={v}", _arg(SM, opt, v))
case("argument", "seam-measure--envs=studio@nan", lambda tmp: ([*SM[:-4], "--envs", "studio@nan", *SM[-2:]],
                                                               "studio@nan"))
for opt, v, needle in (("--height", "99999", "--height"), ("--height", "15", "--height"),
                       ("--count", "999999", "--count"), ("--first-seed", "-1", "--first-seed")):
    case("argument", f"make-light-library{opt}={v}", _arg(LL, opt, v, needle))
for opt, v in (("--peak", "nan"), ("--peak", "-1"), ("--grid-rows", "0"), ("--max-frames", "0")):
    case("argument", f"eval{opt}={v}", _arg(EVAL, opt, v))
for opt, v in (("--poses", "0"), ("--rotations", "-1"), ("--n-lights", "8"), ("--val-fraction", "nan"),
               ("--exclude-radius", "inf"), ("--feature-lights", "0")):
    case("argument", f"make-student-set{opt}={v}", _arg(MS, opt, v))
for opt, v in (("--spp", "0"), ("--views-per-frame", "0"), ("--noise-seed", "-1")):
    case("argument", f"lightstage{opt}={v}", _arg(LS, opt, v))


# --- weights and their metadata -----------------------------------------------------------------
def _load_student_call(path):
    from relit_hands.student import load_student

    return lambda: load_student(path)


def _st_case(cid, **kw):
    case("weights", f"student-{cid}", lambda tmp: (_load_student_call(_student_file(tmp / "s.safetensors", **kw)),
                                                   "s.safetensors"))


def _set(k, v):
    return lambda m: m.__setitem__(k, v)


_st_case("base-65536", meta_edit=_set("base", 65536))
_st_case("resolution-65536", meta_edit=_set("resolution", 65536))
_st_case("resolution-mismatch", meta_edit=_set("resolution", 32))
_st_case("levels-100", meta_edit=_set("levels", 100))
_st_case("in-channels-string", meta_edit=_set("in_channels", "4"))
_st_case("static-negative", meta_edit=_set("static_channels", -1))
_st_case("variant-bogus", meta_edit=_set("variant", "bogus"))
_st_case("version-string", meta_edit=_set("format_version", "x"))
_st_case("meta-number", raw_meta="5")
_st_case("meta-not-json", raw_meta="{oops")
_st_case("meta-deep", raw_meta="[" * 10000 + "]" * 10000)
_st_case("nan-weights", tensor_edit=lambda t: t["enc0.weight"].fill_(float("nan")))
_st_case("missing-tensor", tensor_edit=lambda t: t.pop("enc0.weight"))
case("weights", "student-garbage", lambda tmp: ((tmp / "s.safetensors").write_bytes(b"\x10" * 64),
                                                _load_student_call(tmp / "s.safetensors"))[1:] + ("s.safetensors",))
case("weights", "student-empty", lambda tmp: ((tmp / "s.safetensors").write_bytes(b""),
                                              _load_student_call(tmp / "s.safetensors"))[1:] + ("s.safetensors",))
case("weights", "student-cli-huge-base", lambda tmp: (
    ["render", "--size", "64x48", "--lights", "32", "--out", "o.png", "--student",
     str(_student_file(tmp / "s.safetensors", meta_edit=_set("base", 65536)))], "s.safetensors"))


def _load_teacher_call(path):
    from relit_hands.tools.teacher import load_teacher

    return lambda: load_teacher(path)


def _te_case(cid, **kw):
    case("weights", f"teacher-{cid}", lambda tmp: (_load_teacher_call(_teacher_file(tmp / "t.safetensors", **kw)),
                                                   "t.safetensors"))


_te_case("resolution-65536", config_edit=_set("resolution", 65536))
_te_case("unknown-key", config_edit=_set("evil", 1))
_te_case("channels-string", config_edit=_set("trunk_channels", "32"))
_te_case("d-ref-nan", raw_meta='{"format_version": 1, "config": {"d_ref": NaN}}')
_te_case("config-missing", raw_meta='{"format_version": 1}')
_te_case("meta-list", raw_meta="[1, 2]")
_te_case("resolution-mismatch", config_edit=_set("resolution", 16))


# --- captures ------------------------------------------------------------------------------------
def _cap_case(cid, edit, needle, cli=False):
    def build(tmp):
        root = _capture(tmp / "cap")
        edit(root)
        if cli:
            return [*TT, "--steps", "1"], needle
        from relit_hands.tools.capture import Capture

        return (lambda: Capture.load(root)), needle
    case("capture", cid, build)


def _escape_link(root):
    outside = root.parent / "secret.exr"
    _exr(outside, np.ones((8, 8, 3)))
    img = root / "images" / "f0" / "cam00.exr"
    img.unlink()
    img.symlink_to(outside)


_cap_case("symlink-escapes", _escape_link, "cam00.exr")
_cap_case("symlink-escapes-cli", _escape_link, "cam00.exr", cli=True)
_cap_case("dotdot-path", lambda r: _edit_json(r / "frames.json", lambda d: d["frames"][0]["images"].update(
    cam00="../../x.exr")), "x.exr")
_cap_case("absolute-path", lambda r: _edit_json(r / "frames.json", lambda d: d["frames"][0]["images"].update(
    cam00="/etc/passwd")), "/etc/passwd")
_cap_case("capture-json-number", lambda r: (r / "capture.json").write_text("5"), "capture.json")
_cap_case("frames-deep", lambda r: (r / "frames.json").write_text("[" * 100000 + "]" * 100000), "frames.json")
_cap_case("frames-not-json", lambda r: (r / "frames.json").write_text("{"), "frames.json")
_cap_case("capture-missing-cli", lambda r: (r / "capture.json").unlink(), "capture.json", cli=True)
case("capture", "folder-missing-cli", lambda tmp: (TT, "cap"))


# --- viewer scripts ---------------------------------------------------------------------------------
def _script_case(cid, content, needle="s.json"):
    def build(tmp):
        (tmp / "s.json").write_text(content)
        return [*VIEW, "--script", str(tmp / "s.json")], needle
    case("script", cid, build)


_script_case("number", "5")
_script_case("object-without-actions", '{"x": 1}')
_script_case("actions-not-objects", "[1, 2]")
_script_case("action-without-name", '[{"n": 1}]')
_script_case("deep", "[" * 100000 + "]" * 100000)
_script_case("invalid", "[{")
case("script", "missing", lambda tmp: ([*VIEW, "--script", str(tmp / "none.json")], "none.json"))


def _player_call(tmp, actions):
    from relit_hands.viewer.script import ScriptPlayer

    class _App:  # the parts of ViewerApp a path-taking action touches before any rendering
        errors: list = []

        def report(self, msg, error=False):
            self.errors.append(msg)

        def open_env(self, path):
            raise AssertionError(f"open_env reached with {path}")

    def call():
        sp = ScriptPlayer(_App(), actions, tmp / "scripts", confine=True)
        while not sp.finished:
            sp.step()
        bad = [r for r in sp.results if r["status"] != "ok"]
        if bad:
            raise ValueError(bad[0]["message"])
    return call


def _escape_script(tmp):
    (tmp / "scripts").mkdir()
    (tmp / "scripts" / "link").symlink_to(tmp)
    return _player_call(tmp, [{"action": "open_env", "path": "link/x.hdr"}]), "link/x.hdr"


case("script", "path-absolute", lambda tmp: ((tmp / "scripts").mkdir(),
                                             _player_call(tmp, [{"action": "open_env", "path": "/etc/x.hdr"}]))[1:]
     + ("/etc/x.hdr",))
case("script", "path-symlink-escape", _escape_script)
case("script", "wait-frames-huge", lambda tmp: (_player_call(tmp, [{"action": "wait_frames", "n": 10 ** 12}]),
                                                "wait_frames"))


# --- API calls ----------------------------------------------------------------------------------------
def _api(cid, fn, needle):
    case("api", cid, lambda tmp: (fn, needle))


def _env_map():
    from relit_hands.environment import EnvironmentMap

    return EnvironmentMap.from_name_or_path("studio")


_api("rotate-nan", lambda: _env_map().rotate(float("nan")), "yaw")
_api("rotate-inf-pitch", lambda: _env_map().rotate(0.0, float("inf")), "pitch")
_api("exposure-200", lambda: _env_map().with_exposure(200), "exposure")
_api("exposure-nan", lambda: _env_map().with_exposure(float("nan")), "exposure")
_api("exposure-string", lambda: _env_map().with_exposure("x"), "exposure")
_api("env-huge-array", lambda: __import__("relit_hands.environment", fromlist=["x"]).EnvironmentMap(
    np.full((4, 8, 3), 1e20, np.float32), "big"), "big")
_api("handstate-nan", lambda: __import__("relit_hands.scene", fromlist=["x"]).HandState(
    "right", [float("nan")] + [0.0] * 44), "pose")
_api("handstate-side", lambda: __import__("relit_hands.scene", fromlist=["x"]).HandState("middle", POSE45), "side")
_api("handstate-pose-dict", lambda: __import__("relit_hands.scene", fromlist=["x"]).HandState("right", {}), "pose")
_api("scene-preset-unknown", lambda: __import__("relit_hands.scene", fromlist=["x"]).scene_preset("nope"), "nope")
_api("check-finite-image", lambda: __import__("relit_hands.validation", fromlist=["x"]).check_finite_image(
    np.full((2, 2, 3), np.nan, np.float32), "frame.png"), "frame.png")
_api("number-nan", lambda: __import__("relit_hands.validation", fromlist=["x"]).check_number(
    float("nan"), "exposure_ev"), "exposure_ev")


# ------------------------------------------------------------------------------------------ running

def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line of message, got {len(lines)}:\n{text[-2000:]}"
    return lines[0]


RESULTS: Counter = Counter()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cid, kind, build", CASES, ids=[c[0] for c in CASES])
def test_bad_input(cid, kind, build, tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    what, needle = build(work)
    before = _snapshot(work)
    capsys.readouterr()
    t0 = time.perf_counter()
    if callable(what):
        with pytest.raises(ValueError) as ei:
            what()
        msg = str(ei.value)
        assert "\n" not in msg.strip(), msg
        rc = 2
    else:
        try:
            rc = main(list(what))
        except SystemExit as e:  # argparse
            rc = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        msg = _one_line(err)
        assert "internal error" not in msg, msg
        assert rc == 2, (rc, msg)
    assert time.perf_counter() - t0 < TIME_LIMIT_S, "case ran too long"
    assert needle.lower() in msg.lower(), f"message does not name {needle!r}: {msg}"
    after = _snapshot(work)
    changed = [k for k in before if k not in after or after[k] != before[k]]
    assert not changed, f"pre-existing files changed or lost: {changed}"
    new = sorted(set(after) - set(before))
    assert not new, f"files left behind: {new}"
    RESULTS[kind] += 1


# ------------------------------------------------------------------------------ subprocess cases

MEMCAP = 3 * 1024 ** 3  # address-space cap for loading any bad input (baseline torch import ~1.5 GB)

_CAPPED = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    kind, path = sys.argv[1], sys.argv[2]
    try:
        if kind == "student":
            from relit_hands.student import load_student; load_student(path)
        elif kind == "teacher":
            from relit_hands.tools.teacher import load_teacher; load_teacher(path)
        elif kind == "env":
            from relit_hands.environment import EnvironmentMap; EnvironmentMap.load(path)
        elif kind == "pose":
            from relit_hands.scene import load_hand_file; load_hand_file(path)
    except MemoryError:
        print("MEMORY ERROR"); sys.exit(3)
    except ValueError as e:
        print("REFUSED", e); sys.exit(2)
    print("LOADED"); sys.exit(0)
""")


def _exr_huge_window(path: Path):
    """A valid EXR header claiming a 100000 x 100000 data window, with no pixel data behind it."""
    _exr(path, np.ones((2, 4, 3)))
    data = bytearray(path.read_bytes())
    i = data.index(b"dataWindow\x00box2i\x00") + len(b"dataWindow\x00box2i\x00") + 4
    data[i:i + 16] = struct.pack("<iiii", 0, 0, 99999, 99999)
    j = data.index(b"displayWindow\x00box2i\x00") + len(b"displayWindow\x00box2i\x00") + 4
    data[j:j + 16] = struct.pack("<iiii", 0, 0, 99999, 99999)
    path.write_bytes(bytes(data))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind, name, make", [
    ("student", "s.safetensors", lambda p: _student_file(p, meta_edit=_set("resolution", 65536))),
    ("student", "s.safetensors", lambda p: _student_file(p, meta_edit=_set("base", 65536))),
    ("teacher", "t.safetensors", lambda p: _teacher_file(p, config_edit=_set("resolution", 65536))),
    ("env", "e.hdr", lambda p: _write_hdr_header(p, 200000, 100000, b"\x02\x02" * 300000)),
    ("env", "e.exr", _exr_huge_window),
    ("pose", "p.npz", _npz_bomb),
], ids=["student-resolution", "student-base", "teacher-resolution", "hdr-header", "exr-window", "npz-bomb"])
def test_memory_cap(kind, name, make, tmp_path):
    """No input file or metadata makes loading allocate past the cap: refused with a message."""
    path = tmp_path / name
    make(path)
    r = subprocess.run([sys.executable, "-c", _CAPPED.format(cap=MEMCAP), kind, str(path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 2 and "REFUSED" in r.stdout and name in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])
    RESULTS["memory-cap"] += 1


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "relit_hands.tools.cli", *args], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


@pytest.mark.timeout(300)
def test_viewer_script_escape_exits_nonzero(tmp_path):
    """A headless viewer script whose screenshot path leaves its folder: refused, exit 2, nothing written."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.json").write_text(json.dumps(
        [{"action": "wait_frames", "n": 1}, {"action": "screenshot", "path": str(tmp_path / "evil.png")}]))
    before = _snapshot(tmp_path)
    r = _cli("view", "--headless", "--script", str(tmp_path / "s" / "a.json"), "--frames", "1", "--size", "160x100",
             "--screenshot", str(tmp_path / "s" / "shot.png"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert "evil.png" in last and "a.json" in last, last
    assert not (tmp_path / "evil.png").exists()
    after = _snapshot(tmp_path)
    assert all(after[k] == v for k, v in before.items())
    RESULTS["script"] += 1


# ------------------------------------------------------------------------------ behaviours, not cases

def test_rerun_replaces_own_outputs_and_overwrite_flag(tmp_path, monkeypatch, capsys):
    """Outputs: a rerun replaces the files relit-hands wrote; a foreign file needs --overwrite; a
    failing --exr leaves no PNG/JSON behind (everything is moved into place together)."""
    monkeypatch.chdir(tmp_path)
    argv = ["render", "--shading", "pbr", "--size", "64x48", "--out", "o.png"]
    assert main(argv) == 0
    assert main(argv) == 0  # our own files: replaced without --overwrite
    (tmp_path / "f.png").write_bytes(b"mine")
    assert main([*argv[:-1], "f.png"]) == 2
    assert (tmp_path / "f.png").read_bytes() == b"mine"
    assert main([*argv[:-1], "f.png", "--overwrite"]) == 0
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "blocker").write_text("a file, not a folder")
    capsys.readouterr()
    assert main([*argv[:-1], "g.png", "--exr", "blocker/g.exr"]) == 2
    assert "blocker" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "g.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_folder_outputs_rerun_resume_and_overwrite(tmp_path, monkeypatch, capsys):
    """Folder outputs (make-light-library here; eval, make-student-set, train-*, lightstage share
    OutputFolder): a rerun into the command's own folder works (marker or, for folders written
    before the marker, the tool's manifest), a foreign non-empty folder / preview needs --overwrite,
    which never deletes the foreign files; no temporary file is left behind."""
    from relit_hands.validation import FOLDER_MARKER, OutputError, OutputFolder, write_atomic

    monkeypatch.chdir(tmp_path)
    argv = ["make-light-library", "--out", "lib", "--families", "sun", "--count", "1", "--height", "16",
            "--no-progress", "--preview", "lib/preview.png"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "lib" / FOLDER_MARKER).read_text())["kind"] == "make-light-library"
    first = (tmp_path / "lib" / "library.json").read_bytes()
    assert main(argv) == 0  # our own folder and preview: replaced without --overwrite
    (tmp_path / "lib" / FOLDER_MARKER).unlink()  # a library written before the marker existed
    assert main(argv) == 0 and (tmp_path / "lib" / "library.json").read_bytes() != b""
    assert json.loads(first)["written_by"] == "relit-hands"
    (tmp_path / "p.png").write_bytes(b"mine")
    assert main([*argv[:-1], "p.png"]) == 2
    assert (tmp_path / "p.png").read_bytes() == b"mine"
    assert main([*argv[:-1], "p.png", "--overwrite"]) == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main([*argv[:2], "theirs", *argv[3:-2]]) == 2
    assert "theirs" in _one_line(capsys.readouterr().err) and sorted(os.listdir("theirs")) == ["notes.txt"]
    assert main([*argv[:2], "theirs", *argv[3:-2], "--overwrite"]) == 0
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep" and (tmp_path / "theirs" / "library.json").is_file()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]

    # the rules, directly: resume of the same kind, another kind refused even with overwrite, inputs never
    run = tmp_path / "run"
    OutputFolder(run, "train-student").write_text("train_log.csv", "step\n")
    OutputFolder(run, "train-student")  # resume: accepted
    with pytest.raises(OutputError, match="train-student output, not train-teacher"):
        OutputFolder(run, "train-teacher", overwrite=True)
    with pytest.raises(OutputError, match="input"):
        OutputFolder(tmp_path / "theirs", "eval", overwrite=True, inputs=[tmp_path / "theirs"])
    with pytest.raises(RuntimeError):
        write_atomic(run / "x.json", lambda p: (p.write_text("half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert not (run / "x.json").exists() and not [p for p in run.iterdir() if ".tmp" in p.name]


def test_engine_recovers_after_failed_frames():
    from relit_hands import Engine, EnvironmentMap, scene_preset
    from relit_hands.camera import Camera
    from relit_hands.validation import ArgumentError

    e = Engine()
    try:
        scene, env = scene_preset("fist"), EnvironmentMap.from_name_or_path("studio")
        with pytest.raises(ArgumentError, match="width"):
            e.render(scene, env, width=10 ** 6, height=48)
        with pytest.raises(ArgumentError, match="exposure_ev"):
            e.render(scene, env, width=64, height=48, exposure_ev=float("nan"))
        huge = Camera.look_at((0, 0, 0.5), (0, 0, 0), width=60000, height=60000)
        with pytest.raises(Exception):
            e.render(scene, env, huge)
        f = e.render(scene, env, width=64, height=48)
        assert f.image.shape == (48, 64, 3) and f.image.max() > 0
    finally:
        e.release()


def test_uv_cache_rebuilds_corrupt_entries(tmp_path, monkeypatch):
    from relit_hands.uv_maps import UVRasterizer
    from synthetic import synthetic_uv_sphere

    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path))
    mesh = synthetic_uv_sphere()
    verts, faces, uvs, uv_faces = mesh[:4] if isinstance(mesh, tuple) else (
        mesh["vertices"], mesh["faces"], mesh["uvs"], mesh["uv_faces"])
    a = UVRasterizer(uvs, uv_faces, 32, faces=faces)
    entry = a.cache_path
    assert entry.is_file()
    for corrupt in (lambda p: p.write_bytes(b"garbage"),
                    lambda p: np.savez(p, tri=np.full((32, 32), 10 ** 6, np.int32), bary=np.zeros((32, 32, 3)),
                                       mask=np.zeros((32, 32), bool))):
        corrupt(entry)
        b = UVRasterizer(uvs, uv_faces, 32, faces=faces)
        assert not b.loaded_from_cache
        np.testing.assert_array_equal(a.tri, b.tri)
        c = UVRasterizer(uvs, uv_faces, 32, faces=faces)  # the rewritten entry is good again
        assert c.loaded_from_cache


def test_onnx_cache_rebuilds_corrupt_export(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from relit_hands.inference import make_backend, student_cache_dir

    monkeypatch.setenv("RELIT_HANDS_CACHE", str(tmp_path / "cache"))
    path = _student_file(tmp_path / "s.safetensors")
    be = make_backend("onnxruntime", path)
    exports = list(student_cache_dir().glob("student_*.onnx"))
    assert len(exports) == 1
    exports[0].write_bytes(b"truncated")  # a corrupt cache entry
    be2 = make_backend("onnxruntime", path)
    assert be2.onnx_path == be.onnx_path and exports[0].stat().st_size > 1000


def test_training_stops_on_non_finite_loss(tmp_path, monkeypatch, capsys):
    """train-teacher: a NaN loss stops the run with one line (exit 2) and no weights file."""
    from relit_hands.tools import teacher_training

    monkeypatch.chdir(tmp_path)
    _capture(tmp_path / "cap")
    orig = teacher_training.teacher_loss
    monkeypatch.setattr(teacher_training, "teacher_loss", lambda *a, **k: orig(*a, **k) * float("nan"))
    threads = __import__("torch").get_num_threads()
    try:
        rc = main(["train-teacher", "--capture", "cap", "--out", "run", "--steps", "3", "--resolution", "16",
                   "--no-progress", "--threads", str(threads), "--val-every", "1000"])
    finally:
        __import__("torch").set_num_threads(threads)
    msg = _one_line(capsys.readouterr().err)
    assert rc == 2 and "loss became nan" in msg and "--lr" in msg, msg
    assert not list((tmp_path / "run").rglob("*.safetensors"))


def test_matrix_totals(capsys):
    """Prints the totals table (run with -s after the matrix; counts only what passed in this run)."""
    kinds = Counter(k for _, k, _ in CASES)
    kinds["memory-cap"] += 6
    kinds["script"] += 1
    assert sum(kinds.values()) >= 150
    with capsys.disabled():
        print("\n| kind | cases | passed in this run |\n|---|---|---|")
        for k in sorted(kinds):
            print(f"| {k} | {kinds[k]} | {RESULTS.get(k, 0)} |")
        print(f"| total | {sum(kinds.values())} | {sum(RESULTS.values())} |")
