"""The rooms of the package import each other without cycles (issue 25).

A room is a subpackage (dtp.eval, dtp.envs, ...) or a top-level module (dtp.core, dtp.policy, ...).
Every import counts, function-level ones too (they are real dependencies that only load later);
imports under `if TYPE_CHECKING:` do not, nor do script entry points (`__main__.py`, `if __name__ ==
"__main__":`): they run only as `python -m ...`, never when a room is imported, and the older
`python -m dtp.<room>.<job>` spellings hand over to the CLI there.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dtp

SRC = Path(dtp.__file__).parent


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (SRC / parts[1]).is_dir():
        return f"dtp.{parts[1]}"
    return ".".join(parts[:2])


def _never_imported_nodes(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:` or `if __name__ == "__main__":`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
        if "TYPE_CHECKING" in test or test in ("__name__ == '__main__'", "'__main__' == __name__"):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(path: Path) -> list[str]:
    rel = path.relative_to(SRC.parent).with_suffix("")
    module = ".".join(rel.parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skip = _never_imported_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                out += [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                out.append(node.module or "")
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m == "dtp" or m.startswith("dtp.")]


def room_graph() -> dict[str, dict[str, list[str]]]:
    """room -> {imported room: [files that import it]} (the package root `dtp` itself excluded)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        rel = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        src = _room(rel)
        for target in _imports(path):
            dst = _room(target)
            if dst not in (src, "dtp", "dtp.__version__"):
                graph[src][dst].append(str(path.relative_to(SRC.parent)))
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle as a list of rooms (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(room: str) -> list[str] | None:
        state[room] = 1
        stack.append(room)
        for nxt in graph.get(room, {}):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[room] = 2
        return None

    for room in list(graph):
        if room not in state and (found := visit(room)):
            return found
    return None


def test_rooms_import_each_other_without_cycles():
    graph = room_graph()
    cycle = find_cycle(graph)
    if cycle:
        edges = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between rooms:\n" + "\n".join(edges))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b": ["a.py"]}, "b": {"c": ["b.py"]}, "c": {"a": ["c.py"]}, "d": {"a": ["d.py"]}}
    assert find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert find_cycle({"a": {"b": ["a.py"]}, "b": {}}) is None


def test_the_lab_does_not_import_reporting_or_experiments():
    """dtp.eval runs episodes; reports and experiments read its run folders, never the other way."""
    graph = room_graph()
    for room in ("dtp.eval", "dtp.envs", "dtp.models", "dtp.core"):
        assert not {"dtp.analysis", "dtp.experiments", "dtp.cli"} & set(graph.get(room, {})), room


def test_only_imports_that_never_run_on_import_are_left_out():
    tree = ast.parse(
        "import dtp.a\n"
        "if TYPE_CHECKING:\n    import dtp.b\n"
        "if __name__ == '__main__':\n    import dtp.c\n"
        "def f():\n    import dtp.d\n"
    )
    skip = _never_imported_nodes(tree)
    kept = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) and id(n) not in skip for a in n.names]
    assert kept == ["dtp.a", "dtp.d"]
