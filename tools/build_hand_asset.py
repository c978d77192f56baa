"""Build the procedural, MANO-compatible right-hand asset shipped in models/hand/.

    python -m relit_hands.tools.build_hand_asset --out models/hand [--scale 1.0] [--skin-tone 0.35]

Pipeline (deterministic for given parameters):
  1. signed distance field of the rest hand (tools/hand_shape.py) on a 0.9 mm grid,
     marching cubes (scikit-image) -> dense watertight surface;
  2. quadric decimation (fast-simplification) -> the coarse PROXY (about 1000 vertices);
  3. UV atlas of the proxy (xatlas): separate UV topology, no overlaps;
  4. RENDER mesh = the proxy subdivided twice (1 -> 16 triangles; positions and UVs split
     alike, so both meshes share the atlas exactly), every new vertex then projected onto the
     field's zero level set, so the render mesh carries the smooth detailed surface and the
     proxy is its piecewise-linear approximation;
  5. skinning weights on the proxy (nearest bone segment, blended across each joint over
     about one finger radius, then diffused over the mesh graph); render-mesh weights are the
     barycentric interpolation of the proxy's, so both meshes deform as one surface;
  6. textures rasterised in UV space (OpenGL): albedo (skin tone, palm lighter than the back,
     redder knuckles and fingertips, nail beds with lunulae, mottling), tangent-space normal map
     (palmar creases, palm lines, knuckle wrinkles, nail folds, fine pores), roughness/specular.
Writes right_hand.npz, albedo.png, normal.png, roughness.png, asset.json and a preview PNG.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, sparse

from relit_hands.color import linear_to_srgb, srgb_to_linear
from relit_hands.hand_model import vertex_normals

from .hand_shape import FINGER_CHAINS, PARENTS, TIP_ORDER, HandSDF, build_skeleton
from .semantic_atlas import atlas_report, finger_of_faces, semantic_atlas, semantic_face_labels


@dataclass
class AssetParams:
    scale: float = 1.0          # hand length multiplier (1.0: 18.5 cm wrist crease -> middle tip)
    skin_tone: float = 0.35     # 0 = very light ... 1 = very dark (interpolates measured-like albedos)
    seed: int = 7               # texture noise
    voxel_mm: float = 0.9       # marching-cubes grid
    proxy_faces: int = 2000     # about 1000 proxy vertices
    texture_size: int = 1024
    version: int = 1            # 1: xatlas atlas, wrist stub; 2: semantic charts, forearm section, flat cut


def _log(msg):
    print(f"[build_hand_asset] {msg}", flush=True)


# ----------------------------------------------------------------------------------------
# Geometry


def extract_surface(sdf: HandSDF, voxel: float, scale: float):
    from skimage.measure import marching_cubes

    lo = np.array([-0.095 if sdf.forearm else -0.065, -0.04, -0.11]) * scale
    hi = np.array([0.21, 0.04, 0.07]) * scale
    n = np.ceil((hi - lo) / voxel).astype(int) + 1
    axes = [lo[i] + voxel * np.arange(n[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    values = np.concatenate([sdf(grid[i:i + 400_000]) for i in range(0, len(grid), 400_000)]).reshape(n)
    if (values[[0, -1]] <= 0).any() or (values[:, [0, -1]] <= 0).any() or (values[:, :, [0, -1]] <= 0).any():
        raise RuntimeError("hand surface touches the sampling box; enlarge it")
    verts, faces, _, _ = marching_cubes(values, 0.0, spacing=(voxel,) * 3)
    return verts + lo, faces.astype(np.int64)


def decimate(verts, faces, target_faces):
    import fast_simplification
    import trimesh

    v, f = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32), target_count=target_faces)
    mesh = trimesh.Trimesh(v, f, process=True)
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight or not mesh.is_winding_consistent:
        raise RuntimeError("decimated proxy is not watertight; change proxy_faces")
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def collapse_short_edges(verts, faces, min_edge):
    """Merge the two ends of every edge shorter than ``min_edge`` (metres) at their midpoint and
    drop the faces that collapse.  Marching cubes + quadric decimation leaves a few needle
    triangles (edges of a few micrometres); flattened into UV space they become triangles far
    below float32 precision.  The result is checked to be a closed, consistently wound mesh.
    """
    import trimesh

    parent = np.arange(len(verts))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    for a, b in edges[np.argsort(length)][np.sort(length) < min_edge]:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[rb] = ra
    roots = np.array([root(i) for i in range(len(verts))])
    merged = np.zeros_like(verts)
    np.add.at(merged, roots, verts)
    merged /= np.maximum(np.bincount(roots, minlength=len(verts)), 1)[:, None]
    f = roots[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    mesh = trimesh.Trimesh(merged, f, process=False)
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight or not mesh.is_winding_consistent:
        raise RuntimeError("collapsing short edges broke the proxy's topology; change proxy_faces")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def uv_atlas(verts, faces, resolution):
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.astype(np.float32), faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    chart.max_iterations = 4
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = 6  # texels between charts at the authored resolution
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart, pack)
    vmapping, uv_faces, uvs = atlas[0]
    if not np.array_equal(vmapping[uv_faces], faces):
        raise RuntimeError("xatlas reordered faces")
    return uvs.astype(np.float64), uv_faces.astype(np.int64)


class Subdivision:
    """Two-topology subdivision that tracks, for every vertex, its proxy face and barycentrics."""

    def __init__(self, faces, uv_faces, n_pos, n_uv):
        self.faces = faces.copy()
        self.uv_faces = uv_faces.copy()
        self.n_pos, self.n_uv = n_pos, n_uv
        F = len(faces)
        # per face: which proxy face it lies in and the barycentrics of its 3 corners there
        self.face_parent = np.arange(F)
        self.corner_bary = np.tile(np.eye(3)[None], (F, 1, 1))  # [F, 3 corners, 3]

    def step(self):
        faces, uvf = self.faces, self.uv_faces

        def midpoints(fc, n):
            edges = np.concatenate([fc[:, [0, 1]], fc[:, [1, 2]], fc[:, [2, 0]]])
            uniq, inv = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True)
            return uniq, n + inv.reshape(3, -1).T

        e_pos, m_pos = midpoints(faces, self.n_pos)
        e_uv, m_uv = midpoints(uvf, self.n_uv)
        cb = self.corner_bary
        mb = np.stack([(cb[:, 0] + cb[:, 1]) / 2, (cb[:, 1] + cb[:, 2]) / 2, (cb[:, 2] + cb[:, 0]) / 2], 1)

        def four(fc, m):
            a, b, c = fc.T
            ab, bc, ca = m.T
            return np.concatenate([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1),
                                   np.stack([ca, bc, c], 1), np.stack([ab, bc, ca], 1)])

        self.faces = four(faces, m_pos)
        self.uv_faces = four(uvf, m_uv)
        A, B, C = cb[:, 0], cb[:, 1], cb[:, 2]
        AB, BC, CA = mb[:, 0], mb[:, 1], mb[:, 2]
        self.corner_bary = np.concatenate([np.stack([A, AB, CA], 1), np.stack([AB, B, BC], 1),
                                           np.stack([CA, BC, C], 1), np.stack([AB, BC, CA], 1)])
        self.face_parent = np.tile(self.face_parent, 4)
        self.n_pos += len(e_pos)
        self.n_uv += len(e_uv)

    def vertex_locations(self):
        """(proxy face [n_pos], barycentrics [n_pos, 3]) for every position vertex."""
        face = np.zeros(self.n_pos, np.int64)
        bary = np.zeros((self.n_pos, 3))
        face[self.faces.reshape(-1)] = np.repeat(self.face_parent, 3)
        bary[self.faces.reshape(-1)] = self.corner_bary.reshape(-1, 3)
        return face, bary

    def uv_locations(self):
        face = np.zeros(self.n_uv, np.int64)
        bary = np.zeros((self.n_uv, 3))
        face[self.uv_faces.reshape(-1)] = np.repeat(self.face_parent, 3)
        bary[self.uv_faces.reshape(-1)] = self.corner_bary.reshape(-1, 3)
        return face, bary


def segment_distance(p, a, b):
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1), t


def skinning_weights(verts, faces, skeleton, iterations=10, forearm: bool = False):
    """[V,16] weights: nearest bone segment, blended across joints, diffused on the mesh graph.

    ``forearm``: behind the wrist the finger weights (the graph diffusion carries a few percent
    of the thumb's along the thenar) fade out between 1 and 4 cm behind the wrist joint, so the
    forearm moves with the wrist (global orientation) alone."""
    J = skeleton.joints
    V = len(verts)
    dist = np.full((V, 16), np.inf)
    for j in range(1, 16):
        d, t = segment_distance(verts, J[j], skeleton.bone_end(j))
        dist[:, j] = d
    # the palm (joint 0) is a fan from the wrist to the four knuckles and the forearm stub
    palm = np.full(V, np.inf)
    for j in (1, 4, 7, 10):
        d, _ = segment_distance(verts, np.array([-0.03, 0.0, J[j, 2] * 0.6]) * (skeleton.radius[4] / 0.01), J[j])
        palm = np.minimum(palm, d)
    dist[:, 0] = palm * 1.15  # knuckle-region skin belongs to the fingers' proximal bones
    hard = np.argmin(dist, axis=1)
    W = np.zeros((V, 16))
    W[np.arange(V), hard] = 1.0
    # graph diffusion (uniform Laplacian smoothing) blends weights over ~ a finger radius
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(V, V))
    A = ((A + A.T) > 0).astype(np.float64)
    deg = np.asarray(A.sum(1)).ravel()
    P = sparse.diags(1.0 / deg) @ A
    for _ in range(iterations):
        W = 0.5 * W + 0.5 * (P @ W)
    if forearm:
        s = skeleton.radius[4] / 0.01
        t = np.clip((verts[:, 0] + 0.04 * s) / (0.03 * s), 0.0, 1.0)
        W[:, 1:] *= (t * t * (3 - 2 * t))[:, None]
        W[:, 0] += 1e-12  # rows of pure forearm keep a non-zero sum
    W[W < 1e-4] = 0.0
    return W / W.sum(1, keepdims=True)


def vertex_regions(verts, normals, skeleton, sdf: HandSDF):
    """0 palm, 1 back, 2 finger palmar, 3 finger dorsal, 4 nail, 5 wrist/forearm."""
    region = np.where(normals[:, 1] < 0, 0, 1).astype(np.uint8)
    J = skeleton.joints
    s = skeleton.radius[4] / 0.01
    region[verts[:, 0] < 0.004 * s] = 5
    for finger in FINGER_CHAINS:
        chain = skeleton.chain(finger)
        for k, j in enumerate(chain):
            a, b = J[j], skeleton.bone_end(j)
            d, t = segment_distance(verts, a, b)
            near = (d < skeleton.radius[j] * 1.45) & ((t > 0.02) | (k > 0) | (finger == "thumb"))
            if finger == "thumb" and k == 0:
                near &= t > 0.35
            axis = (b - a) / np.linalg.norm(b - a)
            _, _, dorsal = sdf._frame(finger, a, b)
            up = (verts - a) @ dorsal
            region[near] = np.where(up[near] > 0, 3, 2)
        o, axis, lateral, dorsal, L, r = sdf.nail_frame(finger)
        q = verts - o
        along, lat, up = q @ axis, q @ lateral, q @ dorsal
        nail = (along > 0.27 * L) & (along < 0.99 * L) & (np.abs(lat) < 0.66 * r) & (up > 0.45 * r)
        region[nail] = 4
    return region


def nearest_vertex(verts, point):
    return int(np.argmin(np.linalg.norm(verts - point, axis=1)))


# ----------------------------------------------------------------------------------------
# Textures


def rasterize_uv(verts, faces, uvs, uv_faces, attributes, size):
    """Rasterise per-corner attributes into UV space with OpenGL: -> [size, size, C], coverage.

    Row r of the result is v = (r + 0.5) / size (docs/conventions.md).
    """
    import moderngl

    ctx = moderngl.create_context(standalone=True, backend="egl")
    try:
        C = attributes.shape[1]
        pad = (-C) % 4
        attr = np.concatenate([attributes, np.zeros((len(attributes), pad + 1))], 1)
        attr[:, -1] = 1.0  # coverage channel
        n_out = (C + pad + 1) // 4 + (1 if (C + pad + 1) % 4 else 0)
        attr = np.concatenate([attr, np.zeros((len(attr), n_out * 4 - attr.shape[1]))], 1)
        corner_uv = uvs[uv_faces.reshape(-1)]
        corner_attr = attr[faces.reshape(-1)]
        outs = "\n".join(f"layout(location={i}) out vec4 o{i};" for i in range(n_out))
        ins = "\n".join(f"in vec4 a{i}; out vec4 v{i};" for i in range(n_out))
        copy = "\n".join(f"v{i} = a{i};" for i in range(n_out))
        fins = "\n".join(f"in vec4 v{i};" for i in range(n_out))
        fcopy = "\n".join(f"o{i} = v{i};" for i in range(n_out))
        prog = ctx.program(
            vertex_shader=f"#version 330\nin vec2 uv;\n{ins}\nvoid main(){{ gl_Position = vec4(uv * 2.0 - 1.0, 0.0, 1.0);\n{copy}\n}}",
            fragment_shader=f"#version 330\n{fins}\n{outs}\nvoid main(){{\n{fcopy}\n}}",
        )
        data = np.concatenate([corner_uv, corner_attr], 1).astype("f4")
        buf = ctx.buffer(data.tobytes())
        fmt = "2f " + " ".join(["4f"] * n_out)
        vao = ctx.vertex_array(prog, [(buf, fmt, "uv", *[f"a{i}" for i in range(n_out)])])
        textures = [ctx.texture((size, size), 4, dtype="f4") for _ in range(n_out)]
        fbo = ctx.framebuffer(color_attachments=textures)
        fbo.use()
        fbo.clear()
        vao.render(moderngl.TRIANGLES)
        out = np.concatenate(
            [np.frombuffer(t.read(), np.float32).reshape(size, size, 4) for t in textures], -1)
        # GL rows are bottom-up; with gl_Position.y = 2v - 1, row 0 read back is v ~ 0: no flip.
        cov = out[..., C + pad] > 0.5
        return out[..., :C], cov
    finally:
        ctx.release()


def fill_uncovered(img, covered):
    """Copy the nearest covered texel into every uncovered one (so filtering sees no holes)."""
    idx = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    return img[idx[0], idx[1]]


def value_noise(p, freq, seed):
    """Smooth 3-D value noise in [-1, 1] at points p [N,3] (trilinear on a hashed lattice)."""
    rng = np.random.default_rng(seed)
    table = rng.uniform(-1, 1, 4096)
    q = p * freq
    i = np.floor(q).astype(np.int64)
    f = q - i
    f = f * f * (3 - 2 * f)
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = ((i[:, 0] + dx) * 73856093 ^ (i[:, 1] + dy) * 19349663 ^ (i[:, 2] + dz) * 83492791) % 4096
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out = out + w * table[h]
    return out


def fbm(p, freq, seed, octaves=4):
    out, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        out = out + amp * value_noise(p, freq * 2 ** o, seed + o)
        norm += amp
        amp *= 0.5
    return out / norm


# Skin albedo anchors (sRGB, back of the hand), light -> dark; palms carry less melanin.
_TONES = np.array([[234, 200, 184], [222, 178, 156], [198, 150, 122], [160, 114, 88], [104, 72, 54], [70, 48, 36]]) / 255.0


def skin_base(tone: float) -> np.ndarray:
    x = np.clip(tone, 0, 1) * (len(_TONES) - 1)
    i = int(min(np.floor(x), len(_TONES) - 2))
    return srgb_to_linear(_TONES[i] * (1 - (x - i)) + _TONES[i + 1] * (x - i))


def make_textures(params: AssetParams, skeleton, sdf: HandSDF, verts, faces, uvs, uv_faces, normals, region):
    """Albedo (linear), tangent-space normal map and roughness/specular maps in UV space."""
    R = params.texture_size
    s = params.scale
    onehot = np.eye(6)[region]
    attrs = np.concatenate([verts, normals, onehot], 1)
    tex, cov = rasterize_uv(verts, faces, uvs, uv_faces, attrs, R)
    P = tex[..., 0:3].reshape(-1, 3).astype(np.float64)
    N = tex[..., 3:6].reshape(-1, 3).astype(np.float64)
    N /= np.maximum(np.linalg.norm(N, axis=1, keepdims=True), 1e-9)
    reg = np.argmax(tex[..., 6:12].reshape(-1, 6), axis=1)
    J = skeleton.joints
    seed = params.seed

    # --- height field (metres), for the normal map -------------------------------------
    h = 0.00006 * fbm(P / s, 900.0, seed + 10, octaves=2)             # pores / fine grain
    # palmarness in [0, 1]: how much a texel faces the palm side. In the rest pose the fingers
    # lie in the palm plane, so "dorsal" is +Y everywhere except on the pronated thumb.
    dorsal_dir = np.tile([0.0, 1.0, 0.0], (len(P), 1))
    thumb_d = np.min([segment_distance(P, J[j], skeleton.bone_end(j))[0] / skeleton.radius[j] for j in (14, 15)], 0)
    _, _, thumb_dorsal = sdf._frame("thumb", J[14], J[15])
    wt = np.clip((1.6 - thumb_d) / 0.6, 0, 1)[:, None]
    dorsal_dir = dorsal_dir * (1 - wt) + thumb_dorsal * wt
    dorsal_dir /= np.linalg.norm(dorsal_dir, axis=1, keepdims=True)
    facing = -(N * dorsal_dir).sum(1)
    pal = np.clip((facing + 0.25) / 0.5, 0, 1)
    pal = pal * pal * (3 - 2 * pal)
    dor = 1.0 - pal
    crease = np.zeros(len(P))
    wrinkle = np.zeros(len(P))
    nailfold = np.zeros(len(P))
    for finger in FINGER_CHAINS:
        chain = skeleton.chain(finger)
        for k, j in enumerate(chain):
            a, b = J[j], skeleton.bone_end(j)
            axis = (b - a) / np.linalg.norm(b - a)
            along = (P - a) @ axis
            dd, _ = segment_distance(P, a, b)
            near = (dd < skeleton.radius[j] * 1.35) & (along > -0.004 * s) & (along < np.linalg.norm(b - a) + 0.002 * s)
            # palmar flexion creases: a pair of grooves at each interphalangeal joint; the
            # palmar digital crease sits ~1 cm distal of the knuckle
            offs = (0.011 * s,) if k == 0 else (-0.0012 * s, 0.0012 * s)
            if finger == "thumb" and k == 0:
                offs = ()
            for o in offs:
                crease += near * np.exp(-((along - o) / (0.0006 * s)) ** 2)
            # dorsal knuckle wrinkles: a few fine lines over the joint
            if k > 0:
                for o in np.linspace(-0.004, 0.004, 5) * s:
                    wrinkle += near * np.exp(-((along - o) / (0.0004 * s)) ** 2) * np.exp(-(along / (0.004 * s)) ** 2)
        o, axis, lateral, dorsal_v, L, r = sdf.nail_frame(finger)
        q = P - o
        al, la = q @ axis, q @ lateral
        # nail fold: groove along the nail's proximal and lateral border
        border = np.maximum(np.abs(la) / (0.66 * r), (0.6 * L - al) / (0.33 * L))
        nailfold += np.exp(-((border - 1.0) / 0.06) ** 2) * ((P - o) @ dorsal_v > 0.3 * r) * (al > 0.2 * L)
    crease = np.clip(crease, 0, 1) * pal
    wrinkle = np.clip(wrinkle, 0, 1) * dor
    # palm lines as grooves: quadratic Bezier curves in the palm's (x, z) plane (rest frame,
    # nominal size), x along the fingers from the wrist, z from the thumb side to the pinky side
    curves = [
        ((0.070, 0.046), (0.080, 0.010), (0.089, -0.013)),   # heart line (distal transverse crease)
        ((0.067, -0.034), (0.060, -0.005), (0.050, 0.026)),  # head line (proximal transverse crease)
        ((0.066, -0.034), (0.040, -0.002), (0.010, -0.010)),  # life line (thenar crease)
    ]
    from scipy.spatial import cKDTree

    tt = np.linspace(0, 1, 400)[:, None]
    pts = np.concatenate([(1 - tt) ** 2 * np.array(c0) + 2 * (1 - tt) * tt * np.array(c1) + tt ** 2 * np.array(c2)
                          for c0, c1, c2 in curves])
    dist, _ = cKDTree(pts).query(np.stack([P[:, 0], P[:, 2]], 1) / s)
    in_palm = (P[:, 0] / s > 0.004) & (P[:, 0] / s < 0.093)
    palm_lines = np.exp(-(dist / 0.0008) ** 2) * in_palm * pal
    h -= 0.00022 * s * crease
    h -= 0.00018 * s * palm_lines
    h -= 0.00005 * s * wrinkle
    h -= 0.00015 * s * np.clip(nailfold, 0, 1)
    h = h.reshape(R, R)

    # --- albedo --------------------------------------------------------------------------
    base = skin_base(params.skin_tone)
    palm_tint = srgb_to_linear(np.array([236, 178, 160]) / 255.0)
    mel = 1.0 - params.skin_tone
    palm_col = base * (0.55 + 0.25 * mel) + palm_tint * (0.45 - 0.25 * mel)   # palms: little melanin
    blood = np.array([1.10, 0.86, 0.86])
    col = palm_col * pal[:, None] + base * (1 - pal[:, None])
    mott = fbm(P / s, 120.0, seed, octaves=4)
    col = col * (1.0 + 0.10 * mott[:, None] * np.array([1.0, 1.1, 1.15]))
    # redder knuckles and fingertips, slightly darker creases and dorsal wrinkles
    red = np.zeros(len(P))
    for finger in FINGER_CHAINS:
        for j in skeleton.chain(finger)[1:]:
            red += np.exp(-(np.linalg.norm(P - J[j], axis=1) / (0.008 * s)) ** 2) * dor
        red += np.exp(-(np.linalg.norm(P - skeleton.tip(finger), axis=1) / (0.010 * s)) ** 2)
    for j in (1, 4, 7, 10):
        red += 0.7 * np.exp(-(np.linalg.norm(P - J[j], axis=1) / (0.010 * s)) ** 2) * dor
    col = col * (1.0 + 0.22 * np.clip(red, 0, 1)[:, None] * (blood - 1.0) * 2.0)
    col = col * (1.0 - 0.18 * np.clip(crease + palm_lines, 0, 1))[:, None]
    col = col * (1.0 - 0.10 * wrinkle)[:, None]
    # nails: pink nail bed, pale lunula near the fold, white free edge at the tip
    nail = reg == 4
    nail_col = np.zeros((len(P), 3)) + srgb_to_linear(np.array([232, 176, 168]) / 255.0)
    for finger in FINGER_CHAINS:
        o, axis, lateral, dorsal_v, L, r = sdf.nail_frame(finger)
        al = ((P - o) @ axis) / L
        lun = np.exp(-((al - 0.34) / 0.07) ** 2) * (np.abs((P - o) @ lateral) < 0.45 * r)
        edge = np.clip((al - 0.90) / 0.06, 0, 1)
        tip_col = srgb_to_linear(np.array([246, 236, 226]) / 255.0)
        sel = nail & (np.linalg.norm(P - (o + axis * 0.6 * L), axis=1) < 1.2 * L)
        c = nail_col[sel] * (1 - 0.6 * lun[sel, None]) + tip_col * 0.6 * lun[sel, None]
        c = c * (1 - edge[sel, None]) + tip_col * edge[sel, None]
        nail_col[sel] = c
    col = np.where(nail[:, None], nail_col, col)
    albedo = np.clip(col, 0.0, 0.95).reshape(R, R, 3)

    # --- roughness (R) and specular F0/0.08 (G) --------------------------------------------
    rough = 0.48 + 0.10 * pal + 0.05 * fbm(P / s, 300.0, seed + 20, octaves=2)
    rough = np.where(nail, 0.18, rough)
    rough = rough + 0.12 * np.clip(crease + palm_lines, 0, 1)
    spec = np.where(nail, 0.04, 0.028) / 0.08
    rs = np.stack([np.clip(rough, 0.05, 1.0), np.full(len(P), 0.0) + spec, np.zeros(len(P))], 1).reshape(R, R, 3)

    # --- tangent-space normal map from the height field -----------------------------------
    Pm = tex[..., 0:3].astype(np.float64)
    Nm = N.reshape(R, R, 3)
    Pf = fill_uncovered(Pm, cov)
    hf = fill_uncovered(h, cov)
    # dP/du, dP/dv and dh/du, dh/dv by central differences (u along columns, v along rows)
    dPdu = (np.roll(Pf, -1, 1) - np.roll(Pf, 1, 1)) * (R / 2.0)
    dPdv = (np.roll(Pf, -1, 0) - np.roll(Pf, 1, 0)) * (R / 2.0)
    dhdu = (np.roll(hf, -1, 1) - np.roll(hf, 1, 1)) * (R / 2.0)
    dhdv = (np.roll(hf, -1, 0) - np.roll(hf, 1, 0)) * (R / 2.0)
    # only trust differences whose both neighbours are covered (else: one-sided -> zero)
    ok_u = cov & np.roll(cov, -1, 1) & np.roll(cov, 1, 1)
    ok_v = cov & np.roll(cov, -1, 0) & np.roll(cov, 1, 0)
    g11 = (dPdu * dPdu).sum(-1)
    g12 = (dPdu * dPdv).sum(-1)
    g22 = (dPdv * dPdv).sum(-1)
    det = g11 * g22 - g12 * g12
    valid = ok_u & ok_v & (det > 1e-18)
    det = np.where(valid, det, 1.0)
    a = np.where(valid, (g22 * dhdu - g12 * dhdv) / det, 0.0)
    b = np.where(valid, (-g12 * dhdu + g11 * dhdv) / det, 0.0)
    grad = a[..., None] * dPdu + b[..., None] * dPdv                   # surface gradient of h
    grad = grad - (grad * Nm).sum(-1, keepdims=True) * Nm
    n_pert = Nm - grad
    n_pert /= np.maximum(np.linalg.norm(n_pert, axis=-1, keepdims=True), 1e-9)
    # tangent frame (docs/conventions.md): T = dP/du on the surface, B = sign * N x T
    T = dPdu - (dPdu * Nm).sum(-1, keepdims=True) * Nm
    T /= np.maximum(np.linalg.norm(T, axis=-1, keepdims=True), 1e-12)
    B = np.cross(Nm, T)
    sign = np.sign((B * dPdv).sum(-1, keepdims=True))
    sign[sign == 0] = 1.0
    B = B * sign
    nt = np.stack([(n_pert * T).sum(-1), (n_pert * B).sum(-1), (n_pert * Nm).sum(-1)], -1)
    nt[~valid] = (0.0, 0.0, 1.0)
    nt /= np.linalg.norm(nt, axis=-1, keepdims=True)

    albedo = fill_uncovered(albedo, cov)
    rs = fill_uncovered(rs, cov)
    nt = fill_uncovered(nt, cov)
    return albedo, nt, rs, cov


def to_u8(x):
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------


def build(params: AssetParams, out_dir: Path) -> dict:
    from PIL import Image

    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    if params.version not in (1, 2):
        raise ValueError(f"asset version must be 1 or 2, got {params.version}")
    skeleton = build_skeleton(params.scale)
    sdf = HandSDF(skeleton, forearm=params.version >= 2)
    _log("1/6 signed distance field + marching cubes")
    dense_v, dense_f = extract_surface(sdf, params.voxel_mm * 1e-3 * params.scale, params.scale)
    _log(f"    dense surface: {len(dense_v)} vertices")
    _log("2/6 decimating to the proxy")
    proxy_v, proxy_f = decimate(dense_v, dense_f, params.proxy_faces)
    if params.version >= 2:
        proxy_v, proxy_f = collapse_short_edges(proxy_v, proxy_f, 1e-3 * params.scale)
    _log(f"    proxy: {len(proxy_v)} vertices, {len(proxy_f)} faces")
    if params.version == 1:
        _log("3/6 UV atlas (xatlas)")
        proxy_uv, proxy_uvf = uv_atlas(proxy_v, proxy_f, params.texture_size)
    else:
        _log("3/6 UV atlas (semantic charts: palm, back, 2 per finger, forearm cap)")
        labels = semantic_face_labels(proxy_v, proxy_f, skeleton, sdf, forearm_cut_x=sdf.forearm_cut_x)
        proxy_uv, proxy_uvf = semantic_atlas(proxy_v, proxy_f, labels, params.texture_size)
    _log(f"    {len(proxy_uv)} UV vertices")
    _log("4/6 subdividing twice and projecting onto the surface")
    sub = Subdivision(proxy_f, proxy_uvf, len(proxy_v), len(proxy_uv))
    sub.step()
    sub.step()
    r_face, r_bary = sub.vertex_locations()
    u_face, u_bary = sub.uv_locations()
    render_v = np.einsum("nk,nkd->nd", r_bary, proxy_v[proxy_f[r_face]])
    render_uv = np.einsum("nk,nkd->nd", u_bary, proxy_uv[proxy_uvf[u_face]])
    render_v = sdf.project(render_v, iterations=5)
    render_f, render_uvf = sub.faces, sub.uv_faces
    _log(f"    render: {len(render_v)} vertices, {len(render_f)} faces")
    _log("5/6 skinning weights")
    proxy_w = skinning_weights(proxy_v, proxy_f, skeleton, forearm=sdf.forearm)
    render_w = np.einsum("nk,nkj->nj", r_bary, proxy_w[proxy_f[r_face]])
    render_w /= render_w.sum(1, keepdims=True)
    render_n = vertex_normals(torch.from_numpy(render_v), render_f).numpy()  # area-weighted, float64
    region = vertex_regions(render_v, render_n, skeleton, sdf)
    tips = [nearest_vertex(render_v, skeleton.tip(f) + (skeleton.tip(f) - skeleton.joints[skeleton.chain(f)[2]]) /
                           np.linalg.norm(skeleton.tip(f) - skeleton.joints[skeleton.chain(f)[2]]) * 0.01 * params.scale)
            for f in TIP_ORDER]
    proxy_tips = [nearest_vertex(proxy_v, render_v[t]) for t in tips]
    _log("6/6 textures")
    albedo, normal_map, rough_spec, coverage = make_textures(params, skeleton, sdf, render_v, render_f, render_uv,
                                                             render_uvf, render_n, region)
    Image.fromarray(to_u8(linear_to_srgb(albedo))).save(out_dir / "albedo.png", optimize=True)
    Image.fromarray(to_u8(normal_map * 0.5 + 0.5)).save(out_dir / "normal.png", optimize=True)
    Image.fromarray(to_u8(rough_spec)).save(out_dir / "roughness.png", optimize=True)
    f32, i32 = np.float32, np.int32
    arrays = dict(
        render_vertices=render_v.astype(f32), render_faces=render_f.astype(i32),
        render_uvs=render_uv.astype(f32), render_uv_faces=render_uvf.astype(i32),
        render_weights=render_w.astype(f32),
        proxy_vertices=proxy_v.astype(f32), proxy_faces=proxy_f.astype(i32),
        proxy_uvs=proxy_uv.astype(f32), proxy_uv_faces=proxy_uvf.astype(i32),
        proxy_weights=proxy_w.astype(f32),
        render_proxy_face=r_face.astype(i32), render_proxy_bary=r_bary.astype(f32),
        render_face_parent=sub.face_parent.astype(i32),
        joints=skeleton.joints.astype(f32), parents=PARENTS.astype(i32),
        tip_vertex_ids=np.array(tips, i32), proxy_tip_vertex_ids=np.array(proxy_tips, i32),
        render_region=region.astype(np.uint8),
    )
    np.savez_compressed(out_dir / "right_hand.npz", **arrays)
    summary = {
        "params": asdict(params),
        "render_vertices": int(len(render_v)), "render_faces": int(len(render_f)),
        "proxy_vertices": int(len(proxy_v)), "proxy_faces": int(len(proxy_f)),
        "uv_coverage": float(coverage.mean()),
        "atlas": atlas_report(proxy_v, proxy_f, proxy_uv, proxy_uvf, coverage.mean(),
                              finger_of_faces(proxy_v, proxy_f, skeleton, sdf)),
        "hand_length_m": float(np.linalg.norm(skeleton.tips[2] - skeleton.joints[0])),
        "seconds": round(time.time() - t0, 1),
    }
    (out_dir / "asset.json").write_text(json.dumps(summary, indent=2) + "\n")
    _log(f"done in {summary['seconds']} s -> {out_dir}")
    return summary


def main(argv=None):
    from ..validation import OneLineParser, finite_float, int_range

    ap = OneLineParser(prog="relit-hands build-asset", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/hand"))
    ap.add_argument("--scale", type=finite_float(0.6, 1.5), default=AssetParams.scale, help="hand size multiplier (1.0 = 18.5 cm)")
    ap.add_argument("--skin-tone", type=finite_float(0.0, 1.0), default=AssetParams.skin_tone, help="0 light .. 1 dark")
    ap.add_argument("--seed", type=int_range(0, 2**32 - 1), default=AssetParams.seed)
    ap.add_argument("--texture-size", type=int_range(64, 8192), default=AssetParams.texture_size)
    ap.add_argument("--version", type=int, choices=(1, 2), default=AssetParams.version,
                    help="1: xatlas atlas and wrist stub (the shipped models' asset); "
                         "2: semantic UV charts (palm, back, 2 per finger, forearm cap), forearm with a flat cut")
    a = ap.parse_args(argv)
    if not (0.6 <= a.scale <= 1.5):
        ap.error("--scale must be within 0.6 .. 1.5")
    if not (0.0 <= a.skin_tone <= 1.0):
        ap.error("--skin-tone must be within 0 .. 1")
    build(AssetParams(scale=a.scale, skin_tone=a.skin_tone, seed=a.seed, texture_size=a.texture_size,
                      version=a.version), a.out)


if __name__ == "__main__":
    main()
