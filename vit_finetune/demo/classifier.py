"""Loading a model for the demo, under the trust rules, and classifying images with it.

Whose code runs: our own model type loads with the installed vit-finetune classes (in a Space, where the package
is absent, with the files pushed beside the model); stock transformers types load with transformers' code; any
other type that brings its own Python files is refused unless the user passes `--trust_remote_code`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

if __package__:  # inside vit_finetune.demo
    from .attention import AttentionMethod, attention_map, patch_grid
else:  # a Space: the demo's files lie flat beside app.py
    from attention import AttentionMethod, attention_map, patch_grid


@dataclass
class Prediction:
    """The result for one image."""

    probabilities: dict[str, float]  # top-k label -> probability, most likely first
    heatmap: np.ndarray  # (rows, cols) in [0, 1]
    seconds: float  # preprocessing + forward pass for the whole batch it was part of


# The model type of vit-finetune's own ViT (its configuration's `model_type`).
OUR_MODEL_TYPE = "vit_finetune"


class ModelLoadError(Exception):
    """A model the demo cannot load; the message (one line) says why and what to do."""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _our_package_is_installed() -> bool:
    """Import vit_finetune if it is there: importing it registers our classes with transformers'
    Auto classes, so our models load with the installed code. A Space has no package."""
    try:
        importlib.import_module("vit_finetune")  # not a plain import: this file must run without it
    except ImportError:
        return False
    return True


def _read_config(model_id: str, revision: str | None) -> dict[str, Any]:
    """The raw config.json of a model folder or Hub repo (no model code runs to read it), after
    checking that a folder exists and holds the files the demo needs."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        for name, how in [
            ("config.json", "save the model with model.save_pretrained(folder)"),
            # The processor's resize and normalisation must be those of training: guessing them would give
            # quietly wrong predictions, so we ask for the file rather than build a default one.
            ("preprocessor_config.json",
             "save the image processor used in training next to it: processor.save_pretrained(folder)"),
        ]:
            if not (folder / name).is_file():
                raise ModelLoadError(f"the model folder '{model_id}' has no {name}; {how}")
    elif folder.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise ModelLoadError(f"no model folder '{model_id}': it does not exist")  # cannot be a Hub id
    try:
        config, _ = PretrainedConfig.get_config_dict(model_id, revision=revision)
    except OSError as error:
        raise ModelLoadError(
            f"'{model_id}' is not a model folder here, and loading it from the Hugging Face Hub failed: "
            f"{_first_line(error)}"
        ) from None
    return config


def _remote_code_allowed(model_id: str, config: dict[str, Any], trust_remote_code: bool) -> bool:
    """Whether transformers may import the Python files that come with the model.

    Only with the user's `trust_remote_code`, or for our own model type when our package is not
    installed (a Space runs the code shipped with its model). Stock transformers types load with
    transformers' code; any other type that brings its own code is refused without the flag.
    """
    model_type = config.get("model_type")
    if trust_remote_code:
        return True
    if model_type == OUR_MODEL_TYPE:
        return not _our_package_is_installed()
    if "auto_map" in config and model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"'{model_id}' has model type {model_type!r}, whose code is neither in transformers nor in "
            "vit-finetune: loading it runs the Python files that come with the model. If you trust that code, "
            "pass --trust_remote_code (the trust_remote_code argument in Python)"
        )
    return False


def load_model(
    model_id: str, *, device: str | None = None, revision: str | None = None, trust_remote_code: bool = False
) -> Classifier:
    """Load a model folder or Hub id: our ViT, a transformers image classifier, or, with
    `trust_remote_code`, a model that brings its own code. Raises `ModelLoadError`."""
    config = _read_config(model_id, revision)
    remote_code = _remote_code_allowed(model_id, config, trust_remote_code)
    try:
        processor = AutoImageProcessor.from_pretrained(
            model_id, revision=revision, trust_remote_code=trust_remote_code
        )
        # Eager attention: the fused (sdpa) kernels do not return attention weights.
        model = AutoModelForImageClassification.from_pretrained(
            model_id, trust_remote_code=remote_code, attn_implementation="eager", revision=revision
        )
    except (OSError, ValueError) as error:  # missing files, unknown model types, refused remote code
        raise ModelLoadError(f"could not load '{model_id}': {_first_line(error)}") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Classifier(model.to(device).eval(), processor, device=device)


class Classifier:
    """A model plus its image processor, answering top-k classes and attention maps."""

    def __init__(self, model: torch.nn.Module, processor: Any, *, device: str = "cpu") -> None:
        self.model = model
        self.processor = processor
        self.device = device
        config = model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.num_channels = int(getattr(config, "num_channels", 3))
        patch_size = getattr(config, "patch_size", None)
        self.patch_size = int(patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size or 0)
        self.pooling = str(getattr(config, "pooling", "cls"))  # transformers' ViT reads the CLS token

    @torch.inference_mode()
    def predict(
        self, images: Sequence[Image.Image], *, top_k: int = 5, method: AttentionMethod = "rollout"
    ) -> list[Prediction]:
        """Classify a batch of images already in the model's mode (see `load_image`)."""
        start = time.perf_counter()
        pixel_values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        # The model's dtype: a checkpoint saved in bfloat16 loads as bfloat16 ("auto" dtype).
        pixel_values = pixel_values.to(self.device, dtype=next(self.model.parameters()).dtype)
        outputs = self.model(pixel_values=pixel_values, output_attentions=True)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if not outputs.attentions:
            raise RuntimeError("The model returned no attentions; load it with attn_implementation='eager'.")
        height, width = pixel_values.shape[-2:]
        grid = patch_grid(outputs.attentions[-1].shape[-1], height, width, self.patch_size)
        maps = attention_map(outputs.attentions, grid, method=method, pooling=self.pooling)
        probabilities = outputs.logits.float().softmax(dim=-1).cpu()
        k = max(1, min(int(top_k), len(self.labels)))
        results = []
        for row, heatmap in zip(probabilities, maps, strict=True):
            values, indices = row.topk(k)
            top = {self.labels[i]: float(v) for v, i in zip(values.tolist(), indices.tolist(), strict=True)}
            results.append(Prediction(top, heatmap, seconds))
        return results



__all__ = ["OUR_MODEL_TYPE", "Classifier", "ModelLoadError", "Prediction", "load_model"]
