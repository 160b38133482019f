"""`dtp view` (issue 24): eval's map recordings hold what the run computed, the page carries them
faithfully, and in a real headless Chromium the page loads cleanly, the scrubber changes the frame
and a toggle hides an overlay."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dtp.analysis.view import SHEET_COLUMNS, render_page, view_data, write_view
from dtp.config import DTPConfig
from dtp.eval.maps import load_maps, maps_file
from dtp.eval.runner import EvalSpec, run_eval
from dtp.eval.store import RunStore

CHROMIUM = Path("/usr/bin/chromium")
TAU = 0.25  # prunes on most steps of the shipped model, so there is a D to see


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """One push scene under the baseline and DTP, 8 steps each, recorded."""
    run = tmp_path_factory.mktemp("view") / "run"
    spec = EvalSpec(tasks=("push",), episodes=1, max_steps=8, record_maps=True,
                    configs={"baseline": DTPConfig(enabled=False), "dtp": DTPConfig(tau=TAU)})
    run_eval(spec, run, progress=False)
    return run


def test_recordings_hold_what_the_run_computed(recorded):
    store = RunStore(recorded)
    steps = store.steps()
    for ep in store.episodes():
        maps = load_maps(maps_file(recorded, ep["key"]))
        rows = sorted((s for s in steps if s["key"] == ep["key"]), key=lambda s: s["step"])
        t = ep["length"]
        assert maps["frames"].shape == (t, 96, 96, 3) and maps["frames"].dtype == np.uint8
        assert maps["captured"].all() and maps["scored"].all()  # eval captures the baseline too, and scores
        assert [int(m.sum()) for m in maps["pruned"]] == [s["n_pruned"] for s in rows]
        assert [int(m.sum()) for m in maps["region"]] == [s["n_region"] for s in rows]
        assert {"truth_task", "truth_distractors", "truth_lookalikes"} <= set(maps)
        covered = [(m & g).sum() / g.sum() for m, g in zip(maps["region"], maps["truth_task"]) if g.any()]
        scored = [s["g_covers_task"] for s in rows if s.get("g_covers_task") is not None]
        assert np.allclose(covered, scored)  # the recorded truth is what the scores counted
    assert sum(s["n_pruned"] for s in steps if s["config"] == "dtp") > 0
    assert not load_maps(maps_file(recorded, "baseline|push|1000000"))["pruned"].any()  # DTP off prunes nothing


def test_the_first_frame_is_the_scenes_reset_image(recorded):
    from dtp.envs.benchmark import benchmark_env

    spec = EvalSpec.from_dict(RunStore(recorded).config())
    env = benchmark_env("push", distractors=spec.distractors, palette=spec.palette, image_size=spec.image_size,
                        variant=spec.variant)
    try:
        obs, _ = env.reset(seed=1_000_000)
    finally:
        env.close()
    assert np.array_equal(load_maps(maps_file(recorded, "dtp|push|1000000"))["frames"][0], obs["image"])


def _bytes(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


def _bits(b64: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.unpackbits(_bytes(b64))[: int(np.prod(shape))].reshape(shape).astype(bool)


def test_the_page_data_carries_the_recording(recorded):
    data = view_data(recorded)
    ep = next(e for e in data["episodes"] if e["config"] == "dtp")
    arrays = load_maps(maps_file(recorded, ep["key"]))
    m, t = ep["maps"], ep["length"]
    assert m["grid"] == [8, 8] and m["steps"] == t and data["recorded"] == 2
    assert np.array_equal(_bits(m["g"], (t, 8, 8)), arrays["region"])
    assert np.array_equal(_bits(m["d"], (t, 8, 8)), arrays["pruned"])
    assert np.array_equal(_bits(m["truth"]["task"], (t, 8, 8)), arrays["truth_task"])
    att = arrays["attention"].astype(np.float32)
    assert np.allclose(m["a_max"], att.reshape(t, -1).max(1))
    assert np.abs(_bytes(m["a"]).reshape(t, 8, 8) - att / att.reshape(t, -1).max(1)[:, None, None] * 255).max() <= 0.51
    for i in range(t):
        inside = att[i][arrays["region"][i]]
        assert m["threshold"][i] == pytest.approx(TAU * inside.max())
    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(m["sheet"].split(",", 1)[1]))).convert("RGB"))
    for i in (0, t - 1):
        r, c = divmod(i, SHEET_COLUMNS)
        tile = sheet[r * 96:(r + 1) * 96, c * 96:(c + 1) * 96].astype(int)
        assert np.abs(tile - arrays["frames"][i].astype(int)).mean() < 4  # WebP, quality 80
    assert ep["steps"]["n_pruned"] == [int(x.sum()) for x in arrays["pruned"]]


def test_the_page_is_self_contained(recorded):
    page = render_page(view_data(recorded))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?https?:|@import""", page)
    assert page.count("</script>") == 2  # the data block cannot close its script tag early
    blob = page.split('<script id="dtp-data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(blob)["run"] == str(recorded)


def test_a_run_without_recordings_still_gets_a_page(recorded, tmp_path):
    run = tmp_path / "plain"
    shutil.copytree(recorded, run, ignore=shutil.ignore_patterns("maps", "view.html"))
    data = view_data(run)
    assert data["recorded"] == 0 and all(e["maps"] is None for e in data["episodes"])
    assert all(len(e["steps"]["fired"]) == e["length"] for e in data["episodes"])


def test_view_refuses_a_folder_that_is_no_run(tmp_path):
    from dtp.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run folder"):
        write_view(tmp_path)


# -- in a real browser --------------------------------------------------------------------------------
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser(tmp_path):
    """A headless Debian Chromium driven by Playwright, with a fresh profile (no browser download)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium); "
                    "the viewer's browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROMIUM_ARGS,
                                                   viewport={"width": 1400, "height": 950})
        try:
            yield ctx
        finally:
            ctx.close()


def _pixel(page, key: str, x: float, y: float) -> list[int]:
    return page.evaluate(
        """([key, x, y]) => Array.from(document.querySelector(`canvas.frame[data-key="${key}"]`)
              .getContext("2d").getImageData(Math.floor(x), Math.floor(y), 1, 1).data.slice(0, 3))""", [key, x, y])


def _canvas(page, key: str) -> str:
    return page.evaluate("(key) => document.querySelector(`canvas.frame[data-key=\"${key}\"]`).toDataURL()", key)


def test_the_page_in_chromium(recorded, browser, tmp_path):
    path = write_view(recorded, tmp_path / "view.html")
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_function("() => document.querySelectorAll('canvas.frame').length === 2")
    assert problems == []  # loads with no console error or warning, no network request
    dtp_key, base_key = "dtp|push|1000000", "baseline|push|1000000"
    assert page.locator("#panels .panel").evaluate_all("ps => ps.map(p => p.dataset.key)") == [base_key, dtp_key]
    assert page.locator("#episodes tbody tr").count() == 2

    # the scrubber changes the frame
    page.wait_for_function("() => [...document.querySelectorAll('canvas.frame')].every(c => c.width > 0)")
    page.wait_for_timeout(200)  # the frame sheet decodes
    before = _canvas(page, dtp_key)
    page.locator("#scrub").focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert page.locator("#step-label").inner_text() == "step 5"
    assert page.locator("#scrub").input_value() == "5"
    assert _canvas(page, dtp_key) != before

    # the D toggle hides the pruned patches: with it, a pruned patch is the frame blended with magenta
    data = view_data(recorded)
    ep = next(e for e in data["episodes"] if e["key"] == dtp_key)
    pruned = _bits(ep["maps"]["d"], (ep["length"], 8, 8))
    t = next(i for i in range(ep["length"]) if pruned[i].any())
    i, j = map(int, np.argwhere(pruned[t])[0])
    page.evaluate("(t) => { dtpView.setStep(t); dtpView.render(); }", t)
    for layer in ("A", "r", "G"):  # only D over the frame, so the blend is exact
        page.locator(f'input[data-layer="{layer}"]').set_checked(False)
    x, y = (j + 0.5) * 48, (i + 0.5) * 48  # 96 px frames drawn at 4x: 48 px per patch
    with_d = np.array(_pixel(page, dtp_key, x, y))
    page.locator('input[data-layer="D"]').uncheck()
    without = np.array(_pixel(page, dtp_key, x, y))
    alpha = data["style"]["d_alpha"]
    assert np.abs(with_d - ((1 - alpha) * without + alpha * np.array([255, 0, 255]))).max() <= 3
    assert np.abs(with_d - without).max() > 40
    page.locator('input[data-layer="D"]').check()
    page.locator('input[data-layer="G"]').check()
    page.locator('input[data-layer="A"]').check()
    shot = tmp_path / "view.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not [p for p in problems if not p.startswith("warning: Canvas2D: Multiple readback")]  # (our getImageData)


def test_the_commands(recorded, tmp_path, capsys):
    from dtp.cli import main

    assert main(["view", str(recorded), "--out", str(tmp_path / "v.html")]) == 0
    assert f"view: {tmp_path / 'v.html'}" in capsys.readouterr().out
    assert main(["view", str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]
    with pytest.raises(SystemExit) as stop:
        main(["view", str(recorded), "--quality", "20"])
    assert stop.value.code == 2 and "must be from 30 to 100, got 20" in capsys.readouterr().err
    run = tmp_path / "eval"
    assert main(["eval", "--tasks", "reach", "--episodes", "1", "--max-steps", "2", "--record-maps", "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "maps").iterdir()) == ["baseline__reach__1000000.npz", "dtp__reach__1000000.npz"]
    assert json.loads((run / "config.json").read_text())["record_maps"] is True
