"""Property-based robustness of the strict binding den._core.Net.

Every method is called with generated arguments. Each call starts from a valid set of
arguments (C-contiguous float32 / int32 arrays, sometimes read-only or with zero rows where
that is allowed) and then, in most examples, one argument is spoiled: another dtype (float64,
float16, int32/64, uint8, bool, object, byte-swapped), another shape (0-size, wrong rank, one
column off), another memory layout (Fortran order, a strided view, unaligned), NaN/inf
sprinkled in, labels out of range, or a plain wrong value (negative, huge, None, a string,
a float). The contract checked on every call:

- it returns a result of the right type and shape, and the net's state stays valid (it
  round-trips through Net.from_state); or
- it raises one of ALLOWED (never MemoryError, SystemError or a crash for these tiny inputs),
  and then the net's get_state() is byte-identical to before the call.

The suite's conftest loads a derandomized hypothesis profile: the same examples on every run.
"""

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import same_state
from den import _core

ALLOWED = (TypeError, ValueError, IndexError, KeyError, OverflowError)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BAD_INTS = [-1, -3, -2**31, 2**31, 2**63, 2**64, None, "1", 1.5, float("nan")]
JUNK = [None, "x", 1.5, float("nan"), [], [1, "a"], object(), 3]
DTYPES = [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, object, np.float32]


def state_digest(net):
    """sha256 over everything get_state() returns (arrays with dtype and shape, and scalars)."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype.str}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(k.encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"[{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(net.get_state())
    return h.hexdigest()


def assert_valid(net):
    """The net's state is self-consistent: from_state accepts it and gives the same net."""
    state = net.get_state()
    back = _core.Net.from_state(state)
    assert same_state(back.get_state(), state)
    assert back.widths == net.widths and back.n_heads == net.n_heads


def newest_stamp(net):
    s = net.get_state()
    return max([int(l["stamp"].max()) for l in s["layers"]] + [int(h["stamp"][0]) for h in s["heads"]])


def head_info(net, h):
    """(kind, k, task) of head h."""
    s = net.get_state()["heads"][h]
    return s["kind"], s["W"].shape[0], int(s["stamp"][0])


# ---- generated values --------------------------------------------------------------------------


@st.composite
def nets(draw):
    """A tiny net: 1-2 dense layers, 1-2 heads, sometimes grown by a later task."""
    n_input = draw(st.integers(1, 5))
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    net = _core.Net(n_input, widths, seed=draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["softmax", "sigmoid"]))
        net.add_head(kind, draw(st.integers(2 if kind == "softmax" else 1, 3)), 0, seed=1)
    if draw(st.booleans()):
        net.add_units([draw(st.integers(0, 2)) for _ in widths], 1, seed=2)
        net.add_head("softmax", 2, 1, seed=3)
    return net


def rng_of(draw):
    return np.random.default_rng(draw(st.integers(0, 2**16)))


@st.composite
def good_x(draw, rows, cols, min_rows=1):
    n = draw(st.sampled_from(rows)) if isinstance(rows, list) else rows
    a = rng_of(draw).random((max(n, min_rows), cols), dtype=np.float32)
    if draw(st.integers(0, 3)) == 3:
        a.setflags(write=False)  # read-only input is fine: the core only reads it
    return a


def good_y(draw, net, h, n):
    kind, k, _ = head_info(net, h)
    rng = rng_of(draw)
    if kind == "softmax":
        return rng.integers(0, k, n).astype(np.int32)
    return (rng.random((n, k)) < 0.5).astype(np.float32)


@st.composite
def spoiled(draw, a):
    """a made wrong in one way (or, sometimes, a variant that is still acceptable)."""
    how = draw(st.sampled_from(["dtype", "layout", "shape", "nonfinite", "range", "junk", "swapped", "unaligned"]))
    rng = rng_of(draw)
    if how == "junk" or not isinstance(a, np.ndarray):
        return draw(st.sampled_from(JUNK + [a.tolist() if isinstance(a, np.ndarray) else None]))
    if how == "dtype":
        return a.astype(draw(st.sampled_from(DTYPES)))
    if how == "layout":
        if a.ndim == 2 and draw(st.booleans()):
            return np.asfortranarray(a)
        return np.repeat(a, 2, axis=a.ndim - 1)[..., ::2]
    if how == "shape":
        choice = draw(st.sampled_from(["rows0", "rows+1", "cols-1", "cols+1", "rank+", "rank-", "scalar"]))
        if choice == "rows0":
            return a[:0]
        if choice == "rows+1":
            return np.concatenate([a, a[:1]]) if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
        if choice in ("cols-1", "cols+1") and a.ndim == 2:
            cols = max(0, a.shape[1] + (1 if choice == "cols+1" else -1))
            return np.ascontiguousarray(np.resize(a, (a.shape[0], cols)))
        if choice == "rank-" and a.ndim == 2:
            return np.ascontiguousarray(a.reshape(-1))
        if choice == "scalar":
            return np.asarray(a.flat[0] if a.size else 0, a.dtype)
        return a[..., None]
    if how == "nonfinite" and a.dtype.kind == "f":
        b = a.copy()
        if b.size:
            b.flat[rng.integers(b.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return b
    if how == "range" and a.size:
        b = a.copy()
        if b.dtype.kind == "u":
            b.flat[rng.integers(b.size)] = draw(st.sampled_from([7, 255]))
        elif b.dtype.kind == "i":
            b.flat[rng.integers(b.size)] = draw(st.sampled_from([-1, 99, int(np.iinfo(b.dtype).min)]))
        elif b.dtype.kind == "f":
            # (huge finite values such as 1e30 are left to test_huge_finite_inputs_never_give_nan,
            # an expected failure for now)
            b.flat[rng.integers(b.size)] = draw(st.sampled_from([-0.5, 1.5, -1e3]))
        else:
            b = b.astype(np.uint8) * 7
        return b
    if how == "swapped" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder())
    if how == "unaligned" and a.dtype.itemsize > 1 and a.size:
        buf = np.zeros(a.nbytes + 1, np.uint8)
        out = np.frombuffer(buf[1:].data, dtype=a.dtype, count=a.size).reshape(a.shape)
        out[...] = a
        return out
    return a.astype(np.float64)


def good_flags(draw, net, at_least_one=False):
    out = []
    for w in net.widths:
        if draw(st.booleans()):
            out.append(None)
            continue
        f = rng_of(draw).random(w) < 0.6
        if at_least_one and not f.any():
            f[0] = True
        out.append(f if draw(st.booleans()) else f.astype(np.uint8))
    return out


@st.composite
def spoiled_flags(draw, flags, net):
    how = draw(st.sampled_from(["entry", "length", "junk"]))
    if how == "length":
        return flags + [None] if draw(st.booleans()) else flags[:-1]
    if how == "junk":
        return draw(st.sampled_from(JUNK))
    l = draw(st.integers(0, len(flags) - 1))
    base = flags[l] if flags[l] is not None else np.ones(net.widths[l], bool)
    return flags[:l] + [draw(spoiled(base))] + flags[l + 1:]


# ---- the calls ---------------------------------------------------------------------------------
#
# A call is (name, args: dict, invoke(net, args) -> result, check(net, args, result)). One
# argument may then be spoiled: for arrays by `spoiled`, for ints by BAD_INTS, and so on.


def spoil_value(draw, key, value, net):
    if isinstance(value, np.ndarray):
        return draw(spoiled(value))
    if isinstance(value, list) and key in ("units", "train", "keep", "dup", "which"):
        return draw(spoiled_flags(value, net))
    if isinstance(value, bool):
        return draw(st.sampled_from([None, "yes", 2.5]))
    if isinstance(value, int):
        return draw(st.sampled_from(BAD_INTS + [net.n_heads, net.n_layers, 2**24 + 1]))
    if isinstance(value, float):
        return draw(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), None, "x"]))
    if isinstance(value, str):
        return draw(st.sampled_from(["relu", "", None, 3]))
    if isinstance(value, dict):
        return draw(st.sampled_from([{"l1": -1.0}, {"bogus": 1.0}, {"l1": float("nan")}, "x", {"l1": "a"}, {3: 1.0}]))
    if isinstance(value, _core.Net):
        return draw(st.sampled_from([_core.Net(net.n_input + 1, [2]), _core.Net(net.n_input, list(net.widths) + [2]),
                                     3, "x"]))
    return draw(st.sampled_from(JUNK))


def check_predict(net, a, out):
    kind, k, task = head_info(net, a["head"])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out.shape == (a["X"].shape[0], k)
    assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
    if kind == "softmax" and out.size:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)


def check_features(net, a, out):
    _, _, task = head_info(net, a["head"])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (a["X"].shape[0], net.prefix(task if a["use_stamps"] else -1)[-1])
    assert np.isfinite(out).all() and (out >= 0).all()  # ReLU outputs


def check_loss(net, a, out):
    assert isinstance(out, float) and np.isfinite(out) and out >= 0


def check_like_net(net, a, out):
    assert isinstance(out, _core.Net)
    assert out.widths == net.widths and out.n_heads == net.n_heads and out.n_input == net.n_input
    for layer in out.get_state()["layers"] + out.get_state()["heads"]:
        assert np.isfinite(layer["W"]).all() and np.isfinite(layer["b"]).all()
        if a.get("mode"):  # a Fisher diagonal is a mean of squares
            assert (layer["W"] >= 0).all() and (layer["b"] >= 0).all()


OPS = ["predict", "train", "features", "loss", "gradients", "fisher", "add_head", "add_units", "remove_units",
       "duplicate_units", "select", "dead_units", "prefix", "nonzero", "drift", "restore_units", "from_state"]


@st.composite
def calls(draw, net, op=None, spoil=None):
    """One call of method `op` (drawn if None); spoil: "none" (all arguments valid), "one" (one
    argument spoiled) or None (drawn)."""
    op = op or draw(st.sampled_from(OPS))
    h = draw(st.integers(0, net.n_heads - 1))
    widths0, heads0 = net.widths, net.n_heads
    if op in ("predict", "features"):
        args = {"X": draw(good_x([0, 1, 3], net.n_input, min_rows=0)), "head": h, "use_stamps": draw(st.booleans())}
        invoke = lambda n, a: getattr(n, op)(a["X"], a["head"], use_stamps=a["use_stamps"])  # noqa: E731
        check = check_predict if op == "predict" else check_features
    elif op in ("loss", "gradients", "fisher"):
        X = draw(good_x([1, 2, 5], net.n_input))
        args = {"X": X, "Y": good_y(draw, net, h, X.shape[0]), "head": h}
        if op == "fisher":
            args["mode"] = draw(st.sampled_from(["exact", "empirical"]))
        invoke = lambda n, a: getattr(n, op)(a["X"], a["Y"], a["head"], **({"mode": a["mode"]} if "mode" in a else {}))  # noqa: E731
        check = check_loss if op == "loss" else check_like_net
    elif op == "train":
        head_only = draw(st.integers(0, 4)) == 4
        _, _, task = head_info(net, h)
        cols = net.prefix(task)[-1] if head_only else net.n_input
        X = draw(good_x([1, 2, 5], cols))
        args = {"X": X, "Y": good_y(draw, net, h, X.shape[0]), "head": h,
                "epochs": draw(st.sampled_from([1, 2, 0, 3])), "batch_size": draw(st.sampled_from([2, 1, 64])),
                "lr": draw(st.sampled_from([1e-3, 0.1]))}
        opts = {"optimizer": lambda: draw(st.sampled_from(["adam", "sgd"])),
                "seed": lambda: draw(st.sampled_from([1, 2**64 - 1])),
                "layer_reg": lambda: draw(st.sampled_from([{"l1": 0.01}, {"l1": 0.0, "wd": 0.1}, {"group": 0.1}])),
                "head_reg": lambda: {"l1": 0.01}, "lr_decay": lambda: draw(st.sampled_from([0.5, 1.0])),
                "momentum": lambda: draw(st.sampled_from([0.0, 0.9])), "train_heads": lambda: [h],
                "use_stamps": lambda: draw(st.booleans())}
        if head_only:
            args["head_only"] = True
        else:
            opts.update({"units": lambda: good_flags(draw, net), "train": lambda: good_flags(draw, net),
                         "inputs": lambda: rng_of(draw).random(net.n_input) < 0.7,
                         "max_stamp": lambda: draw(st.sampled_from([-1, 0, 1]))})
        for key, make in opts.items():
            if draw(st.integers(0, 3)) == 3:
                args[key] = make()
        if not head_only and draw(st.integers(0, 3)) == 3:
            args["anchor"] = net.clone()
            args["layer_reg"] = {"pull": 0.5}
        main = ("X", "Y", "head", "epochs", "batch_size", "lr")

        def invoke(n, a):
            return n.train([(a["X"], a["Y"], a["head"])], a["epochs"], a["batch_size"], a["lr"],
                           **{k: v for k, v in a.items() if k not in main})

        def check(n, a, out):
            assert isinstance(out, float) and (np.isfinite(out) or (a["epochs"] == 0 and np.isnan(out)))
            assert n.widths == widths0 and n.n_heads == heads0  # training never changes the structure
    elif op == "add_head":
        kind = draw(st.sampled_from(["sigmoid", "softmax"]))
        args = {"kind": kind, "k": draw(st.integers(2, 3)), "task": draw(st.integers(0, 2))}
        invoke = lambda n, a: n.add_head(a["kind"], a["k"], a["task"], seed=1)  # noqa: E731

        def check(n, a, out):
            assert out == heads0 and n.n_heads == heads0 + 1
    elif op == "add_units":
        args = {"counts": [draw(st.integers(0, 2)) for _ in widths0], "stamp": newest_stamp(net) + draw(st.integers(0, 1))}
        invoke = lambda n, a: n.add_units(a["counts"], a["stamp"], seed=2)  # noqa: E731

        def check(n, a, out):
            assert out is None and n.widths == tuple(w + c for w, c in zip(widths0, a["counts"]))
    elif op in ("remove_units", "duplicate_units"):
        key = "keep" if op == "remove_units" else "dup"
        args = {key: good_flags(draw, net, at_least_one=(op == "remove_units"))}
        if op == "duplicate_units":
            args["stamp"] = newest_stamp(net) + draw(st.integers(0, 1))
        invoke = lambda n, a: n.remove_units(a["keep"]) if op == "remove_units" else n.duplicate_units(a["dup"], a["stamp"])  # noqa: E731

        def check(n, a, out):
            for l, f in enumerate(a[key] if a[key] is not None else [None] * len(widths0)):
                c = None if f is None else int(np.count_nonzero(f))
                if op == "remove_units":
                    assert n.widths[l] == (widths0[l] if c is None else c)
                else:
                    assert n.widths[l] == widths0[l] + (c or 0)
    elif op == "select":
        args = {"head": h}
        invoke = lambda n, a: n.select(a["head"])  # noqa: E731

        def check(n, a, out):
            units, inputs = out
            assert [u.shape for u in units] == [(w,) for w in n.widths] and inputs.shape == (n.n_input,)
            assert all(u.dtype == bool for u in units) and inputs.dtype == bool
    elif op in ("dead_units", "drift"):
        args = {"layer": draw(st.integers(0, net.n_layers - 1))}
        if op == "drift":
            args["prev"] = net.clone()
        invoke = lambda n, a: n.dead_units(a["layer"]) if op == "dead_units" else n.drift(a["prev"], a["layer"])  # noqa: E731

        def check(n, a, out):
            assert isinstance(out, np.ndarray) and out.shape == (n.widths[a["layer"]],)
            assert out.dtype == (bool if op == "dead_units" else np.float32)
    elif op in ("prefix", "nonzero"):
        args = {"task": draw(st.integers(-1, 2))}
        invoke = lambda n, a: getattr(n, op)(a["task"])  # noqa: E731

        def check(n, a, out):
            if op == "prefix":
                assert len(out) == n.n_layers and all(0 <= p <= w for p, w in zip(out, n.widths))
            else:
                assert isinstance(out, int) and out >= 0
    elif op == "restore_units":
        # the documented use: prev is an earlier state (a clone) of this net
        args = {"prev": net.clone(), "which": good_flags(draw, net)}
        invoke = lambda n, a: n.restore_units(a["prev"], a["which"])  # noqa: E731
        check = None
    else:  # from_state
        state = net.get_state()
        args = {"state": state}
        invoke = lambda n, a: _core.Net.from_state(a["state"])  # noqa: E731

        def check(n, a, out):
            assert isinstance(out, _core.Net)
            assert_valid(out)

    spoil = spoil or draw(st.sampled_from(["none", "one"]))
    if spoil == "one" and op == "from_state":
        where = draw(st.sampled_from(["layers", "heads", "top"]))
        if where == "top":
            name = draw(st.sampled_from(["n_input", "input_shape", "layers", "heads"]))
            state[name] = draw(st.sampled_from(JUNK + [(net.n_input, 1, 1), (1, 1, 1), [], {}, -1, 2**31]))
        else:
            entry = state[where][draw(st.integers(0, len(state[where]) - 1))]
            name = draw(st.sampled_from(["W", "b", "mask", "stamp", "kind" if where == "heads" else "op"]))
            entry[name] = spoil_value(draw, name, entry[name], net)
    elif spoil == "one":
        name = draw(st.sampled_from(sorted(args)))
        args[name] = spoil_value(draw, name, args[name], net)
    return op, args, invoke, check


def run_call(net, call):
    """Make the call and check the contract; returns whether it succeeded."""
    name, args, invoke, check = call
    before = state_digest(net)
    try:
        out = invoke(net, args)
    except ALLOWED:
        assert state_digest(net) == before, f"{name} raised but changed the net"
        return False
    except FloatingPointError:  # training diverged: a clear error, and the net is kept
        assert name == "train" and state_digest(net) == before
        return False
    if check is not None:
        check(net, args, out)
    assert_valid(net)
    return True


@pytest.mark.parametrize("spoil", ["none", "one"])
@pytest.mark.parametrize("op", OPS)
def test_single_calls_on_a_fresh_net(op, spoil):
    outcomes = []

    @settings(FUZZ, max_examples=4)
    @given(st.data())
    def one_call(data):
        net = data.draw(nets())
        outcomes.append(run_call(net, data.draw(calls(net, op, spoil))))

    one_call()
    if spoil == "none":  # valid arguments (read-only arrays and zero rows included) always work
        assert all(outcomes), outcomes
    elif op not in ("prefix", "nonzero"):  # these take any int: only huge ones are refused
        assert not all(outcomes), "the spoiled arguments were all accepted: the generator explores nothing"


@settings(FUZZ, max_examples=30)
@given(st.data())
def test_call_sequences_keep_the_net_valid(data):
    net = data.draw(nets())
    for _ in range(data.draw(st.integers(2, 6))):
        run_call(net, data.draw(calls(net)))


@settings(FUZZ, max_examples=30)
@given(st.data())
def test_constructor_arguments(data):
    n_input = data.draw(st.integers(1, 6) | st.sampled_from(BAD_INTS + [0]))
    widths = data.draw(st.lists(st.integers(1, 4) | st.sampled_from(BAD_INTS + [0, 2**24 + 1]), min_size=0, max_size=3)
                       | st.sampled_from(JUNK))
    conv = data.draw(st.sampled_from([None, [[2, 3, 1]], [[2, 2, 1]], [[1, 3, 9]], [[1, 3]], "x", [["a", 3, 1]]]))
    shape = data.draw(st.sampled_from([None, (1, 2, 3), (1, 1, 4), (2, 3), "x", (0, 1, 1), (-1, -1, 4)]))
    seed = data.draw(st.sampled_from([0, 1, 2**64 - 1, -1, 2**64, None]))
    try:
        net = _core.Net(n_input, widths, seed=seed, conv=conv, input_shape=shape)
    except ALLOWED:
        return
    assert net.n_input == n_input and net.widths[-len(widths):] == tuple(widths)
    assert_valid(net)


def test_values_the_fuzz_relies_on_are_refused():
    """Anchors for the generators above: these spoilings must be refused cleanly (if they were
    accepted, the property tests would not be exploring error paths), and read-only input works."""
    net = _core.Net(3, [2])
    net.add_head("softmax", 2, 0)
    X = np.zeros((2, 3), np.float32)
    y = np.zeros(2, np.int32)
    before = state_digest(net)
    for bad in [X.astype(np.float16), X.astype(object), X.astype(bool), X.astype(np.float64), np.asfortranarray(X),
                np.repeat(X, 2, axis=1)[:, ::2], X.astype(">f4"), X[:, :2].copy(), X[..., None], X.tolist()]:
        with pytest.raises((TypeError, ValueError)):
            net.predict(bad, 0)
    for bad_y in [y.astype(np.int64), y + 2, y - 1, y.astype(np.float32), y.astype(bool)]:
        with pytest.raises((TypeError, ValueError)):
            net.train([(X, bad_y, 0)], 1, 1, 0.1)
    buf = np.zeros(X.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(buf[1:].data, np.float32).reshape(2, 3)
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        net.predict(unaligned, 0)
    ro = X.copy()
    ro.setflags(write=False)
    assert net.predict(ro, 0).shape == (2, 2)  # read-only inputs are fine: the core only reads them
    assert state_digest(net) == before


def test_restore_units_never_breaks_the_mask_invariant():
    net = _core.Net(6, [5, 4], seed=0)
    net.add_head("sigmoid", 2, 0, seed=1)
    net.add_units([2, 1], 1, seed=2)  # layer 1's old rows may not read layer 0's new units (mask 0)
    prev = _core.Net(6, [7, 5], seed=3)  # same sizes, masks all ones: not an earlier state
    before = state_digest(net)
    try:
        net.restore_units(prev, [None, np.array([1, 0, 0, 0, 0], bool)])
    except ValueError:
        assert state_digest(net) == before
        return
    assert_valid(net)


@pytest.mark.parametrize("kwargs,shown", [({"lr": -1.5}, "-1.5"), ({"lr_decay": 1.5}, "1.5"),
                                          ({"momentum": 1.5}, "1.5"), ({"Y": 2.5}, "2.5")])
def test_error_messages_show_the_offending_value(kwargs, shown):
    net = _core.Net(4, [3])
    net.add_head("sigmoid", 2, 0)
    X, Y = np.zeros((2, 4), np.float32), np.zeros((2, 2), np.float32)
    if "Y" in kwargs:
        Y = Y + np.float32(kwargs.pop("Y"))
    with pytest.raises(ValueError) as err:
        net.train([(X, Y, 0)], 1, 1, **{"lr": 0.1, **kwargs})
    assert "%g" not in str(err.value) and shown in str(err.value)


@pytest.mark.parametrize("method", ["predict", "features", "loss", "gradients", "fisher"])
def test_huge_finite_inputs_never_give_nan(method):
    net = _core.Net(4, [5, 3], seed=0)
    net.add_head("softmax", 3, 0, seed=1)
    X = np.full((2, 4), 3e38, np.float32)
    X[1] = -3e38
    y = np.zeros(2, np.int32)
    args = (X, 0) if method in ("predict", "features") else (X, y, 0)
    try:
        out = getattr(net, method)(*args)
    except (FloatingPointError, ValueError, OverflowError):
        return
    if isinstance(out, _core.Net):
        values = [l[k] for l in out.get_state()["layers"] + out.get_state()["heads"] for k in ("W", "b")]
    else:
        values = [np.asarray(out, np.float64)]
    assert all(np.isfinite(v).all() for v in values), method
