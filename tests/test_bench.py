"""`dtp bench` runs on the tiny model and reports what it promises (no timing assertions)."""

import json

import numpy as np
import pytest
import torch

from dtp import bench
from dtp.cli import main as cli_main
from dtp.capture import AttentionCapture, CaptureSpec
from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.models.base import Observation
from dtp.policy import DTPPolicy

KEYS = {"capture_ratio", "dtp_ratio", "naive_ratio", "capture_bytes", "naive_attention_bytes"}


@pytest.fixture(scope="module")
def tiny_result():
    cfg = bench.BenchConfig(models=("tiny",), repeats=1, warmup=0, min_seconds=0, agreement_steps=0, episodes=0)
    return bench.run_bench(cfg)["tiny"]


def test_run_bench_returns_the_promised_keys(tiny_result):
    r = tiny_result
    assert KEYS <= set(r)
    assert {"dtp_exact_prefix_ratio", "dtp_approx_image_ratio", "tokens_pruned", "plain_ms", "targets"} <= set(r)
    assert set(r["ratios_of_min"]) == {"plain", "capture", "dtp", "dtp_exact_prefix", "dtp_approx_image", "naive"}
    assert r["tokens_pruned"] > 0  # pass 2 really ran
    assert all(r[k] > 0 for k in ("capture_ratio", "dtp_ratio", "naive_ratio"))
    assert r["threads"] == torch.get_num_threads()
    for key in ("plain", "capture", "dtp", "naive"):
        assert r[f"{key}_peak_tensor_bytes"] > 0


def test_memory_numbers_are_counted_not_guessed(tiny_result):
    r = tiny_result
    # naive: L x H x S x S float32 for the prefill; what it returned adds one row per layer, head and decode step
    assert r["naive_attention_bytes"] == r["layers"] * r["heads"] * r["seq_len"] ** 2 * 4
    decode_rows = sum(r["seq_len"] + t for t in range(1, r["action_tokens"]))
    assert r["naive_attention_bytes_held"] == r["naive_attention_bytes"] + r["layers"] * r["heads"] * decode_rows * 4
    # capture: head-averaged rows of the prompt + last prefill query, then one per decode step, every layer
    rows = r["prompt_tokens"] + 1 + r["action_tokens"] - 1
    assert r["capture_bytes"] == r["layers"] * rows * r["image_tokens"] * 4


def test_work_is_counted(tiny_result):
    r = tiny_result
    for key in ("plain", "capture", "dtp", "dtp_exact_prefix", "dtp_approx_image", "naive"):
        assert r[f"{key}_flops"] > 0 and r[f"{key}_aten_ops"] > 0
    assert r["capture_flops"] > r["plain_flops"]  # the recorded rows are extra work
    assert r["naive_flops"] > r["dtp_flops"]  # eager computes every attention matrix in full, twice
    assert r["dtp_exact_prefix_flops"] < r["dtp_flops"]  # the reused prefix and the pruned tokens are skipped


def test_naive_reference_prunes_what_the_capture_prunes(tiny_result):
    assert tiny_result["naive_same_pruned"] and tiny_result["naive_same_actions"]


def test_cli_prints_the_table_then_json_on_the_last_line(capsys):
    code = cli_main(["bench", "--models", "tiny", "--repeats", "1", "--warmup", "0", "--min-seconds", "0", "--no-memory",
                     "--agreement-steps", "0", "--episodes", "0", "--threads", "1", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any("(a) plain" in line for line in out) and any("targets:" in line for line in out)
    result = json.loads(out[-1])
    assert KEYS <= set(result["tiny"]) and result["tiny"]["threads"] == 1


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown bench model"):
        bench.BenchConfig(models=("gpt5",))
    with pytest.raises(ConfigError, match="repeats"):
        bench.BenchConfig(repeats=0)


def test_peak_tensor_bytes_sees_a_transient_tensor():
    def f():
        x = torch.ones(1024, 1024)  # 4 MiB, freed on return
        return float(x.sum())

    assert bench.peak_tensor_bytes(f) >= 4 * 1024 * 1024


def test_interleaved_timing_runs_every_variant(tiny_adapter, tiny_obs):
    pol = DTPPolicy(tiny_adapter, DTPConfig(enabled=False))
    obs = Observation.from_dict(tiny_obs)
    times = bench.time_interleaved({"a": lambda: pol.step(obs), "b": lambda: None}, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    more = bench.time_interleaved({"a": lambda: pol.step(obs), "b": lambda: None}, repeats=1, warmup=0, min_seconds=0.05)
    assert sum(more["a"]) >= 0.05 and len(more["a"]) == len(more["b"])  # rounds stay paired


def test_capture_mean_heads_keeps_the_head_mean_of_the_same_rows():
    """The option behind the capture's memory target (DTP averages heads anyway)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 100, (2, 30), generator=torch.Generator().manual_seed(3))
    img, queries = list(range(2, 14)), [15, 20, 29]
    rows = {}
    for mean in (False, True):
        spec = CaptureSpec(key_positions=torch.tensor(img), query_positions=torch.tensor(queries), mean_heads=mean)
        with AttentionCapture(model.config, spec) as cap, torch.no_grad():
            model(ids)
            rows[mean] = (cap.rows_at(queries), cap.nbytes())
    (full, full_bytes), (mean, mean_bytes) = rows[False], rows[True]
    assert mean.shape[2] == 1 and torch.allclose(mean, full.mean(dim=2, keepdim=True), atol=1e-7)
    assert mean_bytes * cfg.num_attention_heads == full_bytes


# -- model sizes from a config ------------------------------------------------------------------

TINY_SHAPE = {"name": "tiny-shape", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 400, "image_tokens": 16,
              "patch_size": 4, "vision_width": 16, "prompt_tokens": 6, "action_tokens": 3}


@pytest.mark.parametrize("name", sorted(bench.SHAPES))
def test_named_shapes_count_the_parameters_of_the_real_model(name):
    """The shape's parameter count is the LlamaForCausalLM of those sizes (built on the meta device)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    s = bench.SHAPES[name]
    cfg = LlamaConfig(hidden_size=s.hidden_size, num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                      num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate_size, vocab_size=s.vocab_size,
                      tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    assert s.parameters() == sum(p.numel() for p in model.parameters())
    if name == "llama-7b":  # Llama 2 7B: 6,738,415,616 with 32000 ids; OpenVLA pads to 32064
        assert s.parameters() == 6_738_415_616 + 2 * 64 * 4096


def test_shape_json_base_and_overrides(tmp_path):
    p = tmp_path / "llama7b-4L.json"
    p.write_text(json.dumps({"base": "llama-7b", "num_hidden_layers": 4}))
    s = bench.shape_from_json(p)
    assert (s.name, s.hidden_size, s.num_hidden_layers, s.intermediate_size, s.image_tokens) == ("llama7b-4L", 4096, 4, 11008, 256)
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({"base": "llama-7b", "num_hiden_layers": 4}))
    with pytest.raises(ConfigError, match="num_hiden_layers"):
        bench.shape_from_json(bad)
    bad.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ConfigError, match="missing"):
        bench.shape_from_json(bad)
    bad.write_text(json.dumps({**TINY_SHAPE, "image_tokens": 15}))
    with pytest.raises(ConfigError, match="square"):
        bench.shape_from_json(bad)
    bad.write_text(json.dumps({**TINY_SHAPE, "num_key_value_heads": 3}))
    with pytest.raises(ConfigError, match="key/value"):
        bench.shape_from_json(bad)
    with pytest.raises(ConfigError, match="unknown bench model"):
        bench.BenchConfig(models=(str(tmp_path / "nope.yaml"),))


def test_bench_builds_the_shape_it_is_given(tmp_path):
    p = tmp_path / "shape.json"
    p.write_text(json.dumps(TINY_SHAPE))
    bm = bench.build_model(str(p))
    lm = bm.adapter.lm.config
    assert (lm.hidden_size, lm.num_hidden_layers, lm.num_attention_heads, lm.num_key_value_heads, lm.intermediate_size,
            lm.vocab_size) == (48, 2, 4, 2, 96, 400)
    inputs = bm.adapter.prepare(bench.models.random_observation(bm.adapter, bm.instruction, np.random.default_rng(0)))
    assert inputs.layout.num_image_tokens == 16 and inputs.layout.prompt_positions.numel() == 6
    assert bm.adapter.n_action_tokens == 3


def test_cli_measures_a_config_sized_model_in_bfloat16(tmp_path, capsys):
    """--model-config with a JSON of sizes, --dtype bfloat16 on the CPU: the same step, the memory formula in 2 bytes."""
    p = tmp_path / "shape.json"
    p.write_text(json.dumps(TINY_SHAPE))
    code = cli_main(["bench", "--model-config", str(p), "--dtype", "bfloat16", "--repeats", "1", "--warmup", "0",
                     "--min-seconds", "0", "--no-memory", "--no-work", "--threads", "1", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    r = json.loads(out[-1])["tiny-shape"]
    assert (r["layers"], r["width"], r["image_tokens"], r["prompt_tokens"], r["action_tokens"]) == (2, 48, 16, 6, 3)
    assert r["dtype"] == "bfloat16" and r["device"] == "cpu"
    assert r["model_shape"]["lm_parameters"] == bench.shape_from_json(p).parameters()
    assert r["naive_attention_bytes"] == r["layers"] * r["heads"] * r["seq_len"] ** 2 * 2
    assert r["tokens_pruned"] > 0  # (the naive reference may prune otherwise here: its eager rows are rounded to bf16)
    assert any("bfloat16 weights" in line for line in out)


def test_a_builder_registers_a_model_family(monkeypatch):
    """Another family (e.g. pi0) is one register_builder call: its name is then a valid bench model."""
    from dtp.bench import models as bench_models

    calls = []

    def build(name, seed, device, dtype):
        calls.append((name, seed, device.type, dtype))
        return bench_models.build_model("tiny", seed, device, dtype)

    monkeypatch.setitem(bench_models._BUILDERS, "my-family", build)
    assert "my-family" in bench.builder_names()
    bench.BenchConfig(models=("my-family",))  # accepted
    bm = bench.build_model("my-family", seed=3)
    assert calls == [("my-family", 3, "cpu", torch.float32)] and bm.adapter.lm.config.hidden_size == 64


def test_batch_rows_give_per_sample_throughput_of_each_variant(tiny_result):
    b = tiny_result["batch"]
    assert b["sizes"] == [1, 4, 8, 16] and b["samples"] == 16 and len(set(b["fired"].values())) == 1
    for v in ("plain", "dtp", "naive"):
        assert b[v]["1"]["speedup"] == 1.0
        assert all(b[v][str(s)]["ms_per_sample"] > 0 for s in b["sizes"])
    assert "per sample at batch 1, 4, 8, 16" in bench.format_report({"tiny": tiny_result})


def test_naive_batch_equals_naive_per_sample(tiny_adapter):
    from dtp.bench.batched import naive_step_batch
    from dtp.bench.variants import naive_step

    rng = np.random.default_rng(3)
    obs = [Observation(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), text, rng.normal(size=4).astype(np.float32))
           for text in ("push the red puck to the goal", "open drawer", "press the button")]
    policy = DTPPolicy(tiny_adapter, DTPConfig(tau=0.5))
    for o, rec in zip(obs, naive_step_batch(policy, obs)):
        alone = naive_step(policy, o)
        assert torch.equal(rec.pruned, alone.pruned) and rec.tokens == alone.tokens and rec.tokens_pass1 == alone.tokens_pass1


def test_bad_batch_sizes_raise():
    with pytest.raises(ConfigError, match="batch sizes"):
        bench.BenchConfig(batch_sizes=(0, 4))


def test_batched_rollout_row_runs_the_same_episodes_at_both_batches(tiny_adapter):
    from dtp.bench.report import _rollout_batch_lines
    from dtp.bench.rollouts import batched_throughput

    rb = batched_throughput(tiny_adapter, DTPConfig(tau=0.5), episodes=3, seed=5, batch=2, max_steps=12)
    one, two = rb["batch_1"], rb["batch_2"]
    assert one["steps"] == two["steps"] == 3 * 12 and one["successes"] == two["successes"]
    assert rb["ratio"] == pytest.approx(two["episodes_per_min"] / one["episodes_per_min"])
    for x in (one, two):
        parts = x["policy_s"] + x["env_s"] + x["segmentation_s"] + x["other_s"]
        assert x["policy_s"] > 0 and x["segmentation_s"] > 0 and parts == pytest.approx(x["wall_s"], rel=1e-6)
    lines = _rollout_batch_lines(rb)
    assert "--batch 2 vs --batch 1" in lines[-1]


def test_bad_rollout_batch_raises():
    with pytest.raises(ConfigError, match="rollout_batch"):
        bench.BenchConfig(models=("tiny",), rollout_batch=1)
