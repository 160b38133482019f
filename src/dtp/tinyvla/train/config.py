"""TrainConfig: everything a TinyVLA training run depends on, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from ...errors import ConfigError
from ..configuration import TinyVLAConfig
from .precision import PRECISIONS

__all__ = ["TrainConfig", "STAGES"]

STAGES = ("actions", "grounding", "vision")
_MODEL_DEFAULTS = TinyVLAConfig()  # the model sizes are TinyVLAConfig's; TrainConfig only lets a run change them


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Validated at construction (ConfigError)."""

    data_dir: str = "data/demos"  # one folder, or several joined with commas
    out_dir: str = "runs/train_tinyvla"
    steps: int = 2800
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05
    warmup: int = 100
    grad_clip: float = 1.0
    bin_sigma: float = 2.0  # >0: soft targets, a Gaussian over neighbouring bins (std in bins); 0: one-hot CE
    seed: int = 0
    # model sizes (TinyVLAConfig): 1.66M parameters, 6.7 MB; measured 1.1-1.9 s/step at batch 64 in bf16
    # on one thread of the shared 2-core machine (hidden 192: ~+40%, 256: ~+2x); the defaults are the
    # shipped model's recipe (it ran with --threads 1, 2800 steps in 58 min)
    image_size: int = _MODEL_DEFAULTS.image_size
    patch_size: int = _MODEL_DEFAULTS.patch_size
    vision_width: int = _MODEL_DEFAULTS.vision_width
    hidden_size: int = _MODEL_DEFAULTS.hidden_size
    num_layers: int = _MODEL_DEFAULTS.num_layers
    num_heads: int = _MODEL_DEFAULTS.num_heads
    intermediate_size: int = _MODEL_DEFAULTS.intermediate_size
    # data
    tasks: tuple[str, ...] | None = None  # None: every task folder in data_dir
    only_success: bool = True
    val_fraction: float = 0.1
    max_shift: int = 3  # pixels, random shift augmentation
    color_jitter: float = 0.1  # brightness/contrast factor range +-
    normalize_proprio: bool = False  # the model standardises proprio by the training demos' mean and std
    # bookkeeping
    log_every: int = 10
    eval_every: int = 400
    eval_samples: int = 1536  # val steps per periodic evaluation (a fixed subset); 0 = all
    save_every: int = 400
    keep_checkpoints: int = 2
    resume: bool = False
    threads: int = 1  # torch threads; 2 on a shared 2-core machine stalls (OpenMP spin-waits), see docs/performance.md
    precision: str = "auto"  # autocast dtype of the training forward ("auto": bf16 where the CPU has it natively, else fp32 | "bf16" | "fp32"); eval runs fp32
    progress: bool = True
    # VLM stage (docs/training.md): "grounding" pretrains on grounding_dir/train only (data_dir unused);
    # "actions" trains on the demos, with grounding_share of the steps on a grounding batch instead
    stage: str = "actions"
    grounding_dir: str | None = None  # written by `dtp grounding-data` (train/ and val/ inside)
    grounding_share: float = 0.0
    init_from: str | None = None  # start from this checkpoint (its architecture and tokenizer; sizes above ignored)
    num_registers: int = 0  # register tokens after the image span (TinyVLAConfig.num_registers)
    image_dropout: float = 0.0  # each action sample hides up to this share of its image tokens (mask, original positions)
    patch_word_weight: float = 0.0  # >0: dense patch-word loss on grounding batches (frames need patch_words)
    # >0: Eq. 1's relevance of the frames' instructions trained onto the parts they name (grounding batches)
    instruction_attention_weight: float = 0.0
    instruction_attention_layers: tuple[int, ...] = (2, 3)  # language-model layers whose attention it trains

    def __post_init__(self) -> None:
        self._check_run()
        self._check_stage()

    def _check_run(self) -> None:
        """Counts, rates, sizes, precision, tasks and paths."""
        for name in ("steps", "batch_size", "image_size", "patch_size", "vision_width", "hidden_size",
                     "num_layers", "num_heads", "intermediate_size", "log_every", "eval_every", "save_every",
                     "keep_checkpoints", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "max_shift", "eval_samples", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                _bad(f"{name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            _bad(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            _bad(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            _bad(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (math.isfinite(self.bin_sigma) and self.bin_sigma >= 0):
            _bad(f"bin_sigma must be >= 0, got {self.bin_sigma!r}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            _bad(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if not 0 <= self.val_fraction < 1:
            _bad(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if not 0 <= self.color_jitter < 1:
            _bad(f"color_jitter must lie in [0, 1), got {self.color_jitter!r}")
        if self.warmup >= self.steps and self.steps > 1:
            _bad(f"warmup ({self.warmup}) must be shorter than steps ({self.steps})")
        if self.patch_size % 2:
            _bad(f"patch_size must be even (the encoder's stem halves the resolution), got {self.patch_size}")
        if self.image_size % self.patch_size:
            _bad(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            _bad(f"hidden_size ({self.hidden_size}) must split into num_heads ({self.num_heads}) even-sized heads")
        if self.max_shift * 2 >= self.image_size:
            _bad(f"max_shift ({self.max_shift}) is too large for {self.image_size} px images")
        if self.save_every % self.log_every:
            _bad(f"save_every ({self.save_every}) must be a multiple of log_every ({self.log_every}) "
                 "so that a resumed run logs the same windows")
        if self.precision not in PRECISIONS:
            _bad(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.tasks is not None and (isinstance(self.tasks, str) or not self.tasks):
            _bad(f"tasks must be a non-empty tuple of task names or None, got {self.tasks!r}")
        if not str(self.data_dir) or not str(self.out_dir):
            _bad("data_dir and out_dir must be non-empty paths")

    def _check_stage(self) -> None:
        """The stage and what it mixes in: grounding data, image dropout, registers, auxiliary losses."""
        if self.stage not in STAGES:
            _bad(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not 0 <= self.grounding_share < 1:
            _bad(f"grounding_share must lie in [0, 1), got {self.grounding_share!r}")
        if (self.stage != "actions" or self.grounding_share > 0) and not self.grounding_dir:
            _bad(f"the {self.stage} stage and grounding_share > 0 need grounding_dir")
        if self.stage != "actions" and self.grounding_share:
            _bad(f"grounding_share mixes grounding into the actions stage; the {self.stage} stage takes no share")
        if not 0 <= self.image_dropout < 1:
            _bad(f"image_dropout must lie in [0, 1), got {self.image_dropout!r}")
        if isinstance(self.num_registers, bool) or not isinstance(self.num_registers, int) or self.num_registers < 0:
            _bad(f"num_registers must be a non-negative integer, got {self.num_registers!r}")
        if not (isinstance(self.patch_word_weight, (int, float)) and math.isfinite(self.patch_word_weight)
                and self.patch_word_weight >= 0):
            _bad(f"patch_word_weight must be >= 0, got {self.patch_word_weight!r}")
        if self.patch_word_weight > 0 and self.stage == "actions" and not self.grounding_share:
            _bad("patch_word_weight applies to grounding batches: use stage='grounding' or grounding_share > 0")
        w = self.instruction_attention_weight
        if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
            _bad(f"instruction_attention_weight must be >= 0, got {w!r}")
        if w > 0 and (self.stage == "vision" or (self.stage == "actions" and not self.grounding_share)):
            _bad("instruction_attention_weight applies to grounding batches: use stage='grounding' or grounding_share > 0")
        layers = self.instruction_attention_layers
        if (isinstance(layers, str) or not layers
                or any(isinstance(l, bool) or not isinstance(l, int) or l < 0 for l in layers)):
            _bad(f"instruction_attention_layers must be a non-empty tuple of layer indices >= 0, got {layers!r}")

    def model_config(self, num_words: int, action_dims: int = _MODEL_DEFAULTS.action_dims,
                     proprio_dims: int = _MODEL_DEFAULTS.proprio_dims) -> TinyVLAConfig:
        """The model of this run's sizes; the action and proprio sizes come from the demos."""
        return TinyVLAConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            vision_width=self.vision_width,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            num_words=num_words,
            action_dims=action_dims,
            proprio_dims=proprio_dims,
            num_registers=self.num_registers,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks) if self.tasks is not None else None
        d["instruction_attention_layers"] = list(self.instruction_attention_layers)
        return d


def _bad(msg: str) -> NoReturn:
    raise ConfigError(f"TrainConfig: {msg}")
