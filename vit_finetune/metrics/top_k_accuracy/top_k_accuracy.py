"""Top-k accuracy: the fraction of samples whose reference label is among the k highest-scored classes.

The predictions are the class ids ranked by score (best first), at least k of them per sample; passing
ranked ids instead of all class scores keeps the data small when there are many classes.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-k accuracy: is the true label among the k best-scored classes?"
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): for each sample, class ids sorted by decreasing score.
    references (list of int): true class ids.
    k (int): how many of the ranked ids count; defaults to 5 (fewer if fewer ids are given).
Returns:
    top_k_accuracy (float): in [0, 1].
"""


class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=5):
        if len(predictions) == 0:
            raise ValueError("top-k accuracy of zero predictions is undefined")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        ranked = np.asarray(predictions)[:, :k]
        hits = (ranked == np.asarray(references)[:, None]).any(axis=1)
        return {"top_k_accuracy": float(hits.mean())}
