"""A benchmark env that lives in a child process, so that several envs' physics and rendering run in
parallel with each other and with the policy (`dtp eval --batch N --env-processes`).

`SubprocessEnv` exposes what an evaluation rollout uses: `reset(seed=)`, `step(action)` (also split
into `step_async` / `step_wait`), `segmentation()`, `close()`, and `unwrapped.instruction` /
`unwrapped.task`. The child builds the env with `benchmark_env(**kwargs)`; observations come back
pickled, bit for bit the ones the env would give in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from typing import Any

START_METHOD = "spawn"  # never fork a parent that runs torch threads and a GL context


def _worker(conn, kwargs: dict[str, Any], mujoco_gl: str | None) -> None:
    """The child: build the env, then answer (command, argument) messages until "close"."""
    if mujoco_gl is not None:
        os.environ["MUJOCO_GL"] = mujoco_gl  # before MuJoCo loads
    try:
        from .benchmark import benchmark_env

        env = benchmark_env(**kwargs)
        inner = getattr(env, "unwrapped", env)
        conn.send(("ok", getattr(inner, "task", None)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the child's traceback
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        cmd, arg = conn.recv()
        try:
            if cmd == "reset":
                obs, info = env.reset(seed=arg)
                out = (obs, info, inner.instruction)
            elif cmd == "step":
                out = env.step(arg)
            elif cmd == "segmentation":
                out = env.segmentation()
            elif cmd == "close":
                env.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", out))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


class SubprocessEnv:
    """A proxy for `benchmark_env(**kwargs)` built and stepped in a child process."""

    def __init__(self, **kwargs: Any) -> None:
        ctx = mp.get_context(START_METHOD)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, kwargs, os.environ.get("MUJOCO_GL")), daemon=True)
        self._proc.start()
        child.close()
        self.task = self._answer()
        self.instruction = ""
        self._stepping = False

    @property
    def unwrapped(self) -> "SubprocessEnv":
        return self

    def _answer(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the env process exited (code {self._proc.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"in the env process:\n{value}")
        return value

    def _call(self, cmd: str, arg: Any = None) -> Any:
        if self._stepping:
            raise RuntimeError("step_async without step_wait")
        self._conn.send((cmd, arg))
        return self._answer()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info, self.instruction = self._call("reset", seed)
        return obs, info

    def step_async(self, action) -> None:
        """Start a step; the child runs it while this process does other work."""
        if self._stepping:
            raise RuntimeError("step_async twice without step_wait")
        self._conn.send(("step", action))
        self._stepping = True

    def step_wait(self):
        """The (obs, reward, terminated, truncated, info) of the step step_async started."""
        self._stepping = False
        return self._answer()

    def step(self, action):
        self.step_async(action)
        return self.step_wait()

    def segmentation(self):
        return self._call("segmentation")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                if self._stepping:
                    self.step_wait()
                self._call("close")
            except (OSError, EOFError, RuntimeError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.terminate()
        self._conn.close()
