"""Optional: drive the engine with a real MANO model file through ``smplx``.

``ManoHandModel(mano_path, side)`` wraps ``smplx.MANO(..., is_rhand=side == 'right',
use_pca=False, flat_hand_mean=True)`` and exposes the forward signature and output of
:class:`relit_hands.hand_model.HandModel`:

* ``render_vertices`` = the MANO mesh vertices (778 for the official files);
* ``proxy_vertices`` = the SAME tensor (MANO has one mesh; it is coarse enough to serve as the
  ray-casting proxy);
* ``keypoints`` = 16 joints + fingertip vertices in the order thumb, index, middle, ring, pinky,
  by default smplx's MANO tip vertex ids (``smplx.vertex_ids.vertex_ids['mano']``: 744, 320,
  443, 554, 671); pass ``tip_vertex_ids`` for a model with another topology;
* ``joint_transforms`` = the world transforms G_j of the joints (same kinematics as smplx).

Pose = 45-D axis-angle (``use_pca=False``), relative to the flat hand (``flat_hand_mean=True``):
the same convention as our HandModel.  ``betas`` (10 shape coefficients) is an extra keyword.

Files.  ``mano_path`` is either a folder holding ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (the
layout of the official download, as smplx resolves it) or a path to one ``.pkl`` file.  The
pickle is opened only because the user named it (it can execute code: load only files you
trust).  The official files store chumpy arrays, so unpickling them needs the ``chumpy``
package installed (smplx converts them to numpy); a pickle with plain numpy / scipy arrays needs
no chumpy.  Known smplx caveat: the official MANO_LEFT shape basis has a flipped x column
(smplx issue #48); it only matters for non-zero ``betas``.

Note the official MANO model lives in its own frame (not our canonical frame: wrist not at the
origin, fingers not along +X); outputs are returned in MANO's frame.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .hand_model import HandOutput, _as_batch, rigid_transforms, rodrigues

__all__ = ["ManoHandModel", "load_mano_pickle", "SMPLX_MANO_TIP_IDS"]

SMPLX_MANO_TIP_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky


def _resolve_file(mano_path, side: str) -> Path:
    p = Path(mano_path)
    if p.is_dir():
        f = p / f"MANO_{'RIGHT' if side == 'right' else 'LEFT'}.pkl"
        if not f.is_file():
            raise FileNotFoundError(f"MANO model file not found: {f} (a MANO folder must contain "
                                    f"MANO_RIGHT.pkl / MANO_LEFT.pkl, as downloaded from mano.is.tue.mpg.de)")
        return f
    if not p.is_file():
        raise FileNotFoundError(f"MANO model file not found: {p}")
    return p


def load_mano_pickle(path) -> dict:
    """Unpickle a MANO model file (latin1, as smplx does), with a clear error when chumpy is
    needed but missing."""
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except ModuleNotFoundError as e:
        if "chumpy" in str(e):
            raise ImportError(f"{path} stores chumpy arrays (the official MANO files do); install "
                              f"'chumpy' to load it (pip install chumpy)") from e
        raise


class ManoHandModel(torch.nn.Module):
    """A MANO model (smplx) with HandModel's forward signature and outputs."""

    def __init__(self, mano_path, side: str = "right", device="cpu", dtype=torch.float32,
                 tip_vertex_ids: Optional[Sequence[int]] = None):
        super().__init__()
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        try:
            import smplx
            from smplx.utils import Struct
        except ImportError as e:
            raise ImportError("ManoHandModel needs the 'smplx' package: pip install "
                              "'relit-hands[mano]' (or pip install smplx)") from e
        path = _resolve_file(mano_path, side)
        data = load_mano_pickle(path)
        # Pass the data through smplx's own constructor (data_struct), so a single file of any
        # name works and is_rhand is ours (smplx would infer it from the file name otherwise).
        self.mano = smplx.MANO(str(path.parent), is_rhand=side == "right", data_struct=Struct(**data),
                               use_pca=False, flat_hand_mean=True, dtype=dtype).to(device)
        self.side = side
        self.source = str(path)
        nv = self.mano.v_template.shape[0]
        tips = SMPLX_MANO_TIP_IDS if tip_vertex_ids is None else tuple(int(i) for i in tip_vertex_ids)
        if len(tips) != 5 or max(tips) >= nv or min(tips) < 0:
            raise ValueError(f"tip_vertex_ids must be 5 vertex ids < {nv} (thumb, index, middle, "
                             f"ring, pinky), got {tips}" +
                             ("; this model is not the 778-vertex MANO topology, pass tip_vertex_ids"
                              if tip_vertex_ids is None else ""))
        self.register_buffer("tip_ids", torch.as_tensor(tips, dtype=torch.long, device=device))
        self.parents = [int(p) for p in self.mano.parents.tolist()]
        self.faces = np.asarray(self.mano.faces, dtype=np.int64)

    @property
    def dtype(self):
        return self.mano.v_template.dtype

    @property
    def device(self):
        return self.mano.v_template.device

    def forward(self, pose, global_orient=None, transl=None, *,
                meshes: Sequence[str] = ("render", "proxy"), betas=None) -> HandOutput:
        dt, dev = self.dtype, self.device
        pose = _as_batch(pose, "pose", 45, dt, dev)
        go = None if global_orient is None else _as_batch(global_orient, "global_orient", 3, dt, dev)
        tr = None if transl is None else _as_batch(transl, "transl", 3, dt, dev)
        nb = self.mano.num_betas
        be = None if betas is None else _as_batch(betas, "betas", nb, dt, dev)
        B = max(t.shape[0] for t in (pose, go, tr, be) if t is not None)
        for name, t in (("pose", pose), ("global_orient", go), ("transl", tr), ("betas", be)):
            if t is not None and t.shape[0] not in (1, B):
                raise ValueError(f"{name}: batch size {t.shape[0]} does not match batch size {B}")
        bad = set(meshes) - {"render", "proxy"}
        if bad:
            raise ValueError(f"meshes: unknown mesh name(s) {sorted(bad)}; use 'render' and/or 'proxy'")
        pose = pose.expand(B, -1).contiguous()
        go = torch.zeros(B, 3, dtype=dt, device=dev) if go is None else go.expand(B, -1).contiguous()
        tr = torch.zeros(B, 3, dtype=dt, device=dev) if tr is None else tr.expand(B, -1).contiguous()
        be = torch.zeros(B, nb, dtype=dt, device=dev) if be is None else be.expand(B, -1).contiguous()
        out = self.mano(betas=be, global_orient=go, hand_pose=pose, transl=tr)
        verts, joints = out.vertices, out.joints
        # joint world transforms with the same kinematics (rest joints of the shaped template)
        v_shaped = self.mano.v_template + torch.einsum("bl,mkl->bmk", be, self.mano.shapedirs)
        J = torch.einsum("bik,ji->bjk", v_shaped, self.mano.J_regressor)
        rot = rodrigues(torch.cat([go, pose], 1).reshape(B, 16, 3))
        G, _ = rigid_transforms(rot, J, self.parents)
        G = torch.cat([torch.cat([G[..., :3, :3], (G[..., :3, 3] + tr[:, None]).unsqueeze(-1)], -1),
                       G[..., 3:, :]], -2)
        keypoints = torch.cat([joints, verts[:, self.tip_ids]], 1)
        return HandOutput(render_vertices=verts if "render" in meshes else None,
                          proxy_vertices=verts if "proxy" in meshes else None,
                          joints=joints, keypoints=keypoints, joint_transforms=G)
