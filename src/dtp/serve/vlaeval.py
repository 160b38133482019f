"""vla-eval's model-server protocol, through vla-eval's own `PredictModelServer` (optional dependency).

vla-eval (PyPI `vla-eval`, tested with 0.8.0) sends HELLO, then per episode EPISODE_START
(payload {"task": {...}}), OBSERVATION x n, EPISODE_END; an observation is
{"images": {camera: uint8 (H, W, 3)}, "task_description": str, "state": float (P,)}.
Replies also carry {"server_timing": {"infer_ms": ...}} (the DTP step's time), as openpi's do.
Each episode gets its own DTPPolicy, reset with the task's "seed" when the benchmark sends one
(ours does), so a run equals in-process `run_episode` on the same seeds. An observation may ask
for diagnostics with {"dtp_diagnostics": True}; the reply is {"actions": float32 (A,)} plus
{"dtp": {...}} when asked (or when the server was started with diagnostics on).
With `max_batch` > 1, concurrent episodes' observations are stepped together through dtp's own
gathering queue (dtp.serve.batcher, not vla-eval's predict_batch dispatch, which fails a whole
batch on one bad observation); the reply's "server_timing" then also says its "batch_size".
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..errors import ConfigError, InputError
from ..models.base import Observation
from .batcher import Batcher
from .session import ServedPolicy, Session, make_observation

log = logging.getLogger(__name__)

try:
    from vla_eval.model_servers.predict import PredictModelServer
    from vla_eval.specs import LANGUAGE, IMAGE_RGB, DimSpec
except ImportError as e:  # the optional dependency is missing: say how to get it when used
    PredictModelServer = None  # type: ignore[assignment,misc]
    _IMPORT_ERROR: ImportError | None = e
else:
    _IMPORT_ERROR = None

__all__ = ["DTPModelServer", "run_vla_eval", "require_vla_eval"]


def require_vla_eval() -> None:
    if _IMPORT_ERROR is not None:
        raise ConfigError(f"--protocol vla-eval needs vla-eval: pip install 'dtp[serve]' ({_IMPORT_ERROR})")


if PredictModelServer is not None:

    class DTPModelServer(PredictModelServer):
        """A DTP-wrapped policy as a vla-eval model server (single predict, no chunking)."""

        def __init__(self, served: ServedPolicy, *, camera: str | None = None, diagnostics: bool = False,
                     action_spec: dict[str, DimSpec] | None = None, max_batch: int = 1, batch_window_s: float = 0.005):
            super().__init__()
            self.served = served
            self.camera = camera  # which of obs["images"] the model sees; None: the first one
            self.always_diagnostics = diagnostics
            self.action_spec = dict(action_spec or {})
            self._sessions: dict[tuple[str, str], Session] = {}  # (session id, episode id) -> episode state
            # max_batch 1: vla-eval's own dispatch calls predict, one observation at a time
            self._batcher = None if max_batch == 1 else Batcher(
                self._step_batch, max_batch=max_batch, window_s=batch_window_s,
                executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="dtp-serve"),
                sessions=lambda: len(served.sessions))

        async def on_observation(self, obs: Any, ctx: Any) -> None:
            if self._batcher is None:
                return await super().on_observation(obs, ctx)
            session, observation, want = self._parse(obs, ctx)  # a bad one fails here, alone
            await ctx.send_action(await self._batcher.submit(session, (session, observation, want)))

        def _step_batch(self, items: list[tuple[Session, Observation, bool]]) -> list[dict[str, Any]]:
            t0 = time.perf_counter()
            replies = self.served.step_sessions(*map(list, zip(*items)))
            timing = {"infer_ms": 1000 * (time.perf_counter() - t0), "batch_size": len(items)}
            return [self._reply(action, diag, timing) for action, diag in replies]

        @staticmethod
        def _reply(action: Any, diag: dict[str, Any] | None, timing: dict[str, Any]) -> dict[str, Any]:
            reply: dict[str, Any] = {"actions": action, "server_timing": dict(timing)}
            if diag is not None:
                reply["dtp"] = diag
            return reply

        async def on_episode_start(self, config: dict[str, Any], ctx: Any) -> None:
            await super().on_episode_start(config, ctx)
            task = config.get("task") if isinstance(config.get("task"), dict) else {}
            seed = task.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                seed = 0  # other benchmarks' tasks need not carry our scene seed
            old = self._sessions.pop((ctx.session_id, ctx.episode_id), None)
            if old is not None:
                old.close()
            self._sessions[(ctx.session_id, ctx.episode_id)] = self.served.open_session(seed)

        async def on_episode_end(self, result: dict[str, Any], ctx: Any) -> None:
            """An episode ends (or its client disconnects: vla-eval calls this then too): free its state."""
            await super().on_episode_end(result, ctx)
            session = self._sessions.pop((ctx.session_id, ctx.episode_id), None)
            if session is not None:
                session.close()

        def predict(self, obs: dict[str, Any], ctx: Any) -> dict[str, Any]:
            session, observation, want = self._parse(obs, ctx)
            t0 = time.perf_counter()
            action, diag = session.step(observation, want_diagnostics=want)
            return self._reply(action, diag, {"infer_ms": 1000 * (time.perf_counter() - t0)})

        def _parse(self, obs: Any, ctx: Any) -> tuple[Session, Observation, bool]:
            """(the episode's session, the observation, whether diagnostics are wanted); InputError if malformed."""
            session = self._sessions.get((ctx.session_id, ctx.episode_id))
            if session is None:
                raise InputError("observation outside an episode: send episode_start first")
            if not isinstance(obs, dict):
                raise InputError(f"an observation must be a map, got {type(obs).__name__}")
            images = obs.get("images")
            if not isinstance(images, dict) or not images:
                raise InputError("the observation has no 'images' map {camera: uint8 (H, W, 3)}")
            if self.camera is not None and self.camera not in images:
                raise InputError(f"no camera {self.camera!r} in the observation; it has {sorted(images)}")
            image = images[self.camera] if self.camera is not None else next(iter(images.values()))
            if "task_description" not in obs:
                raise InputError("the observation has no 'task_description'")
            observation = make_observation(image, obs["task_description"], obs.get("state"))
            return session, observation, self.always_diagnostics or bool(obs.get("dtp_diagnostics", False))

        def get_action_spec(self) -> dict[str, DimSpec]:
            return dict(self.action_spec)

        def get_observation_spec(self) -> dict[str, DimSpec]:
            return {"image": IMAGE_RGB, "language": LANGUAGE}

else:  # pragma: no cover - only without the optional dependency

    class DTPModelServer:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any):
            require_vla_eval()


def run_vla_eval(served: ServedPolicy, host: str, port: int, on_listening: Callable[[int], None], *,
                 api_key: str | None = None, diagnostics: bool = False,
                 action_spec: dict[str, Any] | None = None, max_batch: int = 1, batch_window_s: float = 0.005) -> None:
    """Serve with vla-eval's own `serve_async` until SIGTERM or SIGINT."""
    require_vla_eval()
    if api_key:
        raise ConfigError("vla-eval's client sends no API key; --api-key works with --protocol openpi only")
    import anyio
    from vla_eval.model_servers.serve import serve_async

    server = DTPModelServer(served, diagnostics=diagnostics, action_spec=action_spec, max_batch=max_batch,
                            batch_window_s=batch_window_s)

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                bound = await tg.start(serve_async, server, host, port)
                on_listening(bound)
                async for _ in signals:
                    log.info("stopping: closing connections")
                    tg.cancel_scope.cancel()
                    break

    anyio.run(main)
