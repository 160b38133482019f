"""OpenVLA's image and text inputs without its remote code (PrismaticProcessor's transform, stock tokenizer).

Split from `openvla_native` (which re-exports `PrismaticInputs`) so that the model and its weight mapping
stay one file; see that module's docstring for the whole native path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError

__all__ = ["PrismaticInputs"]


class PrismaticInputs:
    """PrismaticProcessor without remote code: `(text, image)` -> input_ids (BOS first), attention_mask, pixel_values.

    Per tower: resize (PIL, the checkpoint's interpolation; "resize-naive" to the square size, "resize-crop" and
    "letterbox" the shorter side then a centre crop, letterbox padding to a square first with the mean colour),
    scale to [0, 1], normalise with the tower's mean/std; towers stacked along channels.
    """

    _PIL = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}

    def __init__(self, tokenizer: Any, input_sizes: list, means: list, stds: list, interpolations: list | None = None,
                 image_resize_strategy: str = "resize-naive"):
        if image_resize_strategy not in ("resize-naive", "resize-crop", "letterbox"):
            raise ConfigError(f"image_resize_strategy {image_resize_strategy!r} is not one of resize-naive, resize-crop, letterbox")
        self.tokenizer = tokenizer
        self.input_sizes = [tuple(s) for s in input_sizes]  # (3, H, W) per tower
        self.means, self.stds = [tuple(m) for m in means], [tuple(s) for s in stds]
        self.interpolations = list(interpolations or ["bicubic"] * len(self.input_sizes))
        self.strategy = image_resize_strategy

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "PrismaticInputs":
        """The checkpoint's own image transform (preprocessor_config.json) and tokenizer; nothing is downloaded."""
        from transformers import AutoTokenizer

        path = Path(path)
        pre = path / "preprocessor_config.json"
        if not pre.is_file():
            raise CheckpointError(f"{path} lacks preprocessor_config.json (the image transform of the checkpoint)")
        p = json.loads(pre.read_text())
        try:
            # trust_remote_code=False: the config names remote classes; the tokenizer is a stock one (no prompt, no code)
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the tokenizer at {path}: {e}") from e
        missing = [k for k in ("input_sizes", "means", "stds") if k not in p]
        if missing:
            raise CheckpointError(f"{pre} lacks {missing}")
        return cls(tok, p["input_sizes"], p["means"], p["stds"], p.get("interpolations"),
                   p.get("image_resize_strategy", "resize-naive"))

    def _tower_pixels(self, img, idx: int) -> torch.Tensor:
        """One tower's (3, H, W) normalised pixels of a PIL image, resized the checkpoint's way."""
        from PIL import Image

        _, h, w = self.input_sizes[idx]
        resample = self._PIL[self.interpolations[idx]]
        if self.strategy == "letterbox":  # Prismatic's symmetric border (one pixel short of square when odd)
            (iw, ih), side = img.size, max(img.size)
            pw, ph = int((side - iw) / 2), int((side - ih) / 2)
            canvas = Image.new("RGB", (iw + 2 * pw, ih + 2 * ph), tuple(int(x * 255) for x in self.means[idx]))
            canvas.paste(img, (pw, ph))
            img = canvas
        if self.strategy == "resize-naive":
            img = img.resize((w, h), resample)
        else:  # torchvision Resize(int): the shorter side to the size, then CenterCrop
            iw, ih = img.size
            short, long = (iw, ih) if iw <= ih else (ih, iw)
            new_short, new_long = h, int(h * long / short)
            img = img.resize((new_short, new_long) if iw <= ih else (new_long, new_short), resample)
            iw, ih = img.size
            left, top = int(round((iw - w) / 2.0)), int(round((ih - h) / 2.0))
            img = img.crop((left, top, left + w, top + h))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)  # (3, H, W)
        mean = torch.tensor(self.means[idx]).view(3, 1, 1)
        std = torch.tensor(self.stds[idx]).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, text: str, images: Any, return_tensors: str = "pt"):
        """input_ids (BOS first), attention_mask and the towers' pixels stacked along channels, batch of one."""
        from transformers import BatchFeature

        img = images.convert("RGB")
        pixels = torch.cat([self._tower_pixels(img, i) for i in range(len(self.input_sizes))], dim=0).unsqueeze(0)
        enc = self.tokenizer(text, return_tensors="pt")
        ids = enc["input_ids"]
        bos = self.tokenizer.bos_token_id
        if bos is not None and int(ids[0, 0]) != bos:  # Llama's tokenizer adds BOS; a bare one may not
            ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)
        return BatchFeature({"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels})
