"""Region sources: where the important region G of one control step comes from.

DTP has two parts that can each fail: the region G (is it on the task?) and the rule over
action attention (does pruning what clears tau * max-in-G help?). A region source is the
first part alone, behind one small protocol, so the rule (Eq. 5), the ablations and the
diagnostics run unchanged over any of them:

    source(obs, trace, grid, config) -> Region(region=G (h, w) bool, relevance=r (h, w) float)

Sources, chosen by `DTPConfig.region` (see `register_region_source` to add one):
- "attention": r = prompt->image attention at the relevance layers; G = topk(smooth(r), k).
- "similarity": r = cosine of prompt and image hidden states; G = topk(smooth(r), k).
- "oracle": G = the patches holding any pixel of the task object, the goal or the gripper in
  the simulator's segmentation (`obs.segmentation`, labels below). The upper bound of any
  relevance method. Not dilated (the any-pixel rule already takes in every patch the parts
  touch) and not capped at k (k sizes a ranking; the ground truth has no order to cut by).
- "mask": G = the caller's mask (`obs.region_mask`), a bool (h, w) patch mask, or a bool
  (H, W) pixel mask of the image's size mapped to patches by the any-pixel rule
  (`core.pixels_to_patches`; pass an (h, w) mask to use another rule). This is how a
  detector or segmenter plugs in.
Given regions (oracle, mask) ignore k and sigma; their r is G as a 0/1 map (for heatmaps).
An empty G (nothing visible, or a detector that found nothing) prunes nothing: see
`core.distracting_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from . import core
from .errors import AttentionError, ConfigError, InputError

if TYPE_CHECKING:  # the config and the model protocol import nothing from here at run time
    from .config import DTPConfig
    from .models.base import Observation, Trace

__all__ = [
    "Region",
    "RegionSource",
    "register_region_source",
    "region_source",
    "region_sources",
    "SEGMENTATION_LABELS",
    "ORACLE_LABELS",
    "DISTRACTOR_LABELS",
    "OBJECT_LABEL",
]

# Segmentation labels of dtp.envs (MetaWorldEnv.segmentation, LiberoEnv.segmentation): the oracle's ground
# truth. robot (the arm) and added (a distractor a perturbed suite added) are LIBERO's so far.
SEGMENTATION_LABELS = {"background": 0, "task_object": 1, "goal": 2, "gripper": 3, "distractor": 4, "lookalike": 5,
                       "robot": 6, "added": 7}
ORACLE_LABELS = (1, 2, 3)  # task object, goal, gripper
DISTRACTOR_LABELS = (4, 5, 7)  # generic distractors, lookalikes, a LIBERO suite's added object
OBJECT_LABEL = 1  # the object the instruction names


@dataclass(frozen=True)
class Region:
    """One step's important region G and the map it came from (batch removed)."""

    region: torch.Tensor  # (h, w) bool, G
    relevance: torch.Tensor  # (h, w) float32, r (G as 0/1 for given regions)


@dataclass(frozen=True)
class RegionSource:
    """A named way to get G. `compute(obs, trace, grid, config) -> Region`.

    needs_hidden_states: pass 1 must return prompt/image hidden states (similarity).
    obs_field: the Observation field the source reads (None: it reads only the trace);
      an evaluation loop that can supply that field does so (dtp.eval.episode).
    """

    name: str
    compute: Callable[["Observation", "Trace", tuple[int, int], "DTPConfig"], Region]
    needs_hidden_states: bool = False
    obs_field: str | None = None
    summary: str = ""
    sweep_tau: float | None = None  # the tau a sweep runs this source at (None: the sweep's default tau)


_SOURCES: dict[str, RegionSource] = {}


def register_region_source(source: RegionSource) -> None:
    """Add (or replace) a region source; `DTPConfig(region=source.name)` then selects it."""
    _SOURCES[source.name] = source


def region_sources() -> tuple[str, ...]:
    """Names of the registered sources, in registration order."""
    return tuple(_SOURCES)


def region_source(name: str) -> RegionSource:
    """The registered source called `name` (ConfigError naming the choices otherwise)."""
    try:
        return _SOURCES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"region must be one of {region_sources()}, got {name!r}") from None


# -- ranked sources: r from the trace, G = topk(smooth(r), k) -------------------------------
def _ranked(r: torch.Tensor, config: "DTPConfig") -> Region:
    g = core.important_region(r, config.k, config.effective_sigma)
    return Region(region=g, relevance=r)


def _attention(obs: "Observation", trace: "Trace", grid: tuple[int, int], config: "DTPConfig") -> Region:
    if trace.prompt_rows is None:
        raise AttentionError("region='attention' needs prompt->image rows; the adapter captured none")
    return _ranked(core.relevance_from_attention(trace.prompt_rows, grid), config)


def _similarity(obs: "Observation", trace: "Trace", grid: tuple[int, int], config: "DTPConfig") -> Region:
    if trace.prompt_hidden is None or trace.image_hidden is None:
        raise AttentionError("region='similarity' needs hidden states; the adapter returned none")
    return _ranked(core.relevance_from_similarity(trace.prompt_hidden, trace.image_hidden, grid), config)


# -- given sources: G read from the observation ---------------------------------------------
def _given(g: torch.Tensor) -> Region:
    g = g.bool()
    return Region(region=g, relevance=g.float())


def _image_size(obs: "Observation") -> tuple[int, int]:
    return tuple(np.asarray(obs.image).shape[:2])


def oracle_region(segmentation: np.ndarray, grid: tuple[int, int], labels: tuple[int, ...] = ORACLE_LABELS) -> torch.Tensor:
    """(h, w) bool: patches holding any pixel whose segmentation label is in `labels`."""
    hit = torch.from_numpy(np.isin(np.asarray(segmentation), labels))  # (H, W) bool
    return core.pixels_to_patches(hit, grid)


def _segmentation(obs: "Observation", source: str) -> np.ndarray:
    """The observation's (H, W) label map, checked; an InputError naming `source` otherwise."""
    seg = obs.segmentation
    if seg is None:
        raise InputError(
            f"region={source!r} needs the simulator's segmentation with each observation "
            "(obs['segmentation'], an (H, W) label map; dtp eval supplies it on the benchmark)"
        )
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"segmentation must be an (H, W) integer label map, got {seg.dtype} {seg.shape}")
    if tuple(seg.shape) != _image_size(obs):
        raise InputError(f"segmentation is {seg.shape[0]}x{seg.shape[1]}, the image {_image_size(obs)[0]}x{_image_size(obs)[1]}")
    return seg


def _oracle(obs: "Observation", trace: "Trace", grid: tuple[int, int], config: "DTPConfig") -> Region:
    return _given(oracle_region(_segmentation(obs, "oracle"), grid))


def removal_region(segmentation: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool G that leaves out exactly the patches showing a distractor and no task part:
    with tau = 0 DTP then prunes every distractor patch (the upper bound of distractor pruning)."""
    distractor = oracle_region(segmentation, grid, DISTRACTOR_LABELS)
    task = oracle_region(segmentation, grid, ORACLE_LABELS)
    return ~(distractor & ~task)


def _oracle_removal(obs: "Observation", trace: "Trace", grid: tuple[int, int], config: "DTPConfig") -> Region:
    return _given(removal_region(_segmentation(obs, "oracle_removal"), grid))


def _mask(obs: "Observation", trace: "Trace", grid: tuple[int, int], config: "DTPConfig") -> Region:
    m = obs.region_mask
    if m is None:
        raise InputError(
            "region='mask' needs a mask with each observation (obs['region_mask']): bool, "
            f"({grid[0]}, {grid[1]}) patches or the image's (H, W) pixels"
        )
    m = torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m.detach().cpu()
    if m.dtype != torch.bool:
        raise InputError(f"region_mask must be bool (threshold a score map first), got {m.dtype}")
    shape, image = tuple(m.shape), _image_size(obs)
    if shape == tuple(grid):  # a patch mask (wins when the image is as small as the grid)
        return _given(m)
    if shape == image:
        return _given(core.pixels_to_patches(m, grid))
    raise InputError(
        f"region_mask has shape {shape}; give the patch grid {tuple(grid)} or the image's pixels {image}"
    )


for _source in (
    RegionSource("attention", _attention, summary="prompt->image attention, top-k after smoothing"),
    RegionSource("similarity", _similarity, needs_hidden_states=True,
                 summary="cosine of prompt and image hidden states, top-k after smoothing"),
    RegionSource("oracle", _oracle, obs_field="segmentation",
                 summary="simulator segmentation: task object, goal and gripper patches"),
    RegionSource("mask", _mask, obs_field="region_mask", summary="the caller's per-step mask"),
    RegionSource("oracle_removal", _oracle_removal, obs_field="segmentation",
                 summary="simulator segmentation: every patch but the distractor-only ones (tau 0 removes them all)",
                 sweep_tau=0.0),
):
    register_region_source(_source)
del _source
