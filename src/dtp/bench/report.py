"""The text table `dtp bench` prints from run_bench's results."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["format_report", "register_formatter"]

# result "family" -> (name, result) -> lines; results without a family are the token models' (below)
_FORMATTERS: dict[str, Callable[[str, dict[str, Any]], list[str]]] = {}


def register_formatter(family: str, fn: Callable[[str, dict[str, Any]], list[str]]) -> None:
    """Let a model family (pi0) print its results its own way."""
    _FORMATTERS[family] = fn


ROWS = (
    ("plain", "(a) plain: SDPA, no capture"),
    ("capture", "(b) pass 1 + capture"),
    ("dtp", "(c) DTP step, pass2=exact"),
    ("dtp_exact_prefix", "    DTP step, pass2=exact_prefix"),
    ("dtp_approx_image", "    DTP step, pass2=approx_image*"),
    ("naive", "(d) naive: eager + output_attentions"),
)


def format_bytes(n: int) -> str:
    """Bytes as KiB, MiB or GiB for the report tables."""
    if n >= 1024**3:
        return f"{n / 1024**3:,.2f} GiB"
    return f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.2f} MiB"


def machine_lines(r: dict[str, Any]) -> list[str]:
    """Report lines: the CPU, threads and rounds the times come from, and the device and dtype."""
    m = r["machine"]
    load = m["load_average_1min"]
    return [
        f"   CPU: {m['cpu']}, {m['cpu_count']} cores (1-min load {load if load is None else round(load, 1)}), "
        f"torch {m['torch']} with {r['threads']} threads; {r['timed_rounds']} interleaved rounds after "
        f"{r['warmup']} warm-up rounds",
        f"   device {r.get('device', 'cpu')}" + (f" ({m['gpu']}, CUDA {m['cuda']})" if "gpu" in m else "")
        + f", {r.get('dtype', 'float32')} weights and activations",
    ]


def timing_table(r: dict[str, Any], rows: tuple[tuple[str, str], ...], label_width: int = 40,
                 gflop_width: int = 7, gflop_digits: int = 3) -> list[str]:
    """Report lines: one row per variant (median, IQR, min ms and their ratios to plain; work and memory if counted)."""
    work = "plain_flops" in r
    head = f"   {'variant':{label_width}s} {'median ms':>10s} {'IQR ms':>8s} {'x (a)':>7s} {'min ms':>8s} {'x (a)':>6s}"
    if work:
        head += f" {'GFLOP':>{gflop_width}s} {'aten ops':>8s}"
    if "plain_peak_tensor_bytes" in r:
        head += f" {'peak tensors':>14s}"
    lines = [head]
    for key, label in rows:
        ratio = r[f"{key}_ms"] / r["plain_ms"]
        row = (f"   {label:{label_width}s} {r[f'{key}_ms']:10.1f} {r[f'{key}_iqr_ms']:8.1f} {ratio:7.2f}"
               f" {r[f'{key}_min_ms']:8.1f} {r['ratios_of_min'][key]:6.2f}")
        if work:
            row += f" {r[f'{key}_flops'] / 1e9:{gflop_width}.{gflop_digits}f} {r[f'{key}_aten_ops']:8d}"
        if f"{key}_peak_tensor_bytes" in r:
            row += f" {format_bytes(r[f'{key}_peak_tensor_bytes']):>14s}"
        lines.append(row)
    return lines


def gpu_memory_lines(r: dict[str, Any]) -> list[str]:
    """Report line of the weights' and the peak allocated GPU memory ([] off the GPU)."""
    if "weights_bytes" not in r:
        return []
    return [f"   GPU memory: weights {format_bytes(r['weights_bytes'])}, most allocated at once "
            f"{format_bytes(r['cuda_max_allocated_bytes'])}"]


def targets_line(r: dict[str, Any]) -> str:
    """Report line: each target met or MISSED, with the ratios they are judged on."""
    return ("   targets: " + "; ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["targets"].items())
            + f" (b/a {r['capture_ratio']:.3f}, c/a {r['dtp_ratio']:.3f}, capture {100 * r['capture_fraction']:.2f}%)")


def _agreement_line(a: dict[str, Any]) -> str:
    """Report line: how often approx_image and exact_prefix give exact pass 2's actions on real frames."""
    return (f"   approx_image vs exact on {a['steps']} frames ({a['steps_pruned']} pruned), {a['source']}, "
            f"{a['weights']} weights: "
            f"same actions {a['approx_image_same_actions']}/{a['steps_pruned']} "
            f"(max logit diff {a['approx_image_max_logit_diff']:.3g}); exact_prefix same "
            f"{a['exact_prefix_same_actions']}/{a['steps_pruned']} (max logit diff {a['exact_prefix_max_logit_diff']:.2g})")


def _throughput_lines(tp: dict[str, Any]) -> list[str]:
    """Report lines: rollout speed with DTP off and on, split into model, render, physics and other time."""
    if "skipped" in tp:
        return [f"   rollout throughput skipped: {tp['skipped']}"]
    lines = []
    for label in ("off", "on"):
        x = tp[label]
        lines.append(
            f"   rollouts DTP {label:3s}: {x['steps_per_s']:.1f} env steps/s, {x['episodes_per_min']:.2f} "
            f"episodes/min over {x['episodes']} episodes ({x['steps']} steps, pass 2 ran on "
            f"{x['steps_pruned']}); per step: model "
            f"{1e3 * x['model_s_per_step']:.1f} ms, render {1e3 * x['render_s_per_step']:.1f} ms, physics "
            f"{1e3 * x['physics_s_per_step']:.1f} ms, other {1e3 * x['other_s_per_step']:.1f} ms"
        )
    lines.append(f"   (rollouts of {tp['task']} by {tp['rollout']}; render = median of 20 env.render() on each "
                 "episode's last state, physics = env.step - render)")
    return lines


def _rollout_batch_lines(rb: dict[str, Any]) -> list[str]:
    """Report lines: the same DTP rollouts through dtp.eval at --batch 1 and --batch N, and where the time went."""
    if "skipped" in rb:
        return [f"   batched rollouts skipped: {rb['skipped']}"]
    lines = []
    for b in (1, rb["batch"]):
        x = rb[f"batch_{b}"]
        lines.append(
            f"   rollouts DTP on, --batch {b}: {x['episodes_per_min']:.2f} episodes/min ({rb['episodes']} episodes, "
            f"{x['steps']} steps, {x['wall_s']:.1f} s); summed: policy {x['policy_s']:.1f} s, env step "
            f"{x['env_s']:.1f} s, segmentation {x['segmentation_s']:.1f} s, other {x['other_s']:.1f} s"
        )
    lines.append(f"   --batch {rb['batch']} vs --batch 1: {rb['ratio']:.2f}x episodes/min "
                 f"({rb['task']} by {rb['rollout']}, the same episodes)")
    return lines


def _token_model_lines(name: str, r: dict[str, Any]) -> list[str]:
    """The report lines of one token model's result (the families without their own formatter)."""
    lines = [
        f"== {name}: {r['note']}",
        f"   {r['layers']} layers x {r['width']} wide, {r['heads']} heads; sequence {r['seq_len']} = "
        f"{r['image_tokens']} image + {r['prompt_tokens']} prompt + BOS + proprio; {r['action_tokens']} action tokens",
        f"   tau={r['tau']:g} prunes {r['tokens_pruned']}/{r['image_tokens']} image tokens "
        f"(exact_prefix reuses {r['exact_prefix_reused_tokens']} positions); frame: {r['frame']}",
    ]
    lines += machine_lines(r) + timing_table(r, ROWS)
    lines.append("   * approx_image is an approximation (kept image tokens keep pass 1's keys/values)")
    lines += gpu_memory_lines(r)
    lines.append(
        f"   held attention: capture {format_bytes(r['capture_bytes'])} vs naive L x H x S x S = {format_bytes(r['naive_attention_bytes'])}"
        f" ({100 * r['capture_fraction']:.2f}%); naive returned {format_bytes(r['naive_attention_bytes_held'])} in all"
    )
    lines.append(
        f"   naive reference prunes the same tokens: {r['naive_same_pruned']}, same actions: {r['naive_same_actions']}"
    )
    lines.append(targets_line(r))
    if "batch" in r:
        lines += batch_lines(r["batch"])
    if "agreement" in r:
        lines.append(_agreement_line(r["agreement"]))
    if "throughput" in r:
        lines += _throughput_lines(r["throughput"])
    if "rollout_batch" in r:
        lines += _rollout_batch_lines(r["rollout_batch"])
    lines.append("")
    return lines


def format_report(results: dict[str, Any]) -> str:
    """The text `dtp bench` prints: each result by its family's formatter (token models by default)."""
    lines = []
    for name, r in results.items():
        fmt = _FORMATTERS.get(r.get("family"), _token_model_lines)
        lines += fmt(name, r)
    return "\n".join(lines)


def batch_lines(b: dict[str, Any]) -> list[str]:
    """The per-sample throughput table of run_bench's "batch" entry (dtp.bench.batched)."""
    sizes = b["sizes"]
    fired = ", ".join(str(b["fired"][str(s)]) for s in sizes)
    lines = [f"   per sample at batch {', '.join(map(str, sizes))}: the same {b['samples']} samples B at a time "
             f"({b['timed_rounds']} interleaved rounds; frames: {b['frames']}; DTP fired on {fired} of them)"]
    lines.append(f"   {'variant':16s}" + "".join(f" {'B=' + str(s) + ' ms':>10s}" for s in sizes)
                 + "".join(f" {'x@' + str(s):>7s}" for s in sizes[1:]))
    for v in ("plain", "dtp", "naive"):
        if v not in b:
            continue
        row = b[v]
        for label, ms, x in ((v + " median", "ms_per_sample", "speedup"), (v + " fastest", "min_ms_per_sample", "speedup_of_min")):
            lines.append(f"   {label:16s}" + "".join(f" {row[str(s)][ms]:10.2f}" for s in sizes)
                         + "".join(f" {row[str(s)][x]:7.2f}" for s in sizes[1:]))
    lines.append(f"   (ms per sample; x@B: samples/s per sample at batch B over batch {sizes[0]}, same variant; "
                 "median and fastest round)")
    return lines
