"""openpi's WebSocket policy protocol, so `openpi_client.WebsocketClientPolicy` drives a DTP policy.

Wire format (openpi-client 0.1.2, `openpi_client/msgpack_numpy.py` and
`websocket_client_policy.py`):
- on connect the server sends one msgpack map of metadata;
- each request is a msgpack map (the observation), each reply a msgpack map with "actions"
  (and "server_timing": {"infer_ms": ...}, as openpi's server sends);
- ndarrays travel as {b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": list},
  numpy scalars as {b"__npgeneric__": True, b"data": value, b"dtype": str};
- an error reply is a text frame (the client raises RuntimeError with its text);
- `GET /healthz` answers 200; the client may send `Authorization: Api-Key <key>`.

Observation keys are mapped onto dtp's `Observation` by `OPENPI_KEYS` (LIBERO-style clients
send exactly these); other keys (wrist images, ...) are ignored. Control keys, all optional:
"dtp/reset" (start a new episode on this connection), "dtp/seed" (its seed),
"dtp/diagnostics" (add DTP's per-step facts to the reply under "dtp").
Each connection is one session: its own episode state over the shared model, freed when it closes.
With `max_batch` > 1, concurrent connections' requests are stepped together (dtp.serve.batcher):
the reply's "server_timing" then also says the "batch_size" it was stepped in.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, Callable

import numpy as np

from ..errors import DTPError, InputError
from ..models.base import Observation
from .batcher import Batcher
from .session import ServedPolicy, Session, make_observation

log = logging.getLogger(__name__)

__all__ = ["OPENPI_KEYS", "CONTROL_KEYS", "packb", "unpackb", "OpenpiServer", "run_openpi"]

# openpi observation key -> dtp Observation field
OPENPI_KEYS: dict[str, str] = {
    "observation/image": "image",  # uint8 (H, W, 3), the model's camera
    "observation/state": "proprio",  # float (P,)
    "prompt": "instruction",  # str
}
CONTROL_KEYS = ("dtp/reset", "dtp/seed", "dtp/diagnostics")
MAX_MESSAGE_BYTES = 64 * 2**20  # an observation with a few 224 px images is ~1 MB
_ARRAY_KINDS = frozenset("biuf")  # never object dtypes: their buffer would be read as pointers


# -- codec: byte-compatible with openpi_client.msgpack_numpy -------------------------------------
def _pack_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ARRAY_KINDS:
        raise ValueError(f"unsupported dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in _ARRAY_KINDS:
            raise InputError(f"arrays of dtype {dtype} are not accepted")
        shape = tuple(int(s) for s in obj[b"shape"])
        data = obj[b"data"]
        if int(np.prod(shape)) * dtype.itemsize != len(data):
            raise InputError(f"array data has {len(data)} bytes, shape {shape} of {dtype} needs "
                             f"{int(np.prod(shape)) * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in _ARRAY_KINDS:
            raise InputError(f"scalars of dtype {dtype} are not accepted")
        return dtype.type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=_pack_default)


def unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, object_hook=_unpack_hook)


def decode_request(message: Any) -> dict[str, Any]:
    """A request frame -> its observation map; InputError on anything else."""
    if not isinstance(message, (bytes, bytearray)):
        raise InputError("requests are msgpack bytes (openpi_client.msgpack_numpy), got a text frame")
    try:
        request = unpackb(bytes(message))
    except InputError:
        raise
    except Exception as e:  # msgpack's own errors: ExtraData, FormatError, ValueError, ...
        raise InputError(f"the request is not valid msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(request, dict):
        raise InputError(f"the request must be a map of observation keys, got {type(request).__name__}")
    return request


def to_observation(request: dict[str, Any], keys: dict[str, str] = OPENPI_KEYS):
    """Map an openpi observation onto dtp's Observation through `keys` (wire key -> field)."""
    by_field = {field: wire for wire, field in keys.items()}
    for field in ("image", "instruction"):
        if by_field.get(field) not in request:
            raise InputError(f"the request has no {by_field.get(field)!r} (the {field}); keys sent: {sorted(map(str, request))}")
    proprio_key = by_field.get("proprio")
    return make_observation(
        request[by_field["image"]], request[by_field["instruction"]], request.get(proprio_key) if proprio_key else None
    )


class OpenpiServer:
    """openpi-protocol WebSocket server over a ServedPolicy; one Session per connection."""

    def __init__(self, served: ServedPolicy, *, api_key: str | None = None, diagnostics: bool = False,
                 keys: dict[str, str] = OPENPI_KEYS, max_batch: int = 1, batch_window_s: float = 0.005):
        self.served = served
        self.api_key = api_key or None
        self.always_diagnostics = diagnostics
        self.keys = dict(keys)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dtp-serve")  # one model, one step at a time
        # max_batch 1: each request steps alone, as before batching existed
        self._batcher = None if max_batch == 1 else Batcher(
            self._step_batch, max_batch=max_batch, window_s=batch_window_s, executor=self._executor,
            sessions=lambda: len(served.sessions))

    def metadata(self) -> dict[str, Any]:
        return {**self.served.metadata(), "protocol": "openpi", "keys": dict(self.keys),
                "control_keys": list(CONTROL_KEYS), "actions_shape": "(1, action_dim)",
                "max_batch": 1 if self._batcher is None else self._batcher.max_batch,
                "live_sessions": len(self.served.sessions)}

    def _step_batch(self, items: list[tuple[Session, Observation, bool]]) -> list[tuple[Any, Any, float, int]]:
        """(action, diagnostics, the batch's ms, batch size) per (session, observation, wants diagnostics)."""
        t0 = time.perf_counter()
        replies = self.served.step_sessions(*map(list, zip(*items)))
        infer_ms = 1000 * (time.perf_counter() - t0)
        return [(action, diag, infer_ms, len(items)) for action, diag in replies]

    @staticmethod
    def _step_one(session: Session, obs: Observation, want: bool) -> tuple[Any, Any, float]:
        """(action, diagnostics, ms) of one step, timed in the worker: not the wait behind other clients' steps."""
        t0 = time.perf_counter()
        action, diag = session.step(obs, want_diagnostics=want)
        return action, diag, 1000 * (time.perf_counter() - t0)

    def process_request(self, connection: Any, request: Any) -> Any:
        """HTTP before the WebSocket handshake: /healthz, and the API key when one is set."""
        if request.path.split("?", 1)[0] == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.api_key is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Api-Key {self.api_key}".encode()):
                log.warning("refused a connection without the right API key")
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    async def handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        session = self.served.open_session()
        try:
            await self._serve_session(loop, ws, session)
        except ConnectionClosed:
            pass
        finally:
            session.close()

    async def _serve_session(self, loop: asyncio.AbstractEventLoop, ws: Any, session: Session) -> None:
        await ws.send(packb(self.metadata()))
        async for message in ws:
            try:
                reply = await self._reply(loop, session, message)
            except (DTPError, ValueError) as e:
                log.info("error reply: %s", e)
                await ws.send(f"dtp serve: error: {e}")
                continue
            except Exception as e:  # a bug or a model failure: tell the client, keep serving
                log.exception("step failed")
                await ws.send(f"dtp serve: internal error: {type(e).__name__}: {e}")
                continue
            await ws.send(packb(reply))

    async def _reply(self, loop: asyncio.AbstractEventLoop, session: Session, message: Any) -> dict[str, Any]:
        request = decode_request(message)
        if request.get("dtp/reset"):
            seed = request.get("dtp/seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise InputError(f"dtp/seed must be an int, got {seed!r}")
            session.reset(int(seed))
            if not any(k in request for k in self.keys):
                return {"reset": True}
        obs = to_observation(request, self.keys)
        want = self.always_diagnostics or bool(request.get("dtp/diagnostics", False))
        if self._batcher is not None:
            action, diag, infer_ms, size = await self._batcher.submit(session, (session, obs, want))
            timing = {"infer_ms": infer_ms, "batch_size": size}
        else:
            action, diag, infer_ms = await loop.run_in_executor(
                self._executor, functools.partial(self._step_one, session, obs, want))
            timing = {"infer_ms": infer_ms}
        # openpi replies with a chunk: (1, A); "server_timing" as openpi's own server reports it
        reply: dict[str, Any] = {"actions": action[None, :], "server_timing": timing}
        if diag is not None:
            reply["dtp"] = diag
        return reply

    async def serve(self, host: str, port: int, on_listening: Callable[[int], None]) -> None:
        """Serve until SIGTERM or SIGINT, then close every connection and return."""
        from websockets.asyncio.server import serve

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with serve(self.handle, host, port, process_request=self.process_request, compression=None,
                             max_size=MAX_MESSAGE_BYTES, ping_interval=None) as server:
                on_listening(server.sockets[0].getsockname()[1])
                await stop.wait()
                log.info("stopping: closing connections")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self._batcher is not None:
                await self._batcher.close()
            self._executor.shutdown(wait=True)


def run_openpi(served: ServedPolicy, host: str, port: int, on_listening: Callable[[int], None], *,
               api_key: str | None = None, diagnostics: bool = False, action_spec: Any = None,
               max_batch: int = 1, batch_window_s: float = 0.005) -> None:
    """Serve until SIGTERM or SIGINT (`action_spec` is unused: openpi's protocol has none)."""
    server = OpenpiServer(served, api_key=api_key, diagnostics=diagnostics, max_batch=max_batch,
                          batch_window_s=batch_window_s)
    asyncio.run(server.serve(host, port, on_listening))
