"""Issue 14, item 1: every setting is checked before the run folder exists; a folder holding another
run says what differs; config.json records the values the run resolved."""

import json
import shutil
import sys

import pytest

from dtp.tinyvla.modeling import write_default_relevance_layers

from cli_helpers import FAST, error_lines


def _corrupt_checkpoint(src, dst):
    shutil.copytree(src, dst)
    (dst / "model.safetensors").write_bytes(b"not a safetensors file")
    return dst


@pytest.mark.parametrize("bad", [
    ["--tasks", "raech"],
    ["--model", "MISSING"],
    ["--model", "CORRUPT"],
    ["--k", "100"],
    ["--layers", "99"],
    ["--runner", "ray"],  # with Ray made unimportable below
])
def test_a_bad_setting_writes_nothing(bad, dtp, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    subs = {"MISSING": str(tmp_path / "nowhere"), "CORRUPT": str(_corrupt_checkpoint(tiny_checkpoint, tmp_path / "bad_ck"))}
    bad = [subs.get(w, w) for w in bad]
    model = [] if "--model" in bad else ["--model", tiny_checkpoint]
    out = tmp_path / "run"
    code, _, err = dtp("eval", *model, *FAST, "--out", out, *bad)
    assert code == 2
    assert len(error_lines(err)) == 1 and error_lines(err)[0].startswith("dtp eval: error: ")
    assert "Traceback" not in err
    assert not out.exists()


def test_demo_typo_leaves_no_folder_and_the_fixed_command_runs(dtp, tmp_path):
    out = tmp_path / "demo"
    code, _, err = dtp("demo", "--tasks", "raech", "--episodes", "1", "--max-steps", "2", "--out", out)
    assert code == 2 and "unknown task 'raech'" in err and "known tasks: reach" in err
    assert not out.exists()
    code, out_text, _ = dtp("demo", "--tasks", "reach", "--episodes", "1", "--max-steps", "2", "--out", out)
    assert code == 0 and (out / "run" / "config.json").is_file()


def test_a_folder_with_another_run_names_what_differs(dtp, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    assert dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", out)[0] == 0
    code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", out, "--tau", "0.5")
    assert code == 2
    line = error_lines(err)[0]
    assert "configs.dtp.tau: 1.0 in the folder, 0.5 now" in line
    assert "new --out" in line and f"deleting {out}" in line
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 2  # the old run is untouched


def test_config_records_resolved_layers_so_a_changed_default_is_caught(dtp, tiny_checkpoint, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    out = tmp_path / "run"
    assert dtp("eval", "--model", ck, *FAST, "--out", out)[0] == 0
    cfg = json.loads((out / "config.json").read_text())
    # 2 layers, no stored default: the middle third is layer 0; the env's step limit was lowered to 2
    assert cfg["configs"]["dtp"]["relevance_layers"] == [0] and cfg["max_steps"] == 2
    write_default_relevance_layers(ck, (1,))  # what `dtp layers --write` does
    code, _, err = dtp("eval", "--model", ck, *FAST, "--out", out)
    assert code == 2 and "relevance_layers: [0] in the folder, [1] now" in err
    assert dtp("eval", "--model", ck, *FAST, "--out", tmp_path / "run2")[0] == 0
    cfg2 = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert cfg2["configs"]["dtp"]["relevance_layers"] == [1]


def test_no_region_scores_skips_the_segmentation_scores_and_keeps_the_actions(dtp, tiny_checkpoint, tmp_path):
    scored, unscored = tmp_path / "scored", tmp_path / "unscored"
    assert dtp("eval", "--model", tiny_checkpoint, *FAST, "--tau", "0.5", "--out", scored)[0] == 0
    assert dtp("eval", "--model", tiny_checkpoint, *FAST, "--tau", "0.5", "--no-region-scores", "--out", unscored)[0] == 0
    assert json.loads((unscored / "config.json").read_text())["score_regions"] is False

    def steps(run):
        return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]

    a, b = steps(scored), steps(unscored)
    assert len(a) == len(b) and [r["action"] for r in a] == [r["action"] for r in b]
    assert all("gt_task_patches" in r for r in a if r["config"] == "dtp")
    assert not any("gt_task_patches" in r for r in b)
