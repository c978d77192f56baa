"""Relit Hands: real-time relightable two-hand rendering (RelightableHands-style).

The public API: :class:`Engine` (posed hands + environment + camera -> image, timed per stage),
:class:`EnvironmentMap`, :class:`Camera`, :class:`HandModel` / :class:`HandAsset`, :class:`Scene` /
:class:`HandState`, :func:`scene_preset` and :func:`export_gltf` (a frame's relit hands as .glb).
Conventions: docs/conventions.md.
"""
from .camera import Camera
from .engine import Engine, Frame
from .environment import EnvironmentMap
from .gltf_export import export_gltf
from .hand_model import HandAsset, HandModel
from .scene import HandState, Scene, scene_preset

__version__ = "0.1.0"
__all__ = ["Camera", "Engine", "Frame", "EnvironmentMap", "HandAsset", "HandModel", "HandState", "Scene",
           "export_gltf", "scene_preset"]
