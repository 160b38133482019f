"""Pictures of one DTP step: the camera image with r, G, A and D laid over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..policy import StepRecord


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) patch map -> (H, W) by nearest patch (what each token covers)."""
    h, w = m.shape
    reps = (size[0] // h, size[1] // w)
    out = np.kron(m.float().numpy(), np.ones(reps, dtype=np.float32))
    pad = (size[0] - out.shape[0], size[1] - out.shape[1])
    return np.pad(out, ((0, pad[0]), (0, pad[1])), mode="edge")


def save_step_heatmap(image: np.ndarray, rec: StepRecord, path: str | Path, title: str = "") -> Path:
    """Write a PNG with five panels: image, relevance r, region G, attention A, pruned D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rec.relevance is None:
        raise ValueError("this step has no DTP maps (run with DTP on, or observe=True)")
    size = image.shape[:2]
    fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.9))
    panels = [
        ("image", None, None),
        ("relevance r", rec.relevance, "viridis"),
        (f"important region G ({int(rec.region.sum())})", rec.region, None),
        ("attention A", rec.attention, "magma"),
        (f"pruned D ({int(rec.pruned.sum())})", rec.pruned, None),
    ]
    for ax, (name, m, cmap) in zip(axes, panels):
        ax.imshow(image)
        if m is not None and cmap is not None:
            ax.imshow(_upsample(m, size), cmap=cmap, alpha=0.6)
        elif m is not None:
            mask = _upsample(m, size) > 0.5
            overlay = np.zeros((*size, 4), dtype=np.float32)
            colour = (0.1, 0.9, 0.2) if name.startswith("important") else (1.0, 0.1, 0.1)
            overlay[mask] = (*colour, 0.55)
            ax.imshow(overlay)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


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
