"""The regression suite of the paper's comparison: each method's promise, on digits, fixed seeds.

Properties, not fragile exact numbers: Progressive never changes an earlier task; L2 and EWC
forget less than DNN; zero-strength L2/EWC are DNN exactly; MTL and STL reach DNN; DEN beats
DNN and L2 with less capacity than Progressive and STL.
"""

import numpy as np
import pytest

import den

COMMON = {"hidden": (32, 16), "epochs": 15, "batch_size": 32, "lr": 0.005, "seed": 0}


@pytest.fixture(scope="module")
def tasks():
    return den.datasets.load("digits", n_tasks=5, seed=0)


@pytest.fixture(scope="module")
def results(tasks):
    models = {
        "DNN": den.DNN(**COMMON),
        "STL": den.STL(**COMMON),
        "MTL": den.MTL(**COMMON),
        "L2": den.L2(**COMMON, l2_prev=0.05),
        "EWC": den.EWC(**COMMON, lam=200.0, fisher_samples=300),
        "Progressive": den.Progressive(**COMMON, column=(16, 8)),
        "DEN": den.DEN(**COMMON, l1=1e-3, group_lasso=1e-3, l2_prev=0.1, tau=0.6, sigma=0.5),
    }
    return {name: den.run(m, tasks, progress=False) for name, m in models.items()}


def forgetting(r):
    """Mean over earlier tasks of (AUROC right after learning it) - (AUROC at the end)."""
    T = r.n_tasks
    return float(np.mean([r.auroc[j, j] - r.auroc[-1, j] for j in range(T - 1)]))


def test_l2_and_ewc_forget_less_than_dnn(results):
    dnn = forgetting(results["DNN"])
    assert dnn > 0.005, "the sequence must make DNN forget for this test to mean anything"
    assert forgetting(results["L2"]) < dnn
    assert forgetting(results["EWC"]) < dnn


def test_mtl_and_stl_reach_dnn(results):
    dnn = results["DNN"].mean_auroc
    assert results["MTL"].mean_auroc >= dnn
    assert results["STL"].mean_auroc >= dnn


def test_den_beats_dnn_and_l2_with_less_capacity_than_progressive_and_stl(results):
    d = results["DEN"]
    assert d.mean_auroc > results["DNN"].mean_auroc
    assert d.mean_auroc > results["L2"].mean_auroc
    assert d.capacity[-1] < results["Progressive"].capacity[-1]
    assert d.capacity[-1] < results["STL"].capacity[-1]


def test_progressive_never_changes_earlier_tasks(tasks):
    m = den.Progressive(**COMMON, column=(8, 4))
    X = tasks[0].X_test
    seen = []
    for t in tasks[:4]:
        m.fit_task(t.X_train, t.y_train, n_outputs=10)
        seen.append(m.predict_proba(X, 0))
    assert all(np.array_equal(seen[0], p) for p in seen[1:])
    # capacity grows with each column and its lateral connections
    assert m.n_params(3) > m.n_params(2) > m.n_params(1) > m.n_params(0)


@pytest.mark.parametrize("cls,kwargs", [(den.L2, {"l2_prev": 0.0}), (den.EWC, {"lam": 0.0})])
def test_zero_strength_equals_dnn_exactly(tasks, cls, kwargs):
    a, b = den.DNN(**COMMON), cls(**COMMON, **kwargs)
    for t in tasks[:3]:
        a.fit_task(t.X_train, t.y_train, n_outputs=10)
        b.fit_task(t.X_train, t.y_train, n_outputs=10)
    for j in range(3):
        assert np.array_equal(a.predict_proba(tasks[j].X_test, j), b.predict_proba(tasks[j].X_test, j))


@pytest.mark.parametrize("online", [False, True])
def test_ewc_penalty_combines_fishers_as_documented(tasks, online):
    m = den.EWC(**COMMON, lam=10.0, fisher_samples=100, online=online, gamma=0.5)
    fishers, thetas = [], []
    for t, task in enumerate(tasks[:3]):
        m.fit_task(task.X_train, task.y_train, n_outputs=10)
        net = m._nets["main"]
        rows = np.sort(np.random.default_rng(m._seed("fisher", t) % (2**63)).choice(len(task.X_train), 100,
                                                                                    replace=False))
        X = task.X_train[rows]
        Y = np.eye(10, dtype=np.float32)[task.y_train[rows]]
        fishers.append(net.fisher(X, Y, t).get_state()["layers"])
        thetas.append(net.get_state()["layers"])
    F = m._nets["fisher"].get_state()["layers"]
    A = m._nets["anchor"].get_state()["layers"]
    for l in range(2):
        for key in ("W", "b"):
            f = [x[l][key].astype(np.float64) for x in fishers]
            th = [x[l][key].astype(np.float64) for x in thetas]
            if online:
                expected_f = 0.25 * f[0] + 0.5 * f[1] + f[2]
                expected_a = th[2]
            else:
                expected_f = f[0] + f[1] + f[2]
                with np.errstate(invalid="ignore", divide="ignore"):
                    expected_a = np.where(expected_f > 0, (f[0] * th[0] + f[1] * th[1] + f[2] * th[2]) / expected_f,
                                          th[2])
            np.testing.assert_allclose(F[l][key], expected_f, rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(A[l][key], expected_a, rtol=1e-3, atol=1e-5)


def test_ewc_fisher_modes_differ_and_scale_with_misfit(tasks):
    """The empirical Fisher uses true labels, the exact one the model's own predictions."""
    m = den.EWC(**COMMON, fisher_samples=200)
    t = tasks[0]
    m.fit_task(t.X_train, t.y_train, n_outputs=10)
    net = m._nets["main"]
    Y = np.eye(10, dtype=np.float32)[t.y_train[:200]]
    exact = net.fisher(t.X_train[:200], Y, 0, mode="exact").get_state()["layers"][0]["W"]
    emp = net.fisher(t.X_train[:200], Y, 0, mode="empirical").get_state()["layers"][0]["W"]
    wrong = net.fisher(t.X_train[:200], np.roll(Y, 1, axis=1), 0, mode="empirical").get_state()["layers"][0]["W"]
    assert not np.allclose(exact, emp)
    assert wrong.sum() > emp.sum(), "misfit labels give larger squared gradients"
