"""Tests for den._io, the model file format."""

import hashlib
import json
import math
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from den import _io
from den._io import FORMAT_VERSION, ModelFileError, read_model, write_model

PREFIX = struct.Struct("<8sIQ")


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "net0/layer0/W": rng.standard_normal((5, 3)).astype(np.float32),
        "net0/layer0/b": rng.standard_normal(3),
        "net0/layer1/mask": rng.random((3, 4)) > 0.5,
        "counts": np.arange(7, dtype=np.int64),
        "idx": np.array([-1, 2**31 - 1, -(2**31)], dtype=np.int32),
        "bytes": np.arange(256, dtype=np.uint8),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


SAMPLE_META = {"lr": 0.01, "tasks": 3, "name": "den", "ok": True, "none": None,
               "per_task": [{"units": [10, 12], "loss": 0.5}, {"units": [], "loss": float("inf")}]}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "model.den"
    write_model(path, "DEN", SAMPLE_META, sample_arrays())
    return path


def assert_same_array(returned, original):
    """Bit-exact equality; returned is fresh, writeable, C-contiguous, native-endian."""
    expected = np.asarray(original)
    assert returned.shape == expected.shape
    assert returned.dtype == expected.dtype.newbyteorder("=")
    assert returned.dtype.isnative
    assert returned.flags.c_contiguous and returned.flags.writeable and returned.flags.owndata
    assert returned.tobytes() == np.ascontiguousarray(expected, dtype=returned.dtype).tobytes()


def split(path):
    """Parse a file by following the module docstring, independently of the reader."""
    data = pathlib.Path(path).read_bytes()
    magic, version, hlen = PREFIX.unpack_from(data)
    header = json.loads(data[20:20 + hlen])
    return header, data[20 + hlen:-32], data


def rebuild(path, header, body, version=FORMAT_VERSION, magic=b"DENMODEL"):
    """Write a file with a (possibly bad) header and a *valid* checksum, so only the
    header checks can reject it."""
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    content = PREFIX.pack(magic, version, len(text)) + text + body
    pathlib.Path(path).write_bytes(content + hashlib.sha256(content).digest())


def error_for(path, **kw):
    with pytest.raises(ModelFileError) as info:
        read_model(path, **kw)
    assert str(path) in str(info.value)  # every message names the file
    return str(info.value)


# ------------------------------------------------------------------ round trips


def test_round_trip_all_dtypes_and_shapes(good):
    kind, meta, arrays = read_model(good)
    assert kind == "DEN"
    assert meta == SAMPLE_META
    expected = sample_arrays()
    assert list(arrays) == list(expected)  # order kept
    for name, a in expected.items():
        assert_same_array(arrays[name], a)


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i4", "<i8", "u1", "?", ">f4", ">f8", ">i4", ">i8"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (2, 3), (2, 1, 3, 2)])
def test_round_trip_dtype_shape(tmp_path, dtype, shape):
    a = (np.arange(math.prod(shape)) % 7 - 3).astype(dtype).reshape(shape)
    write_model(tmp_path / "m", "DEN", {}, {"a": a})
    assert_same_array(read_model(tmp_path / "m")[2]["a"], a)


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    inputs = {
        "strided": base[::2, ::3],
        "reversed": base[::-1, ::-1],
        "fortran": np.asfortranarray(base),
        "transposed": base.T,
        "big": base.astype(">f8"),
        "big_strided": base.astype(">i4")[1::2, ::-2],
        "big_scalar": np.array(7, dtype=">i8"),
        "list": [[1, 2], [3, 4]],
    }
    write_model(tmp_path / "m", "DEN", {}, inputs)
    _, _, out = read_model(tmp_path / "m")
    for name, a in inputs.items():
        assert_same_array(out[name], a)
    # stored little-endian on disk, whatever the input byte order
    header, body, _ = split(tmp_path / "m")
    entry = next(e for e in header["arrays"] if e["name"] == "big")
    raw = body[entry["offset"]:entry["offset"] + entry["nbytes"]]
    assert raw == base.astype("<f8").tobytes()


def test_special_float_values_exact(tmp_path):
    a = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, np.finfo(np.float64).max])
    nan_payload = np.array([0x7FC00123, 0xFF800001], dtype=np.uint32).view(np.float32)
    write_model(tmp_path / "m", "DEN", {}, {"a": a, "p": nan_payload, "pb": nan_payload.astype(">f4")})
    out = read_model(tmp_path / "m")[2]
    for name, x in [("a", a), ("p", nan_payload), ("pb", nan_payload)]:
        assert out[name].tobytes() == np.ascontiguousarray(x, "=" + x.dtype.str[1:]).tobytes()


def test_meta_round_trip_nested_and_nonfinite(tmp_path):
    meta = {
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 0.1],
        "nested": {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}},
        "big_int": 2**100, "neg": -5, "bools": [True, False], "unicode": "λ→✓ \u0000 \ud800",
        "empty": {}, "empty_list": [],
        # dicts that look like the format's tags must survive unchanged
        "tag_like": {"$float": "nan"}, "tag_like2": {"$dict": {"x": 1}}, "two_keys": {"$float": 1, "y": 2},
        "": "empty key",
    }
    write_model(tmp_path / "m", "DEN", meta, {})
    _, got, arrays = read_model(tmp_path / "m")
    assert arrays == {}
    assert math.isnan(got["floats"][0])
    assert got["floats"][1:3] == [math.inf, -math.inf]
    assert math.copysign(1, got["floats"][3]) == -1
    assert got["floats"][4:] == meta["floats"][4:]
    del got["floats"], meta["floats"]
    assert got == meta
    assert list(got) == list(meta)  # key order kept


def test_meta_numpy_scalars_and_tuples(tmp_path):
    meta = {"a": np.float32(0.5), "b": np.int64(3), "c": np.bool_(True), "d": (1, 2), "e": np.float64(np.nan)}
    write_model(tmp_path / "m", "DEN", meta, {})
    got = read_model(tmp_path / "m")[1]
    assert got["a"] == 0.5 and type(got["a"]) is float
    assert got["b"] == 3 and type(got["b"]) is int
    assert got["c"] is True and got["d"] == [1, 2] and math.isnan(got["e"])


def test_header_is_strict_json(good):
    header, _, data = split(good)
    hlen = PREFIX.unpack_from(data)[2]
    text = data[20:20 + hlen].decode("ascii")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert header["meta"]["per_task"][1]["loss"] == {"$float": "inf"}


def test_layout_follows_the_spec(good):
    data = good.read_bytes()
    magic, version, hlen = PREFIX.unpack_from(data)
    assert (magic, version) == (b"DENMODEL", 1)
    assert (20 + hlen) % 64 == 0  # header padded so data starts aligned
    header = json.loads(data[20:20 + hlen])
    assert set(header) == {"kind", "meta", "arrays"} and header["kind"] == "DEN"
    raw = data[20:20 + hlen]
    assert raw.rstrip(b" ").endswith(b"}")  # compact JSON, then space padding
    end = 0
    body = data[20 + hlen:-32]
    for e, (name, a) in zip(header["arrays"], sample_arrays().items()):
        assert e["name"] == name
        assert e["dtype"] == a.dtype.newbyteorder("<").str
        assert e["shape"] == list(a.shape) and e["nbytes"] == a.nbytes
        assert e["offset"] % 64 == 0 and (20 + hlen + e["offset"]) % 64 == 0
        assert body[end:e["offset"]] == bytes(e["offset"] - end)  # zero padding
        assert body[e["offset"]:e["offset"] + e["nbytes"]] == np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()
        end = e["offset"] + e["nbytes"]
    assert end == len(body)  # trailer follows the last array
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


def test_str_and_pathlike_paths(tmp_path):
    write_model(str(tmp_path / "a"), "STL", {"x": 1}, {"w": np.ones(2)})
    assert read_model(tmp_path / "a")[0] == "STL"
    write_model(tmp_path / "b", "EWC", {}, {})
    assert read_model(str(tmp_path / "b"), expected_kind="EWC")[0] == "EWC"


def test_overwrite_replaces_previous(tmp_path):
    write_model(tmp_path / "m", "DEN", {"v": 1}, {"a": np.zeros(3)})
    write_model(tmp_path / "m", "DEN", {"v": 2}, {"b": np.ones(2)})
    _, meta, arrays = read_model(tmp_path / "m")
    assert meta == {"v": 2} and list(arrays) == ["b"]
    assert os.listdir(tmp_path) == ["m"]


def test_returned_arrays_are_independent(good):
    a = read_model(good)[2]["net0/layer0/W"]
    a[...] = 0  # writeable, and does not touch the file
    assert read_model(good)[2]["net0/layer0/W"].any()


# --------------------------------------------------------- property-based


DTYPES = st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<i4", ">i4", "<i8", ">i8", "u1", "?"])
NAMES = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
ARRAYS = DTYPES.flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
))
KEYS = st.sampled_from(["$float", "$dict"]) | st.text(max_size=6)  # tag-like keys must round-trip too
META = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=3),
    max_leaves=10)


def _same_meta(a, b):
    if isinstance(a, float):
        # equal with the same sign (so -0.0 != 0.0), or both NaN (a NaN's sign bit is not kept)
        return type(b) is float and ((a == b and math.copysign(1, a) == math.copysign(1, b))
                                     or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_meta, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same_meta(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.dictionaries(NAMES, ARRAYS, max_size=5), meta=st.dictionaries(KEYS, META, max_size=4))
def test_property_round_trip(tmp_path, arrays, meta):
    path = tmp_path / "prop.den"
    write_model(path, "DEN", meta, arrays)
    kind, got_meta, got = read_model(path, expected_kind="DEN")
    assert _same_meta(meta, got_meta)
    assert list(got) == list(arrays)
    for name, a in arrays.items():
        assert_same_array(got[name], a)


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_model(tmp_path / "nope.den")


@pytest.mark.parametrize("content", [b"PK\x03\x04" + bytes(100), b"\x93NUMPY" + bytes(100), b"denmodel" + bytes(60), b"X"])
def test_bad_magic(tmp_path, content):
    path = tmp_path / "m"
    path.write_bytes(content)
    assert "not a den model file" in error_for(path)


def test_changed_magic(good):
    data = bytearray(good.read_bytes())
    data[3] ^= 0x20
    good.write_bytes(bytes(data))
    assert "not a den model file" in error_for(good)


@pytest.mark.parametrize("version", [2, 99, 2**32 - 1, 0])
def test_unknown_version(good, version):
    data = bytearray(good.read_bytes())
    data[8:12] = struct.pack("<I", version)
    good.write_bytes(bytes(data))
    msg = error_for(good)
    assert f"format version {version}" in msg and f"format version {FORMAT_VERSION}" in msg
    if version > FORMAT_VERSION:
        assert "newer" in msg


def test_truncated_at_many_points(good):
    data = good.read_bytes()
    hlen = PREFIX.unpack_from(data)[2]
    cuts = [0, 1, 7, 8, 11, 12, 19, 20, 21, 20 + hlen // 2, 20 + hlen - 1, 20 + hlen,
            20 + hlen + 1, (20 + hlen + len(data)) // 2, len(data) - 33, len(data) - 32, len(data) - 1]
    for cut in cuts:
        good.write_bytes(data[:cut])
        msg = error_for(good)
        assert "truncated" in msg, (cut, msg)


def test_flipped_byte_in_body_is_checksum_error(good):
    data = good.read_bytes()
    hlen = PREFIX.unpack_from(data)[2]
    start, end = 20 + hlen, len(data) - 32  # data section; the trailer follows
    for pos in [start, start + 3, start + 61, (start + end) // 2, end - 1, end, len(data) - 1]:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        good.write_bytes(bytes(bad))
        msg = error_for(good)
        assert "checksum mismatch" in msg and "corrupted" in msg


def test_every_single_byte_flip_is_detected(tmp_path):
    path = tmp_path / "m"
    write_model(path, "DEN", {"a": [1.5, None], "n": math.nan}, {"w": np.arange(6, dtype=np.int32).reshape(2, 3),
                                                                 "m": np.array([True, False])})
    data = path.read_bytes()
    for pos in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= bit
            path.write_bytes(bytes(bad))
            with pytest.raises(ModelFileError):
                read_model(path)


def test_appended_bytes_rejected(good):
    good.write_bytes(good.read_bytes() + b"\0" * 64)
    assert "corrupted" in error_for(good)


def test_wrong_kind(tmp_path):
    write_model(tmp_path / "m", "STL", {}, {"w": np.zeros(2)})
    assert "file holds a STL model, expected DEN" in error_for(tmp_path / "m", expected_kind="DEN")
    assert read_model(tmp_path / "m", expected_kind="STL")[0] == "STL"
    assert read_model(tmp_path / "m")[0] == "STL"


def test_offset_beyond_file(good):
    header, body, _ = split(good)
    header["arrays"][-1]["offset"] = 10**6
    rebuild(good, header, body)
    msg = error_for(good)
    assert "malformed header" in msg and "past the end" in msg
    # the same edit without fixing the checksum reads as damage, not a valid file
    data = bytearray(good.read_bytes())
    data[-1] ^= 1
    good.write_bytes(bytes(data))
    assert "truncated (or corrupted)" in error_for(good)


def test_huge_header_length_refused_without_allocating(good):
    data = bytearray(good.read_bytes())
    data[12:20] = struct.pack("<Q", 2**64 - 1)
    good.write_bytes(bytes(data))
    assert "truncated" in error_for(good)


def _mutated(path, mutate):
    header, body, _ = split(path)
    mutate(header)
    rebuild(path, header, body)
    return error_for(path)


def _set(entry_index, key, value):
    def mutate(h):
        h["arrays"][entry_index][key] = value
    return mutate


@pytest.mark.parametrize("mutate, expect", [
    (_set(0, "dtype", "|O"), "not allowed"),
    (_set(0, "dtype", "O"), "not allowed"),
    (_set(0, "dtype", ">f4"), "not allowed"),
    (_set(0, "dtype", "float32"), "not allowed"),
    (_set(0, "dtype", "<U5"), "not allowed"),
    (_set(0, "dtype", "|V20"), "not allowed"),
    (_set(0, "dtype", ["<f4"]), "not allowed"),
    (_set(0, "shape", [5, 4]), "does not match"),
    (_set(0, "shape", [-5, -3]), "invalid shape"),
    (_set(0, "shape", [5.0, 3]), "invalid shape"),
    (_set(0, "shape", [True, 15]), "invalid shape"),
    (_set(0, "shape", "5,3"), "invalid shape"),
    (_set(0, "shape", [1] * 40), "invalid shape"),
    (_set(-1, "shape", [0, 2**62, 2**62]), "absurd"),
    (_set(0, "nbytes", 2**62), "does not match"),
    (_set(0, "offset", -64), "invalid offset"),
    (_set(0, "offset", "0"), "invalid offset"),
    (_set(1, "offset", 0), "overlaps"),
    (_set(1, "name", "net0/layer0/W"), "duplicate array name"),
    (_set(1, "name", ""), "invalid name"),
    (_set(1, "name", "bad\nname"), "invalid name"),
    (lambda h: h["arrays"][0].pop("offset"), "exactly the keys"),
    (lambda h: h["arrays"][0].update(extra=1), "exactly the keys"),
    (lambda h: h["arrays"].pop(), "unexpected bytes"),
    (lambda h: h.update(arrays={}), "must be a list"),
    (lambda h: h.update(meta=[1]), "must be a JSON object"),
    (lambda h: h.update(meta={"x": {"$float": "banana"}}), "$float"),
    (lambda h: h.update(kind=""), "kind"),
    (lambda h: h.update(kind=5), "kind"),
    (lambda h: h.pop("kind"), "exactly the keys"),
    (lambda h: h.update(version=2), "exactly the keys"),
])
def test_malformed_header_fields(good, mutate, expect):
    msg = _mutated(good, mutate)
    assert "malformed header" in msg and expect in msg


def test_absurd_sizes_refused_before_allocating(good, monkeypatch):
    header, body, _ = split(good)
    header["arrays"][0].update(shape=[2**30, 2**30], nbytes=2**62)  # consistent, but 4 EiB
    rebuild(good, header, body)
    monkeypatch.setattr(_io.np, "empty", lambda *a, **k: pytest.fail("allocated"))
    assert "past the end" in error_for(good)


@pytest.mark.parametrize("text", [
    b"not json", b"\xff\xfe{}", b"[1, 2]", b'{"kind": "DEN", "kind": "DEN", "meta": {}, "arrays": []}',
    b'{"kind": "DEN", "meta": {"x": NaN}, "arrays": []}', b"[" * 100000, b"",
])
def test_malformed_header_text(tmp_path, text):
    path = tmp_path / "m"
    rebuild(path, text, b"")
    assert "malformed header" in error_for(path)


def test_bool_bytes_must_be_0_or_1(good):
    header, body, _ = split(good)
    entry = next(e for e in header["arrays"] if e["dtype"] == "|b1")
    body = bytearray(body)
    body[entry["offset"]] = 7
    rebuild(good, header, bytes(body))
    assert "bool array" in error_for(good)


def test_never_unpickles(tmp_path, monkeypatch):
    """A header claiming an object array whose bytes are a malicious pickle is refused,
    and nothing is ever unpickled."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    payload = pickle.dumps(np.array([Evil()], dtype=object))
    for loader in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, loader, lambda *a, **k: pytest.fail("pickle used"))
    path = tmp_path / "m"
    for dtype in ("|O", "O", "object", "|O8"):
        header = {"kind": "DEN", "meta": {},
                  "arrays": [{"name": "x", "dtype": dtype, "shape": [1], "offset": 0, "nbytes": len(payload)}]}
        rebuild(path, header, payload)
        assert "not allowed" in error_for(path)
    assert not marker.exists()


def test_write_refuses_object_and_other_dtypes(tmp_path):
    for bad in (np.array([object()]), np.zeros(2, np.float16), np.zeros(2, complex), np.array(["s"]),
                np.zeros(2, np.uint16), np.zeros(2, [("a", "<f4")]), np.zeros(2, "M8[s]")):
        with pytest.raises(TypeError, match="den model files store only"):
            write_model(tmp_path / "m", "DEN", {}, {"a": bad})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind, meta, arrays, exc", [
    ("", {}, {}, ValueError),
    ("DÉN", {}, {}, ValueError),
    ("X" * 65, {}, {}, ValueError),
    (b"DEN", {}, {}, ValueError),
    ("DEN", [], {}, TypeError),
    ("DEN", {1: 2}, {}, TypeError),
    ("DEN", {"a": {1, 2}}, {}, TypeError),
    ("DEN", {"a": np.zeros(2)}, {}, TypeError),
    ("DEN", {"a": b"bytes"}, {}, TypeError),
    ("DEN", {}, {"": np.zeros(1)}, ValueError),
    ("DEN", {}, {"λ": np.zeros(1)}, ValueError),
    ("DEN", {}, {1: np.zeros(1)}, ValueError),
    ("DEN", {}, [np.zeros(1)], TypeError),
])
def test_write_validates_inputs(tmp_path, kind, meta, arrays, exc):
    with pytest.raises(exc):
        write_model(tmp_path / "m", kind, meta, arrays)
    assert os.listdir(tmp_path) == []


def test_write_refuses_meta_cycles(tmp_path):
    meta = {"a": []}
    meta["a"].append(meta)
    with pytest.raises(ValueError, match="cycle"):
        write_model(tmp_path / "m", "DEN", meta, {})
    shared = [1]
    write_model(tmp_path / "m", "DEN", {"x": shared, "y": shared}, {})  # shared is not a cycle
    assert read_model(tmp_path / "m")[1] == {"x": [1], "y": [1]}


# -------------------------------------------------------------- atomicity


class Boom(Exception):
    pass


REAL_SHA256, REAL_FSYNC, REAL_REPLACE = hashlib.sha256, os.fsync, os.replace


def _fail_on_nth_call(n, real):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise Boom
        return real(*args, **kwargs)
    return wrapper


class FailingSha:
    """hashlib.sha256 stand-in that breaks part-way through the array data."""

    def __init__(self, fail_after):
        self.real, self.calls, self.fail_after = REAL_SHA256(), 0, fail_after

    def update(self, data):
        self.calls += 1
        if self.calls > self.fail_after:
            raise Boom
        self.real.update(data)

    def digest(self):
        return self.real.digest()


@pytest.mark.parametrize("where", ["mid_data", "fsync", "replace"])
@pytest.mark.parametrize("previous", [True, False])
def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, where, previous):
    path = tmp_path / "model.den"
    if previous:
        write_model(path, "DEN", {"old": True}, {"w": np.arange(10.0)})
        before = path.read_bytes()
    if where == "mid_data":
        monkeypatch.setattr(_io.hashlib, "sha256", lambda: FailingSha(fail_after=5))
    elif where == "fsync":
        monkeypatch.setattr(_io.os, "fsync", _fail_on_nth_call(1, REAL_FSYNC))
    else:
        monkeypatch.setattr(_io.os, "replace", _fail_on_nth_call(1, REAL_REPLACE))
    with pytest.raises(Boom):
        write_model(path, "STL", {"old": False}, sample_arrays())
    monkeypatch.undo()
    if previous:
        assert path.read_bytes() == before
        assert read_model(path, expected_kind="DEN")[1] == {"old": True}
        assert os.listdir(tmp_path) == ["model.den"]
    else:
        assert os.listdir(tmp_path) == []


def test_failed_write_mid_data_had_written_partial_temp(tmp_path, monkeypatch):
    """Sanity check of the simulation above: the failure really happens after some
    bytes went into the temp file (which is then removed)."""
    seen = {}
    real_unlink = os.unlink

    def spy_unlink(p):
        seen["size"] = os.path.getsize(p)
        real_unlink(p)
    monkeypatch.setattr(_io.hashlib, "sha256", lambda: FailingSha(fail_after=5))
    monkeypatch.setattr(_io.os, "unlink", spy_unlink)
    with pytest.raises(Boom):
        write_model(tmp_path / "m", "DEN", {}, sample_arrays())
    monkeypatch.undo()
    assert seen["size"] > 0
    assert os.listdir(tmp_path) == []


def test_written_file_is_fsynced_before_replace(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (events.append("fsync"), REAL_FSYNC(fd))[1])
    monkeypatch.setattr(_io.os, "replace", lambda a, b: (events.append("replace"), REAL_REPLACE(a, b))[1])
    write_model(tmp_path / "m", "DEN", {}, {"a": np.ones(3)})
    assert events[:2] == ["fsync", "replace"]
    assert read_model(tmp_path / "m")[2]["a"].sum() == 3
