"""openpi's own client library drives Meta-World episodes against `dtp serve --protocol openpi`.

openpi-client 0.1.2 pins numpy < 2, so it lives in its own venv (DTP_OPENPI_PYTHON, built by
.ci/run); `openpi_relay.py` runs there and carries observations and replies over pipes. The
env steps here with the actions the real `WebsocketClientPolicy` got back, and they must
equal an in-process DTPPolicy's on the same scenes, token for token.
"""

from __future__ import annotations

import os
import selectors
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dtp import DTPConfig, DTPPolicy
from dtp.eval.episode import run_episode
from dtp.envs.benchmark import benchmark_env
from dtp.models import load
from dtp.serve.benchmark import scene_seed
from dtp.serve.openpi import packb, unpackb

OPENPI_PYTHON = os.environ.get("DTP_OPENPI_PYTHON")
RELAY = Path(__file__).with_name("openpi_relay.py")
API_KEY = "test-key"
MAX_STEPS = 4
SEEDS = [scene_seed(0, 0), scene_seed(0, 1)]

pytestmark = pytest.mark.skipif(
    not OPENPI_PYTHON,
    reason="set DTP_OPENPI_PYTHON to a python with openpi-client==0.1.2 (it pins numpy<2; .ci/run builds that venv)",
)


class Relay:
    """openpi_relay.py in the openpi venv: infer(obs) goes through WebsocketClientPolicy.infer."""

    def __init__(self, port: int, api_key: str | None):
        args = [OPENPI_PYTHON, str(RELAY), "127.0.0.1", str(port)] + ([api_key] if api_key else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.metadata = unpackb(self._read_frame())

    def _read_exact(self, n: int, timeout: float = 120.0) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while len(data) < n:
                if time.monotonic() > deadline or not sel.select(timeout=deadline - time.monotonic()):
                    raise TimeoutError("the openpi relay did not answer")
                chunk = os.read(self.proc.stdout.fileno(), n - len(data))
                if not chunk:
                    raise EOFError(f"the openpi relay exited (status {self.proc.poll()})")
                data += chunk
        return data

    def _read_frame(self) -> bytes:
        (n,) = struct.unpack(">I", self._read_exact(4))
        return self._read_exact(n)

    def infer(self, obs: dict) -> dict:
        payload = packb(obs)
        self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
        self.proc.stdin.flush()
        return unpackb(self._read_frame())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def served_episode(relay: Relay, env, seed: int) -> list[dict]:
    """One closed-loop episode: the env steps with the actions the openpi client received."""
    obs, _ = env.reset(seed=seed)
    replies, first = [], True
    while True:
        request = {"observation/image": obs["image"], "observation/state": obs["proprio"],
                   "prompt": obs["instruction"], "dtp/diagnostics": True}
        if first:
            request.update({"dtp/reset": True, "dtp/seed": seed})
            first = False
        reply = relay.infer(request)
        assert "error" not in reply, reply
        replies.append(reply)
        obs, _, terminated, truncated, _ = env.step(reply["actions"][0])
        if terminated or truncated:
            return replies


def test_openpi_client_drives_meta_world_like_in_process(tmp_path, start_server):
    torch.set_num_threads(1)
    env = benchmark_env("push", distractors=3, palette="train", variant="plain", image_size=96, max_steps=MAX_STEPS)
    try:
        with start_server(tmp_path, "--protocol", "openpi", env={"DTP_SERVE_API_KEY": API_KEY}) as server:
            relay = Relay(server.port, API_KEY)
            try:
                assert relay.metadata["server"] == "dtp" and relay.metadata["model"] == "tinyvla"
                served = [served_episode(relay, env, s) for s in SEEDS]
                # an error reply through the real client (it raises RuntimeError), then it serves again
                bad = relay.infer({"observation/image": np.zeros((64, 64, 3), np.uint8), "prompt": "push the puck"})
                assert "96x96" in bad["error"]
                assert relay.infer({"dtp/reset": True}) == {"reset": True}
            finally:
                relay.close()
        policy = DTPPolicy(load("tinyvla"), DTPConfig())
        for seed, replies in zip(SEEDS, served):
            tokens: list[list[int]] = []
            local = run_episode(policy, env, seed, on_step=lambda i, obs, rec: tokens.append(rec.tokens))
            assert len(replies) == local.length == MAX_STEPS
            for k, (reply, row) in enumerate(zip(replies, local.steps)):
                assert reply["actions"].shape == (1, 4) and reply["actions"].dtype == np.float32
                np.testing.assert_array_equal(reply["actions"][0], np.float32(row["action"]))
                assert reply["dtp"]["tokens"] == tokens[k]
                assert reply["dtp"]["step"] == k
                assert reply["dtp"]["fired"] == row["fired"] and reply["dtp"]["n_pruned"] == row["n_pruned"]
        fired = [r["dtp"]["fired"] for ep in served for r in ep]
        assert any(fired), "DTP never pruned: pass 2 went untested"
    finally:
        env.close()
