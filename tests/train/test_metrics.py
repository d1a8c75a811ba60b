import numpy as np
import pytest

from train.metrics import binary_metrics, classification_metrics, roc_auc


def test_multiclass_metrics():
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 3, 1], [1, 0, 2]], dtype=np.float32)
    y = np.array([0, 1, 2, 2])
    m = classification_metrics(logits, y)
    assert m["top1"] == 0.75 and m["top5"] == 1.0
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # F1 per class: 1, 2/3, 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_roc_auc_with_ties():
    scores = np.array([0.9, 0.8, 0.5, 0.5, 0.1])
    positive = np.array([True, False, True, False, False])
    # pairs (pos, neg): 0.9>all 3 -> 3; 0.5 vs 0.8 lose, vs 0.5 tie, vs 0.1 win -> 1.5
    assert roc_auc(scores, positive) == pytest.approx(4.5 / 6)


def test_far_frr_hter():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    y = np.array([1, 1, 0, 0])
    m = binary_metrics(probs, y, positive=1, threshold=0.5)
    assert m["far"] == 0.5 and m["frr"] == 0.5 and m["hter"] == 0.5
    assert "roc_auc" in classification_metrics(np.log(probs), y, binary_positive=1)
