"""Issue 14, item 6: `dtp layers --write` never rewrites the installed model by surprise: it writes to
the checkpoint the user names, and refuses the shipped one (before any rollout) unless --force."""

import json
import shutil

from dtp.models import shipped_model_path

from cli_helpers import error_lines


def test_write_on_the_shipped_model_asks_for_force_before_the_rollouts(dtp, monkeypatch):
    def no_rollouts(*a, **k):
        raise AssertionError("rollouts ran before --write's target was checked")

    monkeypatch.setattr("dtp.experiments.layer_choice.choose_layers", no_rollouts)
    before = (shipped_model_path() / "config.json").read_bytes()
    code, _, err = dtp("layers", "--write", "--episodes", "1", "--tasks", "reach")
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith("dtp layers: error: --write would change the model installed with dtp")
    assert "--force" in line and "--model my-tinyvla --write" in line
    assert (shipped_model_path() / "config.json").read_bytes() == before


def test_write_stores_the_choice_in_the_named_checkpoint(dtp, tiny_checkpoint, tmp_path):
    ck = tmp_path / "my-ck"
    shutil.copytree(tiny_checkpoint, ck)
    shipped = (shipped_model_path() / "config.json").read_bytes()
    code, text, _ = dtp("layers", "--model", ck, "--write", "--episodes", "1", "--max-steps", "2", "--tasks", "reach",
                        "--out", tmp_path / "layers.json")
    assert code == 0
    best = json.loads((tmp_path / "layers.json").read_text())["best"]
    assert json.loads((ck / "config.json").read_text())["extra"]["dtp_relevance_layers"] == sorted(best)
    assert f"stored in {ck / 'config.json'}" in text
    assert (shipped_model_path() / "config.json").read_bytes() == shipped


def _fake_choice(adapter, env_for, tasks, **kwargs):
    """choose_layers' answer for one candidate, without the rollouts."""
    from dtp.experiments.layer_choice import LayerChoice

    return LayerChoice(best=(0,), coverage={"0": 0.5}, per_task={t: {"0": 0.5} for t in tasks}, candidates={"0": (0,)},
                       steps=1, chance=0.25, details={"relevance": "attention", "k": 0.25, "seed": 1},
                       named_coverage={"0": 0.5})


def test_json_names_meta_worlds_scene_options_only_for_meta_world_tasks(dtp, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr("dtp.experiments.layer_choice.choose_layers", _fake_choice)
    code, text, _ = dtp("layers", "--model", tiny_checkpoint, "--episodes", "1", "--seed", "1", "--tasks", "reach", "--json")
    assert code == 0
    meta_world = json.loads(text.strip().splitlines()[-1])
    assert meta_world["distractors"] == 3 and meta_world["variant"] == "grounded" and "benchmark" not in meta_world
    code, text, _ = dtp("layers", "--model", tiny_checkpoint, "--episodes", "1", "--seed", "1",
                        "--tasks", "libero_object/0", "--json")
    assert code == 0
    libero = json.loads(text.strip().splitlines()[-1])
    assert libero["benchmark"] == "libero" and not {"distractors", "palette", "variant", "lookalikes"} & set(libero)
