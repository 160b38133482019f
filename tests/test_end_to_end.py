"""The whole loop through the CLI on a real (short) scene: collect -> train a few steps -> eval with and
without DTP -> analyze. Small sizes so that it runs in CI in seconds; the numbers mean nothing."""

import json

from dtp.cli import main

TINY_MODEL = ["--hidden-size", "32", "--num-layers", "2", "--num-heads", "2", "--intermediate-size", "64",
              "--vision-width", "32"]


def test_collect_train_eval_analyze(tmp_path):
    demos, train_out, run = tmp_path / "demos", tmp_path / "train", tmp_path / "run"
    assert main(["collect", "--out", str(demos), "--tasks", "reach", "--episodes", "2", "--workers", "1",
                 "--max-distractors", "1"]) == 0
    assert len(list((demos / "reach").glob("*.h5"))) == 2

    assert main(["train", "--data-dir", str(demos), "--out-dir", str(train_out), "--steps", "4", "--batch-size", "8",
                 "--warmup", "1", "--log-every", "2", "--eval-every", "2", "--save-every", "2", "--val-fraction", "0.5",
                 "--no-progress", *TINY_MODEL]) == 0
    model = train_out / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    # the checkpoint records the variant of its demos (collect's default), which dtp demo then runs
    assert json.loads((model / "config.json").read_text())["extra"]["dtp_benchmark_variant"] == "grounded"

    assert main(["eval", "--model", str(model), "--tasks", "reach", "--episodes", "1", "--max-steps", "4",
                 "--distractors", "2", "--tau", "0.5", "--out", str(run)]) == 0
    episodes = [json.loads(l) for l in (run / "episodes.jsonl").read_text().splitlines()]
    assert sorted(e["config"] for e in episodes) == ["baseline", "dtp"]
    assert len({e["seed"] for e in episodes}) == 1 and all(e["length"] == 4 for e in episodes)
    steps = [json.loads(l) for l in (run / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 8
    assert all(s["n_pruned"] == 0 for s in steps if s["key"].startswith("baseline"))

    assert main(["analyze", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "baseline" in report and "dtp" in report
