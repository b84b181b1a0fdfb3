"""Reliability: nothing crashes, nothing is lost, results reproduce.

1. Bad input at every public entry point (Model.fit_task, fit_all, predict_proba, den.load,
   den.datasets.load, the CLI) raises a clear exception naming the argument, and the model is
   exactly as it was (a sha256 over every net's state, the task list, the history and every
   other attribute). Unusual but meaningful input (read-only, Fortran-ordered, strided, other
   dtypes, one sample) works. Absurd sizes are refused up front; the ones that could allocate
   run in a child process under an address-space limit so that a bug cannot take the machine.
2. (tests/test_fuzz_binding.py: property-based tests of den._core.Net.)
3. Repeated fit/predict/save/load keeps memory, Python objects and references flat.
4. Files: a failed or interrupted save never destroys the previous file; damaged, foreign and
   inconsistent files raise den._io.ModelFileError; loading never runs code from the file.
5. Ctrl-C stops a long stage within about a second and leaves a usable model; two models
   trained in two threads at once match the same two trained one after the other.
6. The same seed and thread count give bit-identical weights and AUROC, in one process and
   across processes.
"""

import copy
import errno
import gc
import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

import den
from den import _core, _io
from den.cli import main as cli_main
from children import DEN_HOME, child_env

SMALL = {"hidden": (16, 8), "epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 0}
SIZES = {"n_train": 300, "n_val": 60}


# Under AddressSanitizer (.ci/sanitize) resident memory includes ASan's quarantine and shadow, and
# address-space limits cannot be used (ASan reserves terabytes): those checks only run normally.
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in os.environ
not_under_asan = pytest.mark.skipif(UNDER_ASAN, reason="RSS and address-space limits are meaningless under ASan")


# ---- fingerprints --------------------------------------------------------------------------------


def _feed(h, x):
    if isinstance(x, np.ndarray):
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, dict):
        for k in sorted(x):
            h.update(str(k).encode())
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"[{len(x)}".encode())
        for v in x:
            _feed(h, v)
    else:
        h.update(repr(x).encode())


def weights_digest(model):
    """sha256 over every net's full state and the task list: what a model has learned."""
    h = hashlib.sha256()
    for name in sorted(model._nets):
        h.update(name.encode())
        _feed(h, model._nets[name].get_state())
    _feed(h, model._tasks)
    return h.hexdigest()


def checksum(model):
    """weights_digest plus everything else the model holds (history, hyperparameters...)."""
    rest = {k: v for k, v in vars(model).items() if k != "_nets"}
    return hashlib.sha256((weights_digest(model) + json.dumps(rest, sort_keys=True, default=repr)).encode()).hexdigest()


def array_digest(a):
    a = np.asarray(a)
    return (a.dtype.str, a.shape, a.tobytes() if a.dtype != object else repr(a.tolist()))


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks():
    return den.datasets.load("digits", n_tasks=2, seed=0, **SIZES)


@pytest.fixture(scope="module")
def _fitted(tasks):
    t = tasks[0]
    out = {}
    for cls in (den.DEN, den.DNN):
        m = cls(**SMALL)
        m.fit_task(t.X_train, t.y_train, t.X_val, t.y_val, n_outputs=t.n_outputs)
        out[cls.kind] = m
    return out


@pytest.fixture
def fitted_den(_fitted):
    """A DEN that has learned task 0 (a private copy for each test)."""
    return copy.deepcopy(_fitted["DEN"])


@pytest.fixture
def fitted_dnn(_fitted):
    return copy.deepcopy(_fitted["DNN"])


def ns(task, **changes):
    """A task-like object (what fit_all reads) with some attributes replaced."""
    return types.SimpleNamespace(**{**{k: getattr(task, k) for k in
                                       ("X_train", "y_train", "X_val", "y_val", "n_outputs", "head", "input_shape")},
                                    **changes})


# =================================================================================================
# 1. Bad input at every public entry point
# =================================================================================================


def _with(a, index, value, dtype=None):
    b = np.array(a, dtype=dtype or np.asarray(a).dtype)
    b.flat[index] = value
    return b


# (id, change(task) -> fit_task arguments to replace, exception, message naming the argument)
BAD_FIT = [
    ("X-nan", lambda t: {"X": _with(t.X_train, 5, np.nan)}, ValueError, r"^X contains NaN"),
    ("X-inf", lambda t: {"X": _with(t.X_train, 7, -np.inf)}, ValueError, r"^X contains NaN or inf"),
    ("X-overflows-float32", lambda t: {"X": _with(t.X_train, 3, 1e300, np.float64)}, ValueError,
     r"^X contains NaN or inf .*float32"),
    ("X-complex", lambda t: {"X": t.X_train.astype(complex)}, TypeError, r"^X must hold real numbers"),
    ("X-strings", lambda t: {"X": t.X_train.astype(str)}, TypeError, r"^X must hold numbers"),
    ("X-None", lambda t: {"X": None}, TypeError, r"^X must hold numbers"),
    ("X-ragged", lambda t: {"X": [[0.0] * 64, [0.0] * 3]}, TypeError, r"^X must be a 2-d array"),
    ("X-1d", lambda t: {"X": t.X_train[0]}, ValueError, r"^X must be 2-d"),
    ("X-3d", lambda t: {"X": t.X_train.reshape(-1, 8, 8)}, ValueError, r"^X must be 2-d"),
    ("X-width", lambda t: {"X": t.X_train[:, :63]}, ValueError, r"^X has 63 features, the model expects 64"),
    ("X-empty", lambda t: {"X": t.X_train[:0], "y": t.y_train[:0]}, ValueError, r"^X has 0 rows"),
    ("X-no-columns", lambda t: {"X": np.zeros((len(t.y_train), 0), np.float32)}, ValueError, r"^X has 0 features"),
    ("y-strings", lambda t: {"y": t.y_train.astype(str)}, TypeError, r"^y must hold integer class labels"),
    ("y-fractions", lambda t: {"y": t.y_train + 0.25}, TypeError, r"^y must hold integer class labels"),
    ("y-nan", lambda t: {"y": _with(t.y_train, 0, np.nan, float)}, TypeError, r"^y must hold integer"),
    ("y-object", lambda t: {"y": t.y_train.astype(object)}, TypeError, r"^y must hold integer"),
    ("y-complex", lambda t: {"y": t.y_train.astype(complex)}, TypeError, r"^y must hold integer"),
    ("y-negative", lambda t: {"y": _with(t.y_train, 4, -2)}, ValueError, r"^y holds a negative label \(-2\)"),
    ("y-label>=n_outputs", lambda t: {"y": _with(t.y_train, 4, 10)}, ValueError, r"^y holds label 10"),
    ("y-length", lambda t: {"y": t.y_train[:-1]}, ValueError, r"^y has \d+ rows but the inputs have"),
    ("y-3d", lambda t: {"y": np.zeros((len(t.y_train), 2, 2))}, ValueError, r"^y must be 1-d class labels or 2-d"),
    ("y-None", lambda t: {"y": None}, ValueError, r"^y must be 1-d class labels or 2-d"),
    ("y-2d-out-of-range", lambda t: {"y": np.eye(10)[t.y_train] * 2}, ValueError, r"^y must hold targets in \[0, 1\]"),
    ("y-2d-nan", lambda t: {"y": _with(np.eye(10)[t.y_train], 0, np.nan)}, ValueError, r"^y must hold targets in"),
    ("y-2d-columns", lambda t: {"y": np.eye(10)[t.y_train], "n_outputs": 5}, ValueError, r"^y has 10 columns"),
    ("y-2d-strings", lambda t: {"y": np.eye(10)[t.y_train].astype(str)}, TypeError, r"^y must hold numbers"),
    ("y-2d-softmax", lambda t: {"y": np.eye(10)[t.y_train], "head": "softmax"}, ValueError,
     r"^y: a softmax head takes 1-d"),
    pytest.param("y-2d-no-columns", lambda t: {"y": np.zeros((len(t.y_train), 0)), "n_outputs": None}, ValueError,
                 r"\by\b"),
    ("X_val-alone", lambda t: {"y_val": None}, ValueError, r"^X_val and y_val must be given together"),
    ("X_val-width", lambda t: {"X_val": t.X_val[:, :10]}, ValueError, r"^X_val has 10 features"),
    ("X_val-nan", lambda t: {"X_val": _with(t.X_val, 2, np.nan)}, ValueError, r"^X_val contains NaN"),
    ("X_val-1d", lambda t: {"X_val": t.X_val[0]}, ValueError, r"^X_val must be 2-d"),
    ("y_val-label", lambda t: {"y_val": _with(t.y_val, 1, 12)}, ValueError, r"^y_val holds label 12"),
    ("y_val-length", lambda t: {"y_val": t.y_val[:3]}, ValueError, r"^y_val has 3 rows"),
    ("y_val-fractions", lambda t: {"y_val": t.y_val + 0.5}, TypeError, r"^y_val must hold integer"),
    ("n_outputs-0", lambda t: {"n_outputs": 0}, ValueError, r"^n_outputs must be >= 1"),
    ("n_outputs-negative", lambda t: {"n_outputs": -3}, ValueError, r"^n_outputs must be >= 1"),
    ("n_outputs-fraction", lambda t: {"n_outputs": 10.5}, TypeError, r"^n_outputs must be an integer"),
    ("n_outputs-string", lambda t: {"n_outputs": "10"}, TypeError, r"^n_outputs must be a number"),
    ("n_outputs-bool", lambda t: {"n_outputs": True}, TypeError, r"^n_outputs must be a number"),
    ("n_outputs-too-few", lambda t: {"n_outputs": 3}, ValueError, r"^y holds label \d, but the task's head has only 3"),
    pytest.param("n_outputs-nan", lambda t: {"n_outputs": float("nan")}, ValueError, r"n_outputs"),
    ("head-unknown", lambda t: {"head": "tanh"}, ValueError, r"^head must be one of"),
    ("head-softmax-1-output", lambda t: {"head": "softmax", "n_outputs": 1, "y": t.y_train % 2}, ValueError,
     r"^n_outputs: a softmax head needs at least 2"),
]


def _fit_args(task, change):
    args = {"X": task.X_train, "y": task.y_train, "X_val": task.X_val, "y_val": task.y_val,
            "n_outputs": task.n_outputs, "head": "sigmoid"}
    args.update(change(task))
    return args


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("case,change,exc,msg", BAD_FIT, ids=lambda v: v if isinstance(v, str) else "-")
def test_fit_task_refuses_bad_input_and_keeps_the_model(fitted_den, tasks, case, change, exc, msg):
    args = _fit_args(tasks[1], change)
    arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
    kept = {k: array_digest(v) for k, v in arrays.items()}
    before = checksum(fitted_den)
    call = dict(args)
    with pytest.raises(exc, match=msg):
        fitted_den.fit_task(call.pop("X"), call.pop("y"), call.pop("X_val"), call.pop("y_val"), **call)
    assert checksum(fitted_den) == before
    assert {k: array_digest(v) for k, v in arrays.items()} == kept, "den modified the caller's arrays"
    # and the model still learns the task
    t = tasks[1]
    assert fitted_den.fit_task(t.X_train, t.y_train, t.X_val, t.y_val, n_outputs=10) == 1


@pytest.mark.parametrize("case", ["X-nan", "y-fractions", "X_val-nan", "y_val-label", "n_outputs-0", "X-width"])
def test_mtl_fit_all_names_the_task_and_keeps_the_model(tasks, case):
    change = dict((c[0], c[1]) for c in BAD_FIT if isinstance(c, tuple))[case]
    a = _fit_args(tasks[1], change)
    bad = ns(tasks[1], X_train=a["X"], y_train=a["y"], X_val=a["X_val"], y_val=a["y_val"], n_outputs=a["n_outputs"])
    model = den.MTL(**SMALL)
    before = checksum(model)
    with pytest.raises((ValueError, TypeError), match=r"^tasks\[1\]\."):
        model.fit_all([tasks[0], bad])
    assert checksum(model) == before
    model.fit_all(tasks)
    assert model.n_tasks == 2


@pytest.mark.parametrize("cls", [den.DEN, den.DNN])
def test_sequential_fit_all_is_atomic_and_names_the_task(tasks, cls):
    model = cls(**SMALL)
    before = checksum(model)
    bad = ns(tasks[1], X_train=tasks[1].X_train[:, :10])
    with pytest.raises(ValueError, match=r"tasks\[1\]"):
        model.fit_all([tasks[0], bad])
    assert checksum(model) == before


@pytest.mark.parametrize("cls", [den.DEN, den.MTL])
def test_fit_all_refuses_non_tasks_clearly(cls):
    model = cls(**SMALL)
    with pytest.raises(TypeError, match=r"tasks\[0\]"):
        model.fit_all([1, 2])


@pytest.mark.parametrize("X,task,exc,msg", [
    (lambda t: _with(t.X_test, 3, np.nan), 0, ValueError, r"^X contains NaN"),
    (lambda t: t.X_test[:, 1:], 0, ValueError, r"^X has 63 features"),
    (lambda t: t.X_test[0], 0, ValueError, r"^X must be 2-d"),
    (lambda t: t.X_test.astype(str), 0, TypeError, r"^X must hold numbers"),
    (lambda t: None, 0, TypeError, r"^X must hold numbers"),
    (lambda t: t.X_test, np.int64(1), ValueError, r"^unknown task 1"),
    (lambda t: t.X_test, 2**70, ValueError, r"^unknown task"),
    (lambda t: t.X_test, None, TypeError, r"^task must be an integer"),
    (lambda t: t.X_test, np.float64(0), TypeError, r"^task must be an integer"),
    (lambda t: t.X_test, [0], TypeError, r"^task must be an integer"),
])
def test_predict_proba_refuses_bad_input(fitted_den, tasks, X, task, exc, msg):
    before = checksum(fitted_den)
    with pytest.raises(exc, match=msg):
        fitted_den.predict_proba(X(tasks[0]), task)
    assert checksum(fitted_den) == before


# ---- unusual but meaningful input works, and is never modified ----------------------------------


def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


GOOD_X = {
    "read-only": _ro, "fortran": np.asfortranarray, "strided": lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    "float64": lambda X: X.astype(np.float64), "float16": lambda X: X.astype(np.float16),
    "int": lambda X: (X * 16).astype(np.int64), "big-endian": lambda X: X.astype(">f4"),
    "list": lambda X: X.tolist(), "rows-strided": lambda X: np.repeat(X, 2, axis=0)[::2],
}


@pytest.mark.parametrize("variant", sorted(GOOD_X))
def test_any_layout_and_dtype_of_X_learns_the_same_model(tasks, variant):
    """den converts user data once: a read-only, Fortran-ordered or strided X (or one of another
    dtype holding the same values) gives a bit-identical model, and X itself is never modified."""
    t = tasks[0]
    make = GOOD_X[variant]
    X, Xv, Xt = make(t.X_train), make(t.X_val), make(t.X_test)
    plain = [np.ascontiguousarray(np.asarray(v, np.float32)) for v in (X, Xv, Xt)]  # the same values
    kept = [array_digest(v) for v in (X, Xv, Xt)]
    a, b = den.DEN(**SMALL), den.DEN(**SMALL)
    a.fit_task(X, t.y_train, Xv, t.y_val)
    b.fit_task(plain[0], t.y_train, plain[1], t.y_val)
    assert weights_digest(a) == weights_digest(b)
    np.testing.assert_array_equal(a.predict_proba(Xt, 0), b.predict_proba(plain[2], 0))
    assert [array_digest(v) for v in (X, Xv, Xt)] == kept, "den modified the caller's arrays"


@pytest.mark.parametrize("variant,make", [
    ("bool", lambda y: y % 2 == 1), ("float-integers", lambda y: y.astype(np.float64)),
    ("uint8", lambda y: y.astype(np.uint8)), ("int32", lambda y: y.astype(np.int32)),
    ("list", lambda y: y.tolist()), ("read-only", _ro),
])
def test_labels_of_any_integer_kind_work(tasks, variant, make):
    t = tasks[0]
    y, yv = make(t.y_train), make(t.y_val)
    model = den.DNN(**SMALL)
    assert model.fit_task(t.X_train, y, t.X_val, yv) == 0
    k = 1 if variant == "bool" else 10  # bools are 0/1 labels: one sigmoid output
    assert model.predict_proba(t.X_test, 0).shape == (len(t.X_test), k)
    ref = den.DNN(**SMALL)
    ref.fit_task(t.X_train, np.asarray(y).astype(np.int64), t.X_val, np.asarray(yv).astype(np.int64))
    assert weights_digest(model) == weights_digest(ref)


@pytest.mark.parametrize("cls", [den.DEN, den.DNN, den.STL, den.L2, den.EWC, den.Progressive])
def test_one_sample_tasks_work(tasks, cls):
    model = cls(**SMALL)
    for i, t in enumerate(tasks):
        assert model.fit_task(t.X_train[:1], t.y_train[:1], t.X_val[:1], t.y_val[:1], n_outputs=10) == i
    for i, t in enumerate(tasks):
        p = model.predict_proba(t.X_test[:1], i)
        assert p.shape == (1, 10) and np.isfinite(p).all()
        assert model.predict_proba(t.X_test[:0], i).shape == (0, 10)


def test_one_sample_tasks_work_jointly(tasks):
    one = [ns(t, X_train=t.X_train[:1], y_train=t.y_train[:1], X_val=t.X_val[:1], y_val=t.y_val[:1]) for t in tasks]
    for model in (den.MTL(**SMALL), den.DEN(**SMALL, finetune=True)):
        model.fit_all(one)
        assert model.n_tasks == 2 and model.predict_proba(tasks[1].X_test[:1], 1).shape == (1, 10)


# ---- absurd hyperparameters -------------------------------------------------------------------------


@pytest.mark.parametrize("cls,kwargs,msg", [
    (den.DNN, {"hidden": (-4,)}, r"hidden\[0\]"), (den.DNN, {"hidden": (8, 0)}, r"hidden\[1\]"),
    (den.DNN, {"hidden": "16"}, r"hidden\[0\]"), (den.DNN, {"hidden": None}, r"hidden"),
    pytest.param(den.DNN, {"hidden": (float("nan"),)}, r"hidden"),
    pytest.param(den.DNN, {"hidden": (float("inf"),)}, r"hidden"),
    pytest.param(den.DNN, {"epochs": float("nan")}, r"epochs"),
    pytest.param(den.DNN, {"batch_size": float("inf")}, r"batch_size"),
    (den.DNN, {"lr": float("inf")}, r"^lr"), (den.DNN, {"lr": -1e-3}, r"^lr"), (den.DNN, {"lr": "0.1"}, r"^lr"),
    (den.DNN, {"lr_decay": 0}, r"^lr_decay"), (den.DNN, {"lr_decay": float("nan")}, r"^lr_decay"),
    (den.DNN, {"seed": 1.5}, r"^seed"), (den.DNN, {"seed": None}, r"^seed"),
    (den.DNN, {"conv": [(4, 4, 1)]}, r"conv\[0\]"), (den.DNN, {"conv": [(4, 3)]}, r"conv\[0\]"),
    (den.DEN, {"l1": -1}, r"^l1"), (den.DEN, {"l1": float("nan")}, r"^l1"), (den.DEN, {"tau": float("inf")}, r"^tau"),
    (den.DEN, {"sigma": -0.1}, r"^sigma"), (den.DEN, {"k": -1}, r"^k"), (den.DEN, {"k": float("nan")}, r"^k"),
    (den.DEN, {"k": (1, 2, 3)}, r"^k"), (den.DEN, {"k": 0}, r"^k"), (den.DEN, {"expansion": "huge"}, r"^expansion"),
    (den.DEN, {"split_epochs": -1}, r"^split_epochs"), (den.EWC, {"fisher_samples": 0}, r"^fisher_samples"),
    (den.EWC, {"gamma": float("nan")}, r"^gamma"), (den.EWC, {"lam": float("inf")}, r"^lam"),
    (den.L2, {"l2_prev": float("nan")}, r"^l2_prev"), (den.Progressive, {"column": (4, -1)}, r"column\[1\]"),
])
def test_absurd_hyperparameters_are_refused_at_construction(cls, kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        cls(**{**SMALL, **kwargs})


def test_diverging_learning_rate_raises_and_keeps_the_model(fitted_dnn, tasks):
    fitted_dnn.lr = 1e30
    before = checksum(fitted_dnn)
    t = tasks[1]
    with pytest.raises(FloatingPointError, match="diverged"):
        fitted_dnn.fit_task(t.X_train * 1e15, t.y_train, n_outputs=10)
    assert checksum(fitted_dnn) == before


@pytest.mark.parametrize("value", [1e38, 3e38])
def test_huge_finite_inputs_do_not_give_nan_probabilities(fitted_den, value):
    X = np.stack([np.full(64, value), np.where(np.arange(64) % 2, value, -value)]).astype(np.float32)
    try:
        p = fitted_den.predict_proba(X, 0)
    except (ValueError, FloatingPointError):
        return
    assert np.isfinite(p).all(), p


# ---- den.load, den.datasets.load ----------------------------------------------------------------------


def test_load_refuses_non_files_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        den.load(tmp_path / "missing.den")
    with pytest.raises(IsADirectoryError):
        den.load(tmp_path)
    with pytest.raises(TypeError):
        den.load(None)
    (tmp_path / "empty.den").write_bytes(b"")
    with pytest.raises(_io.ModelFileError, match="truncated"):
        den.load(tmp_path / "empty.den")


@pytest.mark.parametrize("kwargs,exc,msg", [
    ({"name": ["digits"]}, (TypeError, ValueError), None),
    ({"name": "digits", "n_tasks": np.float64(2)}, ValueError, "n_tasks"),
    ({"name": "digits", "seed": np.float64(0)}, ValueError, "seed"),
    ({"name": "digits", "n_train": float("nan")}, ValueError, "n_train"),
    ({"name": "digits", "n_train": float("inf")}, ValueError, "n_train"),
    ({"name": "digits", "n_train": 10**9}, ValueError, "n_train"),
    ({"name": "digits", "head": None}, ValueError, "head"),
    ({"name": "awa", "path": "/nonexistent/den-data"}, FileNotFoundError, "not found"),
    ({"name": "split-cifar100", "path": "/nonexistent/den-data"}, FileNotFoundError, "not found"),
])
def test_datasets_load_refuses_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        den.datasets.load(**kwargs)


def test_datasets_load_small_and_one_sample_splits_work():
    tasks = den.datasets.load("digits", n_tasks=2, seed=2**70, n_train=1, n_val=1, n_test=1)
    assert [t.X_train.shape for t in tasks] == [(1, 64), (1, 64)]


# ---- the command line -----------------------------------------------------------------------------------

FAST = ["--quiet", "--tasks", "1", "--epochs", "1", "--hidden", "4"]


@pytest.mark.parametrize("argv,msg", [
    (["run", "--tasks", "0", "--quiet"], r"n_tasks"),
    (["run", "--dataset", "nope", "--quiet"], r"unknown data set 'nope'"),
    (["run", "--epochs", "-1", *FAST[:3]], r"epochs must be >= 0"),
    (["run", "--lr", "nan", *FAST[:3]], r"lr must be finite"),
    (["run", "--batch-size", "0", *FAST[:3]], r"batch_size"),
    (["run", "--threads", "0", *FAST[:3]], r"threads"),
    (["run", "--hidden", "0", *FAST[:3]], r"hidden\[0\]"),
    (["run", "--set", "x", *FAST], r"--set expects KEY=VALUE"),
    (["run", "--set", "den.tau=-1", *FAST], r"tau must be >= 0"),
    (["run", "--set", "foo.tau=1", *FAST], r"unknown model 'foo'"),
    (["run", "--set", "bogus=1", *FAST], r"bogus"),
    (["run", "--data", "n_train=0", *FAST], r"n_train"),
    (["run", "--data", "bogus=1", *FAST], r"bogus"),
    (["run", "--dataset", "awa", "--path", "/nonexistent/den-data", "--quiet"], r"not found"),
    (["compare", "--models", "stl,foo", *FAST], r"unknown model 'foo'"),
    (["compare", "--seeds", "0", *FAST], r"--seeds must be >= 1"),
    pytest.param(["run", "--hidden", "a,b", *FAST[:5]], r"hidden"),
    pytest.param(["compare", "--models", "", *FAST], r"models"),
    pytest.param(["run", "--model", "dnn", "--lr", "1e30", *FAST], r"diverged"),
    pytest.param(["run", "--epochs", str(10**12), *FAST[:3]], r"epochs"),
])
def test_cli_reports_bad_arguments_with_status_2(argv, msg, capsys):
    try:
        status = cli_main(argv)
    except SystemExit as e:  # argparse's own errors exit with 2 as well
        status = e.code
    assert status == 2
    assert re.search(msg, capsys.readouterr().err)


def test_cli_argparse_errors_exit_2(capsys):
    for argv in ([], ["bogus"], ["run", "--model", "nope"], ["run", "--tasks", "x"]):
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# =================================================================================================
# 3. Leaks
# =================================================================================================


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@not_under_asan
def test_repeated_fit_predict_save_load_keeps_memory_flat(tasks, tmp_path):
    path = tmp_path / "m.den"
    X = tasks[0].X_test

    def once(i):
        for cls in (den.DEN, den.DNN):
            model = cls(**{**SMALL, "epochs": 1, "seed": i})
            model.fit_all(tasks)
            model.predict_proba(X, 1)
            model.save(path)
            back = den.load(path)
            back.predict_proba(X, 0)

    for i in range(10):
        once(i)
    gc.collect()
    rss0, objects0 = rss_mb(), len(gc.get_objects())
    for i in range(30):
        once(i)
    gc.collect()
    assert rss_mb() - rss0 < 5.0, f"RSS grew by {rss_mb() - rss0:.1f} MB over 30 iterations"
    assert len(gc.get_objects()) - objects0 < 200


@not_under_asan
def test_binding_calls_keep_memory_flat():
    """Every Net method, on a net whose clone is ~80 kB: a leaked clone, work buffer or state
    copy per call would add many MB over 150 rounds."""
    rng = np.random.default_rng(0)
    net = _core.Net(64, [128, 64], seed=0)
    net.add_head("softmax", 10, 0)
    X = rng.random((64, 64), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    bad_y = y.copy()
    bad_y[5] = 99
    keep = [np.ones(128, bool), None]

    def once():
        net.train([(X, y, 0)], 1, 32, 1e-3, anchor=net.clone(), layer_reg={"pull": 0.1})
        net.predict(X, 0)
        net.features(X, 0)
        net.loss(X, y, 0)
        net.gradients(X, y, 0)
        net.fisher(X, y, 0, mode="empirical")
        _core.Net.from_state(net.get_state())
        c = net.clone()
        c.add_units([4, 4], 1)
        c.duplicate_units([np.ones(132, bool), None], 1)
        c.remove_units([np.arange(264) < 128, np.arange(68) < 64])
        net.select(0)
        net.drift(c, 0)
        for call in (lambda: net.train([(X, bad_y, 0)], 1, 32, 1e-3), lambda: net.predict(X[:, :3], 0),
                     lambda: net.remove_units([keep[0], X])):
            with pytest.raises((ValueError, TypeError)):
                call()

    for _ in range(20):
        once()
    gc.collect()
    rss0 = rss_mb()
    for _ in range(150):
        once()
    gc.collect()
    assert rss_mb() - rss0 < 4.0, f"RSS grew by {rss_mb() - rss0:.1f} MB over 150 rounds"


def test_the_binding_keeps_no_references_to_its_arguments():
    net = _core.Net(8, [6, 5], seed=0)
    net.add_head("softmax", 3, 0)
    net.add_head("sigmoid", 2, 0)
    rng = np.random.default_rng(0)
    X = rng.random((20, 8), dtype=np.float32)
    y = rng.integers(0, 3, 20).astype(np.int32)
    Ys = np.zeros((20, 2), np.float32)
    bad = y.copy()
    bad[3] = 7
    flags = np.ones(6, bool)
    units = [flags, None]
    anchor = net.clone()
    reg = {"l1": 0.01}
    callback = lambda *a: None  # noqa: E731
    watched = {"X": X, "y": y, "Ys": Ys, "bad": bad, "flags": flags, "units": units, "anchor": anchor,
               "reg": reg, "callback": callback}
    calls = [
        lambda: net.train([(X, y, 0), (X, Ys, 1)], 1, 4, 0.01, units=units, train=units, inputs=np.ones(8, bool),
                          anchor=anchor, coef=anchor, layer_reg=reg, head_reg=reg, callback=callback),
        lambda: net.train([(X, bad, 0)], 1, 4, 0.01, units=units, anchor=anchor, callback=callback),
        lambda: net.train([(X, y, 0)], 1, 4, 0.01, units=[flags, X], anchor=anchor, callback=callback),
        lambda: net.train([(X, y, 0)], 1, 4, 0.01, units=units, train_heads=[5], layer_reg=reg),
        lambda: net.train([(X, y, 0)], 2, 4, 0.01, units=units, callback=lambda *a: 1 / 0, poll_interval=1e-9),
        lambda: net.predict(X, 0), lambda: net.features(X, 0), lambda: net.loss(X, y, 0),
        lambda: net.loss(X, bad, 0), lambda: net.fisher(X, y, 0), lambda: net.gradients(X, y, 0),
        lambda: net.clone().remove_units(units), lambda: net.clone().duplicate_units(units, 0),
        lambda: net.clone().restore_units(anchor, units), lambda: net.clone().restore_units(anchor, [flags, X]),
        lambda: _core.Net.from_state(net.get_state()),
    ]
    for call in calls:
        for _ in range(3):
            try:
                call()
            except (ValueError, TypeError, IndexError, ZeroDivisionError):
                pass
    gc.collect()
    before = {k: sys.getrefcount(v) for k, v in watched.items()}
    for call in calls:
        for _ in range(20):
            try:
                call()
            except (ValueError, TypeError, IndexError, ZeroDivisionError):
                pass
    gc.collect()
    after = {k: sys.getrefcount(v) for k, v in watched.items()}
    assert after == before


def test_from_state_keeps_no_references_to_the_state_arrays():
    net = _core.Net(8, [6], seed=0)
    net.add_head("softmax", 3, 0)
    state = net.get_state()
    arrays = [layer[k] for layer in state["layers"] + state["heads"] for k in ("W", "b", "mask", "stamp")]
    broken = {**state, "heads": [{**state["heads"][0], "kind": "relu"}]}
    _core.Net.from_state(state)
    before = [sys.getrefcount(a) for a in arrays]
    for _ in range(50):
        _core.Net.from_state(state)
        with pytest.raises(ValueError):
            _core.Net.from_state(broken)
    assert [sys.getrefcount(a) for a in arrays] == before


# =================================================================================================
# 4. Files
# =================================================================================================


class FlakyFile:
    """Wraps the file den writes: the n-th write raises `exc` (disk full, Ctrl-C...)."""

    def __init__(self, f, fail_at, exc):
        self.f, self.left, self.exc = f, fail_at, exc

    def write(self, data):
        self.left -= 1
        if self.left < 0:
            raise self.exc
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("failure", ["disk-full", "ctrl-c", "fsync", "replace"])
def test_a_failed_save_keeps_the_previous_file(failure, tmp_path, monkeypatch, fitted_dnn, fitted_den):
    path = tmp_path / "m.den"
    fitted_dnn.save(path)
    previous = path.read_bytes()
    before = checksum(fitted_den)
    real_fdopen, real_fsync, real_replace = os.fdopen, os.fsync, os.replace
    exc = KeyboardInterrupt() if failure == "ctrl-c" else OSError(errno.ENOSPC, "No space left on device")
    if failure in ("disk-full", "ctrl-c"):
        monkeypatch.setattr(_io.os, "fdopen", lambda *a, **k: FlakyFile(real_fdopen(*a, **k), 3, exc))
    elif failure == "fsync":
        monkeypatch.setattr(_io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    else:
        monkeypatch.setattr(_io.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    with pytest.raises((OSError, KeyboardInterrupt)):
        fitted_den.save(path)
    monkeypatch.undo()
    assert (os.fdopen, os.fsync, os.replace) == (real_fdopen, real_fsync, real_replace)
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["m.den"], "a temporary file was left behind"
    assert weights_digest(den.load(path)) == weights_digest(fitted_dnn)
    assert checksum(fitted_den) == before, "saving changed the model"
    fitted_den.save(path)  # and the next save works
    assert weights_digest(den.load(path)) == weights_digest(fitted_den)


def test_save_to_impossible_places_leaves_nothing(tmp_path, fitted_den):
    with pytest.raises(FileNotFoundError):
        fitted_den.save(tmp_path / "no" / "such" / "dir" / "m.den")
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        fitted_den.save(tmp_path / "d")
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []


@pytest.fixture
def saved(tmp_path, fitted_den):
    path = tmp_path / "m.den"
    fitted_den.save(path)
    return path


def test_truncated_model_files_are_refused(saved):
    data = saved.read_bytes()
    for cut in sorted({1, 8, 12, 19, 20, 100, len(data) // 2, len(data) - 33, len(data) - 1}):
        saved.write_bytes(data[:cut])
        with pytest.raises(_io.ModelFileError, match="truncated|corrupt|checksum"):
            den.load(saved)


def test_corrupted_model_files_are_refused(saved):
    data = bytearray(saved.read_bytes())
    for at in (len(data) // 2, len(data) // 3, 30, len(data) - 40, len(data) - 1):
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        saved.write_bytes(bytes(damaged))
        with pytest.raises(_io.ModelFileError, match="corrupt|checksum|malformed|truncated"):
            den.load(saved)


def test_wrong_version_model_files_are_refused(saved):
    data = bytearray(saved.read_bytes())
    data[8:12] = (2).to_bytes(4, "little")
    saved.write_bytes(bytes(data))
    with pytest.raises(_io.ModelFileError, match="format version 2.*newer"):
        den.load(saved)


def rewrite(path, edit=None, kind=None):
    """Rewrite a model file with edited meta/arrays and a VALID checksum (what a buggy writer
    or a hand-edited file would look like)."""
    k, meta, arrays = _io.read_model(path)
    if edit:
        edit(meta, arrays)
    _io.write_model(path, kind or k, meta, arrays)


def _layer0(meta):
    return meta["nets"]["main"]["layers"][0]


INCONSISTENT = [
    ("missing-array", lambda m, a: a.pop("main/layers/0/W")),
    ("skeleton-points-nowhere", lambda m, a: _layer0(m).update(W={"$array": "main/nope"})),
    ("skeleton-name-not-a-string", lambda m, a: _layer0(m).update(W={"$array": [1]})),
    ("inconsistent-shapes", lambda m, a: a.update({"main/layers/0/W": a["main/layers/0/W"][:, :10].copy()})),
    ("wrong-dtype", lambda m, a: a.update({"main/layers/0/W": a["main/layers/0/W"].astype(np.float64)})),
    ("mask-as-uint8", lambda m, a: a.update({"main/layers/0/mask": a["main/layers/0/mask"].astype(np.uint8)})),
    ("0-d-weights", lambda m, a: a.update({"main/layers/0/W": np.float32(1)})),
    ("nan-weight", lambda m, a: a["main/layers/0/W"].__setitem__((0, 0), np.nan)),
    ("weight-under-mask", lambda m, a: (a["main/layers/0/mask"].__setitem__((0, 0), False),
                                        a["main/layers/0/W"].__setitem__((0, 0), 1.0))),
    ("params-missing", lambda m, a: m.pop("params")),
    ("params-unknown", lambda m, a: m["params"].update(bogus=1)),
    ("params-bad-value", lambda m, a: m["params"].update(hidden="abc")),
    ("params-not-a-dict", lambda m, a: m.update(params=[1])),
    ("nets-missing", lambda m, a: m.pop("nets")),
    ("extra-missing", lambda m, a: m.pop("extra")),
    ("net-state-not-a-dict", lambda m, a: m["nets"].update(main="x")),
    ("layers-not-a-list", lambda m, a: m["nets"]["main"].update(layers={"0": 1})),
    pytest.param("nets-not-a-dict", lambda m, a: m.update(nets=[m["nets"]["main"]])),
    pytest.param("net-missing", lambda m, a: m.update(nets={})),
    pytest.param("tasks-without-heads", lambda m, a: m.update(tasks=m["tasks"] * 3)),
    pytest.param("tasks-wrong-width", lambda m, a: m["tasks"][0].update(n_outputs=3)),
    pytest.param("n_features-wrong", lambda m, a: m.update(n_features=10)),
    pytest.param("tasks-not-a-list", lambda m, a: m.update(tasks="garbage")),
]


@pytest.mark.parametrize("case,edit", INCONSISTENT, ids=lambda v: v if isinstance(v, str) else "-")
def test_inconsistent_model_files_raise_model_file_error(saved, tasks, case, edit):
    rewrite(saved, edit)
    try:
        model = den.load(saved)
    except _io.ModelFileError:
        return
    # a file den accepts must give a working model
    for t in range(model.n_tasks):
        assert model.predict_proba(tasks[t].X_test[:3], t).shape == (3, model.task_info(t)["n_outputs"])
    model.fit_task(tasks[1].X_train, tasks[1].y_train, tasks[1].X_val, tasks[1].y_val)
    pytest.fail(f"den.load accepted the {case} file")  # every file in this list is inconsistent


@pytest.mark.parametrize("kind", ["DNN", "STL", "MTL"])
def test_a_den_file_relabelled_as_another_kind_is_refused(saved, kind):
    rewrite(saved, kind=kind)
    with pytest.raises(_io.ModelFileError, match="inconsistent"):
        den.load(saved)


@pytest.mark.parametrize("kind,expected", [
    pytest.param("Model", "an internal base class"),
    pytest.param("STL", "needs task0, task1 nets"),
    pytest.param("EWC", "needs anchor and fisher nets"),
])
def test_a_file_missing_what_its_kind_needs_is_refused(tmp_path, fitted_dnn, tasks, kind, expected):
    t = tasks[1]
    fitted_dnn.fit_task(t.X_train, t.y_train, t.X_val, t.y_val)
    path = tmp_path / "m.den"
    fitted_dnn.save(path)
    rewrite(path, kind=kind)
    with pytest.raises(_io.ModelFileError):
        model = den.load(path)
        model.predict_proba(t.X_test, 1)
        model.fit_task(t.X_train, t.y_train, t.X_val, t.y_val)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("DEN_PWNED", "/nonexistent/pwned"),))


def test_loading_never_runs_code_from_the_file(tmp_path, monkeypatch, fitted_den, tasks):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("DEN_PWNED", str(marker))
    payload = pickle.dumps(_Evil(), protocol=0).decode("latin-1")
    assert b"system" in payload.encode("latin-1")

    def forbidden(*args, **kwargs):
        raise AssertionError("den.load used pickle")

    path = tmp_path / "m.den"
    fitted_den.history[0]["note"] = payload
    fitted_den.save(path)
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    back = den.load(path)
    assert back.history[0]["note"] == payload  # an inert string, round-tripped verbatim
    np.testing.assert_array_equal(back.predict_proba(tasks[0].X_test, 0), fitted_den.predict_proba(tasks[0].X_test, 0))
    # a payload where den expects a value is refused, not run
    rewrite(path, lambda m, a: m["params"].update(head=payload))
    with pytest.raises(_io.ModelFileError):
        den.load(path)
    rewrite(path, lambda m, a: m["params"].update(hidden=[payload]))
    with pytest.raises(_io.ModelFileError):
        den.load(path)
    assert not marker.exists()


# =================================================================================================
# 5. Interrupts and threads
# =================================================================================================


@pytest.mark.parametrize("cls", [den.DNN, den.DEN])
def test_ctrl_c_stops_a_long_stage_quickly_and_keeps_a_usable_model(cls, tasks):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not handled by Python's default handler here")
    t0, t1 = tasks
    model = cls(**SMALL)
    model.fit_task(t0.X_train, t0.y_train, t0.X_val, t0.y_val)
    model.epochs = 100_000  # a stage that would run for many minutes
    big_X, big_y = np.repeat(t1.X_train, 50, axis=0), np.repeat(t1.y_train, 50)
    before = checksum(model)
    sent = {}

    def ctrl_c():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.5, ctrl_c)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit_task(big_X, big_y, t1.X_val, t1.y_val)
        stopped = time.perf_counter()
    finally:
        timer.cancel()
    assert "at" in sent, "training ended before the signal"
    assert stopped - sent["at"] < 1.5, f"stopped {stopped - sent['at']:.2f} s after Ctrl-C"
    assert checksum(model) == before
    model.epochs = SMALL["epochs"]
    assert model.predict_proba(t0.X_test, 0).shape == (len(t0.X_test), 10)
    assert model.fit_task(t1.X_train, t1.y_train, t1.X_val, t1.y_val) == 1


def test_two_models_in_two_threads_match_one_after_the_other():
    tasks = den.datasets.load("digits", n_tasks=2, seed=0)  # full size: enough work to overlap
    threads_before = den.get_num_threads()
    den.set_num_threads(1)
    try:
        def learn(cls, seed):
            model = cls(**{**SMALL, "epochs": 8, "seed": seed})
            model.fit_all(tasks)
            return model

        plan = [(den.DEN, 0), (den.EWC, 1)]
        alone = [weights_digest(learn(cls, seed)) for cls, seed in plan]
        together, spans = [None, None], [None, None]
        barrier = threading.Barrier(2)

        def worker(i):
            barrier.wait()
            start = time.perf_counter()
            together[i] = weights_digest(learn(*plan[i]))
            spans[i] = (start, time.perf_counter())

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert together == alone
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the two fits did not overlap"
    finally:
        den.set_num_threads(threads_before)


# =================================================================================================
# 6. Determinism
# =================================================================================================

FINGERPRINT = r'''
import hashlib, json, sys
import numpy as np
import den

def fingerprint(seed):
    tasks = den.datasets.load("digits", n_tasks=2, seed=seed, n_train=300, n_val=60)
    model = den.DEN(hidden=(16, 8), epochs=3, batch_size=32, lr=0.01, seed=seed)
    result = den.run(model, tasks, progress=False)
    h = hashlib.sha256()
    for name in sorted(model._nets):
        state = model._nets[name].get_state()
        for layer in state["layers"] + state["heads"]:
            for key in ("W", "b", "mask", "stamp"):
                h.update(layer[key].tobytes())
    h.update(np.ascontiguousarray(result.auroc).tobytes())
    h.update(json.dumps(model._tasks).encode())
    return h.hexdigest()

if __name__ == "__main__":
    den.set_num_threads(1)
    print(fingerprint(int(sys.argv[1])))
'''


def test_same_seed_same_weights_and_auroc_in_one_process_and_across_processes(children):
    scope = {"__name__": "fingerprint"}
    exec(compile(FINGERPRINT, "fingerprint", "exec"), scope)
    threads_before = den.get_num_threads()
    den.set_num_threads(1)
    try:
        here = [scope["fingerprint"](0), scope["fingerprint"](0)]
        other_seed = scope["fingerprint"](1)
    finally:
        den.set_num_threads(threads_before)
    there = [finish(p, timeout=120) for p in children["fingerprint"]]
    assert here[0] == here[1], "two runs in one process differ"
    assert there[0] == there[1], "two processes differ"
    assert here[0] == there[0], "this process and a fresh one differ"
    assert other_seed != here[0], "the fingerprint does not depend on the seed"


# =================================================================================================
# 1b. Absurd sizes (at the end: their child process runs while the tests above do)
# =================================================================================================

# Cases that could allocate a lot run in a child process under RLIMIT_AS (1.5 GB), so that a bug
# shows as a MemoryError in the report instead of the OOM killer. Each prints the exception
# (or "ok") and, for model cases, whether the model kept its checksum.
HUGE_CASES = r'''
import json, resource, sys, hashlib
resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))
import numpy as np
import den
from den import _core

tasks = den.datasets.load("digits", n_tasks=2, seed=0, n_train=300, n_val=60)
t = tasks[0]
SMALL = dict(hidden=(16, 8), epochs=1, batch_size=32, lr=0.01, seed=0)

def digest(model):
    h = hashlib.sha256()
    for name in sorted(model._nets):
        for layer in model._nets[name].get_state()["layers"] + model._nets[name].get_state()["heads"]:
            for key in ("W", "b", "mask", "stamp"):
                h.update(layer[key].tobytes())
    h.update(json.dumps([model._tasks, model.history], default=repr).encode())
    return h.hexdigest()

def fit(make, **fit_kw):
    def go():
        model = make()
        model.fit_task(t.X_train, t.y_train, t.X_val, t.y_val)
        before = digest(model)
        try:
            nxt = tasks[1]
            kw = {"X": nxt.X_train, "y": nxt.y_train, "X_val": nxt.X_val, "y_val": nxt.y_val}
            kw.update(fit_kw)
            model.fit_task(kw.pop("X"), kw.pop("y"), kw.pop("X_val"), kw.pop("y_val"), **kw)
        finally:
            go.kept = digest(model) == before
    go.kept = None
    return go

def net_grown():  # 2**24 units reading 2**8 inputs: 2**32 weights
    n = _core.Net(2**8, [2**8])
    n.add_units([2**24 - 2**8], 0)

def wide_head():  # 2**24 - 1 outputs reading 2**8 units
    n = _core.Net(2**8, [2**8])
    n.add_head("sigmoid", 2**24 - 1, 0)

big_label = t.y_train.copy(); big_label[0] = 10**12
CASES = {
    "net-2^24x2^24": lambda: _core.Net(2**24, [2**24]),
    "net-2^16x2^16": lambda: _core.Net(2**16, [2**16]),
    "net-grown-past-2^31": net_grown,
    "head-past-2^31": wide_head,
    "hidden-1e9": fit(lambda: den.DNN(**{**SMALL, "hidden": (10**9,)})),
    "k-1e9": fit(lambda: den.DEN(**{**SMALL, "k": 10**9, "tau": 0.0})),
    "column-1e9": fit(lambda: den.Progressive(**{**SMALL, "column": (10**9, 4)})),
    "n_outputs-1e9": fit(lambda: den.DNN(**SMALL), n_outputs=10**9),
    "n_outputs-1e9-softmax": fit(lambda: den.DNN(**SMALL), n_outputs=10**9, head="softmax"),
    "label-1e12": fit(lambda: den.DNN(**SMALL), y=np.where(np.arange(len(tasks[1].y_train)) == 0, 10**12, tasks[1].y_train)),
    "epochs-1e7": fit(lambda: den.DNN(**{**SMALL, "epochs": 10**7})),
    "epochs-1e12": fit(lambda: den.DNN(**{**SMALL, "epochs": 10**12})),
    "batch_size-1e12": fit(lambda: den.DNN(**{**SMALL, "batch_size": 10**12})),
    "seed-2^70": fit(lambda: den.DNN(**{**SMALL, "seed": 2**70})),
    "fisher_samples-1e12": fit(lambda: den.EWC(**{**SMALL, "fisher_samples": 10**12})),
    "n_tasks-1e9": lambda: den.datasets.load("digits", n_tasks=10**9),  # last: fills the address space
}
out = {}
for name, case in CASES.items():
    try:
        case()
        out[name] = {"exc": "ok", "msg": ""}
    except BaseException as e:
        out[name] = {"exc": type(e).__name__, "msg": str(e)[:300]}
    out[name]["kept"] = getattr(case, "kept", None)
print(json.dumps(out))
'''


HUGE_USERS = {"test_layers_too_big_for_the_core_raise_instead_of_crashing",
              "test_layers_too_big_for_the_core_are_refused_up_front",
              "test_absurd_sizes_give_a_clear_error_and_keep_the_model", "test_absurd_task_count_is_refused_up_front"}
DETERMINISM_USERS = {"test_same_seed_same_weights_and_auroc_in_one_process_and_across_processes"}


@pytest.fixture(scope="module", autouse=True)
def children(request):
    """The child processes that the selected tests of this module need, started at once so that
    they run while the other tests do (each spends ~2 s importing den); killed at the end if
    still running."""
    names = {item.originalname for item in request.session.items if item.module is request.module}
    env = child_env(OPENBLAS_NUM_THREADS="1")

    def start(*args):
        return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=DEN_HOME)

    procs = {}
    if names & HUGE_USERS and not UNDER_ASAN:
        procs["huge"] = [start(HUGE_CASES)]
    if names & DETERMINISM_USERS:
        procs["fingerprint"] = [start(FINGERPRINT, "0"), start(FINGERPRINT, "0")]
    yield procs
    for group in procs.values():
        for p in group:
            if p.poll() is None:
                p.kill()
            p.communicate()


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out.strip()


@pytest.fixture(scope="module")
def huge(children):
    if UNDER_ASAN:
        pytest.skip("address-space limits cannot be used under ASan")
    return json.loads(finish(children["huge"][0]).splitlines()[-1])


CLEAR = ("ValueError", "TypeError", "OverflowError")


def _expect(outcome, allowed, msg):
    assert outcome["exc"] in allowed, outcome
    if outcome["exc"] != "ok":
        assert re.search(msg, outcome["msg"]), outcome
        assert outcome["kept"] in (None, True), "the failed fit changed the model"


@pytest.mark.parametrize("case", ["net-2^24x2^24", "net-2^16x2^16", "net-grown-past-2^31", "head-past-2^31"])
def test_layers_too_big_for_the_core_raise_instead_of_crashing(huge, case):
    """The process survives and reports an exception (whatever it is)."""
    assert huge[case]["exc"] != "ok", huge[case]


@pytest.mark.parametrize("case", ["net-2^24x2^24", "net-2^16x2^16", "net-grown-past-2^31", "head-past-2^31"])
def test_layers_too_big_for_the_core_are_refused_up_front(huge, case):
    _expect(huge[case], CLEAR, r"widths|n_input|counts|k\b|too large|32-bit")


@pytest.mark.parametrize("case,allowed,msg", [
    ("hidden-1e9", CLEAR, r"hidden|widths"),
    ("epochs-1e7", CLEAR, r"epochs"),
    ("n_outputs-1e9-softmax", CLEAR, r"n_outputs|\bk\b"),
    ("seed-2^70", ("ok",), ""),
    ("fisher_samples-1e12", ("ok",), ""),
    pytest.param("k-1e9", CLEAR, r"\bk\b"),
    pytest.param("column-1e9", CLEAR, r"column"),
    pytest.param("n_outputs-1e9", CLEAR, r"n_outputs"),
    pytest.param("label-1e12", CLEAR, r"\by\b"),
    pytest.param("epochs-1e12", CLEAR, r"epochs"),
    pytest.param("batch_size-1e12", ("ok",) + CLEAR, r"batch_size"),
])
def test_absurd_sizes_give_a_clear_error_and_keep_the_model(huge, case, allowed, msg):
    _expect(huge[case], allowed, msg)


def test_absurd_task_count_is_refused_up_front(huge):
    _expect(huge["n_tasks-1e9"], ("ValueError",), r"n_tasks")
