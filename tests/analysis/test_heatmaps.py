"""Heatmaps that read on their own (issue 24): a known map drawn, then its pixels checked where the
legend, the colour bars and the overlays must be; D's colour checked against every scene colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dtp.analysis.heatmaps import (A_CMAP, CAPTION, D_ALPHA, D_RGB, R_CMAP, StepContext, mask_outline,
                                   step_heatmap_figure, threshold)
from dtp.policy import StepRecord

GREY = 128
H = W = 8  # patch grid
PX = 12  # pixels per patch (96 px image)


def known_step() -> StepRecord:
    """G: the 4 x 4 block at rows/cols 2-5; D: patches (0, 7) and (1, 7); r rises left to right; A peaks on D."""
    region = torch.zeros(H, W, dtype=torch.bool)
    region[2:6, 2:6] = True
    pruned = torch.zeros(H, W, dtype=torch.bool)
    pruned[0, 7] = pruned[1, 7] = True
    relevance = torch.arange(W, dtype=torch.float32).repeat(H, 1) / 100  # (8, 8), 0 .. 0.07
    attention = torch.full((H, W), 0.01)
    attention[3, 3] = 0.02  # a_m
    attention[0, 7] = attention[1, 7] = 0.04
    return StepRecord(step=3, relevance=relevance, region=region, attention=attention, pruned=pruned,
                      distracting=pruned, n_pruned=2, n_region=16, grid=(H, W))


CTX = StepContext(task="push", instruction="push the red puck to the green goal", seed=7, config="dtp",
                  dtp_enabled=True, tau=1.0, success=False)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """(figure, PNG pixels (rows, cols, 3)) of the known step over a grey image."""
    import matplotlib.pyplot as plt

    image = np.full((H * PX, W * PX, 3), GREY, dtype=np.uint8)
    fig = step_heatmap_figure(image, known_step(), CTX)
    path = tmp_path_factory.mktemp("heatmap") / "step.png"
    fig.savefig(path, dpi=fig.dpi)
    png = np.asarray(Image.open(path).convert("RGB")).astype(int)
    yield fig, png
    plt.close(fig)


def pixel(fig, png, ax, x: float, y: float) -> np.ndarray:
    """The PNG's colour at data point (x, y) of `ax` (display origin is bottom-left, PNG rows go down)."""
    dx, dy = ax.transData.transform((x, y))
    return png[png.shape[0] - 1 - int(round(dy)), int(round(dx))]


def at_patch(i: int, j: int) -> tuple[float, float]:
    return (j + 0.5) * PX - 0.5, (i + 0.5) * PX - 0.5


def panels(fig):
    """The four image panels: camera, r, A, G and D."""
    named = {ax.get_label(): ax for ax in fig.axes}
    return [named[n] for n in ("camera", "r", "A", "G and D")]


def test_pruned_patches_are_magenta_and_the_rest_keeps_the_image(drawn):
    fig, png = drawn
    overlay = panels(fig)[3]
    blend = (1 - D_ALPHA) * GREY + D_ALPHA * 255 * np.array(D_RGB)
    for i, j in ((0, 7), (1, 7)):
        assert np.abs(pixel(fig, png, overlay, *at_patch(i, j)) - blend).max() <= 3
    assert np.abs(pixel(fig, png, overlay, *at_patch(7, 0)) - GREY).max() <= 1  # neither G nor D
    assert np.abs(pixel(fig, png, overlay, *at_patch(3, 3)) - GREY).max() <= 1  # G is an outline, not a fill


def test_region_is_an_outline_along_its_border(drawn):
    fig, png = drawn
    for ax in panels(fig)[1:]:
        edge = pixel(fig, png, ax, 3.5 * PX, 2 * PX - 0.5)  # on G's top edge, mid-patch
        assert edge.min() >= 225, edge  # white line
    overlay = panels(fig)[3]
    assert np.abs(pixel(fig, png, overlay, 3.5 * PX, 1 * PX - 0.5) - GREY).max() <= 1  # a patch row above: no line


def test_colour_bars_span_their_colour_maps_and_mark_the_threshold(drawn):
    import matplotlib

    fig, png = drawn
    bars = [child for ax in panels(fig) for child in ax.child_axes]
    assert [b.get_label() for b in bars] == ["colour bar r", "colour bar A"]
    for bar, cmap in zip(bars, (R_CMAP, A_CMAP)):
        lut = matplotlib.colormaps[cmap]
        for share in (0.03, 0.3, 0.97):  # opaque colour map values at the bar's bottom, middle and top
            seen = pixel(fig, png, bar, 0.5, bar.get_ylim()[1] * share)
            assert np.abs(seen - np.array(lut(share)[:3]) * 255).max() <= 8, (cmap, share, seen)
    thr = threshold(known_step(), CTX.tau)
    assert thr == pytest.approx(0.02)
    line = pixel(fig, png, bars[1], 0.5, thr)
    assert np.abs(line - np.array(D_RGB) * 255).max() <= 10  # magenta threshold on A's bar
    assert bars[0].get_ylim()[1] == pytest.approx(0.07) and bars[1].get_ylim()[1] == pytest.approx(0.04)


def test_legend_header_and_caption(drawn):
    fig, png = drawn
    legend = panels(fig)[3].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["G: important region (16 tokens)", "D: pruned (2 tokens)"]
    swatch = legend.get_patches()[0].get_window_extent(fig.canvas.get_renderer())
    x, y = swatch.x0 + swatch.width / 2, swatch.y0 + swatch.height / 2
    colour = png[png.shape[0] - 1 - int(round(y)), int(round(x))]
    assert np.abs(colour - ((1 - D_ALPHA) * 255 + D_ALPHA * 255 * np.array(D_RGB))).max() <= 4  # magenta on white
    texts = [t.get_text() for t in fig.texts]
    assert texts[0] == "push  |  seed 7  |  step 3  |  DTP, tau = 1  |  episode failed"
    assert texts[1] == '"push the red puck to the green goal"  |  pruned 2 of 64 image tokens, G holds 16'
    assert texts[2] == CAPTION


def test_header_names_the_baseline_and_unknown_outcomes():
    base = StepContext.from_episode({"task": "reach", "seed": 3, "config": "baseline", "dtp_enabled": False,
                                     "tau": None, "instruction": "reach the red ball"})
    assert base.config_label == "baseline (DTP off)" and base.outcome == "outcome unknown"
    sweep = StepContext.from_episode({"task": "reach", "seed": 3, "config": "random_outside@tau=0.5",
                                      "dtp_enabled": True, "tau": 0.5, "success": True})
    assert sweep.config_label == "random_outside@tau=0.5" and sweep.outcome == "episode succeeded"


def test_mask_outline_counts_the_border_edges():
    one = np.zeros((3, 3), bool)
    one[1, 1] = True
    segs = mask_outline(one)
    assert segs.shape == (4, 2, 2)
    assert sorted(map(tuple, segs.reshape(-1, 4).tolist())) == [(1, 1, 1, 2), (1, 1, 2, 1), (1, 2, 2, 2), (2, 1, 2, 2)]
    assert len(mask_outline(np.ones((3, 5), bool))) == 2 * (3 + 5)
    assert len(mask_outline(np.zeros((3, 5), bool))) == 0
    rng = np.random.default_rng(0)
    for _ in range(20):  # every edge between a member and a non-member (or the border), once
        m = rng.random((5, 6)) < 0.4
        pad = np.pad(m, 1)
        expected = sum(int(m[i, j]) * sum(not pad[i + 1 + di, j + 1 + dj] for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))
                       for i in range(5) for j in range(6))
        assert len(mask_outline(m)) == expected


def test_pruned_colour_is_no_palette_colour():
    """D's magenta stays >= 0.35 (RGB, [0, 1]) from every colour a scene object can wear."""
    from dtp.envs.variants import NEUTRAL_RGB, VARIANTS

    colours = {f"{v.name}/{s}/{c}": rgb for v in VARIANTS.values() for s, split in v.splits.items()
               for c, rgb in split.palette.items()}
    colours["neutral"] = NEUTRAL_RGB
    colours["Meta-World robot red"] = (0.5, 0.1, 0.1)  # the Sawyer's links (xyz_base rgba)
    near = {k: round(float(np.linalg.norm(np.subtract(rgb, D_RGB))), 3) for k, rgb in colours.items()
            if np.linalg.norm(np.subtract(rgb, D_RGB)) < 0.35}
    assert not near


@pytest.mark.slow
def test_pruned_colour_is_in_no_rendered_scene():
    """Every pixel of a first frame of every task, both variants and both splits, lies >= 0.3 from magenta."""
    from dtp.envs import DistractorConfig, make_env
    from dtp.envs.tasks import TASK_NAMES

    closest = 1e9
    for variant in ("plain", "grounded"):
        for palette in ("train", "ood"):
            for task in TASK_NAMES:
                env = make_env(task, variant=variant, distractors=DistractorConfig(count=3, palette=palette))
                try:
                    obs, _ = env.reset(seed=1_010_000)
                finally:
                    env.close()
                px = obs["image"].reshape(-1, 3).astype(np.float32) / 255
                closest = min(closest, float(np.linalg.norm(px - np.array(D_RGB), axis=1).min()))
    assert closest >= 0.3, closest


def test_demo_heatmap_header_tells_the_runs_episode(tmp_path, monkeypatch):
    """The demo's heatmap replays the run's first DTP scene of a task; its header names that episode."""
    import dtp.analysis.heatmaps as heatmaps
    from dtp.demo import run_demo
    from dtp.eval.store import RunStore

    seen = []
    monkeypatch.setattr(heatmaps, "save_step_heatmap", lambda image, rec, path, ctx=None: seen.append(ctx) or path)
    run_demo(tasks=("reach",), episodes=1, max_steps=3, out_dir=tmp_path, progress=False)
    (row,) = [e for e in RunStore(tmp_path / "run").episodes() if e["config"] == "dtp"]
    (ctx,) = seen
    assert (ctx.task, ctx.seed, ctx.instruction, ctx.config, ctx.success) == \
        ("reach", row["seed"], row["instruction"], "dtp", row["success"])
    assert ctx.dtp_enabled and ctx.tau == 1.0 and ctx.config_label == "DTP, tau = 1"
