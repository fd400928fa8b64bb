#!/usr/bin/env python
"""Throughput benchmarks, one section per subsystem, written as Markdown + JSON.

    python -m benchmarks.pipeline --only data --output_dir outputs/benchmark   # from the repository root

Sections register themselves in SECTIONS: name -> function(args) returning a list of result rows
(dicts with at least "benchmark", "value", "unit"). Add a section by writing such a function and one SECTIONS line.

The "data" section measures:
* decode + resize of a folder of real JPEG photos to 224 px: our `prepare_datasets` (first run, then the cached
  run), our per-image `preprocess_image`, and transformers' `load_image` + `ViTImageProcessor` called per image;
* `BatchAugmentation` cost per batch of 256 28x28 grayscale images (the Fashion-MNIST recipe), per option;
* with `--fashion_mnist_dir` (output of scripts/prepare_fashion_mnist.py): `prepare_datasets` on its 70k PNGs.
The JPEGs are made from the real photos bundled with scikit-learn / matplotlib / gradio (random crops, scales and
flips re-encoded as JPEG), since no image set can be downloaded here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import models as model_benchmark

Row = dict[str, Any]


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bundled_photos() -> list[str]:
    """Real photographs shipped inside installed packages."""
    candidates = []
    try:
        import sklearn

        folder = Path(sklearn.__file__).parent / "datasets" / "images"
        candidates += [folder / "china.jpg", folder / "flower.jpg"]
    except ImportError:
        pass
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    try:
        import gradio

        candidates += [Path(gradio.__file__).parent / "media_assets" / "images" / name for name in ("cheetah.jpg", "tower.jpg")]
    except ImportError:
        pass
    photos = [os.fspath(p) for p in candidates if p.is_file()]
    if not photos:
        raise SystemExit("no bundled photographs found (install scikit-learn or matplotlib)")
    return photos


def make_jpeg_folder(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` JPEGs (about 400-800 px a side) cut from the bundled photos, in two class folders."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in bundled_photos()]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        image = photo.crop((left, top, left + crop_w, top + crop_h))
        scale = rng.uniform(400, 800) / max(image.size)
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        path = folder / f"class{i % 2}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(os.fspath(path))
    return paths


def bench_preprocessing(args: argparse.Namespace) -> list[Row]:
    from PIL import Image
    from transformers import ViTImageProcessor
    from transformers.image_utils import load_image as hf_load_image

    from vit_finetune.data import DataArguments, prepare_datasets, preprocess_image

    size = 224
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="vitft-bench-"))
    try:
        paths = make_jpeg_folder(work / "jpegs", args.num_images)
        mean_side = np.mean([sum(Image.open(p).size) / 2 for p in paths[:50]])
        data_args = DataArguments(
            train_dir=os.fspath(work / "jpegs"), cache_dir=os.fspath(work / "cache"),
            preprocessing_num_workers=args.num_proc,
        )

        def run() -> Any:
            return prepare_datasets(data_args, image_size=size, num_channels=3, output_dir=os.fspath(work / "out"), seed=0)

        first, prepared = _timed(run)
        cached, _ = _timed(run)
        assert len(prepared.train) + len(prepared.validation) == len(paths)
        note = f"{len(paths)} JPEGs, mean side {mean_side:.0f} px -> {size} px"
        rows.append({"benchmark": f"prepare_datasets first run (num_proc={args.num_proc})", "value": len(paths) / first,
                     "unit": "images/s", "seconds": first, "note": note})
        rows.append({"benchmark": "prepare_datasets cached run", "value": len(paths) / cached, "unit": "images/s",
                     "seconds": cached, "note": "fingerprint cache hit: no decoding"})

        sample = paths[: min(len(paths), 200)]
        seconds, _ = _timed(lambda: [preprocess_image(p, image_size=size, num_channels=3) for p in sample])
        rows.append({"benchmark": "preprocess_image per image (1 process)", "value": len(sample) / seconds,
                     "unit": "images/s", "seconds": seconds, "note": "JPEG draft decoding + PIL bilinear resize"})
        processor = ViTImageProcessor(size={"height": size, "width": size})
        seconds, _ = _timed(lambda: [processor(hf_load_image(p), return_tensors="pt") for p in sample])
        rows.append({"benchmark": "transformers load_image + ViTImageProcessor per image (1 process)",
                     "value": len(sample) / seconds, "unit": "images/s", "seconds": seconds,
                     "note": "full-size decode + torchvision resize, every epoch"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


AUGMENTATION_CASES: dict[str, dict[str, Any]] = {
    "normalise only": {"hflip": False, "random_resized_crop_min_scale": 1.0},
    "random resized crop": {"hflip": False, "random_resized_crop_min_scale": 0.35},
    "horizontal flip": {"random_resized_crop_min_scale": 1.0},
    "trivialaugment": {"hflip": False, "random_resized_crop_min_scale": 1.0, "auto_augment": "trivialaugment"},
    "randaugment (2 ops)": {"hflip": False, "random_resized_crop_min_scale": 1.0, "auto_augment": "randaugment"},
    "random erasing 0.25": {"hflip": False, "random_resized_crop_min_scale": 1.0, "random_erasing_prob": 0.25},
    "mixup 0.8 + cutmix 1.0": {"hflip": False, "random_resized_crop_min_scale": 1.0, "mixup_alpha": 0.8, "cutmix_alpha": 1.0},
    "full recipe (crop+flip+trivialaugment+erasing+mixup/cutmix)": {
        "random_resized_crop_min_scale": 0.35, "auto_augment": "trivialaugment", "random_erasing_prob": 0.25,
        "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
    },
}


def bench_augmentation(args: argparse.Namespace) -> list[Row]:
    from vit_finetune.data import BatchAugmentation, DataArguments

    device = torch.device(args.device)
    images = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (256,), device=device)
    rows = []
    for name, options in AUGMENTATION_CASES.items():
        augment = BatchAugmentation(DataArguments(train_dir="unused", **options), image_size=28, num_channels=1,
                                    num_labels=10, mean=[0.286], std=[0.353]).to(device)
        for _ in range(5):  # warm-up
            augment(images, labels)
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            augment(images, labels)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append({"benchmark": f"BatchAugmentation: {name}", "value": 1000 * times[len(times) // 2], "unit": "ms/batch",
                     "min_ms": 1000 * times[0], "note": f"256 x 1x28x28 on {device}, {torch.get_num_threads()} threads (median)"})
    return rows


def bench_fashion_mnist(args: argparse.Namespace) -> list[Row]:
    from vit_finetune.data import DataArguments, prepare_datasets

    if not args.fashion_mnist_dir:
        return []
    root = Path(args.fashion_mnist_dir)
    cache = Path(tempfile.mkdtemp(prefix="vitft-fm-cache-"))
    try:
        data_args = DataArguments(train_dir=os.fspath(root / "train"), test_dir=os.fspath(root / "test"),
                                  cache_dir=os.fspath(cache), preprocessing_num_workers=args.num_proc)

        def run() -> Any:
            return prepare_datasets(data_args, image_size=28, num_channels=1, output_dir=os.fspath(cache / "out"), seed=0)

        first, prepared = _timed(run)
        cached, _ = _timed(run)
        total = len(prepared.train) + len(prepared.validation) + len(prepared.test)
        dataset = prepared.train
        order = np.random.default_rng(0).permutation(len(dataset))[: 256 * 40]
        reading, _ = _timed(lambda: [dataset[order[i : i + 256].tolist()] for i in range(0, len(order), 256)])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return [
        {"benchmark": f"Fashion-MNIST prepare_datasets first run (num_proc={args.num_proc})", "value": total / first,
         "unit": "images/s", "seconds": first, "note": f"{total} PNGs -> 28 px"},
        {"benchmark": "Fashion-MNIST prepare_datasets cached run", "value": total / cached, "unit": "images/s",
         "seconds": cached, "note": "most of it is datasets listing the 70k files"},
        {"benchmark": "Fashion-MNIST random batches of 256 from Arrow", "value": len(order) / reading,
         "unit": "images/s", "seconds": reading, "note": "memory-mapped, torch format"},
    ]


def bench_data(args: argparse.Namespace) -> list[Row]:
    return bench_preprocessing(args) + bench_augmentation(args) + bench_fashion_mnist(args)


def bench_models(args: argparse.Namespace) -> list[Row]:
    """Our ViT vs transformers' and timm's (benchmarks/models.py); its full tables go to
    models.md / models.json / models.png next to benchmark.md."""
    results = model_benchmark.run_from_args(args, Path(args.output_dir), prefix="models_")
    rows = []
    for cell in results["cells"]:
        if not cell["model"].startswith("ours"):
            continue
        best_peer = min(cell["speedup"], key=cell["speedup"].get)
        rows.append({
            "benchmark": f"{cell['model']} {cell['shape']} {cell['mode']} {cell['dtype']}",
            "value": cell["images_per_s"], "unit": "images/s",
            "note": f"{cell['speedup'][best_peer]:.2f}x the best peer ({best_peer}); "
                    f"{cell['utilisation']:.0%} of the matmul peak",
        })
    return rows


def bench_loop(args: argparse.Namespace) -> list[Row]:
    """The whole training loop on Fashion-MNIST (reading Arrow, augmentation, step, logging) as a user runs it.

    Runs `vit-finetune train` with the recipe for N and then 2N steps in subprocesses; the difference of the
    two training times cancels the fixed costs (start-up, the evaluation at the stop, the first slow steps).
    """
    import subprocess

    if not args.fashion_mnist_dir:
        print("loop section skipped: pass --fashion_mnist_dir (output of prepare_fashion_mnist.py)", file=sys.stderr)
        return []

    def run(steps: int, precision: str) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as output_dir:
            command = [
                sys.executable, "-m", "vit_finetune.train", "--config", args.loop_config,
                "--train_dir", os.path.join(args.fashion_mnist_dir, "train"),
                "--test_dir", os.path.join(args.fashion_mnist_dir, "test"),
                "--output_dir", output_dir, "--max_steps", str(steps), "--eval_strategy", "no",
                "--checkpointing_steps", "100000", "--mixed_precision", precision, "--max_eval_samples", "256",
            ]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as handle:
                metrics = json.load(handle)
            with open(os.path.join(output_dir, "training_args.json"), encoding="utf-8") as handle:
                batch = json.load(handle)["per_device_train_batch_size"]
        return metrics["train_runtime_s"], batch

    rows = []
    for precision in ("bf16", "no"):
        short, batch = run(args.loop_steps, precision)
        long, _ = run(2 * args.loop_steps, precision)
        rows.append({"benchmark": f"training loop, {args.loop_config}, mixed_precision={precision}",
                     "value": args.loop_steps * batch / max(long - short, 1e-9), "unit": "images/s",
                     "note": f"steps {args.loop_steps} to {2 * args.loop_steps}: data + augmentation + step"})
    return rows


# name -> function(args) -> rows. Other subsystems add their sections here.
SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "data": bench_data, "models": bench_models, "loop": bench_loop,
}


def to_markdown(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark ({results['machine']})", ""]
    for section, rows in results["sections"].items():
        lines += [f"## {section}", "", "| benchmark | value | unit | note |", "|---|---:|---|---|"]
        lines += [f"| {r['benchmark']} | {r['value']:.1f} | {r['unit']} | {r.get('note', '')} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS), help="sections to run")
    parser.add_argument("--output_dir", default="outputs/benchmark", help="where benchmark.md and benchmark.json go")
    parser.add_argument("--num_images", type=int, default=400, help="JPEGs in the preprocessing benchmark")
    parser.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="preprocessing processes")
    parser.add_argument("--repeats", type=int, default=30, help="timed augmentation batches per case")
    parser.add_argument("--device", default="cpu", help="device of the augmentation benchmark")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--fashion_mnist_dir", default=None, help="output of prepare_fashion_mnist.py, to time it too")
    parser.add_argument("--loop_config", default="configs/fashion_mnist.yaml", help="recipe of the loop section")
    parser.add_argument("--loop_steps", type=int, default=100, help="optimizer steps timed in the loop section")
    model_benchmark.add_arguments(parser, prefix="models_")  # --models_shapes, --models_repeats, ...
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    results: dict[str, Any] = {"machine": machine, "sections": {}}
    for name in args.only:
        print(f"running section {name} ...", file=sys.stderr)
        results["sections"][name] = SECTIONS[name](args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "benchmark.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    markdown = to_markdown(results)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
