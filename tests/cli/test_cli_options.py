"""Issue 14, item 3: options do what they say, bad values and flags of another mode are refused,
every --help shows defaults, and messages use the user's words."""

import argparse
import json

import pytest

from dtp.cli import HelpFormatter, build_parser

from cli_helpers import FAST, error_lines


def test_demo_honours_max_steps_and_says_where_results_went(dtp, tmp_path):
    out = tmp_path / "demo"
    code, text, _ = dtp("demo", "--tasks", "reach,reach", "--episodes", "1", "--max-steps", "3", "--out", out)
    assert code == 0
    episodes = [json.loads(l) for l in (out / "run" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 2 and all(e["length"] <= 3 for e in episodes)
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["max_steps"] == 3 and config["tasks"] == ["reach"]  # a repeated name runs once
    assert config["variant"] == "grounded"  # the variant the default model was trained on (its checkpoint says)
    assert (out / "heatmap_reach.png").is_file()
    assert f"next: dtp analyze {out / 'run'}" in text and str(out / "heatmap_reach.png") in text


def test_demo_variant_given_wins_over_the_models(dtp, tmp_path):
    out = tmp_path / "demo"
    code, _, _ = dtp("demo", "--tasks", "reach", "--episodes", "1", "--max-steps", "2", "--variant", "plain",
                     "--out", out)
    assert code == 0 and json.loads((out / "run" / "config.json").read_text())["variant"] == "plain"
    # and the plain model runs on its own variant
    code, _, _ = dtp("demo", "--model", "tinyvla-plain", "--tasks", "reach", "--episodes", "1", "--max-steps", "2",
                     "--out", tmp_path / "plain")
    assert code == 0 and json.loads((tmp_path / "plain" / "run" / "config.json").read_text())["variant"] == "plain"


@pytest.mark.parametrize("command,bad,flag", [
    ("eval", ["--max-steps", "0"], "--max-steps"),
    ("demo", ["--max-steps", "-3"], "--max-steps"),
    ("eval", ["--episodes", "-1"], "--episodes"),
    ("sweep", ["--main-episodes", "0"], "--main-episodes"),
    ("eval", ["--distractors", "-1"], "--distractors"),
    ("collect", ["--episodes", "0"], "--episodes"),
    ("eval", ["--k", "abc"], "--k"),
    ("eval", ["--layers", "a,b"], "--layers"),
    ("sweep", ["--taus", "x"], "--taus"),
])
def test_bad_values_are_refused_in_one_line(dtp, tmp_path, command, bad, flag):
    out = [] if command in ("demo", "collect") else ["--out", tmp_path / "r"]
    code, _, err = dtp(command, *out, *bad)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"dtp {command}: error: argument {flag}")
    assert f"see dtp {command} --help" in lines[0]
    for internal in ("_k", "<lambda>", "episodes_by_config", "DTPConfig", "_positive", "_csv"):
        assert internal not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra,message", [
    (["--address", "ray://x:1"], "--address only applies to --runner ray"),
    (["--workers", "3"], "--workers only applies to --runner ray"),
    (["--baseline-only", "--tau", "0.5", "--k", "8"], "--tau, --k set DTP, which --baseline-only does not run"),
])
def test_flags_of_another_mode_are_refused(dtp, tiny_checkpoint, tmp_path, extra, message):
    code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", tmp_path / "r", *extra)
    assert code == 2 and message in err and not (tmp_path / "r").exists()


def test_ablations_list_their_names(dtp, tmp_path, capsys):
    code, _, err = dtp("sweep", "--out", tmp_path / "s", "--ablations", "random,similarity")
    assert code == 2
    assert "unknown ablation 'random' (did you mean 'random_outside'?); choose from random_anywhere, random_outside, no_smoothing, random_fraction_outside, top_attention_outside, attention, similarity, oracle" in err
    code, text, _ = dtp("sweep", "--help")
    assert code == 0 and "random_anywhere, random_outside, no_smoothing, random_fraction_outside, top_attention_outside, attention, similarity, oracle" in " ".join(text.split())


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_help_shows_defaults_and_no_internal_names(dtp, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapping inside the phrases checked below
    fmt = HelpFormatter("dtp")
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            assert "default" in fmt._get_help_string(action), f"dtp {name} {action.option_strings[0]} hides its default"
        code, text, _ = dtp(name, "--help")
        assert code == 0 and "DTPConfig" not in text and "None" not in text.replace("'none'", "")
    text = " ".join(dtp("eval", "--help")[1].split())
    assert "--episodes EPISODES episodes per task and config (default: 10)" in text
    assert "(default: reach,push,pick-place,button-press-topdown,drawer-open)" in text
    assert "(default: 1)" in text and "--workers WORKERS Ray workers (--runner ray only; default: 2)" in text


def test_collect_refuses_to_mix_settings_in_one_folder(dtp, tmp_path):
    out = tmp_path / "demos"
    base = ["collect", "--out", out, "--tasks", "reach", "--episodes", "1", "--workers", "1", "--max-distractors", "0"]
    code, text, _ = dtp(*base)
    assert code == 0 and len(list((out / "reach").glob("ep_*.h5"))) == 1
    assert dtp(*base, "--episodes", "2")[0] == 0  # more episodes of the same collection are fine
    code, _, err = dtp(*base, "--image-size", "64")
    assert code == 2 and "image_size: 96 in the folder, 64 now" in err and "another --out" in err
    code, _, err = dtp(*base[:4], "reach,push", *base[5:])
    assert code == 2 and "tasks" in err
    assert not (out / "push").exists()


def test_collect_checks_folders_written_before_the_settings_file(dtp, tmp_path):
    out = tmp_path / "demos"
    base = ["collect", "--out", out, "--tasks", "reach", "--episodes", "1", "--workers", "1", "--max-distractors", "0"]
    assert dtp(*base)[0] == 0
    (out / "collection.json").unlink()  # as an older dtp left it
    code, _, err = dtp(*base, "--image-size", "64")
    assert code == 2 and "image_size: 96 in the folder, 64 now" in err


def test_sweep_main_configs_and_only(dtp, tiny_checkpoint, tmp_path):
    """--main-configs gives chosen configs the main episode count; --only runs some configs now."""
    out = tmp_path / "run"
    base = ["sweep", "--model", tiny_checkpoint, "--tasks", "push", "--max-steps", "2", "--taus", "1",
            "--ablations", "oracle", "--episodes", "1", "--main-episodes", "2", "--out", out]
    code, _, err = dtp(*base, "--main-configs", "baseline,oracle@tau=3")
    assert code == 2 and "'oracle@tau=3', not in this sweep" in err and not out.exists()
    code, _, err = dtp(*base, "--main-configs", "baseline,oracle@tau=1", "--only", "baseline,oracle@tau=1")
    assert code == 0, err
    spec = json.loads((out / "config.json").read_text())
    assert spec["episodes_by_config"] == {"baseline": 2, "oracle@tau=1": 2}
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["config"] for r in rows) == ["baseline", "baseline", "oracle@tau=1", "oracle@tau=1"]
    code, _, err = dtp(*base, "--main-configs", "baseline,oracle@tau=1")  # the rest of the run
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert code == 0 and sorted(r["config"] for r in rows).count("dtp@tau=1") == 1 and len(rows) == 5


def test_dtp_options_are_generated_from_dtpconfig():
    """Every DTP flag sets the DTPConfig field of its name, shows DTPConfig's default, and the options map
    onto one DTPConfig; the commands that take them (eval, sweep, swap, serve) share the same group."""
    from dataclasses import fields

    from dtp.cli import options
    from dtp.config import DTPConfig

    parser = build_parser(["eval", "sweep", "swap", "serve"])
    subs = _subparsers(parser)
    groups = {name: [a for a in subs[name]._actions if a.container.title == "DTP"] for name in ("eval", "sweep", "swap", "serve")}
    assert len({tuple(a.dest for a in g) for g in groups.values()}) == 1
    dests = [a.dest for a in groups["eval"]]
    assert set(dests) <= {f.name for f in fields(DTPConfig)} and "relevance_layers" in dests
    tau = next(a for a in groups["eval"] if a.dest == "tau")
    assert tau.help.endswith(f"(default: {DTPConfig().tau:g})")
    args = parser.parse_args(["eval", "--out", "r", "--tau", "0.5", "--k", "8", "--layers", "1,2", "--region", "oracle"])
    assert options.dtp_config(args) == DTPConfig(tau=0.5, k=8, relevance_layers=(1, 2), region="oracle")
    assert options.dtp_options_given(args) == ["--tau", "--k", "--region", "--layers"]
    assert options.dtp_config(parser.parse_args(["eval", "--out", "r"])) == DTPConfig()


def test_run_options_name_evalspec_fields():
    from dataclasses import fields

    from dtp.cli import options
    from dtp.eval.runner import EvalSpec

    assert set(options.RUN_FIELDS) | {"threads"} <= {f.name for f in fields(EvalSpec)}
    args = build_parser(["eval"]).parse_args(["eval", "--out", "r", "--tasks", "push", "--episodes", "2"])
    spec = EvalSpec(**options.run_fields(args))
    assert (spec.tasks, spec.episodes, spec.model, spec.threads) == (("push",), 2, "tinyvla", 1)


def test_sweep_lists_the_ablations_the_lab_runs():
    """The names --ablations lists without loading torch are the ones dtp.eval accepts, in order."""
    from dtp.cli.sweep import ABLATION_NAMES
    from dtp.eval.runner import SWEEP_ABLATIONS, sweep_ablation_names

    assert ABLATION_NAMES == sweep_ablation_names() and set(SWEEP_ABLATIONS) <= set(ABLATION_NAMES)
