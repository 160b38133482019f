"""What robosuite's offscreen renderer spends a LIBERO frame on: shadows, reflections, multisampling.

    python -m dtp.envs.libero.render_probe [--size 128] [--frames 40]

Times robosuite's own render context (render + readback) on `libero_object/0`'s test state 0 under
each setting, twice interleaved (the machine's load drifts), and compares each frame with the
default one. Prints one JSON line per setting and pass.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SETTINGS = (  # name, scene flags off, model visual settings
    ("default", (), {}),
    ("no shadows", ("mjRND_SHADOW",), {}),
    ("no reflections", ("mjRND_REFLECTION",), {}),
    ("shadow map 1024", (), {"shadowsize": 1024}),
    ("buffer at image size", (), {"offwidth": None, "offheight": None}),
    ("no multisampling", (), {"offsamples": 0}),
)


def probe(size: int, frames: int) -> list[dict]:
    import mujoco

    from ...seeds import scene_seed
    from ..benchmark import make_env

    env = make_env("libero_object/0", image_size=size)
    env.reset(seed=scene_seed(0, 0))
    ctx = env._env.sim._render_context_offscreen
    model, cam = env.model, env.model.camera("agentview").id
    quality, glob = model.vis.quality, model.vis.global_
    defaults = {"shadowsize": quality.shadowsize, "offsamples": quality.offsamples,
                "offwidth": glob.offwidth, "offheight": glob.offheight}

    def frame() -> np.ndarray:
        ctx.render(size, size, camera_id=cam)
        return ctx.read_pixels(size, size)[::-1, ::-1].copy()

    rows, reference = [], None
    try:
        for rep in range(2):
            for name, flags, vis in SETTINGS:
                values = {k: (size if v is None else v) for k, v in vis.items()}
                quality.shadowsize = values.get("shadowsize", defaults["shadowsize"])
                quality.offsamples = values.get("offsamples", defaults["offsamples"])
                glob.offwidth = values.get("offwidth", defaults["offwidth"])
                glob.offheight = values.get("offheight", defaults["offheight"])
                ctx.gl_ctx.make_current()
                ctx.con.free()
                ctx._set_mujoco_context_and_buffers()
                for flag in ("mjRND_SHADOW", "mjRND_REFLECTION"):
                    ctx.scn.flags[getattr(mujoco.mjtRndFlag, flag)] = 0 if flag in flags else 1
                image = frame()
                reference = image if reference is None else reference
                times = []
                for _ in range(frames):
                    t0 = time.perf_counter()
                    frame()
                    times.append(time.perf_counter() - t0)
                rows.append({"setting": name, "pass": rep, "render_ms": round(1000 * float(np.median(times)), 1),
                             "mean_abs_diff": round(float(np.abs(image.astype(int) - reference).mean()), 2),
                             "identical": bool(np.array_equal(image, reference))})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        env.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dtp.envs.libero.render_probe", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=40)
    args = p.parse_args(argv)
    probe(args.size, args.frames)


if __name__ == "__main__":
    main()
