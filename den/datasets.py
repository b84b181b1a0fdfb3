"""Task sequences for lifelong learning: the data sets of the DEN paper, and where they come from.

``load(name, ...)`` returns a list of :class:`Task`, one per task, in training order.
No loader ever downloads anything: data is either bundled or read from files the user has.

Data sets (``NAMES``)
---------------------
``digits``
    scikit-learn's bundled ``load_digits()`` (1,797 8x8 images, 10 classes), pixels / 16.
    Always available; the default for quick runs and tests. ``n_tasks`` permuted 10-way tasks:
    task 0 keeps the pixels in place (identity permutation), task t > 0 applies a random
    permutation of the 64 pixels drawn from ``seed``. One stratified train/val/test split
    (default 60% / 10% / rest) is shared by all tasks.
``permuted-fashion-mnist``
    Fashion-MNIST IDX files (Debian package ``dataset-fashion-mnist``, ``DEN_DATA`` or ``path``).
    10 permuted 10-way tasks as above. Train and val (default 50,000 / 10,000) are disjoint
    stratified draws from the 60,000 training images; test is the 10,000 test images.
``permuted-mnist``
    The same from MNIST IDX files the user provides (``path`` or ``$DEN_DATA/mnist``).
``mnist-variation``
    The paper's MNIST-Variation, built here in the manner of Larochelle et al. (2007)'s
    mnist-rot-back-image: every image is rotated by a uniform random angle in [0, 360) degrees
    (``scipy.ndimage.rotate``, ``reshape=False``, ``order=1``, black outside) and composed with a
    background by the elementwise maximum ``x = max(rotated, background)``:
    ``background="image"`` (default; the reference code used the back-image variant): another
    image of the same split, turned by a random multiple of 90 degrees, possibly mirrored,
    circularly shifted and dimmed to half intensity; ``"noise"``: uniform [0, 1) noise per pixel
    (mnist-back-rand); ``"none"``: rotation only. Source ``"fashion-mnist"`` (default) or
    ``"mnist"``. As in the paper, 1,000 / 200 / 5,000 images per class for train / val / test,
    drawn without overlap from the union of the source's training and test images. Tasks are
    one-vs-rest: task c asks "is it class c?", y in {0, 1}.
``split-cifar100``
    The python-pickle CIFAR-100 files (``cifar-100-python/{train,test,meta}``). Task t holds the
    fine classes 10t..10t+9, relabelled 0..9, with 10 sigmoid outputs (one-vs-rest per class,
    as in the paper). Val is a seeded per-class fraction (default 10%) of the training images.
    The pickles are read by a restricted unpickler that builds NumPy arrays and nothing else.
``awa``
    Animals with Attributes features: ``features.npy`` + ``labels.npy`` (0-based labels), or
    AwA2's ``AwA2-features.txt`` + ``AwA2-labels.txt`` (1-based labels). Per class 30 train /
    30 val / the rest test (seeded); optional PCA to ``n_components`` (default 500, as in the
    paper) fitted on the training images only; then standardised with the training mean and
    standard deviation (so these features are not in [0, 1]). Tasks are one-vs-rest on the
    first ``n_tasks`` classes; the negatives come from all classes.

Where files are looked for (:func:`find_data`)
----------------------------------------------
If ``path`` is given, only there: the folder itself or its subfolder named after the data set
(``fashion-mnist``, ``mnist``, ``cifar-100-python``, ``awa``); an explicit path that does not hold
the files is an error, never silently replaced by another copy. Otherwise ``$DEN_DATA`` (itself,
then its subfolder), then for Fashion-MNIST the Debian folder ``/usr/share/datasets/fashion-mnist``.
Any file may also be gzipped (``name.gz``).

Sizes
-----
Whole-split sizes (``n_train``, ``n_val``, ``n_test`` of the permuted data sets): an ``int`` is a
count, a ``float`` in (0, 1] a fraction of the pool the split is drawn from (rounded down);
``None`` means "all that is left". Splits are stratified the way scikit-learn's
StratifiedShuffleSplit does it: each split takes from every class its proportional share of
what is left (largest remainder), so a split's class counts are within two images (the first
split: one image) of exactly proportional.
Per-class sizes (``n_train_per_class``, ``n_val_per_class``, ``n_test_per_class``, also
spelled ``per_class_train`` etc.) are image counts per class; a ``None`` test size means the rest.

Memory and sharing
------------------
Arrays of different tasks never share memory, except that the one-vs-rest data sets
(``mnist-variation``, ``awa``), whose tasks all see the same inputs, share one read-only
(``flags.writeable = False``) X array per split across tasks; their y arrays are per task.
Permuted data sets hold one copy per task: 10 Fashion-MNIST tasks take about 2.2 GB.

Randomness
----------
Every draw comes from ``numpy.random.SeedSequence(seed, spawn_key=(stream, index))``, one stream
per purpose, so the splits do not depend on ``n_tasks`` or the background kind, and task t's
permutation does not depend on how many tasks are loaded.
"""

from __future__ import annotations

import gzip
import inspect
import os
import pickle
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

__all__ = [
    "NAMES",
    "Task",
    "load",
    "find_data",
    "read_idx",
    "read_fashion_mnist",
    "read_mnist",
    "read_cifar100",
    "read_awa",
    "read_numpy_pickle",
    "UnsafePickleError",
]

NAMES = (
    "digits",
    "permuted-fashion-mnist",
    "permuted-mnist",
    "mnist-variation",
    "split-cifar100",
    "awa",
)
HEADS = ("sigmoid", "softmax")
DEFAULT_N_TASKS = 10

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))


# --------------------------------------------------------------------------------------------
# Task


@dataclass(frozen=True, eq=False, repr=False)
class Task:
    """One task of a sequence.

    X_* are float32, C-contiguous, shape (n, d) with d = prod(input_shape); rows are the C-order
    flattening of ``input_shape`` ((d,) for vectors, (C, H, W) for images). y_* are int64 (n,)
    class ids in [0, n_classes). ``n_outputs`` is the head width: the number of classes for
    multi-class tasks, 1 for a binary task with a sigmoid head, 2 for a binary task with softmax.
    ``classes`` names the label values 0, 1, ... (optional). The constructor checks all of this.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int
    head: str
    input_shape: tuple
    classes: tuple = ()

    @property
    def n_classes(self) -> int:
        """Number of distinct label values: 2 for a single sigmoid output, else n_outputs."""
        return 2 if self.n_outputs == 1 else self.n_outputs

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"Task {self.name!r}: head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.n_outputs, (int, np.integer)) or self.n_outputs < 1:
            raise ValueError(f"Task {self.name!r}: n_outputs must be a positive int")
        if self.head == "softmax" and self.n_outputs < 2:
            raise ValueError(f"Task {self.name!r}: a softmax head needs n_outputs >= 2")
        shape = self.input_shape
        if (not isinstance(shape, tuple) or not shape
                or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)):
            raise ValueError(f"Task {self.name!r}: input_shape must be a tuple of positive ints")
        d = int(np.prod(shape))
        for split in ("train", "val", "test"):
            X, y = getattr(self, "X_" + split), getattr(self, "y_" + split)
            where = f"Task {self.name!r}: X_{split}"
            if not isinstance(X, np.ndarray) or X.dtype != np.float32 or X.ndim != 2:
                raise ValueError(f"{where} must be a 2-D float32 ndarray")
            if not X.flags.c_contiguous:
                raise ValueError(f"{where} must be C-contiguous")
            if X.shape[1] != d:
                raise ValueError(f"{where} has {X.shape[1]} columns, input_shape "
                                 f"{self.input_shape} needs {d}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != X.shape[:1]:
                raise ValueError(f"Task {self.name!r}: y_{split} must be int64 of shape "
                                 f"({X.shape[0]},)")
            if X.shape[0] == 0:
                raise ValueError(f"{where} is empty")
            if y.min() < 0 or y.max() >= self.n_classes:
                raise ValueError(f"Task {self.name!r}: y_{split} must lie in "
                                 f"[0, {self.n_classes})")
        if self.classes and len(self.classes) != self.n_classes:
            raise ValueError(f"Task {self.name!r}: {len(self.classes)} class names for "
                             f"{self.n_classes} classes")

    def __repr__(self):
        shapes = (getattr(self, "X_" + s).shape for s in ("train", "val", "test"))
        sizes = ", ".join(f"{s}={n}x{d}" for s, (n, d) in zip(("train", "val", "test"), shapes))
        return (f"Task({self.name!r}, {sizes}, n_outputs={self.n_outputs}, "
                f"head={self.head!r}, input_shape={self.input_shape})")


# --------------------------------------------------------------------------------------------
# The public entry point


def load(name, n_tasks=None, seed=0, path=None, head="sigmoid", **sizes) -> list:
    """Load a task sequence: a list of ``n_tasks`` :class:`Task` (default 10).

    name: one of ``NAMES``. seed: non-negative int; the result is a deterministic function of
    it. path: folder holding the data files (see the module docstring); not used by ``digits``.
    head: "sigmoid" or "softmax"; recorded in each Task and decides n_outputs of binary tasks.
    sizes: data-set specific keywords (split sizes, ``source``, ``background``,
    ``n_components``, ``val_fraction``); unknown keywords raise TypeError.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(NAMES)}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if n_tasks is not None and (isinstance(n_tasks, bool)
                                or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1):
        raise ValueError(f"n_tasks must be a positive int (or None for the default), "
                         f"got {n_tasks!r}")
    loader = _LOADERS[name]
    accepted = _options(loader)
    for alias, canonical in _ALIASES.items():
        if alias in sizes and canonical in accepted:
            if canonical in sizes:
                raise TypeError(f"load({name!r}): give {canonical} or {alias}, not both")
            sizes[canonical] = sizes.pop(alias)
    unknown = sorted(set(sizes) - accepted)
    if unknown:
        raise TypeError(f"load({name!r}) got unexpected keyword argument(s): "
                        f"{', '.join(unknown)}; {name} accepts: "
                        f"{', '.join(sorted(accepted)) or '(none)'}")
    return loader(n_tasks=n_tasks, seed=int(seed), path=path, head=head, **sizes)


# --------------------------------------------------------------------------------------------
# Loaders: each takes n_tasks, seed, path, head plus its own keyword-only sizes.


def _load_digits(*, n_tasks, seed, path, head, n_train=0.6, n_val=0.1, n_test=None):
    if path is not None:
        raise ValueError("digits is bundled with scikit-learn and takes no path")
    from sklearn.datasets import load_digits

    n_tasks = _n_tasks(n_tasks, None)
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    n = _sizes(len(y), "digits images", n_train=n_train, n_val=n_val, n_test=n_test)
    i_train, i_val, i_test = _stratified_split(y, n, _rng(seed, _SPLIT))
    splits = (X[i_train], y[i_train], X[i_val], y[i_val], X[i_test], y[i_test])
    return _permuted_tasks("digits", splits, (1, 8, 8), DIGIT_CLASSES, n_tasks, seed, head)


def _load_permuted_idx(kind, name, *, n_tasks, seed, path, head,
                       n_train=None, n_val=10_000, n_test=None):
    n_tasks = _n_tasks(n_tasks, None)
    for value, key in ((n_train, "n_train"), (n_val, "n_val"), (n_test, "n_test")):
        _check_size(value, key)  # before the slow read
    X_pool, y_pool, X_test_pool, y_test_pool = _read_idx_dataset(kind, path)
    # Train and val come from the training images, test from the test images.
    n_tr, n_va = _sizes(len(y_pool), "training images", n_train=n_train, n_val=n_val)
    (n_te,) = _sizes(len(y_test_pool), "test images", n_test=n_test)
    i_train, i_val = _stratified_split(y_pool, [n_tr, n_va], _rng(seed, _SPLIT))
    (i_test,) = _stratified_split(y_test_pool, [n_te], _rng(seed, _TEST_SPLIT))
    splits = (_to_float(X_pool[i_train]), y_pool[i_train], _to_float(X_pool[i_val]),
              y_pool[i_val], _to_float(X_test_pool[i_test]), y_test_pool[i_test])
    classes = FASHION_MNIST_CLASSES if kind == "fashion-mnist" else DIGIT_CLASSES
    return _permuted_tasks(name, splits, (1,) + X_pool.shape[1:], classes, n_tasks, seed, head)


def _permuted_tasks(name, splits, input_shape, classes, n_tasks, seed, head):
    """Task 0 takes the given arrays as they are; task t > 0 gets fresh copies with the columns
    of every X permuted by one permutation drawn from (seed, t)."""
    d = splits[0].shape[1]
    tasks = []
    for t in range(n_tasks):
        if t == 0:
            arrays = splits
        else:
            perm = _rng(seed, _PERMUTE, t).permutation(d)
            # np.take along axis 1 writes a new C-contiguous array (X[:, perm] would not be).
            arrays = [np.take(a, perm, axis=1) if a.ndim == 2 else a.copy() for a in splits]
        tasks.append(Task(f"{name}/{t}", *arrays, n_outputs=len(classes), head=head,
                          input_shape=tuple(input_shape), classes=tuple(classes)))
    return tasks


_VARIATION_SOURCES = ("fashion-mnist", "mnist")
_BACKGROUNDS = ("image", "noise", "none")
_BACKGROUND_DIM = 0.5  # image backgrounds at half intensity so the rotated object stays visible


def _load_mnist_variation(*, n_tasks, seed, path, head, source="fashion-mnist",
                          background="image", n_train_per_class=1000, n_val_per_class=200,
                          n_test_per_class=5000):
    if source not in _VARIATION_SOURCES:
        raise ValueError(f"source must be one of {_VARIATION_SOURCES}, got {source!r}")
    if background not in _BACKGROUNDS:
        raise ValueError(f"background must be one of {_BACKGROUNDS}, got {background!r}")
    n_tasks = _n_tasks(n_tasks, 10)
    per_class = [_per_class(v, k) for v, k in ((n_train_per_class, "n_train_per_class"),
                                               (n_val_per_class, "n_val_per_class"),
                                               (n_test_per_class, "n_test_per_class"))]
    X_a, y_a, X_b, y_b = _read_idx_dataset(source, path)
    images, labels = np.concatenate([X_a, X_b]), np.concatenate([y_a, y_b])
    classes = np.arange(10)
    quotas = [np.full(len(classes), n) for n in per_class]
    index = _split_by_quota(labels, classes, quotas, _rng(seed, _SPLIT))

    shared = []  # per split: one read-only X shared by all tasks, and the class labels
    for s, idx in enumerate(index):
        X = _vary(images[idx], background, _rng(seed, _ROTATE, s), _rng(seed, _BACKGROUND, s))
        X.flags.writeable = False
        shared.append((X, labels[idx]))
    names = FASHION_MNIST_CLASSES if source == "fashion-mnist" else DIGIT_CLASSES
    tasks = []
    for c in range(n_tasks):
        arrays = [a for X, y in shared for a in (X, (y == c).astype(np.int64))]
        tasks.append(Task(f"mnist-variation/{c}", *arrays, n_outputs=_binary_outputs(head),
                          head=head, input_shape=(1,) + images.shape[1:],
                          classes=(f"not {names[c]}", names[c])))
    return tasks


def _vary(images, background, rng_rotate, rng_background):
    """Rotate each (H, W) uint8 image by a uniform angle and compose it with a background by
    the elementwise max. Returns float32 (n, H*W) in [0, 1]."""
    from scipy import ndimage

    n, h, w = images.shape
    x = _to_float(images).reshape(n, h, w)
    angles = rng_rotate.uniform(0.0, 360.0, size=n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = ndimage.rotate(x[i], angles[i], reshape=False, order=1, mode="constant")
    np.clip(out, 0.0, 1.0, out=out)  # linear interpolation stays in range up to rounding
    if background == "noise":
        np.maximum(out, rng_background.random(size=x.shape, dtype=np.float32), out=out)
    elif background == "image":
        # Another image of the same split (never the image itself, never another split's).
        other = (np.arange(n) + rng_background.integers(1, n, size=n)) % n
        turns = rng_background.integers(0, 4, size=n)
        if h != w:
            turns = 2 * (turns % 2)  # quarter turns only fit square images
        mirror = rng_background.integers(0, 2, size=n).astype(bool)
        shift_y = rng_background.integers(0, h, size=n)
        shift_x = rng_background.integers(0, w, size=n)
        for i in range(n):
            b = np.rot90(x[other[i]], turns[i])
            if mirror[i]:
                b = b[:, ::-1]
            b = np.roll(b, (shift_y[i], shift_x[i]), axis=(0, 1))
            np.maximum(out[i], _BACKGROUND_DIM * b, out=out[i])
    return out.reshape(n, h * w)


def _load_split_cifar100(*, n_tasks, seed, path, head, val_fraction=None,
                         n_train_per_class=None, n_val_per_class=None, n_test_per_class=None):
    n_tasks = _n_tasks(n_tasks, 10)
    if val_fraction is not None and n_val_per_class is not None:
        raise ValueError("give val_fraction or n_val_per_class, not both")
    if val_fraction is None:
        val_fraction = 0.1
    if (isinstance(val_fraction, bool) or not isinstance(val_fraction, (float, int))
            or not 0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    for value, key in ((n_train_per_class, "n_train_per_class"),
                       (n_val_per_class, "n_val_per_class"),
                       (n_test_per_class, "n_test_per_class")):
        if value is not None:
            _per_class(value, key)
    X_pool, y_pool, X_test_pool, y_test_pool, fine_names = read_cifar100(path)

    tasks = []
    for t in range(n_tasks):
        fine = np.arange(10 * t, 10 * t + 10)
        have = np.array([np.count_nonzero(y_pool == c) for c in fine])
        n_val = (np.full(10, n_val_per_class) if n_val_per_class is not None
                 else np.floor(val_fraction * have + 0.5).astype(np.int64))
        n_train = have - n_val if n_train_per_class is None else np.full(10, n_train_per_class)
        have_test = np.array([np.count_nonzero(y_test_pool == c) for c in fine])
        n_test = have_test if n_test_per_class is None else np.full(10, n_test_per_class)
        for k, c in enumerate(fine):
            if n_val[k] < 1 or n_train[k] < 1:
                raise ValueError(f"CIFAR-100 class {c} ({fine_names[c]}) has {have[k]} training "
                                 f"images: too few for {n_train[k]} train + {n_val[k]} val")
        i_train, i_val = _split_by_quota(y_pool, fine, [n_train, n_val], _rng(seed, _SPLIT, t))
        (i_test,) = _split_by_quota(y_test_pool, fine, [n_test], _rng(seed, _TEST_SPLIT, t))
        arrays = []
        for X, y, idx in ((X_pool, y_pool, i_train), (X_pool, y_pool, i_val),
                          (X_test_pool, y_test_pool, i_test)):
            arrays += [_to_float(X[idx]), y[idx] - 10 * t]
        tasks.append(Task(f"split-cifar100/{t}", *arrays, n_outputs=10, head=head,
                          input_shape=(3, 32, 32), classes=tuple(fine_names[c] for c in fine)))
    return tasks


def _load_awa(*, n_tasks, seed, path, head, n_components=500, n_train_per_class=30,
              n_val_per_class=30, n_test_per_class=None):
    from sklearn.decomposition import PCA

    per_class = [_per_class(n_train_per_class, "n_train_per_class"),
                 _per_class(n_val_per_class, "n_val_per_class")]
    if n_test_per_class is not None:
        _per_class(n_test_per_class, "n_test_per_class")
    if n_components is not None:
        _per_class(n_components, "n_components")
    features, labels = read_awa(path)
    classes = np.unique(labels)
    n_tasks = _n_tasks(n_tasks, len(classes))
    have = np.array([np.count_nonzero(labels == c) for c in classes])
    n_test = (have - sum(per_class) if n_test_per_class is None
              else np.full(len(classes), n_test_per_class))
    if np.any(n_test < 1):
        k = int(np.argmin(n_test))
        raise ValueError(f"AwA class {classes[k]} has {have[k]} images: too few for "
                         f"{per_class[0]} train + {per_class[1]} val + test")
    quotas = [np.full(len(classes), per_class[0]), np.full(len(classes), per_class[1]), n_test]
    index = _split_by_quota(labels, classes, quotas, _rng(seed, _SPLIT))
    X = [features[idx].astype(np.float64) for idx in index]
    if n_components is not None:
        if n_components > min(X[0].shape):
            raise ValueError(f"n_components={n_components} exceeds min(n_train, n_features) = "
                             f"{min(X[0].shape)}")
        pca_seed = int(_rng(seed, _PCA).integers(2**31))
        pca = PCA(n_components=n_components, random_state=pca_seed).fit(X[0])  # train only
        X = [pca.transform(x) for x in X]
    mean, std = X[0].mean(axis=0), X[0].std(axis=0)
    std[std == 0] = 1.0  # a constant feature stays 0 instead of becoming NaN
    shared = []
    for x, idx in zip(X, index):
        x = np.ascontiguousarray((x - mean) / std, dtype=np.float32)
        x.flags.writeable = False
        shared.append((x, labels[idx]))
    tasks = []
    for c in range(n_tasks):
        arrays = [a for x, y in shared for a in (x, (y == classes[c]).astype(np.int64))]
        tasks.append(Task(f"awa/{c}", *arrays, n_outputs=_binary_outputs(head), head=head,
                          input_shape=(shared[0][0].shape[1],),
                          classes=(f"not class {classes[c]}", f"class {classes[c]}")))
    return tasks


_LOADERS = {
    "digits": _load_digits,
    "permuted-fashion-mnist": partial(_load_permuted_idx, "fashion-mnist",
                                      "permuted-fashion-mnist"),
    "permuted-mnist": partial(_load_permuted_idx, "mnist", "permuted-mnist"),
    "mnist-variation": _load_mnist_variation,
    "split-cifar100": _load_split_cifar100,
    "awa": _load_awa,
}
assert tuple(_LOADERS) == NAMES

# Other spellings accepted by load() for the per-class sizes.
_ALIASES = {"per_class_train": "n_train_per_class", "per_class_val": "n_val_per_class",
            "per_class_test": "n_test_per_class"}


def _options(loader):
    """The data-set specific keywords a loader accepts."""
    common = {"n_tasks", "seed", "path", "head"}
    return {p.name for p in inspect.signature(loader).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in common}


# --------------------------------------------------------------------------------------------
# Randomness, sizes and stratified splits

# Independent random streams, one per purpose.
_SPLIT, _TEST_SPLIT, _PERMUTE, _ROTATE, _BACKGROUND, _PCA = range(6)


def _rng(seed, stream, index=0):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


#: Permuted data sets can make any number of tasks, each a full copy of the data: this bound
#: keeps a typo from filling the memory.
MAX_PERMUTED_TASKS = 1000


def _n_tasks(n_tasks, most):
    """Default 10 (or all there are, if fewer); at most `most` (None: MAX_PERMUTED_TASKS)."""
    if n_tasks is None:
        return DEFAULT_N_TASKS if most is None else min(DEFAULT_N_TASKS, most)
    limit = MAX_PERMUTED_TASKS if most is None else most
    if n_tasks > limit:
        raise ValueError(f"n_tasks={n_tasks} but this data set makes at most {limit} tasks")
    return int(n_tasks)


def _check_size(value, key):
    """A whole-split size: None, an int >= 1 (a count) or a float in (0, 1] (a fraction)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise ValueError(f"{key} must be an int count or a float fraction, got {value!r}")
    if isinstance(value, (float, np.floating)) and not 0 < value <= 1:
        raise ValueError(f"{key}={value!r}: a fraction must lie in (0, 1]")
    if isinstance(value, (int, np.integer)) and value < 1:
        raise ValueError(f"{key}={value!r}: a count must be at least 1")


def _size(value, pool, key):
    """Resolve a checked whole-split size against a pool of `pool` images."""
    if value is None:
        raise ValueError(f"{key} must be given")
    _check_size(value, key)
    if isinstance(value, (float, np.floating)):
        n = int(np.floor(value * pool + 1e-9))
        if n < 1:
            raise ValueError(f"{key}={value!r} of {pool} images is less than one image")
        return n
    return int(value)


def _sizes(pool, what, **sizes):
    """Resolve whole-split sizes (in the given order) against one pool of `pool` images.
    At most one may be None: it gets what the others leave."""
    rest = [key for key, value in sizes.items() if value is None]
    if len(rest) > 1:
        raise ValueError(f"only one of {', '.join(rest)} may be None (= the rest)")
    counts = {key: _size(value, pool, key) for key, value in sizes.items() if value is not None}
    if rest:
        counts[rest[0]] = pool - sum(counts.values())
    if sum(counts.values()) > pool or min(counts.values()) < 1:
        asked = " + ".join(f"{key}={counts[key]}" for key in sizes)
        raise ValueError(f"{asked} does not fit in the {pool} {what}")
    return [counts[key] for key in sizes]


def _per_class(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key} must be an int >= 1, got {value!r}")
    return int(value)


def _stratified_split(y, sizes, rng):
    """Disjoint index arrays of the given sizes (in order), each with class counts within two
    images of proportional to those of y."""
    classes, counts = np.unique(y, return_counts=True)
    left = counts.astype(np.int64)
    quotas = []
    for n in sizes:
        # Largest remainder, in integers, proportional to what is left of each class: the
        # rounding never takes more of a class than it has left.
        total = int(left.sum())
        share, remainder = np.divmod(n * left, total)
        share[np.argsort(-remainder, kind="stable")[: n - int(share.sum())]] += 1
        quotas.append(share)
        left = left - share
    return _split_by_quota(y, classes, quotas, rng)


def _split_by_quota(y, classes, quotas, rng):
    """quotas[s][k] images of class classes[k] go to split s, without overlap between splits.
    Returns one index array per split, in random order."""
    parts = [[] for _ in quotas]
    for k, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        wanted = sum(int(q[k]) for q in quotas)
        if wanted > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, fewer than the {wanted} "
                             f"the requested split sizes need")
        start = 0
        for part, q in zip(parts, quotas):
            part.append(idx[start:start + int(q[k])])
            start += int(q[k])
    return [rng.permutation(np.concatenate(part)) for part in parts]


def _to_float(images):
    """uint8 pixels (n, ...) -> float32 (n, d) in [0, 1], a new C-contiguous array."""
    out = images.reshape(len(images), -1).astype(np.float32)
    out /= 255.0
    return out


def _binary_outputs(head):
    return 1 if head == "sigmoid" else 2


# --------------------------------------------------------------------------------------------
# Where the files are


@dataclass(frozen=True)
class _Source:
    title: str
    subdir: str  # looked for under path / DEN_DATA
    layouts: tuple  # a folder qualifies when all files of one layout exist (plain or .gz)
    debian_dir: str | None = None
    apt_package: str | None = None


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_SOURCES = {
    "fashion-mnist": _Source("Fashion-MNIST", "fashion-mnist", (_IDX_FILES,),
                             "/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"),
    "mnist": _Source("MNIST", "mnist", (_IDX_FILES,)),
    "cifar-100": _Source("CIFAR-100 (python version)", "cifar-100-python",
                         (("train", "test", "meta"),)),
    "awa": _Source("Animals with Attributes features", "awa",
                   (("features.npy", "labels.npy"), ("AwA2-features.txt", "AwA2-labels.txt"))),
}


def find_data(kind, path=None) -> Path:
    """The folder holding the files of `kind` ("fashion-mnist", "mnist", "cifar-100", "awa").

    Looks in `path` if given (the folder itself, or its subfolder fashion-mnist / mnist /
    cifar-100-python / awa), else in $DEN_DATA (likewise), else in the Debian package folder
    where there is one (Fashion-MNIST). Raises FileNotFoundError saying
    where it looked, which files it expects, and every way to provide them.
    """
    if kind not in _SOURCES:
        raise ValueError(f"unknown data kind {kind!r}; one of: {', '.join(_SOURCES)}")
    src = _SOURCES[kind]
    if path is not None:
        base = Path(path).expanduser()
        candidates = [base, base / src.subdir]
    else:
        candidates = []
        if os.environ.get("DEN_DATA"):
            base = Path(os.environ["DEN_DATA"]).expanduser()
            candidates += [base, base / src.subdir]
        if src.debian_dir:
            candidates.append(Path(src.debian_dir))
    for folder in candidates:
        if _layout(folder, src) is not None:
            return folder
    raise FileNotFoundError(_missing_message(src, candidates))


def _layout(folder, src):
    """The first layout of `src` whose files all exist in `folder`, or None."""
    for layout in src.layouts:
        if all(_locate(folder, f) is not None for f in layout):
            return layout
    return None


def _locate(folder, name):
    for candidate in (Path(folder) / name, Path(folder) / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(src, looked):
    files = " or ".join(" + ".join(layout) for layout in src.layouts)
    ways = [f"pass path=... to den.datasets.load: the folder holding the files, or its parent "
            f"holding '{src.subdir}/'",
            f"set the DEN_DATA environment variable to such a folder (files in $DEN_DATA or in "
            f"$DEN_DATA/{src.subdir})"]
    if src.apt_package:
        ways.append(f"apt-get install {src.apt_package} (puts them in {src.debian_dir})")
    where = ", ".join(str(p) for p in looked) or "nowhere (no path given, DEN_DATA unset)"
    return (f"{src.title} files not found (den never downloads data).\n"
            f"Looked in: {where}\n"
            f"Expected files (each may be gzipped as name.gz): {files}\n"
            f"Provide them in one of these ways:\n" + "\n".join(f"  - {w}" for w in ways))


def _open(path):
    """Binary file object, transparently un-gzipped when the file starts with the gzip magic."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

_IDX_KINDS = {1: "labels (magic 0x00000801)", 3: "images (magic 0x00000803)"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, plain or gzipped: labels (n,) or images (n, H, W).

    Returns a writeable uint8 array. Raises ValueError naming the file when the magic is not
    0x00000801 / 0x00000803 or the data does not match the sizes in the header.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip stream ({e})") from e
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file ({len(data)} bytes, shorter than the magic)")
    ndim = data[3]
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or ndim not in _IDX_KINDS:
        raise ValueError(f"{path}: bad IDX magic 0x{data[:4].hex()}; expected 0x00000801 "
                         f"(labels) or 0x00000803 (images) of unsigned bytes")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = len(data) - header
    if body != int(np.prod(dims)):
        problem = "truncated" if body < np.prod(dims) else "has trailing bytes"
        raise ValueError(f"{path}: {problem}: header says {dims} = {int(np.prod(dims))} bytes "
                         f"of data, the file holds {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_idx_dataset(kind, path):
    """(X_train (n, H, W) uint8, y_train (n,) int64, X_test, y_test) of an MNIST-like set."""
    folder = find_data(kind, path)
    out = []
    for prefix in ("train", "t10k"):
        images_file = _locate(folder, f"{prefix}-images-idx3-ubyte")
        labels_file = _locate(folder, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3:
            raise ValueError(f"{images_file}: holds {_IDX_KINDS[images.ndim]}, expected images")
        if labels.ndim != 1:
            raise ValueError(f"{labels_file}: holds {_IDX_KINDS[labels.ndim]}, expected labels")
        if len(images) != len(labels):
            raise ValueError(f"{images_file} has {len(images)} images but {labels_file} has "
                             f"{len(labels)} labels")
        if len(labels) == 0 or labels.max() > 9:
            raise ValueError(f"{labels_file}: expected labels 0..9 (and at least one)")
        out += [images, labels.astype(np.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise ValueError(f"{folder}: training images are {out[0].shape[1:]}, test images "
                         f"{out[2].shape[1:]}")
    return tuple(out)


def read_fashion_mnist(path=None):
    """Fashion-MNIST as (X_train (60000, 28, 28) uint8, y_train (60000,) int64, X_test, y_test);
    see :func:`find_data` for where it is looked for."""
    return _read_idx_dataset("fashion-mnist", path)


def read_mnist(path=None):
    """MNIST as (X_train (60000, 28, 28) uint8, y_train (60000,) int64, X_test, y_test) from IDX
    files at `path` or $DEN_DATA[/mnist]."""
    return _read_idx_dataset("mnist", path)


# --------------------------------------------------------------------------------------------
# CIFAR-100 pickles, read without executing anything


def _latin1_encode(text, encoding="latin1"):
    """The only call _codecs.encode may make here: str -> bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _numpy_pickle_globals():
    try:  # NumPy >= 2
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1'):
               # a pure string-to-bytes conversion, so files re-saved by Python 3 load too
               ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):  # files written under NumPy 1.x or 2.x
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer  # protocol 5 arrays
    return allowed


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle asked for something other than NumPy arrays; nothing was executed."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals NumPy arrays are rebuilt from; anything else (a function to
    call, a class to instantiate) is refused before it can run."""

    _allowed = _numpy_pickle_globals()

    def __init__(self, file, source):
        super().__init__(file, encoding="bytes")  # the CIFAR files are Python 2 pickles
        self._source = source

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load '{module}.{name}': this reader only rebuilds "
                f"NumPy arrays, lists, dicts, numbers and strings (a data file should need "
                f"nothing else; loading other globals could run arbitrary code)") from None


def read_numpy_pickle(path):
    """Unpickle a data file that may only contain NumPy arrays and plain Python containers,
    numbers and strings (Python 2 strings come back as bytes). Raises UnsafePickleError (a
    pickle.UnpicklingError) for anything else, before executing it, and ValueError for a
    truncated or corrupt file."""
    path = Path(path)
    with _open(path) as f:
        try:
            return _NumpyOnlyUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except Exception as e:  # a damaged stream can fail in many ways; all mean "bad file"
            raise ValueError(f"{path}: truncated or corrupt pickle ({e!r})") from e


def _field(d, key, source):
    """d[b'key'] (Python 2 pickles) or d['key']."""
    if isinstance(d, dict):
        for k in (key.encode(), key):
            if k in d:
                return d[k]
    raise ValueError(f"{source}: expected a dict with key {key!r}; is this a CIFAR-100 file?")


def read_cifar100(path=None):
    """CIFAR-100 as (X_train (50000, 3072) uint8, fine_train (50000,) int64, X_test (10000, 3072),
    fine_test, fine_label_names tuple of 100 str). Rows are the R, G, B 32x32 planes in C order.
    Looked for at `path` or $DEN_DATA, either holding the files or a cifar-100-python folder."""
    folder = find_data("cifar-100", path)
    out = []
    for split in ("train", "test"):
        source = _locate(folder, split)
        d = read_numpy_pickle(source)
        X = _field(d, "data", source)
        y = np.asarray(_field(d, "fine_labels", source))
        if (not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 2
                or X.shape[1] != 3072):
            raise ValueError(f"{source}: 'data' must be a uint8 array of shape (n, 3072)")
        if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer) or len(y) == 0 \
                or y.min() < 0 or y.max() > 99:
            raise ValueError(f"{source}: 'fine_labels' must hold {len(X)} ints in 0..99")
        out += [np.ascontiguousarray(X), y.astype(np.int64)]
    meta = _locate(folder, "meta")
    names = _field(read_numpy_pickle(meta), "fine_label_names", meta)
    if len(names) != 100:
        raise ValueError(f"{meta}: expected 100 fine label names, found {len(names)}")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return (*out, names)


# --------------------------------------------------------------------------------------------
# Animals with Attributes features


def read_awa(path=None):
    """AwA features as (X (n, d) float32, labels (n,) int64, 0-based): features.npy + labels.npy
    (0-based labels, loaded with allow_pickle=False), or AwA2-features.txt + AwA2-labels.txt
    (1-based labels, made 0-based; text parsing of the 37,322 x 2,048 AwA2 file takes a while,
    so save it once as features.npy)."""
    folder = find_data("awa", path)
    src = _SOURCES["awa"]
    features_file, labels_file = (_locate(folder, f) for f in _layout(folder, src))
    npy = features_file.name.startswith("features.npy")
    try:
        with _open(features_file) as f:
            X = np.load(f, allow_pickle=False) if npy else np.loadtxt(f, dtype=np.float32, ndmin=2)
        with _open(labels_file) as f:
            y = np.load(f, allow_pickle=False) if npy else np.loadtxt(f, dtype=np.int64, ndmin=1)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{folder}: cannot read AwA files ({e})") from e
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise ValueError(f"{features_file}: expected a finite 2-D numeric feature matrix")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(X):
        raise ValueError(f"{labels_file}: expected {len(X)} integer labels, one per feature row")
    y = y.astype(np.int64) - (0 if npy else 1)
    if y.min() < 0:
        raise ValueError(f"{labels_file}: labels must be {'0' if npy else '1'}-based")
    return X.astype(np.float32), y
