#!/usr/bin/env python
"""Recipe sweep: how accurate is each variant of the Fashion-MNIST recipe after N epochs, and what would those
epochs cost on this CPU?

The 15-minute budget of configs/fashion_mnist.yaml allows a handful of full CPU runs a day, too few to choose a
recipe by trying. Accuracy after a given number of epochs does not depend on the machine, so this script trains
the variants where epochs are cheap (a GPU: the whole dataset lives on the device, no data loader) and, on the
CPU that will run the recipe, times one training step of each architecture. Both use the real pieces of
`vit-finetune train`: the model, `build_optimizer`, `compute_loss`, `BatchAugmentation`, the scheduler, bf16
autocast, gradient clipping. Validation is a stratified 10% of the training images (as the recipe's); the test
accuracy is reported, never used to choose.

    # accuracy per epoch of every variant (GPU; --jobs processes share it)
    python scripts/recipe_sweep.py accuracy --variants configs/sweeps/fashion_mnist.yaml --out sweep --jobs 4
    # CPU images/s of a training step of each variant's architecture (run on the idle CPU machine)
    python scripts/recipe_sweep.py speed --variants configs/sweeps/fashion_mnist.yaml --out sweep

A variants file maps a name to overrides of configs/fashion_mnist.yaml (model and training fields alike; one
sweep-only key, `train_on_validation: true`, trains on the validation images too).
Writes `<out>/accuracy_<name>.json` (one per variant: per-epoch validation and test accuracy) and
`<out>/speed.json`; `report` joins them into `<out>/sweep.md`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
from vit_finetune.train import ARCHITECTURE_FIELDS as MODEL_FIELDS  # noqa: E402


def load_variants(path: str, base_path: str) -> dict[str, dict[str, Any]]:
    base = yaml.safe_load(Path(base_path).read_text())
    variants = yaml.safe_load(Path(path).read_text())
    return {name: {**base, **(overrides or {})} for name, overrides in variants.items()}


def build_model(recipe: dict[str, Any]) -> torch.nn.Module:
    from vit_finetune import ViTConfig, ViTForImageClassification

    config = ViTConfig(num_labels=10, **{k: recipe[k] for k in MODEL_FIELDS if k in recipe})
    return ViTForImageClassification(config)


def training_pieces(model: torch.nn.Module, recipe: dict[str, Any], steps: int, device: torch.device):
    """The optimizer, scheduler and augmentation exactly as `vit-finetune train` builds them."""
    from transformers import get_scheduler

    from vit_finetune.data import BatchAugmentation, DataArguments
    from vit_finetune.train import build_optimizer

    data_fields = {f for f in DataArguments.__dataclass_fields__}
    data_args = DataArguments(**{k: v for k, v in recipe.items() if k in data_fields})
    args = argparse.Namespace(learning_rate=recipe["learning_rate"], weight_decay=recipe.get("weight_decay", 0.0),
                              adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
                              layer_decay=recipe.get("layer_decay"))
    optimizer = build_optimizer(model, args)
    warmup = math.ceil(recipe.get("warmup_ratio", 0.0) * steps)
    scheduler = get_scheduler(recipe.get("lr_scheduler_type", "linear"), optimizer, num_warmup_steps=warmup,
                              num_training_steps=steps)
    augment = BatchAugmentation(data_args, image_size=recipe["image_size"], num_channels=1, num_labels=10,
                                mean=[0.5], std=[0.5]).to(device)
    return optimizer, scheduler, augment


def load_fashion_mnist(idx_dir: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / validation (stratified 10% of train) / test as uint8 (N, 1, 28, 28) images and int64 labels."""
    from prepare_fashion_mnist import FILES, read_idx

    (train_images, train_labels), (test_images, test_labels) = (
        (read_idx(str(idx_dir / images_file)), read_idx(str(idx_dir / labels_file)))
        for images_file, labels_file in (FILES["train"], FILES["test"])
    )
    images, labels = train_images[:, None].copy(), train_labels.astype(np.int64)
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: (labels == c).sum() // 10] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), val)
    return {"train": (images[train], labels[train]), "validation": (images[val], labels[val]),
            "test": (test_images[:, None].copy(), test_labels.astype(np.int64))}


@torch.no_grad()
def accuracy(model, augment, images: torch.Tensor, labels: torch.Tensor, device_type: str) -> float:
    model.eval()
    augment.eval()
    correct = 0
    for start in range(0, len(labels), 1000):
        x, y = augment(images[start:start + 1000], labels[start:start + 1000])
        with torch.autocast(device_type, dtype=torch.bfloat16):
            correct += (model(pixel_values=x).logits.argmax(-1) == y).sum().item()
    model.train()
    augment.train()
    return correct / len(labels)


def train_variant(name: str, recipe: dict[str, Any], data: dict, device: torch.device, out: Path) -> None:
    from vit_finetune.train import compute_loss

    torch.manual_seed(recipe.get("seed", 42))
    split = {k: (torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for k, (x, y) in data.items()}
    if recipe.get("train_on_validation"):
        split["train"] = tuple(torch.cat([a, b]) for a, b in zip(split["train"], split["validation"]))
    size = recipe["image_size"]
    if size != 28:  # resized once, as the data pipeline resizes when it preprocesses (bilinear)
        split = {k: (torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear").round()
                     .clamp(0, 255).to(torch.uint8), y) for k, (x, y) in split.items()}
    images, labels = split["train"]
    batch = recipe["per_device_train_batch_size"]
    steps_per_epoch = math.ceil(len(labels) / batch)
    epochs = recipe["num_train_epochs"]
    model = build_model(recipe).to(device)
    optimizer, scheduler, augment = training_pieces(model, recipe, epochs * steps_per_epoch, device)
    curve, start = [], time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), device=device)
        for step in range(steps_per_epoch):
            index = order[step * batch:(step + 1) * batch]
            x, y = augment(images[index], labels[index])
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(pixel_values=x).logits
            loss = compute_loss(logits, y, recipe.get("label_smoothing_factor", 0.0))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.get("max_grad_norm", 1.0))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        curve.append({"epoch": epoch + 1, "loss": loss.item(),
                      "validation": accuracy(model, augment, *split["validation"], device.type),
                      "test": accuracy(model, augment, *split["test"], device.type)})
        print(f"{name:28s} epoch {epoch + 1:2d} loss {curve[-1]['loss']:.3f} val {curve[-1]['validation']:.4f} "
              f"test {curve[-1]['test']:.4f} ({time.time() - start:.0f} s)", flush=True)
    result = {"name": name, "recipe": recipe, "curve": curve, "seconds": time.time() - start,
              "parameters": sum(p.numel() for p in model.parameters()), "device": str(device)}
    (out / f"accuracy_{name}.json").write_text(json.dumps(result, indent=1))


def run_accuracy(args: argparse.Namespace, variants: dict[str, dict]) -> None:
    names = sorted(variants)
    if args.jobs > 1 and args.shard is None:  # one process per shard, sharing the device
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--shard", str(i)]) for i in range(args.jobs)]
        sys.exit(max(p.wait() for p in procs))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_fashion_mnist(Path(args.idx_dir))
    for name in names if args.shard is None else names[args.shard::args.jobs]:
        train_variant(name, variants[name], data, device, args.out)


def run_speed(args: argparse.Namespace, variants: dict[str, dict]) -> None:
    """CPU images/s of one bf16 training step per distinct architecture (median of `--steps`)."""
    from vit_finetune.train import compute_loss

    results, seen = {}, {}
    for name, recipe in sorted(variants.items()):
        key = json.dumps({k: recipe.get(k) for k in MODEL_FIELDS + ("per_device_train_batch_size",)}, sort_keys=True)
        if key in seen:
            results[name] = results[seen[key]]
            continue
        seen[key] = name
        torch.manual_seed(0)
        model = build_model(recipe)
        optimizer, _, augment = training_pieces(model, recipe, 100, torch.device("cpu"))
        batch = recipe["per_device_train_batch_size"]
        size = recipe["image_size"]
        images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8)
        labels = torch.randint(0, 10, (batch,))
        times = []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            x, y = augment(images, labels)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = compute_loss(model(pixel_values=x).logits, y, 0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 3:
                times.append(time.perf_counter() - start)
        results[name] = batch / float(np.median(times))
        print(f"{name:28s} {results[name]:7.1f} img/s (training step, bf16, batch {batch})", flush=True)
    (args.out / "speed.json").write_text(json.dumps(results, indent=1))


def run_report(args: argparse.Namespace, variants: dict[str, dict]) -> None:
    """sweep.md: per variant the final validation/test accuracy and the CPU minutes its epochs would take."""
    speed = json.loads((args.out / "speed.json").read_text()) if (args.out / "speed.json").exists() else {}
    lines = ["| variant | epochs | val % | test % | CPU img/s (step) | est. CPU min |", "|---|---:|---:|---:|---:|---:|"]
    for path in sorted(args.out.glob("accuracy_*.json")):
        result = json.loads(path.read_text())
        recipe, last = result["recipe"], result["curve"][-1]
        images = 60000 if recipe.get("train_on_validation") else 54000
        rate = speed.get(result["name"])
        minutes = f"{recipe['num_train_epochs'] * images / rate / 60 / args.loop_efficiency:.1f}" if rate else "-"
        lines.append(f"| {result['name']} | {recipe['num_train_epochs']} | {100 * last['validation']:.2f} | "
                     f"{100 * last['test']:.2f} | {rate or 0:.0f} | {minutes} |")
    text = "\n".join(lines) + "\n"
    (args.out / "sweep.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("accuracy", "speed", "report"))
    parser.add_argument("--variants", required=True, help="YAML: name -> overrides of --base")
    parser.add_argument("--base", default=str(REPO / "configs/fashion_mnist.yaml"))
    parser.add_argument("--out", type=Path, default=Path("outputs/sweep"))
    parser.add_argument("--idx_dir", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST IDX .gz files")
    parser.add_argument("--device", default=None)
    parser.add_argument("--jobs", type=int, default=1, help="accuracy: processes sharing the device")
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="speed: timed steps per architecture")
    parser.add_argument("--loop_efficiency", type=float, default=0.95,
                        help="report: whole-loop images/s over step images/s (the recipe: 1,137 in the loop with "
                             "evaluations vs 1,192 per step)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = load_variants(args.variants, args.base)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    {"accuracy": run_accuracy, "speed": run_speed, "report": run_report}[args.mode](args, variants)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
