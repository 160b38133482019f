"""dtp audit: the arms it runs, its figures on hand-made episodes, and a short end-to-end run."""

from __future__ import annotations

import json
import math

import pytest

from dtp import DTPConfig
from dtp.cli import main
from dtp.experiments.audit import ORACLE_REMOVAL, audit_configs, clean_twin, summarize, verdict_markdown


def test_the_arms():
    cfgs = audit_configs(DTPConfig(tau=0.5))
    assert list(cfgs) == ["baseline", ORACLE_REMOVAL, "dtp@tau=0.5", "random_outside@tau=0.5"]
    assert cfgs[ORACLE_REMOVAL].region == "oracle_removal" and cfgs[ORACLE_REMOVAL].tau == 0.0
    assert not cfgs["baseline"].enabled and cfgs["random_outside@tau=0.5"].ablation == "random_outside"
    assert clean_twin("push") == "push" and clean_twin("libero_object/3") is None


def _ep(config, task, seed, success):
    return {"config": config, "task": task, "seed": seed, "success": success}


def test_summary_known_answer():
    # 4 scenes: clean succeeds on all, cluttered baseline on 1, oracle removal on 3, DTP on 1
    clean = [_ep("baseline", "push", s, True) for s in range(4)]
    cluttered = ([_ep("baseline", "push", s, s == 0) for s in range(4)]
                 + [_ep(ORACLE_REMOVAL, "push", s, s < 3) for s in range(4)]
                 + [_ep("dtp@tau=1", "push", s, s == 1) for s in range(4)])
    steps = [{"config": "dtp@tau=1", "fired": True, "n_pruned": 2, "d_precision_distractors": 0.5,
              "d_covers_distractors": 0.25, "a_on_distractors": 0.1}]
    s = summarize(cluttered, steps, clean, {"push": "push"})
    assert s["arms"]["clean"]["rate"] == 1.0 and s["arms"]["baseline"]["rate"] == 0.25
    assert math.isclose(s["clutter_cost"], 0.75)
    assert math.isclose(s["arms"][ORACLE_REMOVAL]["recovers_share_of_cost"], 2 / 3)
    assert s["tests"]["clean_vs_cluttered"]["a_only"] == 3 and s["tests"]["dtp@tau=1"]["b_only"] == 1
    assert s["d_vs_distractors"]["dtp@tau=1"]["precision"] == 0.5
    md = verdict_markdown(s, "test")
    assert "Clutter costs 75.0 points" in md and "| clean | 100.0% (4/4)" in md
    assert "no significant harm" in md and "recovers" not in md  # 3 / 0 discordant: p = 0.25, no share of a cost


def test_cli_audit_end_to_end_and_resume(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["audit", "--model", str(tiny_checkpoint), "--tasks", "push", "--episodes", "1", "--max-steps", "3",
            "--variant", "plain", "--tau", "0.5", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "audit.json").read_text())
    assert set(summary["arms"]) == {"clean", "baseline", ORACLE_REMOVAL, "dtp@tau=0.5", "random_outside@tau=0.5"}
    assert (out / "audit.png").stat().st_size > 0 and "# Distraction audit" in (out / "audit.md").read_text()
    clean_cfg = json.loads((out / "clean" / "config.json").read_text())
    assert clean_cfg["distractors"] == 0
    assert main(argv) == 0  # a rerun resumes: nothing left to run, the same figures
    assert json.loads((out / "audit.json").read_text())["arms"] == summary["arms"]


def test_cli_audit_refuses_a_given_region(tiny_checkpoint, tmp_path, capsys):
    rc = main(["audit", "--model", str(tiny_checkpoint), "--tasks", "push", "--region", "oracle", "--out",
               str(tmp_path / "a")])
    assert rc == 2 and "its own region" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
