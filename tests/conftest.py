"""Shared fixtures: small random nets and data for testing the core against its NumPy twin."""

import numpy as np
import pytest
from hypothesis import settings

from den import _core

# Property-based tests explore a fixed, seeded sequence of examples: the suite gives the same
# verdict on every run (no flakes in CI), and a failure reproduces.
settings.register_profile("den", derandomize=True, database=None, deadline=None)
settings.load_profile("den")


def make_net(n_input=12, widths=(9, 7), heads=(("sigmoid", 3),), seed=0, grow=None):
    """A small net with the given heads (all for task 0); `grow` = (counts, stamp) appends
    units born later (masked connections included), then a head for that task."""
    net = _core.Net(n_input, list(widths), seed=seed)
    for kind, k in heads:
        net.add_head(kind, k, 0, seed=seed + 1)
    if grow is not None:
        counts, stamp = grow
        net.add_units(list(counts), stamp, seed=seed + 2)
        net.add_head(heads[0][0], heads[0][1], stamp, seed=seed + 3)
    return net


def make_data(n, n_input, kind, k, seed=0):
    """Random inputs in [0, 1) and targets for a head of this kind."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_input), dtype=np.float32)
    labels = rng.integers(0, k, n)
    if kind == "softmax":
        return X, labels.astype(np.int32)
    if k == 1:
        return X, (labels[:, None] % 2).astype(np.float32)
    return X, np.eye(k, dtype=np.float32)[labels]


def same_state(a, b):
    """Bit-for-bit equality of two Net.get_state() dicts."""
    if a["n_input"] != b["n_input"] or len(a["layers"]) != len(b["layers"]) or len(a["heads"]) != len(b["heads"]):
        return False
    for la, lb in zip(a["layers"] + a["heads"], b["layers"] + b["heads"]):
        for key in ("W", "b", "mask", "stamp"):
            if la[key].shape != lb[key].shape or la[key].tobytes() != lb[key].tobytes():
                return False
    return True


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
