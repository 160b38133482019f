"""DTPConfig: every knob of the method and its ablations, validated at construction.

Light at import (no torch): the command line reads its fields and defaults to build its options.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from .choices import AGGREGATIONS, REGION_SOURCES, ROBOT_MASK_SOURCES
from .errors import ConfigError, did_you_mean

RELEVANCE_MODES = ("attention", "similarity")  # the sources that rank a relevance map (see dtp.regions)
ABLATIONS = (
    "none", "random_anywhere", "random_outside", "no_smoothing", "random_fraction_outside", "top_attention_outside"
)
# ablations that prune round(prune_fraction * tokens outside G), not Eq. 5's count (token-removal robustness)
FRACTION_ABLATIONS = ("random_fraction_outside", "top_attention_outside")


@dataclass(frozen=True)
class DTPConfig:
    """Settings of Distracting Token Pruning (PAPER.md, steps 1-3).

    enabled: False runs one plain pass (the baseline) through the same code.
    tau: tolerance of Eq. 5; small prunes more, inf prunes nothing.
    k: size of the important region G, a count (int) or a fraction of image tokens (float).
    sigma: Gaussian smoothing of the relevance map, in patches (0 = off).
    region: where G comes from, a source of dtp.regions: "attention" (prompt->image attention,
      the default), "similarity" (cosine of hidden states), "oracle" (the simulator's
      segmentation of task object, goal and gripper), "mask" (the caller's mask per step).
    relevance: the older name of `region`, kept as an alias: give either (equal values if both).
      After construction both hold the same name; `replace` and `to_dict` follow `region`.
    relevance_layers: layers L_sel used for relevance; None = the model's stored default, else the middle third.
    aggregation: how A_t combines over action tokens ("mean", "max", "sum", "first", "last").
    ablation: "none" (DTP), "random_anywhere" / "random_outside" (prune as many tokens as DTP
      would, chosen at random anywhere or only outside G), "no_smoothing" (sigma forced to 0),
      and two robustness probes independent of Eq. 5 (use region="oracle" so G is the task):
      "random_fraction_outside" (prune round(prune_fraction * tokens outside G) at random, seeded
      per step) and "top_attention_outside" (prune as many, the highest prompt->image attention
      outside G: the attention-sink test).
    prune_fraction: the share of tokens outside G the two robustness ablations prune (else unused).
    seed: seeds the random ablations (combined with the step index, so runs repeat exactly).
    keep_robot: an embodiment-aware G, our extension: "off" (the paper's), "segmentation" (the
      simulator's arm and gripper patches join G before Eq. 5) or "motion" (the patches that moved
      in the last steps join G: a training-free estimate of the robot); see dtp.robot_mask.
    """

    enabled: bool = True
    tau: float = 1.0
    k: int | float = 0.25
    sigma: float = 1.0
    relevance: str | None = None  # alias of region
    relevance_layers: tuple[int, ...] | None = None
    aggregation: str = "mean"
    ablation: str = "none"
    seed: int = 0
    region: str | None = None  # None: from `relevance`, else "attention" (last: positional order kept)
    prune_fraction: float = 0.25
    keep_robot: str = "off"  # our extension (dtp.robot_mask): "segmentation" or "motion" adds the robot to G

    def __post_init__(self) -> None:
        if not isinstance(self.tau, (int, float)) or isinstance(self.tau, bool) or math.isnan(self.tau) or self.tau < 0:
            raise ConfigError(f"tau must be a number >= 0 (inf prunes nothing), got {self.tau!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, float)):
            raise ConfigError(f"k must be an int count or a float fraction, got {self.k!r}")
        if isinstance(self.k, int) and self.k < 1:
            raise ConfigError(f"k as a count must be >= 1, got {self.k}")
        if isinstance(self.k, float) and not (0.0 < self.k <= 1.0):
            raise ConfigError(f"k as a fraction must be in (0, 1], got {self.k}")
        if not isinstance(self.sigma, (int, float)) or math.isnan(self.sigma) or self.sigma < 0:
            raise ConfigError(f"sigma must be >= 0 patches, got {self.sigma!r}")
        if self.region is not None and self.relevance is not None and self.region != self.relevance:
            raise ConfigError(
                f"region={self.region!r} and relevance={self.relevance!r} conflict: relevance is the old "
                "name of region, give one"
            )
        name = self.region if self.region is not None else self.relevance
        name = "attention" if name is None else name
        if name not in REGION_SOURCES:  # perhaps a source registered at run time (dtp.regions)
            from .regions import region_sources

            if name not in region_sources():
                given = "relevance" if self.region is None else "region"
                raise ConfigError(
                    f"{given} must be one of {region_sources()}, got {name!r}{did_you_mean(name, region_sources())}"
                )
        object.__setattr__(self, "region", name)
        object.__setattr__(self, "relevance", name)
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"
                              f"{did_you_mean(self.aggregation, AGGREGATIONS)}")
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}"
                              f"{did_you_mean(self.ablation, ABLATIONS)}")
        if self.keep_robot not in ROBOT_MASK_SOURCES:
            raise ConfigError(f"keep_robot must be one of {ROBOT_MASK_SOURCES}, got {self.keep_robot!r}"
                              f"{did_you_mean(self.keep_robot, ROBOT_MASK_SOURCES)}")
        pf = self.prune_fraction
        if isinstance(pf, bool) or not isinstance(pf, (int, float)) or math.isnan(pf) or not 0.0 < pf <= 1.0:
            raise ConfigError(f"prune_fraction must be a share in (0, 1], got {pf!r}")
        object.__setattr__(self, "prune_fraction", float(pf))
        if self.relevance_layers is not None:
            layers = tuple(self.relevance_layers)
            if not layers:
                raise ConfigError("relevance_layers must name at least one layer (or be None for the default)")
            if any(isinstance(x, bool) or not isinstance(x, int) for x in layers):
                raise ConfigError(f"relevance_layers must be ints, got {layers!r}")
            object.__setattr__(self, "relevance_layers", layers)

    @property
    def effective_sigma(self) -> float:
        return 0.0 if self.ablation == "no_smoothing" else float(self.sigma)

    def resolve_layers(self, num_layers: int, model_default: Sequence[int] | None = None) -> tuple[int, ...]:
        """The relevance layers for a model with `num_layers` layers; negative indices count from the end.

        None means the model's own default (chosen on validation scenes and stored with its
        checkpoint, see dtp.experiments.layer_choice) where it has one, else the middle third.
        """
        layers = self.relevance_layers if self.relevance_layers is not None else model_default
        if layers is None:
            lo = num_layers // 3
            hi = max(lo + 1, (2 * num_layers) // 3)
            return tuple(range(lo, hi))
        if len(layers) == 0:
            raise ConfigError("relevance layers must name at least one layer")
        out = []
        for layer in layers:
            idx = layer + num_layers if layer < 0 else layer
            if not 0 <= idx < num_layers:
                raise ConfigError(f"relevance layer {layer} is out of range for a model with {num_layers} layers")
            out.append(idx)
        return tuple(sorted(set(out)))

    def replace(self, **changes: Any) -> "DTPConfig":
        """A copy with `changes`; `relevance=` changes the region like `region=` (its alias)."""
        if "relevance" in changes and "region" not in changes:
            changes["region"] = changes["relevance"]
        changes.setdefault("relevance", None)  # the alias follows region
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["relevance"]  # the alias; from_dict accepts it from older files
        d["relevance_layers"] = list(self.relevance_layers) if self.relevance_layers is not None else None
        if math.isinf(self.tau):
            d["tau"] = "inf"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DTPConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown DTPConfig fields: {sorted(unknown)}")
        if d.get("tau") == "inf":
            d["tau"] = math.inf
        if d.get("relevance_layers") is not None:
            d["relevance_layers"] = tuple(d["relevance_layers"])
        return cls(**d)

