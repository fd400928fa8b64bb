"""Accuracy: the fraction of predictions equal to the reference label.

Shipped inside vit-finetune so metrics work offline: loading it by its Hub name with evaluate.load downloads a script from
the Hub, `evaluate.load("<this folder>")` does not.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    sample_weight (list of float, optional): per-sample weights.
Returns:
    accuracy (float): in [0, 1].
"""


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(predictions) == 0:
            raise ValueError("accuracy of zero predictions is undefined")
        return {"accuracy": float(np.average(predictions == references, weights=sample_weight))}
