"""Offscreen MuJoCo rendering on the CPU: GL backend choice, the benchmark camera, renderers.

MuJoCo picks its GL backend when it is first imported, so this module sets
MUJOCO_GL=egl (if unset) before importing it; other modules of `dtp.envs` import
`mujoco` from here. `mujoco.Renderer` is used directly with shadows, reflections and
the skybox off (several times faster than gymnasium's renderer here).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (must follow the MUJOCO_GL default above)
import numpy as np  # noqa: E402

from dtp.envs.errors import RenderBackendError  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["mujoco", "CameraSpec", "CAMERAS", "DEFAULT_CAMERA", "add_cameras", "make_renderer", "closer"]


@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera added to the scene: position, point looked at, vertical field of view."""

    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float

    def xyaxes(self) -> np.ndarray:
        """Camera x (right) and y (up) axes in world frame, keeping the image upright."""
        pos, look = np.asarray(self.pos, float), np.asarray(self.lookat, float)
        fwd = (look - pos) / np.linalg.norm(look - pos)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        return np.concatenate([right, up])


# Cameras this package adds to every task's scene (names are prefixed "dtp_").
# "dtp_main": right of the robot, 50 degrees above the table, 25 degrees toward the robot
# from side-on, 1.15 m from the workspace centre; sees gripper, puck, goals (up to 0.3 m
# high), button box, drawer handle and the whole distractor area for all five tasks.
CAMERAS: dict[str, CameraSpec] = {
    "dtp_main": CameraSpec(pos=(0.67, 0.388, 0.931), lookat=(0.0, 0.7, 0.05), fovy=40.0),
    "dtp_top": CameraSpec(pos=(0.0, 0.68, 1.25), lookat=(0.0, 0.7, 0.0), fovy=45.0),
}
DEFAULT_CAMERA = "dtp_main"

# Meta-World's own cameras whose "up" axis points at the floor: their frames are turned
# 180 degrees (rows and columns reversed; reversing rows alone would mirror the scene).
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})


def add_cameras(spec: "mujoco.MjSpec") -> None:
    """Add this package's fixed cameras to a scene spec (before compiling)."""
    for name, cam in CAMERAS.items():
        c = spec.worldbody.add_camera(name=name, pos=list(cam.pos), fovy=cam.fovy)
        c.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        c.alt.xyaxes = cam.xyaxes()


def make_renderer(model: "mujoco.MjModel", size: int) -> "mujoco.Renderer":
    """A square offscreen renderer with shadows, reflections and skybox off.

    Raises RenderBackendError, saying what to install or set, when no GL backend works.
    """
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
    model.vis.global_.offheight = max(model.vis.global_.offheight, size)
    try:
        renderer = mujoco.Renderer(model, size, size)
    except Exception as exc:  # backend failures surface as several exception types
        backend = os.environ.get("MUJOCO_GL", "<unset>")
        raise RenderBackendError(
            f"MuJoCo could not open an offscreen OpenGL context (MUJOCO_GL={backend}): {exc}. "
            "On a headless Linux machine install Mesa's EGL (Debian/Ubuntu: "
            "`apt-get install libegl1 libgl1-mesa-dri`) and set MUJOCO_GL=egl before "
            "anything imports mujoco; or install libosmesa6 and set MUJOCO_GL=osmesa "
            "(slower); on a desktop with a display MUJOCO_GL=glfw also works."
        ) from exc
    for flag in (
        mujoco.mjtRndFlag.mjRND_SHADOW,
        mujoco.mjtRndFlag.mjRND_REFLECTION,
        mujoco.mjtRndFlag.mjRND_SKYBOX,
    ):
        renderer.scene.flags[flag] = 0
    return renderer


def closer(renderer: "mujoco.Renderer") -> Callable[[], None]:
    """A function that closes `renderer` once; also run at interpreter exit if never called.

    MuJoCo's EGL module terminates the display at exit; a renderer still open then
    prints EGL errors from its destructor. The exit hook is registered after the GL
    context exists, so (exit hooks run last-in first-out) it runs before that.
    """
    ref = weakref.ref(renderer)

    def close() -> None:
        atexit.unregister(close)
        r = ref()
        if r is not None:
            r.close()

    atexit.register(close)
    return close
