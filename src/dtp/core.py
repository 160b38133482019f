"""The paper's equations as pure functions on tensors (no model knowledge).

Notation (PAPER.md): image tokens v = 1..N on an h x w grid, prompt tokens p, action
tokens t, layers l. Attention rows are softmax probabilities restricted to image keys.
Every function accepts leading batch dimensions where noted, and treats them independently.
"""

from __future__ import annotations

import math

import torch

from .choices import AGGREGATIONS
from .errors import AttentionError, ConfigError, InputError

__all__ = [
    "relevance_from_attention",
    "relevance_from_similarity",
    "gaussian_smooth",
    "resolve_k",
    "important_region",
    "layer_weights",
    "attention_map_per_token",
    "aggregate_action_maps",
    "attention_map",
    "distracting_mask",
    "rule_margin",
    "random_prune_mask",
    "fraction_count",
    "top_prune_mask",
    "keep_mask",
    "irrelevant_attention",
    "pixels_to_patches",
]


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise AttentionError(f"{what} contains NaN or infinite values")


def relevance_from_attention(prompt_rows: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Relevance r[v] = mean over selected layers, heads and prompt tokens of attn[p -> v].

    prompt_rows: (..., L_sel, H, P, N) attention of prompt queries on image keys.
    Returns r: (..., h, w).
    """
    if prompt_rows.dim() < 4:
        raise AttentionError(f"prompt_rows must be (..., layers, heads, prompt, N), got {tuple(prompt_rows.shape)}")
    _check_finite(prompt_rows, "prompt->image attention rows")
    h, w = grid
    if prompt_rows.shape[-1] != h * w:
        raise AttentionError(f"prompt_rows has {prompt_rows.shape[-1]} image columns, grid {h}x{w} needs {h * w}")
    r = prompt_rows.float().mean(dim=(-4, -3, -2))  # (..., N)
    return r.reshape(*r.shape[:-1], h, w)


def relevance_from_similarity(
    prompt_hidden: torch.Tensor, image_hidden: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Relevance r[v] = mean over selected layers and prompt tokens of cos(hidden[p], hidden[v]).

    prompt_hidden: (..., L_sel, P, D); image_hidden: (..., L_sel, N, D). Returns r: (..., h, w).
    """
    _check_finite(prompt_hidden, "prompt hidden states")
    _check_finite(image_hidden, "image hidden states")
    h, w = grid
    if image_hidden.shape[-2] != h * w:
        raise AttentionError(f"image_hidden has {image_hidden.shape[-2]} tokens, grid {h}x{w} needs {h * w}")
    p = torch.nn.functional.normalize(prompt_hidden.float(), dim=-1)
    v = torch.nn.functional.normalize(image_hidden.float(), dim=-1)
    cos = p @ v.transpose(-1, -2)  # (..., L_sel, P, N)
    r = cos.mean(dim=(-3, -2))  # (..., N)
    return r.reshape(*r.shape[:-1], h, w)


def _gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(r: torch.Tensor, sigma_patches: float) -> torch.Tensor:
    """Spatial bias: separable Gaussian blur of (..., h, w) maps, sigma in patches (0 = off).

    Normalised convolution: zero padding, divided by the kernel mass that fell inside the
    grid, so a uniform map stays uniform and border tokens are neither damped nor boosted.
    """
    if sigma_patches < 0 or math.isnan(sigma_patches):
        raise ConfigError(f"sigma must be >= 0 patches, got {sigma_patches}")
    if sigma_patches == 0:
        return r
    *lead, h, w = r.shape
    x = r.reshape(-1, 1, h, w).float()
    k = _gaussian_kernel1d(float(sigma_patches), x.dtype, x.device)
    rad = (k.numel() - 1) // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.conv2d(t, k.view(1, 1, 1, -1), padding=(0, rad))
        return torch.nn.functional.conv2d(t, k.view(1, 1, -1, 1), padding=(rad, 0))

    out = blur(x) / blur(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))
    return out.reshape(*lead, h, w).to(r.dtype)


def resolve_k(k: int | float, n_tokens: int) -> int:
    """k as a count (int >= 1) or a fraction of the image tokens (0 < float <= 1)."""
    if isinstance(k, bool):
        raise ConfigError("k must be an int count or a float fraction, not a bool")
    if isinstance(k, int):
        if not 1 <= k <= n_tokens:
            raise ConfigError(f"k={k} must be between 1 and the number of image tokens ({n_tokens})")
        return k
    if not (0.0 < float(k) <= 1.0):
        raise ConfigError(f"k as a fraction must be in (0, 1], got {k}")
    return max(1, min(n_tokens, int(round(float(k) * n_tokens))))


def important_region(r: torch.Tensor, k: int | float, sigma_patches: float = 1.0) -> torch.Tensor:
    """G = topk(smooth(r), k) as a bool (..., h, w) mask. Ties break toward the lower index."""
    *lead, h, w = r.shape
    kk = resolve_k(k, h * w)
    s = gaussian_smooth(r, sigma_patches).reshape(*lead, h * w)
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :kk]
    g = torch.zeros_like(s, dtype=torch.bool)
    g.scatter_(-1, order, True)
    return g.reshape(*lead, h, w)


def layer_weights(action_rows: torch.Tensor) -> torch.Tensor:
    """Eq. 4 layer weights w_l = sum_v attn_l[t->v] / sum_l' sum_v attn_l'[t->v].

    action_rows: (..., L, T, N) head-averaged rows of action queries. Returns (..., L, T).
    A token whose rows carry no image mass at all gets uniform weights.
    """
    mass = action_rows.float().sum(dim=-1)  # (..., L, T)
    total = mass.sum(dim=-2, keepdim=True)  # (..., 1, T)
    n_layers = mass.shape[-2]
    uniform = torch.full_like(mass, 1.0 / n_layers)
    return torch.where(total > 0, mass / total.clamp_min(torch.finfo(mass.dtype).tiny), uniform)


def attention_map_per_token(head_mean_rows: torch.Tensor) -> torch.Tensor:
    """A_t[v] = sum_l w_l attn_l[t->v] for each action token t (Eq. 4).

    head_mean_rows: (..., L, T, N) head-averaged rows. Returns (..., T, N).
    """
    _check_finite(head_mean_rows, "action->image attention rows")
    rows = head_mean_rows.float()
    w = layer_weights(rows)  # (..., L, T)
    return (w.unsqueeze(-1) * rows).sum(dim=-3)


def aggregate_action_maps(per_token: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Combine A_t over the action tokens (axis -2 of (..., T, N)) into A: (..., N)."""
    if how == "mean":
        return per_token.mean(dim=-2)
    if how == "max":
        return per_token.amax(dim=-2)
    if how == "sum":
        return per_token.sum(dim=-2)
    if how == "first":
        return per_token[..., 0, :]
    if how == "last":
        return per_token[..., -1, :]
    raise ConfigError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")


def attention_map(action_rows: torch.Tensor, grid: tuple[int, int], how: str = "mean") -> torch.Tensor:
    """The visual attention pattern A on the patch grid: Eq. 4 then aggregation over t.

    action_rows: (..., L, H, T, N). Returns A: (..., h, w).
    """
    h, w = grid
    if action_rows.shape[-1] != h * w:
        raise AttentionError(f"action_rows has {action_rows.shape[-1]} image columns, grid {h}x{w} needs {h * w}")
    a = aggregate_action_maps(attention_map_per_token(action_rows.float().mean(dim=-3)), how)
    return a.reshape(*a.shape[:-1], h, w)


def _check_tau(tau: float) -> None:
    if not isinstance(tau, (int, float)) or math.isnan(tau) or tau < 0:
        raise ConfigError(f"tau must be a number >= 0 (inf prunes nothing), got {tau!r}")


def distracting_mask(a: torch.Tensor, g: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 5: D = { v not in G : A[v] > tau * max_{u in G} A[u] }, as bool (..., h, w).

    An empty G (a region source that found nothing, e.g. an empty user mask) gives an empty D:
    with no region there is no a_m to compare against, so nothing counts as distracting.
    """
    _check_tau(tau)
    if a.shape != g.shape:
        raise AttentionError(f"A {tuple(a.shape)} and G {tuple(g.shape)} must have the same shape")
    _check_finite(a, "attention map A")
    if math.isinf(tau):
        return torch.zeros_like(g)
    flat_a = a.flatten(-2)
    flat_g = g.flatten(-2)
    a_m = torch.where(flat_g, flat_a, torch.full_like(flat_a, -math.inf)).amax(dim=-1, keepdim=True)
    d = (~flat_g) & (flat_a > tau * a_m) & flat_g.any(dim=-1, keepdim=True)
    return d.reshape(g.shape)


def rule_margin(a: torch.Tensor, g: torch.Tensor, tau: float) -> torch.Tensor:
    """How far the strongest outside-G token sits above (+) or below (-) tau * a_m, in units of a_m.

    Positive means the rule fires. Returns (...,) floats; NaN where G covers everything or nothing.
    """
    _check_tau(tau)
    flat_a = a.flatten(-2).float()
    flat_g = g.flatten(-2)
    neg = torch.full_like(flat_a, -math.inf)
    a_m = torch.where(flat_g, flat_a, neg).amax(dim=-1)
    out_max = torch.where(~flat_g, flat_a, neg).amax(dim=-1)
    scale = a_m.clamp_min(torch.finfo(flat_a.dtype).tiny)
    margin = out_max / scale - tau
    undefined = torch.isinf(out_max) | torch.isinf(a_m)
    return torch.where(undefined, torch.full_like(margin, math.nan), margin)


def random_prune_mask(
    g: torch.Tensor, count: int, *, outside_region_only: bool, generator: torch.Generator
) -> torch.Tensor:
    """Ablation: prune `count` tokens chosen uniformly at random (anywhere, or only outside G).

    g: (h, w) bool. Returns a bool (h, w) mask with exactly min(count, candidates) True.
    """
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    flat_g = g.flatten()
    candidates = torch.nonzero(~flat_g if outside_region_only else torch.ones_like(flat_g)).flatten()
    n = min(count, candidates.numel())
    perm = torch.randperm(candidates.numel(), generator=generator, device="cpu")[:n]
    d = torch.zeros_like(flat_g)
    d[candidates[perm.to(candidates.device)]] = True
    return d.reshape(g.shape)


def fraction_count(g: torch.Tensor, fraction: float) -> int:
    """How many tokens a removal of `fraction` of the image tokens outside G takes: round(fraction * |not G|).

    g: (h, w) bool. Rounds half to even (Python's round), so 25% of 10 tokens is 2.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * int((~g).sum())))


def top_prune_mask(score: torch.Tensor, g: torch.Tensor, count: int) -> torch.Tensor:
    """Prune the `count` highest-`score` tokens outside G (ties: the lower flat index first).

    The sink test: if the most-attended background patches carry information the model uses,
    removing them costs more than removing as many random background patches.
    score, g: (h, w). Returns a bool (h, w) mask with exactly min(count, |not G|) True.
    """
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    if score.shape != g.shape:
        raise InputError(f"score {tuple(score.shape)} and region {tuple(g.shape)} differ in shape")
    _check_finite(score, "prune score")
    flat_g = g.flatten()
    candidates = torch.nonzero(~flat_g).flatten()  # ascending flat index
    n = min(count, candidates.numel())
    order = torch.sort(score.flatten()[candidates].float(), descending=True, stable=True).indices[:n]
    d = torch.zeros_like(flat_g)
    d[candidates[order]] = True
    return d.reshape(g.shape)


def keep_mask(d: torch.Tensor) -> torch.Tensor:
    """The image tokens the second pass sees: the complement of D, flattened to (..., N)."""
    return (~d).flatten(-2)


def irrelevant_attention(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mass outside G (the paper's analysis quantity) and its share of all image mass.

    Returns (sum_outside, fraction) each of shape (...); both NaN where G is empty (no region,
    so "outside it" says nothing about distraction).
    """
    flat_a = a.flatten(-2).float()
    flat_g = g.flatten(-2)
    outside = (flat_a * (~flat_g)).sum(dim=-1)
    total = flat_a.sum(dim=-1)
    frac = torch.where(total > 0, outside / total.clamp_min(torch.finfo(flat_a.dtype).tiny), torch.zeros_like(total))
    empty = ~flat_g.any(dim=-1)
    nan = torch.full_like(outside, math.nan)
    return torch.where(empty, nan, outside), torch.where(empty, nan, frac)


def pixels_to_patches(mask: torch.Tensor, grid: tuple[int, int], min_share: float | None = None) -> torch.Tensor:
    """Map a pixel mask (..., H, W) onto the patch grid (h, w): bool (..., h, w).

    Patch (i, j) covers pixel rows floor(i H / h) .. floor((i + 1) H / h) - 1 (columns alike), so
    sizes that the grid divides give exact blocks and others the nearest split. The image is
    assumed to reach the model whole (resized, not cropped or padded).
    min_share: None puts a patch in G when any of its pixels is set; a number in (0, 1] when at
    least that share of its pixels is set.
    """
    if mask.dim() < 2:
        raise InputError(f"a pixel mask must be (..., H, W), got shape {tuple(mask.shape)}")
    if min_share is not None and not (0.0 < float(min_share) <= 1.0):
        raise ConfigError(f"min_share must be None (any pixel) or in (0, 1], got {min_share!r}")
    h, w = grid
    *lead, big_h, big_w = mask.shape
    if big_h < h or big_w < w:
        raise InputError(f"a {big_h}x{big_w} pixel mask is smaller than the {h}x{w} patch grid")
    x = mask.reshape(-1, big_h, big_w).to(torch.float64)
    # integral image with a zero row and column in front: sums over any block in four lookups
    s = torch.nn.functional.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # (B, H + 1, W + 1)
    r = torch.div(torch.arange(h + 1) * big_h, h, rounding_mode="floor")  # (h + 1,) row edges
    c = torch.div(torch.arange(w + 1) * big_w, w, rounding_mode="floor")  # (w + 1,) column edges
    r0, r1, c0, c1 = r[:-1, None], r[1:, None], c[None, :-1], c[None, 1:]
    block = s[:, r1, c1] - s[:, r0, c1] - s[:, r1, c0] + s[:, r0, c0]  # (B, h, w) set pixels per patch
    share = block / ((r1 - r0) * (c1 - c0)).to(torch.float64)
    out = share > 0 if min_share is None else share >= float(min_share) - 1e-12
    return out.reshape(*lead, h, w)
