"""The instruction-attention loss: its targets (generator), what it reads (Eq. 1's relevance), its
known answers, and a training run with it."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from dtp.config import DTPConfig
from dtp.errors import ConfigError
from dtp.models.base import Observation
from dtp.models.llama_vla import LlamaVLAAdapter
from dtp.policy import DTPPolicy
from dtp.tinyvla import TinyVLA, TinyVLAConfig
from dtp.tinyvla.data import to_pixels
from dtp.tinyvla.grounding import GroundingGenConfig, generate, instruction_targets, scene_from_env
from dtp.tinyvla.grounding_data import grounded_tokenizer, load_grounding
from dtp.tinyvla.tokenizer import save_tokenizer
from dtp.tinyvla.train import (TrainConfig, evaluate_instruction_attention, instruction_attention_loss,
                               instruction_relevance, supervised_words, train)

TINY = dict(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=2, num_heads=4,
            intermediate_size=128, batch_size=4, warmup=1, log_every=1, save_every=1, eval_every=2,
            eval_samples=0, progress=False, num_registers=2)


class _Scene:
    def __init__(self, objects):
        self.objects = objects

    def by_role(self, role):
        return [o for o in self.objects if o.role == role]


def _fake_env(lookalike_pixels: int = 9):
    """A 16 px frame on a 4 x 4 grid: red puck (cell 1,1), green goal ball (cell 0,0), blue lookalike
    puck (cell 3,0) with `lookalike_pixels` visible pixels, gripper (cell 0,3)."""
    objs = (NS(name="task_object", role="task_object", shape="puck", colour="red", mimics=None),
            NS(name="goal", role="goal", shape="ball", colour="green", mimics=None),
            NS(name="gripper", role="gripper", shape="gripper", colour=None, mimics=None),
            NS(name="lookalike_0", role="lookalike", shape="puck", colour="blue", mimics="task_object"))
    inst = np.full((16, 16), -1, dtype=np.int16)
    inst[5:8, 5:8] = 0
    inst[0:2, 0:2] = 1
    inst[0:3, 12:15] = 2
    inst[12:16, 0:4].flat[:lookalike_pixels] = 3
    return NS(scene=_Scene(objs), instance_segmentation=lambda: inst, task=NS(name="push", goal_site=None),
              instruction="push the red puck to the green goal")


def _cells(*cells, cols=4):
    out = np.zeros(16, dtype=bool)
    for r, c in cells:
        out[r * cols + c] = True
    return out


def test_targets_mark_the_named_parts_and_the_twin_names_a_lookalike():
    env = _fake_env()
    t = instruction_targets(env, scene_from_env(env, (4, 4)), np.random.default_rng(0))
    assert t.instruction == "push the red puck to the green goal"
    assert np.array_equal(t.region, _cells((1, 1), (0, 0)))  # puck and goal, not the gripper
    assert t.swapped == "push the blue puck to the green goal"
    assert np.array_equal(t.swapped_region, _cells((3, 0), (0, 0)))  # the lookalike takes the puck's place
    # a lookalike too small to see gives no twin
    env = _fake_env(lookalike_pixels=2)
    t = instruction_targets(env, scene_from_env(env, (4, 4)), np.random.default_rng(0))
    assert t.swapped == "" and not t.swapped_region.any() and t.region.any()


def test_loss_known_answers():
    n = 16
    region = torch.zeros(3, n, dtype=torch.bool)
    region[0, :4] = True
    region[1, 5] = True
    on_region = torch.zeros(1, 3, n)
    on_region[0, 0, :4] = 0.25  # uniform on its 4 patches: CE = log 4
    on_region[0, 1, 5] = 1.0  # all on its one patch: CE = 0
    on_region[0, 2] = 1.0  # an empty region: left out of the mean
    loss = instruction_attention_loss(on_region, region)
    assert loss.item() == pytest.approx(math.log(4) / 2, abs=1e-5)
    uniform = torch.ones(2, 3, n)  # two layers, each uniform over the image: CE = log n for every frame
    assert instruction_attention_loss(uniform, region).item() == pytest.approx(math.log(n), abs=1e-5)
    # scale-free: only where the attention goes matters, not how much of it reaches the image
    assert instruction_attention_loss(7 * uniform, region).item() == pytest.approx(math.log(n), abs=1e-5)
    none = torch.ones(1, 2, n, requires_grad=True)
    out = instruction_attention_loss(none, torch.zeros(2, n, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()  # still a graph, so a batch without targets does not break the step
    # per word: only the chosen words' rows count
    rows = torch.zeros(1, 1, 3, n)
    rows[0, 0, 0] = 1.0  # word 0 spreads over the image: CE = log n, but it is not chosen
    rows[0, 0, 1, :4] = 0.25  # word 1 uniform on the region: CE = log 4
    rows[0, 0, 2, 0] = 1.0  # word 2 on one of its patches: CE = (3 * -log 1e-8 + 0) / 4, huge
    words = torch.tensor([[False, True, False]])
    assert instruction_attention_loss(rows, region[:1], words).item() == pytest.approx(math.log(4), abs=1e-5)
    assert torch.equal(supervised_words(torch.tensor([4, 3]), torch.tensor([2, 0]), 5),
                       torch.tensor([[False, False, True, True, False], [True, True, True, False, False]]))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ia_frames")
    for split, frames in (("train", 8), ("val", 4)):
        generate(GroundingGenConfig(out=str(root), split=split, frames=frames, tasks=("push", "reach"), image_size=48,
                                    patch_size=8, max_arm_steps=5, questions=2, shard_size=4), progress=False)
    return root


def test_frames_carry_instructions_and_their_twins(frames_dir):
    g = load_grounding(frames_dir / "train", grounded_tokenizer((6, 6)), 48)
    assert g.instruction_ids.shape[:2] == (8, 2) and g.instruction_regions.shape == (8, 2, 36)
    assert (g.instruction_lengths[:, 0] > 0).all()
    assert g.instruction_regions[:, 0].any(-1).sum() >= 6  # most frames show a named part (the arm may hide it)
    has_twin = g.instruction_lengths[:, 1] > 0
    assert has_twin.any()
    assert (g.instruction_regions[:, 1].any(-1) == has_twin).all()
    frames = torch.arange(8)
    ids, lengths, regions, swap_word = g.instructions(frames, torch.ones(8, dtype=torch.bool))
    assert torch.equal(lengths, torch.where(has_twin, g.instruction_lengths[:, 1], g.instruction_lengths[:, 0]))
    twin = int(torch.nonzero(has_twin)[0])
    assert torch.equal(regions[twin], g.instruction_regions[twin, 1])
    _, _, plain, _ = g.instructions(frames, torch.zeros(8, dtype=torch.bool))
    assert torch.equal(plain, g.instruction_regions[:, 0])
    # the swap word is the one word the twin changes: a colour word, before it the same words
    tok = grounded_tokenizer((6, 6))
    for f in torch.nonzero(has_twin).flatten().tolist():
        a = tok.decode(g.instruction_ids[f, 0, 1:].tolist()).split()
        b = tok.decode(g.instruction_ids[f, 1, 1:].tolist()).split()
        w = int(swap_word[f])
        assert a[:w] == b[:w] and a[w] != b[w] and a[w + 1:] == b[w + 1:]
    assert (swap_word[~has_twin] == 0).all()


def test_relevance_it_trains_is_the_relevance_dtp_reads(tmp_path, frames_dir):
    """instruction_relevance averaged over layers equals DTPPolicy's Eq. 1 relevance (SDPA row
    capture through the adapter) for the same frame, instruction and layers."""
    tok = grounded_tokenizer((6, 6))
    g = load_grounding(frames_dir / "val", tok, 48)
    torch.manual_seed(0)
    cfg = TinyVLAConfig(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=2,
                        num_words=tok.get_vocab_size(), num_registers=2)
    model = TinyVLA(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    save_tokenizer(tok, tmp_path / "m")
    adapter = LlamaVLAAdapter.from_pretrained(tmp_path / "m")
    policy = DTPPolicy(adapter, DTPConfig(enabled=False, relevance_layers=(0, 1)), observe=True)
    frames = torch.tensor([0, 1])
    ids, lengths, _, _ = g.instructions(frames, torch.zeros(2, dtype=torch.bool))
    with torch.no_grad():
        mine = instruction_relevance(model, to_pixels(g.images[frames]), ids, lengths, g.proprio[frames], (0, 1))
    texts = [tok.decode(ids[i, 1 : 1 + lengths[i]].tolist()) for i in range(2)]
    for i in range(2):
        obs = Observation.from_dict({"image": g.images[i].numpy(), "instruction": texts[i],
                                     "proprio": g.proprio[i].numpy()})
        policy.reset(0)
        theirs = policy.step(obs).record.relevance.flatten()
        assert torch.allclose(mine.mean(0)[i], theirs, atol=1e-5)


def test_training_with_it_logs_and_checks_its_inputs(tmp_path, frames_dir):
    cfg = TrainConfig(stage="grounding", grounding_dir=str(frames_dir), steps=3, instruction_attention_weight=1.0,
                      instruction_attention_layers=(0, 1), out_dir=str(tmp_path / "run"), **TINY)
    final = train(cfg)
    recs = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["ia_loss"] > 0 for r in recs if r["kind"] == "train")
    final_val = json.loads((final / "training.json").read_text())["final_val"]
    assert 0 <= final_val["ia_cover"] <= 1 and 0 <= final_val["ia_cover_swapped"] <= 1
    # the figure the trainer logs is the one the evaluation function gives for the saved model
    g_val = load_grounding(frames_dir / "val", grounded_tokenizer((6, 6)), 48)
    again = evaluate_instruction_attention(TinyVLA.from_pretrained(final), g_val, (0, 1))
    assert again["ia_cover"] == pytest.approx(final_val["ia_cover"], abs=1e-6)
    assert set(again) == {"ia_loss", "ia_cover", "ia_cover_swapped", "ia_mass_named", "ia_mass_lookalike", "ia_moved"}
    assert 0 <= again["ia_mass_named"] + again["ia_mass_lookalike"] <= 1 and 0 <= again["ia_moved"] <= 1

    with pytest.raises(ConfigError, match="applies to grounding batches"):
        TrainConfig(instruction_attention_weight=1.0)
    with pytest.raises(ConfigError, match="applies to grounding batches"):
        TrainConfig(stage="vision", grounding_dir="x", instruction_attention_weight=1.0)
    with pytest.raises(ConfigError, match="must be >= 0"):
        TrainConfig(stage="grounding", grounding_dir="x", instruction_attention_weight=-0.5)
    with pytest.raises(ConfigError, match="layer indices"):
        TrainConfig(stage="grounding", grounding_dir="x", instruction_attention_layers=())
    with pytest.raises(ConfigError, match=r"\[2\] are out of range"):
        train(TrainConfig(**{**cfg.__dict__, "instruction_attention_layers": (1, 2), "out_dir": str(tmp_path / "bad")}))
    old = tmp_path / "old"
    shutil.copytree(frames_dir, old)
    import h5py

    for shard in (old / "train").glob("shard_*.h5"):
        with h5py.File(shard, "a") as f:
            del f["instructions"]
    with pytest.raises(ConfigError, match="without them"):
        train(TrainConfig(**{**cfg.__dict__, "grounding_dir": str(old), "out_dir": str(tmp_path / "bad")}))
    assert not (tmp_path / "bad").exists()  # nothing written before the checks


def test_the_loss_moves_attention_onto_the_named_parts(frames_dir):
    """Forty steps on the loss alone raise the share of G on the named patches (a tiny model, 8 frames)."""
    g = load_grounding(frames_dir / "train", grounded_tokenizer((6, 6)), 48)
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=48, patch_size=8, vision_width=32, hidden_size=64, num_layers=2,
                                  num_words=grounded_tokenizer((6, 6)).get_vocab_size()))
    before = evaluate_instruction_attention(model, g, (1,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    frames = torch.arange(8)
    pixels = to_pixels(g.images)
    model.train()
    for step in range(40):
        ids, lengths, regions, swap_word = g.instructions(frames, torch.tensor([step % 2 == 1] * 8))
        rows = instruction_relevance(model, pixels, ids, lengths, g.proprio, (1,), per_word=True)
        loss = instruction_attention_loss(rows, regions, supervised_words(lengths, swap_word, rows.shape[2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate_instruction_attention(model, g, (1,))
    assert after["ia_loss"] < before["ia_loss"] - 0.5
    assert after["ia_cover"] > before["ia_cover"] + 0.2
