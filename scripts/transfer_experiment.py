#!/usr/bin/env python
"""Transfer, shown: does a ViT pretrained on some Fashion-MNIST classes learn new classes from few images better
than the same ViT trained from scratch?

1. pretrain   on Fashion-MNIST classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat; all 30,000 training
              images, 10% held out for validation, a time budget of a few minutes);
2. fine-tune  that model folder on classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with `--shots` images per
              class (the new label set re-initialises the classification head);
3. scratch    the same architecture, the same 5 x `--shots` images and the same fine-tuning recipe, random init;

both 500-image runs at each setting of a small grid, `--learning_rates` x `--layer_decays` (the same grid for both
starts; each keeps the setting with the best validation accuracy), then both are evaluated on the full 5-9 test
split (5,000 images); the report also compares the two starts setting by setting. Validation uses
another `--shots` training images per class, disjoint from the fine-tuning images; the test split is never used
for any choice. Writes `report.md` and `report.json` in `--work_dir` (and `--report_md` / `--report_json`).

    python scripts/transfer_experiment.py --data_dir /tmp/fmnist --work_dir /tmp/transfer

The data folders hold symlinks to the PNGs of `--data_dir` (written by scripts/prepare_fashion_mnist.py). Each run
is a plain `vit-finetune train` command, printed before it starts, so any step can be rerun by hand.

Fine-tuning methods (docs/finetuning.md): `--methods full,lora,linear_probe,staged` fine-tunes the pretrained
model with each (same grid, each keeps its best validation setting) and adds a table of them; `--seeds 42,43,44`
repeats the few-shot part with other image draws and training seeds (one pretraining, with the first seed) and
reports each method's mean and spread over the seeds:

    python scripts/transfer_experiment.py --methods full,lora,linear_probe,staged --seeds 42,43,44
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vit_finetune import ViTConfig

REPO = Path(__file__).resolve().parent.parent
CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
SOURCE_CLASSES = CLASS_NAMES[:5]
TARGET_CLASSES = CLASS_NAMES[5:]
# The model's fields: the scratch run takes those of the pretraining config (a fine-tuning run cannot change
# them: they come with the pretrained weights).
ARCHITECTURE_KEYS = frozenset(inspect.signature(ViTConfig.__init__).parameters) - {"self", "kwargs"}
# `--methods`: the flags each fine-tuning method adds to the recipe (docs/finetuning.md). The recipe has 40 epochs:
# staged unfreezing trains the head alone for the first 5.
METHODS = {
    "full": [],
    "lora": ["--finetune", "lora", "--lora_r", "16", "--lora_alpha", "16"],
    "linear_probe": ["--finetune", "linear_probe"],
    "staged": ["--freeze_epochs", "5"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/fashion_mnist",
                        help="Fashion-MNIST as train/<class>/*.png and test/<class>/*.png")
    parser.add_argument("--work_dir", default="outputs/transfer", help="subset folders, model folders, report")
    parser.add_argument("--pretrain_config", default=str(REPO / "configs/fashion_mnist_pretrain_0to4.yaml"))
    parser.add_argument("--finetune_config", default=str(REPO / "configs/fashion_mnist_fewshot_5to9.yaml"),
                        help="the recipe of both 500-image runs (fine-tune and scratch)")
    parser.add_argument("--shots", type=int, default=100, help="training images per target class")
    parser.add_argument("--seed", type=int, default=42, help="picks the few-shot images; also the training seed")
    parser.add_argument("--pretrain_minutes", type=float, default=None,
                        help="override the pretraining config's max_train_minutes")
    parser.add_argument("--pretrain_epochs", type=float, default=None,
                        help="override the pretraining config's num_train_epochs")
    parser.add_argument("--learning_rates", type=lambda v: v.split(","), default="3e-4,1e-3,3e-3",
                        help="comma-separated; each start (pretrained, scratch) is trained at each one and keeps "
                             "the one with the best validation accuracy")
    parser.add_argument("--layer_decays", type=lambda v: v.split(","), default="1.0",
                        help="comma-separated layer-wise learning-rate decays (1.0 = off) crossed with the rates")
    parser.add_argument("--reuse_runs", action="store_true",
                        help="keep any 500-image run whose folder already has metrics.json (same flags assumed)")
    parser.add_argument("--skip_pretrain", action="store_true",
                        help="reuse WORK_DIR/pretrain_0to4 from an earlier run")
    parser.add_argument("--report_md", default=None, help="also write the Markdown report here")
    parser.add_argument("--report_json", default=None, help="also write the JSON report here")
    parser.add_argument("--methods", type=lambda v: v.split(","), default="full",
                        help=f"comma-separated fine-tuning methods of the pretrained start: {', '.join(METHODS)} "
                             "(full is always run: the comparison with scratch is its)")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="comma-separated seeds: the few-shot runs are repeated for each (the pretraining uses "
                             "the first); overrides --seed")
    parser.add_argument("--pretrained_dir", default=None,
                        help="fine-tune this model folder instead of pretraining one (skips step 1)")
    parser.add_argument("extra", nargs="*", help="flags passed on to the two 500-image runs (after --)")
    return parser.parse_args()


def pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def link_files(files: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for source in files:
        link = target / source.name
        if not link.exists():
            os.symlink(source.resolve(), link)


def build_subsets(data_dir: Path, root: Path, shots: int, seed: int) -> dict[str, Path]:
    """Image folders of symlinks: pretraining train/test (classes 0-4), few-shot train/val/test (classes 5-9)."""
    folders = {name: root / name for name in ("pretrain_train", "pretrain_test", "fewshot_train", "fewshot_val",
                                              "fewshot_test")}
    marker = root / ".complete.json"
    wanted = {"data_dir": str(data_dir.resolve()), "shots": shots, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folders
    for folder in folders.values():
        if folder.exists():
            for path in sorted(folder.rglob("*"), reverse=True):
                path.unlink() if not path.is_dir() else path.rmdir()
            folder.rmdir()
    rng = random.Random(seed)
    for name in SOURCE_CLASSES:
        link_files(pngs(data_dir / "train" / name), folders["pretrain_train"] / name)
        link_files(pngs(data_dir / "test" / name), folders["pretrain_test"] / name)
    for name in TARGET_CLASSES:
        files = pngs(data_dir / "train" / name)
        picked = rng.sample(files, 2 * shots)
        link_files(picked[:shots], folders["fewshot_train"] / name)
        link_files(picked[shots:], folders["fewshot_val"] / name)
        link_files(pngs(data_dir / "test" / name), folders["fewshot_test"] / name)
    marker.write_text(json.dumps(wanted))
    return folders


def train(args: list[str], log: Path) -> dict:
    command = [sys.executable, "-m", "vit_finetune.cli", "train", *args]
    print("\n$ vit-finetune train " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.time()
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if result.returncode:
        sys.exit(f"training failed (exit {result.returncode}); see {log}:\n" + "".join(log.read_text().splitlines(True)[-20:]))
    output_dir = Path(args[args.index("--output_dir") + 1])
    metrics = json.loads((output_dir / "metrics.json").read_text())
    metrics["wall_s"] = round(wall, 1)
    test = metrics.get("test", {})
    print(f"  done in {wall / 60:.1f} min (training {metrics['train_runtime_s'] / 60:.1f} min, "
          f"{metrics['epochs']:.1f} epochs); validation {100 * metrics['eval']['accuracy']:.2f}%"
          + (f", test {100 * test['accuracy']:.2f}% on {test['samples']} images" if test else ""), flush=True)
    return metrics


def summary(metrics: dict) -> dict:
    keep = ("epochs", "global_step", "train_runtime_s", "wall_s", "best_step")
    return {"test": metrics.get("test"), "validation": metrics["eval"], **{k: metrics.get(k) for k in keep}}


def main() -> None:
    args = parse_args()
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        sys.exit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    args.methods = ["full", *[m for m in args.methods if m != "full"]]
    seeds = args.seeds or [args.seed]
    reports = []
    for index, seed in enumerate(seeds):
        args.seed = seed
        if index:  # one pretraining serves every seed
            args.pretrained_dir = args.pretrained_dir or str(Path(args.work_dir).resolve() / "pretrain_0to4")
        reports.append(run_seed(args, Path(args.work_dir).resolve() / f"seed{seed}" if len(seeds) > 1 else None))
    if len(seeds) > 1:
        write_seed_summary(args, seeds, reports, Path(args.work_dir).resolve())


def write_seed_summary(args: argparse.Namespace, seeds: list[int], reports: list[dict], work: Path) -> None:
    """Each method's test accuracy over the seeds: mean, standard deviation and the values."""
    import statistics

    rows, summary_json = [], {}
    for name in ["scratch", *(method_tag(m) for m in args.methods)]:
        values = [100 * r["methods"][name]["test"]["accuracy"] for r in reports]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary_json[name] = {"test_accuracy_mean": round(statistics.mean(values), 2),
                              "test_accuracy_std": round(spread, 2), "test_accuracy": [round(v, 2) for v in values]}
        rows.append(f"| {name} | {statistics.mean(values):.2f}% ± {spread:.2f} | "
                    + ", ".join(f"{v:.2f}" for v in values) + " |")
    text = "\n".join([f"# Transfer to classes 5-9, {args.shots} images per class: fine-tuning methods over "
                      f"{len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
                      "| start / method | test accuracy (mean ± std) | per seed |", "|---|---|---|", *rows, "",
                      "Each seed draws other few-shot images and trains with that seed; one pretraining (the first "
                      "seed's) serves all. Per-seed reports: `seed<N>/report.md`.", ""])
    (work / "methods_report.md").write_text(text)
    (work / "methods_report.json").write_text(json.dumps({"seeds": seeds, "methods": summary_json}, indent=2) + "\n")
    print("\n" + text)


def method_tag(method: str) -> str:
    return "finetune" if method == "full" else f"finetune_{method}"


def run_seed(args: argparse.Namespace, seed_dir: Path | None) -> dict:
    """The experiment for one seed; returns its report. `seed_dir`: where its few-shot runs go (None: work_dir)."""
    data_dir, work = Path(args.data_dir).resolve(), Path(args.work_dir).resolve()
    for split in ("train", "test"):
        missing = [c for c in CLASS_NAMES if not (data_dir / split / c).is_dir()]
        if missing:
            sys.exit(f"{data_dir / split} lacks {missing}: run scripts/prepare_fashion_mnist.py --output_dir {data_dir}")
    work.mkdir(parents=True, exist_ok=True)
    experiment_start = time.time()
    runs_dir = seed_dir or work
    runs_dir.mkdir(parents=True, exist_ok=True)
    folders = build_subsets(data_dir, runs_dir / "data", args.shots, args.seed)
    print(f"subsets in {runs_dir / 'data'}: pretraining on {', '.join(SOURCE_CLASSES)}; "
          f"{args.shots} images per class of {', '.join(TARGET_CLASSES)}", flush=True)

    pretrain_config = yaml.safe_load(Path(args.pretrain_config).read_text())
    architecture = [f"--{k}={v}" for k, v in pretrain_config.items() if k in ARCHITECTURE_KEYS]
    seed = ["--seed", str(args.seed)]
    pretrained = work / "pretrain_0to4"
    pretrain_args = ["--config", args.pretrain_config, "--train_dir", str(folders["pretrain_train"]),
                     "--test_dir", str(folders["pretrain_test"]), "--output_dir", str(pretrained),
                     "--overwrite_output_dir", *seed]
    if args.pretrain_minutes is not None:
        pretrain_args += ["--max_train_minutes", str(args.pretrain_minutes)]
    if args.pretrain_epochs is not None:
        pretrain_args += ["--num_train_epochs", str(args.pretrain_epochs)]
    if args.pretrained_dir:
        pretrained = Path(args.pretrained_dir).resolve()
        print(f"\nfine-tuning {pretrained}", flush=True)
        pretrain = json.loads((pretrained / "metrics.json").read_text())
    elif args.skip_pretrain and (pretrained / "metrics.json").exists():
        print(f"\nreusing {pretrained}", flush=True)
        pretrain = json.loads((pretrained / "metrics.json").read_text())
    else:
        pretrain = train(pretrain_args, work / "pretrain_0to4.log")

    fewshot = ["--config", args.finetune_config, "--train_dir", str(folders["fewshot_train"]),
               "--validation_dir", str(folders["fewshot_val"]), "--test_dir", str(folders["fewshot_test"]),
               "--overwrite_output_dir", *seed]
    starts = {method_tag(m): ["--model_name_or_path", str(pretrained), *METHODS[m]] for m in args.methods}
    starts["scratch"] = architecture
    runs: dict[str, list[dict]] = {name: [] for name in starts}
    for name, start_flags in starts.items():
        for layer_decay in args.layer_decays:
            for lr in args.learning_rates:
                tag = f"{name}_5to9_lr{lr}" + (f"_ld{layer_decay}" if float(layer_decay) != 1.0 else "")
                if args.reuse_runs and (runs_dir / tag / "metrics.json").exists():
                    print(f"\nreusing {runs_dir / tag}", flush=True)
                    metrics = json.loads((runs_dir / tag / "metrics.json").read_text())
                else:
                    metrics = train([*fewshot, *start_flags, "--learning_rate", lr, "--layer_decay", layer_decay,
                                     "--output_dir", str(runs_dir / tag), *args.extra], runs_dir / f"{tag}.log")
                runs[name].append({"learning_rate": float(lr), "layer_decay": float(layer_decay),
                                   "output_dir": str(runs_dir / tag), **summary(metrics)})
    # Each start gets the same tuning budget: the setting with the best validation accuracy (never the test);
    # ties go to the gentler setting.
    chosen = {name: max(candidates, key=lambda r: (r["validation"]["accuracy"], -r["learning_rate"], r["layer_decay"]))
              for name, candidates in runs.items()}
    finetune, scratch = chosen["finetune"], chosen["scratch"]

    gain = 100 * (finetune["test"]["accuracy"] - scratch["test"]["accuracy"])
    # Setting by setting (same learning rate and layer decay): how often, and by how much, the pretrained start wins.
    paired = [(f, s) for f in runs["finetune"] for s in runs["scratch"]
              if (f["learning_rate"], f["layer_decay"]) == (s["learning_rate"], s["layer_decay"])]
    paired_gains = [100 * (f["test"]["accuracy"] - s["test"]["accuracy"]) for f, s in paired]
    report = {
        "data_dir": str(data_dir),
        "source_classes": SOURCE_CLASSES,
        "target_classes": TARGET_CLASSES,
        "shots_per_class": args.shots,
        "seed": args.seed,
        "pretrain_config": args.pretrain_config,
        "finetune_config": args.finetune_config,
        "learning_rates": [float(lr) for lr in args.learning_rates],
        "layer_decays": [float(ld) for ld in args.layer_decays],
        "paired_gains_points": [round(g, 2) for g in paired_gains],
        "extra_flags": args.extra,
        "pretrain": summary(pretrain),
        "finetune": finetune,
        "scratch": scratch,
        "all_runs": runs,
        "methods": chosen,
        "gain_points": round(gain, 2),
        "experiment_wall_s": round(time.time() - experiment_start, 1),
    }

    def pct(m: dict | None) -> str:
        return f"{100 * m['accuracy']:.2f}%" if m else "-"

    n_test = finetune["test"]["samples"]
    pretrain_images = sum(len(pngs(d)) for d in folders["pretrain_train"].iterdir())
    lines = [
        "# Transfer: pretrain on Fashion-MNIST classes 0-4, learn classes 5-9 from "
        f"{args.shots} images per class",
        "",
        f"Test split of classes 5-9: {n_test} images. Seed {args.seed}. "
        f"Whole experiment: {report['experiment_wall_s'] / 60:.1f} min wall time.",
        "",
        "| run | start | training images | learning rate | layer decay | epochs | train min | val accuracy | "
        "test accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| pretrain (classes 0-4) | random | {pretrain_images} (10% held out for validation) | - | - | "
        f"{pretrain['epochs']:.2f} | {pretrain['train_runtime_s'] / 60:.1f} | {pct(pretrain['eval'])} | "
        f"{pct(pretrain.get('test'))} (0-4 test) |",
        *[f"| **{label} (classes 5-9)** | {start} | {5 * args.shots} | {r['learning_rate']:g} | {r['layer_decay']:g} | "
          f"{r['epochs']:.0f} | {r['train_runtime_s'] / 60:.1f} | {pct(r['validation'])} | **{pct(r['test'])}** |"
          for label, start, r in (("fine-tune", "pretrained on 0-4", finetune), ("scratch", "random", scratch))],
        "",
        f"The pretrained start is {gain:+.2f} points on the test split. Setting by setting (same learning rate and "
        f"layer decay) it is ahead in {sum(g > 0 for g in paired_gains)} of {len(paired_gains)}, by "
        f"{sum(paired_gains) / max(len(paired_gains), 1):+.2f} points on average.",
        "",
        f"Each start's setting is chosen on the validation images ({args.shots} more per class, disjoint from "
        "the training images) among all the runs below; the test split is only reported.",
        "",
        "| learning rate | layer decay | pretrained: val | pretrained: test | scratch: val | scratch: test | "
        "test gain |",
        "|---|---|---|---|---|---|---|",
        *[f"| {f['learning_rate']:g} | {f['layer_decay']:g} | {pct(f['validation'])} | {pct(f['test'])} | "
          f"{pct(s['validation'])} | {pct(s['test'])} | {g:+.2f} |" for (f, s), g in zip(paired, paired_gains)],
        "",
        *method_lines(args, chosen),
        f"Recipes: `{os.path.relpath(args.pretrain_config, REPO)}` (pretraining), "
        f"`{os.path.relpath(args.finetune_config, REPO)}` (all {5 * args.shots}-image runs, identical but for the start, the "
        "learning rate and the layer decay)" + (f", plus `{' '.join(args.extra)}`" if args.extra else "") + ".",
        "",
    ]
    text = "\n".join(lines)
    (runs_dir / "report.md").write_text(text)
    (runs_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for path, content in ((args.report_md, text), (args.report_json, json.dumps(report, indent=2) + "\n")):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
    print("\n" + text)
    return report


def method_lines(args: argparse.Namespace, chosen: dict[str, dict]) -> list[str]:
    """The table of the fine-tuning methods (only when more than full fine-tuning was run)."""
    if args.methods == ["full"]:
        return []

    def pct(m: dict | None) -> str:
        return f"{100 * m['accuracy']:.2f}%" if m else "-"

    lines = ["Fine-tuning methods of the pretrained start (`--methods`; each keeps its best validation setting):", "",
             "| method | flags | learning rate | layer decay | train min | val accuracy | test accuracy |",
             "|---|---|---|---|---|---|---|"]
    for method in args.methods:
        r = chosen[method_tag(method)]
        lines.append(f"| {method} | `{' '.join(METHODS[method]) or '-'}` | {r['learning_rate']:g} | "
                     f"{r['layer_decay']:g} | {r['train_runtime_s'] / 60:.1f} | {pct(r['validation'])} | "
                     f"**{pct(r['test'])}** |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
