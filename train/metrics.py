"""Classification metrics from logits, in numpy so every stage computes them the same way."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    recall = tp / np.maximum(cm.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = cm.sum(axis=1) > 0  # classes absent from y_true do not drag the mean down
    return float(f1[present].mean())


def top_k(logits: np.ndarray, y_true: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((topk == y_true[:, None]).any(axis=1).mean())


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U form of the area under the ROC curve (ties count one half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average the ranks of ties
        tie = allv == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def binary_metrics(probs: np.ndarray, y_true: np.ndarray, positive: int, threshold: float) -> dict:
    """FAR: negatives accepted as positive; FRR: positives rejected; HTER: their mean."""
    score = probs[:, positive]
    is_pos = y_true == positive
    accepted = score >= threshold
    far = float((accepted & ~is_pos).sum() / max((~is_pos).sum(), 1))
    frr = float((~accepted & is_pos).sum() / max(is_pos.sum(), 1))
    return {
        "roc_auc": roc_auc(score, is_pos),
        "threshold": threshold,
        "positive_class": positive,
        "far": far,
        "frr": frr,
        "hter": (far + frr) / 2,
    }


def classification_metrics(
    logits: np.ndarray,
    y_true: np.ndarray,
    binary_positive: int | None = None,
    threshold: float = 0.5,
) -> dict:
    num_classes = logits.shape[1]
    y_pred = logits.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    out = {
        "n": int(len(y_true)),
        "top1": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "top5": top_k(logits, y_true, 5),
        "macro_f1": macro_f1(cm),
        "confusion_matrix": cm.tolist(),
    }
    if num_classes == 2 and binary_positive is not None:
        out.update(binary_metrics(softmax(logits), y_true, binary_positive, threshold))
    return out
