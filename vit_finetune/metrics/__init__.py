"""Metric modules shipped with vit-finetune, loaded by path so they work without network access.

loading a metric by its Hub name (evaluate.load with "accuracy") downloads the metric script from the Hugging Face Hub and fails offline;
`evaluate.load(<folder>)` imports a local `<folder>/<folder name>.py` instead. Each folder here is such a
module and can be used on its own: `evaluate.load(metric_path("f1"))`.
"""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE = ("accuracy", "top_k_accuracy", "f1")


def metric_path(name: str) -> str:
    """The folder of the shipped metric module `name`."""
    if name not in AVAILABLE:
        raise ValueError(f"unknown metric {name!r}; shipped metrics are {AVAILABLE}")
    return str(METRICS_DIR / name)


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Loads a shipped metric module (no network). keep_in_memory avoids cache files shared by processes."""
    return evaluate.load(metric_path(name), keep_in_memory=True)
