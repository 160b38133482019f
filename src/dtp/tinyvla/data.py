"""Scripted demonstrations for TinyVLA training, held in memory as tensors.

One HDF5 file per episode (``<data_dir>/<task>/ep_<seed>.h5``): datasets ``images`` uint8
(T, H, W, 3), ``proprio`` float32 (T, P), ``actions`` float32 (T, A) in [-1, 1]; attrs
``task``, ``instruction``, ``seed``, ``success`` (and more, unused here). Every step of
every episode is one training sample. Everything is loaded once as uint8 / float tensors
(a few hundred MB for 500 episodes) and batches are built by indexing, which keeps two
CPU cores busy with the model instead of with data loading.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..actions import ActionBinner
from ..errors import DTPError
from .tokenizer import BOS, PAD, build_word_tokenizer, encode_instruction

__all__ = [
    "DataError",
    "Episode",
    "DemoSet",
    "Batch",
    "find_episode_files",
    "load_episodes",
    "split_episodes",
    "build_tokenizer",
    "make_demo_set",
    "augment",
    "to_pixels",
]

log = logging.getLogger(__name__)


class DataError(DTPError, ValueError):
    """The demonstration folder is missing, empty, or holds files of the wrong shape."""


@dataclass
class Episode:
    """One demonstration, as stored (images possibly resized to the model's size)."""

    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray  # (T, H, W, 3) uint8
    proprio: np.ndarray  # (T, P) float32
    actions: np.ndarray  # (T, A) float32 in [-1, 1]
    path: Path
    relabelled: bool = False  # actions are an expert's labels of states another policy reached (DAgger)

    @property
    def n_steps(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Batch:
    """Model-ready tensors of B samples (see TinyVLA.sequence_embeddings for the layout)."""

    pixels: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    ids: torch.Tensor  # (B, 1 + P_max) long: BOS, words, PAD...
    word_lengths: torch.Tensor  # (B,) long
    proprio: torch.Tensor  # (B, P) float32
    action_bins: torch.Tensor  # (B, T) long in [0, bins)
    task_ids: torch.Tensor  # (B,) long, index into DemoSet.tasks


@dataclass
class DemoSet:
    """All steps of a list of episodes, concatenated (M steps in total)."""

    images: torch.Tensor  # (M, H, W, 3) uint8
    proprio: torch.Tensor  # (M, P) float32
    action_bins: torch.Tensor  # (M, T) long
    ids: torch.Tensor  # (M, 1 + P_max) long, right-padded with PAD
    word_lengths: torch.Tensor  # (M,) long
    task_ids: torch.Tensor  # (M,) long
    tasks: tuple[str, ...]  # names of task_ids
    n_episodes: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: torch.Tensor, pixels: torch.Tensor | None = None) -> Batch:
        """Samples at `index` (B,); `pixels` replaces the un-augmented images (e.g. by `augment`)."""
        ids = self.ids[index]
        lengths = self.word_lengths[index]
        p_max = int(lengths.max()) if len(index) else 0
        return Batch(
            pixels=to_pixels(self.images[index]) if pixels is None else pixels,
            ids=ids[:, : 1 + p_max],
            word_lengths=lengths,
            proprio=self.proprio[index],
            action_bins=self.action_bins[index],
            task_ids=self.task_ids[index],
        )


def find_episode_files(data_dir: str | Path, tasks: tuple[str, ...] | None = None) -> list[Path]:
    """Every episode under one or more demonstration folders, sorted per folder.

    A folder holds ``<task>/ep_*.h5`` (Meta-World) or ``<suite>/<index>/ep_*.h5`` (LIBERO: the task
    ``libero_object/3``). Several folders (one collection each, e.g. two collectors run side by side)
    are joined with commas. `tasks` keeps the named tasks only ("libero_object/3", or a folder name).
    """
    roots = [Path(p) for p in str(data_dir).split(",") if p.strip()] if isinstance(data_dir, str) else [Path(data_dir)]
    files: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise DataError(f"demonstration folder {root} does not exist (collect demos first, e.g. with `dtp collect`)")
        found = sorted(set(root.glob("*/ep_*.h5")) | set(root.glob("*/*/ep_*.h5")))
        if tasks is not None:
            found = [f for f in found if f.parent.name in tasks or f.parent.relative_to(root).as_posix() in tasks]
        files += found
    if not files:
        where = ", ".join(str(r) for r in roots)
        raise DataError(f"no episodes (<task>/ep_<seed>.h5 or <suite>/<index>/ep_<seed>.h5) under {where}"
                        + (f" for tasks {tasks}" if tasks else ""))
    return files


def _read_episode(path: Path, image_size: int) -> Episode:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            images = np.asarray(f["images"][()])
            proprio = np.asarray(f["proprio"][()], dtype=np.float32)
            actions = np.asarray(f["actions"][()], dtype=np.float32)
            attrs = dict(f.attrs)
    except (OSError, KeyError) as e:
        raise DataError(f"{path} is not a demonstration file (need images/proprio/actions): {e}") from e
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (T, H, W, 3), got {images.dtype} {images.shape}")
    t = images.shape[0]
    if proprio.shape[0] != t or actions.shape[0] != t or t == 0:
        raise DataError(f"{path}: images, proprio and actions need the same (non-zero) length, got "
                        f"{t}, {proprio.shape[0]}, {actions.shape[0]}")
    if images.shape[1:3] != (image_size, image_size):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        images = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def text(v) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    return Episode(
        task=text(attrs.get("task", path.parent.name)),
        instruction=text(attrs.get("instruction", "")),
        seed=int(attrs.get("seed", -1)),
        success=bool(attrs.get("success", True)),
        images=images,
        proprio=proprio,
        actions=actions,
        path=path,
        relabelled=text(attrs.get("labels", "")) == "expert",
    )


def demo_variant(data_dir: str | Path) -> str:
    """The benchmark variant of a demonstration folder, from the collection.json `dtp collect` writes:
    its "variant", "libero" for a LIBERO collection, "plain" for folders written before variants (or
    collection.json) existed. Of several folders (comma-joined), the first one's."""
    path = Path(str(data_dir).split(",")[0].strip()) / "collection.json"
    if not path.is_file():
        return "plain"
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e
    if info.get("benchmark") == "libero":
        return "libero"
    return str(info.get("variant", "plain"))


def load_episodes(
    data_dir: str | Path, image_size: int, *, tasks: tuple[str, ...] | None = None, only_success: bool = True
) -> list[Episode]:
    """Read every episode file (resizing images to image_size); skip failed demos if only_success
    (not DAgger's relabelled episodes: their actions are the expert's, whatever the outcome)."""
    episodes, skipped = [], 0
    for path in find_episode_files(data_dir, tasks):
        ep = _read_episode(path, image_size)
        if only_success and not ep.success and not ep.relabelled:  # a relabelled failure still holds good labels
            skipped += 1
            continue
        if not ep.instruction.strip():
            raise DataError(f"{path} has no instruction attribute")
        episodes.append(ep)
    if skipped:
        log.info("skipped %d unsuccessful demonstrations", skipped)
    if not episodes:
        raise DataError(f"no successful episodes under {data_dir}")
    return episodes


def split_episodes(episodes: list[Episode], val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """Hold out whole episodes, per task: round(val_fraction * n) of each task's episodes, chosen by seed.

    Deterministic in (the set of episode seeds, seed). A task with a single episode keeps it for training.
    """
    by_task: dict[str, list[Episode]] = {}
    for ep in episodes:
        by_task.setdefault(ep.task, []).append(ep)
    train, val = [], []
    for i, task in enumerate(sorted(by_task)):
        eps = sorted(by_task[task], key=lambda e: (e.seed, str(e.path)))
        n_val = int(round(val_fraction * len(eps))) if len(eps) > 1 else 0
        if val_fraction > 0 and len(eps) > 1:
            n_val = min(max(n_val, 1), len(eps) - 1)
        order = np.random.default_rng([seed, i, 0x7A1]).permutation(len(eps))
        held = set(order[:n_val].tolist())
        for j, ep in enumerate(eps):
            (val if j in held else train).append(ep)
    return train, val


def build_tokenizer(episodes: list[Episode]) -> Tokenizer:
    """Word tokenizer over the benchmark's vocabulary (dtp.envs) plus every word of the demos' instructions."""
    words: set[str] = set()
    try:
        from ..envs.tasks import all_instruction_words

        words.update(all_instruction_words())
    except ImportError:  # the benchmark package is optional for training on a demo folder
        pass
    for ep in episodes:
        words.update(ep.instruction.lower().split())
    return build_word_tokenizer(sorted(words))


def make_demo_set(
    episodes: list[Episode], tokenizer: Tokenizer, binner: ActionBinner, tasks: tuple[str, ...]
) -> DemoSet:
    """Concatenate episodes into one DemoSet; actions become bins, instructions word ids."""
    if not episodes:
        raise DataError("no episodes to build a dataset from")
    pad_id, bos_id = tokenizer.token_to_id(PAD), tokenizer.token_to_id(BOS)
    encoded = [encode_instruction(tokenizer, ep.instruction, unknown="error") for ep in episodes]
    p_max = max(len(w) for w in encoded)
    dims = {(ep.proprio.shape[1], ep.actions.shape[1]) for ep in episodes}
    if len(dims) != 1:
        raise DataError(f"episodes disagree on (proprio, action) sizes: {sorted(dims)}")
    ids, lengths, task_ids = [], [], []
    for ep, words in zip(episodes, encoded):
        row = [bos_id] + words + [pad_id] * (p_max - len(words))
        ids.append(torch.tensor(row, dtype=torch.long).expand(ep.n_steps, -1))
        lengths.append(torch.full((ep.n_steps,), len(words), dtype=torch.long))
        task_ids.append(torch.full((ep.n_steps,), tasks.index(ep.task), dtype=torch.long))
    return DemoSet(
        images=torch.from_numpy(np.concatenate([ep.images for ep in episodes])),
        proprio=torch.from_numpy(np.concatenate([ep.proprio for ep in episodes]).astype(np.float32)),
        action_bins=torch.from_numpy(binner.to_bins(np.concatenate([ep.actions for ep in episodes]))),
        ids=torch.cat(ids),
        word_lengths=torch.cat(lengths),
        task_ids=torch.cat(task_ids),
        tasks=tasks,
        n_episodes=len(episodes),
    )


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1], exactly as the adapter converts an observation."""
    return images.permute(0, 3, 1, 2).float().div(255)


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int, jitter: float) -> torch.Tensor:
    """Spatially safe augmentation: (B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1].

    A random shift of up to max_shift pixels per sample (edge-replicated padding, then a
    crop: DrQ's shift), and brightness/contrast scaled by factors in [1 - jitter, 1 + jitter].
    No flips or rotations: left/right and up/down carry the task. Colours keep their hue,
    since instructions name them.
    """
    x = to_pixels(images)  # (B, 3, H, W)
    b, _, h, w = x.shape
    if max_shift > 0:
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
        x = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    if jitter > 0:
        factors = 1 + (torch.rand(b, 2, generator=generator) * 2 - 1) * jitter  # (B, 2): brightness, contrast
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factors[:, 1].view(b, 1, 1, 1) + mean
        x = x * factors[:, 0].view(b, 1, 1, 1)
        x = x.clamp(0, 1)
    return x
