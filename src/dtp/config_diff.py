"""Name the settings in which two JSON-able configs differ (for 'this folder holds a different run')."""

from __future__ import annotations

import json
from typing import Any


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'setting: X in the folder, Y now' for each setting (dotted path) that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(f"{path}: only in the folder")
            elif key not in old:
                out.append(f"{path}: only now")
            else:
                out += config_differences(old[key], new[key], path)
        return out
    return [] if old == new else [f"{prefix}: {json.dumps(old)} in the folder, {json.dumps(new)} now"]
