"""The two pictures every model folder carries: training curves and a confusion matrix (PNG, matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train loss and validation loss against steps, validation accuracy against steps and wall-clock minutes.

    `history` is metrics.json's list of evaluations: {"step", "epoch", "train_loss", "eval_accuracy",
    "eval_loss", "elapsed_s", ...}.
    """
    path = Path(path)
    steps = [h["step"] for h in history]
    figure, (loss_axis, step_axis, time_axis) = plt.subplots(1, 3, figsize=(15, 4))

    def series(key: str) -> tuple[list, list]:
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    for key, label in (("train_loss", "train loss"), ("eval_loss", "validation loss")):
        xs, ys = series(key)
        if xs:
            loss_axis.plot(xs, ys, marker="o", label=label)
    loss_axis.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    loss_axis.legend()

    xs, ys = series("eval_accuracy")
    step_axis.plot(xs, [100 * y for y in ys], marker="o", color="tab:green")
    step_axis.set(xlabel="optimizer step", ylabel="accuracy (%)", title="Validation accuracy")

    minutes = [h["elapsed_s"] / 60 for h in history if h.get("eval_accuracy") is not None]
    time_axis.plot(minutes, [100 * y for y in ys], marker="o", color="tab:purple")
    time_axis.set(xlabel="wall-clock minutes", ylabel="accuracy (%)", title="Validation accuracy vs time")

    for axis in (loss_axis, step_axis, time_axis):
        axis.grid(alpha=0.3)
    if steps:
        figure.suptitle(f"{len(history)} evaluations, {steps[-1]} steps")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def confusion_matrix(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as class j."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (np.asarray(references), np.asarray(predictions)), 1)
    return counts


def plot_confusion_matrix(
    predictions: np.ndarray, references: np.ndarray, labels: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (each true class sums to 100 %), with counts annotated when it is small."""
    path = Path(path)
    counts = confusion_matrix(predictions, references, len(labels))
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    size = max(5.0, 0.5 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="fraction of the true class")
    if len(labels) <= 30:
        axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if counts[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    axis.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axis.set_title(f"{title} accuracy {100 * accuracy:.2f} % on {counts.sum()} images".strip())
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
