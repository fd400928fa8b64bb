"""scripts/recipe_sweep.py: trains recipe variants with the real training pieces, times them, joins the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from image_fixtures import write_idx
from training_fixtures import run_python

# No flips: they would swap the classes of the synthetic data below.
COMMON = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
          "conv_stem_channels": 8, "num_train_epochs": 4, "per_device_train_batch_size": 16, "hflip": False,
          "learning_rate": 3e-3}
TINY_VARIANTS = {
    # 28 px, 2 stages (4x4 patches) and 32 px, 3 stages with a deeper stem (8x8 patches): both resize paths.
    "tiny28": {**COMMON, "image_size": 28, "patch_size": 4, "conv_stem_depth": 1},
    "tiny32": {**COMMON, "image_size": 32, "patch_size": 8, "conv_stem_depth": 2},
}



def write_fashion_mnist_like(folder: Path) -> None:
    """10 classes told apart by which of 10 regions is bright, so that 4 short epochs beat chance by far."""
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


def test_sweep_trains_times_and_reports(tmp_path: Path) -> None:
    idx, out, variants = tmp_path / "idx", tmp_path / "sweep", tmp_path / "variants.yaml"
    write_fashion_mnist_like(idx)
    variants.write_text(yaml.safe_dump(TINY_VARIANTS))
    common = ["scripts/recipe_sweep.py", "--variants", str(variants), "--out", str(out)]

    result = run_python([*common[:1], "accuracy", *common[1:], "--idx_dir", str(idx), "--device", "cpu"])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in TINY_VARIANTS:
        run = json.loads((out / f"accuracy_{name}.json").read_text())
        assert [e["epoch"] for e in run["curve"]] == [1, 2, 3, 4]
        assert run["recipe"]["image_size"] == TINY_VARIANTS[name]["image_size"]  # overrides the base recipe
        # 360 training / 40 validation images (a stratified 10%), 100 test images; well above chance (10%).
        assert run["curve"][-1]["validation"] > 0.3 and run["curve"][-1]["test"] > 0.3

    result = run_python([*common[:1], "speed", *common[1:], "--steps", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads((out / "speed.json").read_text())
    assert set(speed) == set(TINY_VARIANTS) and all(v > 0 for v in speed.values())

    result = run_python([*common[:1], "report", *common[1:]])
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "sweep.md").read_text()
    assert "| tiny28 | 4 |" in table and "| tiny32 | 4 |" in table
