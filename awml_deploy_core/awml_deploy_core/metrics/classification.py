"""Binary classification metrics of the calibration-status classifier, by scikit-learn.

scikit-learn is the well-kept reference implementation of these (accuracy, precision / recall / F1, ROC-AUC, the
confusion matrix): edge cases (no positives, constant scores, zero division) follow its documented rules instead of
our own. "Positive" is the class the vehicle must not miss: miscalibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class BinaryMetrics:
    count: int
    positives: int  # miscalibrated pairs
    accuracy: float
    precision: float  # of "miscalibrated"
    recall: float  # of "miscalibrated"
    f1: float
    roc_auc: float  # NaN when only one class is present
    false_alarm_rate: float  # calibrated pairs called miscalibrated
    confusion: list[list[int]]  # rows truth, columns prediction, order [miscalibrated, calibrated]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}


def binary_metrics(is_miscalibrated: Sequence[bool], predicted_miscalibrated: Sequence[bool],
                   miscalibrated_score: Sequence[float]) -> BinaryMetrics:
    """Truth, decisions and P(miscalibrated) per pair -> metrics for the positive class miscalibrated."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, precision_recall_fscore_support,
                                 roc_auc_score)

    y = np.asarray(is_miscalibrated, bool).astype(int)
    p = np.asarray(predicted_miscalibrated, bool).astype(int)
    s = np.asarray(miscalibrated_score, np.float64)
    if y.size == 0:
        nan = float("nan")
        return BinaryMetrics(0, 0, nan, nan, nan, nan, nan, nan, [[0, 0], [0, 0]])
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=[1], average=None, zero_division=0)
    # labels [1, 0]: rows/columns in the graph's order [miscalibrated, calibrated]
    cm = confusion_matrix(y, p, labels=[1, 0])
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else float("nan")
    negatives = int(cm[1].sum())
    far = float(cm[1, 0] / negatives) if negatives else float("nan")
    return BinaryMetrics(int(y.size), int(y.sum()), float(accuracy_score(y, p)), float(prec[0]), float(rec[0]),
                         float(f1[0]), auc, far, cm.astype(int).tolist())
