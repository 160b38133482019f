"""Every script in examples/ runs, and the docs show it as it is and print what it prints (issue 24).

A doc quotes an example with a fenced block whose info string names it:
    ```python title="examples/NAME.py"      the whole file, verbatim
    ```text title="output of examples/NAME.py"   its stdout, verbatim
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.S | re.M)


@lru_cache(maxsize=None)
def run_example(name: str) -> str:
    """stdout of `python examples/NAME.py`, run once per session with this source tree first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def quoted() -> list[tuple[str, str, str, str]]:
    """(doc, kind, example name, block text) for every block that quotes an example."""
    out = []
    for doc in DOCS:
        for lang, title, body in BLOCK.findall(doc.read_text()):
            if title.startswith("output of examples/"):
                out.append((doc.name, "output", title.removeprefix("output of examples/"), body))
            elif title.startswith("examples/"):
                out.append((doc.name, "code", title.removeprefix("examples/"), body))
    return out


def test_every_example_is_quoted_with_its_output():
    outputs = {name for _, kind, name, _ in quoted() if kind == "output"}
    assert EXAMPLES and {p.name for p in EXAMPLES} == outputs


@pytest.mark.parametrize("doc,kind,name,body", quoted(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_docs_quote_the_examples_as_they_are(doc, kind, name, body):
    if kind == "code":
        assert body == (ROOT / "examples" / name).read_text(), f"{doc} quotes an old examples/{name}"


@pytest.mark.slow
@pytest.mark.parametrize("example", [p.name for p in EXAMPLES])
def test_each_example_prints_what_its_doc_says(example):
    printed = run_example(example)
    shown = [body for _, kind, name, body in quoted() if kind == "output" and name == example]
    assert shown and all(body == printed for body in shown), f"examples/{example} printed:\n{printed}"
