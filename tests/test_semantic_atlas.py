"""Asset v2's semantic UV layout (tools/semantic_atlas.py) and the atlas measures, against
analytic references, and the shipped v2 asset against v1."""
from importlib import resources

import numpy as np
import pytest
import trimesh

from relit_hands.hand_model import HandAsset, HandModel
from relit_hands.tools.hand_shape import FOREARM_CUT_X, HandSDF, build_skeleton
from relit_hands.tools.semantic_atlas import (
    CHART_NAMES,
    AtlasError,
    area_stretch,
    atlas_report,
    finger_of_faces,
    flatten_chart,
    seam_length,
    semantic_face_labels,
    uv_charts,
)

MODELS = resources.files("relit_hands.models")


def half_cylinder(radius=0.01, length=0.05, n_around=12, n_along=10):
    """An open half-cylinder (a developable disc): verts [V, 3], faces [F, 3] (outward CCW)."""
    a = np.linspace(0, np.pi, n_around + 1)
    x = np.linspace(0, length, n_along + 1)
    A, X = np.meshgrid(a, x, indexing="ij")
    verts = np.stack([X.ravel(), radius * np.cos(A).ravel(), radius * np.sin(A).ravel()], 1)
    idx = np.arange(len(verts)).reshape(n_around + 1, n_along + 1)
    q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    faces = np.concatenate([q[:, [0, 2, 1]], q[:, [0, 3, 2]]])
    return verts, faces


def test_flatten_half_cylinder_is_isometric():
    """A half-cylinder unrolls without distortion: every edge keeps its 3-D length."""
    v, f = half_cylinder()
    uv = flatten_chart(v, f)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    l3 = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    l2 = np.linalg.norm(uv[e[:, 0]] - uv[e[:, 1]], axis=1)
    assert np.abs(l2 / l3 - 1).max() < 1e-3
    # the unrolled rectangle: length x (pi r)
    ext = np.sort(uv.max(0) - uv.min(0))
    assert ext == pytest.approx(np.sort([0.05, np.pi * 0.01 * np.sin(np.pi / 24) / (np.pi / 24)]), rel=1e-3)
    st = area_stretch(v, f, uv, f)
    assert st["mean_abs_log2"] < 1e-3 and 0.999 < st["p05"] <= st["p95"] < 1.001


def test_flatten_refuses_non_disc():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(AtlasError, match="not a disc"):
        flatten_chart(np.asarray(sphere.vertices), np.asarray(sphere.faces), "ball")
    # an open cylinder (annulus: two boundary loops)
    cyl = trimesh.creation.cylinder(radius=0.01, height=0.05, sections=12)
    keep = np.abs(cyl.face_normals[:, 2]) < 0.5
    sub = cyl.submesh([np.flatnonzero(keep)], append=True)
    with pytest.raises(AtlasError, match="not a disc"):
        flatten_chart(np.asarray(sub.vertices), np.asarray(sub.faces), "sleeve")


def test_seams_and_charts_of_a_cube_cut_into_faces():
    """A cube whose 6 sides are separate UV charts: 6 charts, seams = all 12 edges."""
    cube = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    v, f = np.asarray(cube.vertices), np.asarray(cube.faces)
    side = np.argmax(np.abs(cube.face_normals), 1) * 2 + (cube.face_normals.max(1) > 0.5)
    uv_faces = np.zeros_like(f)
    uvs = []
    for k in np.unique(side):
        which = np.flatnonzero(side == k)
        used, local = np.unique(f[which], return_inverse=True)
        uv_faces[which] = local.reshape(-1, 3) + sum(len(u) for u in uvs)
        uvs.append(v[used][:, :2])
    assert uv_charts(uv_faces).max() + 1 == 6
    assert seam_length(v, f, uv_faces) == pytest.approx(4 * (1 + 2 + 3))
    # one chart (shared UV topology = position topology): no seams
    assert seam_length(v, f, f) == 0.0


@pytest.fixture(scope="module")
def v2():
    return HandAsset.load(MODELS / "hand_v2" / "right_hand.npz")


@pytest.fixture(scope="module")
def v1():
    return HandAsset.load(MODELS / "hand" / "right_hand.npz")


def _report(asset, forearm):
    sk = build_skeleton(1.0)
    sdf = HandSDF(sk, forearm=forearm)
    v, f = asset.proxy_vertices.astype(np.float64), asset.proxy_faces
    return atlas_report(v, f, asset.proxy_uvs.astype(np.float64), asset.proxy_uv_faces, 0.0,
                        finger_of_faces(v, f, sk, sdf))


def test_v2_layout_is_semantic_and_better_than_v1(v1, v2):
    r1, r2 = _report(v1, False), _report(v2, True)
    assert r2["charts"] == len(CHART_NAMES) <= 16
    assert all(n <= 2 for n in r2["charts_per_finger"].values()), r2["charts_per_finger"]
    assert r1["charts"] > 30 and max(r1["charts_per_finger"].values()) > 5
    assert r2["seam_length_m"] < 0.7 * r1["seam_length_m"]
    assert r2["area_stretch"]["mean_abs_log2"] < 0.5 * r1["area_stretch"]["mean_abs_log2"]
    assert 0.9 < r2["area_stretch"]["p05"] and r2["area_stretch"]["p95"] < 1.1
    # the render mesh refines the same charts
    assert uv_charts(v2.render_uv_faces).max() + 1 == len(CHART_NAMES)


def test_v2_charts_follow_the_anatomy(v2):
    """Each finger chart lies on its finger and on the named side; the cap is the flat cut."""
    sk = build_skeleton(1.0)
    sdf = HandSDF(sk, forearm=True)
    v, f = v2.proxy_vertices.astype(np.float64), v2.proxy_faces
    lab = semantic_face_labels(v, f, sk, sdf, forearm_cut_x=sdf.forearm_cut_x)
    c = v[f].mean(1)
    n = trimesh.Trimesh(v, f, process=False).face_normals
    assert c[lab == CHART_NAMES.index("back"), 1].mean() > 0 > c[lab == CHART_NAMES.index("palm"), 1].mean()
    for finger in ("index", "middle", "ring", "pinky"):
        pal, dor = CHART_NAMES.index(f"{finger}_palmar"), CHART_NAMES.index(f"{finger}_dorsal")
        assert n[lab == dor, 1].mean() > 0.4 and n[lab == pal, 1].mean() < -0.4
        tip = sk.tip(finger)
        # the finger's charts reach its tip
        assert np.linalg.norm(c[(lab == pal) | (lab == dor)] - tip, axis=1).min() < 0.006
    cap = lab == CHART_NAMES.index("forearm_cap")
    assert np.allclose(c[cap, 0], FOREARM_CUT_X, atol=1e-3) and (n[cap, 0] < -0.95).all()


def test_v2_forearm_ends_in_a_flat_cut(v2):
    x = v2.render_vertices[:, 0]
    assert x.min() == pytest.approx(FOREARM_CUT_X, abs=3e-4)
    on_cut = np.abs(x - FOREARM_CUT_X) < 2e-4
    # the cut is a filled disc of the forearm's cross-section (about 5.5 x 4 cm)
    yz = v2.render_vertices[on_cut][:, 1:]
    assert on_cut.sum() > 50 and 0.03 < np.ptp(yz[:, 1]) < 0.07 and 0.02 < np.ptp(yz[:, 0]) < 0.05
    # the forearm moves with the wrist (global orientation), not with a finger
    # (the render mesh interpolates the proxy's weights over the long forearm triangles)
    assert (v2.proxy_weights[v2.proxy_vertices[:, 0] < -0.04, 0] == 1.0).all()
    assert (v2.render_weights[x < -0.05, 0] > 0.99).all()


def test_v2_left_hand_uses_the_mirrored_layout(v2):
    right, left = HandModel(v2, side="right"), HandModel(v2, side="left")
    assert np.array_equal(left.asset.proxy_uvs, v2.proxy_uvs)
    assert np.array_equal(left.asset.render_uvs, v2.render_uvs)
    pose = np.random.default_rng(3).normal(0, 0.2, 45)
    from relit_hands.hand_model import mirror_pose

    r = right(pose).render_vertices[0].numpy()
    lft = left(mirror_pose(pose)).render_vertices[0].numpy()
    assert np.allclose(lft * [1, 1, -1], r, atol=1e-6)
    mesh = trimesh.Trimesh(left.asset.render_vertices, left.asset.render_faces, process=False)
    assert mesh.is_watertight and mesh.volume > 0
