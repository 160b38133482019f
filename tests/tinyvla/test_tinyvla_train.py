"""TinyVLA training: config checks, data, train/inference layout equality, determinism, resume, loading."""

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dtp.actions import ActionBinner
from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.models.base import Observation
from dtp.models.llama_vla import LlamaVLAAdapter
from dtp.policy import DTPPolicy
from dtp.tinyvla import TinyVLA, TinyVLAConfig
from dtp.tinyvla.data import DataError, augment, build_tokenizer, load_episodes, make_demo_set, split_episodes
from dtp.tinyvla.train import TrainConfig, action_logits, action_loss, train

TINY = dict(image_size=48, patch_size=8, vision_width=32, hidden_size=32, num_layers=2, num_heads=2,
            intermediate_size=64)


def tiny_cfg(demo_dir: Path, out_dir: Path, **kw) -> TrainConfig:
    base = dict(data_dir=str(demo_dir), out_dir=str(out_dir), steps=8, batch_size=8, warmup=2, log_every=1,
                eval_every=4, save_every=4, val_fraction=0.34, progress=False, threads=1, **TINY)
    base.update(kw)
    return TrainConfig(**base)


def train_records(out_dir: Path) -> list[dict]:
    lines = (out_dir / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, lines)]


# -- config ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [dict(steps=0), dict(batch_size=-1), dict(lr=0.0), dict(lr=float("nan")), dict(weight_decay=-0.1),
     dict(warmup=100, steps=50), dict(val_fraction=1.0), dict(image_size=50, patch_size=8), dict(patch_size=7),
     dict(hidden_size=30, num_heads=4), dict(save_every=15, log_every=10), dict(precision="fp16"),
     dict(tasks="reach"), dict(bin_sigma=-1.0), dict(max_shift=30, image_size=48), dict(steps=2.5), dict(resume=True, seed=-1)],
)
def test_bad_config_values_raise(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.model_config(64).num_image_tokens == 64  # 96 px, patch 12 -> 8 x 8


# -- data -----------------------------------------------------------------------------------
def test_split_holds_out_whole_episodes_per_task(demo_dir):
    eps = load_episodes(demo_dir, 48)
    train_eps, val_eps = split_episodes(eps, 0.34, seed=0)
    assert {e.task for e in val_eps} == {"reach", "push"}
    assert not {(e.task, e.seed) for e in train_eps} & {(e.task, e.seed) for e in val_eps}
    again = split_episodes(eps, 0.34, seed=0)[1]
    assert [(e.task, e.seed) for e in again] == [(e.task, e.seed) for e in val_eps]


def test_data_errors(tmp_path, demo_writer):
    with pytest.raises(DataError):
        load_episodes(tmp_path / "nowhere", 48)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        load_episodes(tmp_path / "empty", 48)
    demo_writer(tmp_path / "failed", success=False)
    with pytest.raises(DataError):
        load_episodes(tmp_path / "failed", 48)
    assert len(load_episodes(tmp_path / "failed", 48, only_success=False)) == 6


def test_images_are_resized_to_the_model_size(tmp_path, demo_writer):
    eps = load_episodes(demo_writer(tmp_path / "d", image_size=64), 48)
    assert eps[0].images.shape[1:] == (48, 48, 3) and eps[0].images.dtype == np.uint8


def test_augment_is_identity_when_off_and_keeps_range():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    plain = augment(imgs, g, max_shift=0, jitter=0)
    assert torch.equal(plain, imgs.permute(0, 3, 1, 2).float() / 255)
    aug = augment(imgs, g, max_shift=2, jitter=0.2)
    assert aug.shape == (4, 3, 16, 16) and aug.min() >= 0 and aug.max() <= 1
    # a pure shift moves content: the centre of a shifted image is a crop of the original
    shifted = augment(imgs, torch.Generator().manual_seed(1), max_shift=2, jitter=0)
    assert any(torch.equal(shifted[0, :, 4:12, 4:12], plain[0, :, 4 + dy : 12 + dy, 4 + dx : 12 + dx])
               for dy in range(-2, 3) for dx in range(-2, 3))


# -- the layout the trainer builds is the one the adapter runs ------------------------------------
def test_training_sequence_equals_adapter_inference(demo_dir):
    eps = load_episodes(demo_dir, 48)
    tok = build_tokenizer(eps)
    data = make_demo_set(eps, tok, ActionBinner(), ("push", "reach"))
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**TINY, num_words=max(64, tok.get_vocab_size()))).eval()
    adapter = LlamaVLAAdapter(model, tok)
    # a batch mixing instruction lengths (3 to 8 words), so rows are padded differently
    index = torch.tensor([0, 7, 20, 33])
    assert len(set(data.word_lengths[index].tolist())) > 1
    batch = data.batch(index)
    for row, i in enumerate(index.tolist()):
        ep_i = np.searchsorted(np.cumsum([e.n_steps for e in eps]), i, side="right")
        ep, t = eps[ep_i], i - sum(e.n_steps for e in eps[:ep_i])
        obs = Observation(image=ep.images[t], instruction=ep.instruction, proprio=ep.proprio[t])
        inputs = adapter.prepare(obs)
        s = inputs.layout.seq_len
        with torch.no_grad():
            emb_train = model.sequence_embeddings(batch.pixels, batch.ids, batch.proprio,
                                                  word_lengths=batch.word_lengths,
                                                  action_ids=batch.action_bins[:, :3] + model.config.num_words)
        emb_infer = adapter.embed(inputs)  # (1, S, D)
        torch.testing.assert_close(emb_train[row, :s], emb_infer[0], rtol=0, atol=1e-6)
        # the teacher-forced logits equal the adapter's when fed the adapter's own greedy tokens
        gen = adapter.generate(inputs)
        one = data.batch(torch.tensor([i]))
        one.action_bins = gen.action_bins.view(1, -1)
        with torch.no_grad():
            logits = action_logits(model, one)[0]  # (T, bins)
        torch.testing.assert_close(logits, gen.action_logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(logits.argmax(-1), gen.action_bins)


# -- training runs ------------------------------------------------------------------------------
def test_train_then_load_and_step_a_policy(demo_dir, tmp_path):
    final = train(tiny_cfg(demo_dir, tmp_path / "run"))
    assert {p.name for p in final.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "training.json"}
    summary = json.loads((final / "training.json").read_text())
    assert summary["config"]["steps"] == 8
    val = summary["final_val"]
    assert 0 <= val["acc"] <= 1 and 0 <= val["mae"] <= 2 and {"acc_push", "acc_reach", "mae_push"} <= set(val)
    recs = train_records(tmp_path / "run")
    assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 9))
    assert [r["step"] for r in recs if r["kind"] == "val"] == [4]
    # checkpoints: safetensors + JSON only, the last keep_checkpoints kept
    ck = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in ck] == ["step_0000004", "step_0000008"]
    assert set(load_file(str(ck[-1] / "optimizer.safetensors")))
    assert json.loads((ck[-1] / "trainer_state.json").read_text())["step"] == 8

    adapter = LlamaVLAAdapter.from_pretrained(final)
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "instruction": "push the puck to the goal",
           "proprio": np.zeros(4, np.float32)}
    for cfg in (DTPConfig(enabled=False), DTPConfig()):
        action = DTPPolicy(adapter, cfg).step(obs).action
        assert action.shape == (4,) and np.all(np.abs(action) <= 1)


def write_libero_demos(root: Path, suite: str, indices: tuple[int, ...], episodes: int = 3, steps: int = 5,
                       instruction: str = "pick the milk and place it in the basket") -> Path:
    """root/<suite>/<index>/ep_<seed>.h5 as `dtp collect` writes on LIBERO: 7-D actions, 8-D proprio."""
    rng = np.random.default_rng(sum(indices))
    for i in indices:
        (root / suite / str(i)).mkdir(parents=True, exist_ok=True)
        for e in range(episodes):
            with h5py.File(root / suite / str(i) / f"ep_{e:06d}.h5", "w") as f:
                f["images"] = rng.integers(0, 256, (steps, 48, 48, 3), dtype=np.uint8)
                f["proprio"] = rng.normal(size=(steps, 8)).astype(np.float32)
                f["actions"] = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
                f.attrs.update(task=f"{suite}/{i}", instruction=instruction, seed=e,
                               success=True, n_steps=steps, benchmark="libero")
    (root / "collection.json").write_text(json.dumps({"benchmark": "libero", "image_size": 48}))
    return root


def test_libero_layout_in_two_folders_trains_a_7d_policy(tmp_path, demo_writer):
    """Nested <suite>/<index> folders, two collections joined with a comma: the model takes the demos'
    7-D actions and 8-D proprio, a task filter names LIBERO tasks, and the policy acts in 7-D."""
    a = write_libero_demos(tmp_path / "a", "libero_object", (0, 1))
    b = write_libero_demos(tmp_path / "b", "libero_object", (2,))
    eps = load_episodes(f"{a},{b}", 48)
    assert sorted({e.task for e in eps}) == ["libero_object/0", "libero_object/1", "libero_object/2"]
    assert {e.task for e in load_episodes(f"{a},{b}", 48, tasks=("libero_object/2",))} == {"libero_object/2"}
    with pytest.raises(DataError, match="does not exist"):
        load_episodes(f"{a},{tmp_path / 'missing'}", 48)

    final = train(tiny_cfg(f"{a},{b}", tmp_path / "run", steps=4, eval_every=4, save_every=4, normalize_proprio=True))
    config = json.loads((final / "config.json").read_text())
    assert (config["action_dims"], config["proprio_dims"]) == (7, 8)
    train_eps = split_episodes(eps, 0.34, seed=0)[0]
    proprio = np.concatenate([e.proprio for e in train_eps]).astype(np.float64)
    np.testing.assert_allclose(config["proprio_mean"], proprio.mean(0), atol=1e-5)
    np.testing.assert_allclose(config["proprio_std"], np.maximum(proprio.std(0, ddof=1), 0.01), atol=1e-5)
    assert config["extra"]["dtp_benchmark_variant"] == "libero"
    adapter = LlamaVLAAdapter.from_pretrained(final)
    obs = {"image": np.zeros((48, 48, 3), np.uint8), "instruction": "pick the milk and place it in the basket",
           "proprio": np.zeros(8, np.float32)}
    action = DTPPolicy(adapter, DTPConfig()).step(obs).action
    assert action.shape == (7,) and np.all(np.abs(action) <= 1)
    # a 4-D model cannot continue on 7-D demos (words it knows, so the sizes are what stops it)
    meta = train(tiny_cfg(demo_writer(tmp_path / "mw"), tmp_path / "run4", steps=2, warmup=1, eval_every=2, save_every=2))
    c = write_libero_demos(tmp_path / "c", "libero_object", (0,), instruction="push the puck to the goal")
    with pytest.raises(ConfigError, match="7-D actions and 8-D proprio"):
        train(tiny_cfg(str(c), tmp_path / "run5", steps=2, warmup=1, eval_every=2, save_every=2, init_from=str(meta)))
    assert not (tmp_path / "run5").exists()  # checked before anything is written


def test_proprio_standardisation_equals_feeding_standardised_proprio():
    cfg = TinyVLAConfig(**TINY, proprio_dims=3)
    torch.manual_seed(0)
    plain = TinyVLA(cfg)
    mean, std = [0.5, -1.0, 3.0], [0.1, 2.0, 0.01]
    scaled = TinyVLA(replace(cfg, proprio_mean=mean, proprio_std=std))
    scaled.load_state_dict(plain.state_dict())  # the statistics are config, not weights
    p = torch.randn(4, 3)
    expected = plain.proprio_embedding((p - torch.tensor(mean)) / torch.tensor(std))
    torch.testing.assert_close(scaled.proprio_embedding(p), expected)
    assert "proprio_mean" not in scaled.state_dict()
    with pytest.raises(ConfigError):
        TinyVLA(replace(cfg, proprio_mean=mean))
    with pytest.raises(ConfigError):
        TinyVLA(replace(cfg, proprio_mean=mean, proprio_std=[0.1, 0.0, 1.0]))


def test_same_seed_same_numbers_other_seed_other_numbers(demo_dir, tmp_path):
    cfg = tiny_cfg(demo_dir, tmp_path / "a", steps=5, eval_every=5, save_every=5)
    train(cfg)
    train(replace(cfg, out_dir=str(tmp_path / "b")))
    train(replace(cfg, out_dir=str(tmp_path / "c"), seed=1))
    a, b, c = (train_records(tmp_path / x) for x in "abc")
    assert a == b
    assert [r["loss"] for r in a if r["kind"] == "train"] != [r["loss"] for r in c if r["kind"] == "train"]


def test_resume_continues_exactly(demo_dir, tmp_path):
    cfg = tiny_cfg(demo_dir, tmp_path / "straight")
    train(cfg)
    split = replace(cfg, out_dir=str(tmp_path / "split"))
    ck = train(split, stop_at=4)
    assert ck.name == "step_0000004" and not (tmp_path / "split" / "final").exists()
    with pytest.raises(ConfigError, match="resume"):
        train(split)  # would silently restart over the checkpoints
    train(replace(split, resume=True))
    assert train_records(tmp_path / "split") == train_records(tmp_path / "straight")
    w1 = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_soft_bin_targets_favour_near_misses():
    def loss_for(peak: int, sigma: float) -> float:
        logits = torch.full((1, 1, 8), -5.0)
        logits[0, 0, peak] = 5.0
        return float(action_loss(logits, torch.tensor([[3]]), sigma))

    assert loss_for(4, 0.0) == pytest.approx(loss_for(7, 0.0))  # one-hot CE: every miss costs the same
    assert loss_for(3, 1.5) < loss_for(4, 1.5) < loss_for(7, 1.5)  # soft targets: ordered by distance
