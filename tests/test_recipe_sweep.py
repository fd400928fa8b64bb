"""scripts/recipe_sweep.py: every variant is a real `vit-finetune train` run of the base recipe with its overrides;
`speed` times short real runs; `report` joins both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from image_fixtures import write_idx
from training_fixtures import run_python

# No flips: they would swap the classes of the synthetic data below.
TINY = {"image_size": 28, "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_stem_channels": 8, "conv_stem_depth": 1, "per_device_train_batch_size": 16,
        "hflip": False, "learning_rate": 3e-3, "num_train_epochs": 4}
VARIANTS = {
    "tiny": TINY,
    # Only the schedule differs: trained on its own, timed as "tiny".
    "tiny_short": {**TINY, "num_train_epochs": 3, "learning_rate": 1e-2},
    # Another architecture: timed on its own; not trained here (--only), so the report lists it as unfinished.
    "tiny_wide": {**TINY, "hidden_size": 64, "intermediate_size": 128},
}


def write_fashion_mnist_like(folder: Path) -> None:
    """10 classes told apart by which of 10 regions is bright, so that 3-4 short epochs beat chance by far."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, count in (("train", 400), ("t10k", 100)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, (count, 28, 28))
        for index, label in enumerate(labels):
            row, column = divmod(int(label), 5)
            images[index, row * 14:(row + 1) * 14, column * 5:(column + 1) * 5 + 3] += 190
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_sweep_trains_with_the_real_trainer_times_and_reports(tmp_path: Path) -> None:
    idx, data, out, variants = tmp_path / "idx", tmp_path / "data", tmp_path / "sweep", tmp_path / "variants.yaml"
    write_fashion_mnist_like(idx)
    result = run_python(["scripts/prepare_fashion_mnist.py", "--source_dir", str(idx), "--output_dir", str(data),
                         "--workers", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    variants.write_text(yaml.safe_dump(VARIANTS))
    common = ["--variants", str(variants), "--out", str(out), "--data_dir", str(data)]
    to_every_run = ["--", "--cache_dir", str(tmp_path / "cache")]

    result = run_python(["scripts/recipe_sweep.py", "accuracy", *common, "--only", "tiny", "tiny_short",
                         *to_every_run])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("tiny", "tiny_short"):
        run = out / "runs" / name
        metrics = json.loads((run / "metrics.json").read_text())
        epochs = VARIANTS[name]["num_train_epochs"]
        assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs + 1))  # evaluated every epoch
        # 360 training / 40 validation images (the recipe's stratified 10%), 100 test images; chance is 10%.
        assert metrics["eval"]["samples"] == 40 and metrics["test"]["samples"] == 100
        assert metrics["history"][-1]["eval_accuracy"] > 0.3 and metrics["test"]["accuracy"] > 0.3
        # The run took the base recipe, the variant's overrides and no time budget.
        arguments = json.loads((run / "training_args.json").read_text())
        assert arguments["learning_rate"] == VARIANTS[name]["learning_rate"] and arguments["hidden_size"] == 32
        assert arguments["weight_decay"] == 0.05 and arguments["max_train_minutes"] is None
    assert not (out / "runs" / "tiny_wide").exists()

    result = run_python(["scripts/recipe_sweep.py", "speed", *common, "--steps", "4", *to_every_run])
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads((out / "speed.json").read_text())
    assert set(speed) == set(VARIANTS) and speed["tiny_short"] == speed["tiny"]
    assert all(s["images_per_s"] > 0 for s in speed.values())
    # Variants that differ only in speed-neutral settings share one timing; another architecture gets its own.
    assert speed["tiny"]["timed_as"] == "tiny" and speed["tiny_wide"]["timed_as"] == "tiny_wide"

    result = run_python(["scripts/recipe_sweep.py", "report", *common])
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "sweep.md").read_text()
    tiny = json.loads((out / "runs" / "tiny" / "metrics.json").read_text())
    minutes = tiny["global_step"] * speed["tiny"]["seconds_per_step"] / 60
    assert "| tiny | 4 | " in table and f"| {100 * tiny['test']['accuracy']:.2f} | " in table
    assert f"| {speed['tiny']['images_per_s']:.0f} | {minutes:.1f} |" in table and "| tiny_short | 3 | " in table
    assert "Not finished (no metrics.json): tiny_wide." in table
