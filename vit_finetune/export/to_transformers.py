"""`--format transformers`: our model as a stock transformers class (config.json, model.safetensors, the image
processor), which every tool loads without `trust_remote_code` and without vit-finetune.

The target class is the first of `MAPPINGS` that holds every option of the model (see `stock.py`). A new target
(e.g. LayerScale + registers + CLS-and-mean pooling -> `Dinov2WithRegistersForImageClassification`) is one module
beside `transformers_vit.py` defining its `StockMapping`, and one entry here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import transformers_dinov2, transformers_siglip, transformers_vit
from .source import Source, max_difference
from .stock import ExportError, StockMapping, choose_mapping

# Tried in order; the first that holds every option of the model is written.
MAPPINGS: tuple[StockMapping, ...] = (
    transformers_vit.MAPPING,
    transformers_dinov2.DINOV2,
    transformers_dinov2.DINOV2_WITH_REGISTERS,
    transformers_siglip.MAPPING,
)

FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def stock_mapping(source: Source) -> StockMapping:
    """The mapping that will be written for this model; ExportError naming every option no target holds."""
    return choose_mapping(source.model.config, MAPPINGS)


def export_transformers(source: Source, output_dir: Path) -> dict[str, Any]:
    """Write the stock folder into `output_dir`, load it back with transformers' Auto class and compare its
    logits with ours on the probe images. Returns the export's record (architecture, files, parity)."""
    from transformers import AutoModelForImageClassification

    mapping = stock_mapping(source)
    config = mapping.config(source.model.config)
    stock = AutoModelForImageClassification.from_config(config)
    try:
        weights = mapping.state_dict(source.model.state_dict(), stock.state_dict().keys())
        stock.load_state_dict(weights, strict=True)
    except (ValueError, RuntimeError) as error:  # a weight with no place, or shapes that differ
        raise ExportError(f"{source.name}: the weights do not fit {mapping.architecture}: {error}") from error
    stock.save_pretrained(output_dir)  # safetensors
    source.processor.save_pretrained(output_dir)

    reloaded = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    if type(reloaded).__module__.startswith("vit_finetune"):  # would mean config.json still names our model type
        raise ExportError(f"{output_dir}/config.json loads vit-finetune's model, not a stock transformers class")
    pixels, probe = source.probe()
    import torch

    with torch.no_grad():
        difference = max_difference(source.logits(pixels), reloaded(pixel_values=pixels).logits)
    return {
        "architecture": mapping.architecture,
        "model_type": config.model_type,
        "files": list(FILES),
        "parity": {"probe": probe, "compared_with": f"transformers {mapping.architecture} loaded from the folder",
                   "max_abs_logit_difference": difference},
    }
