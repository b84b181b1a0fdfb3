"""The Python models end to end on digits: learning, forgetting, bad input, files, results, CLI."""

import json

import numpy as np
import pytest

import den
from conftest import same_state

SMALL = {"hidden": (32, 16), "epochs": 15, "batch_size": 32, "lr": 0.005, "seed": 0}


@pytest.fixture(scope="module")
def tasks():
    return den.datasets.load("digits", n_tasks=4, seed=0)


@pytest.fixture(scope="module")
def dnn_result(tasks):
    return den.run(den.DNN(**SMALL), tasks, progress=False)


def test_stl_reaches_high_auroc(tasks):
    r = den.run(den.STL(**SMALL), tasks, progress=False)
    assert r.mean_auroc > 0.99
    assert r.capacity[-1] == pytest.approx(4 * r.base_params, rel=0.01)


def test_dnn_forgets_earlier_tasks(dnn_result):
    R = dnn_result.auroc
    # task 0 right after learning it vs after three more tasks
    assert R[0, 0] > 0.99
    assert R[0, 0] - R[-1, 0] > 0.005, R
    assert np.isnan(R[0, 1:]).all(), "tasks not learned yet are not scored"


def test_run_result_round_trips_through_json(dnn_result, tmp_path):
    path = tmp_path / "r.json"
    dnn_result.to_json(path)
    back = den.RunResult.from_json(path)
    np.testing.assert_array_equal(back.auroc, dnn_result.auroc)
    np.testing.assert_array_equal(back.capacity, dnn_result.capacity)
    assert back.seconds == dnn_result.seconds and back.params == dnn_result.params
    assert json.loads(back.to_json()) == json.loads(dnn_result.to_json())
    with pytest.raises(ValueError, match="not a den run result"):
        den.RunResult.from_json('{"format": "other"}')


def test_stage_seconds_are_recorded(dnn_result):
    assert all(s.get("train", 0) > 0 for s in dnn_result.seconds)
    assert dnn_result.total_seconds >= sum(dnn_result.stage_seconds().values())


def model_state(model):
    return {name: net.get_state() for name, net in model._nets.items()}


def unchanged(model, before_states, before_tasks):
    after = model_state(model)
    return (after.keys() == before_states.keys() and all(same_state(after[k], before_states[k]) for k in after)
            and model._tasks == before_tasks)


@pytest.fixture
def fitted(tasks):
    m = den.DNN(**SMALL)
    t = tasks[0]
    m.fit_task(t.X_train, t.y_train, n_outputs=t.n_outputs)
    return m


@pytest.mark.parametrize("change,exc,msg", [
    (lambda t: {"X": t.X_train[:, :10]}, ValueError, "X has 10 features"),
    (lambda t: {"X": np.where(np.arange(t.X_train.size).reshape(t.X_train.shape) == 5, np.nan, t.X_train)},
     ValueError, "X contains NaN"),
    (lambda t: {"y": t.y_train[:-1]}, ValueError, "y has"),
    (lambda t: {"y": t.y_train + 10}, ValueError, "label"),
    (lambda t: {"y": -t.y_train - 1}, ValueError, "negative"),
    (lambda t: {"y": t.y_train.astype(float) + 0.5}, TypeError, "integer"),
    (lambda t: {"X": t.X_train[:0], "y": t.y_train[:0]}, ValueError, "rows"),
    (lambda t: {"X": t.X_train.astype(object)}, TypeError, "numbers"),
    (lambda t: {"X": t.X_train.reshape(-1)}, ValueError, "2-d"),
    (lambda t: {"head": "tanh"}, ValueError, "head"),
    (lambda t: {"X_val": t.X_val}, ValueError, "together"),
])
def test_bad_task_data_raises_and_leaves_the_model(fitted, tasks, change, exc, msg):
    t = tasks[1]
    args = {"X": t.X_train, "y": t.y_train, "X_val": None, "y_val": None, "n_outputs": t.n_outputs,
            "head": "sigmoid", **change(t)}
    before, before_tasks = model_state(fitted), list(fitted._tasks)
    with pytest.raises(exc, match=msg):
        fitted.fit_task(args["X"], args["y"], args["X_val"], args["y_val"], n_outputs=args["n_outputs"],
                        head=args["head"])
    assert unchanged(fitted, before, before_tasks)


@pytest.mark.parametrize("task,exc", [(1, ValueError), (-1, ValueError), ("0", TypeError), (True, TypeError),
                                      (0.0, TypeError)])
def test_unknown_task_ids(fitted, tasks, task, exc):
    with pytest.raises(exc, match="task"):
        fitted.predict_proba(tasks[0].X_test, task)
    with pytest.raises(exc, match="task"):
        fitted.n_params(task)


def test_an_interrupted_fit_leaves_the_model_as_it_was(fitted, tasks, monkeypatch):
    before, before_tasks = model_state(fitted), list(fitted._tasks)
    t = tasks[1]
    calls = {"n": 0}

    def interrupt(self, *args):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(den._progress.StageBar, "__call__", interrupt)
    fitted.progress = True
    big = np.repeat(t.X_train, 20, axis=0)
    with pytest.raises(KeyboardInterrupt):
        fitted.fit_task(big, np.repeat(t.y_train, 20), n_outputs=10)
    monkeypatch.undo()
    fitted.progress = False
    assert calls["n"] > 3
    assert unchanged(fitted, before, before_tasks)
    # and it still works
    assert fitted.fit_task(t.X_train, t.y_train, n_outputs=10) == 1


@pytest.mark.parametrize("cls,kwargs", [(den.STL, {}), (den.DNN, {}), (den.L2, {"l2_prev": 0.5}),
                                        (den.EWC, {"lam": 10.0, "fisher_samples": 200}),
                                        (den.Progressive, {"column": (8, 4)})])
def test_save_load_round_trip(tasks, tmp_path, cls, kwargs):
    m = cls(**SMALL, **kwargs)
    for t in tasks[:3]:
        m.fit_task(t.X_train, t.y_train, n_outputs=t.n_outputs)
    path = tmp_path / "m.den"
    m.save(path)
    back = den.load(path)
    assert type(back) is cls and back.get_params() == m.get_params() and back.history == m.history
    for j in range(3):
        assert np.array_equal(back.predict_proba(tasks[j].X_test, j), m.predict_proba(tasks[j].X_test, j))
        assert back.n_params(j) == m.n_params(j)
    # learning continues identically after a reload
    t = tasks[3]
    m.fit_task(t.X_train, t.y_train, n_outputs=10)
    back.fit_task(t.X_train, t.y_train, n_outputs=10)
    assert np.array_equal(back.predict_proba(t.X_test, 3), m.predict_proba(t.X_test, 3))


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "x.den"
    path.write_bytes(b"not a model")
    with pytest.raises(den._io.ModelFileError):
        den.load(path)
    den._io.write_model(path, "Nonsense", {}, {})
    with pytest.raises(den._io.ModelFileError, match="Nonsense"):
        den.load(path)


@pytest.mark.parametrize("cls,kwargs,msg", [
    (den.DNN, {"hidden": ()}, "hidden"), (den.DNN, {"hidden": (0,)}, "hidden"), (den.DNN, {"epochs": -1}, "epochs"),
    (den.DNN, {"lr": 0}, "lr"), (den.DNN, {"lr": float("nan")}, "lr"), (den.DNN, {"optimizer": "lbfgs"}, "optimizer"),
    (den.DNN, {"batch_size": 0}, "batch_size"), (den.DNN, {"head": "relu"}, "head"),
    (den.L2, {"l2_prev": -1}, "l2_prev"), (den.EWC, {"lam": -1}, "lam"), (den.EWC, {"fisher": "x"}, "fisher"),
    (den.EWC, {"gamma": 2}, "gamma"), (den.Progressive, {"column": (4,)}, "column"),
    (den.DNN, {"seed": -1}, "seed"), (den.DNN, {"epochs": 1.5}, "epochs"),
])
def test_bad_hyperparameters(cls, kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        cls(**kwargs)


def test_mtl_learns_jointly_only(tasks):
    m = den.MTL(**SMALL)
    with pytest.raises(TypeError, match="fit_all"):
        m.fit_task(tasks[0].X_train, tasks[0].y_train)
    m.fit_all(tasks[:2])
    assert m.n_tasks == 2
    with pytest.raises(RuntimeError, match="already"):
        m.fit_all(tasks[:2])


def test_predict_returns_labels(fitted, tasks):
    p = fitted.predict_proba(tasks[0].X_test, 0)
    assert p.shape == (len(tasks[0].X_test), 10) and p.dtype == np.float32
    assert np.array_equal(fitted.predict(tasks[0].X_test, 0), p.argmax(1))
    assert fitted.predict_proba(tasks[0].X_test[:0], 0).shape == (0, 10)


def test_auroc_matches_sklearn_by_hand():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    p = rng.random((50, 3))
    expected = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(3)])
    assert den.evaluate.auroc_score(y, p) == pytest.approx(expected)
    # undefined when only one class is present
    assert np.isnan(den.evaluate.auroc_score(np.zeros(5, int), rng.random((5, 1))))


def test_cli_runs_end_to_end(tmp_path, capsys):
    from den.cli import main

    out = tmp_path / "r.json"
    assert main(["run", "--model", "dnn", "--tasks", "2", "--epochs", "2", "--hidden", "16,8", "--quiet",
                 "--out", str(out)]) == 0
    assert den.RunResult.from_json(out).n_tasks == 2
    assert main(["compare", "--models", "stl,dnn", "--tasks", "2", "--epochs", "2", "--hidden", "16,8", "--quiet",
                 "--out", str(tmp_path / "cmp"), "--set", "dnn.lr=0.002"]) == 0
    printed = capsys.readouterr().out
    assert "| STL |" in printed and "| DNN |" in printed
    assert (tmp_path / "cmp" / "summary.json").exists()
    assert main(["run", "--model", "dnn", "--set", "nonsense=1", "--quiet", "--tasks", "1"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_module_entry_point_runs_in_a_child(tmp_path):
    import subprocess
    import sys

    from children import child_env

    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "den", "run", "--model", "dnn", "--tasks", "1", "--epochs", "1",
                           "--hidden", "8", "--quiet", "--out", str(out)],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert den.RunResult.from_json(out).n_tasks == 1


def test_source_tree_without_core_says_what_to_do(tmp_path):
    # `python -m den` from a fresh checkout imports the checkout, which has no compiled core
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(den.__file__).parent
    shutil.copytree(src, tmp_path / "den", ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import den"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode != 0
    assert "den._core" in proc.stderr and "build_ext --inplace" in proc.stderr and str(tmp_path) in proc.stderr
    # a core that is there but cannot load keeps its own error, not the advice above
    core = next(src.glob("_core*"))
    (tmp_path / "den" / core.name).write_bytes(b"not a shared library")
    proc = subprocess.run([sys.executable, "-c", "import den"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "build_ext --inplace" not in proc.stderr
