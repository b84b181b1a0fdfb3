"""The growable net's structural operations (csrc/net.c) and partial training (gather/scatter)."""

import copy

import numpy as np
import pytest

import twin
from conftest import make_data, make_net, same_state
from den import _core


def test_new_net_shapes_stamps_and_init():
    net = _core.Net(10, [8, 6], seed=3)
    s = net.get_state()
    assert [l["W"].shape for l in s["layers"]] == [(8, 10), (6, 8)]
    assert all((l["stamp"] == 0).all() and l["mask"].all() and not l["b"].any() for l in s["layers"])
    # He-normal: std sqrt(2 / fan_in), checked loosely on a larger layer
    big = _core.Net(400, [300], seed=1).get_state()["layers"][0]["W"]
    assert big.std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    assert same_state(_core.Net(10, [8, 6], seed=3).get_state(), s), "same seed, same net"
    assert not same_state(_core.Net(10, [8, 6], seed=4).get_state(), s)


def test_add_units_appends_with_stamps_and_masks():
    net = make_net(widths=(5, 4), heads=(("sigmoid", 2),))
    before = net.get_state()
    net.add_units([3, 2], 1, seed=5)
    s = net.get_state()
    assert net.widths == (8, 6)
    L0, L1 = s["layers"]
    assert list(L0["stamp"]) == [0] * 5 + [1] * 3
    # old rows unchanged, new rows read every input
    assert np.array_equal(L0["W"][:5], before["layers"][0]["W"]) and L0["mask"][5:].all()
    # layer 1: old rows may not read the new units of layer 0; new rows read everything
    assert not L1["mask"][:4, 5:].any() and not L1["W"][:4, 5:].any()
    assert L1["mask"][4:].all() and L1["W"][4:, :5].any()
    # the old head may not read the new top units
    H = s["heads"][0]
    assert not H["mask"][:, 4:].any() and not H["W"][:, 4:].any()
    # a head added for task 1 reads them
    net.add_head("sigmoid", 2, 1)
    assert net.get_state()["heads"][1]["mask"].all()
    assert net.prefix(0) == (5, 4) and net.prefix(1) == (8, 6)


def test_add_units_rejects_an_older_stamp_and_leaves_the_net_alone():
    net = make_net()
    net.add_units([1, 1], 2)
    before = net.get_state()
    with pytest.raises(ValueError, match="older"):
        net.add_units([1, 1], 1)
    with pytest.raises(ValueError, match="counts"):
        net.add_units([1], 3)
    with pytest.raises(ValueError, match="counts"):
        net.add_units([1, -1], 3)
    assert same_state(net.get_state(), before)


def test_remove_units_drops_rows_and_their_outgoing_columns():
    net = make_net(widths=(6, 5), heads=(("softmax", 3), ("sigmoid", 2)))
    s = net.get_state()
    keep0 = np.array([1, 0, 1, 1, 0, 1], bool)
    keep1 = np.array([0, 1, 1, 1, 1], bool)
    net.remove_units([keep0, keep1])
    t = net.get_state()
    assert net.widths == (4, 4)
    np.testing.assert_array_equal(t["layers"][0]["W"], s["layers"][0]["W"][keep0])
    np.testing.assert_array_equal(t["layers"][1]["W"], s["layers"][1]["W"][np.ix_(keep1, keep0)])
    for h in range(2):
        np.testing.assert_array_equal(t["heads"][h]["W"], s["heads"][h]["W"][:, keep1])
    with pytest.raises(ValueError, match="every unit"):
        net.remove_units([np.zeros(4, bool), None])


def test_removing_dead_units_keeps_predictions():
    """A unit whose incoming group is all zero outputs relu(0) = 0: removing it changes nothing."""
    net = make_net(widths=(6, 5), heads=(("softmax", 3),))
    s = net.get_state()
    s["layers"][0]["W"][2] = 0
    s["layers"][0]["b"][2] = 0
    s["layers"][1]["W"][:, 4] = 0  # unit 4 of layer 0 feeds nothing
    net = _core.Net.from_state(s)
    X, _ = make_data(20, net.n_input, "softmax", 3)
    dead = net.dead_units(0)
    assert list(np.flatnonzero(dead)) == [2, 4]
    p = net.predict(X, 0)
    net.remove_units([~dead, None])
    np.testing.assert_allclose(net.predict(X, 0), p, rtol=1e-6, atol=1e-7)


def test_duplicate_copies_incoming_and_outgoing_weights():
    net = make_net(widths=(5, 4), heads=(("sigmoid", 2),))
    net.add_head("sigmoid", 2, 1)
    s = net.get_state()
    dup0 = np.array([0, 1, 0, 0, 1], bool)
    net.duplicate_units([dup0, None], 1)
    t = net.get_state()
    L0, L1 = t["layers"]
    assert net.widths == (7, 4)
    np.testing.assert_array_equal(L0["W"][5:], s["layers"][0]["W"][[1, 4]])
    np.testing.assert_array_equal(L0["b"][5:], s["layers"][0]["b"][[1, 4]])
    assert list(L0["stamp"][5:]) == [1, 1]
    # every unit of the layer above reads the copy with the original's weight
    np.testing.assert_array_equal(L1["W"][:, 5:], s["layers"][1]["W"][:, [1, 4]])


def test_duplicate_in_top_layer_feeds_only_current_heads():
    net = make_net(widths=(5, 4), heads=(("sigmoid", 2),))
    net.add_head("sigmoid", 2, 1)
    s = net.get_state()
    net.duplicate_units([None, np.array([1, 0, 0, 1], bool)], 1)
    t = net.get_state()
    assert not t["heads"][0]["W"][:, 4:].any() and not t["heads"][0]["mask"][:, 4:].any()
    np.testing.assert_array_equal(t["heads"][1]["W"][:, 4:], s["heads"][1]["W"][:, [0, 3]])


def test_restore_and_drift():
    net = make_net(widths=(5, 4), heads=(("softmax", 3),))
    prev = net.clone()
    net.add_units([2, 0], 1)
    s = net.get_state()
    rng = np.random.default_rng(0)
    s["layers"][1]["W"] += np.where(s["layers"][1]["mask"], rng.normal(0, 0.1, s["layers"][1]["W"].shape), 0).astype(np.float32)
    net = _core.Net.from_state(s)
    rho = net.drift(prev, 1)
    P = prev.get_state()["layers"][1]["W"]
    W = s["layers"][1]["W"]
    expected = np.sqrt(((W[:, :5] - P) ** 2).sum(1) + (W[:, 5:] ** 2).sum(1))
    np.testing.assert_allclose(rho, expected, rtol=1e-5)
    which = np.array([1, 0, 1, 0], bool)
    net.restore_units(prev, [None, which])
    t = net.get_state()["layers"][1]
    np.testing.assert_array_equal(t["W"][which, :5], P[which])
    assert not t["W"][which, 5:].any()
    np.testing.assert_array_equal(t["W"][~which], W[~which])
    assert np.all(net.drift(prev, 1)[which] == 0)
    with pytest.raises(ValueError, match="did not exist"):
        net.add_units([0, 1], 1)
        net.restore_units(prev, [None, np.ones(5, bool)])


def test_select_follows_nonzero_weights_breadth_first():
    net = make_net(n_input=6, widths=(5, 4), heads=(("sigmoid", 2),))
    s = net.get_state()
    H, L1, L0 = s["heads"][0], s["layers"][1], s["layers"][0]
    H["W"][:] = 0
    H["W"][1, 2] = 0.5          # only output 1 reads top unit 2 (output 0 reads nothing)
    L1["W"][2, :] = 0
    L1["W"][2, [0, 3]] = 1.0    # top unit 2 reads layer-0 units 0 and 3
    L0["W"][[0, 3], :] = 0
    L0["W"][0, 1] = 1.0
    L0["W"][3, 4] = 1.0         # which read inputs 1 and 4
    units, inputs = _core.Net.from_state(s).select(0)
    assert list(np.flatnonzero(units[1])) == [2]
    assert list(np.flatnonzero(units[0])) == [0, 3]
    assert list(np.flatnonzero(inputs)) == [1, 4]


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_training_a_subnetwork_touches_nothing_else(kind):
    """Gather S, train, scatter: every weight outside S's rows and columns is bit-identical."""
    k = 3
    net = make_net(n_input=10, widths=(8, 6), heads=((kind, k),), seed=2)
    net.add_head(kind, k, 0)
    X, Y = make_data(60, 10, kind, k, seed=2)
    units = [np.array([1, 0, 1, 1, 0, 0, 1, 0], bool), np.array([0, 1, 1, 0, 1, 0], bool)]
    inputs = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], bool)
    before = net.get_state()
    net.train([(X, Y, 1)], epochs=5, batch_size=16, lr=0.01, units=units, inputs=inputs)
    after = net.get_state()
    cols = [inputs, units[0], units[1]]
    for l in range(2):
        a, b = after["layers"][l]["W"], before["layers"][l]["W"]
        inside = np.outer(units[l], cols[l])
        assert np.array_equal(a[~inside], b[~inside])
        assert not np.array_equal(a[inside], b[inside])
        assert np.array_equal(after["layers"][l]["b"][~units[l]], before["layers"][l]["b"][~units[l]])
    assert np.array_equal(after["heads"][0]["W"], before["heads"][0]["W"])
    assert np.array_equal(after["heads"][1]["W"][:, ~units[1]], before["heads"][1]["W"][:, ~units[1]])
    # and the trained part equals the twin trained on the same subnetwork (full batch)
    net2 = _core.Net.from_state(before)
    net2.train([(X, Y, 1)], epochs=4, batch_size=60, lr=0.01, units=units, inputs=inputs)
    model = twin.gather(before, 1, units=units, inputs=inputs)
    twin.train_full_batch(model, X, Y, 4, {"kind": "adam", "lr": 0.01})
    expected = twin.scatter(before, model)
    for a, b in zip(net2.get_state()["layers"], expected["layers"]):
        np.testing.assert_allclose(a["W"], b["W"], rtol=2e-4, atol=2e-5)


def test_frozen_rows_stay_bit_identical():
    net = make_net(widths=(6, 5), heads=(("softmax", 3),))
    X, Y = make_data(40, net.n_input, "softmax", 3)
    train = [np.array([0, 1, 0, 1, 1, 0], bool), np.array([1, 0, 0, 0, 1], bool)]
    before = net.get_state()
    net.train([(X, Y, 0)], epochs=3, batch_size=8, lr=0.01, train=train, train_heads=[])
    after = net.get_state()
    for l in range(2):
        assert np.array_equal(after["layers"][l]["W"][~train[l]], before["layers"][l]["W"][~train[l]])
        assert not np.array_equal(after["layers"][l]["W"][train[l]], before["layers"][l]["W"][train[l]])
    assert np.array_equal(after["heads"][0]["W"], before["heads"][0]["W"]), "head not trainable"


def test_head_only_training_on_features_equals_training_the_head_on_the_net():
    net = make_net(widths=(6, 5), heads=(("sigmoid", 2),))
    X, Y = make_data(50, net.n_input, "sigmoid", 2)
    a, b = net.clone(), net.clone()
    H = a.features(X, 0)
    a.train([(H, Y, 0)], epochs=3, batch_size=10, lr=0.01, head_only=True, seed=1)
    b.train([(X, Y, 0)], epochs=3, batch_size=10, lr=0.01, train=[np.zeros(6, bool), np.zeros(5, bool)], seed=1)
    np.testing.assert_allclose(a.get_state()["heads"][0]["W"], b.get_state()["heads"][0]["W"], rtol=1e-5, atol=1e-6)
    assert same_state({**a.get_state(), "heads": []}, {**net.get_state(), "heads": []}), "trunk untouched"


def test_multi_task_training_interleaves_heads_with_their_own_step_counts():
    net = make_net(widths=(6, 5), heads=(("softmax", 3), ("sigmoid", 2)))
    X0, Y0 = make_data(30, net.n_input, "softmax", 3, seed=1)
    X1, Y1 = make_data(30, net.n_input, "sigmoid", 2, seed=2)
    before = net.get_state()
    loss = net.train([(X0, Y0, 0), (X1, Y1, 1)], epochs=2, batch_size=30, lr=0.01)
    after = net.get_state()
    assert np.isfinite(loss)
    for h in range(2):
        assert not np.array_equal(after["heads"][h]["W"], before["heads"][h]["W"])


def test_state_round_trip_and_pickle():
    import pickle

    net = make_net(grow=((2, 1), 1))
    X, _ = make_data(10, net.n_input, "sigmoid", 3)
    for other in (_core.Net.from_state(net.get_state()), pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert same_state(other.get_state(), net.get_state())
        assert np.array_equal(other.predict(X, 1), net.predict(X, 1))


def test_nonzero_counts_the_parameters_a_task_uses():
    net = make_net(n_input=4, widths=(3, 2), heads=(("sigmoid", 1),))
    dense = 4 * 3 + 3 * 2 + 2 * 1          # biases are zero at init
    assert net.nonzero(0) == dense
    net.add_units([1, 1], 1)
    net.add_head("sigmoid", 1, 1)
    assert net.nonzero(0) == dense, "units born later are not task 0's"
    s = net.get_state()
    whole = sum(int((l["W"] != 0).sum() + (l["b"] != 0).sum()) for l in s["layers"] + s["heads"])
    assert net.nonzero() == whole


def test_workspace_bytes_follow_the_formula_of_model_h():
    # per minibatch row (csrc/model.h): the input, every layer's output, two gradient rows of the
    # widest layer, four rows of the widest head, a class id (int32) and a sample index (int64)
    n_in, widths, k = 20, [12, 8], 3
    net = _core.Net(n_in, widths, seed=0)
    net.add_head("softmax", k, 0)
    assert net.workspace_bytes == 0
    used = {}
    for B in (64, 128):
        X = np.random.default_rng(0).random((B, n_in), dtype=np.float32)
        net.train([(X, np.zeros(B, np.int32), 0)], epochs=1, batch_size=B, lr=1e-3)
        used[B] = net.workspace_bytes
    per_row = 4 * (n_in + sum(widths) + 2 * max(widths) + 4 * k) + 4 + 8
    # alignment of a few dozen buffers spread over 64 rows, and the one-float floor of the
    # pre-pooling gradient row that a net without conv layers still gets: under 32 B a row,
    # less than any buffer the formula could miss (the smallest row here is 12 floats)
    assert abs((used[128] - used[64]) / 64 - per_row) < 32
