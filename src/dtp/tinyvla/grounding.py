"""Grounding frames: benchmark scenes with questions answered from the simulator's ground truth.

Each frame is a seeded reset of a benchmark task with 0..max_distractors distractors, the arm
then moved for a random number of steps (the scripted expert or a random drift), rendered at
the model's size. `scene_from_env` describes what the frame shows (`dtp.tinyvla.scene`) and
`dtp.tinyvla.questions.ask` poses a few questions about it. Frames are much cheaper than
demonstrations (~0.1 s each) and need no successful episode.

    dtp grounding-data --out data/grounding --split train --frames 20000
    dtp grounding-data --out data/grounding --split val --frames 1000

(`python -m dtp.tinyvla.grounding` takes the same flags.)

Seeds: frame i of split s with base seed b resets with GROUNDING_SEED_BASE + SPLIT_OFFSET[s] +
1,000,000 * b + i (>= 20,000,000): never a demonstration seed (< 1,000,000) nor an evaluation
scene (dtp.eval: 1,000,000 + 10,000 * set + i), and train and val frames never share a scene.

Output: ``<out>/<split>/shard_<k>.h5``, `shard_size` frames each, written whole (a temporary
file renamed at the end), so a rerun of the same command skips finished shards and resumes.
Datasets: images uint8 (F, H, W, 3), proprio float32 (F, 4), seeds int64 (F,), tasks (F,)
str; qa_frame int64 (Q,) (index of the frame in the shard), qa_kind / qa_question /
qa_answer (Q,) str; patch_words uint8 (F, W, rows * cols), True where a patch holds an object
that patch_word_names[w] (W,) str describes (`scene.patch_word_maps`, the dense labels of the
VLM stage's patch-word loss); instructions (F,) str, the task instruction the env gave, and
instruction_regions uint8 (F, rows * cols), the patches of the parts it names (task object,
goal); swapped_instructions (F,) str and swapped_regions (F, rows * cols): the same
instruction naming a visible lookalike's colour instead of its part's, with the lookalike's
patches in the part's place ("" and no patches where the frame shows no lookalike): the
targets of the instruction-attention loss (`instruction_targets`). Attrs: start, stop (frame indices), split, seed, grid, image_size, max_distractors, palette, variant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..envs.tasks import TASK_NAMES
from ..errors import ConfigError
from .questions import SHAPE_WORDS, ask
from .scene import Scene, object_words, patch_mask, patch_word_maps, scene_from_masks

__all__ = ["GroundingGenConfig", "InstructionTargets", "frame_seed", "scene_from_env", "instruction_targets",
           "generate", "add_arguments", "config_from_namespace", "run", "main", "GROUNDING_SEED_BASE", "SPLIT_OFFSET", "TASK_OBJECTS"]

log = logging.getLogger(__name__)

GROUNDING_SEED_BASE = 20_000_000
SPLIT_OFFSET = {"train": 0, "val": 10_000_000}
FRAMES_PER_BASE = 1_000_000
MAX_BASE_SEED = 10

# Today's benchmark: what each task's object is called and its colour (the instructions name them).
# (noun, colour, shape); the goal marker is a "ball" named by its rendered colour (REFERENCE_COLOURS).
TASK_OBJECTS: dict[str, tuple[str, str, str | None]] = {
    "push": ("puck", "yellow", "cylinder"),
    "pick-place": ("puck", "yellow", "cylinder"),
    "button-press-topdown": ("button", "red", None),
    "drawer-open": ("drawer", "green", None),
}
REFERENCE_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.8, 0.0, 0.0), "green": (0.0, 0.8, 0.0), "blue": (0.0, 0.0, 0.8), "yellow": (1.0, 0.85, 0.0),
}


@dataclass(frozen=True)
class GroundingGenConfig:
    """One generator run: which split, how many frames, of which tasks, with how much clutter."""

    out: str = "data/grounding"
    split: str = "train"
    frames: int = 2000
    seed: int = 0
    tasks: tuple[str, ...] = TASK_NAMES
    questions: int = 4  # per frame (fewer when a frame has fewer unambiguous questions)
    max_distractors: int = 4
    palette: str = "train"
    max_arm_steps: int = 40
    image_size: int = 96
    patch_size: int = 12
    shard_size: int = 250
    variant: str | None = None  # benchmark variant passed to make_env; None: the env's default

    def __post_init__(self) -> None:
        if self.split not in SPLIT_OFFSET:
            raise ConfigError(f"split must be one of {sorted(SPLIT_OFFSET)}, got {self.split!r}")
        for name in ("frames", "questions", "image_size", "patch_size", "shard_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= self.frames <= FRAMES_PER_BASE:
            raise ConfigError(f"frames must be at most {FRAMES_PER_BASE} per base seed, got {self.frames}")
        if not 0 <= self.seed < MAX_BASE_SEED:
            raise ConfigError(f"seed must lie in [0, {MAX_BASE_SEED}), got {self.seed}")
        if self.max_distractors < 0 or self.max_arm_steps < 0:
            raise ConfigError("max_distractors and max_arm_steps must be >= 0")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if not self.tasks:
            raise ConfigError("name at least one task")

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return (n, n)


def frame_seed(split: str, seed: int, index: int) -> int:
    """Reset seed of frame `index` of `split` with base seed `seed` (see the module doc)."""
    if not 0 <= index < FRAMES_PER_BASE:
        raise ConfigError(f"frame index must lie in [0, {FRAMES_PER_BASE}), got {index}")
    return GROUNDING_SEED_BASE + SPLIT_OFFSET[split] + FRAMES_PER_BASE * int(seed) + int(index)


def _colour_name(rgb) -> str:
    rgb = np.asarray(rgb, dtype=float)[:3]
    return min(REFERENCE_COLOURS, key=lambda n: float(np.sum((np.asarray(REFERENCE_COLOURS[n]) - rgb) ** 2)))


PRIMITIVE_OF = {"puck": "cylinder", "ball": "sphere"}  # shape-question answers for task parts


def _fallback_colour(env, role: str) -> str | None:
    """The colour of a task part the env does not name (today's plain benchmark)."""
    if role == "task_object" and env.task.name in TASK_OBJECTS:
        return TASK_OBJECTS[env.task.name][1]
    if role == "goal" and env.task.goal_site is not None:
        return _colour_name(env.sim.model.site(env.task.goal_site).rgba)
    return None


def scene_from_env(env, grid: tuple[int, int]) -> Scene:
    """Describe the env's current frame: task object, goal marker, gripper, lookalikes, distractors.

    The one place that knows how the env exposes identities. An env with `scene` and
    `instance_segmentation()` (the grounded benchmark) names every object and its colour and
    maps pixels to objects; otherwise (plain benchmark) the label map gives task parts and the
    raw geom-id segmentation tells distractor slots apart.
    """
    if hasattr(env, "instance_segmentation") and hasattr(env, "scene"):
        return _scene_from_instances(env, grid)
    return _scene_from_labels(env, grid)


def _scene_from_instances(env, grid: tuple[int, int]) -> Scene:
    objects = env.scene.objects
    inst = env.instance_segmentation()  # (H, W) index into objects, -1 elsewhere
    masks, info = {}, {}
    for i, o in enumerate(objects):
        if o.role == "robot":  # the questions are about the scene's things; the arm is not one
            continue
        masks[o.name] = inst == i
        colour = o.colour or (None if o.role == "gripper" else _fallback_colour(env, o.role))
        shape = PRIMITIVE_OF.get(o.shape, o.shape if o.shape in SHAPE_WORDS else None)
        info[o.name] = {"role": o.role, "noun": o.shape, "colour": colour, "shape": shape}
    return scene_from_masks(masks, info, grid)


def _scene_from_labels(env, grid: tuple[int, int]) -> Scene:
    from ..envs.distractors import slot_geom_ids
    from ..envs.metaworld_env import GOAL, GRIPPER, TASK_OBJECT

    labels = env.segmentation()  # (H, W) uint8
    masks = {"gripper": labels == GRIPPER}
    info = {"gripper": {"role": "gripper", "noun": "gripper", "colour": None, "shape": None}}
    task = env.task
    if task.name in TASK_OBJECTS:
        noun, colour, shape = TASK_OBJECTS[task.name]
        masks["task_object"] = labels == TASK_OBJECT
        info["task_object"] = {"role": "task_object", "noun": noun, "colour": colour, "shape": shape}
    if task.goal_site is not None:
        masks["goal"] = labels == GOAL
        info["goal"] = {"role": "goal", "noun": "ball", "colour": _fallback_colour(env, "goal"), "shape": "sphere"}
    placed = env.distractors
    if placed:
        raw = env._render(segmentation=True)  # (H, W, 2): object id, object type
        geom = raw[..., 1] == 5  # mjOBJ_GEOM
        for i, (d, gid) in enumerate(zip(placed, slot_geom_ids(env.sim.model, len(placed)))):
            name = f"distractor_{i}"
            masks[name] = geom & (raw[..., 0] == gid)
            info[name] = {"role": "distractor", "noun": d.shape, "colour": d.colour, "shape": d.shape}
    return scene_from_masks(masks, info, grid)


NAMED_ROLES = ("task_object", "goal")  # the parts a task instruction names


@dataclass(frozen=True)
class InstructionTargets:
    """A frame's instruction with the patches of the parts it names, and its colour-swapped twin."""

    instruction: str
    region: np.ndarray  # (rows * cols,) bool
    swapped: str  # "" when the frame shows no visible lookalike to swap to
    swapped_region: np.ndarray  # (rows * cols,) bool, all False when swapped is ""


def instruction_targets(env, scene: Scene, rng: np.random.Generator) -> InstructionTargets:
    """Where the instruction points: the patches of the task object and goal it names. The twin
    names one visible lookalike (drawn by `rng`) in its part's place, colour word swapped as
    `dtp.experiments.colour_swap` does, so a model trained on both must read the colour word to know
    where the instruction points, not the task's usual layout."""
    from ..errors import InputError
    from ..envs.grounding import SWAP_ROLES, swap_colour_word

    instruction = env.instruction
    named = [o for o in scene.objects if o.role in NAMED_ROLES]
    region = patch_mask(named, scene.grid)
    by_name = {o.name: o for o in scene.objects}
    env_scene = getattr(env, "scene", None)
    pairs = []
    for copy in env_scene.objects if env_scene is not None else ():
        part = next(iter(env_scene.by_role(copy.mimics)), None) if copy.role == "lookalike" else None
        seen = by_name.get(copy.name)
        if part is None or copy.mimics not in SWAP_ROLES or not (part.colour and copy.colour) or not (seen and seen.visible):
            continue
        pairs.append((part, copy))
    if pairs:
        part, copy = pairs[int(rng.integers(len(pairs)))]
        try:
            swapped = swap_colour_word(instruction, part.colour, copy.colour)
        except InputError:  # the colour word is missing or named twice: no clean swap
            pairs = []
    if not pairs:
        return InstructionTargets(instruction, region, "", np.zeros_like(region))
    kept = [o for o in named if o.name != part.name] + [by_name[copy.name]]
    return InstructionTargets(instruction, region, swapped, patch_mask(kept, scene.grid))


def _move_arm(env, policy, rng: np.random.Generator, max_steps: int) -> np.ndarray | None:
    """Move the arm for 0..max_steps simulator steps: the scripted expert (half the frames) or a
    random drift. Steps the Meta-World env under `env.sim` directly (no frame rendered per step,
    ~10x faster); returns the last 39-D state, or None when the arm did not move."""
    import warnings

    state = None
    n = int(rng.integers(0, max_steps + 1)) if max_steps else 0
    expert = bool(rng.random() < 0.5)
    drift = rng.uniform(-1, 1, 4)
    current = env.state
    for _ in range(n):
        if expert:
            with warnings.catch_warnings():  # the scripted policies warn whenever they saturate
                warnings.simplefilter("ignore", UserWarning)
                a = policy.get_action(current)
        else:
            a = drift + rng.normal(0, 0.3, 4)
        current = env.sim.step(np.clip(np.asarray(a, dtype=np.float32), -1, 1))[0]
        state = current
    return state


def _frames(cfg: GroundingGenConfig, start: int, stop: int, envs: dict):
    """Yield (image, proprio, seed, task, [QA], Scene, InstructionTargets) for frames start..stop-1."""
    from metaworld.policies import ENV_POLICY_MAP

    from ..envs.metaworld_env import PROPRIO_DIM

    for i in range(start, stop):
        task = cfg.tasks[i % len(cfg.tasks)]
        env = envs[task]
        s = frame_seed(cfg.split, cfg.seed, i)
        rng = np.random.default_rng([s, 0xA2])
        count = int(rng.integers(0, cfg.max_distractors + 1))
        obs, _ = env.reset(seed=s, options={"distractor_count": count})
        policy = ENV_POLICY_MAP[env.task.metaworld_id]()
        state = _move_arm(env, policy, rng, cfg.max_arm_steps)
        proprio = obs["proprio"] if state is None else state[:PROPRIO_DIM].astype(np.float32)
        image = env.render()  # (H, W, 3) uint8, the frame after the arm moved
        scene = scene_from_env(env, cfg.grid)
        qas = ask(scene, np.random.default_rng([s, 0x9A]), cfg.questions)
        targets = instruction_targets(env, scene, np.random.default_rng([s, 0x5A]))
        yield image, proprio, s, task, qas, scene, targets


def _write_shard(path: Path, cfg: GroundingGenConfig, rows: list, start: int, stop: int) -> None:
    import h5py

    str_dt = h5py.string_dtype()
    tmp = path.with_name(f".tmp_{path.name}")
    qa_frame, kinds, questions, answers = [], [], [], []
    words = sorted({w for row in rows for o in row[5].objects for w in object_words(o)})
    for j, (_, _, _, _, qas, _, _) in enumerate(rows):
        for qa in qas:
            qa_frame.append(j)
            kinds.append(qa.kind)
            questions.append(qa.question)
            answers.append(qa.answer)
    with h5py.File(tmp, "w") as f:
        f["images"] = np.stack([r[0] for r in rows]).astype(np.uint8)
        f["proprio"] = np.stack([r[1] for r in rows]).astype(np.float32)
        f["seeds"] = np.array([r[2] for r in rows], dtype=np.int64)
        f.create_dataset("tasks", data=[r[3] for r in rows], dtype=str_dt)
        f["qa_frame"] = np.array(qa_frame, dtype=np.int64)
        for name, values in (("qa_kind", kinds), ("qa_question", questions), ("qa_answer", answers)):
            f.create_dataset(name, data=values, dtype=str_dt)
        f["patch_words"] = np.stack([patch_word_maps(r[5], words) for r in rows]).astype(np.uint8)  # (F, W, N)
        f.create_dataset("patch_word_names", data=words, dtype=str_dt)
        f.create_dataset("instructions", data=[r[6].instruction for r in rows], dtype=str_dt)
        f["instruction_regions"] = np.stack([r[6].region for r in rows]).astype(np.uint8)  # (F, N)
        f.create_dataset("swapped_instructions", data=[r[6].swapped for r in rows], dtype=str_dt)
        f["swapped_regions"] = np.stack([r[6].swapped_region for r in rows]).astype(np.uint8)  # (F, N)
        f.attrs.update(start=start, stop=stop, split=cfg.split, seed=cfg.seed, grid=list(cfg.grid), image_size=cfg.image_size,
                       max_distractors=cfg.max_distractors, palette=cfg.palette, variant=cfg.variant or "default")
    os.replace(tmp, path)


def _shard_range(cfg: GroundingGenConfig, k: int) -> tuple[int, int]:
    return k * cfg.shard_size, min((k + 1) * cfg.shard_size, cfg.frames)


def _check_shard(path: Path, cfg: GroundingGenConfig, k: int) -> None:
    """A finished shard must hold the frames this config asks of it (not those of another run)."""
    import h5py

    with h5py.File(path, "r") as f:
        got = (int(f.attrs.get("start", -1)), int(f.attrs.get("stop", -1)), int(f.attrs.get("seed", -1)))
    if got != (*_shard_range(cfg, k), cfg.seed):
        raise ConfigError(f"{path} holds frames {got[0]}..{got[1] - 1} of base seed {got[2]}, this run asks for "
                          f"{_shard_range(cfg, k)[0]}..{_shard_range(cfg, k)[1] - 1} of seed {cfg.seed} "
                          "(another --frames, --shard-size or --seed wrote it); use another --out")


def shard_path(cfg: GroundingGenConfig, k: int) -> Path:
    return Path(cfg.out) / cfg.split / f"shard_{k:05d}.h5"


def generate(cfg: GroundingGenConfig, progress: bool = True) -> list[Path]:
    """Write (or finish) the split's shards; returns their paths. Same config, same bytes of data."""
    from tqdm.auto import tqdm

    from ..envs.distractors import DistractorConfig
    from ..envs.metaworld_env import make_env

    n_shards = -(-cfg.frames // cfg.shard_size)
    paths = [shard_path(cfg, k) for k in range(n_shards)]
    todo = [k for k, p in enumerate(paths) if not p.is_file()]
    for k, p in enumerate(paths):
        if k not in todo:
            _check_shard(p, cfg, k)
    if not todo:
        return paths
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    dcfg = DistractorConfig(count=cfg.max_distractors, palette=cfg.palette)
    extra = {} if cfg.variant is None else {"variant": cfg.variant}
    envs = {t: make_env(t, image_size=cfg.image_size, distractors=dcfg, **extra) for t in cfg.tasks}
    bar = tqdm(total=len(todo) * cfg.shard_size, desc=f"grounding {cfg.split}", disable=not progress)
    try:
        for k in todo:
            start, stop = _shard_range(cfg, k)
            rows = []
            for row in _frames(cfg, start, stop, envs):
                rows.append(row)
                bar.update(1)
            _write_shard(paths[k], cfg, rows, start, stop)
    finally:
        bar.close()
        for env in envs.values():
            env.close()
    return paths


DESCRIPTION = "Generate grounding frames with ground-truth questions and answers."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator's flags, one per GroundingGenConfig field, with its defaults."""
    d = GroundingGenConfig()
    parser.add_argument("--out", default=d.out, help="folder of the frames (OUT/SPLIT/shard_*.h5)")
    parser.add_argument("--split", default=d.split, choices=sorted(SPLIT_OFFSET), help="which split's scenes")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames of the split")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"base seed (0-{MAX_BASE_SEED - 1}): another set of scenes")
    parser.add_argument("--tasks", nargs="+", default=list(d.tasks), help="task names, separated by spaces")
    parser.add_argument("--questions", type=int, default=d.questions, help="questions per frame (at most)")
    parser.add_argument("--max-distractors", type=int, default=d.max_distractors,
                        help="each frame shows 0 to this many distractors")
    parser.add_argument("--palette", default=d.palette, help="distractor colours and shapes (a split's name)")
    parser.add_argument("--max-arm-steps", type=int, default=d.max_arm_steps,
                        help="the arm moves up to this many steps before the frame is taken")
    parser.add_argument("--image-size", type=int, default=d.image_size, help="frame size in pixels")
    parser.add_argument("--patch-size", type=int, default=d.patch_size, help="patch size of the labels, in pixels")
    parser.add_argument("--shard-size", type=int, default=d.shard_size, help="frames per shard file (rerun unit)")
    parser.add_argument("--variant", default=None, help="benchmark variant (default: the env's default)")


def config_from_namespace(args: argparse.Namespace) -> GroundingGenConfig:
    """GroundingGenConfig from add_arguments' flags (other attributes of args are ignored); ConfigError
    on a bad value."""
    ns = {f.name: getattr(args, f.name) for f in fields(GroundingGenConfig)}
    ns["tasks"] = tuple(ns["tasks"])
    return GroundingGenConfig(**ns)


def run(cfg: GroundingGenConfig) -> int:
    """The command: generate the split's shards (a rerun finishes them), print where they are."""
    paths = generate(cfg)
    print(Path(cfg.out) / cfg.split, f"({len(paths)} shards)")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m dtp.tinyvla.grounding", description=DESCRIPTION)
    add_arguments(parser)
    try:
        cfg = config_from_namespace(parser.parse_args(argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
