"""The README's API snippet: one DTP step of the shipped model on a benchmark scene."""

from dtp import DTPConfig, DTPPolicy
from dtp.envs import make_env
from dtp.models import load

env = make_env("push")  # Meta-World push, grounded variant, 3 distractors, 96 px camera
policy = DTPPolicy(load("tinyvla"), DTPConfig(tau=1.0, k=0.25, sigma=1.0))  # or wrap_model(hf_model, processor)
obs, _ = env.reset(seed=1_000_000)  # obs: {"image": (96, 96, 3) uint8, "instruction": str, "proprio": ...}
policy.reset(seed=1_000_000)
result = policy.step(obs)
rec = result.record  # r, G, A, D (8 x 8 patch maps), irrelevant attention, tokens of both passes, timings
print(f'"{obs["instruction"]}"')
print(f"action {[round(float(a), 3) for a in result.action]}")
print(f"G {rec.n_region} patches, pruned {rec.n_pruned}, attention outside G {rec.irrelevant_fraction:.2f}")
env.close()
