"""Issue 24, item 5: a mistyped name gets the closest valid one (models, tasks, variants, palettes,
ablations, region sources, options, commands), and the help texts state today's defaults."""

import argparse
import re

import pytest

from dtp.cli import build_parser
from dtp.shipped import SHIPPED_MODELS

from cli_helpers import error_lines


@pytest.mark.parametrize("words,suggested", [
    (["eval", "--model", "tinyvla-plian"], "'tinyvla-plain'"),
    (["eval", "--tasks", "reach,raech"], "'reach'"),
    (["eval", "--variant", "grouned"], "'grounded'"),
    (["eval", "--palette", "trian"], "'train'"),
    (["eval", "--region", "oracel"], "'oracle'"),
    (["sweep", "--ablations", "radnom_outside"], "'random_outside'"),
    (["eval", "--tua", "0.5"], "'--tau'"),
    (["collect", "--max-distractos", "2"], "'--max-distractors'"),  # (a prefix would be taken as the option)
    (["evl"], "'eval'"),
])
def test_a_mistyped_name_gets_the_closest_one_in_one_line(dtp, tmp_path, words, suggested):
    out = [] if words[0] == "evl" else ["--out", tmp_path / "r"]
    code, _, err = dtp(*words, *out)
    [line] = error_lines(err)
    assert code == 2 and f"(did you mean {suggested}?)" in line and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_an_unknown_model_lists_the_shipped_ones(dtp, tmp_path):
    code, _, err = dtp("eval", "--model", "tinyvla-plian", "--out", tmp_path / "r")
    assert code == 2 and f"shipped models: {', '.join(SHIPPED_MODELS)}" in err


def test_the_library_suggests_too():
    from dtp.config import DTPConfig
    from dtp.envs import get_task, get_variant
    from dtp.errors import CheckpointError, ConfigError
    from dtp.models import load

    with pytest.raises(CheckpointError, match=r"did you mean 'tinyvla-plain'\?\); shipped models: tinyvla, tinyvla-plain"):
        load("tinyvla-plian")
    with pytest.raises(ConfigError, match="did you mean 'grounded'"):
        get_variant("grouned")
    with pytest.raises(ConfigError, match="did you mean 'pick-place'"):
        get_task("pick_place")
    with pytest.raises(ConfigError, match="did you mean 'oracle'"):
        DTPConfig(region="oracel")
    with pytest.raises(ConfigError, match="known tasks"):  # nothing close: no guess, the list
        get_task("xyzzy")


def _help(command: str, monkeypatch, dtp) -> str:
    monkeypatch.setenv("COLUMNS", "300")
    code, text, _ = dtp(command, "--help")
    assert code == 0
    return " ".join(text.split())


def test_variant_help_says_what_each_shipped_model_was_trained_on(dtp, monkeypatch):
    """From the loaded models themselves: the grounded model became the default, and the help follows."""
    from dtp.models import load

    trained = {name: load(name).benchmark_variant for name in SHIPPED_MODELS}
    assert trained["tinyvla"] == "grounded"
    for command in ("eval", "sweep", "demo", "collect", "layers", "robustness"):
        text = _help(command, monkeypatch, dtp)
        assert "shipped model was trained on" not in text and "shipped model's training" not in text
        assert "what the shipped models were trained on: " + ", ".join(f"{n} {v}" for n, v in trained.items()) in text


def test_hand_written_defaults_match_the_code(dtp, monkeypatch):
    from dtp.config import DTPConfig
    from dtp.envs.demos import MAX_BASE_SEED
    from dtp.envs.variants import VARIANTS
    from dtp.seeds import VALIDATION_SEED
    from dtp.tinyvla.grounding import MAX_BASE_SEED as GROUNDING_SEEDS

    d = DTPConfig()
    text = _help("eval", monkeypatch, dtp)
    for flag, value in (("--tau", f"{d.tau:g}"), ("--k", d.k), ("--sigma", f"{d.sigma:g}"), ("--region", d.region),
                        ("--aggregation", d.aggregation)):
        assert re.search(re.escape(flag) + r" \S+ [^(]*(\([^)]*\)[^(]*)*\(default: " + re.escape(str(value)) + r"\)", text), flag
    for split, s in VARIANTS["grounded"].splits.items():
        assert f"{split} {s.lookalikes[0]}-{s.lookalikes[1]}" in text
    assert f"DTP tolerance (default: {d.tau:g})" in _help("demo", monkeypatch, dtp)
    assert f"base seed (0-{MAX_BASE_SEED - 1})" in _help("collect", monkeypatch, dtp)
    assert f"base seed (0-{GROUNDING_SEEDS - 1})" in _help("grounding-data", monkeypatch, dtp)
    for command in ("layers", "robustness", "swap"):
        parser = build_parser([command])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        assert sub.get_default("seed") == VALIDATION_SEED, command
