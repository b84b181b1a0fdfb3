"""Bad input at den._core: a clear Python exception, and the net exactly as it was."""

import threading

import numpy as np
import pytest

from conftest import make_data, make_net, same_state
from den import _core


@pytest.fixture
def net():
    n = make_net(n_input=8, widths=(6, 5), heads=(("softmax", 3), ("sigmoid", 2)))
    return n


def good(net):
    X, y = make_data(20, 8, "softmax", 3)
    return X, y


BAD_X = [
    (lambda X: X.astype(np.float64), TypeError, "dtype"),
    (lambda X: X.astype(np.float32).newbyteorder().byteswap() if hasattr(X, "newbyteorder") else X.view(X.dtype.newbyteorder()), TypeError, "dtype"),
    (lambda X: np.asfortranarray(X), ValueError, "C-contiguous"),
    (lambda X: X[:, ::2].copy()[:, :4], ValueError, "shape"),
    (lambda X: X[::2], ValueError, "C-contiguous"),
    (lambda X: X.reshape(-1), ValueError, "dimension"),
    (lambda X: X.tolist(), TypeError, "numpy array"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X).astype(np.float32), ValueError, "NaN"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X).astype(np.float32), ValueError, "inf"),
    (lambda X: X[:0], ValueError, "rows"),
]


@pytest.mark.parametrize("make_bad,exc,msg", BAD_X)
def test_bad_inputs_raise_and_change_nothing(net, make_bad, exc, msg):
    X, y = good(net)
    bad = make_bad(X)
    before = net.get_state()
    with pytest.raises(exc, match=msg):
        net.train([(bad, y, 0)], epochs=1, batch_size=4, lr=0.01)
    with pytest.raises(exc, match=msg):
        net.loss(bad, y, 0)
    if msg != "rows":  # predicting on zero rows is fine
        with pytest.raises(exc, match=msg):
            net.predict(bad, 0)
    assert same_state(net.get_state(), before)


BAD_Y = [
    (lambda y: y.astype(np.int64), TypeError, "dtype"),
    (lambda y: np.where(y == 0, 3, y).astype(np.int32), ValueError, "not a class"),
    (lambda y: np.where(y == 0, -1, y).astype(np.int32), ValueError, "not a class"),
    (lambda y: y[:-1], ValueError, "shape"),
    (lambda y: y.reshape(-1, 1), ValueError, "dimension"),
]


@pytest.mark.parametrize("make_bad,exc,msg", BAD_Y)
def test_bad_softmax_labels(net, make_bad, exc, msg):
    X, y = good(net)
    before = net.get_state()
    with pytest.raises(exc, match=msg):
        net.train([(X, make_bad(y), 0)], epochs=1, batch_size=4, lr=0.01)
    assert same_state(net.get_state(), before)


def test_bad_sigmoid_targets(net):
    X, _ = good(net)
    Y = np.zeros((20, 2), np.float32)
    for bad, msg in [(Y + 2, r"\[0, 1\]"), (np.full((20, 2), np.nan, np.float32), r"\[0, 1\]"),
                     (Y[:, :1].copy(), "shape"), (Y.astype(np.float64), "dtype")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            net.train([(X, bad, 1)], epochs=1, batch_size=4, lr=0.01)


@pytest.mark.parametrize("head", [-1, 2, 99])
def test_unknown_head(net, head):
    X, y = good(net)
    with pytest.raises(IndexError, match="head"):
        net.predict(X, head)
    with pytest.raises(IndexError, match="head"):
        net.train([(X, y, head)], epochs=1, batch_size=4, lr=0.01)


@pytest.mark.parametrize("kwargs,msg", [
    ({"epochs": -1}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"lr_decay": 1.5}, "lr_decay"), ({"momentum": 1.0}, "momentum"),
    ({"layer_reg": {"l1": -1}}, "l1"), ({"layer_reg": {"l3": 1}}, "unknown regulariser"),
    ({"layer_reg": {"pull": float("inf")}}, "pull"), ({"units": [None]}, "entries"),
    ({"units": [np.ones(5, bool), None]}, "shape"), ({"train": [np.ones(6, np.int64), None]}, "dtype"),
    ({"inputs": np.ones(3, bool)}, "shape"), ({"train_heads": [1]}, "no data entry"),
    ({"callback": 3}, "callable"), ({"coef": None, "anchor": 5}, "anchor"),
])
def test_bad_training_arguments(net, kwargs, msg):
    X, y = good(net)
    args = {"epochs": 1, "batch_size": 4, "lr": 0.01, **kwargs}
    before = net.get_state()
    with pytest.raises((ValueError, TypeError, KeyError), match=msg):
        net.train([(X, y, 0)], **args)
    assert same_state(net.get_state(), before)


def test_bad_data_lists(net):
    X, y = good(net)
    for data, msg in [([], "1 or more"), ([(X, y)], "tuple"), ([[X, y, 0]], "tuple"), (5, "sequence")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            net.train(data, epochs=1, batch_size=4, lr=0.01)


def test_anchor_must_be_an_earlier_state(net):
    X, y = good(net)
    other = _core.Net(8, [9, 5])
    with pytest.raises(ValueError, match="earlier state"):
        net.train([(X, y, 0)], epochs=1, batch_size=4, lr=0.01, anchor=other, layer_reg={"pull": 1.0})


def test_constructor_and_structure_arguments():
    with pytest.raises(ValueError, match="widths"):
        _core.Net(4, [])
    with pytest.raises(ValueError, match="widths"):
        _core.Net(4, [3, 0])
    with pytest.raises(ValueError, match="n_input"):
        _core.Net(0, [3])
    with pytest.raises(ValueError, match="widths"):
        _core.Net(4, [2**40])
    with pytest.raises(OverflowError):
        _core.Net(2**40, [3])
    net = _core.Net(4, [3])
    with pytest.raises(ValueError, match="kind"):
        net.add_head("tanh", 2, 0)
    with pytest.raises(ValueError, match="softmax head needs"):
        net.add_head("softmax", 1, 0)
    with pytest.raises(ValueError, match="task"):
        net.add_head("sigmoid", 1, -1)
    with pytest.raises(IndexError):
        net.drift(net, 3)
    with pytest.raises(IndexError):
        net.select(0)


@pytest.mark.parametrize("edit,msg", [
    (lambda s: s["layers"][0].update(W=s["layers"][0]["W"][:, :3].copy()), "shape"),
    (lambda s: s["layers"][0]["W"].__setitem__((0, 0), np.nan), "NaN"),
    (lambda s: s["layers"][1].update(stamp=np.array([0, 1, 0, 0, 0], np.int32)), "non-decreasing"),
    (lambda s: s["layers"][1]["mask"].__setitem__((0, 0), False), "mask forbids"),
    (lambda s: s["heads"][0].update(kind="relu"), "kind"),
    (lambda s: s.pop("layers"), "layers"),
    (lambda s: s["heads"][0].update(stamp=np.array([0, 1, 0], np.int32)), "stamps"),
])
def test_from_state_validates_everything(net, edit, msg):
    s = net.get_state()
    edit(s)
    with pytest.raises((ValueError, KeyError, TypeError), match=msg):
        _core.Net.from_state(s)


def test_a_net_cannot_be_used_by_two_threads_at_once(net):
    X, y = make_data(4000, 8, "softmax", 3)
    errors = []
    started = threading.Event()

    def slow_callback(*args):
        started.set()

    t = threading.Thread(target=lambda: net.train([(X, y, 0)], epochs=30, batch_size=4, lr=1e-3,
                                                  callback=slow_callback, poll_interval=0.01))
    t.start()
    started.wait(5)
    try:
        net.predict(X[:2], 0)
    except RuntimeError as e:
        errors.append(str(e))
    t.join()
    assert errors and "another thread" in errors[0]


def test_callback_exception_stops_training_and_keeps_the_net(net):
    X, y = make_data(2000, 8, "softmax", 3)
    before = net.get_state()

    def boom(epoch, epochs, step, steps, loss):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        net.train([(X, y, 0)], epochs=50, batch_size=4, lr=1e-3, callback=boom, poll_interval=0.001)
    assert same_state(net.get_state(), before)


def test_diverging_training_raises_floating_point_error(net):
    X, y = make_data(50, 8, "softmax", 3)
    before = net.get_state()
    with pytest.raises(FloatingPointError, match="diverged"):
        net.train([(X * 1e30, y, 0)], epochs=5, batch_size=10, lr=1e30, optimizer="sgd")
    assert same_state(net.get_state(), before)


def test_threads_knob():
    n = _core.get_num_threads()
    _core.set_num_threads(1)
    assert _core.get_num_threads() == 1
    _core.set_num_threads(n)
    with pytest.raises(ValueError):
        _core.set_num_threads(0)
    info = _core.blas_info()
    assert info["corename"] and "OpenBLAS" in info["config"]
