"""A tiny "trained" model folder laid out as docs/CONTRACTS.md says training leaves it.

Until `vit_finetune.train` exists this builds the folder by hand: a real (random-weight) tiny model saved with
`save_pretrained` (so the remote-code files and `auto_map` are the real ones), its image processor, and a
`metrics.json` / `training_args.json` / `training_curves.png` following the contract. To switch to a real run,
replace the body of `make_trained_folder` with a call to the training entry point on a tiny dataset; the tests
only rely on the folder layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LABELS = ["cat", "dog", "bird"]

METRICS = {
    "eval": {"accuracy": 0.8125, "top5_accuracy": 1.0, "f1_macro": 0.8012, "loss": 0.5234, "samples": 48},
    "test": {"accuracy": 0.7917, "top5_accuracy": 1.0, "f1_macro": 0.7788, "loss": 0.5611, "samples": 48},
    "best_metric": "accuracy",
    "best_step": 30,
    "epochs": 3.0,
    "global_step": 36,
    "train_runtime_s": 12.5,
    "train_samples_per_second": 46.1,
    "num_processes": 1,
    "dataset": "tiny-shapes",
    "base_model": None,
    "history": [
        {"step": 12, "epoch": 1.0, "train_loss": 1.05, "eval_accuracy": 0.52, "elapsed_s": 4.1},
        {"step": 24, "epoch": 2.0, "train_loss": 0.74, "eval_accuracy": 0.71, "elapsed_s": 8.3},
        {"step": 36, "epoch": 3.0, "train_loss": 0.55, "eval_accuracy": 0.8125, "elapsed_s": 12.5},
    ],
}

TRAINING_ARGS = {
    "learning_rate": 0.001, "per_device_train_batch_size": 16, "num_train_epochs": 3, "weight_decay": 0.05,
    "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "seed": 0, "output_dir": "outputs/tiny",
    "hub_token": "hf_should_never_appear_in_a_card",
}



def save_tiny_model(folder: Path) -> None:
    """A real vit-finetune model (image 32, patch 8, width 32, 2 layers, 2 heads, 3 named labels)."""
    import vit_finetune  # registers the classes for remote-code saving
    from transformers import ViTImageProcessor

    config = vit_finetune.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
    )
    vit_finetune.ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder)


def make_trained_folder(folder: Path, *, with_metrics: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_model(folder)
    if with_metrics:
        (folder / "metrics.json").write_text(json.dumps(METRICS, indent=2))
        (folder / "training_args.json").write_text(json.dumps(TRAINING_ARGS, indent=2))
        # A stand-in plot: enough to prove the card links it and the push uploads it.
        from PIL import Image

        Image.new("RGB", (64, 48), (40, 90, 200)).save(folder / "training_curves.png")
    return folder


@pytest.fixture(scope="session")
def trained_folder_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session (saving a model costs seconds); copy it before changing anything."""
    return make_trained_folder(tmp_path_factory.mktemp("tiny-trained") / "model")


@pytest.fixture
def trained_folder(trained_folder_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny trained model folder for one test."""
    import shutil

    return Path(shutil.copytree(trained_folder_template, tmp_path / "model"))
