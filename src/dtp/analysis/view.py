"""`dtp view RUN`: one self-contained HTML page of a run's episodes (no server, no CDN, opens from disk).

Per episode: a step scrubber over the camera frame with toggles for r, A, G and D (and the scene's
ground-truth groups where the run scored them), the per-step numbers (fired, pruned, margin,
irrelevant attention, action change), and the same scene under the baseline beside it when the run
has both. Frames and maps come from the run's recordings (`dtp eval --record-maps`, dtp.eval.maps);
a run without them still gets the list and the numbers, and the page says how to record them.

Why recordings and not a replay (as `dtp show` replays): a recording is what the run computed, on
whatever machine and device it ran, with no model, simulator or minutes of rollouts needed to look
at it; a replay is exact only with the same code, threads and numerics, and costs the run again.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..eval.maps import load_maps, maps_file
from ..eval.store import CONFIG, RunStore
from .heatmaps import A_CMAP, D_ALPHA, D_RGB, G_CASING_RGB, G_RGB, MAP_ALPHA, R_CMAP

VIEWER_DIR = Path(__file__).with_name("viewer")
SHEET_COLUMNS = 10  # frames per row of an episode's sprite sheet (one WebP image per episode)
WEBP_MAX = 16383  # WebP's largest side, pixels
STEP_FIELDS = ("fired", "n_pruned", "n_region", "margin", "irrelevant_fraction", "irrelevant_attention",
               "action_changed", "action_l2")
# outline colours of the scene's ground-truth groups (dtp.eval.episode.TRUTH_GROUPS); a group without an
# entry (e.g. a new scene role) is drawn in TRUTH_DEFAULT, so it still gets its toggle
TRUTH_STYLE = {"task": "#3cff3c", "distractors": "#ff9a00", "lookalikes": "#33c8ff", "robot": "#ff4d4d"}
TRUTH_DEFAULT = "#dddddd"
TRUTH_LABELS = {"task": "task parts (object, goal, gripper)", "distractors": "distractors",
                "lookalikes": "lookalikes"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rgb_hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _lut(cmap: str) -> list[list[int]]:
    """256 RGB entries of a matplotlib colour map: the page colours r and A exactly as the PNG heatmaps do."""
    import matplotlib

    table = matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return (table * 255).round().astype(int).tolist()


def _sheet(frames: np.ndarray, quality: int) -> tuple[str, int]:
    """(T, H, W, 3) uint8 -> (a WebP data URI of the frames tiled in a grid, frames per row). WebP halves
    JPEG's size at the same look; rows widen past SHEET_COLUMNS where WebP's 16,383 px height would not do."""
    from PIL import Image

    t, h, w, _ = frames.shape
    columns = max(SHEET_COLUMNS, -(-t // max(1, WEBP_MAX // h)))
    rows = -(-t // columns)
    sheet = np.zeros((rows * h, min(t, columns) * w, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, "WEBP", quality=quality)
    return "data:image/webp;base64," + _b64(buf.getvalue()), columns


def _quantised(maps: np.ndarray) -> tuple[str, list[float]]:
    """(T, h, w) floats -> uint8 scaled to each step's max (0 .. 255), base64, and the maxima."""
    m = np.nan_to_num(maps.astype(np.float32))
    peak = m.reshape(len(m), -1).max(axis=1) if m.size else np.zeros(len(m), np.float32)
    q = np.zeros(m.shape, dtype=np.uint8)
    ok = peak > 0
    q[ok] = np.round(m[ok] / peak[ok, None, None] * 255).astype(np.uint8)
    return _b64(q.tobytes()), [float(p) for p in peak]


def _bits(mask: np.ndarray) -> str:
    """A bool array, flattened in C order, 8 values a byte (first value in the highest bit), base64."""
    return _b64(np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes())


def episode_maps(arrays: dict[str, np.ndarray], tau: float | None, quality: int = 80) -> dict[str, Any]:
    """The page's form of one recording: a frame sheet, r and A quantised per step, G, D and the truth
    groups as packed bits, and each step's threshold tau * a_m (a_m = max of A over G; None without)."""
    frames = arrays["frames"]
    t = len(frames)
    region, attention = arrays["region"], arrays["attention"]
    grid = list(region.shape[1:]) if region.ndim == 3 else [0, 0]
    sheet, columns = _sheet(frames, quality) if t else (None, SHEET_COLUMNS)
    out: dict[str, Any] = {"steps": t, "size": list(frames.shape[1:3]), "grid": grid, "columns": columns,
                           "sheet": sheet,
                           "captured": _bits(arrays["captured"]), "scored": _bits(arrays.get("scored", np.zeros(t)))}
    if grid[0] * grid[1]:
        out["r"], out["r_max"] = _quantised(arrays["relevance"])
        out["a"], out["a_max"] = _quantised(attention)
        out["g"], out["d"] = _bits(region), _bits(arrays["pruned"])
        thr = []
        for i in range(t):
            inside = attention[i][region[i]].astype(np.float32)
            ok = tau is not None and math.isfinite(tau) and arrays["captured"][i] and inside.size
            thr.append(float(tau) * float(inside.max()) if ok else None)
        out["threshold"] = thr
        out["truth"] = {k[len("truth_"):]: _bits(v) for k, v in arrays.items() if k.startswith("truth_")}
    return out


def _steps_by_key(steps: list[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """key -> {field: [value per step]} (ordered by step; NaN and missing as None)."""
    grouped: dict[str, list[dict]] = {}
    for s in steps:
        grouped.setdefault(s["key"], []).append(s)
    out = {}
    for key, rows in grouped.items():
        rows.sort(key=lambda s: s["step"])
        cols: dict[str, list] = {}
        for f in STEP_FIELDS:
            vals = [s.get(f) for s in rows]
            cols[f] = [None if isinstance(v, float) and not math.isfinite(v) else v for v in vals]
        out[key] = cols
    return out


def view_data(run_dir: str | Path, quality: int = 80) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able dict."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise ConfigError(f"{run} is not a run folder (no {CONFIG}); make one with dtp eval --out {run}")
    store = RunStore(run)
    cfg = store.config()
    episodes = store.episodes()
    if not episodes:
        raise ConfigError(f"{run} has no finished episodes to view")
    steps = _steps_by_key(store.steps())
    recorded = 0
    rows = []
    for e in episodes:
        path = maps_file(run, e["key"])
        maps = episode_maps(load_maps(path), e.get("tau"), quality) if path.is_file() else None
        recorded += maps is not None
        rows.append({k: e.get(k) for k in ("key", "config", "task", "seed", "success", "length", "instruction",
                                           "dtp_enabled", "tau", "fired_share", "mean_pruned")}
                    | {"steps": steps.get(e["key"], {f: [] for f in STEP_FIELDS}), "maps": maps})
    truth = sorted({g for r in rows if r["maps"] for g in r["maps"].get("truth", {})})
    return {
        "run": str(run),
        "spec": {k: cfg.get(k) for k in ("model", "variant", "palette", "distractors", "seed", "tasks")},
        "configs": list(cfg.get("configs", {})),
        "recorded": recorded,
        "episodes": rows,
        "style": {"r_lut": _lut(R_CMAP), "a_lut": _lut(A_CMAP), "map_alpha": MAP_ALPHA, "d": _rgb_hex(D_RGB),
                  "d_alpha": D_ALPHA, "g": _rgb_hex(G_RGB), "g_casing": _rgb_hex(G_CASING_RGB),
                  "truth": {g: TRUTH_STYLE.get(g, TRUTH_DEFAULT) for g in truth},
                  "truth_labels": {g: TRUTH_LABELS.get(g, g) for g in truth}},
    }


def render_page(data: dict[str, Any]) -> str:
    """The HTML page: the viewer's template with its CSS, script and the data inlined."""
    import html

    page = (VIEWER_DIR / "viewer.html").read_text()
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no "</script>" inside the data
    page = page.replace("{{TITLE}}", html.escape(f"dtp view: {Path(data['run']).name}"))
    page = page.replace("/*CSS*/", (VIEWER_DIR / "viewer.css").read_text())
    page = page.replace("/*JS*/", (VIEWER_DIR / "viewer.js").read_text())
    return page.replace("{{DATA}}", blob)  # last: nothing is replaced inside the data


def write_view(run_dir: str | Path, out: str | Path | None = None, quality: int = 80) -> Path:
    """Write the page (default RUN/view.html) and return its path."""
    data = view_data(run_dir, quality)
    path = Path(out) if out else Path(run_dir) / "view.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_page(data), encoding="utf-8")
    tmp.replace(path)
    return path
