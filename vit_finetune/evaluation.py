"""Evaluation: the metrics of a model on a dataset split, used every epoch by training and by `vit-finetune eval`
(`vit_finetune/evaluate.py`, the command); it imports neither of them.

Metrics are `evaluate` modules shipped inside the package (see `vit_finetune/metrics/`), so nothing is fetched
from the network: accuracy, top-5 accuracy and macro F1, plus the mean cross-entropy loss (the model's own
`classification_loss`, as in training). With several processes every one evaluates its shard and
`accelerator.gather_for_metrics` collects the results, dropping the samples that were duplicated to even out the
last batch, so every image counts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .modeling_vit import classification_loss

TOP_K = 5
METRIC_KEYS = ("accuracy", "top5_accuracy", "f1_macro", "loss", "samples")
# Metrics where lower is better when used as --metric_for_best_model.
LOWER_IS_BETTER = {"loss"}


class MetricSuite:
    """The toolkit's metrics, loaded once (from the package, no network) and computed from gathered arrays."""

    def __init__(self) -> None:
        from .metrics import load_metric

        self.accuracy = load_metric("accuracy")
        self.top_k_accuracy = load_metric("top_k_accuracy")
        self.f1 = load_metric("f1")

    def compute(self, ranked: np.ndarray, references: np.ndarray, losses: np.ndarray) -> dict[str, float | int]:
        """`ranked`: (N, k) class ids by decreasing score; `references`: (N,); `losses`: (N,) per-sample CE."""
        predictions = ranked[:, 0]
        return {
            "accuracy": self.accuracy.compute(predictions=predictions, references=references)["accuracy"],
            "top5_accuracy": self.top_k_accuracy.compute(predictions=ranked, references=references, k=TOP_K)[
                "top_k_accuracy"
            ],
            "f1_macro": self.f1.compute(predictions=predictions, references=references, average="macro")["f1"],
            "loss": float(losses.mean()),
            "samples": int(len(references)),
        }


@dataclass
class EvalOutput:
    metrics: dict[str, float | int]
    predictions: np.ndarray  # (N,) top-1 class ids
    references: np.ndarray  # (N,)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataloader: Any,
    accelerator: Any,
    metrics: MetricSuite,
    *,
    mean: list[float],
    std: list[float],
) -> EvalOutput:
    """Runs `model` over a (prepared) dataloader of uint8 `pixel_values` and int64 `labels` on every process.

    Returns the same metrics on every process (each holds the gathered predictions of all of them).
    """
    from .data import normalize

    was_training = model.training
    model.eval()
    ranked_parts, reference_parts, loss_parts = [], [], []
    for batch in dataloader:
        images = normalize(batch["pixel_values"], mean, std)
        labels = batch["labels"]
        logits = model(pixel_values=images).logits.float()
        losses = classification_loss(logits, labels, "single_label_classification", reduction="none")
        ranked = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices
        # gather_for_metrics drops the duplicates that padded the last batch: each sample counts once.
        ranked, labels, losses = accelerator.gather_for_metrics((ranked, labels, losses))
        ranked_parts.append(ranked.cpu())
        reference_parts.append(labels.cpu())
        loss_parts.append(losses.cpu())
    model.train(was_training)
    if not reference_parts:
        raise ValueError("the evaluation split is empty")
    ranked = torch.cat(ranked_parts).numpy()
    references = torch.cat(reference_parts).numpy()
    losses = torch.cat(loss_parts).numpy()
    return EvalOutput(metrics.compute(ranked, references, losses), ranked[:, 0], references)


def per_class_metrics(predictions: np.ndarray, references: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class, by name (0 where a class was never predicted or present,
    as scikit-learn's zero_division=0): what accuracy and macro F1 hide when classes are unbalanced."""
    num_classes = len(labels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [true, predicted]
    np.add.at(confusion, (np.asarray(references, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted, present = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(hits, present, out=np.zeros(num_classes), where=present > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(num_classes), where=total > 0)
    return {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(present[i])} for i, label in enumerate(labels)}


def format_metrics(metrics: dict[str, Any]) -> str:
    return (
        f"accuracy {100 * metrics['accuracy']:.2f}% | top-5 {100 * metrics['top5_accuracy']:.2f}% | "
        f"macro F1 {metrics['f1_macro']:.4f} | loss {metrics['loss']:.4f} | {metrics['samples']} images"
    )
