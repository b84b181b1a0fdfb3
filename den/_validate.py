"""Checking what users hand to den, once, with the argument's name in every message.

Everything here converts user data into exactly what the C core accepts (float32 /
int32, C-contiguous) or raises. The core checks again (it trusts nobody), but its
messages cannot name the user's argument.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

HEADS = ("sigmoid", "softmax")


def inputs(X, name, n_features=None, min_rows=1):
    """X as a C-contiguous float32 (n, d) array; d must equal n_features when given."""
    try:
        arr = np.asarray(X)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a 2-d array of numbers: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows; at least {min_rows} needed")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, the model expects {n_features}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has no features")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]})"
                         + (" after conversion to float32" if np.isfinite(arr[tuple(bad)]) else ""))
    return out


def head_kind(head, name="head"):
    if head not in HEADS:
        raise ValueError(f"{name} must be one of {HEADS}, got {head!r}")
    return head


def labels(y, name, n_rows):
    """y as an integer or 0/1 array with n_rows rows (1-d labels or 2-d multi-label targets)."""
    try:
        arr = np.asarray(y)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of labels: {exc}") from None
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-d class labels or 2-d (n, k) targets, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the inputs have {n_rows}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 target columns")
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all():
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} holds a negative label ({arr.min()})")
        if arr.size and arr.max() >= MAX_UNITS:
            raise ValueError(f"{name} holds label {arr.max()}; a head has at most {MAX_UNITS} outputs")
    else:
        if not (np.issubdtype(arr.dtype, np.number)) or np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if not np.isfinite(arr).all() or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise ValueError(f"{name} must hold targets in [0, 1]")
    return arr


def infer_outputs(y, head):
    """Head width k for labels y: 2-d targets -> their columns; sigmoid on {0,1} labels -> 1;
    otherwise the number of classes (max label + 1, at least 2)."""
    if y.ndim == 2:
        return y.shape[1]
    top = int(y.max()) if y.size else 0
    if head == "sigmoid" and top <= 1:
        return 1
    return max(top + 1, 2)


def targets(y, name, head, k):
    """What the core trains on: float32 (n, k) for sigmoid heads, int32 (n,) for softmax."""
    if y.ndim == 2:
        if head == "softmax":
            raise ValueError(f"{name}: a softmax head takes 1-d class labels, got shape {y.shape}")
        if y.shape[1] != k:
            raise ValueError(f"{name} has {y.shape[1]} columns, the task's head has {k} outputs")
        return np.ascontiguousarray(y, dtype=np.float32)
    top = int(y.max()) if y.size else 0
    if head == "sigmoid" and k == 1:
        if top > 1:
            raise ValueError(f"{name}: a head with 1 sigmoid output takes labels 0/1, got label {top}")
        return np.ascontiguousarray(y.reshape(-1, 1), dtype=np.float32)
    if top >= k:
        raise ValueError(f"{name} holds label {top}, but the task's head has only {k} outputs (0..{k - 1})")
    if head == "softmax":
        return np.ascontiguousarray(y, dtype=np.int32)
    onehot = np.zeros((y.shape[0], k), dtype=np.float32)
    onehot[np.arange(y.shape[0]), y] = 1.0
    return onehot


#: Largest count the core takes for units per layer, head outputs and similar sizes.
MAX_UNITS = 2**24
#: Largest epoch count / batch size / seed-free integer the core's arguments take.
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**31 - 1


def number(value, name, *, low=None, high=None, low_open=False, integer=False):
    """A finite real (or integer) within bounds; returns it as float or int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if integer:
        if int(value) != value:
            raise TypeError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def widths(hidden, name="hidden"):
    try:
        out = tuple(hidden)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of layer widths, e.g. (312, 128)") from None
    if not out:
        raise ValueError(f"{name} needs at least one hidden layer")
    return tuple(number(w, f"{name}[{i}]", low=1, high=MAX_UNITS, integer=True) for i, w in enumerate(out))


def shape3(shape, name):
    """An image shape (channels, height, width) of positive ints."""
    try:
        out = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be (channels, height, width), got {shape!r}") from None
    if len(out) != 3:
        raise ValueError(f"{name} must be (channels, height, width), got {shape!r}")
    return tuple(number(v, f"{name}[{i}]", low=1, integer=True) for i, v in enumerate(out))


def conv_spec(conv):
    """None or a sequence of (filters, kernel, pool): returns a tuple of int triples."""
    if conv is None:
        return ()
    try:
        layers = [tuple(c) for c in conv]
    except TypeError:
        raise TypeError(f"conv must be a sequence of (filters, kernel, pool), got {conv!r}") from None
    out = []
    for i, c in enumerate(layers):
        if len(c) != 3:
            raise ValueError(f"conv[{i}] must be (filters, kernel, pool), got {c!r}")
        filters, kernel, pool = (number(v, f"conv[{i}]", low=1, high=MAX_UNITS, integer=True) for v in c)
        if kernel % 2 == 0:
            raise ValueError(f"conv[{i}]: kernel {kernel} must be odd ('same' padding)")
        out.append((filters, kernel, pool))
    return tuple(out)
