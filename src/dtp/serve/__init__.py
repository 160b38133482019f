"""`dtp serve`: a DTP-wrapped policy behind the policy-server protocols VLA harnesses already speak.

adapter -> DTPPolicy (shared; one EpisodeState per client session, `session.Session`) -> a thin protocol layer:
- "openpi": openpi's WebSocket + msgpack protocol (`openpi_client.WebsocketClientPolicy`), see `openpi`;
- "vla-eval": vla-eval's model-server protocol through its `PredictModelServer`, see `vlaeval`.
`benchmark.MetaWorldDistractors` is our Meta-World distractor benchmark as a vla-eval benchmark.
`max_batch` > 1 gathers concurrent clients' requests into one `DTPPolicy.step_batch` (`batcher`).
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Any, Callable

from ..errors import ConfigError
from .session import ServedPolicy, Session, diagnostics

log = logging.getLogger(__name__)

__all__ = ["ServedPolicy", "Session", "diagnostics", "PROTOCOLS", "serve", "is_loopback", "check_bind",
           "check_batching"]

LOOPBACK_HOSTS = ("localhost",)


def _run_openpi(served: ServedPolicy, host: str, port: int, on_listening, **kw: Any) -> None:
    from .openpi import run_openpi

    run_openpi(served, host, port, on_listening, **kw)


def _run_vla_eval(served: ServedPolicy, host: str, port: int, on_listening, **kw: Any) -> None:
    from .vlaeval import run_vla_eval

    run_vla_eval(served, host, port, on_listening, **kw)


# protocol name -> runner(served, host, port, on_listening, api_key=, diagnostics=, action_spec=, max_batch=,
#                         batch_window_s=)
PROTOCOLS: dict[str, Callable[..., None]] = {"openpi": _run_openpi, "vla-eval": _run_vla_eval}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool, api_key: str | None = None, *, warn: bool = True) -> None:
    """Loopback is always fine; any other address needs `allow_remote`, and then prints a warning."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(f"--host {host} is reachable from other machines; add --allow-remote to bind it")
    if warn:
        print(f"WARNING: dtp serve binds {host}: anyone who can reach this port can run the model"
              + ("" if api_key else "; set DTP_SERVE_API_KEY (openpi protocol) to require a key"), file=sys.stderr)


def check_batching(max_batch: int, batch_window_ms: float) -> None:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"--max-batch must be an integer >= 1, got {max_batch!r}")
    if not batch_window_ms >= 0:  # also refuses NaN
        raise ConfigError(f"--batch-window-ms must be >= 0, got {batch_window_ms!r}")


def serve(
    served: ServedPolicy,
    *,
    protocol: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_remote: bool = False,
    api_key: str | None = None,
    diagnostics: bool = False,
    action_spec: dict[str, Any] | None = None,
    on_listening: Callable[[int], None] | None = None,
    max_batch: int = 1,
    batch_window_ms: float = 5.0,
) -> None:
    """Serve `served` until SIGTERM/SIGINT. Binds loopback unless `allow_remote` (then warns).

    max_batch > 1 steps up to that many clients' requests together, waiting at most batch_window_ms
    after the first for others to join; 1 steps each request alone."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in [0, 65535] (0 picks a free one), got {port}")
    check_batching(max_batch, batch_window_ms)
    check_bind(host, allow_remote, api_key)

    def announce(bound: int) -> None:
        print(f"dtp serve: {protocol} protocol listening on ws://{host}:{bound}", flush=True)

    batching = {"max_batch": max_batch, "batch_window_s": batch_window_ms / 1000} if max_batch > 1 else {}
    PROTOCOLS[protocol](served, host, port, on_listening or announce, api_key=api_key, diagnostics=diagnostics,
                        action_spec=action_spec, **batching)
    print("dtp serve: stopped", flush=True)
