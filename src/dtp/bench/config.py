"""What `dtp bench` measures, validated up front (ConfigError naming the bad option)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .models import check_model_name

__all__ = ["BenchConfig", "DEFAULT_MODELS", "TARGETS", "DTYPES"]

DEFAULT_MODELS = ("tinyvla", "vla-12L-768")
TARGETS = {"capture_ratio": 1.05, "dtp_ratio": 2.1, "capture_fraction": 0.01}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BenchConfig:
    """What `dtp bench` measures. models: builder names, named shapes ("llama-7b") or shape .json paths.
    repeats / warmup: timed / untimed rounds; min_seconds: more rounds until the slowest variant has that much
    timed. tau: None picks the largest tau of TAU_LADDER that prunes on the bench frame. threads: torch threads
    (None: torch's default). device: None = "cuda" when available, else "cpu". dtype: None = bfloat16 on CUDA,
    float32 on the CPU. agreement_steps: frames on which approx_image is compared with exact (the "tinyvla" model
    only). episodes: rollouts per setting (DTP off / on) for the throughput table ("tinyvla", needs dtp.envs).
    count_work: count FLOPs and operator calls (one more call of each variant). batch_sizes: per-sample throughput of
    plain, DTP and naive stepping that many observations at once (dtp.bench.batched; () skips it).
    rollout_batch / rollout_batch_episodes: episodes/min of that many DTP rollouts through dtp.eval at --batch 1
    and at --batch rollout_batch, in one run ("tinyvla"; 0 episodes skips it)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    repeats: int = 5
    warmup: int = 2
    min_seconds: float = 2.0
    threads: int | None = None
    seed: int = 0
    tau: float | None = None
    memory: bool = True
    agreement_steps: int = 200
    episodes: int = 2
    device: str | None = None
    dtype: str | None = None
    count_work: bool = True
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16)
    rollout_batch: int = 8
    rollout_batch_episodes: int = 8

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no bench model given")
        for m in self.models:
            check_model_name(m)
        if self.repeats < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise ConfigError(
                f"repeats must be >= 1, warmup and min_seconds >= 0, got {self.repeats}, {self.warmup}, {self.min_seconds}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.tau is not None and (math.isnan(self.tau) or self.tau < 0):
            raise ConfigError(f"tau must be >= 0, got {self.tau}")
        if self.agreement_steps < 0 or self.episodes < 0 or self.rollout_batch_episodes < 0:
            raise ConfigError("agreement_steps, episodes and rollout_batch_episodes must be >= 0")
        if self.rollout_batch < 2:
            raise ConfigError(f"rollout_batch must be >= 2 (it is compared with batch 1), got {self.rollout_batch}")
        if any(int(b) < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except RuntimeError as e:
                raise ConfigError(f"device {self.device!r}: {e}") from e
            if dev.type not in ("cpu", "cuda"):
                raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError("device cuda was asked for but torch sees no CUDA device here")

    def torch_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def torch_dtype(self) -> torch.dtype:
        if self.dtype is not None:
            return DTYPES[self.dtype]
        return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
