"""Record only the attention rows DTP needs, while the model keeps its fast attention.

`AttentionCapture` is a context manager over a transformers language model. Inside the
`with` block it registers an attention function (and its mask function) under a private
name and points the text config at it. That function lets the model's own kernel (SDPA,
or eager where the model needs it, e.g. Gemma2's soft-capping) compute the output, and on
the side computes softmax rows for the chosen query positions only, restricted to the
image-key columns: (batch, heads, chosen queries, N) per layer, never an N x N matrix.
On exit (also on error) the registration and the config are restored exactly.

Query and key positions are absolute sequence indices. The function sees queries and
keys after rotary embedding and with the cache concatenated, so no per-model position
code is needed; a sliding-window layer whose cache was cropped is handled by offsetting
key columns by the number of tokens dropped (seen - kept).
"""

from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from .errors import AttentionError, UnsupportedModelError

__all__ = ["CaptureSpec", "AttentionCapture"]


@dataclass(frozen=True)
class CaptureSpec:
    """What to record.

    key_positions: (N,) absolute positions of the image tokens (the columns kept).
    query_positions: absolute positions whose rows are recorded whenever they are computed
      (prompt tokens for relevance, the last prefill token for the first action token).
    record_decode: also record the single query of every cached decode step (action tokens).
    layers: layer indices to record; None records every layer.
    mean_heads: keep only the mean over heads (rows (B, 1, q_sel, N)): H times less memory,
      for consumers that average heads anyway (DTP's relevance and Eq. 4 both do).
    """

    key_positions: torch.Tensor
    query_positions: torch.Tensor
    record_decode: bool = True
    layers: tuple[int, ...] | None = None
    mean_heads: bool = False


@dataclass
class _LayerRows:
    positions: list[int] = field(default_factory=list)  # absolute query position of each row
    rows: list[torch.Tensor] = field(default_factory=list)  # each (B, H, q_sel, N)


@dataclass
class _PendingDecode:
    """One layer's decode-step queries, kept to be computed in one batch against the layer's latest keys.

    Valid while each step's keys are the previous step's keys plus one (an append-only cache such
    as DynamicCache), so that step t's keys are a prefix of the latest ones.
    """

    queries: list[torch.Tensor]  # each (B, H, 1, d)
    positions: list[int]
    key_lens: list[int]
    key: torch.Tensor  # (B, H_kv, key_lens[-1], d)
    groups: int
    scaling: float
    softcap: float | None


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _eager_function_of(module: torch.nn.Module) -> Callable:
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise UnsupportedModelError(
            f"{type(module).__name__} has no eager_attention_forward in its module; dtp cannot delegate to it"
        )
    return fn


class AttentionCapture:
    """`with AttentionCapture(text_config, spec) as cap:` run the model, then read `cap.rows_at(...)`.

    text_config: the config object the language model's attention layers read
    (`model.config` for a plain LM, `model.config.text_config` for most VLMs).
    """

    def __init__(self, text_config, spec: CaptureSpec):
        self.config = text_config
        self.spec = spec
        self._name = f"dtp_capture_{id(self):x}"
        self._saved_impl: str | None = None
        self._active = False
        self._seen: dict[int, int] = {}
        self._start = 0  # absolute position of a layer's first query (see seek)
        self._records: dict[int, _LayerRows] = {}
        self._query_set = spec.query_positions.flatten().long().cpu()
        self._keys = spec.key_positions.flatten().long().cpu()
        if self._keys.numel() == 0:
            raise AttentionError("CaptureSpec has no image key positions to record")
        self._query_list = sorted(set(self._query_set.tolist()))
        k0, n = int(self._keys[0]), self._keys.numel()
        self._key_span = (k0, k0 + n) if torch.equal(self._keys, torch.arange(k0, k0 + n)) else None
        self._layer_filter = None if spec.layers is None else frozenset(spec.layers)

    # -- context management -------------------------------------------------------------
    def __enter__(self) -> "AttentionCapture":
        impl = getattr(self.config, "_attn_implementation", None) or "eager"
        self._saved_impl = self.config._attn_implementation_internal
        use_eager = impl == "eager"
        base_mask = eager_mask if use_eager else sdpa_mask

        def mask_fn(*args, **kwargs):
            # SDPA may keep its causal skip (mask None -> is_causal=True: the plain model's own kernel,
            # about half the prefill attention work); _record rebuilds that causal mask for its rows.
            # A bidirectional skip would be indistinguishable from it, so that one stays off.
            if use_eager:
                kwargs["allow_is_causal_skip"] = False
            kwargs["allow_is_bidirectional_skip"] = False
            return base_mask(*args, **kwargs)

        def attn_fn(module, query, key, value, attention_mask, **kwargs):
            delegate = _eager_function_of(module) if use_eager else ALL_ATTENTION_FUNCTIONS["sdpa"]
            out = delegate(module, query, key, value, attention_mask, **kwargs)
            self._record(module, query, key, attention_mask, kwargs)
            return out

        AttentionInterface.register(self._name, attn_fn)
        AttentionMaskInterface.register(self._name, mask_fn)
        self.config._attn_implementation_internal = self._name
        self._active = True
        self.reset()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._flush_all()
        self._pending = {}
        self.config._attn_implementation_internal = self._saved_impl
        AttentionInterface._global_mapping.pop(self._name, None)
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop(self._name, None)
        AttentionMaskInterface._global_mapping.pop(self._name, None)
        self._active = False

    def reset(self) -> None:
        """Forget recorded rows and position counters (a new sequence starts at position 0)."""
        self._seen = {}
        self._start = 0
        self._records = {}
        self._causal_cache: dict[tuple, torch.Tensor] = {}
        self._pending: dict[int, _PendingDecode] = {}

    def seek(self, position: int) -> None:
        """Make `position` the absolute index of the next query every layer sees.

        For a model that runs a block of queries over a cached prefix, then crops the cache back and
        runs the block again (pi0's denoising steps): seek(prefix length) before each run. Recorded
        rows are kept; a position recorded again takes its latest row in rows_at.
        """
        self._flush_all()
        self._seen = {}
        self._start = int(position)

    # -- recording ----------------------------------------------------------------------
    def _selected(self, q_start: int, q_len: int) -> list[int]:
        """Local indices (into this call's queries) of the rows to record, in Python ints.

        Plain-int bookkeeping keeps the per-layer cost to the few kernels that compute rows.
        """
        lo = bisect.bisect_left(self._query_list, q_start)
        hi = bisect.bisect_left(self._query_list, q_start + q_len)
        sel = [p - q_start for p in self._query_list[lo:hi]]
        if self.spec.record_decode and q_len == 1 and q_start > 0 and not sel:
            sel = [0]
        return sel

    def _future_keys(self, q_abs: list[int], k_len: int, key_offset: int, dev) -> torch.Tensor:
        """(q_sel, k_len) bool, True where a key lies after its query; built once per forward, shared by layers."""
        cache_key = (q_abs[0], q_abs[-1], len(q_abs), k_len, key_offset, str(dev))
        blocked = self._causal_cache.get(cache_key)
        if blocked is None:
            key_abs = torch.arange(k_len, device=dev) + key_offset
            blocked = key_abs[None, :] > torch.tensor(q_abs, device=dev)[:, None]
            self._causal_cache = {cache_key: blocked}
        return blocked

    def _record(self, module, query, key, attention_mask, kwargs) -> None:
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise UnsupportedModelError(f"{type(module).__name__} has no layer_idx; cannot key captured rows")
        q_len, k_len = query.shape[2], key.shape[2]
        q_start = self._seen.get(layer, self._start)
        self._seen[layer] = q_start + q_len
        if self._layer_filter is not None and layer not in self._layer_filter:
            return
        sel = self._selected(q_start, q_len)
        if not sel:
            return
        groups = getattr(module, "num_key_value_groups", 1)
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = getattr(module, "scaling", query.shape[-1] ** -0.5)
        softcap = kwargs.get("softcap")
        key_offset = q_start + q_len - k_len  # tokens dropped from a cropped (sliding) cache
        if q_len == 1 and attention_mask is None and key_offset == 0:
            # A cached decode step under plain causal attention: its row is computed later, with the
            # layer's other decode steps in one batch (a handful of kernels per layer, not per step).
            pending = self._pending.get(layer)
            if pending is not None and pending.key_lens[-1] + 1 == k_len and pending.scaling == scaling:
                pending.queries.append(query)
                pending.positions.append(q_start)
                pending.key_lens.append(k_len)
                pending.key = key
            else:
                self._flush(layer)
                self._pending[layer] = _PendingDecode([query], [q_start], [k_len], key, groups, scaling, softcap)
            return
        self._flush(layer)
        dev = query.device
        if sel[-1] - sel[0] + 1 == len(sel):  # contiguous queries (the usual prompt span): a view
            rows_of = slice(sel[0], sel[-1] + 1)
            q = query[:, :, rows_of]
        else:
            rows_of = torch.tensor(sel, device=dev)
            q = query.index_select(2, rows_of)
        q = q.float()  # (B, H, q_sel, d)
        k = _repeat_kv(key, groups).float()  # (B, H, k_len, d)
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scaling)  # (B, H, q_sel, k_len)
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        q_abs = [q_start + i for i in sel]
        if attention_mask is not None:
            m = attention_mask[:, :, rows_of] if isinstance(rows_of, slice) else attention_mask.index_select(2, rows_of)
            m = m[..., :k_len]
            if m.dtype == torch.bool:
                scores = torch.where(m, scores, float("-inf"))
            else:
                scores = scores + m.float()
        elif q_abs[0] < q_start + q_len - 1:  # a skipped mask means plain causal attention
            scores = scores.masked_fill_(self._future_keys(q_abs, k_len, key_offset, dev), float("-inf"))
        # else: every key is at or before every recorded query: nothing to mask
        self._keep(layer, q_abs, torch.softmax(scores, dim=-1), key_offset)

    def _flush(self, layer: int) -> None:
        """Compute the rows of a layer's pending decode steps: one matmul, one mask, one softmax."""
        p = self._pending.pop(layer, None)
        if p is None:
            return
        q = torch.cat(p.queries, dim=2).float()  # (B, H, n, d)
        k = _repeat_kv(p.key, p.groups).float()  # (B, H, K, d), K = the last step's key count
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(p.scaling)  # (B, H, n, K)
        if p.softcap is not None:
            scores = torch.tanh(scores / p.softcap) * p.softcap
        if len(p.key_lens) > 1:  # step j saw only its first key_lens[j] keys
            scores = scores.masked_fill_(self._future_keys(p.positions, k.shape[2], 0, k.device), float("-inf"))
        self._keep(layer, p.positions, torch.softmax(scores, dim=-1), 0)

    def _flush_all(self) -> None:
        for layer in list(self._pending):
            self._flush(layer)

    def _keep(self, layer: int, q_abs: list[int], probs: torch.Tensor, key_offset: int) -> None:
        """Store the image-key columns of softmax rows probs (B, H, q, k_len) for queries q_abs."""
        k_len = probs.shape[-1]
        lo, hi = (self._key_span[0] - key_offset, self._key_span[1] - key_offset) if self._key_span else (-1, -1)
        if self._key_span is not None and lo >= 0 and hi <= k_len:  # image keys form one span: a slice
            rows = probs[..., lo:hi]
            rows = rows.mean(dim=1, keepdim=True) if self.spec.mean_heads else rows.contiguous()
        else:
            cols = self._keys.to(probs.device) - key_offset
            valid = (cols >= 0) & (cols < k_len)
            rows = torch.zeros(*probs.shape[:3], cols.numel(), dtype=torch.float32, device=probs.device)
            rows[..., valid] = probs[..., cols[valid]]
            if self.spec.mean_heads:
                rows = rows.mean(dim=1, keepdim=True)  # (B, 1, q_sel, N)
        rec = self._records.setdefault(layer, _LayerRows())
        rec.positions.extend(q_abs)
        rec.rows.append(rows.detach())

    # -- reading ------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        self._flush_all()
        return sorted(self._records)

    def rows_at(self, positions: torch.Tensor | list[int], layers: list[int] | tuple[int, ...] | None = None) -> torch.Tensor:
        """Rows of the given query positions: (layers, B, H, len(positions), N), float32 (H = 1 with mean_heads).

        A position recorded twice (e.g. a second generate) takes its latest row.
        """
        self._flush_all()
        want = torch.as_tensor(positions, dtype=torch.long).flatten().tolist()
        layer_ids = list(layers) if layers is not None else self.layers
        if not layer_ids:
            raise AttentionError("no attention rows were captured; did the model run inside the capture block?")
        out = []
        for layer in layer_ids:
            rec = self._records.get(layer)
            if rec is None:
                raise AttentionError(f"no rows captured for layer {layer}")
            latest = {p: i for i, p in enumerate(rec.positions)}  # later rows overwrite earlier ones
            missing = [p for p in want if p not in latest]
            if missing:
                raise AttentionError(f"query position {missing[0]} was not captured at layer {layer}")
            rows = torch.cat(rec.rows, dim=2) if len(rec.rows) > 1 else rec.rows[0]
            out.append(rows.index_select(2, torch.tensor([latest[p] for p in want], device=rows.device)))
        stacked = torch.stack(out)
        if not torch.isfinite(stacked).all():
            raise AttentionError("captured attention rows contain NaN or infinite values")
        return stacked

    def nbytes(self) -> int:
        """Bytes held by the captured rows (for the memory benchmark)."""
        self._flush_all()
        return sum(r.numel() * r.element_size() for rec in self._records.values() for r in rec.rows)
