"""`--format onnx`: `model.onnx` through `torch.onnx.export(..., dynamo=True)` (torch.export, then the ONNX
translation), with a dynamic batch size: input `pixel_values` (batch, 3, H, W) float32, as the image processor
saved beside it makes them; output `logits` (batch, num_labels). Checked with onnxruntime against our logits.

Grayscale models take 3 channels too: the processor always hands over RGB, and the graph holds our RGB-to-luma
fold (modeling_vit.PatchEmbedding).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .source import Source, max_difference

FILENAME = "model.onnx"
# Protobuf's limit for one file; larger models keep their weights in model.onnx.data beside it.
SINGLE_FILE_LIMIT = 2_000_000_000


class LogitsOnly(nn.Module):
    """The classifier as a function of `pixel_values` alone, returning the logits tensor (what export traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def traced_example(pixels: torch.Tensor) -> torch.Tensor:
    """An example batch of at least 2 images: torch.export specialises a dimension traced at size 1."""
    return pixels if pixels.shape[0] >= 2 else pixels.repeat(2, 1, 1, 1)


def export_onnx_file(model: nn.Module, path: Path, example: torch.Tensor) -> None:
    """Write `model` (ours, eval mode) to the ONNX file `path` with a dynamic batch dimension."""
    wrapper = LogitsOnly(model).eval()
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > SINGLE_FILE_LIMIT
    # The exporter prints its progress on stdout; a command prints its own summary.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            wrapper, (traced_example(example),), dynamo=True, input_names=["pixel_values"],
            output_names=["logits"], dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}},
            external_data=large, verbose=False,
        )
        program.save(str(path), external_data=large)


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for `path` (`threads`: intra-op threads; None is onnxruntime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Idle intra-op threads otherwise spin for a while after each run, taking the cores from whatever runs next in
    # the process (torch, another session; docs/export.md has the benchmark where it showed).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(onnx_session: Any, pixel_values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits of a float32 (B, 3, H, W) batch."""
    pixels = pixel_values.numpy() if isinstance(pixel_values, torch.Tensor) else pixel_values
    return onnx_session.run(["logits"], {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def export_onnx(source: Source, output_dir: Path) -> dict[str, Any]:
    """model.onnx and the image processor into `output_dir`, checked with onnxruntime on the probe images (as one
    batch, and the first alone: the batch size is dynamic). Returns the export's record."""
    pixels, probe = source.probe()
    path = output_dir / FILENAME
    export_onnx_file(source.model, path, pixels)
    source.processor.save_pretrained(output_dir)
    onnx_session = session(path)
    reference = source.logits(pixels)
    difference = max(max_difference(reference, run(onnx_session, pixels)),
                     max_difference(reference[:1], run(onnx_session, pixels[:1])))
    files = [FILENAME] + ([FILENAME + ".data"] if (output_dir / (FILENAME + ".data")).exists() else [])
    return {
        "files": files + ["preprocessor_config.json"],
        "inputs": {"pixel_values": ["batch", 3, source.model.config.image_size, source.model.config.image_size],
                   "dtype": "float32"},
        "outputs": {"logits": ["batch", source.model.config.num_labels]},
        "parity": {"probe": probe, "compared_with": "onnxruntime (CPU), the batch and its first image alone",
                   "max_abs_logit_difference": difference},
    }
