"""`dtp show`: replay one episode of a run (same model, config and seed give the same rollout)
and draw heatmaps of chosen steps plus a rollout strip with the pruned tokens marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..eval.runner import EvalSpec, _load_adapter, _make_env
from ..eval.store import RunStore


def _mark_pruned(image: np.ndarray, pruned) -> np.ndarray:
    """Tint the pruned patches in D's magenta (what the second pass did not see; heatmaps.D_RGB)."""
    from .heatmaps import D_ALPHA, D_RGB

    if pruned is None or not bool(pruned.any()):
        return image
    h, w = pruned.shape
    ph, pw = image.shape[0] // h, image.shape[1] // w
    mask = np.kron(pruned.numpy().astype(np.uint8), np.ones((ph, pw), np.uint8)).astype(bool)
    out = image.astype(np.float32).copy()
    out[: mask.shape[0], : mask.shape[1]][mask] = (1 - D_ALPHA) * out[: mask.shape[0], : mask.shape[1]][mask] + D_ALPHA * 255 * np.array(D_RGB)
    return out.astype(np.uint8)


SHOW_FILES = ("step_*.png", "rollout_strip.png", "rollout.gif")  # what show_episode writes (and clears first)


def _pick_episode(episodes: list[dict], spec: EvalSpec, run_dir: str | Path, key: str | None) -> dict:
    """The episode row to replay: `key`, or else the run's first episode with DTP on (any if none)."""
    if key is None:
        cands = [e for e in episodes if spec.configs[e["config"]].enabled] or episodes
        if not cands:
            raise ConfigError(f"{run_dir} has no finished episodes to show")
        key = cands[0]["key"]
    row = next((e for e in episodes if e["key"] == key), None)
    if row is None:
        raise ConfigError(f"no episode {key!r} in {run_dir}; keys look like 'config|task|seed'")
    return row


def _save_strip(frames: list[tuple[np.ndarray, object]], title: str, path: Path, strip_frames: int) -> Path:
    """Rollout strip: evenly spaced frames with the pruned patches tinted, to see the episode at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.linspace(0, len(frames) - 1, min(strip_frames, len(frames))).round().astype(int)
    fig, axes = plt.subplots(1, len(idx), figsize=(1.6 * len(idx), 1.9))
    for ax, i in zip(np.atleast_1d(axes), idx):
        img, rec = frames[i]
        ax.imshow(_mark_pruned(img, rec.pruned if rec.n_pruned else None))
        ax.set_title(f"t={i} pruned {rec.n_pruned}", fontsize=7)  # pruned patches tinted magenta
        ax.axis("off")
    fig.suptitle(f"{title}; pruned patches (D) tinted magenta", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save_gif(frames: list[tuple[np.ndarray, object]], path: Path) -> Path:
    """Every frame, pruned patches tinted, enlarged to 192 px as an animated GIF."""
    from PIL import Image

    ims = [Image.fromarray(_mark_pruned(img, rec.pruned if rec.n_pruned else None)).resize((192, 192), Image.NEAREST) for img, rec in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=80, loop=0)
    return path


def show_episode(run_dir: str | Path, *, key: str | None = None, steps: list[int] | None = None,
                 out_dir: str | Path | None = None, gif: bool = False, strip_frames: int = 8, adapter=None,
                 progress: bool = True) -> list[str]:
    """Replay one episode and draw it; the output folder keeps only this call's frames."""
    from tqdm.auto import tqdm

    from .heatmaps import StepContext, save_step_heatmap
    from ..policy import DTPPolicy
    from ..eval.episode import run_episode
    from ..eval.preflight import check_writable_dir
    from ..eval.store import CONFIG

    if not (Path(run_dir) / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG}); make one with dtp eval --out {run_dir}")
    store = RunStore(run_dir)
    spec = EvalSpec.from_dict(store.config())
    row = _pick_episode(store.episodes(), spec, run_dir, key)
    key = row["key"]
    out = Path(out_dir) if out_dir else Path(run_dir) / "show"
    check_writable_dir(out, "show folder")
    if steps and any(not 0 <= s < int(row["length"]) for s in steps):
        raise ConfigError(f"steps {steps} reach outside the episode (0..{int(row['length']) - 1})")
    adapter = adapter if adapter is not None else _load_adapter(spec.model)
    env = _make_env(spec, row["task"])
    frames: list[tuple[np.ndarray, object]] = []

    def keep(i, obs, rec) -> None:
        frames.append((obs["image"].copy(), rec))
        bar.update(1)

    try:
        with tqdm(total=int(row["length"]), desc=f"replaying {key}", unit="step", disable=not progress) as bar:
            policy = DTPPolicy(adapter, spec.configs[row["config"]], observe=True)
            result = run_episode(policy, env, int(row["seed"]), on_step=keep)
    finally:
        env.close()
    out.mkdir(parents=True, exist_ok=True)
    for pattern in SHOW_FILES:  # frames of an earlier call (other steps, other episode) would mislead
        for old in out.glob(pattern):
            old.unlink()
    paths = []
    chosen = steps if steps else [frames[len(frames) // 2][1].step] if frames else []
    for s in chosen:
        if not 0 <= s < len(frames):
            raise ConfigError(f"step {s} is outside the episode (0..{len(frames) - 1})")
        image, rec = frames[s]
        ctx = StepContext.from_episode({**row, "success": result.success})  # the replay's outcome
        paths.append(str(save_step_heatmap(image, rec, out / f"step_{s:03d}.png", ctx)))
    paths.append(str(_save_strip(frames, f"{key}: {'success' if result.success else 'failure'} in "
                                          f"{result.length} steps", out / "rollout_strip.png", strip_frames)))
    if gif:
        paths.append(str(_save_gif(frames, out / "rollout.gif")))
    return paths
