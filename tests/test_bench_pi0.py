"""`dtp bench` on pi0 shapes: the tiny one end to end (fields, counted memory, agreement), the named shapes' sizes."""

import json
from dataclasses import replace

import pytest
import torch

from dtp import bench
from dtp.cli import main as cli_main
from dtp.bench.pi0_models import PI0_SHAPES, build_pi0, pi0_config
from dtp.bench.pi0_variants import PI0_VARIANTS
from dtp.errors import ConfigError


@pytest.fixture(scope="module")
def pi0_result():
    cfg = bench.BenchConfig(models=("pi0-tiny",), repeats=1, warmup=0, min_seconds=0, agreement_steps=0, episodes=0)
    return bench.run_bench(cfg)


def test_pi0_bench_reports_every_variant(pi0_result):
    r = pi0_result["pi0-tiny"]
    assert r["family"] == "pi0" and r["tokens_pruned"] > 0  # pass 2 really ran on a pruned prefix
    assert set(r["ratios_of_min"]) == set(PI0_VARIANTS) == {"plain", "capture", "dtp", "naive"}
    for key in PI0_VARIANTS:
        assert r[f"{key}_ms"] > 0 and r[f"{key}_peak_tensor_bytes"] > 0
        assert r[f"{key}_flops"] > 0 and r[f"{key}_aten_ops"] > 0
    assert r["capture_flops"] > r["plain_flops"]  # the recorded rows are extra work
    assert r["dtp_flops"] > 1.9 * r["plain_flops"]  # pass 2 recomputes the prefix and the whole denoising loop
    shape = PI0_SHAPES["pi0-tiny"]
    assert (r["chunk"], r["denoising_steps"], r["image_tokens"]) == (shape.chunk, shape.steps, shape.image_tokens)
    assert (r["layers"], r["expert_layers"], r["width"]) == (shape.vlm_layers, shape.expert_layers, shape.vlm_width)


def test_pi0_agreement_holds(pi0_result):
    a = pi0_result["pi0-tiny"]["agreement"]
    assert a["exact"] and a["capture_equals_plain"] and a["nothing_pruned_pass2_equals_plain"]
    assert a["capture_max_diff"] == 0 and a["nothing_pruned_pass2_max_diff"] == 0
    assert a["tau_inf_step_equals_plain"]
    assert a["dtp_pruned"] > 0 and a["dtp_chunk_changed_max_diff"] > 0  # hiding tokens changes the chunk
    assert a["naive_same_pruned"] and a["naive_dtp_max_diff"] <= 1e-5 and a["naive_pass1_max_diff"] <= 1e-5


def test_pi0_memory_numbers_are_counted(pi0_result):
    r = pi0_result["pi0-tiny"]
    s, c, k, h = r["seq_len"], r["chunk"], r["denoising_steps"], r["heads"]
    # eager returns the prefix's L x H x S x S and, per denoising step, L_e x H x (C + 1) x (S + C + 1), float32
    formula = 4 * (r["layers"] * h * s * s + k * r["expert_layers"] * h * (c + 1) * (s + c + 1))
    assert r["naive_attention_bytes"] == formula == r["naive_attention_bytes_held"]
    # capture: head means of the prompt rows at the relevance layers + the expert's C action rows at every layer
    rows = len(r["relevance_layers"]) * r["prompt_tokens"] + r["expert_layers"] * c
    assert r["capture_bytes"] == 4 * rows * r["image_tokens"]


def test_pi0_report_and_json_through_the_cli(capsys):
    code = cli_main(["bench", "--model-config", "pi0-tiny", "--repeats", "1", "--warmup", "0", "--min-seconds",
                     "0", "--no-memory", "--no-work", "--threads", "1", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("(d) naive" in line for line in out) and any("agreement (same noise)" in line for line in out)
    r = json.loads(out[-1])["pi0-tiny"]
    assert r["threads"] == 1 and r["agreement"]["exact"] and "plain_flops" not in r


def test_pi0_shape_is_the_published_config():
    """The named shape "pi0" is PI0Config's defaults (PaliGemma 2B + Gemma 300M expert, chunk 50, 10 steps)."""
    from transformers import PI0Config

    ours, ref = pi0_config(PI0_SHAPES["pi0"], 257152, 257152), PI0Config()
    for sub in ("text_config", "vision_config"):
        a, b = getattr(ours.vlm_config, sub), getattr(ref.vlm_config, sub)
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "head_dim",
                    "num_key_value_heads", "vocab_size", "image_size", "patch_size"):
            if sub == "vision_config" and key == "vocab_size":  # SigLIP's default carries an unused vocab_size
                continue
            assert getattr(a, key, None) == getattr(b, key, None), (sub, key)
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "head_dim"):
        assert getattr(ours.dit_config, key) == getattr(ref.dit_config, key), key
    for key in ("chunk_size", "num_inference_steps", "max_action_dim", "max_state_dim"):
        assert getattr(ours, key) == getattr(ref, key), key
    assert PI0_SHAPES["pi0"].image_tokens == 256


def test_pi0_parameter_count_matches_the_built_model():
    shape = PI0_SHAPES["pi0-tiny"]
    adapter, _ = build_pi0(shape)
    m = adapter.model.model
    shape = replace(shape, vocab_size=adapter.model.config.vlm_config.text_config.vocab_size)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    p = shape.parameters()
    assert p["language_model"] == count(m.vlm.language_model)
    assert p["vision_tower"] == count(m.vlm.vision_tower) + count(m.vlm.multi_modal_projector)
    assert p["action_expert"] == count(m.dit) - m.dit.embed_tokens.weight.numel()
    assert torch.isfinite(adapter.generate(adapter.prepare(_obs(adapter))).actions).all()


def _obs(adapter):
    import numpy as np

    from dtp.bench.pi0_models import pi0_observation

    return pi0_observation(adapter, "pick up the block", np.random.default_rng(0))


def test_pi0_shape_json_overrides_a_named_shape(tmp_path):
    path = tmp_path / "pi0-1L.json"
    path.write_text(json.dumps({"base": "pi0-tiny", "vlm_layers": 1, "expert_layers": 1, "chunk": 3}))
    cfg = bench.BenchConfig(models=(str(path),), repeats=1, warmup=0, min_seconds=0, memory=False, count_work=False)
    r = bench.run_bench(cfg)["pi0-1L"]
    assert (r["layers"], r["chunk"], r["expert_layers"]) == (1, 3, 1)
    assert r["agreement"]["exact"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base": "pi0-tiny", "vlm_layerz": 1}))
    with pytest.raises(ConfigError, match="vlm_layerz"):
        bench.BenchConfig(models=(str(bad),))
    bad.write_text(json.dumps({"base": "pi0-tiny", "chunk": 0}))
    with pytest.raises(ConfigError, match="positive"):
        bench.BenchConfig(models=(str(bad),))
    bad.write_text(json.dumps({"base": "pi0-tiny", "vlm_layers": 1}))  # the expert reads the prefix cache layer by layer
    with pytest.raises(ConfigError, match="expert_layers"):
        bench.BenchConfig(models=(str(bad),))


def test_pi0_batch_rows_have_plain_and_dtp(pi0_result):
    b = pi0_result["pi0-tiny"]["batch"]
    assert b["sizes"] == [1, 4, 8, 16] and "naive" not in b
    assert all(b[v][str(s)]["ms_per_sample"] > 0 for v in ("plain", "dtp") for s in b["sizes"])
    assert "per sample at batch 1, 4, 8, 16" in bench.format_report(pi0_result)
