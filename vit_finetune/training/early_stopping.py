"""Early stopping (`--early_stopping_patience`, `--early_stopping_threshold`), as transformers'
EarlyStoppingCallback: stop once `patience` evaluations in a row have not improved `metric_for_best_model` by
more than `threshold` over the best value so far.

Its counters live in TrainerState (trainer_state.json), so a resumed run counts on from where it was killed.
"""

from __future__ import annotations

import logging
from typing import Any

from ..evaluation import LOWER_IS_BETTER

logger = logging.getLogger(__name__)


def improves(value: float, best: float | None, metric: str, threshold: float) -> bool:
    if best is None:
        return True
    gain = best - value if metric in LOWER_IS_BETTER else value - best
    return gain > threshold


def should_stop(state: Any, value: float, args: Any) -> bool:
    """Counts this evaluation (its value of the metric: the better of raw and EMA weights); True: stop now."""
    if args.early_stopping_patience is None:
        return False
    metric = args.metric_for_best_model
    if improves(value, state.patience_best, metric, args.early_stopping_threshold):
        state.patience_best, state.evaluations_without_improvement = value, 0
        return False
    state.evaluations_without_improvement += 1
    if state.evaluations_without_improvement < args.early_stopping_patience:
        return False
    state.stopped_early_at = state.global_step
    logger.info("early stopping at step %d: %s has not improved by more than %g for %d evaluations (best %.4f)",
                state.global_step, metric, args.early_stopping_threshold, args.early_stopping_patience,
                state.patience_best)
    return True
