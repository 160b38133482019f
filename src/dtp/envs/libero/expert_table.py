"""The expert's success table: one JSONL line per (suite, task, initial state), resumable; ``--print`` tabulates.

Run: ``python -m dtp.envs.libero.expert_table OUT.jsonl libero_object --states 10`` (appends, skips done rows);
``python -m dtp.envs.libero.expert_table OUT.jsonl --print``. Official (test) scenes are LIBERO's fixed initial
states 0..states-1; ``--sampled 1000`` instead takes development scenes from the env's own placement sampler
(``env.seed(1000 + k); env.reset()``, k < states), which is where the expert is tuned.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time


def _done(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {(r["suite"], r["task"], r["state"]) for r in map(json.loads, f)}


def _scene(env, suite, ti, si, sampled):
    """Reset to the official initial state ``si`` or, with ``sampled``, to the sampler's scene of seed ``si``."""
    if sampled:
        env.seed(si)
        return env.reset()
    env.seed(0)
    env.reset()
    return env.set_init_state(suite.get_task_init_states(ti)[si])


def run_suite(path: str, suite_name: str, states: int, max_steps: int = 400,
              sampled: int | None = None, tasks: list[int] | None = None) -> None:
    """Roll the expert on ``states`` scenes of every task (official states, or sampled seeds), rendering off."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    from dtp.envs.libero.expert import PickPlaceExpert

    done = _done(path)
    suite = benchmark.get_benchmark_dict()[suite_name]()
    first = 0 if sampled is None else sampled
    for ti in tasks if tasks is not None else range(suite.n_tasks):
        todo = [s for s in range(first, first + states) if (suite_name, ti, s) not in done]
        if not todo:
            continue
        task = suite.get_task(ti)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=64, camera_widths=64,
                                 has_offscreen_renderer=False, use_camera_obs=False)
        for si in todo:
            t0 = time.time()
            obs = _scene(env, suite, ti, si, sampled is not None)
            try:
                expert, err = PickPlaceExpert(env.env), None
            except ValueError as e:
                expert, err = None, str(e)
            ok, steps = False, 0
            while expert is not None and steps < max_steps and not ok:
                obs, _, _, _ = env.step(expert.act(obs))
                steps += 1
                ok = bool(env.env._check_success())
            row = dict(suite=suite_name, task=ti, state=si, sampled=sampled is not None, success=ok,
                       steps=steps, phase=getattr(expert, "phase", None),
                       seconds=round(time.time() - t0, 1), error=err)
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
        env.close()


def print_table(path: str) -> None:
    """Success per suite and task, and per suite overall."""
    rows = collections.defaultdict(list)
    with open(path) as f:
        for r in map(json.loads, f):
            rows[(r["suite"], r["task"])].append(r["success"])
    per_suite = collections.defaultdict(list)
    for (suite, task), v in sorted(rows.items()):
        per_suite[suite] += v
        print(f"{suite:34s} task {task:2d}  {sum(v):3d}/{len(v)}")
    for suite, v in per_suite.items():
        print(f"{suite:34s} all      {sum(v):3d}/{len(v)} ({100 * sum(v) / len(v):.0f}%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("suites", nargs="*")
    p.add_argument("--states", type=int, default=10)
    p.add_argument("--sampled", type=int, default=None, metavar="FIRST_SEED",
                   help="development scenes from the placement sampler, seeds FIRST_SEED.. (not the test states)")
    p.add_argument("--tasks", type=lambda t: [int(x) for x in t.split(",")], default=None)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--print", action="store_true")
    a = p.parse_args()
    for s in a.suites:
        run_suite(a.out, s, a.states, a.max_steps, a.sampled, a.tasks)
    if a.print:
        print_table(a.out)


if __name__ == "__main__":
    main()
