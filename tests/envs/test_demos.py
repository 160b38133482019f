"""Scripted demonstration recording: files, layout, resume, failures."""

import json

import numpy as np
import pytest

from dtp.envs import collect_demos, demo_seed, iter_demo_files, load_episode
from dtp.envs.demos import FAILED_LOG


def test_demo_seeds_are_deterministic_distinct_and_clear_of_eval_seeds():
    seeds = {demo_seed(b, t, i) for b in (0, 9) for t in ("push", "reach") for i in (0, 9_999)}
    assert len(seeds) == 8 and max(seeds) < 1_000_000  # dtp.eval's seeds start at 1e6
    assert demo_seed(0, "push", 3) == demo_seed(0, "push", 3) != demo_seed(1, "push", 3)


def test_collect_writes_episodes_and_resumes(tmp_path):
    summary = collect_demos(tmp_path, ["reach", "push"], 1, image_size=48, workers=1, progress=False)
    assert {t: s["new"] for t, s in summary["tasks"].items()} == {"reach": 1, "push": 1}
    files = list(iter_demo_files(tmp_path))
    assert len(files) == 2
    for path in files:
        ep = load_episode(path)
        t = ep["n_steps"]
        assert ep["images"].shape == (t, 48, 48, 3) and ep["images"].dtype == np.uint8
        assert ep["proprio"].shape == (t, 4) and ep["proprio"].dtype == np.float32
        assert ep["actions"].shape == (t, 4) and ep["actions"].dtype == np.float32
        assert np.abs(ep["actions"]).max() <= 1.0
        assert ep["success"] is True and ep["success_step"] < t
        assert path.name == f"ep_{ep['seed']:06d}.h5" and path.parent.name == ep["task"]
        assert ep["palette"] == "train" and ep["image_size"] == 48 and ep["camera"]
        assert 0 <= ep["distractor_count"] <= 3
        assert len(json.loads(ep["distractors"])) == ep["distractor_count"]
        scene = json.loads(ep["scene"])  # the default grounded variant: colours and lookalikes on record
        assert ep["variant"] == scene["variant"] == "grounded" and scene["instruction"] == ep["instruction"]
        goal = next(o for o in scene["objects"] if o["role"] == "goal")
        assert goal["colour"] in ep["instruction"].split()
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = collect_demos(tmp_path, ["reach", "push"], 1, image_size=48, workers=1, progress=False)
    assert all(s["new"] == 0 and s["existing"] == 1 for s in again["tasks"].values())
    assert {p: p.stat().st_mtime_ns for p in iter_demo_files(tmp_path)} == mtimes
    assert not list(tmp_path.rglob("*.tmp"))


def test_worker_processes_write_the_same_episodes(tmp_path):
    inline = collect_demos(tmp_path / "a", ["reach"], 2, image_size=32, workers=1, progress=False)
    spawned = collect_demos(tmp_path / "b", ["reach"], 2, image_size=32, workers=2, batch_size=1, progress=False)
    assert inline["tasks"] == spawned["tasks"]
    for a, b in zip(iter_demo_files(tmp_path / "a"), iter_demo_files(tmp_path / "b"), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(load_episode(a)["actions"], load_episode(b)["actions"])


def test_failures_are_logged_skipped_and_replaced(tmp_path):
    # reach needs 36-52 expert steps: with 44 some seeds fail, some succeed.
    summary = collect_demos(tmp_path, ["reach"], 2, image_size=32, max_steps=44, workers=1, progress=False)
    stats = summary["tasks"]["reach"]
    assert stats["episodes"] == stats["new"] == 2
    failed = [json.loads(line) for line in (tmp_path / FAILED_LOG).read_text().splitlines()]
    assert stats["failed"] == len(failed) > 0
    written = {load_episode(p)["seed"] for p in iter_demo_files(tmp_path)}
    assert not written & {row["seed"] for row in failed}
    again = collect_demos(tmp_path, ["reach"], 2, image_size=32, max_steps=44, workers=1, progress=False)
    assert again["tasks"]["reach"]["new"] == again["tasks"]["reach"]["failed"] == 0
    assert len((tmp_path / FAILED_LOG).read_text().splitlines()) == len(failed)


def test_gives_up_after_max_failures(tmp_path):
    summary = collect_demos(
        tmp_path, ["push"], 2, image_size=32, max_steps=5, workers=1, progress=False, max_failures_per_task=2
    )
    assert summary["tasks"]["push"] == {"episodes": 0, "new": 0, "existing": 0, "failed": 2}
    assert not list(iter_demo_files(tmp_path))


def test_unknown_task_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="known tasks"):
        collect_demos(tmp_path, ["push", "juggle"], 1, workers=1, progress=False)
