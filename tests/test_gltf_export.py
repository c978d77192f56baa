"""glTF export: the .glb read back by an independent reader (trimesh) holds the engine's posed
render meshes (one vertex per distinct position/UV corner), the atlas UVs and the student's
textures tone mapped exactly like the frames; the CLI writes it and refuses bad input."""
import json
import struct
from dataclasses import replace

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from relit_hands.gltf_export import export_gltf  # noqa: E402
from relit_hands.scene import scene_preset  # noqa: E402
from relit_hands.tools.cli import main  # noqa: E402


def aces_srgb8(x):
    """Reference: ACES (Narkowicz) + sRGB OETF -> uint8, as documented for the compositor."""
    x = np.maximum(x.astype(np.float64), 0.0)
    c = np.clip(x * (2.51 * x + 0.03) / (x * (2.43 * x + 0.59) + 0.14), 0.0, 1.0)
    s = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.rint(np.clip(s, 0, 1) * 255).astype(np.uint8)


def glb_json(path) -> dict:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    n, kind = struct.unpack_from("<I4s", data, 12)
    assert (magic, version, length, kind) == (b"glTF", 2, len(data), b"JSON")
    return json.loads(data[20:20 + n])


@pytest.fixture(scope="module")
def exported(engine, env, tmp_path_factory):
    scene = scene_preset("clasp")
    sf = engine.render_student(scene, env, engine.default_camera(scene, 160, 120), n_lights=32, readback="none")
    path = tmp_path_factory.mktemp("gltf") / "hands.glb"
    info = export_gltf(path, engine, scene, sf)
    return scene, sf, path, info


def test_glb_holds_the_posed_meshes_and_textures(engine, exported):
    scene, sf, path, info = exported
    glb = trimesh.load(path, process=False)
    nodes = {n: glb.graph[n][1] for n in glb.graph.nodes_geometry}
    assert nodes == {"right": "right_hand", "left": "left_hand"}
    posed = engine.pose(scene)
    R = sf.resolution
    for side, geom in nodes.items():
        mesh = glb.geometry[geom]
        asset = engine.models[side].asset
        faces, uv_faces = np.asarray(asset.render_faces), np.asarray(asset.render_uv_faces)
        # one glTF vertex per distinct (position, UV) corner: the render mesh plus its UV-seam copies
        n_expected = len(np.unique(np.stack([faces.ravel(), uv_faces.ravel()], 1), axis=0))
        assert len(mesh.vertices) == n_expected == info["hands"][side]["vertices"]
        assert n_expected > len(asset.render_vertices)
        assert len(mesh.faces) == len(faces) == info["hands"][side]["faces"]
        # face by face, the corners are the engine's posed vertices (exactly) and the atlas UVs
        verts = posed[side].render_vertices[0].numpy()
        np.testing.assert_array_equal(mesh.vertices[mesh.faces], verts[faces].astype(np.float64))
        uv = np.asarray(mesh.visual.uv)  # trimesh flips v on import (its v = 0 is the bottom row)
        uv_ref = np.asarray(asset.render_uvs, np.float64)[uv_faces]
        np.testing.assert_allclose(uv[mesh.faces][..., 0], uv_ref[..., 0], atol=1e-6)
        np.testing.assert_allclose(1.0 - uv[mesh.faces][..., 1], uv_ref[..., 1], atol=1e-6)
        # base colour: the student's texture, exposure 0, ACES, sRGB; row 0 = v 0
        tex = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
        assert tex.shape == (R, R, 3) and info["hands"][side]["texture"] == [R, R]
        assert np.abs(tex.astype(int) - aces_srgb8(sf.textures[side]).astype(int)).max() <= 1
    doc = glb_json(path)
    assert doc["extensionsUsed"] == ["KHR_materials_unlit"]
    assert all("KHR_materials_unlit" in m["extensions"] for m in doc["materials"])
    for mesh in doc["meshes"]:
        normals = doc["accessors"][mesh["primitives"][0]["attributes"]["NORMAL"]]
        assert normals["type"] == "VEC3" and normals["componentType"] == 5126


def test_lit_material_and_errors(engine, exported, tmp_path):
    scene, sf, _, _ = exported
    path = tmp_path / "lit.glb"
    export_gltf(path, engine, scene, sf, unlit=False, exposure_ev=1.0)
    doc = glb_json(path)
    assert "extensionsUsed" not in doc and not any("extensions" in m for m in doc["materials"])
    with pytest.raises(ValueError, match="no texture for the scene's left hand"):
        export_gltf(tmp_path / "x.glb", engine, scene, replace(sf, textures={"right": sf.textures["right"]}))


def test_non_finite_texture_is_an_error_and_nothing_is_written(engine, exported, tmp_path):
    from relit_hands.validation import NonFiniteError

    scene, sf, _, _ = exported
    bad = {k: np.array(v if isinstance(v, np.ndarray) else v.detach().cpu().numpy(), np.float32, copy=True)
           for k, v in sf.textures.items()}
    bad["right"][0, 0, 0] = np.nan
    path = tmp_path / "nan.glb"
    with pytest.raises(NonFiniteError, match="nan.glb.*right-hand texture"):
        export_gltf(path, engine, scene, replace(sf, textures=bad))
    assert list(tmp_path.iterdir()) == []


def test_cli_export_gltf(tmp_path, capsys):
    out = tmp_path / "out" / "hands.glb"
    assert main(["export-gltf", "--scene", "flat", "--env", "studio", "--yaw", "30", "--lights", "32",
                 "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["output"] == str(out) and set(summary["hands"]) == {"right"}
    assert summary["hands"]["right"]["texture"] == [summary["student"]["resolution"]] * 2
    glb = trimesh.load(out, process=False)
    assert list(glb.geometry) == ["right_hand"]
    assert "wrote" in capsys.readouterr().out
    # re-running over its own outputs replaces them; a file relit-hands did not write needs --overwrite
    argv = ["export-gltf", "--scene", "flat", "--lights", "32", "--out", str(out)]
    assert main(argv) == 0
    foreign = tmp_path / "out" / "mine.glb"
    foreign.write_bytes(b"mine")
    assert main([*argv[:-1], str(foreign)]) == 2
    assert foreign.read_bytes() == b"mine" and not (tmp_path / "out" / "mine.json").exists()
    assert main([*argv[:-1], str(foreign), "--overwrite"]) == 0
    assert foreign.read_bytes()[:4] == b"glTF"
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_cli_bad_input_exits_2(tmp_path, capsys):
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"side": "right", "pose": [0.0] * 45, "global_orient": [0, 0, 0], "transl": [0, 0, 0]}))
    before = pose.read_bytes()
    cases = [
        (["--scene", "no_such_preset"], "no_such_preset"),
        (["--out", str(tmp_path / "hands.png")], ".glb"),
        (["--pose-right", str(pose), "--out", str(tmp_path / "pose.glb")], "is also an input"),
        (["--env", str(tmp_path / "missing.hdr")], "missing.hdr"),
        (["--resolution", "64", "--lights", "32", "--out", str(tmp_path / "r.glb")], "resolution"),
    ]
    for extra, needle in cases:
        assert main(["export-gltf", *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (extra, err)
    assert pose.read_bytes() == before
