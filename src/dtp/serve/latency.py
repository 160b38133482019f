"""Request latency of `dtp serve` against the same DTPPolicy.step in-process, measured in one run.

    dtp latency [--model tinyvla] [--frames 8] [--repeats 5] [--threads 1]

Starts `dtp serve` (openpi, then vla-eval) as a subprocess on 127.0.0.1 and an ephemeral port,
sends the same Meta-World frames it steps in-process, interleaving timed rounds of the two,
and prints per-request medians and their ratio. The client is a plain `websockets` client with
dtp's openpi codec (the bytes openpi-client sends) and vla-eval's own `Connection`.
"""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)")


def scene_frames(n: int, image_size: int = 96, task: str = "push", scene: int = 0) -> list[dict[str, Any]]:
    """n observations along one Meta-World episode of `task` (test scene `scene`) driven by its scripted expert."""
    from ..envs.benchmark import benchmark_env
    from .benchmark import scene_seed

    env = benchmark_env(task, distractors=3, palette="train", image_size=image_size, variant="plain")  # the shipped model's
    try:
        obs, _ = env.reset(seed=scene_seed(0, scene))
        frames = [obs]
        while len(frames) < n:
            obs, *_ = env.step(env.expert_action())
            frames.append(obs)
    finally:
        env.close()
    return frames


def spawn_server(protocol: str, model: str, threads: int, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, int]:
    """`dtp serve --protocol PROTOCOL --port 0 ... EXTRA` on loopback; (process, the port it printed)."""
    cmd = [sys.executable, "-m", "dtp.cli", "serve", "--protocol", protocol, "--port", "0", "--model", model,
           "--threads", str(threads), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # blocks until the server prints its port (or exits)
        m = LISTENING.search(line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError(f"dtp serve --protocol {protocol} exited with {proc.wait()} before listening")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(model: str = "tinyvla", frames: int = 8, repeats: int = 5, threads: int = 1) -> dict[str, Any]:
    """Median seconds per request in-process and through each protocol, from interleaved rounds."""
    import anyio
    import torch
    from vla_eval.connection import Connection
    from websockets.sync.client import connect

    from ..config import DTPConfig
    from ..models import load
    from ..policy import DTPPolicy
    from .openpi import packb, unpackb

    torch.set_num_threads(threads)
    obs = scene_frames(frames)
    policy = DTPPolicy(load(model), DTPConfig())
    openpi_requests, vla_requests = _requests(obs)
    times: dict[str, list[float]] = {"in_process": [], "openpi": [], "vla_eval": [], "openpi_server_step": [], "vla_eval_server_step": []}
    actions: dict[str, list[np.ndarray]] = {k: [] for k in ("in_process", "openpi", "vla_eval")}

    def local_round() -> None:
        policy.reset(0)
        for o in obs:
            times["in_process"].append(timed(lambda: actions["in_process"].append(policy.step(o).action)))

    op_proc, op_port = spawn_server("openpi", model, threads)
    ve_proc, ve_port = spawn_server("vla-eval", model, threads)
    try:
        with connect(f"ws://127.0.0.1:{op_port}", max_size=None) as ws:
            ws.recv(timeout=60)  # metadata

            def openpi_round() -> None:
                for r in openpi_requests:
                    def call() -> None:
                        ws.send(packb(r))
                        reply = unpackb(ws.recv(timeout=120))
                        actions["openpi"].append(reply["actions"][0])
                        times["openpi_server_step"].append(reply["server_timing"]["infer_ms"] / 1000)
                    times["openpi"].append(timed(call))

            async def vla_eval_rounds() -> None:
                conn = Connection(f"ws://127.0.0.1:{ve_port}", timeout=120)
                await conn.connect()
                try:
                    for _ in range(repeats + 1):
                        local_round()
                        openpi_round()
                        await conn.start_episode({"task": {"name": "push", "seed": 0}})
                        for r in vla_requests:
                            t0 = time.perf_counter()
                            reply = await conn.act(r)
                            times["vla_eval"].append(time.perf_counter() - t0)
                            actions["vla_eval"].append(reply["actions"])
                            times["vla_eval_server_step"].append(reply["server_timing"]["infer_ms"] / 1000)
                        await conn.end_episode({})
                finally:
                    await conn.close()

            anyio.run(vla_eval_rounds)
    finally:
        stop_server(op_proc)
        stop_server(ve_proc)
    codec = _codec_seconds(vla_requests[0])
    return _summary(times, actions, codec, model=model, frames=len(obs), repeats=repeats, threads=threads)


def _requests(obs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The frames as openpi requests and as vla-eval observations (the same image, state and instruction)."""
    openpi_requests = [{"observation/image": o["image"], "observation/state": o["proprio"], "prompt": o["instruction"]}
                       for o in obs]
    vla_requests = [{"images": {"dtp_main": o["image"]}, "task_description": o["instruction"], "state": o["proprio"]}
                    for o in obs]
    return openpi_requests, vla_requests


def _codec_seconds(request: dict[str, Any]) -> list[float]:
    """Seconds of vla-eval's own message codec (PNG images by default) on one observation, both ways, 20 times."""
    from vla_eval.protocol.messages import Message, MessageType, pack_message, unpack_message

    return [timed(lambda: unpack_message(pack_message(Message(MessageType.OBSERVATION, request)))) for _ in range(20)]


def _summary(times: dict[str, list[float]], actions: dict[str, list[np.ndarray]], codec: list[float], *,
             model: str, frames: int, repeats: int, threads: int) -> dict[str, Any]:
    """Medians after the warm-up round, ratios and overheads to in-process, and whether the actions agree."""
    n = frames
    same = all(np.array_equal(np.float32(a), np.float32(b)) for k in ("openpi", "vla_eval")
               for a, b in zip(actions["in_process"], actions[k]))
    med = {k: statistics.median(v[n:]) for k, v in times.items()}  # first round is warm-up
    med["vla_eval_codec"] = statistics.median(codec)
    return {
        "model": model, "frames": n, "repeats": repeats, "threads": threads,
        "median_s": med,
        "ratio": {k: med[k] / med["in_process"] for k in ("openpi", "vla_eval")},
        "overhead_ms": {k: 1000 * (med[k] - med["in_process"]) for k in ("openpi", "vla_eval")},
        # per request, round trip minus the server's own step: the protocol's cost, free of step-time noise
        "transport_ms": {k: 1000 * statistics.median(a - b for a, b in zip(times[k][n:], times[f"{k}_server_step"][n:]))
                         for k in ("openpi", "vla_eval")},
        "actions_equal": same,
    }


def format_latency(r: dict[str, Any]) -> str:
    """The report `dtp latency` prints, from `measure`'s result."""
    lines = [f"model {r['model']}, {r['frames']} Meta-World frames x {r['repeats']} rounds, {r['threads']} torch thread(s)",
             f"in-process DTPPolicy.step   {1000 * r['median_s']['in_process']:8.2f} ms/request"]
    for k in ("openpi", "vla_eval"):
        lines.append(f"dtp serve --protocol {k:<8} {1000 * r['median_s'][k]:8.2f} ms/request  "
                     f"ratio {r['ratio'][k]:.2f}  overhead {r['overhead_ms'][k]:+.2f} ms")
    lines += [
        f"the server's own DTPPolicy.step: openpi {1000 * r['median_s']['openpi_server_step']:.2f} ms, "
        f"vla-eval {1000 * r['median_s']['vla_eval_server_step']:.2f} ms; per request, round trip minus that: "
        f"openpi {r['transport_ms']['openpi']:.2f} ms, vla-eval {r['transport_ms']['vla_eval']:.2f} ms",
        f"vla-eval's codec, one observation packed and unpacked: {1000 * r['median_s']['vla_eval_codec']:.2f} ms",
        f"served actions equal in-process: {r['actions_equal']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # the older spelling of `dtp latency`
    from ..cli import main

    sys.exit(main(["latency", *sys.argv[1:]]))
