"""Every C kernel against its NumPy twin (tests/twin.py), and the twin against finite differences.

Forward passes and losses (dense + ReLU + sigmoid/softmax heads, with timestamps and masks),
gradients, and 10+ full-batch optimizer steps of each regulariser combination.
"""

import numpy as np
import pytest

import twin
from conftest import make_data, make_net

HEADS = [("sigmoid", 1), ("sigmoid", 4), ("softmax", 4)]


@pytest.mark.parametrize("kind,k", HEADS)
@pytest.mark.parametrize("grown", [False, True])
def test_forward_and_loss_match_twin(kind, k, grown):
    net = make_net(heads=((kind, k),), grow=((3, 2), 1) if grown else None)
    head = net.n_heads - 1
    X, Y = make_data(40, net.n_input, kind, k)
    state = net.get_state()
    model = twin.gather(state, head)
    _, logits, _ = twin.forward(model, X)
    np.testing.assert_allclose(net.predict(X, head), twin.probabilities(logits, kind), rtol=1e-5, atol=1e-6)
    assert net.loss(X, Y, head) == pytest.approx(twin.loss(model, X, Y), rel=1e-5)


def test_timestamps_hide_later_units_from_earlier_heads():
    net = make_net(heads=(("softmax", 3),), grow=((4, 4), 1))
    X, _ = make_data(30, net.n_input, "softmax", 3)
    state = net.get_state()
    # head 0 (task 0) must not depend on units born at task 1: perturbing them changes nothing
    for layer in state["layers"]:
        born_later = layer["stamp"] > 0
        layer["W"][born_later] = np.where(layer["mask"][born_later], 5.0, 0.0).astype(np.float32)
        layer["b"][born_later] = 3.0
    perturbed = type(net).from_state(state)
    assert np.array_equal(perturbed.predict(X, 0), net.predict(X, 0))
    # ... while the newer head does read them
    assert not np.allclose(perturbed.predict(X, 1), net.predict(X, 1))
    # and without timestamps the old head would read the newer units below it, were they allowed
    twin_model = twin.gather(state, 0, use_stamps=False)
    assert twin_model["widths"] == [len(l["b"]) for l in state["layers"]]


def test_losses_stay_finite_for_huge_logits():
    net = make_net(heads=(("sigmoid", 2), ("softmax", 3)))
    state = net.get_state()
    for head in state["heads"]:
        head["W"] *= 1e4
    big = type(net).from_state(state)
    X, Y = make_data(20, net.n_input, "sigmoid", 2)
    Xs, Ys = make_data(20, net.n_input, "softmax", 3)
    for h, (x, y) in enumerate([(X, Y), (Xs, Ys)]):
        value = big.loss(x, y, h)
        assert np.isfinite(value)
        assert value == pytest.approx(twin.loss(twin.gather(big.get_state(), h), x, y), rel=1e-4)


@pytest.mark.parametrize("kind,k", HEADS)
def test_twin_gradients_match_central_differences(kind, k):
    net = make_net(heads=((kind, k),), grow=((2, 2), 1))
    head = 1
    X, Y = make_data(15, net.n_input, kind, k, seed=3)
    model = twin.gather(net.get_state(), head)
    grads = twin.gradients(model, X, Y)
    rng = np.random.default_rng(0)
    checked = 0
    for block in [0, 1, -1]:
        blk = model["head"] if block == -1 else model["layers"][block]
        g = grads[block]
        for which, gi in (("W", 0), ("b", 1)):
            for _ in range(6):
                index = tuple(rng.integers(0, s) for s in blk[which].shape)
                if which == "W" and blk["mask"][index] == 0:
                    continue
                num = twin.numeric_gradient(model, X, Y, block, which, index)
                assert g[gi][index] == pytest.approx(num, rel=1e-5, abs=1e-8)
                checked += 1
    assert checked > 20  # the check must have checked something


@pytest.mark.parametrize("kind,k", HEADS)
def test_core_gradients_match_twin(kind, k):
    net = make_net(heads=((kind, k),), grow=((3, 2), 1))
    head = 1
    X, Y = make_data(300, net.n_input, kind, k, seed=5)  # > one evaluation chunk of 256 rows
    grads = net.gradients(X, Y, head).get_state()
    model = twin.gather(net.get_state(), head)
    ref = twin.gradients(model, X, Y)
    assert not grads["layers"][1]["mask"].all(), "the grown net must have masked connections"
    for l in range(2):
        # structurally absent (masked) weights have no gradient by definition
        mask = grads["layers"][l]["mask"]
        np.testing.assert_allclose(grads["layers"][l]["W"], ref[l][0] * mask, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(grads["layers"][l]["b"], ref[l][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["heads"][head]["W"], ref[-1][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["heads"][head]["b"], ref[-1][1], rtol=1e-4, atol=1e-6)
    # the other head is not part of this task: zero gradient
    assert not grads["heads"][0]["W"].any()


# Each regulariser alone and in combination, with Adam and SGD.
COMBOS = [
    ("adam", {}, {}),
    ("adam", {"wd": 0.01}, {}),
    ("adam", {"l1": 1.5}, {"l1": 0.2}),
    ("adam", {"pull": 3.0}, {}),
    ("adam", {"group": 0.8}, {}),
    ("adam", {"l1": 1.5, "group": 0.5, "pull": 1.0, "wd": 0.001}, {"l1": 0.1}),
    ("sgd", {}, {}),
    ("sgd", {"l1": 0.5, "pull": 2.0}, {}),
    ("sgd_momentum", {"group": 1.0, "wd": 0.01}, {}),
]


def opt_args(name, lr):
    if name == "sgd_momentum":
        return {"optimizer": "sgd", "momentum": 0.9}, {"kind": "sgd", "momentum": 0.9, "lr": lr}
    return {"optimizer": name}, {"kind": name, "lr": lr}


@pytest.mark.parametrize("opt,layer_reg,head_reg", COMBOS)
@pytest.mark.parametrize("kind,k", [("sigmoid", 3), ("softmax", 3)])
def test_training_steps_match_twin(opt, layer_reg, head_reg, kind, k):
    """12 full-batch steps on a grown net (masked blocks), with an anchor for the pull."""
    net = make_net(heads=((kind, k),), grow=((3, 2), 1), seed=7)
    anchor = net.clone()
    state = net.get_state()
    for layer in state["layers"]:  # move away from the anchor so that the pull does something
        layer["W"] += np.where(layer["mask"], 0.05, 0).astype(np.float32)
    net = type(net).from_state(state)
    X, Y = make_data(64, net.n_input, kind, k, seed=11)
    lr = 0.01 if opt == "adam" else 0.1
    core_opt, twin_opt = opt_args(opt, lr)
    steps = 12
    net.train([(X, Y, 1)], epochs=steps, batch_size=len(X), lr=lr, layer_reg=layer_reg, head_reg=head_reg,
              anchor=anchor if "pull" in layer_reg else None, **core_opt)
    model = twin.gather(state, 1, anchor=anchor.get_state() if "pull" in layer_reg else None)
    twin.train_full_batch(model, X, Y, steps, twin_opt, layer_reg, head_reg)
    expected = twin.scatter(state, model)
    got = net.get_state()
    for a, b in zip(got["layers"] + got["heads"], expected["layers"] + expected["heads"]):
        np.testing.assert_allclose(a["W"], b["W"], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(a["b"], b["b"], rtol=2e-4, atol=2e-5)
        assert not a["W"][~a["mask"]].any(), "masked weights must stay exactly zero"
    if "l1" in layer_reg:
        # the proximal step makes exact zeros, and the same ones as the twin (away from ties)
        for a, b in zip(got["layers"], expected["layers"]):
            allowed = a["mask"]
            assert (a["W"][allowed] == 0).mean() > 0.05
            clear = np.abs(b["W"]) > 1e-4
            assert np.array_equal((a["W"] == 0) & clear, (b["W"] == 0) & clear)


def test_ewc_coefficients_weight_the_pull():
    net = make_net(heads=(("softmax", 3),), seed=3)
    anchor = net.clone()
    coef_state = net.get_state()
    rng = np.random.default_rng(0)
    for layer in coef_state["layers"]:
        layer["W"] = rng.random(layer["W"].shape, dtype=np.float32) * 4
        layer["b"] = rng.random(layer["b"].shape, dtype=np.float32) * 4
    coef = type(net).from_state(coef_state)
    state = net.get_state()
    for layer in state["layers"]:
        layer["W"] += 0.1
    net = type(net).from_state(state)
    X, Y = make_data(50, net.n_input, "softmax", 3, seed=2)
    net.train([(X, Y, 0)], epochs=10, batch_size=50, lr=0.05, optimizer="sgd", layer_reg={"pull": 2.0},
              anchor=anchor, coef=coef)
    model = twin.gather(state, 0, anchor=anchor.get_state(), coef=coef_state)
    twin.train_full_batch(model, X, Y, 10, {"kind": "sgd", "lr": 0.05}, {"pull": 2.0})
    expected = twin.scatter(state, model)
    for a, b in zip(net.get_state()["layers"], expected["layers"]):
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-4, atol=1e-5)


def test_group_lasso_zeroes_whole_units_including_bias():
    net = make_net(widths=(10, 6), heads=(("softmax", 3),), seed=4)
    X, Y = make_data(80, net.n_input, "softmax", 3, seed=4)
    net.train([(X, Y, 0)], epochs=30, batch_size=80, lr=0.05, layer_reg={"group": 1.5})
    state = net.get_state()
    zero_rows = [np.flatnonzero(~l["W"].any(axis=1)) for l in state["layers"]]
    assert sum(len(z) for z in zero_rows) > 0, "strong group lasso must remove some units"
    for layer, rows in zip(state["layers"], zero_rows):
        assert not layer["b"][rows].any(), "a unit's group includes its bias"


@pytest.mark.parametrize("kind,k", [("sigmoid", 2), ("softmax", 3)])
@pytest.mark.parametrize("mode", ["empirical", "exact"])
def test_fisher_matches_per_sample_twin(kind, k, mode):
    net = make_net(n_input=6, widths=(5, 4), heads=((kind, k),), seed=9)
    X, Y = make_data(30, net.n_input, kind, k, seed=9)
    F = net.fisher(X, Y, 0, mode=mode).get_state()
    ref = twin.fisher(twin.gather(net.get_state(), 0), X, Y, mode)
    for l in range(2):
        np.testing.assert_allclose(F["layers"][l]["W"], ref[l][0], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(F["layers"][l]["b"], ref[l][1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(F["heads"][0]["W"], ref[-1][0], rtol=1e-4, atol=1e-7)
