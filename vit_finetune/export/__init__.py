"""Export our models to formats every tool runs: the inverse of `convert/`.

    stock.py             StockMapping (our options -> one stock transformers class), the check that refuses every
                         option a target has no counterpart for, ExportError
    transformers_vit.py  the plain ViT -> transformers' ViTForImageClassification (the name table of convert/)
    to_transformers.py   --format transformers: MAPPINGS (the targets, in order), the folder, its check
    to_onnx.py           --format onnx: torch.onnx.export(dynamo=True), dynamic batch, onnxruntime sessions
    quantize.py          --quantize int8: onnxruntime dynamic quantization, test-split accuracy, speed-up
    to_pt2.py            --format pt2: torch.export
    source.py            the model being exported, its image processor, the probe images of every check
    card.py              the export folder's README.md
    command.py           export_model and `vit-finetune export MODEL OUTPUT_DIR --format ...`
    push_plan.py         `vit-finetune push --export transformers`: the export made and planned for upload
"""

from .command import FORMATS, export_model, main
from .stock import ExportError, StockMapping, choose_mapping, option_defaults

__all__ = ["FORMATS", "ExportError", "StockMapping", "choose_mapping", "export_model", "main", "option_defaults"]
