"""Helpers of the CLI tests (imported by name: tests/ is not a package)."""

FAST = ["--episodes", "1", "--max-steps", "2", "--tasks", "push"]  # one short episode per config


def error_lines(err: str) -> list[str]:
    """Lines of stderr that are not progress-bar redraws or log records."""
    lines = [l.split("\r")[-1].strip() for l in err.split("\n")]
    return [l for l in lines if l and not l.startswith(("INFO", "WARNING", "episodes", "heatmaps", "replaying"))]
