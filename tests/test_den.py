"""DEN's invariants, each a test: sparsity, selective retraining touches only S, expansion and
pruning, split restores originals exactly, timestamps, bounded drift, files, ablations, errors."""

import copy
import dataclasses

import numpy as np
import pytest

import den
from conftest import same_state

BASE = {"hidden": (32, 16), "epochs": 20, "batch_size": 32, "lr": 0.005, "l1": 1e-3, "group_lasso": 1e-3, "l2_prev": 0.1,
        "seed": 0}


@pytest.fixture(scope="module")
def tasks():
    return den.datasets.load("digits", n_tasks=4, seed=0)


def fit(model, task):
    return model.fit_task(task.X_train, task.y_train, task.X_val, task.y_val, n_outputs=task.n_outputs)


def state(model):
    return model._nets["main"].get_state()


def test_first_task_is_sparse(tasks):
    m = den.DEN(**BASE)
    fit(m, tasks[0])
    s = state(m)
    zeros = sum(int((l["W"] == 0).sum()) for l in s["layers"])
    total = sum(l["W"].size for l in s["layers"])
    assert zeros / total == pytest.approx(m.history[0]["sparsity"])
    assert m.history[0]["sparsity"] > 0.2, "L1 with proximal steps must give exact zeros"
    # and the head still works
    assert den.evaluate.auroc(m, tasks[:1])[0] > 0.99


def test_selective_retraining_changes_only_the_selected_subnetwork(tasks):
    m = den.DEN(**{**BASE, "hidden": (64, 32)}, expansion="none", split=False)   # DNN-L2-Selective
    fit(m, tasks[0])
    before = state(m)
    fit(m, tasks[1])
    after = state(m)
    assert m.history[1]["removed_dead"] == [0, 0], "units keep their positions for this comparison"
    sel = [np.zeros(len(l["b"]), bool) for l in before["layers"]]
    for l, idx in enumerate(m.history[1]["selected_units"]):
        sel[l][idx] = True
    assert any(0 < s.sum() < len(s) for s in sel), "the test needs a proper subset to mean anything"
    for l in range(2):
        W0, W1 = before["layers"][l]["W"], after["layers"][l]["W"]
        assert np.array_equal(W0[~sel[l]], W1[~sel[l]]), f"layer {l}: unselected units changed"
        assert np.array_equal(before["layers"][l]["b"][~sel[l]], after["layers"][l]["b"][~sel[l]])
        if l > 0:  # selected units' weights from unselected units below stay as they were (zero)
            cols = ~sel[l - 1]
            assert np.array_equal(W0[np.ix_(sel[l], cols)], W1[np.ix_(sel[l], cols)])
        assert not np.array_equal(W0[sel[l]], W1[sel[l]]), "selected units were retrained"
    assert np.array_equal(before["heads"][0]["W"], after["heads"][0]["W"]), "old head untouched"
    assert m.units_by_task().sum(axis=1).tolist() == [len(l["b"]) for l in before["layers"]], \
        "no growth without expansion"


@pytest.fixture(scope="module")
def copy_and_new(tasks):
    """task 0, an exact copy of task 0, then a new permutation."""
    return [tasks[0], dataclasses.replace(tasks[0], name="copy of task 0"), tasks[1]]


def test_expansion_triggers_on_a_new_task_not_on_a_copy(copy_and_new):
    m = den.DEN(**BASE, tau=0.6, split=False)
    for t in copy_and_new:
        fit(m, t)
    copy_report, new_report = m.history[1], m.history[2]
    assert copy_report["val_loss"] < 0.6 and copy_report["added"] == [0, 0]
    assert new_report["val_loss"] > 0.6 and new_report["added"] == [10, 10]
    kept = new_report["kept"]
    assert m.units_by_task()[:, 2].tolist() == kept, "kept units are the ones born at task 2"
    assert m.units_by_task()[:, 1].tolist() == [0, 0]


def test_pruned_units_are_gone(tasks):
    m = den.DEN(**{**BASE, "group_lasso": 0.05}, tau=0.0, split=False)
    for t in tasks[:2]:
        fit(m, t)
    net = m._nets["main"]
    s = net.get_state()
    assert m.history[1]["kept"] != m.history[1]["added"], "strong group lasso should delete some new units"
    for l, layer in enumerate(s["layers"]):
        born = layer["stamp"] == 1
        dead = net.dead_units(l)
        assert not (dead & born).any(), "no dead unit born at task 1 may remain"
        assert int(born.sum()) == m.history[1]["kept"][l]


def test_split_restores_originals_exactly_and_stamps_duplicates(tasks):
    m = den.DEN(**BASE, tau=1e9, sigma=0.05)
    fit(m, tasks[0])
    before = state(m)
    fit(m, tasks[1])
    after = state(m)
    dup = m.history[1]["duplicated_units"]
    assert sum(map(len, dup)) > 0, "a small sigma must split some units"
    for l, idx in enumerate(dup):
        n_old = len(before["layers"][l]["b"])
        W0, W1 = before["layers"][l]["W"], after["layers"][l]["W"]
        assert np.array_equal(W1[idx, : W0.shape[1]], W0[idx]), "originals get their t-1 weights back exactly"
        assert not W1[idx, W0.shape[1]:].any()
        assert np.array_equal(after["layers"][l]["b"][idx], before["layers"][l]["b"][idx])
        assert (after["layers"][l]["stamp"][n_old:] == 1).all()


def test_units_born_later_never_reach_earlier_tasks(tasks):
    m = den.DEN(**BASE, tau=0.0, sigma=0.05)
    for t in tasks[:3]:
        fit(m, t)
    net = m._nets["main"]
    X = tasks[0].X_test
    p0 = m.predict_proba(X, 0)
    s = net.get_state()
    assert any((l["stamp"] > 0).any() for l in s["layers"]), "the test needs units born after task 0"
    for layer in s["layers"]:
        later = layer["stamp"] > 0
        layer["W"][later] = np.where(layer["mask"][later], 7.0, 0.0).astype(np.float32)
        layer["b"][later] = -3.0
    m._nets["main"] = type(net).from_state(s)
    assert np.array_equal(m.predict_proba(X, 0), p0)


def test_earlier_tasks_drift_within_a_stated_bound(tasks):
    """Bound: task 0's test AUROC drops by at most 0.01 after three more tasks (DNN drops more)."""
    r = den.run(den.DEN(**BASE, tau=0.6), tasks, progress=False)
    drop = r.auroc[0, 0] - r.auroc[-1, 0]
    assert drop <= 0.01, r.auroc
    shared = {k: v for k, v in BASE.items() if k in ("hidden", "epochs", "batch_size", "lr", "seed")}
    dnn = den.run(den.DNN(**shared), tasks, progress=False)
    assert dnn.auroc[0, 0] - dnn.auroc[-1, 0] > drop


def test_save_load_is_identical(tasks, tmp_path):
    m = den.DEN(**BASE, tau=0.0, sigma=0.05)
    for t in tasks[:3]:
        fit(m, t)
    m.save(tmp_path / "den.den")
    back = den.load(tmp_path / "den.den")
    assert same_state(state(back), state(m)) and back.history == m.history and back.get_params() == m.get_params()
    for j in range(3):
        assert np.array_equal(back.predict_proba(tasks[j].X_test, j), m.predict_proba(tasks[j].X_test, j))
    fit(m, tasks[3])
    fit(back, tasks[3])
    assert same_state(state(back), state(m)), "learning continues identically after a reload"


def test_ablations(tasks):
    const = den.DEN(**BASE, expansion="constant", k=3, split=False)
    none = den.DEN(**BASE, expansion="none", split=False)
    for t in tasks[:3]:
        fit(const, t)
        fit(none, t)
    assert const.units_by_task().tolist() == [[32, 3, 3], [16, 3, 3]]
    assert (none.units_by_task()[:, 1:] == 0).all(), "expansion='none' never adds units"
    # without timestamps, a task's prediction reads units born later
    stamped = den.DEN(**BASE, tau=0.0, sigma=0.05)
    for t in tasks[:2]:
        fit(stamped, t)
    assert sum(map(len, stamped.history[1]["duplicated_units"])) > 0
    loose = copy.deepcopy(stamped)
    loose.timestamps = False
    X = tasks[0].X_test
    assert not np.array_equal(loose.predict_proba(X, 0), stamped.predict_proba(X, 0)), \
        "duplicates feed old units: only timestamps keep them from task 0"
    assert loose.n_params(0) > stamped.n_params(0)


def test_finetune_trains_on_all_tasks_at_the_end(tasks):
    m = den.DEN(**BASE, tau=0.6, finetune=True, finetune_epochs=3)
    r = den.run(m, tasks[:3], progress=False)
    assert "finetune" in m.history[-1]["seconds"]
    assert np.isfinite(r.auroc[-1]).all()
    plain = den.DEN(**BASE, tau=0.6)
    plain.fit_all(tasks[:3])
    assert "finetune" not in plain.history[-1]["seconds"]


def test_validation_data_is_required_for_dynamic_expansion(tasks):
    m = den.DEN(**BASE)
    fit(m, tasks[0])
    t = tasks[1]
    with pytest.raises(ValueError, match="X_val"):
        m.fit_task(t.X_train, t.y_train)
    assert m.n_tasks == 1
    den.DEN(**BASE, expansion="none").fit_task(t.X_train, t.y_train)  # fine without


@pytest.mark.parametrize("kwargs,msg", [
    ({"l1": -1}, "l1"), ({"l2_prev": -0.1}, "l2_prev"), ({"group_lasso": -1}, "group_lasso"), ({"tau": -1}, "tau"),
    ({"sigma": float("nan")}, "sigma"), ({"k": 0}, "k"), ({"k": (1, 2, 3)}, "k"), ({"k": -1}, "k"),
    ({"expansion": "grow"}, "expansion"), ({"head_epochs": -2}, "head_epochs"), ({"k": 2.5}, "k"),
])
def test_bad_hyperparameters(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        den.DEN(**kwargs)
    den.DEN(k=0, expansion="none")  # k=0 is fine when nothing expands
