#!/usr/bin/env python
"""Recipe sweep: how accurate is each variant of the Fashion-MNIST recipe after its epochs, and what would those
epochs cost on this CPU?

The 15-minute budget of configs/fashion_mnist.yaml allows a handful of full CPU runs a day, too few to choose a
recipe by trying. Accuracy after a given number of epochs does not depend on the machine, so this script trains
the variants where epochs are cheap (a GPU) and, on the CPU that will run the recipe, times a short run of each.
Every run is a real `vit-finetune train` run of the base recipe with the variant's overrides: validation is the
recipe's held-out split (it picks the exported checkpoint); the test accuracy is reported, never used to choose.

    python scripts/prepare_fashion_mnist.py --output_dir data/fashion_mnist      # the PNG folders, once
    # every variant trained, accuracy per epoch (GPU; --jobs processes share it)
    python scripts/recipe_sweep.py accuracy --variants configs/sweeps/fashion_mnist.yaml --out sweep --jobs 4
    # CPU images/s of each variant's training loop (run on the idle CPU machine)
    python scripts/recipe_sweep.py speed --variants configs/sweeps/fashion_mnist.yaml --out sweep
    python scripts/recipe_sweep.py report --variants configs/sweeps/fashion_mnist.yaml --out sweep

A variants file maps a name to overrides of configs/fashion_mnist.yaml (any `vit-finetune train` option). Flags
after `--` go to every run (e.g. `-- --use_cpu --cache_dir /tmp/cache`). Writes `<out>/configs/<name>.yaml`
(`vit-finetune train --config` reruns a variant by hand), `<out>/runs/<name>/` (its model folder: metrics.json
has the validation accuracy of every epoch and the test accuracy), `<out>/speed.json`, and `report` joins them
into `<out>/sweep.md`. Running `accuracy` again continues every variant from its newest checkpoint, so an
interrupted sweep picks up where it stopped; `--fresh` starts them again.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
# Settings that change the numbers a step computes with, not what it costs: variants that differ only in these
# share one timing.
SPEED_NEUTRAL = ("num_train_epochs", "learning_rate", "weight_decay", "label_smoothing_factor", "warmup_ratio",
                 "lr_scheduler_type", "seed", "train_val_split")
EVAL_IMAGES_WHEN_TIMING = 100  # the timed window holds one evaluation: keep it small


def load_variants(path: str, base_path: str, data_dir: str, only: list[str] | None) -> dict[str, dict[str, Any]]:
    base = yaml.safe_load(Path(base_path).read_text())
    # Accuracy after N epochs must not depend on how fast the machine is: no time budget unless a variant asks.
    base.pop("max_train_minutes", None)
    data = Path(data_dir).resolve()
    base.update(train_dir=str(data / "train"), test_dir=str(data / "test"))
    variants = yaml.safe_load(Path(path).read_text())
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            sys.exit(f"--only: no variant named {', '.join(unknown)} in {path}")
        variants = {name: variants[name] for name in only}
    return {name: {**base, **(overrides or {})} for name, overrides in sorted(variants.items())}


def write_config(out: Path, name: str, recipe: dict[str, Any]) -> Path:
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**recipe, "output_dir": str((out / "runs" / name).resolve())}, sort_keys=False))
    return path


def run_accuracy(args: argparse.Namespace, variants: dict[str, dict], extra: list[str]) -> int:
    names = list(variants)
    if args.jobs > 1 and args.shard is None:  # one process per shard, sharing the device
        # A `timeout` around the sweep stops this process: the shards must stop with it, not train on.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        procs = [subprocess.Popen([sys.executable, __file__, *args.own_argv, "--shard", str(i), "--", *extra])
                 for i in range(args.jobs)]
        try:
            return max(p.wait() for p in procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
    from vit_finetune.train import main as train_main

    failed = []
    for name in names if args.shard is None else names[args.shard::args.jobs]:
        config = write_config(args.out, name, variants[name])
        start = "--overwrite_output_dir" if args.fresh else "--resume_from_checkpoint=latest"
        print(f"\n== {name}: vit-finetune train --config {config} {start} {' '.join(extra)}", flush=True)
        if train_main(["--config", str(config), start, *extra]) != 0:
            failed.append(name)
            continue
        metrics = json.loads((args.out / "runs" / name / "metrics.json").read_text())
        print(f"== {name}: {metrics['epochs']:g} epochs, validation {100 * metrics['eval']['accuracy']:.2f}%, "
              f"test {100 * metrics['test']['accuracy']:.2f}%", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def time_loop(config: Path, steps: int, extra: list[str]) -> dict[str, float]:
    """A real `vit-finetune train` run of 2 x `steps` steps on the CPU, timed between its evaluations at `steps`
    and 2 x `steps`: start-up, data preparation and the first (slow) steps fall outside. The window holds `steps`
    steps (reading, augmentation, forward, backward, optimizer, logging), one checkpoint and one small evaluation.

    A fresh process per run, as a user's run is: one run's allocations would shape the next one's speed.
    """
    with tempfile.TemporaryDirectory(prefix="sweep-speed-") as output_dir:
        flags = ["--config", str(config), "--output_dir", output_dir, "--use_cpu", "--max_steps", str(2 * steps),
                 "--eval_strategy", "steps", "--eval_steps", str(steps), "--checkpointing_steps", str(2 * steps),
                 "--max_eval_samples", str(EVAL_IMAGES_WHEN_TIMING), *extra]
        result = subprocess.run([sys.executable, "-m", "vit_finetune.cli", "train", *flags], capture_output=True,
                                text=True)
        if result.returncode:
            sys.exit(f"timed run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        folder = Path(output_dir)
        metrics = json.loads((folder / "metrics.json").read_text())
        arguments = json.loads((folder / "training_args.json").read_text())
    first, last = metrics["history"][0], metrics["history"][-1]
    if (first["step"], last["step"]) != (steps, 2 * steps):
        sys.exit(f"expected evaluations at steps {steps} and {2 * steps}, got {[h['step'] for h in metrics['history']]}")
    seconds_per_step = (last["elapsed_s"] - first["elapsed_s"]) / steps
    images_per_step = (arguments["per_device_train_batch_size"] * arguments["gradient_accumulation_steps"]
                       * metrics["num_processes"])
    return {"images_per_s": images_per_step / seconds_per_step, "seconds_per_step": seconds_per_step}


def run_speed(args: argparse.Namespace, variants: dict[str, dict], extra: list[str]) -> int:
    """CPU images/s of each distinct training loop (variants differing only in SPEED_NEUTRAL settings share one)."""
    results: dict[str, dict[str, float]] = {}
    timed: dict[str, str] = {}  # what a step costs depends on -> the variant timed for it
    for name, recipe in variants.items():
        key = json.dumps({k: v for k, v in recipe.items() if k not in SPEED_NEUTRAL}, sort_keys=True)
        if key in timed:
            results[name] = results[timed[key]]
            print(f"{name:28s} as {timed[key]}", flush=True)
            continue
        timed[key] = name
        results[name] = {**time_loop(write_config(args.out, name, recipe), args.steps, extra), "timed_as": name}
        print(f"{name:28s} {results[name]['images_per_s']:7.1f} img/s (training loop, steps {args.steps} to "
              f"{2 * args.steps})", flush=True)
    (args.out / "speed.json").write_text(json.dumps(results, indent=1))
    return 0


def run_report(args: argparse.Namespace, variants: dict[str, dict], extra: list[str]) -> int:
    """sweep.md: per finished variant its exported model's validation and test accuracy, the epoch that model comes
    from, and the CPU minutes its training steps would take (per-epoch evaluations not included)."""
    speed_path = args.out / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else {}
    lines = ["| variant | epochs | best epoch | val % | test % | CPU img/s (loop) | est. CPU min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    unfinished = []
    for name in variants:
        metrics_path = args.out / "runs" / name / "metrics.json"
        if not metrics_path.exists():
            unfinished.append(name)
            continue
        metrics = json.loads(metrics_path.read_text())
        best = next((h["epoch"] for h in metrics["history"] if h["step"] == metrics["best_step"]), None)
        timing = speed.get(name)
        rate = f"{timing['images_per_s']:.0f}" if timing else "-"
        minutes = f"{metrics['global_step'] * timing['seconds_per_step'] / 60:.1f}" if timing else "-"
        lines.append(f"| {name} | {metrics['epochs']:g} | {f'{best:g}' if best is not None else '-'} | "
                     f"{100 * metrics['eval']['accuracy']:.2f} | {100 * metrics['test']['accuracy']:.2f} | "
                     f"{rate} | {minutes} |")
    if unfinished:
        lines += ["", f"Not finished (no metrics.json): {', '.join(unfinished)}."]
    text = "\n".join(lines) + "\n"
    (args.out / "sweep.md").write_text(text)
    print(text)
    return 0


def main() -> int:
    argv = sys.argv[1:]
    # Split by hand: argparse cannot take a positional mode and pass-through flags after `--` together.
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("accuracy", "speed", "report"))
    parser.add_argument("--variants", required=True, help="YAML: name -> overrides of --base")
    parser.add_argument("--base", default=str(REPO / "configs/fashion_mnist.yaml"))
    parser.add_argument("--data_dir", default="data/fashion_mnist",
                        help="Fashion-MNIST as train/ and test/ class folders (scripts/prepare_fashion_mnist.py)")
    parser.add_argument("--out", type=Path, default=Path("outputs/sweep"))
    parser.add_argument("--jobs", type=int, default=1, help="accuracy: processes sharing the device")
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help="accuracy: start every variant again")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    parser.add_argument("--steps", type=int, default=100, help="speed: timed steps per distinct training loop")
    args = parser.parse_args(own)
    args.own_argv = own
    args.out.mkdir(parents=True, exist_ok=True)
    variants = load_variants(args.variants, args.base, args.data_dir, args.only)
    return {"accuracy": run_accuracy, "speed": run_speed, "report": run_report}[args.mode](args, variants, extra)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
