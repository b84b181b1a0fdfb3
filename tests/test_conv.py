"""Convolutional trunks: the GEMM convolution against its naive C reference and NumPy, conv nets
against the twin (forward, gradients vs finite differences, optimizer steps, Fisher), and DEN's
structural operations on filters."""

import numpy as np
import pytest

import den
import twin
from den import _core

SHAPE = (2, 7, 6)  # channels, height, width: odd and non-square on purpose
CONV = [[3, 3, 2], [4, 3, 1]]  # (filters, kernel, pool)


def conv_net(seed=0, heads=(("softmax", 3),), conv=CONV, widths=(5,), shape=SHAPE):
    net = _core.Net(int(np.prod(shape)), list(widths), seed=seed, conv=conv, input_shape=shape)
    for kind, k in heads:
        net.add_head(kind, k, 0, seed=seed + 1)
    return net


def image_data(n, kind, k, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, int(np.prod(shape))), dtype=np.float32)
    y = rng.integers(0, k, n)
    if kind == "softmax":
        return X, y.astype(np.int32)
    return X, np.eye(k, dtype=np.float32)[y]


# Small maps, rectangular maps and kernels, kernels larger than the map, 1x1, and batches lowered
# in several GEMMs: one sample per GEMM, and two per GEMM with a remainder of one.
CONV_SHAPES = [(2, 1, 5, 5, 2, 3, 3), (3, 3, 8, 6, 4, 5, 5), (1, 2, 4, 7, 3, 1, 1), (2, 4, 3, 3, 5, 5, 3),
               (1, 1, 1, 1, 1, 3, 3), (2, 3, 2, 9, 2, 3, 7), (3, 64, 64, 64, 2, 5, 5), (3, 4, 64, 64, 3, 5, 5)]


def test_large_shapes_are_lowered_in_several_gemms():
    per_sample = lambda C, H, W, kh, kw: C * kh * kw * H * W  # noqa: E731
    assert _core.CONV_COLS_FLOATS // per_sample(64, 64, 64, 5, 5) == 0
    assert _core.CONV_COLS_FLOATS // per_sample(4, 64, 64, 5, 5) == 2


@pytest.mark.parametrize("B,C,H,W,F,kh,kw", CONV_SHAPES)
def test_gemm_convolution_matches_naive_and_numpy(B, C, H, W, F, kh, kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    Wt = rng.standard_normal((F, C * kh * kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    fast = _core._conv2d(x, Wt, b, kh, kw)
    naive = _core._conv2d(x, Wt, b, kh, kw, naive=True)
    ref = twin.conv2d(x.astype(np.float64), Wt.astype(np.float64), b.astype(np.float64), kh, kw)
    # 1e-5, as for the small shapes; the float32 rounding of K-term sums (about 1e-7 * K for
    # standard-normal terms) only exceeds it for the large shapes
    atol = max(1e-5, 1e-7 * C * kh * kw)
    np.testing.assert_allclose(naive, ref, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("B,C,H,W,F,kh,kw", CONV_SHAPES)
def test_gemm_convolution_backward_matches_numpy(B, C, H, W, F, kh, kw):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    Wt = rng.standard_normal((F, C * kh * kw)).astype(np.float32)
    dz = rng.standard_normal((B, F, H, W)).astype(np.float32)
    dx, dW, db = _core._conv2d_backward(dz, x, Wt, kh, kw)
    rdx, rdW, rdb = twin.conv2d_backward(dz.astype(np.float64), x.astype(np.float64), Wt.astype(np.float64), kh, kw)
    scale = np.sqrt(C * kh * kw * B * H * W)  # float32 sums of that many terms
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(dW, rdW, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(db, rdb, rtol=1e-4, atol=1e-5 * scale)


def test_conv_hook_rejects_bad_shapes():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="odd"):
        _core._conv2d(x, np.zeros((1, 8), np.float32), np.zeros(1, np.float32), 2, 2)
    with pytest.raises(ValueError, match="shape"):
        _core._conv2d(x, np.zeros((1, 9), np.float32), np.zeros(1, np.float32), 3, 3)


def test_twin_pooling_and_conv_gradients_against_finite_differences():
    net = conv_net(seed=3, heads=(("sigmoid", 2),))
    X, Y = image_data(6, "sigmoid", 2, seed=3)
    model = twin.gather(net.get_state(), 0)
    grads = twin.gradients(model, X, Y)
    rng = np.random.default_rng(1)
    checked = 0
    for block in [0, 1, 2, -1]:
        blk = model["head"] if block == -1 else model["layers"][block]
        for which, gi in (("W", 0), ("b", 1)):
            for _ in range(5):
                index = tuple(rng.integers(0, s) for s in blk[which].shape)
                num = twin.numeric_gradient(model, X, Y, block, which, index)
                assert grads[block][gi][index] == pytest.approx(num, rel=1e-4, abs=1e-8)
                checked += 1
    assert checked == 40


@pytest.mark.parametrize("kind,k", [("sigmoid", 2), ("softmax", 3)])
def test_conv_net_forward_gradients_and_steps_match_twin(kind, k):
    net = conv_net(seed=5, heads=((kind, k),))
    net.add_units([1, 2, 1], 1, seed=9)   # grown: masked filter-to-filter blocks
    net.add_head(kind, k, 1)
    X, Y = image_data(40, kind, k, seed=5)
    state = net.get_state()
    model = twin.gather(state, 1)
    _, logits, _ = twin.forward(model, X)
    np.testing.assert_allclose(net.predict(X, 1), twin.probabilities(logits, kind), rtol=1e-5, atol=1e-6)
    # the old head does not see filters born later
    np.testing.assert_allclose(net.predict(X, 0), twin.probabilities(twin.forward(twin.gather(state, 0), X)[1], kind),
                               rtol=1e-5, atol=1e-6)
    g = net.gradients(X, Y, 1).get_state()
    ref = twin.gradients(model, X, Y)
    for l in range(3):
        np.testing.assert_allclose(g["layers"][l]["W"], ref[l][0] * g["layers"][l]["mask"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g["layers"][l]["b"], ref[l][1], rtol=1e-4, atol=1e-6)
    reg = {"l1": 1.0, "group": 0.3, "pull": 1.0}
    anchor = net.clone()
    net.train([(X, Y, 1)], epochs=10, batch_size=40, lr=0.01, layer_reg=reg, anchor=anchor)
    model = twin.gather(state, 1, anchor=anchor.get_state())
    twin.train_full_batch(model, X, Y, 10, {"kind": "adam", "lr": 0.01}, reg)
    expected = twin.scatter(state, model)
    got = net.get_state()
    for a, b in zip(got["layers"] + got["heads"], expected["layers"] + expected["heads"]):
        np.testing.assert_allclose(a["W"], b["W"], rtol=3e-4, atol=3e-5)
        assert not a["W"][~a["mask"]].any()


@pytest.mark.parametrize("mode", ["empirical", "exact"])
def test_conv_fisher_matches_per_sample_twin(mode):
    net = conv_net(seed=2, heads=(("softmax", 3),), conv=[[2, 3, 2]], widths=(4,), shape=(1, 5, 4))
    X, Y = image_data(12, "softmax", 3, shape=(1, 5, 4), seed=2)
    F = net.fisher(X, Y, 0, mode=mode).get_state()
    ref = twin.fisher(twin.gather(net.get_state(), 0), X, Y, mode)
    for l in range(2):
        np.testing.assert_allclose(F["layers"][l]["W"], ref[l][0], rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(F["layers"][l]["b"], ref[l][1], rtol=1e-4, atol=1e-8)


def test_filters_are_units_for_selection_growth_split_and_pruning():
    net = conv_net(seed=1, heads=(("softmax", 3),))
    s = net.get_state()
    conv1, conv2, dense = s["layers"]
    # conv1 filter 2 feeds nothing; dense reads only conv2 filters 0 and 3
    conv2["W"][:, 2 * 9:3 * 9] = 0
    span = dense["W"].shape[1] // 4
    dense["W"][:, span:3 * span] = 0
    net = _core.Net.from_state(s)
    units, inputs = net.select(0)
    assert units[1].tolist() == [True, False, False, True]
    assert units[0].tolist() == [True, True, False]
    assert inputs.tolist() == [True, True]
    assert net.dead_units(0).tolist() == [False, False, True]
    # growth appends filters, and column groups of kh*kw / whole maps in the readers
    net.add_units([2, 1, 0], 1)
    t = net.get_state()
    assert [l["W"].shape for l in t["layers"]] == [(5, 18), (5, 45), (5, 5 * span)]
    assert not t["layers"][1]["mask"][:4, 27:].any(), "old filters do not read new filters"
    # duplicating a filter copies its kernel and its outgoing map weights
    before = net.get_state()
    net.duplicate_units([None, np.array([0, 1, 0, 0, 0], bool), None], 1)
    after = net.get_state()
    np.testing.assert_array_equal(after["layers"][1]["W"][5], before["layers"][1]["W"][1])
    np.testing.assert_array_equal(after["layers"][2]["W"][:, 5 * span:6 * span], before["layers"][2]["W"][:, span:2 * span])


def test_group_lasso_removes_whole_filters():
    net = conv_net(seed=4, heads=(("softmax", 3),), conv=[[6, 3, 2]], widths=(5,))
    X, Y = image_data(60, "softmax", 3, seed=4)
    net.train([(X, Y, 0)], epochs=40, batch_size=60, lr=0.05, layer_reg={"group": 2.0})
    W = net.get_state()["layers"][0]
    zero = ~W["W"].any(axis=1)
    assert zero.any() and not W["b"][zero].any()


def test_conv_state_round_trip_and_validation():
    net = conv_net()
    s = net.get_state()
    assert s["input_shape"] == SHAPE and s["layers"][0]["op"] == "conv" and s["layers"][2]["op"] == "dense"
    X, _ = image_data(5, "softmax", 3)
    assert np.array_equal(_core.Net.from_state(s).predict(X, 0), net.predict(X, 0))
    bad = net.get_state()
    bad["layers"][0]["kh"] = 4
    with pytest.raises(ValueError, match="conv"):
        _core.Net.from_state(bad)
    bad = net.get_state()
    bad["layers"][0], bad["layers"][2] = bad["layers"][2], bad["layers"][0]
    with pytest.raises(ValueError):
        _core.Net.from_state(bad)


@pytest.mark.parametrize("kwargs,msg", [
    ({"conv": [[3, 4, 1]], "input_shape": SHAPE}, "odd"),
    ({"conv": [[3, 3, 1]]}, "input_shape"),
    ({"conv": [[3, 3, 1]], "input_shape": (2, 7, 7)}, "n_input"),
    ({"conv": [[3, 3, 8]], "input_shape": SHAPE}, "pooling"),
    ({"conv": [[3, 3]], "input_shape": SHAPE}, "filters, kernel, pool"),
])
def test_conv_constructor_errors(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        _core.Net(int(np.prod(SHAPE)), [4], **kwargs)


@pytest.fixture(scope="module")
def image_tasks():
    """Three small image tasks: digits as (1, 8, 8) images, pixel-permuted per task."""
    return den.datasets.load("digits", n_tasks=3, seed=0)


SMALL_CNN = {"conv": ((6, 3, 2), (8, 3, 2)), "hidden": (24,), "epochs": 15, "batch_size": 32, "lr": 0.005,
             "seed": 0}


def test_tiny_cnn_den_end_to_end(image_tasks, tmp_path):
    m = den.DEN(**SMALL_CNN, l1=1e-3, group_lasso=1e-3, l2_prev=0.1, tau=0.6, sigma=0.3)
    r = den.run(m, image_tasks, progress=False)
    assert m.input_shape == (1, 8, 8)
    assert r.mean_auroc > 0.95
    assert m.units_by_task().shape == (3, 3)
    assert r.auroc[0, 0] - r.auroc[-1, 0] <= 0.01
    # timestamps hold for filters: task 0 does not see filters born later
    net = m._nets["main"]
    X = image_tasks[0].X_test
    p0 = m.predict_proba(X, 0)
    s = net.get_state()
    assert any((l["stamp"] > 0).any() for l in s["layers"])
    for layer in s["layers"]:
        later = layer["stamp"] > 0
        layer["W"][later] = np.where(layer["mask"][later], 3.0, 0).astype(np.float32)
    m._nets["main"] = _core.Net.from_state(s)
    assert np.array_equal(m.predict_proba(X, 0), p0)
    m._nets["main"] = net
    m.save(tmp_path / "cnn.den")
    back = den.load(tmp_path / "cnn.den")
    assert np.array_equal(back.predict_proba(X.reshape(-1, 1, 8, 8), 0), p0)


def test_cnn_baselines_accept_images(image_tasks):
    for cls in (den.STL, den.DNN, den.Progressive, den.EWC):
        m = cls(**SMALL_CNN)
        t = image_tasks[0]
        m.fit_task(t.X_train.reshape(-1, 1, 8, 8), t.y_train, n_outputs=10)
        assert m.input_shape == (1, 8, 8)
        assert den.evaluate.auroc(m, image_tasks[:1])[0] > 0.95
        with pytest.raises(ValueError, match="shape"):
            m.predict_proba(t.X_test.reshape(-1, 1, 4, 16), 0)
    with pytest.raises(ValueError, match="image shape"):
        den.DNN(**SMALL_CNN).fit_task(image_tasks[0].X_train, image_tasks[0].y_train)
