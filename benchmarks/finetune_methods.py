"""Fine-tuning methods benchmark: what full fine-tuning, LoRA and a linear probe cost, with and without gradient
checkpointing, on a ViT-B/16-shaped model at 224 px (random init: cost does not depend on the weights); and the
accuracy of the weight EMA on vs off for the from-scratch Fashion-MNIST recipe.

    python -m benchmarks.finetune_methods                       # the cost table (~10 min on 2 CPU cores)
    python -m benchmarks.finetune_methods --device cuda --batch_size 64
    python -m benchmarks.finetune_methods --ema --seeds 42,43,44 # EMA on vs off, 6 runs of configs/fashion_mnist.yaml
    python -m benchmarks.finetune_methods --tiny                 # a seconds-long check that it all runs

The cost table: trainable parameters, peak memory of one training step (forward, cross-entropy, backward, AdamW
over the trainable parameters) and its median time, each cell built with the training code's own set-up
(`training.lora.add_adapters`, `training.model.enable_gradient_checkpointing`, `training.optim.build_optimizer`).
Cells are timed interleaved (round-robin over the repeats) and the median kept, as in benchmarks/models.py.
Writes `finetune_methods.md` and `.json` (and `ema.md`/`.json` with --ema) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.models import peak_step_memory, synchronize

REPO = Path(__file__).resolve().parent.parent
VIT_B16 = dict(image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
               num_attention_heads=12, intermediate_size=3072)
TINY = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128)
METHODS = ("full", "lora", "linear_probe")


def build_cell(method: str, checkpointing: bool, shape: dict, num_labels: int, lora_r: int,
               device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model and optimizer of one cell, set up as `vit-finetune train` sets them up."""
    from vit_finetune import ViTConfig, ViTForImageClassification
    from vit_finetune.training.lora import add_adapters
    from vit_finetune.training.model import enable_gradient_checkpointing
    from vit_finetune.training.optim import build_optimizer

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**shape, num_labels=num_labels))
    if method == "linear_probe":
        for parameter in model.vit.parameters():
            parameter.requires_grad_(False)
    if checkpointing:
        enable_gradient_checkpointing(model)
    if method == "lora":
        lora_args = SimpleNamespace(lora_r=lora_r, lora_alpha=lora_r, lora_dropout=0.0,
                                    lora_target_modules=["attention.qkv", "attention.proj"],
                                    lora_modules_to_save=["classifier"], model_name_or_path="random-init",
                                    model_revision=None)
        model = add_adapters(model, lora_args)
    optim_args = SimpleNamespace(learning_rate=1e-4, weight_decay=0.05, adam_beta1=0.9, adam_beta2=0.999,
                                 adam_epsilon=1e-8, layer_decay=None)
    model.to(device).train()
    if method == "linear_probe":
        model.vit.eval()  # as training runs a frozen backbone
    return model, build_optimizer(model, optim_args)


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, shape: dict, batch_size: int,
              num_labels: int, bf16: bool, device: torch.device) -> Callable[[], None]:
    pixels = torch.randn(batch_size, shape["num_channels"], shape["image_size"], shape["image_size"], device=device)
    labels = torch.randint(0, num_labels, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(pixel_values=pixels).logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_costs(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    shape = TINY if args.tiny else VIT_B16
    batch_size = args.batch_size or (2 if args.tiny else 8 if device.type == "cpu" else 64)
    cells = [(m, c) for m in METHODS for c in (False, True)]
    steps, results = {}, {}
    for method, checkpointing in cells:
        model, optimizer = build_cell(method, checkpointing, shape, args.num_labels, args.lora_r, device)
        step = make_step(model, optimizer, shape, batch_size, args.num_labels, args.bf16, device)
        for _ in range(args.warmup):
            step()
        key = f"{method}{' + checkpointing' if checkpointing else ''}"
        results[key] = {
            "method": method, "gradient_checkpointing": checkpointing,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "parameters": sum(p.numel() for p in model.parameters()),
            "peak_memory_mib": round(peak_step_memory(step, device), 1),
            "times_s": [],
        }
        steps[key] = step
        print(f"built {key}: {results[key]['trainable_parameters']:,} trainable, "
              f"{results[key]['peak_memory_mib']:.0f} MiB", flush=True)
    for _ in range(args.repeats):  # interleaved: a neighbour's load hits every cell alike
        for key, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            results[key]["times_s"].append(time.perf_counter() - start)
    for cell in results.values():
        cell["step_ms"] = round(1000 * statistics.median(cell["times_s"]), 1)
        cell["images_per_s"] = round(batch_size / statistics.median(cell["times_s"]), 1)
    return {"shape": shape, "batch_size": batch_size, "device": str(device), "bf16": args.bf16,
            "lora_r": args.lora_r, "repeats": args.repeats, "torch": torch.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "cells": results}


def costs_markdown(report: dict) -> str:
    full = report["cells"]["full"]
    lines = [f"# Fine-tuning methods: cost of one training step ({report['device']}, batch {report['batch_size']}, "
             f"{'bf16 autocast' if report['bf16'] else 'fp32'}, {report['torch']})", "",
             f"Shape: {report['shape']}. LoRA r={report['lora_r']} on attention.qkv and attention.proj, head in full. "
             f"Median of {report['repeats']} interleaved steps. {report['machine']}.", "",
             "| method | gradient checkpointing | trainable parameters | peak memory (MiB) | step (ms) | "
             "images/s | memory vs full | time vs full |", "|---|---|---|---|---|---|---|---|"]
    for cell in report["cells"].values():
        lines.append(f"| {cell['method']} | {'on' if cell['gradient_checkpointing'] else 'off'} | "
                     f"{cell['trainable_parameters']:,} ({100 * cell['trainable_parameters'] / cell['parameters']:.2f}%) "
                     f"| {cell['peak_memory_mib']:.1f} | {cell['step_ms']:.1f} | {cell['images_per_s']:.1f} | "
                     f"{cell['peak_memory_mib'] / max(full['peak_memory_mib'], 1e-9):.2f}x | "
                     f"{cell['step_ms'] / full['step_ms']:.2f}x |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# EMA on vs off for the from-scratch recipe: real `vit-finetune train` runs


def run_ema(args: argparse.Namespace, out: Path) -> dict:
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        for ema in (None, args.ema_decay):
            folder = out / "ema_runs" / f"seed{seed}_{'ema' if ema else 'raw'}"
            command = [sys.executable, "-m", "vit_finetune.cli", "train", "--config", args.ema_config,
                       "--output_dir", str(folder), "--overwrite_output_dir", "--seed", str(seed),
                       *(["--ema_decay", str(ema)] if ema else []), *shlex.split(args.ema_extra)]
            print("$ " + " ".join(shlex.quote(c) for c in command[2:]), flush=True)
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"training failed:\n{result.stderr[-3000:]}")
            metrics = json.loads((folder / "metrics.json").read_text())
            split = "test" if "test" in metrics else "eval"
            runs.append({"seed": seed, "ema_decay": ema, "exported_weights": metrics.get("exported_weights"),
                         "split": split, "accuracy": metrics[split]["accuracy"],
                         "train_runtime_s": metrics["train_runtime_s"]})
            print(f"  {split} accuracy {100 * runs[-1]['accuracy']:.2f}% (exported {runs[-1]['exported_weights']})",
                  flush=True)
    return {"config": args.ema_config, "extra": args.ema_extra, "ema_decay": args.ema_decay, "seeds": seeds,
            "runs": runs}


def ema_markdown(report: dict) -> str:
    lines = [f"# Weight EMA on vs off: `{report['config']}` {report['extra']}", "",
             "| EMA | accuracy (mean ± std) | per seed | exported weights | train min (mean) |", "|---|---|---|---|---|"]
    for ema in (None, report["ema_decay"]):
        runs = [r for r in report["runs"] if r["ema_decay"] == ema]
        values = [100 * r["accuracy"] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {'off' if ema is None else f'decay {ema}'} | {statistics.mean(values):.2f}% ± {spread:.2f} | "
                     + ", ".join(f"{v:.2f}" for v in values) + " | "
                     + ", ".join(str(r["exported_weights"]) for r in runs) + " | "
                     f"{statistics.mean(r['train_runtime_s'] for r in runs) / 60:.1f} |")
    split = report["runs"][0]["split"] if report["runs"] else "test"
    return "\n".join(lines + ["", f"Accuracy on the {split} split of the exported model of each run.", ""])


def tiny_ema_config(out: Path) -> str:
    """A seconds-long stand-in for configs/fashion_mnist.yaml: 3 classes of coloured images, a 2-block ViT."""
    import numpy as np
    from PIL import Image

    data = out / "tiny_images"
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("validation", 3), ("test", 3)):
        for index, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
            folder = data / split / f"class{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(-30, 30, (16, 16, 3))
                Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    config = out / "tiny_ema.yaml"
    lines = [f"train_dir: {data / 'train'}", f"validation_dir: {data / 'validation'}", f"test_dir: {data / 'test'}",
             *(f"{k}: {v}" for k, v in {**TINY, "image_size": 16, "patch_size": 4}.items()),
             "num_train_epochs: 2", "per_device_train_batch_size: 4", "learning_rate: 3.0e-3", "logging_steps: 2"]
    config.write_text("\n".join(lines) + "\n")
    return str(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 8 on the CPU, 64 on a GPU")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as mixed_precision bf16)")
    parser.add_argument("--num_labels", type=int, default=10)
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per cell (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per cell first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--ema", action="store_true", help="run the EMA on vs off comparison instead")
    parser.add_argument("--ema_config", default=str(REPO / "configs/fashion_mnist.yaml"))
    parser.add_argument("--ema_decay", type=float, default=0.9998)
    parser.add_argument("--ema_extra", default="", help="more train flags for every EMA run, one string")
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated seeds of the EMA comparison")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model (and, with --ema, a tiny dataset and recipe, one seed): checks it runs")
    parser.add_argument("--out", default="outputs/benchmark", help="folder for the reports")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.ema:
        if args.tiny:
            args.ema_config, args.seeds, args.ema_decay = tiny_ema_config(out), args.seeds.split(",")[0], 0.9
        report, text, name = run_ema(args, out), None, "ema"
        text = ema_markdown(report)
    else:
        if args.tiny:
            args.repeats, args.warmup = min(args.repeats, 2), 1
        report, name = run_costs(args), "finetune_methods"
        text = costs_markdown(report)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
