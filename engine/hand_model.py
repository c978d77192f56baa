"""Articulated hand model: asset loading and MANO-style linear blend skinning (LBS).

Conventions (docs/conventions.md, binding):

* Canonical rest frame of the RIGHT hand: metres, wrist joint at the origin, fingers along +X,
  palm normal -Y, thumb on the -Z side; rest pose = flat hand = all pose parameters zero.
* MANO joint order (16): 0 wrist; 1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb,
  ``PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]``.
  21 keypoints = 16 joints + fingertips in the order thumb, index, middle, ring, pinky.
* Pose: 45-D axis-angle (15 finger joints, each rotation expressed in the rest-pose world axes,
  SMPL/MANO style), 3-D global orientation about the wrist joint, 3-D translation.

Kinematics (exactly MANO / SMPL, ``smplx.lbs``)::

    R_j = rodrigues(pose_j)                              (rest world axes)
    G_0 = [R_global | J_0]
    G_j = G_parent(j) @ [R_j | J_j - J_parent(j)]
    A_j = G_j @ [I | -J_j]                               (skinning matrix, rest joint removed)
    v   = sum_j w_vj A_j v_rest  + transl
    joints_j = G_j[:3, 3] + transl

Left hand.  The left asset is the exact mirror of the right one through the plane z = 0
(``HandAsset.mirrored()``: z -> -z, triangle winding flipped, same UVs).  For the *same
anatomical pose* the left hand's parameters are the mirrored right-hand parameters:
``pose_left = mirror_pose(pose_right)`` (axis-angle (a, b, c) -> (-a, -b, c) per joint; the
same rule mirrors ``global_orient``) and ``transl_left = mirror_translation(transl_right)``
(z -> -z).  With these, ``HandModel(side='left')`` gives exactly the mirror image (z -> -z) of
the right hand's output.  (MANO's own left-hand files follow the same mirror relation.)
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = [
    "PARENTS",
    "JOINT_NAMES",
    "TIP_ORDER",
    "HandAsset",
    "asset_reference",
    "asset_path",
    "asset_mismatch",
    "layout_id",
    "HandModel",
    "HandOutput",
    "mirror_pose",
    "mirror_translation",
    "rodrigues",
    "rigid_transforms",
    "bone_ends",
    "shape_rest",
    "vertex_normals",
    "default_asset_path",
]

PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int32)
JOINT_NAMES = [
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
]
TIP_ORDER = ["thumb", "index", "middle", "ring", "pinky"]
NUM_JOINTS = 16


def default_asset_path() -> Path:
    """Path of the shipped right-hand asset (``relit_hands/models/hand/right_hand.npz``)."""
    from . import models  # noqa: F401  (relit_hands.models is a package with data files)

    return Path(models.__file__).resolve().parent / "hand" / "right_hand.npz"


def asset_reference(source) -> str:
    """How weights files and datasets name the hand asset they were made for (a UV-space network is
    tied to its asset's atlas): the folder name of a shipped asset (``'hand'``, ``'hand_v2'``), else
    the resolved path of the asset's npz. ``source``: an npz path, an asset folder, or None (the
    shipped default)."""
    path = Path(source) if source is not None else default_asset_path()
    if path.is_dir():
        path = path / "right_hand.npz"
    path = path.resolve()
    shipped = default_asset_path().parent.parent
    if path.name == "right_hand.npz" and path.parent.parent == shipped:
        return path.parent.name
    return str(path)


def asset_path(reference: Optional[str]) -> Path:
    """The npz a :func:`asset_reference` names (None: the shipped default, which models made before
    references were recorded were trained on). Raises FileNotFoundError naming it when missing."""
    if not reference:
        return default_asset_path()
    ref = str(reference)
    if "/" not in ref and "\\" not in ref and not ref.endswith(".npz"):
        path = default_asset_path().parent.parent / ref / "right_hand.npz"
    else:
        path = Path(ref)
        if path.is_dir():
            path = path / "right_hand.npz"
    if not path.is_file():
        raise FileNotFoundError(f"hand asset {reference!r} not found ({path})")
    return path


def layout_id(asset) -> str:
    """Identity of an asset's UV layout and mesh topology (sha1 prefix of the proxy and render UVs
    and faces): assets with equal ids -- a shipped asset and a person fitted from it
    (``relit-hands personalize``) -- share every UV-space map and network input."""
    h = hashlib.sha1()
    for name in ("proxy_uvs", "proxy_uv_faces", "proxy_faces", "render_uvs", "render_uv_faces", "render_faces"):
        h.update(np.ascontiguousarray(getattr(asset, name)).tobytes())
    return h.hexdigest()[:16]


def asset_mismatch(model_ref: Optional[str], asset, *, same_layout: bool = False) -> Optional[str]:
    """None when a model made for ``model_ref`` (its recorded :func:`asset_reference`; None = the
    shipped default, as for models made before references were recorded) fits ``asset`` (a
    :class:`HandAsset`, an Engine-like object with ``.asset``, or a path); else a sentence naming
    both, for the caller's error. ``same_layout``: another asset with the model's UV layout and
    topology (:func:`layout_id`) fits too (the student, whose albedo the engine swaps; not the
    teacher, which learned its asset's appearance)."""
    a = getattr(asset, "asset", asset)
    src = getattr(a, "source", a)
    want, have = model_ref or asset_reference(None), asset_reference(src or None)
    if want == have:
        return None
    if same_layout:
        try:
            mine = a if isinstance(a, HandAsset) else HandAsset.load(asset_path(have))
            if layout_id(HandAsset.load(asset_path(want))) == layout_id(mine):
                return None
        except (OSError, ValueError):
            pass
    return (f"made for hand asset {want!r}, but this renders {have!r} (a UV-space model only fits its "
            f"own atlas{' and topology' if same_layout else ''}: Engine(asset=...) with the model's asset)")


# ----------------------------------------------------------------------------------------
# Asset
# ----------------------------------------------------------------------------------------

# name -> (dtype kind, shape spec). Shape spec entries: int = exact, str = named dimension.
_SPEC = {
    "render_vertices": ("f", ("Vr", 3)),
    "render_faces": ("i", ("Fr", 3)),
    "render_uvs": ("f", ("Tr", 2)),
    "render_uv_faces": ("i", ("Fr", 3)),
    "render_weights": ("f", ("Vr", 16)),
    "proxy_vertices": ("f", ("Vp", 3)),
    "proxy_faces": ("i", ("Fp", 3)),
    "proxy_uvs": ("f", ("Tp", 2)),
    "proxy_uv_faces": ("i", ("Fp", 3)),
    "proxy_weights": ("f", ("Vp", 16)),
    "render_proxy_face": ("i", ("Vr",)),
    "render_proxy_bary": ("f", ("Vr", 3)),
    "joints": ("f", (16, 3)),
    "parents": ("i", (16,)),
    "tip_vertex_ids": ("i", (5,)),
    "proxy_tip_vertex_ids": ("i", (5,)),
    "render_region": ("u", ("Vr",)),
}


@dataclass
class HandAsset:
    """The hand asset (right hand unless ``side == 'left'``), arrays as in docs/conventions.md.

    Float arrays are float32, index arrays int32 (``render_region`` uint8).  ``extras`` holds any
    additional arrays found in the file.  ``source`` is the file it came from (for messages).
    """

    render_vertices: np.ndarray
    render_faces: np.ndarray
    render_uvs: np.ndarray
    render_uv_faces: np.ndarray
    render_weights: np.ndarray
    proxy_vertices: np.ndarray
    proxy_faces: np.ndarray
    proxy_uvs: np.ndarray
    proxy_uv_faces: np.ndarray
    proxy_weights: np.ndarray
    render_proxy_face: np.ndarray
    render_proxy_bary: np.ndarray
    joints: np.ndarray
    parents: np.ndarray
    tip_vertex_ids: np.ndarray
    proxy_tip_vertex_ids: np.ndarray
    render_region: np.ndarray
    side: str = "right"
    source: str = "<memory>"
    extras: dict = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrays: dict, side: str = "right", source: str = "<memory>") -> "HandAsset":
        """Build and validate an asset from a mapping of arrays (npz layout)."""
        missing = [k for k in _SPEC if k not in arrays]
        if missing:
            raise ValueError(f"hand asset {source}: missing array(s) {missing}; "
                             f"expected all of {list(_SPEC)} (docs/conventions.md)")
        kw = {}
        for name, (kind, _) in _SPEC.items():
            a = np.asarray(arrays[name])
            if kind == "f":
                if not np.issubdtype(a.dtype, np.floating):
                    raise ValueError(f"hand asset {source}: array '{name}' must be float, got {a.dtype}")
                a = a.astype(np.float32)
            elif kind == "i":
                if not np.issubdtype(a.dtype, np.integer):
                    raise ValueError(f"hand asset {source}: array '{name}' must be integer, got {a.dtype}")
                a = a.astype(np.int32)
            else:
                if not np.issubdtype(a.dtype, np.integer):
                    raise ValueError(f"hand asset {source}: array '{name}' must be integer, got {a.dtype}")
                a = a.astype(np.uint8)
            kw[name] = a
        extras = {k: np.asarray(v) for k, v in arrays.items() if k not in _SPEC}
        asset = cls(**kw, side=side, source=str(source), extras=extras)
        asset.validate()
        return asset

    @classmethod
    def load(cls, path: Optional[os.PathLike | str] = None) -> "HandAsset":
        """Load an asset npz (no pickles), or the ``right_hand.npz`` of an asset folder (a shipped
        asset's, or one written by ``make-phone-video`` / ``personalize``).  Default: the shipped
        right hand."""
        path = Path(path) if path is not None else default_asset_path()
        if path.is_dir():
            path = path / "right_hand.npz"
        if not path.is_file():
            raise FileNotFoundError(f"hand asset not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        side = str(arrays.pop("side")) if "side" in arrays else "right"
        return cls.from_arrays(arrays, side=side if side in ("right", "left") else "right",
                               source=str(path))

    def _texture_path(self, name: str) -> Path:
        """``name`` beside the asset's npz; clear errors when the asset has no source or the file is missing."""
        if not self.source:
            raise ValueError(f"the hand asset has no source path, so its texture {name} cannot be found")
        path = Path(self.source).parent / name
        if not path.is_file():
            raise FileNotFoundError(f"hand asset {self.source}: texture not found: {path}")
        return path

    @staticmethod
    def _area_resample(img: np.ndarray, resolution: int) -> torch.Tensor:
        """``[H, W, C]`` -> ``[C, R, R]`` float32 by area averaging (the atlas layout is kept)."""
        t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)[None]
        return torch.nn.functional.interpolate(t, size=(int(resolution), int(resolution)), mode="area")[0].contiguous()

    def albedo_map(self, resolution: int) -> torch.Tensor:
        """The asset's albedo texture (``albedo.png`` beside the npz, sRGB-decoded once) area-averaged
        to ``resolution``: linear reflectance ``[3, R, R]`` float32 in the atlas layout (row = v * R,
        conventions.md), shared by both hands through the mirrored layout."""
        from relit_hands.image_io import read_albedo_linear

        return self._area_resample(read_albedo_linear(self._texture_path("albedo.png")), resolution)

    def specular_map(self, resolution: int) -> torch.Tensor:
        """The asset's specular parameters from ``roughness.png`` beside the npz (the texture the PBR
        baseline renders: R = perceptual GGX roughness r, G = F0 / 0.08), area-averaged to
        ``resolution``: ``[2, R, R]`` float32 = (GGX alpha = clip(r, 0.045, 1)^2, F0), atlas layout as
        :meth:`albedo_map`."""
        from relit_hands.image_io import read_png

        rs = read_png(self._texture_path("roughness.png"))[..., :2].astype(np.float32) / 255.0
        return self._area_resample(np.stack([np.clip(rs[..., 0], 0.045, 1.0) ** 2, rs[..., 1] * 0.08], -1), resolution)

    def save(self, path) -> None:
        """Write the npz (float32 / int32 / uint8 arrays, plus extras)."""
        np.savez_compressed(path, **self.arrays())

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in _SPEC}
        out.update(self.extras)
        return out

    # -- validation --------------------------------------------------------------------
    def validate(self) -> None:
        src = self.source
        dims: dict = {}
        for name, (_, spec) in _SPEC.items():
            a = getattr(self, name)
            if a.ndim != len(spec):
                raise ValueError(f"hand asset {src}: array '{name}' has shape {a.shape}, "
                                 f"expected {_fmt_spec(spec)}")
            for d, s in zip(a.shape, spec):
                if isinstance(s, int):
                    if d != s:
                        raise ValueError(f"hand asset {src}: array '{name}' has shape {a.shape}, "
                                         f"expected {_fmt_spec(spec)}")
                else:
                    if s in dims and dims[s][0] != d:
                        raise ValueError(
                            f"hand asset {src}: array '{name}' has shape {a.shape}, expected "
                            f"{_fmt_spec(spec)} with {s}={dims[s][0]} (from '{dims[s][1]}')")
                    dims.setdefault(s, (d, name))
        for name, (kind, _) in _SPEC.items():
            a = getattr(self, name)
            if kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"hand asset {src}: array '{name}' contains NaN/inf")
        Vr, Vp = self.render_vertices.shape[0], self.proxy_vertices.shape[0]
        Tr, Tp = self.render_uvs.shape[0], self.proxy_uvs.shape[0]
        Fp = self.proxy_faces.shape[0]
        for name, n in (("render_faces", Vr), ("proxy_faces", Vp), ("render_uv_faces", Tr),
                        ("proxy_uv_faces", Tp), ("tip_vertex_ids", Vr),
                        ("proxy_tip_vertex_ids", Vp), ("render_proxy_face", Fp)):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= n):
                raise ValueError(f"hand asset {src}: array '{name}' has indices outside [0, {n})")
        if not np.array_equal(self.parents, PARENTS):
            raise ValueError(f"hand asset {src}: array 'parents' = {self.parents.tolist()}, "
                             f"expected MANO parents {PARENTS.tolist()}")
        for name in ("render_weights", "proxy_weights"):
            w = getattr(self, name)
            if w.min() < -1e-6:
                raise ValueError(f"hand asset {src}: array '{name}' has negative weights")
            err = np.abs(w.sum(1) - 1.0).max() if len(w) else 0.0
            if err > 1e-4:
                raise ValueError(f"hand asset {src}: rows of '{name}' must sum to 1 "
                                 f"(max deviation {err:.3g})")
        fp = self.extras.get("render_face_parent")  # optional (docs/conventions.md)
        if fp is not None:
            fp = np.asarray(fp)
            if fp.shape != (self.render_faces.shape[0],) or not np.issubdtype(fp.dtype, np.integer):
                raise ValueError(f"hand asset {src}: array 'render_face_parent' has shape {fp.shape} "
                                 f"({fp.dtype}), expected integer [Fr] with Fr={self.render_faces.shape[0]}")
            if fp.size and (fp.min() < 0 or fp.max() >= Fp):
                raise ValueError(f"hand asset {src}: array 'render_face_parent' has indices outside [0, {Fp})")
        if self.side not in ("right", "left"):
            raise ValueError(f"hand asset {src}: side must be 'right' or 'left', got {self.side!r}")

    # -- derived -----------------------------------------------------------------------
    def mirrored(self) -> "HandAsset":
        """The mirror image through z = 0 (right <-> left).

        z -> -z on both meshes and the joints; triangle winding flipped by swapping columns 1
        and 2 of the position faces *and* the UV faces (so UV corners stay attached to the same
        position corners); ``render_proxy_bary`` columns 1 and 2 are swapped with them (same
        points); UVs, weights, tips, regions and extras (e.g. ``render_face_parent``) are
        unchanged.
        """
        flipz = np.array([1.0, 1.0, -1.0], dtype=np.float32)

        def sw(f):
            return np.ascontiguousarray(f[:, [0, 2, 1]])

        return replace(
            self,
            render_vertices=self.render_vertices * flipz,
            proxy_vertices=self.proxy_vertices * flipz,
            joints=self.joints * flipz,
            render_faces=sw(self.render_faces),
            render_uv_faces=sw(self.render_uv_faces),
            proxy_faces=sw(self.proxy_faces),
            proxy_uv_faces=sw(self.proxy_uv_faces),
            render_proxy_bary=sw(self.render_proxy_bary),
            side="left" if self.side == "right" else "right",
            source=f"{self.source} (mirrored)",
            extras=dict(self.extras),
        )

    def tip_points(self) -> np.ndarray:
        """[5, 3] rest fingertip positions (render mesh), order thumb, index, middle, ring, pinky."""
        return self.render_vertices[self.tip_vertex_ids]


def _fmt_spec(spec) -> str:
    return "[" + ", ".join(str(s) for s in spec) + "]"


# ----------------------------------------------------------------------------------------
# Pose helpers
# ----------------------------------------------------------------------------------------

def mirror_pose(pose):
    """Mirror axis-angle parameters through z = 0: (a, b, c) -> (-a, -b, c) per joint.

    Works on any array / tensor whose last dimension is a multiple of 3 (a 45-D pose, a 3-D
    global orientation, [..., 15, 3] ...).  Returns the same type.
    """
    if torch.is_tensor(pose):
        if pose.shape[-1] % 3:
            raise ValueError(f"mirror_pose: last dimension must be a multiple of 3, got {tuple(pose.shape)}")
        s = torch.tensor([-1.0, -1.0, 1.0], dtype=pose.dtype, device=pose.device)
        return (pose.reshape(*pose.shape[:-1], -1, 3) * s).reshape(pose.shape)
    p = np.asarray(pose)
    if p.shape[-1] % 3:
        raise ValueError(f"mirror_pose: last dimension must be a multiple of 3, got {p.shape}")
    s = np.array([-1.0, -1.0, 1.0], dtype=p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)
    return (p.reshape(*p.shape[:-1], -1, 3) * s).reshape(p.shape)


def mirror_translation(transl):
    """Mirror a translation through z = 0: (x, y, z) -> (x, y, -z)."""
    if torch.is_tensor(transl):
        return transl * torch.tensor([1.0, 1.0, -1.0], dtype=transl.dtype, device=transl.device)
    t = np.asarray(transl)
    return t * np.array([1.0, 1.0, -1.0], dtype=t.dtype if np.issubdtype(t.dtype, np.floating) else np.float64)


def rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3].

    Exact identity for a zero vector, smooth (series expansion) near zero, differentiable.
    """
    r = rotvec
    th2 = (r * r).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = th2 < 1e-8
    th2_safe = torch.where(small, torch.ones_like(th2), th2)
    th = torch.sqrt(th2_safe)
    a = torch.where(small, 1.0 - th2 / 6.0, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24.0, (1.0 - torch.cos(th)) / th2_safe)
    x, y, z = r.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*r.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def rigid_transforms(rot: torch.Tensor, joints: torch.Tensor, parents: Sequence[int]):
    """MANO forward kinematics.

    rot [B, J, 3, 3] (joint 0 = global orientation), joints [J, 3] or [B, J, 3] rest joints.
    Returns (G [B, J, 4, 4] world transforms of the joints, A [B, J, 4, 4] skinning matrices
    ``G_j @ [I | -J_j]``).
    """
    B, J = rot.shape[:2]
    if joints.dim() == 2:
        joints = joints.unsqueeze(0).expand(B, -1, -1)
    par = list(int(p) for p in parents)
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, par[1:]]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype, device=rot.device).expand(B, J, 1, 4)
    local = torch.cat([torch.cat([rot, rel.unsqueeze(-1)], -1), bottom], -2)  # [B, J, 4, 4]
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[par[j]] @ local[:, j])
    G = torch.stack(chain, 1)
    R = G[..., :3, :3]
    t = G[..., :3, 3] - (R @ joints.unsqueeze(-1)).squeeze(-1)
    A = torch.cat([torch.cat([R, t.unsqueeze(-1)], -1), G[..., 3:, :]], -2)
    return G, A


def skin(weights: torch.Tensor, A: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """LBS: weights [V, J], A [B, J, 4, 4], verts [V, 3] or [B, V, 3] -> [B, V, 3]."""
    B, J = A.shape[:2]
    T = torch.matmul(weights, A[:, :, :3, :].reshape(B, J, 12)).reshape(B, -1, 3, 4)
    return (T[..., :3] @ verts.unsqueeze(-1)).squeeze(-1) + T[..., 3]


# ----------------------------------------------------------------------------------------
# Shape space: per-bone length and girth scales on the asset's own topology
# ----------------------------------------------------------------------------------------

SHAPE_DIM = (NUM_JOINTS, 2)  # [16, 2]: (length scale, girth scale) of each joint's bone


def bone_ends(joints: torch.Tensor, tips: torch.Tensor) -> torch.Tensor:
    """End point of the bone each joint drives: [..., 16, 3] joints, [..., 5, 3] tips -> [..., 16, 3].

    A finger joint's bone ends at its child joint (the third joint of a chain at the fingertip,
    ``tips`` in TIP_ORDER); the wrist's bone (the palm) ends at the middle knuckle (joint 4).
    """
    ends = torch.empty_like(joints)
    ends[..., 0, :] = joints[..., 4, :]
    for j0, tip in ((1, "index"), (4, "middle"), (7, "pinky"), (10, "ring"), (13, "thumb")):
        ends[..., j0, :] = joints[..., j0 + 1, :]
        ends[..., j0 + 1, :] = joints[..., j0 + 2, :]
        ends[..., j0 + 2, :] = tips[..., TIP_ORDER.index(tip), :]
    return ends


def shape_rest(shape: torch.Tensor, joints: torch.Tensor, tips: torch.Tensor, parents: Sequence[int],
               surfaces: Sequence[tuple]) -> tuple:
    """Apply per-bone length / girth scales to the rest hand; topology and weights are unchanged.

    shape [B, 16, 2] (column 0: length scale along the bone, column 1: girth scale across it;
    ones = the asset itself); joints [16, 3], tips [5, 3] rest positions (metres, rest frame);
    ``surfaces``: (weights [V, 16], rest vertices [V, 3]) pairs (render mesh, proxy, tips).

    Each bone j has the affine map ``x -> J'_j + S_j (x - J_j)`` with
    ``S_j = l_j u u^T + g_j (I - u u^T)`` (u: the bone's rest direction towards its end);
    joints move rigidly with their parent's scaled offset, ``J'_c = J'_p + S_p (J_c - J_p)``,
    and surface points blend the maps with their skinning weights (like LBS), so a shaped
    hand is continuous where the weights are, and ``shape = 1`` is exactly the rest asset.
    Returns (joints [B, 16, 3], [surface [B, V, 3] for each of ``surfaces``]).
    """
    if shape.dim() != 3 or tuple(shape.shape[1:]) != SHAPE_DIM:
        raise ValueError(f"shape: expected [B, 16, 2] (length, girth scale per bone), got {list(shape.shape)}")
    if not torch.isfinite(shape).all() or (shape <= 0).any():
        raise ValueError("shape: scales must be finite and > 0")
    B = shape.shape[0]
    u = bone_ends(joints, tips) - joints
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)                 # [16, 3]
    uu = u.unsqueeze(-1) * u.unsqueeze(-2)                                # [16, 3, 3]
    eye = torch.eye(3, dtype=joints.dtype, device=joints.device)
    S = shape[..., 0, None, None] * uu + shape[..., 1, None, None] * (eye - uu)   # [B, 16, 3, 3]
    new_joints = [joints[0].expand(B, 3)]
    for j in range(1, NUM_JOINTS):
        p = int(parents[j])
        new_joints.append(new_joints[p] + (S[:, p] @ (joints[j] - joints[p])))
    J = torch.stack(new_joints, 1)                                        # [B, 16, 3]
    out = []
    D = S - eye                                                           # [B, 16, 3, 3]
    for weights, rest in surfaces:
        # v' = v + sum_j w_j [(J'_j - J_j) + (S_j - I)(v - J_j)]: exactly v for unit scales
        local = torch.einsum("bjxy,vjy->bvjx", D, rest.unsqueeze(1) - joints.unsqueeze(0))  # [B, V, 16, 3]
        out.append(rest + torch.einsum("vj,bvjx->bvx", weights, local + (J - joints).unsqueeze(1)))
    return J, out


def vertex_normals(vertices: torch.Tensor, faces) -> torch.Tensor:
    """Area-weighted unit vertex normals: vertices [B, V, 3] (or [V, 3]), faces [F, 3] -> same shape.

    Each face adds its unnormalized normal (cross product = 2 x area x unit normal) to its three
    vertices; CCW faces give outward normals.  Differentiable.  The one definition of vertex normals
    (the GL drawable evaluates the same sum as a sparse product).  A tensor keeps its dtype and
    device (numpy float64 callers pass ``torch.from_numpy(v)`` and get float64); other inputs are
    converted to float32.
    """
    vertices = torch.as_tensor(vertices, dtype=torch.float32) if not torch.is_tensor(vertices) else vertices
    squeeze = vertices.dim() == 2
    v = vertices.unsqueeze(0) if squeeze else vertices
    f = torch.as_tensor(np.asarray(faces) if not torch.is_tensor(faces) else faces,
                        device=v.device).long()
    v0, v1, v2 = v[:, f[:, 0]], v[:, f[:, 1]], v[:, f[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # [B, F, 3]
    B, V = v.shape[:2]
    # one scatter-add over the flattened batch (each face's normal to its three corners)
    index = (f.reshape(-1).unsqueeze(0) + torch.arange(B, device=v.device).unsqueeze(1) * V).reshape(-1)
    n = torch.zeros(B * V, 3, dtype=v.dtype, device=v.device).index_add_(
        0, index, fn.repeat_interleave(3, dim=1).reshape(-1, 3)).view(B, V, 3)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return n[0] if squeeze else n


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

@dataclass
class HandOutput:
    """Posed hand.  Meshes not requested through ``meshes=`` are ``None``."""

    render_vertices: Optional[torch.Tensor]  # [B, Vr, 3]
    proxy_vertices: Optional[torch.Tensor]   # [B, Vp, 3]
    joints: torch.Tensor                     # [B, 16, 3]
    keypoints: torch.Tensor                  # [B, 21, 3] 16 joints + tips thumb,index,middle,ring,pinky
    joint_transforms: torch.Tensor           # [B, 16, 4, 4] world transforms G_j (+ transl)


def _as_batch(x, name: str, dim: int, dtype, device) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    given = list(t.shape)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] != dim:
        raise ValueError(f"{name}: expected shape [{dim}] or [B, {dim}], got {given}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name}: expected a real-valued array, got {t.dtype}")
    t = t.to(device=device, dtype=dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def _as_shape_batch(shape, dtype, device) -> torch.Tensor:
    t = shape if torch.is_tensor(shape) else torch.as_tensor(np.asarray(shape, dtype=np.float64))
    given = list(t.shape)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or tuple(t.shape[1:]) != SHAPE_DIM:
        raise ValueError(f"shape: expected [16, 2] or [B, 16, 2] (length, girth scale per bone), got {given}")
    return t.to(device=device, dtype=dtype)


class HandModel(torch.nn.Module):
    """Skinned MANO-compatible hand.

    ``HandModel(asset=None, side='right', device='cpu', dtype=torch.float32)``; ``asset`` is a
    :class:`HandAsset`, a path to an npz, or None (shipped right hand).  The asset given is the
    RIGHT hand (if ``asset.side == 'left'`` it is used as-is for ``side='left'``); for
    ``side='left'`` the mirrored asset is used.  See the module docstring for the left-hand
    pose rule (``mirror_pose``).
    """

    def __init__(self, asset=None, side: str = "right", device="cpu", dtype=torch.float32):
        super().__init__()
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        if asset is None or isinstance(asset, (str, os.PathLike)):
            asset = HandAsset.load(asset)
        if asset.side != side:
            asset = asset.mirrored()
        self.asset = asset
        self.side = side
        self.parents = [int(p) for p in asset.parents]
        kw = dict(device=device, dtype=dtype)
        self.register_buffer("rest_joints", torch.as_tensor(asset.joints, **kw))
        self.register_buffer("render_rest", torch.as_tensor(asset.render_vertices, **kw))
        self.register_buffer("proxy_rest", torch.as_tensor(asset.proxy_vertices, **kw))
        self.register_buffer("render_weights", torch.as_tensor(asset.render_weights, **kw))
        self.register_buffer("proxy_weights", torch.as_tensor(asset.proxy_weights, **kw))
        tips = asset.tip_vertex_ids.astype(np.int64)
        self.register_buffer("tip_rest", torch.as_tensor(asset.render_vertices[tips], **kw))
        self.register_buffer("tip_weights", torch.as_tensor(asset.render_weights[tips], **kw))
        self.register_buffer("render_faces", torch.as_tensor(asset.render_faces.astype(np.int64), device=device))
        self.register_buffer("proxy_faces", torch.as_tensor(asset.proxy_faces.astype(np.int64), device=device))
        self._shape_cache: list = []  # (shape, meshes, shaped rest) of the last few shapes (_shaped_rest)

    @property
    def dtype(self):
        return self.rest_joints.dtype

    @property
    def device(self):
        return self.rest_joints.device

    def forward(self, pose, global_orient=None, transl=None, *, shape=None,
                meshes: Sequence[str] = ("render", "proxy")) -> HandOutput:
        """pose [45] or [B, 45] axis-angle (rest world axes); global_orient [3] / [B, 3] about the
        wrist joint; transl [3] / [B, 3]; shape [16, 2] / [B, 16, 2] per-bone (length, girth)
        scales (:func:`shape_rest`; None = the asset's own proportions).  numpy or torch.
        Batch size 1 broadcasts."""
        dt, dev = self.dtype, self.device
        pose = _as_batch(pose, "pose", 45, dt, dev)
        go = None if global_orient is None else _as_batch(global_orient, "global_orient", 3, dt, dev)
        tr = None if transl is None else _as_batch(transl, "transl", 3, dt, dev)
        sh = None if shape is None else _as_shape_batch(shape, dt, dev)
        B = max(t.shape[0] for t in (pose, go, tr, sh) if t is not None)
        for name, t in (("pose", pose), ("global_orient", go), ("transl", tr), ("shape", sh)):
            if t is not None and t.shape[0] not in (1, B):
                raise ValueError(f"{name}: batch size {t.shape[0]} does not match batch size {B}")
        pose = pose.expand(B, -1)
        go = torch.zeros(B, 3, dtype=dt, device=dev) if go is None else go.expand(B, -1)
        bad = set(meshes) - {"render", "proxy"}
        if bad:
            raise ValueError(f"meshes: unknown mesh name(s) {sorted(bad)}; use 'render' and/or 'proxy'")

        rest_j, tip_rest = self.rest_joints, self.tip_rest
        render_rest, proxy_rest = self.render_rest, self.proxy_rest
        if sh is not None:
            rest_j, shaped = self._shaped_rest(sh, B, meshes)
            tip_rest, render_rest, proxy_rest = shaped["tips"], shaped.get("render"), shaped.get("proxy")
        rot = rodrigues(torch.cat([go, pose], 1).reshape(B, 16, 3))
        G, A = rigid_transforms(rot, rest_j, self.parents)
        joints = G[..., :3, 3]
        tips = skin(self.tip_weights, A, tip_rest)
        rv = skin(self.render_weights, A, render_rest) if "render" in meshes else None
        pv = skin(self.proxy_weights, A, proxy_rest) if "proxy" in meshes else None
        if tr is not None:
            off = tr.expand(B, -1).unsqueeze(1)
            joints = joints + off
            tips = tips + off
            rv = None if rv is None else rv + off
            pv = None if pv is None else pv + off
            G = torch.cat([G[..., :3, :3], (G[..., :3, 3] + off).unsqueeze(-1)], -1)
            G = torch.cat([G, A[..., 3:, :]], -2)
        return HandOutput(render_vertices=rv, proxy_vertices=pv, joints=joints,
                          keypoints=torch.cat([joints, tips], 1), joint_transforms=G)

    def _shaped_rest(self, sh: torch.Tensor, B: int, meshes) -> tuple:
        """:func:`shape_rest` of the joints, tips and the asked ``meshes`` for ``sh`` [1 or B, 16, 2].

        A tracked hand keeps one shape for many frames, and shaping the 16k-vertex render mesh costs
        several times its skinning, so the last few single-shape results (no autograd) are cached,
        keyed by the shape's values, the meshes, dtype and device."""
        names = tuple(m for m in ("render", "proxy") if m in meshes)
        cacheable = sh.shape[0] == 1 and not (sh.requires_grad and torch.is_grad_enabled())
        cache = self._shape_cache
        if cacheable:
            for key, names_k, value in cache:
                if names_k == names and key.dtype == sh.dtype and key.device == sh.device and torch.equal(key, sh):
                    rest_j, shaped = value
                    return rest_j.expand(B, -1, -1), {k: v.expand(B, -1, -1) for k, v in shaped.items()}
        wanted = [("tips", self.tip_weights, self.tip_rest)]
        wanted += [(m, getattr(self, f"{m}_weights"), getattr(self, f"{m}_rest")) for m in names]
        rest_j, shaped = shape_rest(sh.expand(B, -1, -1) if not cacheable else sh, self.rest_joints, self.tip_rest,
                                    self.parents, [(w, v) for _, w, v in wanted])
        shaped = dict(zip([name for name, _, _ in wanted], shaped))
        if cacheable:
            cache.insert(0, (sh.detach().clone(), names, (rest_j.detach(), {k: v.detach() for k, v in shaped.items()})))
            del cache[4:]
            return rest_j.expand(B, -1, -1), {k: v.expand(B, -1, -1) for k, v in shaped.items()}
        return rest_j, shaped

    def rest_output(self) -> HandOutput:
        return self.forward(torch.zeros(1, 45, dtype=self.dtype, device=self.device))
