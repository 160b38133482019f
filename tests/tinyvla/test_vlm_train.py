"""The VLM stage end to end: grounding frames -> pretrain -> action fine-tuning with grounding mixed in."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dtp.errors import ConfigError
from dtp.models.base import Observation
from dtp.models.llama_vla import LlamaVLAAdapter
from dtp.tinyvla import TinyVLA, TinyVLAConfig, load_tokenizer
from dtp.tinyvla.data import DataError
from dtp.tinyvla.grounding import GroundingGenConfig, generate
from dtp.tinyvla.grounding_data import grounded_tokenizer, load_grounding
from dtp.tinyvla.train import TrainConfig, train

TINY = dict(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=2, num_heads=4,
            intermediate_size=128, batch_size=4, warmup=1, log_every=1, save_every=1, eval_every=2,
            eval_samples=0, progress=False, num_registers=2, image_dropout=0.3)


@pytest.fixture(scope="module")
def grounding_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grounding")
    for split, frames in (("train", 6), ("val", 3)):
        generate(GroundingGenConfig(out=str(root), split=split, frames=frames, tasks=("push",), image_size=48,
                                    patch_size=8, max_arm_steps=5, questions=4, shard_size=4), progress=False)
    return root


def _weights(d: Path) -> dict:
    return load_file(str(d / "model.safetensors"))


def _log(d: Path) -> list[dict]:
    recs = [json.loads(l) for l in (d / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]


def _run_and_resume(cfg: TrainConfig, tmp: Path, name: str) -> tuple[Path, Path]:
    """The same run twice: straight through, and stopped at step 2 then resumed."""
    a = train(TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp / f"{name}_a")}))
    cfg_b = TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp / f"{name}_b")})
    train(cfg_b, stop_at=2)
    b = train(TrainConfig(**{**cfg_b.__dict__, "resume": True}))
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _log(a.parent) == _log(b.parent)
    return a, b


def test_pretrain_then_finetune_end_to_end_and_resume_exactly(tmp_path, grounding_dir, demo_dir):
    pre_cfg = TrainConfig(stage="grounding", grounding_dir=str(grounding_dir), steps=3, patch_word_weight=0.5, **TINY)
    pre, _ = _run_and_resume(pre_cfg, tmp_path, "pre")
    # the patch-word head is trained, resumed with the run, and left out of the model
    assert all("pw_loss" in r for r in _log(pre.parent) if r["kind"] == "train")
    assert (pre.parent / "checkpoints" / "step_0000003" / "patch_word_head.safetensors").is_file()
    assert not (pre / "patch_word_head.safetensors").exists()
    assert set(_weights(pre)) == set(TinyVLA(TinyVLA.from_pretrained(pre).config).state_dict())
    tok = load_tokenizer(pre)
    vocab = tok.get_vocab()
    assert {"cell_0_0", "cell_5_5", "cyan", "7", "where", "push", "puck"} <= set(vocab)  # carried in tokenizer.json
    summary = json.loads((pre / "training.json").read_text())
    assert summary["model"]["num_registers"] == 2
    assert summary["data"]["grounding"]["train_frames"] == 6 and summary["data"]["grounding"]["val_frames"] == 3
    assert "g_acc_point" in summary["final_val"] and summary["data"]["grounding"]["majority_baseline"]
    assert 0 <= summary["final_val"]["pw_f1"] <= 1 and summary["final_val"]["pw_loss"] > 0
    assert all("g_loss" in r and "loss" not in r for r in summary["curve"]["train"])  # grounding only
    # the evaluation command reproduces the trainer's final validation (the head's figures aside)
    from dtp.tinyvla.grounding_eval import grounding_report

    rep = grounding_report(pre, grounding_dir)
    final_val = {k: v for k, v in summary["final_val"].items() if not k.startswith("pw_")}
    assert {k: round(v, 6) for k, v in rep["model"].items()} == final_val
    assert rep["majority"] == pytest.approx(summary["data"]["grounding"]["majority_baseline"], abs=1e-6)

    fine_cfg = TrainConfig(stage="actions", data_dir=str(demo_dir), grounding_dir=str(grounding_dir),
                           grounding_share=0.5, init_from=str(pre), steps=4, seed=1, **TINY)
    fine, _ = _run_and_resume(fine_cfg, tmp_path, "fine")
    recs = [r for r in _log(fine.parent) if r["kind"] == "train"]
    assert any("g_loss" in r for r in recs) and any("loss" in r for r in recs)  # both kinds of batch
    assert "acc" in json.loads((fine / "training.json").read_text())["final_val"]
    # the fine-tuned checkpoint starts from the pretrained one, keeps its vocabulary, and acts
    assert load_tokenizer(fine).get_vocab() == vocab
    model = TinyVLA.from_pretrained(fine)
    assert model.config.num_words == TinyVLA.from_pretrained(pre).config.num_words >= len(vocab)
    adapter = LlamaVLAAdapter.from_pretrained(fine)
    assert adapter._action_ids[0].item() == model.config.num_words  # bin b is still num_words + b
    rng = np.random.default_rng(0)
    gen = adapter.generate(adapter.prepare(Observation.from_dict({
        "image": rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "instruction": "push the puck to the goal",
        "proprio": np.zeros(4, np.float32)})))
    assert gen.action_bins.shape == (4,)


def test_full_size_grounded_model_stays_under_20_mb():
    tok = grounded_tokenizer((8, 8))
    model = TinyVLA(TinyVLAConfig(num_words=max(64, tok.get_vocab_size()), num_registers=4))
    assert sum(p.numel() for p in model.parameters()) * 4 < 20 * 2**20


def test_bad_grounding_setups_are_clear_errors(tmp_path, grounding_dir):
    with pytest.raises(ConfigError, match="need grounding_dir"):
        TrainConfig(stage="grounding")
    with pytest.raises(ConfigError, match="grounding_share"):
        TrainConfig(grounding_share=1.5, grounding_dir="x")
    with pytest.raises(ConfigError, match="image_dropout"):
        TrainConfig(image_dropout=1.0)
    with pytest.raises(DataError, match="missing from the tokenizer"):
        from dtp.tinyvla.tokenizer import build_word_tokenizer

        load_grounding(grounding_dir / "train", build_word_tokenizer(["push", "the"]), 48)
    with pytest.raises(DataError, match="does not exist"):
        load_grounding(tmp_path / "nowhere", grounded_tokenizer((6, 6)), 48)


def test_grounding_eval_command_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from dtp.cli import main

    assert main(["grounding-eval", str(tmp_path / "none"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dtp grounding-eval: error: ") and "not a TinyVLA checkpoint" in err and err.count("\n") == 1


def test_patch_word_loss_learns_the_labels_and_needs_labelled_frames(tmp_path, grounding_dir):
    """A few steps on six frames lower the patch-word loss; frames without labels are a clear error."""
    import shutil

    import h5py

    from dtp.tinyvla.train import patch_word_loss

    g = load_grounding(grounding_dir / "train", grounded_tokenizer((6, 6)), 48)
    assert g.patch_words.shape == (6, len(g.patch_word_names), 36) and g.patch_words.any()
    assert {"puck", "gripper"} <= set(g.patch_word_names)
    # val frames may show fewer words than train frames: their labels re-index onto the head's words
    wider = ("aaa",) + g.patch_word_names
    over = g.patch_words_over(wider)
    assert not over[:, 0].any() and torch.equal(over[:, 1:], g.patch_words)
    with pytest.raises(DataError, match="not among"):
        g.patch_words_over(g.patch_word_names[1:])
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=1))
    head = torch.nn.Linear(64, len(g.patch_word_names))
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    pixels = g.images.permute(0, 3, 1, 2).float() / 255
    first = None
    for _ in range(40):
        loss, _ = patch_word_loss(model, head, pixels, g.patch_words)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first

    with pytest.raises(ConfigError, match="patch_word_weight applies to grounding batches"):
        TrainConfig(patch_word_weight=1.0)
    with pytest.raises(ConfigError, match="patch_word_weight must be >= 0"):
        TrainConfig(stage="grounding", grounding_dir="x", patch_word_weight=-1.0)
    old = tmp_path / "old"
    shutil.copytree(grounding_dir, old)
    for shard in (old / "train").glob("shard_*.h5"):
        with h5py.File(shard, "a") as f:
            del f["patch_words"]
    cfg = TrainConfig(stage="grounding", grounding_dir=str(old), steps=2, patch_word_weight=1.0,
                      out_dir=str(tmp_path / "run"), **TINY)
    with pytest.raises(ConfigError, match="without them"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written before the check


def test_vision_stage_trains_the_encoder_alone_then_the_vlm_stage_starts_from_it(tmp_path, grounding_dir):
    cfg = TrainConfig(stage="vision", grounding_dir=str(grounding_dir), steps=3, **TINY)
    vis, _ = _run_and_resume(cfg, tmp_path, "vis")
    summary = json.loads((vis / "training.json").read_text())
    assert "pw_f1" in summary["final_val"] and "g_acc" not in summary["final_val"]  # no questions asked
    assert all(set(r) >= {"pw_loss"} and "g_loss" not in r for r in summary["curve"]["train"])
    before = _weights(vis.parent / "checkpoints" / "step_0000002")
    trained = _weights(vis)
    changed = {k for k in trained if not torch.equal(trained[k], before[k])}  # by the last step
    assert changed and all(k.startswith(("vision.", "projector.")) for k in changed)  # the LLM is untouched
    assert any(k.startswith("vision.") for k in changed)
    pre = train(TrainConfig(stage="grounding", grounding_dir=str(grounding_dir), init_from=str(vis), steps=2,
                            out_dir=str(tmp_path / "pre_after_vis"), **TINY))
    assert load_tokenizer(pre).get_vocab() == load_tokenizer(vis).get_vocab()
    with pytest.raises(ConfigError, match="vision stage and grounding_share"):
        TrainConfig(stage="vision")


def test_resuming_on_frames_with_other_patch_words_is_a_clear_error(tmp_path, grounding_dir):
    import shutil

    import h5py

    from dtp.errors import CheckpointError

    frames = tmp_path / "frames"
    shutil.copytree(grounding_dir, frames)
    cfg = TrainConfig(stage="vision", grounding_dir=str(frames), steps=3, out_dir=str(tmp_path / "run"), **TINY)
    train(cfg, stop_at=2)
    shard = sorted((frames / "train").glob("shard_*.h5"))[0]
    with h5py.File(shard, "a") as f:  # these frames now also name a word the run's head never saw
        names = [w.decode() for w in f["patch_word_names"][()]] + ["zzz"]
        words = np.concatenate([f["patch_words"][()], np.zeros_like(f["patch_words"][()][:, :1])], axis=1)
        del f["patch_word_names"], f["patch_words"]
        f["patch_words"] = words
        f.create_dataset("patch_word_names", data=names, dtype=h5py.string_dtype())
    with pytest.raises(CheckpointError, match="started on other frames"):
        train(TrainConfig(**{**cfg.__dict__, "resume": True}))
