"""Issue 14, item 2: user mistakes end as one stderr line and exit code 2 (a traceback only with -v);
Ctrl-C says how many episodes were saved and that the same command resumes."""

import contextlib
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtp.eval import RunStore

from cli_helpers import FAST, error_lines

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _one_error(err: str, command: str) -> str:
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dtp {command}: error: ") and "Traceback" not in err
    return lines[0]


def test_out_that_is_a_file(dtp, tiny_checkpoint, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", f)
    assert code == 2 and "is a file, not a folder" in _one_error(err, "eval")
    code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", f / "run")
    assert code == 2 and "afile is a file" in _one_error(err, "eval")
    assert f.read_text() == "x"


def test_analyze_and_show_on_a_missing_run(dtp, tmp_path):
    code, _, err = dtp("analyze", tmp_path / "nothere")
    assert code == 2 and "dtp eval" in _one_error(err, "analyze")
    code, _, err = dtp("show", tmp_path / "nothere")
    assert code == 2 and "not a run folder" in _one_error(err, "show")
    assert not (tmp_path / "nothere").exists()


def test_ray_runner_without_ray_says_how_to_install(dtp, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = dtp("sweep", "--model", tiny_checkpoint, *FAST, "--runner", "ray", "--out", tmp_path / "s")
    assert code == 2 and 'pip install -e ".[ray]"' in _one_error(err, "sweep")


def test_traceback_only_with_verbose(dtp, tiny_checkpoint, tmp_path):
    code, _, err = dtp("-v", "eval", "--model", tiny_checkpoint, *FAST, "--layers", "99", "--out", tmp_path / "r")
    assert code == 2 and "Traceback" in err and "dtp eval: error: relevance layer 99 is out of range" in err


@contextlib.contextmanager
def read_only(*folders: Path):
    """Make `folders` read-only for this process, even as root (CI runs as root, and root writes through
    permission bits): a read-only bind mount of each folder onto itself as root, mode 0o555 otherwise."""
    if os.geteuid() != 0:
        modes = [f.stat().st_mode for f in folders]
        for f in folders:
            os.chmod(f, 0o555)
        try:
            yield
        finally:
            for f, mode in zip(folders, modes):
                os.chmod(f, mode)
        return
    mounted = []
    try:
        for f in folders:
            for args in (["mount", "--bind", str(f), str(f)], ["mount", "-o", "remount,bind,ro", str(f)]):
                res = subprocess.run(args, capture_output=True, text=True)
                if res.returncode != 0:
                    pytest.skip(f"root cannot make a read-only bind mount here ({' '.join(args)}: {res.stderr.strip()})")
                if args[1] == "--bind":
                    mounted.append(f)
        yield
    finally:
        for f in reversed(mounted):
            subprocess.run(["umount", str(f)], check=True)


def test_read_only_paths_fail_before_any_work(dtp, tiny_checkpoint, tmp_path, monkeypatch):
    """A read-only run folder, and a read-only checkpoint for `layers --write` (refused before the rollouts)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    with read_only(ro, ck):
        assert not os.access(ro, os.W_OK) and not os.access(ck, os.W_OK)
        code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", ro / "run")
        assert code == 2 and "read-only" in _one_error(err, "eval")
        assert not (ro / "run").exists()

        def no_rollouts(*a, **k):
            raise AssertionError("layers ran its rollouts before checking --write's target")

        monkeypatch.setattr("dtp.experiments.layer_choice.choose_layers", no_rollouts)
        code, _, err = dtp("layers", "--model", ck, "--write", "--episodes", "1", "--tasks", "reach")
        assert code == 2 and "read-only" in _one_error(err, "layers")


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be interrupted: {proc.communicate()}")
        time.sleep(0.2)
    pytest.fail("timed out")


def test_ctrl_c_in_eval_says_what_was_saved_and_the_same_command_resumes(dtp, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dtp.cli", "eval", "--model", str(tiny_checkpoint), "--tasks", "push",
           "--episodes", "15", "--max-steps", "3", "--out", str(out)]  # enough that Ctrl-C lands mid-run under load
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    episodes = out / "episodes.jsonl"
    _wait_for(lambda: episodes.exists() and len(episodes.read_text().splitlines()) >= 1, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    saved = len(RunStore(out).episodes())
    last = err.rstrip("\n").split("\n")[-1]
    assert last == f"dtp eval: interrupted: {saved} of 30 episodes saved in {out}; rerun the same command to resume"
    assert "Traceback" not in err
    assert "OpenGL" not in err and "INFO dtp.eval.runner" in err  # third-party INFO logs stay quiet
    assert dtp(*cmd[3:])[0] == 0  # the same command, in this process
    keys = [e["key"] for e in RunStore(out).episodes()]
    assert len(keys) == 30 == len(set(keys))


def test_interrupted_sweep_and_demo_close_the_bar_then_report(dtp, tiny_checkpoint, tmp_path, monkeypatch):
    """A KeyboardInterrupt raised where a Ctrl-C would land (between two saved episodes)."""
    original = RunStore.append

    def append_then_interrupt(self, episode, steps, **kw):
        original(self, episode, steps, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "append", append_then_interrupt)
    out = tmp_path / "sweep"
    code, _, err = dtp("sweep", "--model", tiny_checkpoint, *FAST, "--taus", "0.5", "--ablations", "none", "--out", out)
    assert code == 130
    last = err.rstrip("\n").split("\n")[-1]  # on its own line: the bar was closed first
    assert last == f"dtp sweep: interrupted: 1 of 3 episodes saved in {out}; rerun the same command to resume"
    code, _, err = dtp("demo", "--tasks", "reach", "--episodes", "1", "--max-steps", "2", "--out", tmp_path / "d")
    assert code == 130
    assert err.rstrip("\n").split("\n")[-1] == (
        f"dtp demo: interrupted: 1 of 2 episodes saved in {tmp_path / 'd' / 'run'}; rerun the same command to resume")
    monkeypatch.setattr(RunStore, "append", original)
    assert dtp("sweep", "--model", tiny_checkpoint, *FAST, "--taus", "0.5", "--ablations", "none", "--out", out)[0] == 0
    assert len(RunStore(out).episodes()) == 3


def test_ctrl_c_in_collect_stops_the_workers_and_the_rerun_resumes(dtp, tmp_path):
    out = tmp_path / "demos"
    cmd = [sys.executable, "-m", "dtp.cli", "collect", "--out", str(out), "--tasks", "reach", "--episodes", "40",
           "--workers", "2", "--max-distractors", "0"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    _wait_for(lambda: any((out / "reach").glob("ep_*.h5")) if (out / "reach").is_dir() else False, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)  # returns: the workers were stopped, not waited for
    assert proc.returncode == 130
    saved = len(list((out / "reach").glob("ep_*.h5")))
    assert err.rstrip("\n").split("\n")[-1] == (
        f"dtp collect: interrupted: {saved} episodes saved in {out}; rerun the same command to resume")
    assert "Traceback" not in err
    before = {p: p.stat().st_mtime_ns for p in (out / "reach").glob("ep_*.h5")}
    # workers finish out of order, so lower seeds may be missing: ask for every index up to the last saved one
    # (reach is task 0, so an episode's seed is its index)
    n = max(int(p.stem.split("_")[1]) for p in before) + 1
    code, text, err = dtp(*cmd[3:-6], "--episodes", n, "--workers", "1", "--max-distractors", "0")
    assert code == 0, err
    reach = json.loads(text.strip().split("\n")[-1])["tasks"]["reach"]
    assert reach["episodes"] == n and reach["existing"] == saved  # saved episodes are kept, not redone
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_bench_mistakes_go_to_stderr(dtp):
    code, out, err = dtp("bench", "--models", "nosuchmodel")
    assert code == 2 and out == ""
    assert _one_error(err, "bench").startswith("dtp bench: error: unknown bench model")


def test_no_opengl_is_one_line_saying_what_to_install(dtp, tiny_checkpoint, tmp_path, monkeypatch):
    import mujoco

    def no_context(*a, **k):
        raise RuntimeError("gladLoadGL error")

    monkeypatch.setattr(mujoco, "Renderer", no_context)
    code, _, err = dtp("eval", "--model", tiny_checkpoint, *FAST, "--out", tmp_path / "r")
    line = _one_error(err, "eval")
    assert code == 2 and "MUJOCO_GL" in line and "apt-get install libegl1" in line
    assert not (tmp_path / "r").exists()


def test_an_unexpected_error_keeps_its_traceback(dtp, tmp_path, monkeypatch):
    """Only dtp's own errors are user mistakes; a bare ValueError from inside is a bug and is not hidden."""
    def broken(*a, **k):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr("dtp.analysis.report.write_report", broken)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError, match="a bug deep inside"):
        dtp("analyze", run)


def test_a_missing_optional_extra_says_which_install_fixes_it(dtp, monkeypatch):
    monkeypatch.setitem(sys.modules, "vla_eval", None)  # as if the [serve] extra were not installed
    code, _, err = dtp("latency", "--frames", "1", "--repeats", "1")
    line = _one_error(err, "latency")
    assert code == 2 and "vla_eval" in line and "pip install 'dtp[serve]'" in line


def test_a_missing_core_module_is_a_broken_install_with_its_traceback(dtp, monkeypatch):
    monkeypatch.setitem(sys.modules, "anyio", None)  # not an optional extra of dtp's
    with pytest.raises(ModuleNotFoundError):
        dtp("latency", "--frames", "1", "--repeats", "1")


def test_collect_with_a_base_seed_out_of_range_is_one_line(dtp, tmp_path):
    code, _, err = dtp("collect", "--out", tmp_path / "d", "--tasks", "reach", "--seed", "12", "--workers", "1")
    assert code == 2 and "demo base seed must be in [0, 10), got 12" in _one_error(err, "collect")
    assert not (tmp_path / "d").exists()
