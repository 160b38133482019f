"""Train TinyVLA on scripted demonstrations: behaviour cloning with action tokens.

Each step of each demo is one sample. The model reads [BOS][image x N][registers][words][proprio]
and, with teacher forcing, the first three action tokens; the loss is cross-entropy of
the four action tokens over the 256 action bins (the vocabulary the adapter decodes
from), nothing else. The sequence is built by `TinyVLA.sequence_embeddings`, the same
function the inference adapter uses.

A VLM stage comes first when asked (docs/training.md): `stage="grounding"` trains on
grounding questions only (one answer word read at the proprio token), and an actions run
with `init_from` and `grounding_share` continues from it with that share of grounding
batches mixed in. `stage="vision"` comes before both when asked: it trains the image encoder
and projector alone on the patch-word labels (below), as a VLA inherits a pretrained vision
encoder; the language model stays as initialised. `image_dropout` hides random image tokens
of action samples by the attention mask with original position ids, as DTP's pass 2 does.
`patch_word_weight` adds, on grounding batches, a dense loss: a linear head on each projected
image token predicts which object words (colour, noun, shape) describe what the patch holds,
from the frames' `patch_words` labels. The head is a training aid, kept in the run's
checkpoints and not in the model. `instruction_attention_weight` adds, on grounding batches,
a loss on Eq. 1's relevance itself: the attention of the frame's task instruction (or, half
the time, its colour-swapped twin) to the image, in `instruction_attention_layers`, is pulled
toward the patches of the parts it names, so that G follows the words (docs/training.md).

    from dtp.tinyvla.train import TrainConfig, train
    final_dir = train(TrainConfig(data_dir="data/demos", out_dir="runs/train_tinyvla"))

or ``python -m dtp.tinyvla.train --data-dir data/demos --out-dir runs/train_tinyvla`` (`dtp train`).

Determinism: the batch indices and augmentation of step k come from a generator seeded
with (seed, k), the model from `seed`, and everything else is a function of the step, so
the same command gives the same numbers and `resume=True` continues exactly where the
last checkpoint left off (weights and AdamW state are saved as safetensors, never pickled).

Output directory:
    train_config.json            the TrainConfig of the run
    train_log.jsonl              {"kind": "train", step, loss, acc, lr, grad_norm, seconds} every
                                 log_every steps; {"kind": "val", step, loss, acc, acc_<task>...}
    checkpoints/step_<k>/        config.json, model.safetensors, tokenizer.json,
                                 optimizer.safetensors, trainer_state.json (the last keep_checkpoints),
                                 patch_word_head.safetensors (vision stage or patch_word_weight > 0)
    final/                       config.json, model.safetensors, tokenizer.json, training.json
"""

__all__ = ["TrainConfig", "train", "evaluate", "evaluate_grounding", "action_logits", "grounding_logits", "action_loss",
           "training_loss", "grounding_loss", "patch_word_loss", "instruction_relevance", "instruction_attention_loss",
           "supervised_words", "evaluate_instruction_attention", "evaluate_patch_words", "grounding_baselines",
           "teacher_forced_hidden", "image_keep_mask", "lr_at", "config_from_args", "resume_if_same",
           "interrupted_note", "saved_step", "main", "STAGES"]

# Each name lives in one module of the package; `from dtp.tinyvla.train import train` imports that
# module when the name is first used (torch with it), so that the flags (`.arguments`) stay light.
_HOMES = {
    "config": ("TrainConfig", "STAGES"),
    "loop": ("train",),
    "steps": ("lr_at",),
    "evaluation": ("evaluate", "evaluate_grounding", "evaluate_instruction_attention", "evaluate_patch_words",
                   "grounding_baselines"),
    "losses": ("action_logits", "action_loss", "grounding_logits", "grounding_loss", "image_keep_mask",
               "instruction_attention_loss", "instruction_relevance", "patch_word_loss", "supervised_words",
               "teacher_forced_hidden", "training_loss"),
    "arguments": ("config_from_args", "resume_if_same", "interrupted_note", "main", "_parser"),
    "checkpoint": ("saved_step",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        from importlib import import_module

        return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
