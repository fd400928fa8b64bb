"""`--format pt2`: `model.pt2`, a `torch.export` program with a dynamic batch size (`torch.export.save`), run
with `torch.export.load(path).module()(pixel_values)` and torch alone: no vit-finetune, no transformers.

The archive holds the graph as JSON and the weights as raw tensor bytes (plain tensors are never pickled), but
`torch.export.load` falls back to full unpickling for objects it cannot read otherwise: load only `.pt2` files
you trust (the transformers folder and ONNX carry no code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .source import Source, max_difference
from .stock import ExportError
from .to_onnx import LogitsOnly, traced_example

FILENAME = "model.pt2"


def export_pt2(source: Source, output_dir: Path) -> dict[str, Any]:
    """model.pt2 and the image processor into `output_dir`, loaded back and checked on the probe images (as one
    batch, and the first alone). Returns the export's record."""
    pixels, probe = source.probe()
    not_plain = [name for name, tensor in source.model.state_dict().items() if type(tensor) is not torch.Tensor]
    if not_plain:  # tensor subclasses would be pickled into the archive
        raise ExportError(f"{source.name}: weights {not_plain[:3]} are not plain tensors; pt2 would pickle them")
    program = torch.export.export(LogitsOnly(source.model).eval(), (traced_example(pixels),),
                                  dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}})
    path = output_dir / FILENAME
    torch.export.save(program, str(path))
    source.processor.save_pretrained(output_dir)
    loaded = torch.export.load(str(path)).module()  # the file just written here
    reference = source.logits(pixels)
    with torch.no_grad():
        difference = max(max_difference(reference, loaded(pixels)), max_difference(reference[:1], loaded(pixels[:1])))
    return {
        "files": [FILENAME, "preprocessor_config.json"],
        "inputs": {"pixel_values": ["batch", 3, source.model.config.image_size, source.model.config.image_size],
                   "dtype": "float32"},
        "outputs": {"logits": ["batch", source.model.config.num_labels]},
        "torch": torch.__version__,
        "parity": {"probe": probe, "compared_with": "torch.export.load(model.pt2).module(), the batch and its "
                   "first image alone", "max_abs_logit_difference": difference},
    }
