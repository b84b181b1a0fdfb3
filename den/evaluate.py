"""Evaluation as in the DEN paper: per-task test AUROC (scikit-learn), macro over outputs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc_score(y, proba) -> float:
    """AUROC of probabilities (n, k) against labels y: (n,) class ids / 0-1 labels, or (n, k)
    0/1 targets. One output: the usual binary AUROC. k outputs: the mean over outputs of the
    one-vs-rest AUROC (macro); outputs whose class is absent or universal in y are skipped, as
    their AUROC is undefined. NaN if no output can be scored."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be (n, k), got shape {proba.shape}")
    y = np.asarray(y)
    n, k = proba.shape
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} rows but proba has {n}")
    if y.ndim == 1:
        if k == 1:
            Y = y.reshape(-1, 1)
        else:
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"labels must be in 0..{k - 1}")
            Y = np.zeros((n, k), dtype=np.int8)
            Y[np.arange(n), y.astype(np.int64)] = 1
    else:
        if y.shape[1] != k:
            raise ValueError(f"y has {y.shape[1]} columns but proba has {k}")
        Y = y
    positives = Y.sum(axis=0)
    valid = (positives > 0) & (positives < n)
    if not valid.any():
        return float("nan")
    # one call for all outputs: scikit-learn's macro average over the scorable columns
    return float(roc_auc_score(Y[:, valid], proba[:, valid], average="macro"))


def auroc(model, tasks, split="test") -> np.ndarray:
    """Per-task AUROC of `model` on `tasks` (a list of den.datasets.Task): entry j scores task j
    (model task id j) on its `split` set ("test", "val" or "train"); NaN for tasks the model has
    not learned yet."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
    out = np.full(len(tasks), np.nan)
    for j, task in enumerate(tasks):
        if j >= model.n_tasks:
            break
        X, y = getattr(task, f"X_{split}"), getattr(task, f"y_{split}")
        out[j] = auroc_score(y, model.predict_proba(X, j))
    return out
