"""`vit-finetune export MODEL OUTPUT_DIR --format transformers|onnx|pt2 [--quantize int8]`, and `export_model`, the
same as a function: the chosen format's files, the image processor, `export.json` (what was written and how
faithful it is) and a model card; every export is loaded back and its logits compared with ours before it is
reported done."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from .source import Source, load_source
from .stock import INFERENCE_NEUTRAL, ExportError, option_defaults

FORMATS = ("transformers", "onnx", "pt2")
RECORD = "export.json"
# Largest accepted logit difference, relative to the logits' scale: a safety net against a broken export (the
# tests hold the exports to 1e-5 (transformers) and 1e-4 (onnx) on tiny models). onnxruntime fuses and reorders
# more, so it gets more room on large models.
TOLERANCE = {"transformers": 1e-4, "onnx": 1e-3, "pt2": 1e-4}


def _exporter(format: str):
    if format == "transformers":
        from .to_transformers import export_transformers
        return export_transformers
    if format == "onnx":
        from .to_onnx import export_onnx
        return export_onnx
    from .to_pt2 import export_pt2
    return export_pt2


def _check_output_dir(output_dir: Path, source: Source) -> None:
    if source.folder is not None and output_dir.resolve() == source.folder.resolve():
        raise ExportError(f"{output_dir} is the model's own folder: export into another one")
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"{output_dir} is a file, not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)


def _source_label(source: Source) -> str:
    """How the record names the source: a Hub id or timm name as is, a local folder by its name only."""
    return source.folder.resolve().name if source.folder is not None and Path(source.name).exists() else source.name


def export_model(model_name_or_path: str, output_dir: str | Path, format: str, *, quantize: str | None = None,
                 test_dir: str | None = None, max_test_samples: int | None = None,
                 source: Source | None = None) -> dict[str, Any]:
    """Export a model (our folder, a transformers folder or Hub id, timm/<name>) to `output_dir` in `format`,
    optionally with an int8 ONNX beside the float32 one; returns the record also written to export.json. Raises
    ExportError (an option the format cannot hold, a failed check) or convert.ModelLoadError (no such model)."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize {quantize}: only int8 is supported")
    if quantize and format != "onnx":
        raise ExportError(f"--quantize int8 needs --format onnx (got --format {format})")
    source = source or load_source(model_name_or_path)
    if format == "transformers":  # refused before anything is written
        from .to_transformers import stock_mapping

        stock_mapping(source)
    output_dir = Path(output_dir)
    _check_output_dir(output_dir, source)

    config = source.model.config
    record: dict[str, Any] = {"format": format, "source": _source_label(source),
                              **_exporter(format)(source, output_dir)}
    difference = record["parity"]["max_abs_logit_difference"]
    scale = max(1.0, float(source.logits(source.probe()[0]).abs().max()))
    if not difference <= TOLERANCE[format] * scale:  # also catches NaN
        raise ExportError(f"{output_dir}: the {format} export's logits differ from the model's by {difference:.3g} "
                          f"(more than {TOLERANCE[format] * scale:.3g}); it was not written correctly")
    record["parity"]["tolerance"] = TOLERANCE[format] * scale
    defaults = option_defaults()
    record["not_carried"] = [f"{name}={getattr(config, name)!r}" for name in INFERENCE_NEUTRAL
                             if format == "transformers" and getattr(config, name) != defaults[name]]
    record["id2label"] = {str(i): str(name) for i, name in config.id2label.items()}
    if quantize:
        from .quantize import quantize_export

        record["quantization"] = quantize_export(source, output_dir, test_dir=test_dir,
                                                 max_test_samples=max_test_samples)
        record["files"] += ["model.int8.onnx", "quantization.json"]
    metrics = source.read_json("metrics.json")
    if metrics is not None:
        shutil.copyfile(source.folder / "metrics.json", output_dir / "metrics.json")
        record["files"].append("metrics.json")
    record["files"] += [RECORD, "README.md"]
    (output_dir / RECORD).write_text(json.dumps(record, indent=2))
    from .card import write_card

    write_card(output_dir, record, metrics)
    return record


def summary(record: dict[str, Any], output_dir: str | Path) -> list[str]:
    """What the command prints: the files, the check, the int8 figures."""
    parity = record["parity"]
    lines = [f"wrote {output_dir} ({record['format']}: {', '.join(record['files'])})",
             f"checked: logits equal the model's to {parity['max_abs_logit_difference']:.2e} on {parity['probe']}"]
    quantization = record.get("quantization")
    if quantization:
        split = quantization["test_split"]
        if split["available"]:
            lines.append(f"int8 on {split['source']}: accuracy {100 * split['int8']['accuracy']:.2f}% vs "
                         f"{100 * split['float32']['accuracy']:.2f}% float32 ({100 * split['accuracy_change']:+.2f} "
                         "points)")
        else:
            lines.append(f"int8 accuracy change: not measured, the test split is not available ({split['reason']})")
        speedup = ", ".join(f"{value:.2f}x at {key.replace('_', ' ')}"
                            for key, value in quantization["speed"]["speedup"].items())
        lines.append(f"int8 speed-up on this CPU: {speedup} (quantization.json)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """0 on success, 2 when the model cannot be loaded or exported as asked (one `error:` line)."""
    from ..convert import ModelLoadError

    parser = argparse.ArgumentParser(
        prog="vit-finetune export",
        description="Export a model as a stock transformers folder (no remote code), ONNX (optionally int8) or a "
                    "torch.export .pt2, checked against the model's own logits.")
    parser.add_argument("model", help="a vit-finetune model folder (or a transformers folder / Hub id, timm/<name>)")
    parser.add_argument("output_dir", help="where to write the export")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write (docs/export.md)")
    parser.add_argument("--quantize", choices=["int8"],
                        help="with --format onnx: also model.int8.onnx (onnxruntime dynamic quantization), with its "
                             "accuracy change on the model's test split and its speed-up")
    parser.add_argument("--test_dir", help="the test images (one sub-folder per class) for --quantize, if the "
                                           "model folder's training_args.json does not lead to them")
    parser.add_argument("--max_test_samples", type=int, help="evaluate --quantize on at most this many test images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the command prints its own summary
    try:
        record = export_model(args.model, args.output_dir, args.format, quantize=args.quantize,
                              test_dir=args.test_dir, max_test_samples=args.max_test_samples)
    except (ExportError, ModelLoadError) as error:
        print(f"vit-finetune export: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary(record, args.output_dir)))
    return 0
