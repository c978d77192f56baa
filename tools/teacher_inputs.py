r"""Per-texel conditioning of the teacher (RelightableHands' OLAT teacher), in UV space.

    geo = TexelConditioning(engine_or_asset, resolution=256).geometry(scene)      # once per pose
    cond = geo.point_lights(light_positions [L,3], camera_centre [3])          # [H, L, C, R, R]
    cond = geo.directional_lights(directions [L,3], camera_centre [3])

Per pose (computed once and reused for every light, camera and environment):

* both hands' full-resolution render meshes are skinned (:class:`~relit_hands.hand_model.HandModel`);
  per-vertex normals (area weighted), per-UV-vertex tangent frames (``dP/du``, ``dP/dv`` of the
  UV-parameterised triangles, area weighted, so the frame follows the atlas charts) and positions
  are gathered to texels with a :class:`~relit_hands.uv_maps.UVRasterizer` on the render mesh's UV
  layout (``render_uvs`` / ``render_uv_faces``). The left hand is the mirror of the right one and
  shares its UV layout; the lookup's barycentrics follow the RIGHT hand's corner order, so both
  hands gather with the right hand's ``render_faces`` / ``render_uv_faces`` (as
  ``Engine.lighting_features`` does for the proxy).
* Local frame per texel: ``N`` = interpolated vertex normal; ``T`` = the tangent (+u direction)
  Gram-Schmidt'ed against N; ``B`` = the bitangent (+v direction) orthogonalised against N and T
  (conventions.md: tangent = +u, bitangent = +v). ``B`` is *not* ``N x T``: on the mirrored left
  hand the frame is left-handed, which is exactly what makes a light's local coordinates on the
  left hand equal to those of the mirrored light on the right hand (both hands share one network).
* Pose vector per hand (``POSE_DIM`` = 94): own 45-D pose, the other hand's 45-D pose (zeros when
  absent; left-hand poses are mirrored into the right-hand convention with ``mirror_pose``), a
  presence flag and the other wrist's position in this hand's wrist frame (z mirrored for the
  left hand, metres).

Per light (batched over lights; channels ``COND_NAMES``, C = 9):

* ``l_t, l_b, l_n``: unit direction texel -> light in the local frame (point light: towards its
  position; directional: the direction itself);
* ``log_dist``: ``log(d / d_ref)`` with ``d`` the texel-light distance (point light) and 0 for
  directional lights (a directional light is treated as a light at the reference distance
  ``d_ref`` -- the light stage's typical distance, stored with the teacher -- whose irradiance is
  given directly);
* ``v_t, v_b, v_n``: unit direction texel -> camera centre in the local frame;
* ``vis``: visibility of the light from the posed full-resolution geometry of BOTH hands: one
  occlusion ray per render vertex (origin offset ``epsilon`` along the normal; point light:
  towards its position -- the rig has nothing beyond the lights, so the unbounded ray equals the
  segment test; directional: along the direction), Embree when available; back-facing vertices
  (``n.l <= 0``) count as not visible; per-vertex 0/1 gathered to texels (soft at shadow edges);
* ``ndotl``: ``n.l`` (signed; the teacher applies ``max(0, .)`` itself).

* ``transmit`` (only with ``mean_free_path`` > 0, C = 10): light crossing the hand from behind,
  per render vertex ``exp(-thickness / mfp) * [exit visible] * max(0, -n.l)`` with the thickness
  and exit visibility of :func:`relit_hands.translucency.proxy_transmittance` cast against both
  hands' render meshes (towards the point light's position or along the direction), gathered
  to texels; 0 where the light is in front of the surface.

``falloff`` [H, L, 1, R, R]: ``1 / d^2`` for point lights (W/sr -> W/m^2), 1 for directional.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from relit_hands import raycast
from relit_hands.hand_model import HandAsset, HandModel, mirror_pose, vertex_normals
from relit_hands.uv_maps import UVRasterizer

__all__ = ["COND_NAMES", "POSE_DIM", "TexelConditioning", "PoseGeometry", "pose_vector", "EPSILON", "cond_names"]

COND_NAMES = ("l_t", "l_b", "l_n", "log_dist", "v_t", "v_b", "v_n", "vis", "ndotl")


def cond_names(mean_free_path: float = 0.0) -> tuple:
    """The conditioning channels: :data:`COND_NAMES`, plus ``transmit`` with a translucency
    mean free path > 0 (module docstring)."""
    return COND_NAMES + (("transmit",) if mean_free_path else ())
POSE_DIM = 94
EPSILON = 1e-4  # ray origin offset along the normal (metres), as raycast.DEFAULT_EPSILON scale


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pose_vector(scene, outputs: dict) -> torch.Tensor:
    """[H, POSE_DIM] float32 pose conditioning (module docstring) in ``scene.hands`` order.
    ``outputs`` {side: HandOutput} of the posed hands (wrist transforms)."""
    vecs = []
    hands = scene.hands
    for h in hands:
        own = h.pose if h.side == "right" else mirror_pose(h.pose)
        other = next((o for o in hands if o.side != h.side), None)
        if other is None:
            oth = np.zeros(45, np.float32)
            flag, rel = 0.0, np.zeros(3, np.float32)
        else:
            oth = other.pose if other.side == "right" else mirror_pose(other.pose)
            G = _np(outputs[h.side].joint_transforms[0, 0])
            jo = _np(outputs[other.side].joints[0, 0])
            rel = G[:3, :3].T @ (jo - G[:3, 3])
            if h.side == "left":
                rel = rel * np.array([1.0, 1.0, -1.0])
            flag = 1.0
        vecs.append(np.concatenate([np.asarray(own, np.float32), np.asarray(oth, np.float32),
                                    [flag], np.asarray(rel, np.float32)]))
    return torch.as_tensor(np.stack(vecs), dtype=torch.float32)


@dataclass
class PoseGeometry:
    """Per-pose texel geometry (hands in ``sides`` order); see the module docstring."""

    sides: list
    position: torch.Tensor      # [H,3,R,R] world
    normal: torch.Tensor        # [H,3,R,R] unit
    tangent: torch.Tensor       # [H,3,R,R] unit
    bitangent: torch.Tensor     # [H,3,R,R] unit
    valid: torch.Tensor         # [R,R] bool, texels with a lookup
    pose: torch.Tensor          # [H,POSE_DIM]
    vertices: list              # per hand [Vr,3] world (posed render mesh)
    vertex_normals: list        # per hand [Vr,3]
    faces: list                 # per hand [F,3] (each side's own winding, for ray casting)
    owner: "TexelConditioning"
    vis_cache: dict = field(default_factory=dict, repr=False)

    @property
    def resolution(self) -> int:
        return int(self.position.shape[-1])

    def local(self, vec: torch.Tensor) -> torch.Tensor:
        """World vectors [H, L, 3, R, R] -> local (t, b, n) coordinates [H, L, 3, R, R]."""
        T, B, N = (x[:, None] for x in (self.tangent, self.bitangent, self.normal))
        return torch.stack([(vec * T).sum(2), (vec * B).sum(2), (vec * N).sum(2)], 2)

    def _per_light_set(self, what: str, light_pos=None, light_dirs=None) -> list:
        """``owner.vertex_<what>`` of this pose for a light set, cached per set (it does not
        depend on the camera)."""
        a = np.asarray(light_pos if light_pos is not None else light_dirs, np.float32)
        key = (what, light_pos is not None, a.tobytes())
        hit = self.vis_cache.get(key)
        if hit is None:
            hit = getattr(self.owner, f"vertex_{what}")(self, light_pos=light_pos, light_dirs=light_dirs)
            if len(self.vis_cache) > 64:
                self.vis_cache.clear()
            self.vis_cache[key] = hit
        return hit

    def vertex_visibility(self, light_pos=None, light_dirs=None) -> list:
        """Per hand [Vr, L] float visibility of point lights (positions [L,3]) or directions [L,3]
        from every posed render vertex, against both hands' render meshes."""
        return self._per_light_set("visibility", light_pos, light_dirs)

    def vertex_transmittance(self, light_pos=None, light_dirs=None) -> list:
        """Per hand [Vr, L] translucency channel of every posed render vertex (module docstring)."""
        return self._per_light_set("transmittance", light_pos, light_dirs)

    def _conditioning(self, ldir, dist, vis_v, camera_centre, trans_v=None):
        H = len(self.sides)
        R = self.resolution
        L = ldir.shape[1]
        c = torch.as_tensor(np.asarray(camera_centre, np.float32)).reshape(1, 1, 3, 1, 1)
        view = F.normalize(c - self.position[:, None], dim=2)                     # [H,1,3,R,R]
        l_loc = self.local(ldir)
        v_loc = self.local(view).expand(H, L, 3, R, R)
        uv = self.owner.rasterizer
        faces = self.owner.right_faces
        vis = None
        if vis_v is not None:
            vis = torch.stack([uv.gather(vis_v[h][None], faces, contiguous=True)[0] for h in range(H)], 0)
        if vis is None:
            vis = torch.ones(H, L, R, R)
        logd = torch.log(dist / self.owner.d_ref)
        parts = [l_loc, logd, v_loc, vis[:, :, None], l_loc[:, :, 2:3]]
        if trans_v is not None:
            parts.append(torch.stack([uv.gather(trans_v[h][None], faces, contiguous=True)[0]
                                      for h in range(H)], 0)[:, :, None])
        cond = torch.cat(parts, 2)
        cond = cond * self.valid.to(cond.dtype)
        return cond

    def point_lights(self, positions, camera_centre, *, visibility: bool = True):
        """(cond [H,L,9,R,R], falloff [H,L,1,R,R]) for point lights at ``positions`` [L,3]."""
        p = torch.as_tensor(np.asarray(positions, np.float32)).reshape(-1, 3)
        wl = p[None, :, :, None, None] - self.position[:, None]                    # [H,L,3,R,R]
        d = wl.norm(dim=2, keepdim=True).clamp_min(1e-4)
        ldir = wl / d
        vis_v = self.vertex_visibility(light_pos=p) if visibility else None
        trans_v = self.vertex_transmittance(light_pos=p) if self.owner.mean_free_path else None
        cond = self._conditioning(ldir, d, vis_v, camera_centre, trans_v)
        falloff = (1.0 / d ** 2) * self.valid.to(d.dtype)
        return cond, falloff

    def directional_lights(self, directions, camera_centre, *, visibility: bool = True):
        """(cond [H,L,9,R,R], falloff = ones [H,L,1,R,R]) for directions [L,3] (towards the light)."""
        w = F.normalize(torch.as_tensor(np.asarray(directions, np.float32)).reshape(-1, 3), dim=-1)
        H, R, L = len(self.sides), self.resolution, w.shape[0]
        ldir = w[None, :, :, None, None].expand(H, L, 3, R, R)
        d = torch.full((H, L, 1, R, R), float(self.owner.d_ref))
        vis_v = self.vertex_visibility(light_dirs=w) if visibility else None
        trans_v = self.vertex_transmittance(light_dirs=w) if self.owner.mean_free_path else None
        cond = self._conditioning(ldir, d, vis_v, camera_centre, trans_v)
        return cond, self.valid.to(torch.float32).expand(H, L, 1, R, R)


class TexelConditioning:
    """Builds :class:`PoseGeometry` for scenes (module docstring). ``source``: an
    :class:`~relit_hands.engine.Engine` (its hand models are reused), a :class:`HandAsset` or None
    (the shipped asset)."""

    def __init__(self, source=None, resolution: int = 256, *, d_ref: float = 1.0,
                 raycast_backend: str = "auto", epsilon: float = EPSILON, mean_free_path: float = 0.0):
        if source is not None and hasattr(source, "models"):
            self.asset = source.asset
            self.models = source.models
        else:
            self.asset = source if isinstance(source, HandAsset) else HandAsset.load(source)
            self.models = {s: HandModel(self.asset, s) for s in ("right", "left")}
        a = self.asset
        self.resolution = int(resolution)
        self.d_ref = float(d_ref)
        self.epsilon = float(epsilon)
        self.mean_free_path = float(mean_free_path)  # > 0: the 'transmit' channel (module docstring)
        self.rasterizer = UVRasterizer(a.render_uvs, a.render_uv_faces, self.resolution)
        self.right_faces = torch.as_tensor(a.render_faces.astype(np.int64))
        self.right_uv_faces = torch.as_tensor(a.render_uv_faces.astype(np.int64))
        self.uvs = torch.as_tensor(a.render_uvs, dtype=torch.float32)
        self.valid = torch.from_numpy(self.rasterizer.valid.copy())
        self.mask = torch.from_numpy(self.rasterizer.mask.copy())
        from relit_hands.backends import resolve

        # the conditioning's geometry is built on the CPU (offline training and relighting)
        self.caster = raycast.get_backend(resolve("raycast", raycast_backend, "cpu"))

    # ----------------------------------------------------------------------------------
    def _tangent_frames(self, verts: torch.Tensor):
        """Per-UV-vertex tangent (+u) and bitangent (+v) [Tuv,3] of one posed hand (right-hand
        corner order; valid for the mirrored left hand too)."""
        f, uf = self.right_faces, self.right_uv_faces
        p0, p1, p2 = verts[f[:, 0]], verts[f[:, 1]], verts[f[:, 2]]
        t0, t1, t2 = self.uvs[uf[:, 0]], self.uvs[uf[:, 1]], self.uvs[uf[:, 2]]
        e1, e2 = p1 - p0, p2 - p0
        d1, d2 = t1 - t0, t2 - t0
        det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        s = torch.where(det.abs() > 1e-12, 1.0 / det, torch.zeros_like(det))[:, None]
        dpdu = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * s
        dpdv = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * s
        # area weight (in 3-D): |e1 x e2| / |dpdu|.. use the plain sums of the UV-normalised
        # derivatives weighted by the 3-D area
        area = torch.cross(e1, e2, dim=-1).norm(dim=-1, keepdim=True)
        w = area / (dpdu.norm(dim=-1, keepdim=True) + 1e-12)
        wv = area / (dpdv.norm(dim=-1, keepdim=True) + 1e-12)
        n_uv = self.uvs.shape[0]
        T = torch.zeros(n_uv, 3).index_add_(0, uf.reshape(-1), (dpdu * w).repeat_interleave(3, 0))
        Bv = torch.zeros(n_uv, 3).index_add_(0, uf.reshape(-1), (dpdv * wv).repeat_interleave(3, 0))
        return T, Bv

    def geometry(self, scene) -> PoseGeometry:
        """Skin both hands and gather their texel frames / positions (module docstring)."""
        outs = {}
        with torch.no_grad():
            for h in scene.hands:
                outs[h.side] = self.models[h.side](h.pose, h.global_orient, h.transl, meshes=("render",))
        uv = self.rasterizer
        pos, nrm, tan, bit, verts, vnorms, faces = [], [], [], [], [], [], []
        for h in scene.hands:
            v = outs[h.side].render_vertices[0].float()
            fs = self.models[h.side].render_faces
            n = vertex_normals(v, fs)
            T, Bv = self._tangent_frames(v)
            m = uv.gather(torch.cat([v, n], 1), self.right_faces, contiguous=True)[0]    # [6,R,R]
            tb = uv.gather(torch.cat([T, Bv], 1), self.right_uv_faces, contiguous=True)[0]
            N = F.normalize(m[3:6], dim=0)
            Tt = tb[0:3] - (tb[0:3] * N).sum(0, keepdim=True) * N
            Tt = F.normalize(Tt, dim=0)
            Bt = tb[3:6] - (tb[3:6] * N).sum(0, keepdim=True) * N - (tb[3:6] * Tt).sum(0, keepdim=True) * Tt
            Bt = F.normalize(Bt, dim=0)
            pos.append(m[0:3])
            nrm.append(N)
            tan.append(Tt)
            bit.append(Bt)
            verts.append(v)
            vnorms.append(n)
            faces.append(fs)
        return PoseGeometry(sides=[h.side for h in scene.hands], position=torch.stack(pos),
                            normal=torch.stack(nrm), tangent=torch.stack(tan), bitangent=torch.stack(bit),
                            valid=self.valid, pose=pose_vector(scene, outs), vertices=verts,
                            vertex_normals=vnorms, faces=faces, owner=self)

    @classmethod
    def for_teacher(cls, source, teacher, resolution: int | None = None, **kw) -> "TexelConditioning":
        """The conditioning a teacher was trained with: its resolution (unless given), reference
        distance, translucency mean free path and hand asset (``source`` None: the teacher's own
        asset; an Engine or asset of another atlas is refused, naming both)."""
        from relit_hands.hand_model import asset_mismatch, asset_path

        ref = getattr(teacher, "asset_ref", None)
        if source is None:
            source = asset_path(ref)
        else:
            wrong = asset_mismatch(ref, source)
            if wrong:
                raise ValueError(f"the teacher was {wrong}")
        return cls(source, resolution or teacher.resolution, d_ref=teacher.d_ref,
                   mean_free_path=teacher.mean_free_path, **kw)

    def _scene(self, geo: PoseGeometry):
        """Both hands' posed render meshes in one scene: (vertices [M,3], normals [M,3], offsets)."""
        counts = [int(v.shape[0]) for v in geo.vertices]
        offs = np.concatenate([[0], np.cumsum(counts)])
        allf = torch.cat([f + int(offs[i]) for i, f in enumerate(geo.faces)], 0)
        return torch.cat(geo.vertices, 0), torch.cat(geo.vertex_normals, 0), allf, offs

    def _light_directions(self, allv, light_pos=None, light_dirs=None) -> torch.Tensor:
        """[L, M, 3] unit directions from every vertex towards each point light (or direction)."""
        if light_pos is not None:
            p = torch.as_tensor(light_pos, dtype=torch.float32).reshape(-1, 3)
            return F.normalize(p[:, None, :] - allv[None], dim=-1)
        w = F.normalize(torch.as_tensor(light_dirs, dtype=torch.float32).reshape(-1, 3), dim=-1)
        return w[:, None, :].expand(-1, allv.shape[0], 3)

    def vertex_transmittance(self, geo: PoseGeometry, light_pos=None, light_dirs=None) -> list:
        """Per hand [Vr, L] ``exp(-thickness / mfp) * [exit visible] * max(0, -n.l)`` (module
        docstring; the casts of :func:`relit_hands.translucency.thickness_along`)."""
        from relit_hands.translucency import thickness_along

        allv, alln, allf, offs = self._scene(geo)
        d = self._light_directions(allv, light_pos, light_dirs)                     # [L, M, 3]
        L, M = d.shape[:2]
        cos_back = -(d * alln[None]).sum(-1)                                         # [L, M]
        idx = torch.nonzero((cos_back > 0).reshape(-1), as_tuple=False).squeeze(1)
        out = torch.zeros(L * M)
        if idx.numel():
            self.caster.build(allv, allf)
            vi = idx % M
            t, blocked, _ = thickness_along(self.caster, allv[vi], alln[vi], d.reshape(-1, 3)[idx], self.epsilon)
            out[idx] = torch.exp(-t / self.mean_free_path) * (~blocked).float() * cos_back.reshape(-1)[idx]
        out = out.view(L, M).T                                                       # [M, L]
        return [out[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]

    def vertex_visibility(self, geo: PoseGeometry, light_pos=None, light_dirs=None) -> torch.Tensor:
        allv, alln, allf, offs = self._scene(geo)
        counts = np.diff(offs)
        self.caster.build(allv, allf)
        M = allv.shape[0]
        d = self._light_directions(allv, light_pos, light_dirs)                     # [L,M,3]
        L = d.shape[0]
        front = (d * alln[None]).sum(-1) > 0                                           # [L,M]
        idx = torch.nonzero(front.reshape(-1), as_tuple=False).squeeze(1)
        vis = torch.zeros(L * M, dtype=torch.bool)
        if idx.numel():
            o = (allv + self.epsilon * alln)[None].expand(L, M, 3).reshape(-1, 3)[idx]
            occ = self.caster.occluded(o, d.reshape(-1, 3)[idx])
            vis[idx] = ~occ.cpu()
        vis = vis.view(L, M).T.float()                                                 # [M,L]
        return [vis[offs[i]:offs[i + 1]] for i in range(len(counts))]
