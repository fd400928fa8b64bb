"""The model being exported: our model (from one of our folders, a transformers folder or Hub id, or timm/<name>),
its image processor, and the probe images every export is checked on (its logits against ours)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling_vit import ViTForImageClassification

# At most this many of the folder's examples/ images (training writes one per class) probe an export.
MAX_PROBES = 8


@dataclass
class Source:
    name: str  # as the user gave it
    folder: Path | None  # the local folder it was read from (None for timm/<name>)
    model: ViTForImageClassification  # float32, eval mode, on the CPU
    processor: Any  # a transformers image processor (what users run before the model)

    def read_json(self, filename: str) -> dict | None:
        """A JSON record of the model folder (metrics.json, training_args.json), None when absent or unreadable."""
        if self.folder is None:
            return None
        try:
            value = json.loads((self.folder / filename).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def pixels(self, images: list) -> torch.Tensor:
        """PIL images -> the float32 (B, C, H, W) batch the image processor makes of them (RGB: C is 3)."""
        return self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]

    def probe(self, images: list | None = None) -> tuple[torch.Tensor, str]:
        """(pixel values, what they are) to check an export on: `images` if given, else the folder's examples/
        (real images of the training data), else noise images (said so in the export's record)."""
        from PIL import Image

        if images:
            return self.pixels(images), f"{len(images)} given images"
        examples = sorted((self.folder / "examples").glob("*.png"))[:MAX_PROBES] if self.folder else []
        if examples:
            return self.pixels([Image.open(path) for path in examples]), f"{len(examples)} images of examples/"
        rng = np.random.default_rng(0)
        side = self.model.config.image_size
        noise = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(4)]
        return self.pixels(noise), "4 noise images (the model folder has no examples/)"

    @torch.no_grad()
    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def load_source(name: str) -> Source:
    """Our model in float32 for `name` and its image processor. Raises convert.ModelLoadError naming it."""
    from transformers import AutoImageProcessor

    from ..convert import load_pretrained_vit, resolve_model_folder, source_image_processor

    model = load_pretrained_vit(name).float().eval()
    folder = None if name.startswith(("timm/", "hf-hub:timm/", "hf_hub:timm/")) else resolve_model_folder(name)
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        processor = AutoImageProcessor.from_pretrained(folder)
    else:
        processor = source_image_processor(name, model.config)
    return Source(name, folder, model, processor)


def max_difference(reference: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray) -> float:
    """The largest absolute difference between two logit arrays."""
    return float(np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(other, dtype=np.float64)).max())
