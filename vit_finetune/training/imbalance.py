"""Unbalanced classes: inverse-frequency class weights in the training loss (`--class_weights balanced`).

The balanced sampler, the other remedy, is `sampling.BalancedSampler`. Evaluation losses stay unweighted, so
eval_loss means the same with and without this option.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


logger = logging.getLogger(__name__)


def class_counts(labels: Any, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def balanced_class_weights(labels: Any, num_classes: int) -> torch.Tensor:
    """n / (num_classes * n_c) for each class c (scikit-learn's "balanced"); 0 for a class with no images."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    if (counts == 0).any():
        logger.warning("class_weights balanced: %d class(es) have no training image (weight 0)",
                       int((counts == 0).sum()))
    return torch.tensor(weights, dtype=torch.float32)


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor, *,
                  label_smoothing: float) -> torch.Tensor:
    """The cross-entropy of `classification_loss` (in float32), weighted per class. Hard labels:
    sum_i w_{y_i} l_i / sum_i w_{y_i}, as torch defines it; soft targets (mixup/cutmix): the mean over images of
    sum_c w_c p_ic (-log q_ic)."""
    return F.cross_entropy(logits.float(), targets.float() if targets.is_floating_point() else targets,
                           weight=class_weights, label_smoothing=label_smoothing)
