"""`dtp serve` as a real subprocess on 127.0.0.1 and an ephemeral port, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT_S = 240  # importing torch + transformers on a loaded 2-core machine
STOP_TIMEOUT_S = 60
LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    stderr_path: Path
    stdout_lines: list[str]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM, wait, return the exit status; the rest of stdout is kept in stdout_lines."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            pytest.fail("dtp serve did not exit within a minute of SIGTERM")
        self.stdout_lines += (out or "").splitlines()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@contextmanager
def dtp_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start `dtp serve --port 0 ARGS`, wait for its 'listening' line, SIGTERM it on exit."""
    stderr_path = tmp_path / f"serve-{time.monotonic_ns()}.err"
    cmd = [sys.executable, "-m", "dtp.cli", "serve", "--port", "0", *args]
    full_env = {**os.environ, **(env or {})}
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=full_env)
    lines: list[str] = []
    port = None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while port is None:
            if time.monotonic() > deadline:
                raise TimeoutError("dtp serve did not start listening in time")
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            m = LISTENING.search(line)
            if m:
                port = int(m.group(1))
        if port is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"dtp serve exited before listening: {lines} {stderr_path.read_text()[-2000:]}")
    finally:
        sel.close()
    server = ServerProcess(proc, port, stderr_path, lines)
    try:
        yield server
    finally:
        if proc.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def start_server():
    """`with start_server(tmp_path, "--protocol", "openpi") as server:` (see dtp_server)."""
    return dtp_server


def read_recorded_steps(output_dir: Path, bench: dict) -> dict[int, list[dict]]:
    """episode_idx -> step rows, from the recording vla-eval wrote (episodes named by its results)."""
    episodes = {ep["eid"]: ep["episode_idx"] for task in bench["tasks"] for ep in task["episodes"]}
    (db,) = output_dir.glob("recording-*.sqlite")
    con = sqlite3.connect(db)
    try:
        out: dict[int, list[dict]] = {}
        for eid, _, fields in con.execute("SELECT eid, step_id, fields FROM step_rows ORDER BY eid, step_id"):
            out.setdefault(episodes[eid], []).append(json.loads(fields))
    finally:
        con.close()
    return out


@pytest.fixture(scope="session")
def recorded_steps():
    """`recorded_steps(output_dir, bench)` (see read_recorded_steps); a fixture, since test modules
    must not import from conftest (another folder's conftest may hold that module name)."""
    return read_recorded_steps
