"""Semantic UV layout of the proxy (hand asset v2) and the atlas quality measures of any layout.

A UV-space convolution (the student) sees every chart border as a discontinuity, so the v2
asset lays the hand out the way a glove pattern does: few large, contiguous charts with their
seams along the sides of the fingers and of the hand, where a camera rarely looks straight at
them:

* each finger (thumb included) = 2 charts, palmar and dorsal, split along the finger's
  lateral midline (the plane through the bone axis spanned by the axis and the lateral
  direction) and across the fingertip;
* the palm (with the palmar forearm) and the back of the hand (with the dorsal forearm), split
  along the side midline (rest-frame y = 0);
* the forearm's cut, a flat disc (when the asset has a forearm).

That is 12 charts (13 with the forearm cap), against ~40 for the xatlas atlas of v1.  Every
chart is checked to be a topological disc, flattened (libigl: a least-squares conformal map
refined as-rigid-as-possible), scaled so that its UV area equals its surface area (one texel
density over the hand) and packed into the unit square by xatlas (given as a UV mesh with one
material per chart, xatlas keeps our charts and only arranges them).

Everything works on the proxy (positions [V, 3] metres, rest frame of the right hand,
docs/conventions.md); the render mesh inherits the layout through subdivision.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .hand_shape import FINGER_CHAINS, HandSDF, Skeleton

CHART_NAMES = ["palm", "back"] + [f"{f}_{s}" for f in ("thumb", "index", "middle", "ring", "pinky")
                                   for s in ("palmar", "dorsal")] + ["forearm_cap"]


class AtlasError(RuntimeError):
    """The semantic segmentation did not give disc-shaped charts (asset parameters out of range)."""


# ---------------------------------------------------------------------------------------- segmentation


def _face_adjacency(faces: np.ndarray) -> sparse.csr_matrix:
    """[F, F] adjacency of faces sharing an edge (manifold; in a closed mesh every face has 3
    neighbours, a UV topology has fewer along its chart borders)."""
    F = len(faces)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    fid = np.tile(np.arange(F), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    e, f = edges[order], fid[order]
    same = np.all(e[1:] == e[:-1], axis=1)
    a, b = f[:-1][same], f[1:][same]
    adj = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(F, F))
    return (adj + adj.T).tocsr()


def _segment_distance(p, a, b):
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def semantic_face_labels(verts: np.ndarray, faces: np.ndarray, skeleton: Skeleton, sdf: HandSDF,
                         forearm_cut_x: float | None = None, smoothing: int = 3) -> np.ndarray:
    """Chart label of every face: an index into :data:`CHART_NAMES`, [F] int64.

    A face belongs to the finger whose bone segment is nearest to its centroid (the palm
    counts as a fan of segments from the wrist to the knuckles, weighted 1.15 like the
    skinning weights, so knuckle skin goes to the fingers); its side is the sign of the
    centroid's offset along the bone frame's dorsal direction (fingers) or of rest-frame y
    (palm / back).  Faces on the flat forearm cut (x < cut + 1 mm, normal within 45 degrees of
    -x) are the cap.  ``smoothing`` majority-vote passes over the face graph remove jagged
    seams; every label then keeps only its largest connected piece (stray pieces join the
    neighbouring chart they share most edges with).
    """
    J = skeleton.joints
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    c = (v0 + v1 + v2) / 3.0
    n = np.cross(v1 - v0, v2 - v0)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    F = len(faces)
    s = float(skeleton.radius[4] / 0.0100)
    fingers = ["thumb", "index", "middle", "ring", "pinky"]
    dist = np.full((F, 6), np.inf)  # column 0: palm fan, 1..5: fingers in the order above
    side = np.zeros((F, 6), bool)   # True = dorsal
    for j in (1, 4, 7, 10):
        start = np.array([-0.03, 0.0, J[j, 2] * 0.6]) * s
        dist[:, 0] = np.minimum(dist[:, 0], _segment_distance(c, start, J[j]) * 1.15)
    side[:, 0] = c[:, 1] > 0.0
    for i, finger in enumerate(fingers, start=1):
        for j in skeleton.chain(finger):
            if finger == "thumb" and j == skeleton.chain("thumb")[0]:
                # the thumb's metacarpal lies inside the thenar eminence: only its distal part
                # (where the thumb separates from the palm) belongs to the thumb's charts
                a = J[j] + 0.35 * (skeleton.bone_end(j) - J[j])
            else:
                a = J[j]
            b = skeleton.bone_end(j)
            d = _segment_distance(c, a, b)
            closer = d < dist[:, i]
            dist[:, i] = np.where(closer, d, dist[:, i])
            _, _, dorsal = sdf._frame(finger, J[j], b)
            side[:, i] = np.where(closer, (c - a) @ dorsal > 0.0, side[:, i])
    group = np.argmin(dist, axis=1)
    dorsal_side = side[np.arange(F), group]
    label = np.where(group == 0, np.where(dorsal_side, 1, 0), 2 + 2 * (group - 1) + dorsal_side.astype(int))
    if forearm_cut_x is not None:
        cap = (c[:, 0] < forearm_cut_x + 0.001 * s) & (n[:, 0] < -0.7)
        label[cap] = CHART_NAMES.index("forearm_cap")

    adj = _face_adjacency(faces)
    nbr = adj.indices.reshape(F, 3)  # closed triangle mesh: exactly 3 neighbours per face
    for _ in range(smoothing):
        votes = np.concatenate([label[:, None], label[nbr]], 1)
        counts = np.stack([(votes == k).sum(1) for k in range(len(CHART_NAMES))], 1)
        best = counts.argmax(1)
        # a face changes only when at least two of its three neighbours agree on another chart
        label = np.where(counts[np.arange(F), best] >= 2, best, label)
    return _keep_largest_pieces(label, adj)


def _keep_largest_pieces(label: np.ndarray, adj: sparse.csr_matrix) -> np.ndarray:
    """Give every label one connected piece: smaller pieces join their most-shared neighbour."""
    label = label.copy()
    for _ in range(20):
        moved = False
        for k in np.unique(label):
            idx = np.flatnonzero(label == k)
            n_comp, comp = connected_components(adj[idx][:, idx], directed=False)
            if n_comp == 1:
                continue
            keep = np.bincount(comp).argmax()
            for piece in range(n_comp):
                if piece == keep:
                    continue
                faces_p = idx[comp == piece]
                nb = adj[faces_p].indices
                nb_labels = label[nb][label[nb] != k]
                if len(nb_labels):
                    label[faces_p] = np.bincount(nb_labels).argmax()
                    moved = True
        if not moved:
            return label
    raise AtlasError("chart segmentation did not settle into connected charts")


# ---------------------------------------------------------------------------------------- flattening


def _submesh(faces: np.ndarray, which: np.ndarray):
    sub = faces[which]
    used, local = np.unique(sub, return_inverse=True)
    return used, local.reshape(-1, 3)


def flatten_chart(verts: np.ndarray, faces: np.ndarray, name: str = "chart") -> np.ndarray:
    """Flatten a disc-shaped chart: verts [V, 3], faces [F, 3] -> uv [V, 2] (metres).

    A least-squares conformal map (two boundary vertices farthest apart pinned) is rotated so
    the chart's principal axis is along u, made counter-clockwise (positive signed UV areas,
    like the 3-D winding seen from outside) and refined as-rigid-as-possible (libigl's ARAP,
    one vertex pinned); the result is scaled so its UV area equals the surface area.
    Raises :class:`AtlasError` for a chart that is not a disc or flattens with folded triangles.
    """
    import igl

    V, F = np.ascontiguousarray(verts, np.float64), np.ascontiguousarray(faces, np.int64)
    n_edges = len(np.unique(np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1), axis=0))
    euler = len(V) - n_edges + len(F)
    loops = igl.boundary_loop_all(F) if hasattr(igl, "boundary_loop_all") else [igl.boundary_loop(F)]
    if euler != 1 or len(loops) != 1:
        raise AtlasError(f"chart '{name}' is not a disc (Euler characteristic {euler}, {len(loops)} boundary loops)")
    loop = np.asarray(loops[0], np.int64)
    P = V[loop]
    d2 = ((P[:, None] - P[None]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmax(d2), d2.shape)
    uv, _ = igl.lscm(V, F, np.array([loop[i], loop[j]], np.int64), np.array([[0.0, 0.0], [1.0, 0.0]]))
    uv = uv - uv.mean(0)
    _, _, vt = np.linalg.svd(uv, full_matrices=False)
    uv = uv @ vt.T
    area_uv = _signed_areas(uv, F)
    if area_uv.sum() < 0:
        uv[:, 1] = -uv[:, 1]
        area_uv = -area_uv
    area_3d = _areas_3d(V, F).sum()
    uv *= np.sqrt(area_3d / area_uv.sum())
    # as-rigid-as-possible refinement from the conformal start: same shape of the charts, far
    # less area distortion (the LSCM of a finger's palmar half shrinks its tip up to 8x)
    data = igl.ARAPData()
    data.max_iter = 100
    pin = np.array([0], np.int32)
    igl.arap_precomputation(V, F, 2, pin, data)
    uv = igl.arap_solve(uv[pin], data, uv)
    area_uv = _signed_areas(uv, F)
    if (area_uv <= 0).any():
        raise AtlasError(f"chart '{name}': the flattening folds {(area_uv <= 0).sum()} triangle(s)")
    return uv * np.sqrt(area_3d / area_uv.sum())


def _signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _areas_3d(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(v1 - v0, v2 - v0), axis=1)


def semantic_atlas(verts: np.ndarray, faces: np.ndarray, labels: np.ndarray, resolution: int,
                   padding: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Flatten each labelled chart and pack them: -> (uvs [T, 2] in [0, 1], uv_faces [F, 3]).

    ``uv_faces`` index ``uvs`` with the same face order as ``faces`` (a vertex on a seam has one
    UV per chart it touches).  ``padding`` texels between charts at ``resolution``.
    """
    import xatlas

    split_uv, split_faces = [], np.zeros_like(faces)
    offset = 0
    for k in np.unique(labels):
        which = labels == k
        used, local = _submesh(faces, which)
        uv = flatten_chart(verts[used], local, CHART_NAMES[k])
        split_uv.append(uv)
        split_faces[which] = local + offset
        offset += len(used)
    uv_all = np.concatenate(split_uv)
    atlas = xatlas.Atlas()
    # xatlas packs UV charts given as a UV mesh (one material per chart keeps charts apart);
    # UVs in millimetres: it treats faces of tiny UV area as degenerate
    atlas.add_uv_mesh((uv_all * 1000.0).astype(np.float32), split_faces.astype(np.uint32),
                      labels.astype(np.uint32)[:, None])
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = padding
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, uv_faces, uvs = atlas[0]
    if not np.array_equal(vmapping[uv_faces], split_faces):
        raise AtlasError("xatlas reordered the faces of the semantic charts")
    return uvs.astype(np.float64), uv_faces.astype(np.int64)


# ---------------------------------------------------------------------------------------- measures


def uv_charts(uv_faces: np.ndarray) -> np.ndarray:
    """Chart id of every face: connected components of the UV topology, [F] int64 (the engine's
    :func:`relit_hands.seam_stitch.uv_face_charts`)."""
    from relit_hands.seam_stitch import uv_face_charts

    return uv_face_charts(uv_faces)


def seam_length(verts: np.ndarray, faces: np.ndarray, uv_faces: np.ndarray) -> float:
    """Total 3-D length (metres) of the mesh edges along which the UV layout is cut."""
    pos_e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    uv_e = np.concatenate([uv_faces[:, [0, 1]], uv_faces[:, [1, 2]], uv_faces[:, [2, 0]]])
    flip = pos_e[:, 0] > pos_e[:, 1]
    pos_s = np.where(flip[:, None], pos_e[:, ::-1], pos_e)
    uv_s = np.where(flip[:, None], uv_e[:, ::-1], uv_e)
    order = np.lexsort((pos_s[:, 1], pos_s[:, 0]))
    pos_s, uv_s = pos_s[order], uv_s[order]
    # closed mesh: every position edge appears twice, once from each side
    a, b = pos_s[0::2], pos_s[1::2]
    if not np.array_equal(a, b):
        raise ValueError("seam_length needs a closed manifold mesh")
    cut = np.any(uv_s[0::2] != uv_s[1::2], axis=1)
    e = a[cut]
    return float(np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1).sum())


def area_stretch(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, uv_faces: np.ndarray) -> dict:
    """How unevenly the layout spends texels on the surface.

    Per face, r = (UV area share) / (surface area share): 1 everywhere means one texel density.
    Returns the surface-area-weighted mean of |log2 r| and the 5th / 95th percentiles of r.
    """
    a3 = _areas_3d(verts, faces)
    au = np.abs(_signed_areas(uvs, uv_faces))
    r = (au / au.sum()) / np.maximum(a3 / a3.sum(), 1e-30)
    w = a3 / a3.sum()
    logs = np.abs(np.log2(np.maximum(r, 1e-12)))
    order = np.argsort(r)
    cdf = np.cumsum(w[order])
    return {"mean_abs_log2": float((w * logs).sum()),
            "p05": float(r[order][np.searchsorted(cdf, 0.05)]),
            "p95": float(r[order][min(np.searchsorted(cdf, 0.95), len(r) - 1)])}


def atlas_report(verts, faces, uvs, uv_faces, coverage: float, finger_of_face: np.ndarray | None = None) -> dict:
    """Chart count, seam length, texel utilisation and area stretch of one layout (the proxy's).

    ``coverage``: the fraction of the texture's texels covered by the render mesh's UV triangles
    (from the texture rasterisation).  ``finger_of_face`` [F] (finger name or '' per face)
    adds the number of charts each finger's surface touches.
    """
    charts = uv_charts(uv_faces)
    out = {"charts": int(charts.max() + 1),
           "seam_length_m": round(seam_length(verts, faces, uv_faces), 4),
           "texel_utilisation": round(float(coverage), 4),
           "area_stretch": {k: round(v, 4) for k, v in area_stretch(verts, faces, uvs, uv_faces).items()}}
    if finger_of_face is not None:
        out["charts_per_finger"] = {f: int(len(np.unique(charts[finger_of_face == f])))
                                    for f in FINGER_CHAINS}
    return out


def finger_of_faces(verts: np.ndarray, faces: np.ndarray, skeleton: Skeleton, sdf: HandSDF) -> np.ndarray:
    """The finger ('thumb', ...) whose surface each face belongs to, '' for palm / back / forearm.

    The finger surfaces of :func:`semantic_face_labels`, so any layout (v1's xatlas charts
    included) is measured on the same finger surfaces as v2's charts.
    """
    lab = semantic_face_labels(verts, faces, skeleton, sdf)
    names = np.array(["", ""] + [f for f in ("thumb", "index", "middle", "ring", "pinky") for _ in (0, 1)] + [""])
    return names[lab]
