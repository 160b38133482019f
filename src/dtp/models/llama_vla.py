"""Adapter for the OpenVLA structure: a Llama LM fed projected image patches (our TinyVLA).

Sequence: [BOS] [image x N] [registers x R] [instruction words x P] [proprio] -> action tokens.
The prompt comes after the image, so prompt tokens attend to image tokens (relevance).
Registers (R >= 0) sit outside the image span: never pruned, never scored.
Pruning hides image tokens through the padding mask while every token keeps its
original position id, which is exactly removal (tested). `generate_batch` runs B observations
right-padded in one pass (dtp.models.batch), each sample with its own keep mask.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import DynamicCache

from ..actions import ActionBinner
from ..capture import AttentionCapture, CaptureSpec
from ..tinyvla.modeling import DEFAULT_LAYERS_KEY, VARIANT_KEY, TinyVLA
from ..tinyvla.tokenizer import encode_instruction, load_tokenizer
from .base import Generation, Observation, Pass1Cache, PreparedInputs, TokenLayout, check_observation
from .batch import (batch_capture_spec, batch_mask, check_batch_request, greedy_action_decode_batch, last_positions,
                    pad_right, sample_trace)
from .common import causal_lm_step, greedy_action_decode, hidden_trace, padding_mask_with_holes, trace_from_capture

__all__ = ["LlamaVLAAdapter"]


class LlamaVLAAdapter:
    """Wraps a TinyVLA (patch encoder -> projector -> LlamaForCausalLM) and its word tokenizer."""

    supports_batch = True  # generate_batch: B observations in one pass (DTPPolicy.step_batch)
    supports_pass1_reuse = True  # pass 1 leaves its causal KV cache in Generation.reuse (dtp.fast); lm is `self.lm`

    def __init__(self, model: TinyVLA, tokenizer: Tokenizer, binner: ActionBinner | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.binner = binner or ActionBinner(bins=model.config.action_bins)
        self.lm = model.language_model
        self.num_layers = model.config.num_layers
        self.n_action_tokens = model.config.action_dims
        self._action_ids = model.action_token_ids()
        # relevance layers chosen for this checkpoint on validation scenes (dtp layers --write)
        layers = model.config.extra.get(DEFAULT_LAYERS_KEY)
        self.default_relevance_layers: tuple[int, ...] | None = tuple(layers) if layers else None
        # the benchmark variant its demos came from (dtp demo runs that one by default); None: unknown
        self.benchmark_variant: str | None = model.config.extra.get(VARIANT_KEY)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "LlamaVLAAdapter":
        return cls(TinyVLA.from_pretrained(directory), load_tokenizer(directory))

    # -- protocol -----------------------------------------------------------------------
    def prepare(self, obs: Observation) -> PreparedInputs:
        cfg = self.model.config
        check_observation(obs, (cfg.image_size, cfg.image_size))
        words = encode_instruction(self.tokenizer, obs.instruction)
        if obs.proprio is None:
            proprio = torch.zeros(1, cfg.proprio_dims)
        else:
            p = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
            if p.shape[0] != cfg.proprio_dims:
                from ..errors import InputError

                raise InputError(f"proprio must have {cfg.proprio_dims} values, got {p.shape[0]}")
            proprio = torch.from_numpy(p).view(1, -1)
        pixels = torch.from_numpy(np.ascontiguousarray(obs.image)).permute(2, 0, 1).float().div(255).unsqueeze(0)
        n, start = cfg.num_image_tokens, cfg.text_start  # start = 1 + N + registers
        p_len = len(words)
        seq_len = start + p_len + 1
        layout = TokenLayout(
            image_positions=torch.arange(1, 1 + n),
            grid=cfg.grid,
            prompt_positions=torch.arange(start, start + p_len),
            seq_len=seq_len,
        )
        ids = torch.tensor([[1] + words], dtype=torch.long)  # BOS + words
        return PreparedInputs(layout=layout, model_inputs={"pixels": pixels, "ids": ids, "proprio": proprio})

    @torch.inference_mode()
    def embed(self, inputs: PreparedInputs) -> torch.Tensor:
        """(1, S, D) prefill embeddings in sequence order.

        Kept on `inputs` for the same pixels/ids/proprio objects, so pass 2 of a DTP step does not
        run the image encoder again (same numbers: the same function of the same tensors).
        """
        mi = inputs.model_inputs
        src = (mi["pixels"], mi["ids"], mi["proprio"])
        if self._memo_valid(mi):
            return mi["_embeds"][1]
        param = next(self.model.parameters())  # the model's device and dtype (bf16 / CUDA for the bench)
        pixels, ids, proprio = src[0].to(param.device, param.dtype), src[1].to(param.device), src[2].to(param.device, param.dtype)
        embeds = self.model.sequence_embeddings(pixels, ids, proprio)  # shared with training
        mi["_embeds"] = (src, embeds)
        return embeds

    @torch.inference_mode()
    def embed_batch(self, inputs: list[PreparedInputs]) -> torch.Tensor:
        """(B, S_max, D) right-padded prefill embeddings; row i's first seq_len entries are embed(inputs[i]).

        Samples not embedded yet are encoded together, and each keeps its row (as `embed` memoises),
        so the batch's pass 2 does not run the image encoder again.
        """
        todo = [x for x in inputs if not self._memo_valid(x.model_inputs)]
        if todo:
            param = next(self.model.parameters())
            mis = [x.model_inputs for x in todo]
            lengths = torch.tensor([mi["ids"].shape[1] - 1 for mi in mis])
            ids = pad_right([mi["ids"] for mi in mis], int(lengths.max()) + 1).to(param.device)  # 0 = [PAD]
            pixels = torch.cat([mi["pixels"] for mi in mis]).to(param.device, param.dtype)
            proprio = torch.cat([mi["proprio"] for mi in mis]).to(param.device, param.dtype)
            embeds = self.model.sequence_embeddings(pixels, ids, proprio, word_lengths=lengths)
            for j, x in enumerate(todo):
                mi = x.model_inputs
                mi["_embeds"] = ((mi["pixels"], mi["ids"], mi["proprio"]), embeds[j : j + 1, : x.layout.seq_len])
        width = max(x.layout.seq_len for x in inputs)
        return pad_right([self.embed(x) for x in inputs], width)

    @staticmethod
    def _memo_valid(mi: dict) -> bool:
        memo = mi.get("_embeds")
        return memo is not None and all(a is b for a, b in zip(memo[0], (mi["pixels"], mi["ids"], mi["proprio"])))

    @torch.inference_mode()
    def generate_batch(
        self,
        inputs: list[PreparedInputs],
        *,
        keeps: list[torch.Tensor | None] | None = None,
        capture: bool = False,
        relevance_layers: tuple[int, ...] = (),
        hidden_states: bool = False,
    ) -> list[Generation]:
        """`generate` on each input, in one right-padded pass; keeps[i] (N,) bool hides sample i's pruned tokens.

        capture=True records the rows of DTP's capture spec for every sample (Generation.trace per sample).
        """
        check_batch_request(capture, hidden_states)
        layouts = [x.layout for x in inputs]
        embeds = self.embed_batch(inputs)
        dev = embeds.device
        b, width = embeds.shape[:2]
        state: dict = {"mask": batch_mask(layouts, keeps).to(dev)}
        last = last_positions(layouts).to(dev)
        cache = DynamicCache(config=self.lm.config)
        ctx = AttentionCapture(self.lm.config, batch_capture_spec(layouts)) if capture else nullcontext()

        def prefill() -> torch.Tensor:
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=state["mask"],
                position_ids=torch.arange(width, device=dev).expand(b, width),
                cache=cache,
                use_cache=True,
                output_hidden_states=hidden_states,
                logits_to_keep=last.view(b, 1),  # each sample's own last position
            )
            state["hidden"] = out.hidden_states
            return out.logits[:, 0]

        def step(tokens: torch.Tensor, t: int) -> torch.Tensor:
            state["mask"] = torch.cat([state["mask"], torch.ones(b, 1, dtype=torch.long, device=dev)], dim=1)
            out = self.lm(input_ids=tokens, attention_mask=state["mask"], position_ids=(last + 1 + t).view(b, 1),
                          cache=cache, use_cache=True)
            return out.logits[:, -1]

        with ctx as cap:
            bins, logits = greedy_action_decode_batch(prefill, step, self._action_ids, self.n_action_tokens)
        out = []
        for i, layout in enumerate(layouts):
            trace = None
            if capture:
                trace = sample_trace(cap, i, layout, width, self.n_action_tokens, relevance_layers, self.num_layers, b,
                                     state["hidden"] if hidden_states else None)
            # the shared cache and this sample's row let dtp.fast's reuse modes run its pass 2
            out.append(Generation(action_bins=bins[i], action_logits=logits[i], trace=trace, extras={"batch": b},
                                  reuse=Pass1Cache(cache, self.embed(inputs[i]), batch_index=i)))
        return out

    @torch.inference_mode()
    def generate(
        self,
        inputs: PreparedInputs,
        *,
        keep: torch.Tensor | None = None,
        capture: CaptureSpec | None = None,
        relevance_layers: tuple[int, ...] = (),
        hidden_states: bool = False,
    ) -> Generation:
        layout = inputs.layout
        embeds = self.embed(inputs)
        dev = embeds.device
        s = layout.seq_len
        mask = padding_mask_with_holes(s, layout, keep).to(dev)
        cache = DynamicCache(config=self.lm.config)
        state: dict = {}
        ctx = AttentionCapture(self.lm.config, capture) if capture is not None else nullcontext()

        def prefill() -> torch.Tensor:
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=torch.arange(s, device=dev).unsqueeze(0),
                cache=cache,
                use_cache=True,
                output_hidden_states=hidden_states,
                logits_to_keep=1,
            )
            state["hidden"] = out.hidden_states
            return out.logits[0, -1]

        step = causal_lm_step(self.lm, cache, mask, s)
        with ctx as cap:
            bins, logits = greedy_action_decode(prefill, step, self._action_ids, self.n_action_tokens)
        trace = None
        if capture is not None:
            trace = trace_from_capture(cap, layout, self.n_action_tokens, relevance_layers, self.num_layers)
        if hidden_states:
            if trace is None:
                raise ValueError("hidden_states=True needs a capture too (similarity relevance is computed in pass 1)")
            trace.prompt_hidden, trace.image_hidden = hidden_trace(state["hidden"], layout, relevance_layers)
        # The filled cache lets a fast second pass reuse the prefix before the first pruned token.
        return Generation(action_bins=bins, action_logits=logits, trace=trace, reuse=Pass1Cache(cache, embeds))

    def decode(self, action_bins: torch.Tensor) -> np.ndarray:
        return self.binner.from_bins(action_bins.cpu().numpy())
