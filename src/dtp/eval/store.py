"""A run folder whose result tables grow by appending, one episode at a time, and resume.

<run>/config.json    what was run (checked on resume: a different config needs a new folder)
<run>/episodes.jsonl one row per finished episode (the commit point)
<run>/steps.jsonl    one row per control step, written before its episode row
<run>/maps/          with --record-maps: one .npz of frames and maps per episode (dtp.eval.maps), written first

A kill loses at most the episode in flight: its step rows may be on disk without an
episode row, so readers keep only steps whose episode was committed, and a torn last
line is cut off before the next append.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config_diff import config_differences
from ..errors import ConfigError

EPISODES, STEPS, CONFIG = "episodes.jsonl", "steps.jsonl", "config.json"


def episode_key(config: str, task: str, seed: int) -> str:
    return f"{config}|{task}|{seed}"


def _clean(value: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None, numpy scalars become Python ones."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
    return rows


def _cut_torn_tail(path: Path) -> None:
    """Drop a final line without its newline (written halfway when the run was killed)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)


class RunStore:
    """Append-only results of one run folder."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def open(self, config: dict[str, Any], upgrade: Callable[[dict], dict] | None = None) -> "RunStore":
        """Create the folder or check that it holds the same run, then prepare to append.

        upgrade: maps a config.json written by an older version onto today's form (e.g. a field
        renamed), so that the same options still resume it.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.dir / CONFIG
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if upgrade is not None:
                try:
                    old = json.loads(json.dumps(upgrade(old)))
                except (ConfigError, KeyError, TypeError):
                    pass  # not upgradable: compared as written
            new = json.loads(json.dumps(config))
            if old != new:
                diffs = config_differences(old, new)
                shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
                raise ConfigError(
                    f"{self.dir} holds a different run ({shown}). Rerun with that run's options to resume it, "
                    f"or use a new --out folder (deleting {self.dir} is fine too)"
                )
        else:
            tmp = cfg_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=2))
            tmp.replace(cfg_path)
        for name in (EPISODES, STEPS):
            _cut_torn_tail(self.dir / name)
        return self

    def config(self) -> dict[str, Any]:
        return json.loads((self.dir / CONFIG).read_text())

    def done_keys(self) -> set[str]:
        return {r["key"] for r in _read_jsonl(self.dir / EPISODES)}

    def append(self, episode: dict[str, Any], steps: Iterable[dict[str, Any]],
               maps: dict[str, Any] | None = None) -> None:
        """Write an episode's maps (if recorded), its steps, then its row (the commit), each flushed to disk."""
        key = episode["key"]
        if key in self.done_keys():
            return  # already committed (e.g. a retried worker finished twice)
        if maps is not None:
            from .maps import maps_file, save_maps

            save_maps(maps_file(self.dir, key), maps)
        with (self.dir / STEPS).open("a") as f:
            for s in steps:
                f.write(json.dumps({k: _clean(v) for k, v in {**s, "key": key}.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with (self.dir / EPISODES).open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in episode.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def episodes(self) -> list[dict[str, Any]]:
        """Committed episodes, first row per key."""
        seen, out = set(), []
        for r in _read_jsonl(self.dir / EPISODES):
            if r["key"] not in seen:
                seen.add(r["key"])
                out.append(r)
        return out

    def steps(self) -> list[dict[str, Any]]:
        """Step rows of committed episodes only, without duplicates from a retried episode."""
        done = {r["key"] for r in self.episodes()}
        seen, out = set(), []
        for r in _read_jsonl(self.dir / STEPS):
            ident = (r["key"], r["step"])
            if r["key"] in done and ident not in seen:
                seen.add(ident)
                out.append(r)
        return out

    def to_parquet(self) -> list[Path]:
        """Write episodes.parquet and steps.parquet beside the JSONL files."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths = []
        for name, rows in (("episodes", self.episodes()), ("steps", self.steps())):
            if rows:
                path = self.dir / f"{name}.parquet"
                pq.write_table(pa.Table.from_pylist(rows), path)
                paths.append(path)
        return paths
