"""The shipped procedural hand assets (v1: models/hand, v2: models/hand_v2): topology, shared
UV atlas, weights, textures."""
from importlib import resources

import numpy as np
import pytest
import trimesh
from PIL import Image

MODELS = resources.files("relit_hands.models")


@pytest.fixture(scope="module", params=["hand", "hand_v2"])
def hand_dir(request):
    return MODELS / request.param


@pytest.fixture(scope="module")
def asset(hand_dir):
    with np.load(str(hand_dir / "right_hand.npz"), allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def test_sizes_in_spec(asset):
    assert 8_000 <= len(asset["render_vertices"]) <= 30_000
    assert 500 <= len(asset["proxy_vertices"]) <= 1_500
    assert asset["render_faces"].shape == asset["render_uv_faces"].shape
    assert asset["proxy_faces"].shape == asset["proxy_uv_faces"].shape


@pytest.mark.parametrize("which", ["render", "proxy"])
def test_meshes_are_closed_and_outward(asset, which):
    mesh = trimesh.Trimesh(asset[f"{which}_vertices"], asset[f"{which}_faces"], process=False)
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0  # CCW = outward
    assert mesh.euler_number == 2  # one closed genus-0 surface
    # hand volume of an adult hand + wrist stub (v1) or forearm section (v2): a few hundred cm^3
    assert 200e-6 < mesh.volume < 800e-6


def test_render_mesh_lies_on_proxy_surface(asset):
    proxy = trimesh.Trimesh(asset["proxy_vertices"], asset["proxy_faces"], process=False)
    _, dist, _ = trimesh.proximity.closest_point(proxy, asset["render_vertices"])
    assert dist.max() < 3e-3


def test_render_uvs_refine_the_proxy_atlas(asset):
    """Every render face corner's UV lies inside its parent proxy face's UV triangle."""
    parent = asset["render_face_parent"]
    tri = asset["proxy_uvs"][asset["proxy_uv_faces"][parent]]  # [Fr,3,2]
    corners = asset["render_uvs"][asset["render_uv_faces"]]  # [Fr,3,2]
    # distance of each corner outside its parent triangle, along the edges' normals (well
    # conditioned even for thin triangles): below 1e-3 texel at 1024 (float32 UV rounding)
    def cross2(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    tri, corners = tri.astype(np.float64), corners.astype(np.float64)
    orient = np.sign(cross2(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))[:, None]
    outside = np.zeros(corners.shape[:2])
    for k in range(3):
        p, q = tri[:, k, None], tri[:, (k + 1) % 3, None]
        edge = q - p
        signed = orient * cross2(edge, corners - p) / np.linalg.norm(edge, axis=-1)
        outside = np.maximum(outside, -signed)
    assert outside.max() * 1024 < 1e-3
    # and the same barycentrics place the (unprojected) positions on the parent proxy face
    face, w = asset["render_proxy_face"], asset["render_proxy_bary"]
    assert np.allclose(w.sum(1), 1, atol=1e-5) and w.min() > -1e-5
    on_proxy = np.einsum("nk,nkd->nd", w, asset["proxy_vertices"][asset["proxy_faces"][face]])
    # projecting onto the smooth surface moved each render vertex by well under the 3 mm budget
    assert np.linalg.norm(on_proxy - asset["render_vertices"], axis=1).max() < 3e-3


def test_uv_atlas_has_no_overlaps(asset):
    """Texel centres covered by more than one proxy UV triangle (interiors) must not exist."""
    R = 512
    uv = asset["proxy_uvs"] * R
    count = np.zeros((R, R), np.int32)
    for f in asset["proxy_uv_faces"]:
        p = uv[f]
        lo = np.floor(p.min(0)).astype(int)
        hi = np.ceil(p.max(0)).astype(int)
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0]) + 0.5, np.arange(lo[1], hi[1]) + 0.5)
        q = np.stack([xs.ravel(), ys.ravel()], 1)
        d = [(p[(k + 1) % 3, 0] - p[k, 0]) * (q[:, 1] - p[k, 1]) - (p[(k + 1) % 3, 1] - p[k, 1]) * (q[:, 0] - p[k, 0])
             for k in range(3)]
        d = np.stack(d, 1)
        inside = (d > 1e-6).all(1) | (d < -1e-6).all(1)  # strictly inside, either orientation
        cols, rows = xs.ravel()[inside].astype(int), ys.ravel()[inside].astype(int)
        np.add.at(count, (rows, cols), 1)
    assert count.max() == 1
    assert 0.2 < (count > 0).mean() < 0.95  # a reasonably packed atlas
    assert asset["proxy_uvs"].min() >= 0 and asset["proxy_uvs"].max() <= 1


@pytest.mark.parametrize("which", ["render", "proxy"])
def test_skinning_weights_are_a_partition_of_unity(asset, which):
    w = asset[f"{which}_weights"]
    assert w.shape[1] == 16
    assert w.min() >= 0
    assert np.allclose(w.sum(1), 1.0, atol=1e-5)
    # every joint drives some skin
    assert (w.max(0) > 0.5).all()


def test_skeleton_is_mano_ordered(asset):
    J = asset["joints"]
    assert asset["parents"].tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    assert np.allclose(J[0], 0.0)
    # canonical frame: fingers along +X, thumb towards -Z, index on the thumb side of the pinky
    for j in (1, 4, 7, 10):
        assert J[j + 2, 0] > J[j, 0] > 0.05
    assert J[15, 2] < J[1, 2] < J[4, 2] < J[10, 2] < J[7, 2]
    tips = asset["render_vertices"][asset["tip_vertex_ids"]]
    # tips in thumb, index, middle, ring, pinky order; middle finger longest (hand ~18.5 cm)
    assert np.argmax(tips[:, 0]) == 2
    assert 0.17 < np.linalg.norm(tips[2]) < 0.20
    assert tips[0, 2] < tips[1, 2] < tips[2, 2] < tips[3, 2] < tips[4, 2]


def test_regions_and_textures(asset, hand_dir):
    region = asset["render_region"]
    counts = np.bincount(region, minlength=6)
    assert (counts > 50).all(), counts  # palm, back, finger palmar/dorsal, nails, wrist all present
    albedo = np.asarray(Image.open(str(hand_dir / "albedo.png")))
    normal = np.asarray(Image.open(str(hand_dir / "normal.png"))).astype(np.float64) / 255 * 2 - 1
    rough = np.asarray(Image.open(str(hand_dir / "roughness.png")))
    assert albedo.shape == normal.shape == rough.shape == (1024, 1024, 3)
    # tangent-space normals: unit length, mostly facing out (+z)
    assert np.allclose(np.linalg.norm(normal, axis=-1), 1, atol=0.03)
    assert normal[..., 2].min() > 0.3
    # sample albedo at render vertices by region: palms lighter than backs, nails shinier
    uv = np.zeros((len(asset["render_vertices"]), 2))
    uv[asset["render_faces"].ravel()] = asset["render_uvs"][asset["render_uv_faces"].ravel()]
    px = np.clip((uv * 1024).astype(int), 0, 1023)
    lum = albedo[px[:, 1], px[:, 0]].astype(float) @ [0.2126, 0.7152, 0.0722]
    rgh = rough[px[:, 1], px[:, 0], 0].astype(float)
    assert lum[region == 0].mean() > lum[region == 1].mean()
    assert rgh[region == 4].mean() < 0.6 * rgh[region == 1].mean()


def test_asset_reference_names_shipped_assets_by_folder_and_round_trips(tmp_path):
    """Weights files name the asset they were made for (asset_reference); asset_path inverts it."""
    import shutil

    from relit_hands.hand_model import asset_path, asset_reference, default_asset_path

    assert asset_reference(None) == "hand" == asset_reference(default_asset_path())
    v2 = asset_path("hand_v2")
    assert asset_reference(v2) == "hand_v2" == asset_reference(v2.parent)
    assert asset_path(None) == default_asset_path() and asset_path("hand") == default_asset_path()
    mine = tmp_path / "my_hand"
    mine.mkdir()
    shutil.copy(v2, mine / "right_hand.npz")
    ref = asset_reference(mine)
    assert ref == str((mine / "right_hand.npz").resolve()) and asset_path(ref) == mine / "right_hand.npz"
    with pytest.raises(FileNotFoundError, match="no_such_asset"):
        asset_path("no_such_asset")
