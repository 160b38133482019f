"""Adapter for pi0 (transformers' PI0ForConditionalGeneration): DTP for a flow-matching action expert.

pi0 has no action tokens. Its PaliGemma prefix [image x N][BOS][prompt]["\\n"][pad...] runs once,
bidirectionally, into a KV cache; then an action expert (a second Gemma, the "dit") denoises a chunk
of C = chunk_size actions over K = num_inference_steps Euler steps from Gaussian noise at t = 1 to
t = 0. At each step its queries [state, a_1 .. a_C] attend to the prefix cache (the state causally,
the C action queries as one bidirectional block), and the cache is cropped back to the prefix.

DTP on pi0:
- relevance r: the prefix's prompt->image rows at the relevance layers (VLM layers), as for PaliGemma;
- action rows: the expert's action-query->image-key rows at every expert layer, recorded at the
  denoising steps `attention_steps` selects (default all K) and averaged over them. Chunk position c
  plays action token t of Eq. 4 (layer weights per c, then DTPConfig.aggregation over the C
  positions). The state query is not an action query and is left out;
- pass 2: the prefix is recomputed with D hidden by the padding mask, every token keeping its
  ORIGINAL position id (prefix and expert), and the expert denoises again from the SAME noise,
  drawn once per observation in `prepare` from the adapter's seeded generator. With nothing pruned,
  pass 2 equals pass 1 bit for bit.

Positions follow pi0's own convention with a processor mask: prefix positions are
cumsum(attention_mask) - 1 (0-indexed, unlike PaliGemma's 1-indexed default) and the expert's
queries continue from the number of valid prefix tokens. pi0's own forward derives the expert's
positions from the mask by cumsum, which a mask with holes would shift, so the expert step is
written here with explicit positions (`denoise`); DTP off equals `model.sample_actions` with the
same noise (tests/models/test_pi0.py).

One camera per observation (Observation has one image); the state comes from obs.proprio and is
normalised by the processor's state statistics. `decode` turns the chunk into actions: the first
action_dim columns, un-normalised with the processor's action statistics when it has them.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np
import torch

from ..capture import AttentionCapture, CaptureSpec
from ..errors import CheckpointError, ConfigError, InputError, LayoutError, UnsupportedModelError
from .base import Generation, Observation, PreparedInputs, TokenLayout, Trace, check_observation
from .common import hidden_trace, padding_mask_with_holes
from .generic import _to_pil, attention_modules_of

__all__ = ["PI0Adapter", "is_pi0", "load_pi0", "pi0_processor", "denoise", "ATTENTION_STEPS", "ACTION_OUTPUTS"]

ATTENTION_STEPS = ("all", "first", "last")
ACTION_OUTPUTS = ("chunk", "first")


def is_pi0(model: Any) -> bool:
    try:
        from transformers import PI0ForConditionalGeneration
    except ImportError:  # transformers without pi0
        return False
    return isinstance(model, PI0ForConditionalGeneration)


def load_pi0(path, *, dtype: Any = "auto", **kwargs: Any) -> "PI0Adapter":
    """A local pi0 checkpoint directory (model + PI0Processor), never from a hub, with SDPA attention."""
    from transformers import PI0ForConditionalGeneration, PI0Processor

    try:
        model = PI0ForConditionalGeneration.from_pretrained(
            str(path), local_files_only=True, attn_implementation="sdpa", dtype=dtype
        )
        processor = PI0Processor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the pi0 checkpoint at {path}: {e}") from e
    return PI0Adapter(model, processor, **kwargs)


def pi0_processor(
    tokenizer: Any,
    *,
    config: Any = None,
    image_size: int | None = None,
    patch_size: int | None = None,
    chunk_size: int | None = None,
    max_state_dim: int | None = None,
    state_mean: Sequence[float] | None = None,
    state_std: Sequence[float] | None = None,
    actions_mean: Sequence[float] | None = None,
    actions_std: Sequence[float] | None = None,
):
    """A PI0Processor without a checkpoint, in one call: for a pi0 built from a PI0Config (tests, examples).

    Sizes come from `config` (a PI0Config, or model.config) when given, else from the keywords, else pi0's
    (224 px images, 14 px patches, chunks of 50, states padded to 32). Images go through SigLIP's PIL
    processor (square resize, [-1, 1]) with image_seq_length = (image_size / patch_size) ** 2 tokens:
    PI0ImageProcessor itself needs torchvision, and with real weights the checkpoint's own processor
    (`PI0Processor.from_pretrained(path)`, or `load(path)`) is the one to use. The state and action
    statistics normalise obs.proprio and un-normalise the chunk (the adapter needs the state's).

    The processor adds <image>, 1024 <loc> and 128 <seg> tokens to `tokenizer`, so a model built after it
    needs text vocab_size >= len(processor.tokenizer) and image_token_id = processor.image_token_id;
    with `config` both are checked here (ConfigError naming the values to set).
    """
    from transformers import PI0Processor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    vision = getattr(getattr(config, "vlm_config", None), "vision_config", None)
    image_size = image_size or getattr(vision, "image_size", None) or 224
    patch_size = patch_size or getattr(vision, "patch_size", None) or 14
    chunk_size = chunk_size or getattr(config, "chunk_size", None) or 50
    max_state_dim = max_state_dim or getattr(config, "max_state_dim", None) or 32
    if image_size % patch_size:
        raise ConfigError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    for name, stats in (("state_mean", state_mean), ("state_std", state_std), ("actions_mean", actions_mean),
                        ("actions_std", actions_std)):
        if stats is not None and len(stats) > max_state_dim:
            raise ConfigError(f"{name} has {len(stats)} values, more than max_state_dim = {max_state_dim}")
    images = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    images.image_seq_length = (image_size // patch_size) ** 2
    processor = PI0Processor(
        image_processor=images, tokenizer=tokenizer, max_state_dim=max_state_dim, chunk_size=chunk_size,
        state_mean=list(state_mean) if state_mean is not None else None,
        state_std=list(state_std) if state_std is not None else None,
        actions_mean=list(actions_mean) if actions_mean is not None else None,
        actions_std=list(actions_std) if actions_std is not None else None,
    )
    if config is not None:
        text = config.vlm_config.text_config
        if text.vocab_size < len(processor.tokenizer):
            raise ConfigError(f"the model's vocab_size {text.vocab_size} is smaller than the processor's tokenizer "
                              f"({len(processor.tokenizer)} tokens with pi0's added ones); build it with "
                              f"vocab_size >= {len(processor.tokenizer)}")
        if config.vlm_config.image_token_id != processor.image_token_id:
            raise ConfigError(f"the model's image_token_id {config.vlm_config.image_token_id} is not the processor's "
                              f"<image> id {processor.image_token_id}; build it with image_token_id="
                              f"{processor.image_token_id}")
    return processor


def resolve_steps(choice: str | Sequence[int], num_steps: int) -> tuple[int, ...]:
    """Denoising step indices whose expert rows are averaged: "all", "first", "last" or explicit ints."""
    if isinstance(choice, str):
        if choice not in ATTENTION_STEPS:
            raise ConfigError(f"attention_steps must be one of {ATTENTION_STEPS} or a list of step indices, got {choice!r}")
        return {"all": tuple(range(num_steps)), "first": (0,), "last": (num_steps - 1,)}[choice]
    steps = []
    for s in choice:
        if isinstance(s, bool) or not isinstance(s, int) or not -num_steps <= s < num_steps:
            raise ConfigError(f"attention step {s!r} is out of range for {num_steps} denoising steps")
        steps.append(s % num_steps)
    if not steps:
        raise ConfigError("attention_steps names no denoising step")
    return tuple(sorted(set(steps)))


@torch.no_grad()
def denoise(
    model,
    cache,
    prefix_mask: torch.Tensor,
    suffix_positions: torch.Tensor,
    state: torch.Tensor,
    noise: torch.Tensor,
    num_steps: int,
    on_step=None,
) -> torch.Tensor:
    """pi0's Euler flow-matching loop over a filled prefix cache, with explicit expert positions.

    prefix_mask: (B, S) long, 0 at padding and hidden tokens; suffix_positions: (B, C + 1) position
    ids of [state, a_1..a_C]; noise: (B, C, A) the chunk at t = 1 (B = 1 for one observation, more for
    a batch). on_step(k) -> context manager wrapped around step k (the capture). Mirrors
    PI0ForConditionalGeneration.sample_actions / PI0Model.forward step for step; returns the chunk at t = 0, (B, C, A).
    """
    from transformers.masking_utils import create_causal_mask

    dit_cfg = model.model.dit.config  # the config the expert's attention reads (and a capture redirects)
    prefix_len = cache.get_seq_length()
    if prefix_mask.shape[-1] != prefix_len:
        raise LayoutError(f"prefix mask has {prefix_mask.shape[-1]} entries, the prefix cache holds {prefix_len} tokens")
    b, chunk = noise.shape[:2]
    dev = noise.device
    dit_mask = torch.cat([prefix_mask, torch.ones(b, chunk + 1, dtype=prefix_mask.dtype, device=dev)], dim=1)
    # prefix + state: block 0 (causal); actions: block 1 (bidirectional among themselves), (B, S + C + 1)
    blocks = torch.cat([torch.zeros(prefix_len + 1, dtype=torch.long), torch.ones(chunk, dtype=torch.long)])
    blocks = blocks[None].expand(b, -1).to(dev)
    x = noise
    dt = -1.0 / num_steps
    for k in range(num_steps):
        t = torch.full((b,), 1.0 + k * dt, dtype=torch.float32, device=dev)
        with on_step(k) if on_step is not None else nullcontext():
            embeds = model.embed_action_time(state, x, t)  # (1, C + 1, D_expert)
            mask = create_causal_mask(
                config=dit_cfg, inputs_embeds=embeds, attention_mask=dit_mask, cache=cache, block_sequence_ids=blocks
            )
            out = model.model.dit(inputs_embeds=embeds, attention_mask=mask, position_ids=suffix_positions, cache=cache)
        velocity = model.action_out_proj(out.last_hidden_state[:, -chunk:])
        cache.crop(prefix_len - cache.get_seq_length())  # drop this step's tokens: the next step sees the prefix only
        x = x + dt * velocity
    return x


class PI0Adapter:
    """PI0ForConditionalGeneration and its PI0Processor behind the VLAAdapter protocol.

    prompt_template: the instruction's wording, with `{instruction}` (default: the task as given).
    attention_steps: denoising steps whose expert rows form A: "all" (default), "first", "last", or ints.
    action_output: what `decode` returns: "chunk" (C, action_dim) (default) or "first" (action_dim,).
    action_dim: columns of the chunk that are actions; default len(processor.actions_mean), else max_action_dim.
    num_steps: denoising steps; default the config's num_inference_steps.
    seed: seeds the noise generator; DTPPolicy.reset(seed) reseeds it through `reset`.
    """

    family = "pi0"
    model_types = ("pi0",)
    default_relevance_layers = None
    supports_batch = True  # generate_batch (dtp.models.pi0_batch): B observations in one prefix and one denoising loop

    def __init__(
        self,
        model,
        processor,
        *,
        prompt_template: str = "{instruction}",
        attention_steps: str | Sequence[int] = "all",
        action_output: str = "chunk",
        action_dim: int | None = None,
        num_steps: int | None = None,
        seed: int = 0,
    ):
        if not is_pi0(model):
            raise UnsupportedModelError(f"PI0Adapter wraps PI0ForConditionalGeneration, got {type(model).__name__}")
        if processor is None:
            raise UnsupportedModelError(
                "pi0 needs its processor (PI0Processor) to build prompts; pass wrap_model(model, processor)"
            )
        if "{instruction}" not in prompt_template:
            raise ConfigError(f"prompt_template must contain '{{instruction}}', got {prompt_template!r}")
        if action_output not in ACTION_OUTPUTS:
            raise ConfigError(f"action_output must be one of {ACTION_OUTPUTS}, got {action_output!r}")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt_template = prompt_template
        cfg = model.config
        self.num_steps = int(num_steps if num_steps is not None else cfg.num_inference_steps)
        if self.num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {self.num_steps}")
        self.attention_steps = resolve_steps(attention_steps, self.num_steps)
        self.chunk_size = int(cfg.chunk_size)
        self.max_action_dim = int(cfg.max_action_dim)
        self.max_state_dim = int(cfg.max_state_dim)
        mean = getattr(processor, "actions_mean", None)
        std = getattr(processor, "actions_std", None)
        self._action_stats = None
        if mean is not None and std is not None:
            self._action_stats = (np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32))
        self.action_dim = int(action_dim or (len(mean) if mean is not None else self.max_action_dim))
        if not 1 <= self.action_dim <= self.max_action_dim:
            raise ConfigError(f"action_dim must be in 1..{self.max_action_dim}, got {self.action_dim}")
        if self._action_stats is not None and len(self._action_stats[0]) != self.action_dim:
            n_stats = len(self._action_stats[0])
            raise ConfigError(f"the processor's action statistics have {n_stats} entries, action_dim is {self.action_dim}")
        self.action_output = action_output
        lm = model.model.vlm.language_model
        self.lm = lm
        self.text_config = attention_modules_of(lm)[0].config  # the prefix (VLM) attention reads this
        self.expert_config = attention_modules_of(model.model.dit)[0].config  # the action expert's
        self.num_layers = int(self.text_config.num_hidden_layers)
        self.num_expert_layers = int(self.expert_config.num_hidden_layers)
        self.image_token_id = int(cfg.vlm_config.image_token_id)
        self._generator = torch.Generator(device="cpu")
        self.reset(seed)

    # -- episode state ---------------------------------------------------------------------------
    def reset(self, seed: int = 0) -> None:
        """Reseed the noise: the k-th observation after reset(seed) always gets the same noise."""
        self._generator.manual_seed(int(seed))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- prepare -----------------------------------------------------------------------------------
    def _state(self, obs: Observation) -> np.ndarray:
        if obs.proprio is None:
            raise InputError("pi0 reads the robot state: give the observation's proprio (its state vector)")
        s = np.asarray(obs.proprio, dtype=np.float32).reshape(-1)
        if s.size == 0 or s.size > self.max_state_dim:
            raise InputError(f"proprio has {s.size} values; this pi0 takes 1..{self.max_state_dim} (max_state_dim)")
        if not np.isfinite(s).all():
            raise InputError("proprio contains NaN or infinite values")
        mean = getattr(self.processor, "state_mean", None)
        if mean is not None and len(mean) != s.size:
            raise InputError(f"proprio has {s.size} values, the processor's state statistics {len(mean)}")
        return s

    def layout_of(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenLayout:
        ids = input_ids[0].cpu()
        valid = attention_mask[0].cpu().bool()
        image_positions = torch.nonzero(ids == self.image_token_id).flatten()
        if image_positions.numel() == 0:
            raise LayoutError(f"the processor's input ids hold no image token (id {self.image_token_id})")
        specials = set(int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or [])
        specials.add(self.image_token_id)
        reserved = torch.tensor(sorted(specials), dtype=torch.long)
        after = torch.arange(len(ids)) > image_positions.max()
        prompt_positions = torch.nonzero(after & valid & ~torch.isin(ids, reserved)).flatten()
        return TokenLayout(
            image_positions=image_positions,
            grid=self.grid_for(int(image_positions.numel())),
            prompt_positions=prompt_positions,
            seq_len=len(ids),
        )

    def grid_for(self, n: int) -> tuple[int, int]:
        vc = self.model.config.vlm_config.vision_config
        g = (vc.image_size // vc.patch_size, vc.image_size // vc.patch_size)
        if g[0] * g[1] != n:
            raise LayoutError(
                f"{n} image tokens, but one camera at the vision config's {vc.image_size}/{vc.patch_size} gives {g[0] * g[1]}; "
                "dtp's pi0 adapter takes one camera image per observation"
            )
        return g

    def prepare(self, obs: Observation) -> PreparedInputs:
        """Validate, run the processor (image, prompt, state), locate the spans, draw this step's noise."""
        if isinstance(obs, dict):
            obs = Observation.from_dict(obs)
        check_observation(obs)
        state = self._state(obs)
        text = self.prompt_template.format(instruction=obs.instruction)
        try:
            mi = dict(self.processor(images=[[_to_pil(obs.image)]], text=[text], state=state[None]))
        except ValueError as e:
            if "state_mean" in str(e):
                raise ConfigError(
                    "the pi0 processor has no state statistics (state_mean / state_std); build it with the dataset's "
                    "statistics the checkpoint was trained on"
                ) from e
            raise
        if mi["input_ids"].shape[0] != 1:
            raise LayoutError("dtp runs one observation at a time (batch 1)")
        mask = mi["attention_mask"].long()
        layout = self.layout_of(mi["input_ids"], mask)
        noise = torch.randn(1, self.chunk_size, self.max_action_dim, generator=self._generator, dtype=torch.float32)
        out: dict[str, Any] = {
            "input_ids": mi["input_ids"].to(self.device),
            "attention_mask": mask.to(self.device),
            "position_ids": (mask.cumsum(-1) - 1).to(self.device),  # pi0's convention: 0-indexed over valid tokens
            "pixel_values": mi["pixel_values"].to(self.device, self.dtype),
            "pixel_attention_mask": mi["pixel_attention_mask"].to(self.device),
            "state": mi["state"].to(self.device, self.dtype),
            "noise": noise.to(self.device, self.dtype),
        }
        return PreparedInputs(layout=layout, model_inputs=out)

    # -- the two passes --------------------------------------------------------------------------
    def expert_query_positions(self, layout: TokenLayout) -> list[int]:
        """Sequence indices of the C action queries (after the prefix and the state query)."""
        return [layout.seq_len + 1 + c for c in range(self.chunk_size)]

    def suffix_positions(self, mi: dict[str, Any]) -> torch.Tensor:
        """(1, C + 1) original position ids of [state, a_1..a_C]: they follow the valid prefix tokens."""
        n_valid = int(mi["attention_mask"].sum())
        return (n_valid + torch.arange(self.chunk_size + 1, device=self.device)).unsqueeze(0)

    def prefix(self, mi: dict[str, Any], mask: torch.Tensor, hidden_states: bool = False):
        """Run the VLM prefix into a fresh cache: (output with .cache and .hidden_states)."""
        embeds = self.model.model.embed_prefix(mi["input_ids"], mi["pixel_values"], mi["pixel_attention_mask"])
        return self.model.model.vlm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=mi["position_ids"],
            token_type_ids=torch.zeros_like(mi["input_ids"]),
            use_cache=True,
            output_hidden_states=hidden_states,
        )

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
        """One pass: prefix (image tokens outside `keep` hidden) then the denoising loop from the prepared noise.

        With `capture`, records the prompt->image rows of the prefix (relevance layers) and the expert's
        action->image rows, averaged over `attention_steps`, into the Generation's trace.
        """
        if hidden_states and capture is None:
            raise ValueError("hidden_states=True needs a capture too (similarity relevance is computed in pass 1)")
        layout = inputs.layout
        mi = inputs.model_inputs
        mask = mi["attention_mask"] * padding_mask_with_holes(layout.seq_len, layout, keep).to(self.device)
        pre_ctx = nullcontext()
        if capture is not None and relevance_layers:  # the prefix's rows serve relevance only: those layers
            pre_spec = dataclasses.replace(capture, query_positions=layout.prompt_positions, layers=tuple(relevance_layers))
            pre_ctx = AttentionCapture(self.text_config, pre_spec)
        with pre_ctx as pre_cap:
            out = self.prefix(mi, mask, hidden_states)
        cache = out.cache

        sums: dict[str, Any] = {"rows": None, "n": 0}
        action_q = self.expert_query_positions(layout)
        expert_spec = None
        if capture is not None:
            expert_spec = CaptureSpec(
                key_positions=capture.key_positions,
                query_positions=torch.tensor(action_q),
                record_decode=False,
                mean_heads=capture.mean_heads,
            )

        def on_step(k: int):
            if expert_spec is None or k not in self.attention_steps:
                return nullcontext()
            return _ExpertStep(self.expert_config, expert_spec, layout.seq_len, action_q, self.num_expert_layers, sums)

        chunk = denoise(
            self.model, cache, mask, self.suffix_positions(mi), mi["state"], mi["noise"], self.num_steps, on_step
        )
        trace = None
        if capture is not None:
            prompt_rows = None
            if relevance_layers:
                prompt_rows = pre_cap.rows_at(layout.prompt_positions, layers=list(relevance_layers))[:, 0]
            action_rows = sums["rows"][:, 0] / sums["n"]  # (L_expert, H, C, N), mean over the recorded steps
            nbytes = (pre_cap.nbytes() if relevance_layers else 0) + action_rows.numel() * action_rows.element_size()
            trace = Trace(prompt_rows=prompt_rows, action_rows=action_rows, capture_bytes=nbytes)
            if hidden_states:
                trace.prompt_hidden, trace.image_hidden = hidden_trace(out.hidden_states, layout, relevance_layers)
        return Generation(
            action_bins=torch.empty(0, dtype=torch.long),
            action_logits=torch.empty(0, 0),
            trace=trace,
            actions=chunk[0].float().cpu(),
            extras={"noise": mi["noise"]},
        )

    def generate_batch(self, inputs: list[PreparedInputs], **kwargs: Any) -> list[Generation]:
        """`generate` on each input, in one batched prefix and denoising loop (dtp.models.pi0_batch)."""
        from .pi0_batch import pi0_generate_batch

        return pi0_generate_batch(self, inputs, **kwargs)

    def decode(self, actions: torch.Tensor) -> np.ndarray:
        """(C, max_action_dim) model-space chunk -> actions: first action_dim columns, un-normalised.

        Un-normalising inverts PI0Processor.normalize ((x - mean) / (std + 1e-8)) when the processor
        has action statistics; without them the model's normalised values are returned.
        Returns (C, action_dim) for action_output="chunk", (action_dim,) for "first".
        """
        a = torch.as_tensor(actions).float().cpu().numpy()
        if a.ndim != 2 or a.shape[1] != self.max_action_dim:
            raise InputError(f"pi0 decodes a (chunk, {self.max_action_dim}) action chunk, got shape {a.shape}")
        a = a[:, : self.action_dim]
        if self._action_stats is not None:
            mean, std = self._action_stats
            a = a * (std + 1e-8) + mean
        a = a.astype(np.float32)
        return a[0] if self.action_output == "first" else a


class _ExpertStep:
    """Context for one recorded denoising step: captures the expert's rows and adds them to `sums`."""

    def __init__(self, config, spec: CaptureSpec, prefix_len: int, queries: list[int], n_layers: int, sums: dict):
        self.cap = AttentionCapture(config, spec)
        self.prefix_len, self.queries, self.n_layers, self.sums = prefix_len, queries, n_layers, sums

    def __enter__(self):
        self.cap.__enter__()
        self.cap.seek(self.prefix_len)  # the state query sits at prefix_len, the actions after it
        return self

    def __exit__(self, exc_type, exc, tb):
        self.cap.__exit__(exc_type, exc, tb)
        if exc_type is None:
            rows = self.cap.rows_at(self.queries, layers=list(range(self.n_layers)))  # (L, B, H, C, N)
            self.sums["rows"] = rows if self.sums["rows"] is None else self.sums["rows"] + rows
            self.sums["n"] += 1
