"""Relit Hands: real-time relightable two-hand rendering (RelightableHands-style).

The public API: :class:`Engine` (posed hands + environment + camera -> image, timed per stage),
:class:`EnvironmentMap`, :class:`Camera`, :class:`HandModel` / :class:`HandAsset`, :class:`Scene` /
:class:`HandState` and :func:`scene_preset`. Conventions: docs/conventions.md.
"""
from .camera import Camera
from .engine import Engine, Frame
from .environment import EnvironmentMap
from .hand_model import HandAsset, HandModel
from .scene import HandState, Scene, scene_preset

__version__ = "0.1.0"
__all__ = ["Camera", "Engine", "Frame", "EnvironmentMap", "HandAsset", "HandModel", "HandState", "Scene",
           "scene_preset"]
