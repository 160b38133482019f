"""Adapters for transformers image-text-to-text models, and the action vocabulary they decode.

`HFVLAAdapter` holds the two-pass mechanics every transformers family shares:

    processor(image, prompt) -> input_ids (image span = positions of the image token id)
    pass 1: prefill + greedy decoding with AttentionCapture on the language model's config
    pass 2: the same call with pruned image tokens hidden by the padding mask, every token
            keeping its ORIGINAL position id (exactly removal; tests pin it per family)

A family subclasses it and overrides a few hooks: the prompt (`build_text`), the patch
grid (`grid_for`), the position ids (`prefill_positions` / `step_positions`) and the extra
prefill inputs (`prefill_kwargs`). `GenericVLAAdapter` is the fallback for any
transformers VLM whose config names an image token (LLaVA, Idefics3/SmolVLM without
image splitting, Gemma3), and raises `UnsupportedModelError` naming what is missing.

Action tokens are decoded by an `ActionVocab`: by default the last 256 ids of the
tokenizer's base vocabulary are the 256 bins (OpenVLA's scheme, de-tokenised with
`dtp.actions.ActionBinner`); schemes that need hub assets (FAST for Nora, SpatialVLA's
spatial grids) pass `decoder=callable(token_ids) -> action`.
"""

from __future__ import annotations

import logging
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import DynamicCache

from ..actions import ActionBinner
from ..capture import AttentionCapture, CaptureSpec
from ..errors import ConfigError, LayoutError, UnsupportedModelError
from .base import Generation, Observation, PreparedInputs, TokenLayout, check_observation
from .common import hidden_trace, padding_mask_with_holes, trace_from_capture
from .generic_batch import hf_generate_batch

__all__ = [
    "ActionDecodingError",
    "ActionVocab",
    "HFVLAAdapter",
    "GenericVLAAdapter",
    "greedy_decode",
    "image_token_id_of",
    "is_transformers_model",
    "language_model_of",
]

log = logging.getLogger(__name__)

Decoder = Callable[[np.ndarray], np.ndarray]  # (T,) vocabulary ids -> continuous action


class ActionDecodingError(ConfigError):
    """Generated tokens cannot be turned into an action: pass `decoder=` (and `action_token_ids=`)."""


# -- action vocabulary ----------------------------------------------------------------------
@dataclass(frozen=True)
class ActionVocab:
    """Which vocabulary ids are action tokens, and how a sequence of them becomes an action.

    token_ids: (K,) vocabulary id of each action index ("bin"); None = the whole vocabulary
      (unconstrained greedy decoding, index = vocabulary id).
    n_tokens: action tokens per control step (an upper bound when stop_token_ids end early).
    decoder: (T,) vocabulary ids -> action; None = 256-bin de-tokenisation, bin = index.
    binner: the bins of the default de-tokenisation.
    stop_token_ids: ids that end generation early (variable-length schemes such as FAST).
    """

    token_ids: torch.Tensor | None
    n_tokens: int = 7
    decoder: Decoder | None = None
    binner: ActionBinner = ActionBinner()
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n_tokens < 1:
            raise ConfigError(f"n_action_tokens must be >= 1, got {self.n_tokens}")
        if self.decoder is None:
            if self.token_ids is None:
                raise ActionDecodingError(
                    "unconstrained decoding needs a decoder: the default 256-bin de-tokenisation only reads action ids"
                )
            if self.token_ids.numel() != self.binner.bins:
                raise ActionDecodingError(
                    f"the default de-tokenisation maps {self.binner.bins} action ids to bins, got {self.token_ids.numel()} "
                    "ids; pass decoder=callable(token_ids) -> action for other schemes"
                )

    @classmethod
    def last_bins(
        cls,
        vocab_size: int,
        *,
        n_tokens: int = 7,
        binner: ActionBinner | None = None,
        descending: bool = False,
        reserved: Sequence[int] = (),
    ) -> "ActionVocab":
        """The last `bins` ids of a vocabulary as the action bins (OpenVLA / RT-2 style).

        descending=True maps the highest id to bin 0 (OpenVLA's order). Raises
        ActionDecodingError if a reserved id (special or image token) falls in that range.
        """
        binner = binner or ActionBinner()
        if vocab_size <= binner.bins:
            raise ActionDecodingError(
                f"a vocabulary of {vocab_size} ids is too small to reserve its last {binner.bins} for action bins; "
                "pass decoder= and action_token_ids="
            )
        ids = torch.arange(vocab_size - binner.bins, vocab_size)
        clash = sorted(set(int(i) for i in reserved) & set(ids.tolist()))
        if clash:
            raise ActionDecodingError(
                f"the default 256-bin de-tokenisation cannot apply: ids {int(ids[0])}..{int(ids[-1])} include special "
                f"tokens {clash[:8]}; this model uses another action scheme, so pass decoder=callable(token_ids) -> action "
                "(e.g. the FAST tokenizer for Nora) and action_token_ids=the ids it emits"
            )
        if descending:
            ids = ids.flip(0)
        return cls(token_ids=ids, n_tokens=n_tokens, binner=binner)

    @property
    def size(self) -> int | None:
        return None if self.token_ids is None else int(self.token_ids.numel())

    def ids_of(self, bins: torch.Tensor | np.ndarray) -> np.ndarray:
        """Vocabulary ids of action indices."""
        b = np.asarray(torch.as_tensor(bins).cpu(), dtype=np.int64)
        if self.token_ids is None:
            return b
        return self.token_ids.cpu().numpy()[b]

    def decode(self, bins: torch.Tensor | np.ndarray) -> np.ndarray:
        b = np.asarray(torch.as_tensor(bins).cpu(), dtype=np.int64)
        if self.decoder is None:
            return self.binner.from_bins(b)
        return np.asarray(self.decoder(self.ids_of(b)), dtype=np.float32)


def greedy_decode(
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor, int], torch.Tensor],
    vocab: ActionVocab,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding over the action vocabulary, with optional early stop tokens.

    prefill() -> last-position logits (V,); step(token_id (1, 1), t) -> logits (V,) after
    feeding the t-th generated token. Returns (indices (T,), logits over the action ids (T, K)).
    """
    bins: list[int] = []
    logits_out: list[torch.Tensor] = []
    logits = prefill()
    ids = vocab.token_ids.to(logits.device) if vocab.token_ids is not None else None
    stops = torch.tensor(vocab.stop_token_ids, dtype=torch.long, device=logits.device)
    for t in range(vocab.n_tokens):
        lb = (logits[ids] if ids is not None else logits).float()
        b = int(torch.argmax(lb))
        if stops.numel():
            chosen = int(ids[b]) if ids is not None else b
            if chosen in vocab.stop_token_ids or logits[stops].float().max() > lb[b]:
                break
        bins.append(b)
        logits_out.append(lb.cpu())
        if t + 1 < vocab.n_tokens:
            token = ids[b] if ids is not None else torch.tensor(b, device=logits.device)
            logits = step(token.view(1, 1), t)
    if not bins:
        raise ActionDecodingError("the model emitted a stop token before any action token")
    return torch.tensor(bins, dtype=torch.long), torch.stack(logits_out)


# -- model introspection --------------------------------------------------------------------
def is_transformers_model(model: Any) -> bool:
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def image_token_id_of(config: Any) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        v = getattr(config, name, None)
        if isinstance(v, int):
            return v
    return None


def language_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack whose attention DTP captures (`model.get_decoder()` for transformers VLMs)."""
    lm = model.get_decoder() if hasattr(model, "get_decoder") else None
    if lm is None or lm is model:
        raise UnsupportedModelError(f"cannot find the language model inside {type(model).__name__}")
    return lm


def attention_modules_of(lm: torch.nn.Module) -> list[torch.nn.Module]:
    """The language model's self-attention modules, checked to work with AttentionCapture."""
    mods = [m for name, m in lm.named_modules() if name.endswith("self_attn")]
    if not mods:
        raise UnsupportedModelError(f"{type(lm).__name__} has no `self_attn` modules; dtp cannot find its attention")
    for m in mods:
        if getattr(m, "layer_idx", None) is None:
            raise UnsupportedModelError(
                f"{type(m).__name__} has no layer_idx, so captured rows cannot be keyed by layer; "
                "implement the VLAAdapter protocol for this model (docs/use-with-your-model.md)"
            )
        ns = sys.modules[type(m).__module__]
        if not hasattr(ns, "ALL_ATTENTION_FUNCTIONS") or not hasattr(ns, "eager_attention_forward"):
            raise UnsupportedModelError(
                f"{type(m).__name__} does not dispatch through transformers' attention interface "
                "(ALL_ATTENTION_FUNCTIONS), so dtp cannot capture its rows"
            )
    return mods


def _to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image))


# -- the shared adapter -----------------------------------------------------------------------
class HFVLAAdapter:
    """Two-pass DTP over a transformers image-text-to-text model and its processor.

    model: a loaded transformers VLM (eval mode is set); processor: its processor (tokenizer +
    image processor), which builds the prompt and resizes the image.
    prompt_template: the instruction's wording, with `{instruction}`.
    n_action_tokens / action_token_ids / decoder / binner / stop_token_ids: the action
    scheme (see ActionVocab); the default is 7 tokens over the last 256 base-vocabulary ids.
    """

    family = "transformers"
    # whether this family's inputs join into one right-padded batch (generate_batch); see supports_batch
    family_batches = False
    default_prompt = "What action should the robot take to {instruction}?"
    # Whether VLAs of this family use the 256-bin scheme by default; if not, a reason to say when none is given.
    default_bins_refusal: str | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        prompt_template: str | None = None,
        n_action_tokens: int = 7,
        action_token_ids: Sequence[int] | torch.Tensor | None = None,
        decoder: Decoder | None = None,
        binner: ActionBinner | None = None,
        stop_token_ids: Sequence[int] = (),
    ):
        if processor is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} needs its processor (tokenizer + image processor) to build prompts; "
                "pass wrap_model(model, processor)"
            )
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt_template = prompt_template or self.default_prompt
        if "{instruction}" not in self.prompt_template:
            raise ConfigError(f"prompt_template must contain '{{instruction}}', got {self.prompt_template!r}")
        self.lm = self._language_model()
        self._attn = attention_modules_of(self.lm)
        self.text_config = self._attn[0].config
        self.num_layers = int(self.text_config.num_hidden_layers)
        if len(self._attn) != self.num_layers:
            raise UnsupportedModelError(
                f"found {len(self._attn)} attention modules for {self.num_layers} layers in {type(self.lm).__name__}"
            )
        self.image_token_id = self._image_token_id()
        self.actions = self._action_vocab(n_action_tokens, action_token_ids, decoder, binner, stop_token_ids)

    # -- hooks a family overrides --------------------------------------------------------------
    def _language_model(self) -> torch.nn.Module:
        return language_model_of(self.model)

    def _image_token_id(self) -> int:
        tid = image_token_id_of(self.model.config)
        if tid is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}'s config names no image token id (image_token_id / image_token_index), "
                "so dtp cannot find the image span; implement the VLAAdapter protocol for it"
            )
        return tid

    def vocab_size(self) -> int:
        """Size of the tokenizer's base vocabulary (added tokens excluded)."""
        return int(getattr(self.tokenizer, "vocab_size", None) or self.text_config.vocab_size)

    def reserved_token_ids(self) -> set[int]:
        ids = set(int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or [])
        ids.add(int(self.image_token_id))
        return ids

    def build_text(self, instruction: str) -> str:
        """The text the processor receives: the chat template when the processor has one."""
        prompt = self.prompt_template.format(instruction=instruction)
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image_token = getattr(self.processor, "image_token", None) or self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return f"{image_token}{prompt}"

    def process(self, image: np.ndarray, text: str) -> dict[str, Any]:
        out = self.processor(images=[_to_pil(image)], text=[text], return_tensors="pt")
        return dict(out)

    def grid_for(self, model_inputs: dict[str, Any], n: int) -> tuple[int, int]:
        """Patch grid of n image tokens: sqrt(n) when square, else image_size / patch_size of the vision config."""
        s = math.isqrt(n)
        if s * s == n:
            return (s, s)
        vc = getattr(self.model.config, "vision_config", None)
        size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", None)
        if size and patch:
            hs, ws = (size, size) if isinstance(size, int) else tuple(size)
            g = (hs // patch, ws // patch)
            if g[0] * g[1] == n:
                return g
        raise LayoutError(
            f"{n} image tokens form no square grid and do not match the vision config; "
            "if the processor splits the image into tiles, turn splitting off (e.g. do_image_splitting=False)"
        )

    def prefill_positions(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        """(1, S) original position ids of the prefill."""
        s = model_inputs["input_ids"].shape[1]
        return torch.arange(s).unsqueeze(0)

    def step_positions(self, prefill_positions: torch.Tensor, t: int) -> torch.Tensor:
        """Position ids of the t-th generated token fed back (t = 0 is the first action token)."""
        return (prefill_positions[..., -1:] + 1 + t).clone()

    def prefill_kwargs(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        """Everything the processor returned except the attention mask (pruning builds its own)."""
        return {k: v for k, v in model_inputs.items() if k not in ("attention_mask", "labels", "position_ids")}

    def _reset_state(self) -> None:
        """Forget model state cached by a previous pass (e.g. Qwen2.5-VL's rope_deltas)."""

    # -- protocol --------------------------------------------------------------------------------
    def _action_vocab(self, n_tokens, action_token_ids, decoder, binner, stop_token_ids) -> ActionVocab:
        ids = None if action_token_ids is None else torch.as_tensor(action_token_ids, dtype=torch.long).flatten()
        if decoder is None and ids is None:
            if self.default_bins_refusal:
                raise ActionDecodingError(self.default_bins_refusal)
            return ActionVocab.last_bins(
                self.vocab_size(), n_tokens=n_tokens, binner=binner, reserved=sorted(self.reserved_token_ids())
            )
        return ActionVocab(
            token_ids=ids, n_tokens=n_tokens, decoder=decoder, binner=binner or ActionBinner(), stop_token_ids=tuple(stop_token_ids)
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _to_model(self, inputs: dict[str, Any]) -> dict[str, Any]:
        dtype = next(self.model.parameters()).dtype
        out = {}
        for k, v in inputs.items():
            if torch.is_tensor(v):
                v = v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device)
            out[k] = v
        return out

    def layout_of(self, input_ids: torch.Tensor, model_inputs: dict[str, Any]) -> TokenLayout:
        ids = input_ids[0].cpu()
        image_positions = torch.nonzero(ids == self.image_token_id).flatten()
        if image_positions.numel() == 0:
            raise LayoutError(f"the processor's input ids hold no image token (id {self.image_token_id})")
        reserved = torch.tensor(sorted(self.reserved_token_ids()), dtype=torch.long)
        after = torch.arange(len(ids)) > image_positions.max()
        prompt_positions = torch.nonzero(after & ~torch.isin(ids, reserved)).flatten()
        return TokenLayout(
            image_positions=image_positions,
            grid=self.grid_for(model_inputs, int(image_positions.numel())),
            prompt_positions=prompt_positions,
            seq_len=len(ids),
        )

    def prepare(self, obs: Observation) -> PreparedInputs:
        """Validate the observation, build the prompt, run the processor, locate the spans.

        obs.proprio is not used: these models read only the image and the instruction.
        """
        check_observation(obs)
        mi = self.process(obs.image, self.build_text(obs.instruction))
        if mi["input_ids"].shape[0] != 1:
            raise LayoutError("dtp runs one observation at a time (batch 1)")
        layout = self.layout_of(mi["input_ids"], mi)
        mi = self._to_model(mi)
        mi["position_ids"] = self.prefill_positions(mi).to(self.device)
        return PreparedInputs(layout=layout, model_inputs=mi)

    def _decoder(self) -> torch.nn.Module:
        """The module prefill and decode steps run through: the whole VLM; a family that embeds its own
        inputs (OpenVLA) returns its language model."""
        return self.model

    def _prefill(self, mi: dict[str, Any], mask: torch.Tensor, cache, hidden_states: bool):
        return self._decoder()(
            **self.prefill_kwargs(mi),
            attention_mask=mask,
            position_ids=mi["position_ids"],
            cache=cache,
            use_cache=True,
            output_hidden_states=hidden_states,
            logits_to_keep=1,
        )

    def _step(self, token: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache):
        return self._decoder()(input_ids=token, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)

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
        """One pass; `keep` (N,) bool hides the other image tokens (mask + original positions)."""
        if hidden_states and capture is None:
            raise ValueError("hidden_states=True needs a capture too (similarity relevance is computed in pass 1)")
        layout = inputs.layout
        mi = inputs.model_inputs
        dev = self.device
        mask = padding_mask_with_holes(layout.seq_len, layout, keep).to(dev)
        positions = mi["position_ids"]
        cache = DynamicCache(config=self.text_config)
        state: dict[str, Any] = {"mask": mask}
        ctx = AttentionCapture(self.text_config, capture) if capture is not None else nullcontext()

        def prefill() -> torch.Tensor:
            out = self._prefill(mi, mask, cache, hidden_states)
            state["hidden"] = out.hidden_states
            return out.logits[0, -1]

        def step(token: torch.Tensor, t: int) -> torch.Tensor:
            state["mask"] = torch.cat([state["mask"], torch.ones(1, 1, dtype=mask.dtype, device=dev)], dim=1)
            out = self._step(token.to(dev), state["mask"], self.step_positions(positions, t), cache)
            return out.logits[0, -1]

        self._reset_state()
        try:
            with ctx as cap:
                bins, logits = greedy_decode(prefill, step, self.actions)
        finally:
            self._reset_state()
        trace = None
        if capture is not None:
            trace = trace_from_capture(cap, layout, int(bins.numel()), relevance_layers, self.num_layers)
            if hidden_states:
                trace.prompt_hidden, trace.image_hidden = hidden_trace(state["hidden"], layout, relevance_layers)
        return Generation(
            action_bins=bins,
            action_logits=logits,
            trace=trace,
            extras={"token_ids": self.actions.ids_of(bins).tolist()},
        )

    @property
    def supports_batch(self) -> bool:
        """Whether generate_batch applies: a family that declares it, decoding a fixed number of tokens."""
        return self.family_batches and not self.actions.stop_token_ids

    def generate_batch(self, inputs: list[PreparedInputs], **kwargs: Any) -> list[Generation]:
        """`generate` on each input in one right-padded pass (dtp.models.generic_batch; DTPPolicy.step_batch)."""
        if not self.supports_batch:
            raise UnsupportedModelError(f"{type(self).__name__} does not batch; run generate per observation")
        return hf_generate_batch(self, inputs, **kwargs)

    def decode(self, action_bins: torch.Tensor) -> np.ndarray:
        return self.actions.decode(action_bins)


class GenericVLAAdapter(HFVLAAdapter):
    """Fallback for transformers VLMs whose config names an image token.

    Tested on tiny LLaVA, Idefics3/SmolVLM (image splitting off) and Gemma3 models; the
    image span is every position holding the image token id, the grid sqrt(N) when square.
    """

    family = "generic"
    family_batches = True  # default positions and prompts: right padding keeps every sample's numbers
    model_types: tuple[str, ...] = ("llava", "gemma3", "idefics3")
