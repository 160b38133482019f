"""`dtp demo`: the shipped model on the benchmark with distractors, with and without DTP, same seeds.

Prints a success table, writes heatmaps of one step per task, returns a JSON-able summary.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from .config import DTPConfig
from .envs.tasks import TASK_NAMES
from .envs.variants import DEFAULT_VARIANT
from .eval.runner import EvalSpec, run_eval

log = logging.getLogger(__name__)

# What `dtp demo` runs for a model trained on LIBERO (tinyvla-libero), when no --tasks is given: two tasks
# of LIBERO-PRO's suite with an added object the clean-trained model never saw (12 episodes, a few minutes).
LIBERO_DEMO_TASKS = ("libero_object_with_mug/0", "libero_object_with_mug/1")



def success_table(episodes: list[dict[str, Any]], configs: tuple[str, str] = ("baseline", "dtp")) -> dict[str, Any]:
    """{"tasks": {task: {cfg: rate, "episodes": n}}, "average": {cfg: rate}} from episode rows."""
    tasks: dict[str, dict[str, Any]] = {}
    for row in episodes:
        t = tasks.setdefault(row["task"], {c: [] for c in configs})
        if row["config"] in t:
            t[row["config"]].append(bool(row["success"]))
    out_tasks = {}
    for task, by_cfg in tasks.items():
        out_tasks[task] = {c: (sum(v) / len(v) if v else None) for c, v in by_cfg.items()}
        out_tasks[task]["episodes"] = min(len(v) for v in by_cfg.values())
    average = {}
    for c in configs:
        rates = [v[c] for v in out_tasks.values() if v[c] is not None]
        average[c] = sum(rates) / len(rates) if rates else None
    return {"tasks": out_tasks, "average": average}


def format_table(summary: dict[str, Any]) -> str:
    rows = list(summary["tasks"].items()) + [("average", {**summary["average"], "episodes": ""})]
    w = max(22, *(len(task) + 2 for task, _ in rows))  # LIBERO's names are longer than Meta-World's
    lines = [f"{'task':<{w}}{'episodes':>9}{'baseline':>10}{'DTP':>8}{'rel. change':>13}"]
    for task, v in rows:
        b, d = v["baseline"], v["dtp"]
        rel = f"{(d - b) / b * 100:+.1f}%" if b else ("n/a" if d is None else ("+inf" if d else "0.0%"))
        lines.append(f"{task:<{w}}{v['episodes']!s:>9}{b * 100:>9.1f}%{d * 100:>7.1f}%{rel:>13}")
    return "\n".join(lines)


def demo_adapter(model: str):
    """The shipped model, or (before one ships) a random TinyVLA, saying so."""
    from .models import load, shipped_model_path

    if model == "tinyvla" and not (shipped_model_path() / "config.json").is_file():
        import torch

        from .envs import all_instruction_words
        from .models.llama_vla import LlamaVLAAdapter
        from .tinyvla import TinyVLA, TinyVLAConfig, build_word_tokenizer

        log.warning("no shipped checkpoint found: running DTP on a RANDOM TinyVLA (success rates mean nothing)")
        torch.manual_seed(0)
        words = all_instruction_words()
        return LlamaVLAAdapter(TinyVLA(TinyVLAConfig(num_words=len(words) + 3)), build_word_tokenizer(words)), False
    return load(model), True


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Pin torch's thread count inside the block (more threads than free cores stall on a shared machine)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def write_heatmaps(adapter, spec: EvalSpec, dtp_config: DTPConfig, out_dir: Path, max_steps: int = 40,
                   progress: bool = True, episodes: list[dict[str, Any]] | None = None) -> list[str]:
    """One heatmap per task, of the run's first DTP scene: the step (within the first `max_steps`) where
    DTP pruned the most tokens. The replay equals the run's episode (same seed, config and threads), so
    its header takes the episode's outcome from `episodes` (the run's rows)."""
    from tqdm.auto import tqdm

    from .analysis.heatmaps import StepContext, save_step_heatmap
    from .eval.runner import _make_env, config_name
    from .eval.store import episode_key
    from .policy import DTPPolicy

    name = next((n for n, c in spec.configs.items() if c == dtp_config), config_name(dtp_config))
    rows = {e["key"]: e for e in episodes or []}
    paths = []
    with torch_threads(spec.threads), tqdm(spec.tasks, desc="heatmaps", unit="task", disable=not progress) as bar:
        for task in bar:
            env = _make_env(spec, task)
            try:
                policy = DTPPolicy(adapter, dtp_config)
                seed = spec.seeds()[0]
                obs, _ = env.reset(seed=seed)
                instruction = obs["instruction"]
                policy.reset(seed)
                best = None
                for _ in range(max_steps):
                    res = policy.step(obs)
                    if best is None or res.record.n_pruned > best[1].n_pruned:
                        best = (obs["image"].copy(), res.record)
                    obs, _, term, trunc, _ = env.step(res.action)
                    if term or trunc:
                        break
                image, rec = best
                row = rows.get(episode_key(name, task, seed), {})
                ctx = StepContext(task=task, instruction=instruction, seed=seed, config=name, dtp_enabled=True,
                                  tau=dtp_config.tau, success=row.get("success"))
                paths.append(str(save_step_heatmap(image, rec, out_dir / f"heatmap_{task}.png", ctx)))
            finally:
                env.close()
    return paths


def run_demo(
    *,
    model: str = "tinyvla",
    tau: float | None = None,
    variant: str | None = None,
    out_dir: str | Path = "dtp-demo",
    progress: bool = True,
    **scenes: Any,
) -> dict[str, Any]:
    """Checks every setting first (nothing is written on a typo), runs, then draws the heatmaps.

    variant None: the benchmark variant the model was trained on (its checkpoint records it: "grounded"
    for the shipped `tinyvla`, "plain" for `tinyvla-plain`), else the default variant.
    tasks None: Meta-World's five, or LIBERO_DEMO_TASKS for a model trained on LIBERO.
    scenes: the EvalSpec fields of the scenes run (tasks, episodes (default 3), seed, distractors,
    palette, lookalikes, max_steps, threads).
    """
    adapter, trained = demo_adapter(model)
    trained_on = getattr(adapter, "benchmark_variant", None)
    libero = trained_on == "libero"  # a LIBERO suite fixes its own scene: Meta-World's variant does not apply
    scenes["tasks"] = scenes.get("tasks") or (LIBERO_DEMO_TASKS if libero else TASK_NAMES)
    variant = variant or (None if libero else trained_on) or DEFAULT_VARIANT
    dtp_cfg = DTPConfig() if tau is None else DTPConfig(tau=tau)
    spec = EvalSpec(
        model=model,
        configs={"baseline": DTPConfig(enabled=False), "dtp": dtp_cfg},
        variant=variant,
        observe=False,
        score_regions=True,  # the report's G-coverage and D-on-distractors columns (one segmentation per DTP step)
        record_maps=True,  # frames and maps per step for `dtp view` (about 0.5 MB an episode)
        **{"episodes": 3, **scenes},
    )
    out = Path(out_dir)
    store = run_eval(spec, out / "run", adapter=adapter, progress=progress)
    resolved = EvalSpec.from_dict(store.config())  # relevance layers and step limit as they ran
    summary = success_table(store.episodes())
    summary["heatmaps"] = write_heatmaps(adapter, resolved, resolved.configs["dtp"], out,
                                         max_steps=min(40, resolved.max_steps), progress=progress,
                                         episodes=store.episodes())
    summary["trained_model"] = trained
    summary["tau"] = dtp_cfg.tau
    summary["run_dir"] = str(out / "run")
    summary["variant"] = variant
    return summary
