"""Inference benchmark: batch-1 latency and batch-64 throughput on the CPU, for each way of running a model that
`vit-finetune export` makes:

    ours                    our model (torch, float32, inference_mode) on preprocessed tensors
    ours pipeline()         transformers' pipeline over our folder: decoding, preprocessing and the model
    transformers            the stock `--format transformers` export, on the same tensors
    transformers pipeline() the stock export through pipeline(), as a user without vit-finetune runs it
    onnxruntime float32     `--format onnx`, on the same tensors (as numpy)
    onnxruntime int8        `--quantize int8`

for two models: the Fashion-MNIST recipe model (`outputs/fashion_mnist` when scripts/quickstart.sh has written it,
else one of the same shape built from configs/fashion_mnist.yaml; its conv stem, sin-cos table and mean pooling have
no stock transformers class, so its transformers rows say why they are missing) and a ViT-S/16-shaped one (random
weights; 1000 classes). Runtimes are timed interleaved (round-robin inside every repeat) and the median repeat is
kept, so a neighbour's load hits each alike: read the ratios. From the repository root:

    python -m benchmarks.inference                 # both models (about 5 minutes on 2 idle cores)
    python -m benchmarks.inference --quick         # tiny shapes, 2 repeats: checks that everything runs (~1 minute)
    python -m benchmarks.inference --quantizers    # onnxruntime's vs torch's dynamic int8 (export/quantize.py's choice)

Writes `inference.md` and `inference.json` (or `quantizers.md` / `.json`) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "fashion_mnist.yaml"
RECIPE_FOLDER = REPO / "outputs" / "fashion_mnist"
RUNTIMES = ("ours", "ours pipeline()", "transformers", "transformers pipeline()", "onnxruntime float32",
            "onnxruntime int8")
PIPELINES = ("ours pipeline()", "transformers pipeline()")


@dataclass(frozen=True)
class Case:
    name: str
    image_side: int  # the side of the test images handed to pipeline() (they are resized to the model's)
    batch_size: int = 64
    note: str = ""


# ----------------------------------------------------------------------------------------------------------
# The models, as folders of ours


def recipe_folder(work: Path) -> tuple[Path, str]:
    """(the Fashion-MNIST recipe model folder, where it came from)."""
    if (RECIPE_FOLDER / "config.json").is_file() and (RECIPE_FOLDER / "model.safetensors").is_file():
        return RECIPE_FOLDER, f"trained ({RECIPE_FOLDER.relative_to(REPO)})"
    import inspect

    import yaml

    from vit_finetune import ViTConfig

    recipe = yaml.safe_load(RECIPE.read_text())
    fields = {k: v for k, v in recipe.items() if k in inspect.signature(ViTConfig.__init__).parameters}
    return save_model(work / "fmnist", ViTConfig(**fields, num_labels=10), mean=[0.5], std=[0.5]), \
        f"random weights, the shape of {RECIPE.relative_to(REPO)}"


def save_model(folder: Path, config: Any, mean: list[float], std: list[float]) -> Path:
    from vit_finetune import ViTForImageClassification
    from vit_finetune.data import build_image_processor

    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    build_image_processor(config.image_size, config.num_channels, mean, std).save_pretrained(folder)
    return folder


def vit_folder(work: Path, quick: bool) -> tuple[Path, str]:
    from vit_finetune import ViTConfig

    if quick:  # ViT-S/16's layout at a fraction of its size
        config = ViTConfig(image_size=64, patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=256, num_labels=10)
        return save_model(work / "vit-quick", config, [0.5] * 3, [0.5] * 3), "random weights, a tiny ViT (--quick)"
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                       intermediate_size=1536, num_labels=1000)
    return save_model(work / "vit-s16", config, [0.5] * 3, [0.5] * 3), "random weights, ViT-S/16 at 224 px"


# ----------------------------------------------------------------------------------------------------------
# Timing


def photos(count: int, side: int) -> list:
    """Noisy colour images (PIL), as pipeline() gets them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(np.clip(rng.normal(128, 60, (side, side, 3)), 0, 255).astype(np.uint8))
            for _ in range(count)]


def timed_rounds(runs: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each run per repeat; every repeat runs each once, the order rotating."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for index in range(repeats):
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def runners(folder: Path, work: Path, images: list, batch_size: int) -> tuple[dict, dict, dict[str, str]]:
    """(batch-1 runs, batch-`batch_size` runs, runtimes that cannot run with the reason); exports on the way."""
    from transformers import AutoModelForImageClassification, pipeline

    from vit_finetune.export import ExportError, export_model
    from vit_finetune.export.quantize import quantize_file
    from vit_finetune.export.source import load_source
    from vit_finetune.export.to_onnx import session

    source = load_source(str(folder))
    pixels = source.pixels(images[:1]).repeat(batch_size, 1, 1, 1)
    one, many = pixels[:1].contiguous(), pixels.contiguous()
    first, batch = {}, {}
    missing: dict[str, str] = {}

    def torch_run(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model(pixel_values=x).logits
        return run

    first["ours"], batch["ours"] = torch_run(source.model, one), torch_run(source.model, many)
    ours_pipe = pipeline("image-classification", model=str(folder))
    first["ours pipeline()"] = lambda: ours_pipe(images[0])
    batch["ours pipeline()"] = lambda: ours_pipe(images[:batch_size], batch_size=batch_size)
    try:
        export_model(str(folder), work / "transformers", "transformers", source=source)
        stock = AutoModelForImageClassification.from_pretrained(work / "transformers").eval()
        stock_pipe = pipeline("image-classification", model=str(work / "transformers"))
        first["transformers"], batch["transformers"] = torch_run(stock, one), torch_run(stock, many)
        first["transformers pipeline()"] = lambda: stock_pipe(images[0])
        batch["transformers pipeline()"] = lambda: stock_pipe(images[:batch_size], batch_size=batch_size)
    except ExportError as error:
        missing["transformers"] = missing["transformers pipeline()"] = str(error)
    export_model(str(folder), work / "onnx", "onnx", source=source)
    quantize_file(work / "onnx" / "model.onnx", work / "onnx" / "model.int8.onnx")  # as --quantize int8 does
    for name, filename in (("onnxruntime float32", "model.onnx"), ("onnxruntime int8", "model.int8.onnx")):
        onnx_session = session(work / "onnx" / filename)
        first[name] = lambda s=onnx_session: s.run(["logits"], {"pixel_values": one.numpy()})
        batch[name] = lambda s=onnx_session: s.run(["logits"], {"pixel_values": many.numpy()})
    return first, batch, missing


def run_case(case: Case, folder: Path, origin: str, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    images = photos(case.batch_size, case.image_side)
    with tempfile.TemporaryDirectory() as work:
        first, batch, missing = runners(folder, Path(work), images, case.batch_size)
        latency = timed_rounds(first, repeats * 4)  # batch 1 is short: more repeats for the same time
        throughput = timed_rounds(batch, repeats)
    rows = []
    ours_latency, ours_batch = statistics.median(latency["ours"]), statistics.median(throughput["ours"])
    for name in RUNTIMES:
        if name in missing:
            rows.append({"runtime": name, "missing": missing[name]})
            continue
        lat, thr = statistics.median(latency[name]), statistics.median(throughput[name])
        rows.append({"runtime": name, "preprocessing": name in PIPELINES,
                     "batch_1_latency_ms": 1000 * lat, "batch_1_best_ms": 1000 * min(latency[name]),
                     "batch_images_per_s": case.batch_size / thr,
                     "batch_best_images_per_s": case.batch_size / min(throughput[name]),
                     # our time / its time: above 1 is faster than ours
                     "batch_1_speed_vs_ours": ours_latency / lat, "batch_speed_vs_ours": ours_batch / thr})
        log(f"{case.name:8s} {name:24s} batch 1 {1000 * lat:8.2f} ms   batch {case.batch_size} "
            f"{case.batch_size / thr:8.1f} images/s")
    return {"model": case.name, "origin": origin, "batch_size": case.batch_size, "note": case.note, "rows": rows}


# ----------------------------------------------------------------------------------------------------------
# onnxruntime's vs torch's dynamic int8 (the numbers behind export/quantize.py's choice)


def quantizers(repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """ViT-Ti/16 at 224 px, batch 1 and 16: onnxruntime float32 and int8 of our export (`export/quantize.py`), and
    torch float32 and int8 (`torch.ao.quantization.quantize_dynamic`) of the same weights as the stock transformers
    ViT: torch's quantized Linear has no `.weight` tensor, which our attention reads, so torch's path needs the stock
    class (`--format transformers`)."""
    import warnings

    from transformers import AutoModelForImageClassification

    from vit_finetune import ViTConfig
    from vit_finetune.export import export_model
    from vit_finetune.export.quantize import quantize_file
    from vit_finetune.export.to_onnx import LogitsOnly, session

    config = ViTConfig(image_size=224, patch_size=16, hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                       intermediate_size=768, num_labels=1000)
    results = []
    with tempfile.TemporaryDirectory() as work:
        folder = save_model(Path(work) / "vit-ti16", config, [0.5] * 3, [0.5] * 3)
        export_model(str(folder), Path(work) / "onnx", "onnx")
        export_model(str(folder), Path(work) / "stock", "transformers")
        fp32_path, int8_path = Path(work) / "onnx" / "model.onnx", Path(work) / "onnx" / "model.int8.onnx"
        quantize_file(fp32_path, int8_path)
        ort_fp32, ort_int8 = session(fp32_path), session(int8_path)
        stock = LogitsOnly(AutoModelForImageClassification.from_pretrained(Path(work) / "stock")).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            torch_int8 = torch.ao.quantization.quantize_dynamic(stock, {torch.nn.Linear}, dtype=torch.qint8)
        for batch in (1, 16):
            x = torch.randn(batch, 3, 224, 224)

            def torch_run(m: torch.nn.Module) -> Callable[[], Any]:
                def run() -> Any:
                    with torch.inference_mode():
                        return m(x)
                return run

            seconds = timed_rounds({
                "torch float32 (stock class)": torch_run(stock), "torch int8 (stock class)": torch_run(torch_int8),
                "onnxruntime float32": lambda: ort_fp32.run(["logits"], {"pixel_values": x.numpy()}),
                "onnxruntime int8": lambda: ort_int8.run(["logits"], {"pixel_values": x.numpy()}),
            }, repeats)
            row = {"batch": batch, **{name: 1000 * statistics.median(v) for name, v in seconds.items()}}
            log(" | ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            results.append(row)
    return {"machine": machine(), "model": "ViT-Ti/16, 224 px, random weights", "ms": results}


# ----------------------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    import onnxruntime
    import transformers

    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__}


def to_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['processor']}, {m['cpus']} CPUs ({m['torch_threads']} torch threads, onnxruntime's default "
             f"threads); torch {m['torch']}, transformers {m['transformers']}, onnxruntime {m['onnxruntime']}. "
             f"Median of {results['repeats']} interleaved repeats ({4 * results['repeats']} at batch 1). "
             "pipeline() rows take PIL images (preprocessing: resize, rescale, normalise; then the model and "
             "the pipeline's post-processing); the others run on preprocessed float32 tensors. vs ours: our time / its time (higher "
             "is faster).", ""]
    for case in results["cases"]:
        lines += [f"### {case['model']} ({case['origin']})", "",
                  f"| runtime | batch-1 latency ms (best) | vs ours | batch-{case['batch_size']} images/s (best) "
                  "| vs ours |", "|---|---:|---:|---:|---:|"]
        for row in case["rows"]:
            if "missing" in row:
                lines.append(f"| {row['runtime']} | - | - | - | - |")
                continue
            lines.append(f"| {row['runtime']} | {row['batch_1_latency_ms']:.2f} ({row['batch_1_best_ms']:.2f}) | "
                         f"{row['batch_1_speed_vs_ours']:.2f}x | {row['batch_images_per_s']:.1f} "
                         f"({row['batch_best_images_per_s']:.1f}) | {row['batch_speed_vs_ours']:.2f}x |")
        reasons = {row["missing"] for row in case["rows"] if "missing" in row}
        lines += [""] + [f"Not run: {reason}" for reason in reasons] + ([""] if reasons else [])
    return "\n".join(lines) + "\n"


def quantizers_markdown(results: dict[str, Any]) -> str:
    names = [key for key in results["ms"][0] if key != "batch"]
    lines = [f"{results['model']}; ms per batch, median of the repeats; {results['machine']['cpus']} CPUs.", "",
             "| batch | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    lines += ["| " + " | ".join([str(row["batch"])] + [f"{row[name]:.1f}" for name in names]) + " |"
              for row in results["ms"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, batch 8, 2 repeats: checks that it runs")
    parser.add_argument("--quantizers", action="store_true", help="only onnxruntime's vs torch's dynamic int8")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per runtime (batch 1: four times as many)")
    parser.add_argument("--out", default="outputs/benchmark", help="folder for the report")
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    repeats = 2 if args.quick else args.repeats
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quantizers:
        results = quantizers(repeats * 2, print)
        (out / "quantizers.json").write_text(json.dumps(results, indent=2))
        (out / "quantizers.md").write_text(quantizers_markdown(results))
        print(f"wrote {out / 'quantizers.md'}")
        return 0
    batch = 8 if args.quick else 64
    with tempfile.TemporaryDirectory() as work:
        cases = []
        folder, origin = recipe_folder(Path(work))
        cases.append(run_case(Case("fmnist", 28, batch), folder, origin, repeats, print))
        folder, origin = vit_folder(Path(work), args.quick)
        cases.append(run_case(Case("vit-s16" if not args.quick else "vit-quick", 256, batch), folder, origin,
                              repeats, print))
    results = {"machine": machine(), "repeats": repeats, "cases": cases}
    (out / "inference.json").write_text(json.dumps(results, indent=2))
    (out / "inference.md").write_text(to_markdown(results))
    print(f"wrote {out / 'inference.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
