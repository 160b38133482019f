"""Pictures of one DTP step: the camera image with r, G, A and D laid over it, readable on its own.

A heatmap carries its keys: colour bars for r and A (with the rule's threshold tau * a_m marked on
A's), G as an outline, D filled in a colour no scene object wears, a header naming the episode and
config, and a caption saying what a good map looks like. The colours are shared with `dtp view`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..policy import StepRecord

# Overlay colours, shared with the HTML viewer (dtp.analysis.view). D is magenta: of the colours
# tried it sits farthest (RGB distance >= 0.37) from every pixel of Meta-World frames in both variants
# and splits (the red robot, every palette colour, the tan neutral; tests/analysis/test_heatmaps.py).
D_RGB = (1.0, 0.0, 1.0)
G_RGB = (1.0, 1.0, 1.0)  # G's outline: white over a black casing, visible on light and dark scenes
G_CASING_RGB = (0.0, 0.0, 0.0)
R_CMAP = "viridis"  # relevance r
A_CMAP = "cividis"  # attention A (no magenta in it, so D stays the only magenta)
D_ALPHA = 0.45  # fill of a pruned patch (its border is drawn solid)
MAP_ALPHA = 0.65  # r and A over the image

CAPTION = ("A good map: G's white outline holds the named object, its goal and the gripper; A is brightest "
           "inside G; D (magenta) covers distractors, never the task.")


@dataclass(frozen=True)
class StepContext:
    """What a heatmap's header says about its episode: scene, config and outcome."""

    task: str
    instruction: str
    seed: int
    config: str  # the run's name for the config: "baseline", "dtp", "dtp@tau=0.5", "random_outside@tau=1"
    dtp_enabled: bool
    tau: float | None = None
    success: bool | None = None  # None: the episode's outcome is not known

    @classmethod
    def from_episode(cls, row: dict[str, Any]) -> "StepContext":
        """From an episode row of a run folder (episodes.jsonl)."""
        return cls(task=row["task"], instruction=row.get("instruction", ""), seed=int(row["seed"]),
                   config=row["config"], dtp_enabled=bool(row.get("dtp_enabled", row.get("tau") is not None)),
                   tau=row.get("tau"), success=row.get("success"))

    @property
    def config_label(self) -> str:
        """'baseline (DTP off)', 'DTP, tau = 1', 'random_outside@tau=1'."""
        if not self.dtp_enabled:
            return f"{self.config} (DTP off)"
        name = "DTP" if self.config == "dtp" else self.config
        if "tau=" not in name and self.tau is not None:
            name += f", tau = {self.tau:g}"
        return name

    @property
    def outcome(self) -> str:
        return {True: "episode succeeded", False: "episode failed", None: "outcome unknown"}[self.success]


def header_lines(ctx: StepContext | None, rec: StepRecord) -> tuple[str, str]:
    """Two header lines: who and where (task, seed, step, config, outcome); what was said and pruned."""
    n_tokens = rec.grid[0] * rec.grid[1] or (rec.relevance.numel() if rec.relevance is not None else 0)
    pruned = f"pruned {rec.n_pruned} of {n_tokens} image tokens, G holds {rec.n_region}"
    if ctx is None:
        return f"step {rec.step}", pruned
    first = f"{ctx.task}  |  seed {ctx.seed}  |  step {rec.step}  |  {ctx.config_label}  |  {ctx.outcome}"
    return first, f"\"{ctx.instruction}\"  |  {pruned}"


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) patch map -> (H, W) by nearest patch (what each token covers)."""
    h, w = m.shape
    reps = (size[0] // h, size[1] // w)
    out = np.kron(m.float().numpy(), np.ones(reps, dtype=np.float32))
    pad = (size[0] - out.shape[0], size[1] - out.shape[1])
    return np.pad(out, ((0, pad[0]), (0, pad[1])), mode="edge")


def mask_outline(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Edges between a patch in `mask` and one outside it (or the border): (n, 2, 2) segments
    [[x0, y0], [x1, y1]] in patch units, x to the right, y down (patch (i, j) spans x j..j+1, y i..i+1)."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    pad = np.pad(m, 1)
    segs = []
    for i, j in zip(*np.nonzero(m)):
        pi, pj = i + 1, j + 1
        if not pad[pi - 1, pj]:
            segs.append(((j, i), (j + 1, i)))
        if not pad[pi + 1, pj]:
            segs.append(((j, i + 1), (j + 1, i + 1)))
        if not pad[pi, pj - 1]:
            segs.append(((j, i), (j, i + 1)))
        if not pad[pi, pj + 1]:
            segs.append(((j + 1, i), (j + 1, i + 1)))
    return np.asarray(segs, dtype=np.float32).reshape(-1, 2, 2)


def threshold(rec: StepRecord, tau: float | None) -> float | None:
    """The rule's threshold tau * a_m, a_m = max of A over G (None without A, G or a finite tau)."""
    if rec.attention is None or rec.region is None or tau is None or not math.isfinite(tau) or not bool(rec.region.any()):
        return None
    return float(tau) * float(rec.attention[rec.region].max())


def _draw_outline(ax, mask: torch.Tensor, cell: tuple[float, float]) -> None:
    from matplotlib.collections import LineCollection

    segs = mask_outline(mask) * np.array([cell[1], cell[0]], dtype=np.float32) - 0.5  # patch -> pixel centres
    if len(segs):
        ax.add_collection(LineCollection(segs, colors=[G_CASING_RGB], linewidths=3.2, capstyle="round"))
        ax.add_collection(LineCollection(segs, colors=[G_RGB], linewidths=1.4, capstyle="round"))


def _draw_pruned(ax, mask: torch.Tensor, size: tuple[int, int]) -> None:
    """D filled in magenta, each pruned patch framed (inset a little, so neighbours stay countable)."""
    from matplotlib.collections import PolyCollection

    over = np.zeros((*size, 4), dtype=np.float32)
    over[_upsample(mask, size) > 0.5] = (*D_RGB, D_ALPHA)
    ax.imshow(over, interpolation="nearest")
    h, w = mask.shape
    ch, cw = size[0] / h, size[1] / w
    inset = 0.7
    boxes = [[(j * cw - 0.5 + inset, i * ch - 0.5 + inset), ((j + 1) * cw - 0.5 - inset, i * ch - 0.5 + inset),
              ((j + 1) * cw - 0.5 - inset, (i + 1) * ch - 0.5 - inset), (j * cw - 0.5 + inset, (i + 1) * ch - 0.5 - inset)]
             for i, j in zip(*np.nonzero(np.asarray(mask, dtype=bool)))]
    if boxes:
        ax.add_collection(PolyCollection(boxes, facecolors="none", edgecolors=[D_RGB], linewidths=1.3))


def step_heatmap_figure(image: np.ndarray, rec: StepRecord, ctx: StepContext | None = None):
    """The figure: camera | r with G's outline | A with G's outline | G and D; header and caption.

    Colour bars give r's and A's values (A's marks the threshold tau * a_m when DTP ran). The
    figure's dpi is its saved dpi, so axes coordinates map straight onto the PNG's pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D

    if rec.relevance is None or rec.attention is None or rec.region is None:
        raise ConfigError("this step has no DTP maps (run with DTP on, or observe=True)")
    size = image.shape[:2]
    h, w = rec.region.shape
    cell = (size[0] / h, size[1] / w)
    fig = plt.figure(figsize=(13.0, 3.9), dpi=110)
    grid = fig.add_gridspec(1, 4, left=0.01, right=0.985, top=0.8, bottom=0.17, wspace=0.42)
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    for ax in axes:
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title("camera (what pass 1 saw)", fontsize=9)

    tau = ctx.tau if ctx is not None and ctx.dtp_enabled else None
    for ax, label in zip(axes, ("camera", "r", "A", "G and D")):
        ax.set_label(label)  # named, for tests and callers that add to a panel
    for ax, m, cmap, name in ((axes[1], rec.relevance, R_CMAP, "relevance r: prompt -> image attention"),
                              (axes[2], rec.attention, A_CMAP, "attention A: action -> image (Eq. 4)")):
        im = ax.imshow(_upsample(m, size), cmap=cmap, alpha=MAP_ALPHA, interpolation="nearest",
                       vmin=0.0, vmax=max(float(m.max()), 1e-12))
        _draw_outline(ax, rec.region, cell)
        ax.set_title(name, fontsize=9)
        cax = ax.inset_axes([1.03, 0.0, 0.05, 1.0])  # beside the panel, so the four panels keep one size
        bar = fig.colorbar(im, cax=cax)
        cax.set_label(f"colour bar {ax.get_label()}")
        bar.ax.tick_params(labelsize=7)
        bar.solids.set_alpha(1.0)
        if m is rec.attention:
            thr = threshold(rec, tau)
            if thr is not None and thr <= float(m.max()):
                bar.ax.axhline(thr, color=D_RGB, lw=2.5)
                bar.set_label("magenta line: threshold tau * a_m", fontsize=7)
            elif thr is not None:
                bar.set_label(f"tau * a_m = {thr:.3g}: above every A, nothing pruned", fontsize=7)
            else:
                bar.set_label("share of action attention", fontsize=7)
        else:
            bar.set_label("share of prompt attention", fontsize=7)

    ax = axes[3]
    pruned = rec.pruned if rec.pruned is not None and rec.n_pruned else torch.zeros_like(rec.region)  # DTP off: none
    _draw_pruned(ax, pruned, size)
    _draw_outline(ax, rec.region, cell)
    ax.set_title("important region G and pruned D", fontsize=9)
    ax.legend(handles=[Line2D([], [], color=G_RGB, lw=1.6, path_effects=_casing()),
                       Patch(facecolor=(*D_RGB, D_ALPHA), edgecolor=D_RGB, lw=1.2)],
              labels=[f"G: important region ({rec.n_region} tokens)", f"D: pruned ({rec.n_pruned} tokens)"],
              loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=8, frameon=False, ncol=1,
              handlelength=1.6)
    for ax in axes:
        ax.set_xlim(-0.5, size[1] - 0.5)
        ax.set_ylim(size[0] - 0.5, -0.5)

    first, second = header_lines(ctx, rec)
    fig.text(0.5, 0.965, first, ha="center", va="top", fontsize=10.5, weight="bold")
    fig.text(0.5, 0.9, second, ha="center", va="top", fontsize=9.5)
    fig.text(0.5, 0.02, CAPTION, ha="center", va="bottom", fontsize=8.5, style="italic", color="#333")
    return fig


def _casing():
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=3.4, foreground=G_CASING_RGB), patheffects.Normal()]


def save_step_heatmap(image: np.ndarray, rec: StepRecord, path: str | Path, ctx: StepContext | None = None) -> Path:
    """Write `step_heatmap_figure` as a PNG (making its folder)."""
    import matplotlib.pyplot as plt

    fig = step_heatmap_figure(image, rec, ctx)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG (making its folder) and free a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _overlay(ax, image: np.ndarray, mask: torch.Tensor | None, colour: tuple[float, float, float]) -> None:
    """The image with a patch mask laid over it in `colour`."""
    ax.imshow(image)
    if mask is not None:
        size = image.shape[:2]
        over = np.zeros((*size, 4), dtype=np.float32)
        over[_upsample(mask, size) > 0.5] = (*colour, 0.55)
        ax.imshow(over)
    ax.axis("off")


def save_swap_figure(frames: list, path: str | Path) -> Path:
    """One row per colour-swap frame (dtp.experiments.colour_swap.SwapFrame): image with the named object
    (green) and the lookalike (red) outlined by their patches, G for the original words, G for the
    swapped words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not frames:
        raise ValueError("no frames to draw")
    fig, axes = plt.subplots(len(frames), 3, figsize=(8.4, 2.9 * len(frames)), squeeze=False)
    for row, f in zip(axes, frames):
        _overlay(row[0], f.image, None, (0, 0, 0))
        both = np.zeros((*f.image.shape[:2], 4), dtype=np.float32)
        both[_upsample(f.named, f.image.shape[:2]) > 0.5] = (0.1, 0.9, 0.2, 0.45)
        both[_upsample(f.lookalike, f.image.shape[:2]) > 0.5] = (1.0, 0.1, 0.1, 0.45)
        row[0].imshow(both)
        row[0].set_title(f"{f.task} seed {f.seed}: named (green), lookalike (red)", fontsize=7)
        _overlay(row[1], f.image, f.g_original, (0.1, 0.9, 0.2))
        row[1].set_title(f"G: {f.instruction}", fontsize=7, wrap=True)
        _overlay(row[2], f.image, f.g_swapped, (0.1, 0.4, 1.0))
        verdict = {True: "moved", False: "did not move", None: "not scored"}[f.score.moved]
        row[2].set_title(f"G: {f.swapped} ({verdict})", fontsize=7, wrap=True)
    return save_figure(fig, path)
