"""Load test of `dtp serve --protocol openpi` on loopback: C clients x R requests, batched and unbatched.

    python -m dtp.serve.loadtest [--model tinyvla] [--clients 16] [--requests 200] [--max-batch 16]
                                 [--window-ms 5] [--threads 1] [--sessions 32] [--scenes] [--json]

It starts `dtp serve` twice as subprocesses on 127.0.0.1 (--max-batch 1 and N). Against each, C
client threads each run one episode of R requests (its own frames and instruction), split into
rounds that alternate between the two servers so that other jobs' load falls on both alike. Every
reply is checked against that client's sequential in-process `DTPPolicy.step` in its own episode
(no lost or mixed-up replies). It reports p50/p99 latency, throughput, the batch sizes the server
formed and its model time per request; then opens `sessions` more short sessions twice over and
reports the server's RSS after each wave and the sessions still open (0 when disconnects free
their state).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .latency import scene_frames, spawn_server, stop_server

__all__ = ["client_frames", "scene_client_frames", "reference_actions", "Fleet", "run_modes", "measure",
           "format_report"]


def client_frames(clients: int, frames: int, image_size: int, proprio_dims: int, seed: int = 0) -> list[list[dict]]:
    """Per client, `frames` random observations with its own instruction (different lengths across clients)."""
    from ..envs.tasks import TASK_NAMES, instruction_for

    rng = np.random.default_rng(seed)
    out = []
    for c in range(clients):
        instruction = instruction_for(TASK_NAMES[c % len(TASK_NAMES)], c)
        out.append([{"image": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
                     "proprio": rng.uniform(-1, 1, proprio_dims).astype(np.float32),
                     "instruction": instruction} for _ in range(frames)])
    return out


def scene_client_frames(clients: int, frames: int, image_size: int) -> list[list[dict]]:
    """Per client, `frames` Meta-World frames along its own scene (task c mod 5, scene seed c), expert-driven."""
    from ..envs.tasks import TASK_NAMES

    return [[{k: o[k] for k in ("image", "proprio", "instruction")}
             for o in scene_frames(frames, image_size, TASK_NAMES[c % len(TASK_NAMES)], c)] for c in range(clients)]


def requests_of(frames: list[dict], n: int) -> list[dict]:
    return [frames[r % len(frames)] for r in range(n)]


def reference_actions(adapter: Any, frames: list[list[dict]], n: int) -> tuple[list[list[np.ndarray]], float, float]:
    """Each client's actions from its own sequential in-process episode (policy.reset(c)), the seconds
    taken, and the share of steps where DTP fired. DTP at its defaults, as `dtp serve` without DTP flags."""
    from ..config import DTPConfig
    from ..policy import DTPPolicy

    policy = DTPPolicy(adapter, DTPConfig())
    out, fired = [], 0
    t0 = time.perf_counter()
    for c, fr in enumerate(frames):
        policy.reset(c)
        results = [policy.step(o) for o in requests_of(fr, n)]
        out.append([np.asarray(r.action, np.float32) for r in results])
        fired += sum(r.record.fired for r in results)
    return out, time.perf_counter() - t0, fired / max(1, len(frames) * n)


class Fleet:
    """C client connections to one server, each stepping its own episode, a chunk of requests per round.

    Each client connects, resets its episode to seed c, then per round waits at `go`, sends its
    chunk (one request in flight at a time, as an openpi client does) and waits at `done`.
    """

    def __init__(self, url: str, frames: list[list[dict]], n: int, rounds: int):
        self.go = threading.Barrier(len(frames) + 1)
        self.done = threading.Barrier(len(frames) + 1)
        bounds = np.linspace(0, n, rounds + 1).round().astype(int)
        self.chunks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.out: dict[int, Any] = {}
        self.threads = [threading.Thread(target=self._client, args=(url, c, requests_of(fr, n)), daemon=True)
                        for c, fr in enumerate(frames)]
        for t in self.threads:
            t.start()

    def run_round(self) -> float:
        """Release every client for one chunk; the seconds until the last one finished it."""
        self.go.wait(timeout=600)
        t0 = time.perf_counter()
        self.done.wait(timeout=1200)
        return time.perf_counter() - t0

    def close(self) -> dict[int, Any]:
        """Wait for the clients to disconnect; client -> (actions, latencies, batch sizes, server ms per request)."""
        for t in self.threads:
            t.join(timeout=600)
        errors = {c: repr(v) for c, v in self.out.items() if isinstance(v, BaseException)}
        if errors or len(self.out) != len(self.threads):
            raise RuntimeError(f"clients failed: {errors or 'missing replies'}")
        return self.out

    def _client(self, url: str, c: int, requests: list[dict]) -> None:
        from websockets.sync.client import connect

        from .openpi import packb, unpackb

        actions, latencies, sizes, step_ms = [], [], [], []
        try:
            with connect(url, max_size=None, open_timeout=120) as ws:
                ws.recv(timeout=120)  # metadata
                ws.send(packb({"dtp/reset": True, "dtp/seed": c}))
                ws.recv(timeout=120)
                for lo, hi in self.chunks:
                    self.go.wait(timeout=1200)
                    for o in requests[lo:hi]:
                        t0 = time.perf_counter()
                        ws.send(packb({"observation/image": o["image"], "observation/state": o["proprio"],
                                       "prompt": o["instruction"]}))
                        reply = ws.recv(timeout=600)
                        latencies.append(time.perf_counter() - t0)
                        if isinstance(reply, str):
                            raise RuntimeError(reply)
                        reply = unpackb(reply)
                        actions.append(np.asarray(reply["actions"][0], np.float32))
                        timing = reply["server_timing"]
                        sizes.append(int(timing.get("batch_size", 1)))
                        step_ms.append(float(timing["infer_ms"]) / sizes[-1])
                    self.done.wait(timeout=1200)
        except BaseException as e:  # reported by close(); the barriers break so nobody waits forever
            self.out[c] = e
            self.go.abort()
            self.done.abort()
            return
        self.out[c] = (actions, latencies, sizes, step_ms)


def open_sessions(url: str, count: int, frame: dict, requests: int = 2) -> None:
    """`count` sessions of `requests` requests each, 16 at a time, each closed when done."""
    from websockets.sync.client import connect

    from .openpi import packb

    def one() -> None:
        with connect(url, max_size=None, open_timeout=120) as ws:
            ws.recv(timeout=120)
            for _ in range(requests):
                ws.send(packb({"observation/image": frame["image"], "observation/state": frame["proprio"],
                               "prompt": frame["instruction"]}))
                ws.recv(timeout=600)

    for k in range(0, count, 16):
        threads = [threading.Thread(target=one) for _ in range(min(16, count - k))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def open_elsewhere(url: str) -> int:
    """Sessions open on the server besides the one this call opens to ask (from its metadata)."""
    from websockets.sync.client import connect

    from .openpi import unpackb

    with connect(url, max_size=None, open_timeout=120) as ws:
        return int(unpackb(ws.recv(timeout=120))["live_sessions"]) - 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(out: dict[int, Any], expected: list[list[np.ndarray]], n: int, wall: float) -> dict[str, Any]:
    """One mode's figures from its clients' replies and its summed round times."""
    latencies = sorted(x for c in out for x in out[c][1])
    sizes = [s for c in out for s in out[c][2]]
    return {
        "requests": len(latencies), "lost": sum(n - len(out[c][0]) for c in out),
        "mismatched": sum(not np.array_equal(a, b) for c in out for a, b in zip(out[c][0], expected[c])),
        "wall_s": wall, "throughput_rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "mean_batch": float(np.mean(sizes)), "max_batch_seen": max(sizes),
        "server_step_ms_per_request": float(np.mean([x for c in out for x in out[c][3]])),
    }


def memory_waves(url: str, pid: int, sessions: int, frame: dict, waves: int = 2) -> dict[str, Any]:
    """Server RSS and sessions still open: now, then after each of `waves` waves of `sessions` short sessions."""
    rss, still_open = [rss_mb(pid)], [open_elsewhere(url)]
    for _ in range(waves):
        open_sessions(url, sessions, frame)
        rss.append(rss_mb(pid))
        still_open.append(open_elsewhere(url))
    memory = {"rss_mb": rss, "open": still_open, "after_load_mb": rss[0], "open_after_load": still_open[0]}
    if waves >= 2:
        memory.update(after_n_mb=rss[1], open_after_n=still_open[1], after_2n_mb=rss[2], open_after_2n=still_open[2])
    return memory


def run_modes(model: str, frames: list[list[dict]], n: int, expected: list[list[np.ndarray]], *,
              batches: tuple[int, ...], window_ms: float, threads: int, sessions: int, rounds: int,
              waves: int = 2) -> list[dict]:
    """One server per --max-batch in `batches`, all up at once; their clients' rounds interleave (ABBA order),
    so load from other jobs on the machine falls on every mode alike. Then each server's memory waves."""
    servers = [spawn_server("openpi", model, threads, ["--max-batch", str(b), "--batch-window-ms", str(window_ms)])
               for b in batches]
    urls = [f"ws://127.0.0.1:{port}" for _, port in servers]
    try:
        for url in urls:
            open_sessions(url, 2, frames[0][0])  # warm-up
        fleets = [Fleet(url, frames, n, rounds) for url in urls]
        walls = [0.0] * len(fleets)
        for r in range(rounds):
            order = range(len(fleets)) if r % 2 == 0 else reversed(range(len(fleets)))
            for m in order:
                walls[m] += fleets[m].run_round()
        outs = [f.close() for f in fleets]
        modes = []
        for b, out, wall, url, (proc, _) in zip(batches, outs, walls, urls, servers):
            modes.append({"max_batch": b, "window_ms": window_ms, **summary(out, expected, n, wall),
                          "sessions": sessions, "memory": memory_waves(url, proc.pid, sessions, frames[0][0], waves)})
    finally:
        for proc, _ in servers:
            stop_server(proc)
    return modes


def measure(model: str = "tinyvla", *, clients: int = 16, requests: int = 200, max_batch: int = 16,
            window_ms: float = 5.0, threads: int = 1, sessions: int = 32, frames: int = 8,
            scenes: bool = False, rounds: int = 10, waves: int = 2) -> dict[str, Any]:
    """Unbatched (--max-batch 1) and batched (--max-batch max_batch) in interleaved rounds, same clients
    and frames (random images, or Meta-World scenes with `scenes`)."""
    import torch

    from ..models import load
    from ..models.base import declared_image_size

    torch.set_num_threads(threads)
    adapter = load(model)
    size = declared_image_size(adapter) or 224
    proprio = int(getattr(adapter.model.config, "proprio_dims", 0) or 0) if hasattr(adapter, "model") else 0
    fr = scene_client_frames(clients, frames, size) if scenes else client_frames(clients, frames, size, proprio)
    expected, local_s, fired = reference_actions(adapter, fr, requests)
    modes = run_modes(model, fr, requests, expected, batches=(1, max_batch), window_ms=window_ms, threads=threads,
                      sessions=sessions, rounds=min(rounds, requests), waves=waves)
    return {"model": model, "clients": clients, "requests_per_client": requests, "threads": threads,
            "frames": "Meta-World scenes" if scenes else "random images", "dtp_fired_share": fired,
            "rounds": min(rounds, requests), "in_process_rps": clients * requests / local_s, "modes": modes,
            "speedup": modes[1]["throughput_rps"] / modes[0]["throughput_rps"]}


def format_report(r: dict[str, Any]) -> str:
    lines = [f"model {r['model']}, {r['clients']} clients x {r['requests_per_client']} requests ({r['frames']}, "
             f"DTP fired on {100 * r['dtp_fired_share']:.0f}% of steps), {r['threads']} torch thread(s)",
             f"in-process sequential DTPPolicy.step: {r['in_process_rps']:.1f} steps/s; "
             f"the modes ran in {r['rounds']} interleaved rounds",
             "max-batch  window  req/s   p50 ms  p99 ms  mean batch  server ms/req  lost  mismatched  "
             "RSS MB after load/N/2N/.. sessions  open after"]
    for m in r["modes"]:
        mem = m["memory"]
        window = f"{m['window_ms']:>4.0f}ms" if m["max_batch"] > 1 else "     -"
        lines.append(f"{m['max_batch']:>9}  {window}  {m['throughput_rps']:6.1f}  {m['p50_ms']:6.1f}  "
                     f"{m['p99_ms']:6.1f}  {m['mean_batch']:10.2f}  {m['server_step_ms_per_request']:13.1f}  {m['lost']:4d}  {m['mismatched']:10d}  "
                     f"{'/'.join(f'{x:.0f}' for x in mem['rss_mb'])} (N={m['sessions']})"
                     f"  {'/'.join(str(x) for x in mem['open'])}")
    lines.append(f"throughput batched / unbatched: {r['speedup']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m dtp.serve.loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tinyvla")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--window-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sessions", type=int, default=32, help="sessions per memory wave (N)")
    p.add_argument("--scenes", action="store_true", help="Meta-World frames (each client its own scene) instead of random images")
    p.add_argument("--waves", type=int, default=2, help="memory waves of --sessions sessions each")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds the requests are split into")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = measure(a.model, clients=a.clients, requests=a.requests, max_batch=a.max_batch, window_ms=a.window_ms,
                threads=a.threads, sessions=a.sessions, scenes=a.scenes, rounds=a.rounds, waves=a.waves)
    print(json.dumps(r, indent=2) if a.json else format_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
