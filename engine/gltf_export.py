"""glTF 2.0 binary (.glb) export of one frame's posed hands with their relit UV textures.

    sf = engine.render_student(scene, env, camera)
    export_gltf("hands.glb", engine, scene, sf)

What the file holds, per hand of the scene (in scene order):

* a node named ``right`` / ``left`` (identity transform) with a mesh ``right_hand`` / ``left_hand`` of
  one triangle primitive;
* ``POSITION``: the render mesh's vertices after skinning (float32, metres, world frame -- glTF's
  frame is ours: right-handed, +Y up, metres, so no conversion); ``NORMAL``: area-weighted unit
  vertex normals of the posed mesh; ``TEXCOORD_0``: the shared UV atlas; ``indices``: uint32
  triangles, counter-clockwise = outward (glTF front faces), in the render mesh's face order;
* **vertex count**: glTF has one UV per vertex, so every distinct (position, UV) corner pair of the
  render mesh is one vertex -- the render mesh's vertices plus their copies along UV seams, exactly
  the renderer's own GPU vertices (:attr:`HandDrawable.num_vertices`, ``pos_index``);
* a material ``<side>_relit``: ``baseColorTexture`` = the student's predicted radiance texture of the
  frame, exposure ``2^exposure_ev``, tone mapped (``tonemap``) and sRGB encoded by the compositor's own
  tone-mapping pass (:meth:`Compositor.tone_map`) -- an 8-bit sRGB PNG of R x R, as glTF's base colour
  expects; texture row 0 = v 0 (our UV convention and glTF's: no flip). The texture already holds the
  lighting, so the material carries ``KHR_materials_unlit`` (``unlit=True``, default): viewers that know
  it show the texture as is; others fall back to metallic 0 / roughness 1 PBR and light it again.
* ``scenes[0].extras``: the frame's view origin (the features are view dependent), exposure, tone
  mapping, student backend / variant.

Written with the standard library (JSON + one binary buffer, 4-byte aligned views); textures are
encoded as PNG with Pillow.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import torch

from .hand_model import vertex_normals

__all__ = ["export_gltf", "build_glb"]

_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


class _GLBWriter:
    """Collects buffer views / accessors / images into one binary buffer and glTF JSON."""

    def __init__(self):
        self.bin = bytearray()
        self.doc = {"bufferViews": [], "accessors": [], "images": []}

    def _view(self, data: bytes, target: int | None = None) -> int:
        self.bin += b"\0" * (-len(self.bin) % 4)
        view = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.bin += data
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, a: np.ndarray, *, indices: bool = False) -> int:
        """float32 [N, 2|3] vertex attribute (with min / max) or uint32 [F, 3] indices -> accessor index."""
        if indices:
            a = np.ascontiguousarray(a, np.uint32).reshape(-1)
            acc = {"componentType": _UINT32, "count": len(a), "type": "SCALAR",
                   "bufferView": self._view(a.tobytes(), _ELEMENT_ARRAY_BUFFER)}
        else:
            a = np.ascontiguousarray(a, np.float32)
            acc = {"componentType": _FLOAT, "count": len(a), "type": f"VEC{a.shape[1]}",
                   "bufferView": self._view(a.tobytes(), _ARRAY_BUFFER),
                   "min": a.min(0).tolist(), "max": a.max(0).tolist()}
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def png(self, rgb: np.ndarray, name: str) -> int:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB").save(buf, format="PNG")
        self.doc["images"].append({"name": name, "mimeType": "image/png", "bufferView": self._view(buf.getvalue())})
        return len(self.doc["images"]) - 1

    def glb(self) -> bytes:
        self.bin += b"\0" * (-len(self.bin) % 4)
        self.doc["buffers"] = [{"byteLength": len(self.bin)}]
        js = json.dumps(self.doc, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 4)
        total = 12 + 8 + len(js) + 8 + len(self.bin)
        return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
                + struct.pack("<I4s", len(self.bin), b"BIN\0") + bytes(self.bin))


def export_gltf(path, engine, scene, frame, *, exposure_ev: float = 0.0, tonemap: str = "aces",
                unlit: bool = True) -> dict:
    """Write ``scene``'s posed hands with ``frame``'s relit textures to ``path`` (.glb); see
    :func:`build_glb` (the file is written under a temporary name and moved into place)."""
    from .validation import write_atomic

    path = Path(path)
    data, info = build_glb(engine, scene, frame, exposure_ev=exposure_ev, tonemap=tonemap, unlit=unlit,
                           label=f"glTF export {path}")
    write_atomic(path, lambda p: Path(p).write_bytes(data))
    return {"path": str(path), **info}


def build_glb(engine, scene, frame, *, exposure_ev: float = 0.0, tonemap: str = "aces", unlit: bool = True,
              label: str = "glTF export") -> tuple:
    """Write ``scene``'s posed hands with ``frame``'s relit textures to ``path`` (.glb).

    ``engine``: the :class:`~relit_hands.engine.Engine` that rendered ``frame`` (its hand models
    skin the meshes, its compositor tone maps the textures); ``frame``: a
    :class:`~relit_hands.engine.StudentFrame` of ``scene`` (``frame.textures`` {side: float32
    [R, R, 3] linear radiance}); ``exposure_ev`` / ``tonemap``: as for the rendered image; ``unlit``:
    add ``KHR_materials_unlit``. See the module docstring for the file's contents.

    Returns ``(glb bytes, summary)``: {'bytes', 'unlit', 'exposure_ev', 'tonemap', 'hands': {side:
    {'vertices', 'faces', 'texture': [R, R]}}} (:func:`export_gltf` adds 'path'). A texture or a
    posed mesh holding NaN / inf raises :class:`~relit_hands.validation.NonFiniteError` naming
    ``label`` (nothing is written).
    """
    from .validation import check_finite_image

    sides = [h.side for h in scene.hands]
    missing = [s for s in sides if s not in frame.textures]
    if missing:
        raise ValueError(f"the frame has no texture for the scene's {missing[0]} hand (render this scene first)")
    posed = engine.pose(scene)
    w = _GLBWriter()
    doc = w.doc
    doc["asset"] = {"version": "2.0", "generator": "relit-hands"}
    doc.update(nodes=[], meshes=[], materials=[], textures=[],
               samplers=[{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                          "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}])
    if unlit:
        doc["extensionsUsed"] = ["KHR_materials_unlit"]
    hands = {}
    for side in sides:
        asset = engine.models[side].asset
        drawable = engine.drawables[side]  # the renderer's (position, UV) vertex expansion
        verts = posed[side].render_vertices[0]
        check_finite_image(np.asarray(verts), f"{label} ({side}-hand mesh)")
        tex = frame.textures[side]
        tex = tex.detach().float().cpu().numpy() if isinstance(tex, torch.Tensor) else np.asarray(tex)
        check_finite_image(tex, f"{label} ({side}-hand texture)")
        normals = vertex_normals(verts, asset.render_faces)  # unit length
        pos_index = torch.from_numpy(drawable.pos_index)
        uvs = np.asarray(asset.render_uvs, np.float32)[drawable.uv_index]
        prim = {"attributes": {"POSITION": w.accessor(verts[pos_index].numpy()),
                               "NORMAL": w.accessor(normals[pos_index].numpy()),
                               "TEXCOORD_0": w.accessor(uvs)},
                "indices": w.accessor(drawable.indices, indices=True),
                "material": len(doc["materials"]), "mode": 4}
        rgb = engine.compositor.tone_map(tex, exposure_ev=exposure_ev, tonemap=tonemap)
        doc["textures"].append({"sampler": 0, "source": w.png(rgb, f"{side}_radiance")})
        material = {"name": f"{side}_relit",
                    "pbrMetallicRoughness": {"baseColorTexture": {"index": len(doc["textures"]) - 1},
                                             "metallicFactor": 0.0, "roughnessFactor": 1.0}}
        if unlit:
            material["extensions"] = {"KHR_materials_unlit": {}}
        doc["materials"].append(material)
        doc["meshes"].append({"name": f"{side}_hand", "primitives": [prim]})
        doc["nodes"].append({"name": side, "mesh": len(doc["meshes"]) - 1})
        hands[side] = {"vertices": int(drawable.num_vertices), "faces": int(len(drawable.indices)),
                       "texture": list(rgb.shape[:2])}
    doc["scenes"] = [{"name": scene.name or "hands", "nodes": list(range(len(sides))),
                      "extras": {"view_origin": np.asarray(frame.view_origin, float).tolist(),
                                 "exposure_ev": float(exposure_ev), "tonemap": tonemap,
                                 "student_backend": frame.backend, "student_variant": frame.variant}}]
    doc["scene"] = 0
    data = w.glb()
    return data, {"bytes": len(data), "unlit": bool(unlit), "exposure_ev": float(exposure_ev),
                  "tonemap": tonemap, "hands": hands}
