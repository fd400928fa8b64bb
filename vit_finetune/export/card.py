"""The README.md (model card) of an export folder, from its record (export.json, quantization.json) and the source
folder's metrics.json: what it is, how faithful it is (the logits check, the int8 accuracy change and speed-up),
and how to run it with the format's own runtime.

It does not carry `hub.model_card.GENERATED_MARKER`: `vit-finetune push` uploads it as written (the model card of
our folders tells users to load with remote code, which a stock folder must not ask for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIBRARIES = {"transformers": "transformers", "onnx": "onnx", "pt2": "pytorch"}


def _usage(record: dict[str, Any], model_ref: str) -> str:
    if record["format"] == "transformers":
        return f"""```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{model_ref}")  # no trust_remote_code, no vit-finetune
print(classifier("path/to/image.png", top_k=3))
```
"""
    if record["format"] == "onnx":
        return f"""```python
import json
import numpy as np
import onnxruntime as ort
from PIL import Image
from transformers import AutoImageProcessor  # or resize + normalise by hand with preprocessor_config.json

folder = "{model_ref}"
labels = json.load(open(f"{{folder}}/export.json"))["id2label"]
processor = AutoImageProcessor.from_pretrained(folder)
session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])  # or model.int8.onnx
pixels = processor(images=[Image.open("path/to/image.png").convert("RGB")], return_tensors="np")["pixel_values"]
logits = session.run(["logits"], {{"pixel_values": pixels.astype(np.float32)}})[0]
print(labels[str(int(logits[0].argmax()))])
```
"""
    return f"""```python
import json
import torch
from PIL import Image
from transformers import AutoImageProcessor

folder = "{model_ref}"
labels = json.load(open(f"{{folder}}/export.json"))["id2label"]
model = torch.export.load(f"{{folder}}/model.pt2").module()  # load only .pt2 files you trust
pixels = AutoImageProcessor.from_pretrained(folder)(images=[Image.open("path/to/image.png").convert("RGB")],
                                                    return_tensors="pt")["pixel_values"]
print(labels[str(int(model(pixels)[0].argmax()))])
```
"""


def _quantization_section(quantization: dict[str, Any]) -> list[str]:
    lines = ["## int8 (`model.int8.onnx`)", "", f"Method: `{quantization['method']}`; "
             f"{quantization['size_mb']['float32']} MB -> {quantization['size_mb']['int8']} MB.", ""]
    split = quantization["test_split"]
    if split["available"]:
        fp32, int8 = split["float32"], split["int8"]
        lines += [f"On {split['source']} ({fp32['samples']} images):", "",
                  "| model | accuracy | top-5 | macro F1 | loss |", "|---|---:|---:|---:|---:|"]
        for name, values in (("float32", fp32), ("int8", int8)):
            lines.append(f"| {name} | {100 * values['accuracy']:.2f}% | {100 * values['top5_accuracy']:.2f}% | "
                         f"{values['f1_macro']:.4f} | {values['loss']:.4f} |")
        lines += ["", f"Accuracy change: {100 * split['accuracy_change']:+.2f} points; int8 changes "
                      f"{int8['top1_changed_vs_float32']} of {fp32['samples']} top-1 predictions.", ""]
    else:
        lines += [f"Accuracy change: not measured, the test split is not available ({split['reason']}).", ""]
    speed = quantization["speed"]
    batch_key = next(key for key in speed["float32"] if key.endswith("_images_per_s"))
    lines += [f"Speed on the exporting machine's CPU ({speed['machine']['cpus']} CPUs, onnxruntime):", "",
              "| model | batch-1 latency (ms) | " + batch_key.replace("_", " ").replace("images per s", "images/s")
              + " |", "|---|---:|---:|"]
    for name in ("float32", "int8"):
        lines.append(f"| {name} | {speed[name]['batch_1_latency_ms']:.2f} | {speed[name][batch_key]:.1f} |")
    speedups = ", ".join(f"{value:.2f}x at {key.replace('_', ' ')}" for key, value in speed["speedup"].items())
    return lines + ["", f"Speed-up: {speedups}.", ""]


def build_card(record: dict[str, Any], metrics: dict[str, Any] | None, model_ref: str) -> str:
    """The card's text (YAML metadata, then Markdown)."""
    from huggingface_hub import ModelCardData

    labels = [record["id2label"][key] for key in sorted(record["id2label"], key=int)]
    data = ModelCardData(license="apache-2.0", library_name=LIBRARIES[record["format"]],
                         pipeline_tag="image-classification",
                         tags=["vit-finetune", "vision", "image-classification", "vit", record["format"]])
    what = {"transformers": f"a stock transformers `{record.get('architecture')}` folder (no remote code)",
            "onnx": "an ONNX model (`model.onnx`, dynamic batch size)", "pt2": "a `torch.export` program (`model.pt2`)"}
    parity = record["parity"]
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {record['source']} ({record['format']} export)", "",
             f"A Vision Transformer image classifier exported by `vit-finetune export` as {what[record['format']]}.",
             "", f"Checked: its logits equal the original model's to {parity['max_abs_logit_difference']:.2e} "
             f"(largest absolute difference, float32) on {parity['probe']}; compared with {parity['compared_with']}.", ""]
    if record.get("not_carried"):
        lines += ["Not carried over (no effect on inference): " + ", ".join(record["not_carried"]) + ".", ""]
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
    lines += [f"## Classes\n\n{len(labels)}: {shown}.", ""]
    if metrics:
        rows = [f"| {split} | {100 * metrics[key]['accuracy']:.2f}% | {metrics[key].get('samples', '-')} |"
                for key, split in (("eval", "validation"), ("test", "test")) if isinstance(metrics.get(key), dict)]
        if rows:
            lines += ["## Evaluation of the original model", "", "| split | accuracy | images |", "|---|---:|---:|",
                      *rows, ""]
    if record.get("quantization"):
        lines += _quantization_section(record["quantization"])
    lines += ["## How to use", "", _usage(record, model_ref)]
    return "\n".join(lines)


def write_card(output_dir: Path, record: dict[str, Any], metrics: dict[str, Any] | None) -> Path:
    path = output_dir / "README.md"
    path.write_text(build_card(record, metrics, str(output_dir)), encoding="utf-8")
    return path
