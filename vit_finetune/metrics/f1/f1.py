"""F1 score (harmonic mean of precision and recall), computed with scikit-learn.

`average="macro"` gives every class the same weight whatever its size, which is what a per-class
summary of an image classifier should show.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), averaged over classes."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    average (str): "macro" (default), "micro", "weighted" or "binary".
    labels (list of int, optional): the classes to average over (default: those that occur).
Returns:
    f1 (float): in [0, 1].
"""


class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="macro", labels=None):
        score = f1_score(references, predictions, average=average, labels=labels, zero_division=0)
        return {"f1": float(score)}
