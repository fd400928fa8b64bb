"""Tiny datasets and tiny models for the training, evaluation and prediction tests.

Everything is written by the tests: 3 classes of coloured 40x30 images (image_fixtures.CLASS_COLOURS),
resized to 16x16 by the data pipeline, and a ViT with hidden size 32 and 2 layers, so that a full
`vit-finetune train` run takes a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from image_fixtures import write_class_folder
from safetensors.torch import load_file

CLASSES = ("cat", "dog", "fox")
REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = {
    "image_size": 16,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def write_dataset(root: Path, train_per_class: int = 8, validation_per_class: int = 3,
                  test_per_class: int = 3) -> Path:
    """root/{train,validation,test}/<class>/<i>.png|jpg; 9 validation and 9 test images by default (an odd
    number, so that two processes need a padded last batch and gather_for_metrics must drop it)."""
    write_class_folder(root / "train", CLASSES, per_class=train_per_class, start_seed=0)
    write_class_folder(root / "validation", CLASSES, per_class=validation_per_class, start_seed=1000)
    write_class_folder(root / "test", CLASSES, per_class=test_per_class, start_seed=2000)
    return root


def tiny_args(data: Path, output_dir: Path, **overrides) -> list[str]:
    """Command-line arguments of a tiny training run: 24 training images, batches of 4, 2 epochs."""
    values = {
        "train_dir": data / "train",
        "validation_dir": data / "validation",
        "test_dir": data / "test",
        "output_dir": output_dir,
        **TINY_MODEL,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 3e-3,
        "num_train_epochs": 2,
        "warmup_steps": 1,
        "logging_steps": 2,
        "hflip": "false",
        "random_resized_crop_min_scale": 1.0,
        "seed": 7,
    }
    values.update(overrides)
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        argv += [f"--{key}", str(value)]
    return argv


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    return env


def run_python(args: list[str], timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(), cwd=REPO, **kwargs)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"
