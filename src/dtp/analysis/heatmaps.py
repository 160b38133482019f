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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
