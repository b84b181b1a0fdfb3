"""Reading and writing den model files (no pickle, ever).

A model file holds one model: a *kind* (the model class, e.g. ``"DEN"``),
JSON metadata, and a set of named NumPy arrays.  This docstring is the
specification of the format; other tools may implement it from here.

File layout, format version 1
=============================

All integers are little-endian; offsets and sizes are in bytes.  With
``H`` the header length and ``D`` the data section length::

    offset    size  field
    --------  ----  -------------------------------------------------------
    0         8     magic: the ASCII bytes ``DENMODEL``
    8         4     format version, uint32 (this is version 1)
    12        8     header length H, uint64
    20        H     header: UTF-8 JSON object, padded at its end with ASCII
                    spaces (0x20) so that 20 + H is a multiple of 64
    20+H      D     data section: the raw bytes of the arrays
    20+H+D    32    trailer: SHA-256 digest of bytes [0, 20+H+D), i.e. of
                    everything before the trailer; the file ends here

The header object has exactly three keys:

``"kind"``
    1 to 64 printable ASCII characters naming the model class.
``"meta"``
    a JSON object with the model's metadata (see *Meta* below).
``"arrays"``
    a list with one entry per array, each an object with exactly the keys

    ``"name"``    non-empty printable ASCII string, unique within the file
    ``"dtype"``   one of ``"<f4" "<f8" "<i4" "<i8" "|u1" "|b1"`` (NumPy type
                  strings for float32, float64, int32, int64, uint8, bool;
                  multi-byte types are always little-endian)
    ``"shape"``   list of non-negative integers, ``[]`` for a 0-d array
    ``"offset"``  start of the array's bytes, counted from the start of the
                  data section (file offset 20 + H)
    ``"nbytes"``  product(shape) * itemsize

Array bytes are in C (row-major) order, little-endian; a bool is one byte,
0 or 1.  Arrays lie in the data section in table order without overlapping;
bytes between them are zero.  Writers start every array at the next
multiple of 64, so with the padded header each array is 64-byte aligned in
the file; readers must not depend on that.  The data section ends where the
last array in the table ends (D = its offset + nbytes, or 0 when there are
no arrays), and the trailer follows immediately.

Meta
----
Meta values are objects (string keys), arrays, strings, integers, floats,
booleans and null.  Strict JSON has no NaN or infinities, so a non-finite
float is written as the one-key object ``{"$float": "nan"}`` (or ``"inf"``,
``"-inf"``).  A one-key object whose key is ``"$float"`` or ``"$dict"`` is
thus a tag; a meta dict that really is such a one-key dict is written
wrapped, as ``{"$dict": {...}}``.  Python tuples and NumPy scalars are
accepted when writing and come back as lists and Python scalars.

Reading
-------
Readers accept only the version(s) they know, and trust nothing in the
header: dtypes come from the fixed table above (they are never handed to a
general dtype parser, so nothing can be unpickled), shapes must match
``nbytes``, every array must lie inside the data section, names must be
unique, and the SHA-256 trailer must match before any result is returned.
``read_model`` reads the file in one sequential pass, straight into the
arrays it returns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
import sys
from collections.abc import Mapping

import numpy as np

__all__ = ["FORMAT_VERSION", "ModelFileError", "read_model", "write_model"]

FORMAT_VERSION = 1
MAGIC = b"DENMODEL"

_PREFIX = struct.Struct("<8sIQ")  # magic, format version, header length
_DIGEST_SIZE = 32  # SHA-256
_ALIGN = 64
_CHUNK = 1 << 20
_MAX_KIND_LEN = 64
_MAX_NDIM = 32
_DTYPES = {s: np.dtype(s) for s in ("<f4", "<f8", "<i4", "<i8", "|u1", "|b1")}
_NATIVE = {s: dt.newbyteorder("=") for s, dt in _DTYPES.items()}
_ALLOWED = "float32, float64, int32, int64, uint8, bool"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_TAGS = ("$float", "$dict")


class ModelFileError(ValueError):
    """A file could not be read as a den model file; ``path`` names it."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


# --------------------------------------------------------------- writing


def write_model(path, kind: str, meta: dict, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a model file atomically: ``path`` ends up holding either the
    previous file, untouched, or the complete new one."""
    path = os.fsdecode(path)
    header, blobs = _encode(kind, meta, arrays)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            sha = hashlib.sha256()
            for chunk in (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header):
                f.write(chunk)
                sha.update(chunk)
            end = 0
            for offset, data in blobs:
                for chunk in (bytes(offset - end), data):
                    f.write(chunk)
                    sha.update(chunk)
                end = offset + data.nbytes
            f.write(sha.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every OS
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _encode(kind, meta, arrays):
    """Validate the inputs; return (padded header bytes, [(offset, uint8 array)])."""
    if not _valid_kind(kind):
        raise ValueError(f"kind must be 1 to {_MAX_KIND_LEN} printable ASCII characters, got {kind!r}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    table, blobs, end = [], [], 0
    for name, value in arrays.items():
        if not _valid_name(name):
            raise ValueError(f"array names must be non-empty printable ASCII strings, got {name!r}")
        a = np.asarray(value)
        dtype = _DTYPES.get(a.dtype.newbyteorder("<").str)
        if dtype is None:
            raise TypeError(f"array {name!r} has dtype {a.dtype}; den model files store only {_ALLOWED}")
        a = np.asarray(a, dtype=dtype, order="C")  # little-endian, C order (copies only if needed)
        offset = -(-end // _ALIGN) * _ALIGN
        table.append({"name": name, "dtype": dtype.str, "shape": list(a.shape),
                      "offset": offset, "nbytes": a.nbytes})
        blobs.append((offset, a.reshape(-1).view(np.uint8)))
        end = offset + a.nbytes
    doc = {"kind": kind, "meta": _encode_meta(meta, "meta", set()), "arrays": table}
    text = json.dumps(doc, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    return text + b" " * (-(_PREFIX.size + len(text)) % _ALIGN), blobs


def _encode_meta(obj, where, active):
    """Turn meta into strict-JSON-ready values (see "Meta" in the module docstring)."""
    if obj is None or isinstance(obj, (bool, np.bool_, str)):
        return bool(obj) if isinstance(obj, np.bool_) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isfinite(x):
            return x
        return {"$float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
    if not isinstance(obj, (list, tuple, Mapping)):
        raise TypeError(f"{where}: cannot store a {type(obj).__name__} in meta "
                        "(allowed: dict, list, tuple, str, int, float, bool, None)")
    if id(obj) in active:
        raise ValueError(f"{where}: meta contains a reference cycle")
    active.add(id(obj))
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: meta dict keys must be str, got {k!r}")
            out[k] = _encode_meta(v, f"{where}[{k!r}]", active)
        if len(out) == 1 and next(iter(out)) in _TAGS:
            out = {"$dict": out}
    else:
        out = [_encode_meta(v, f"{where}[{i}]", active) for i, v in enumerate(obj)]
    active.discard(id(obj))
    return out


def _valid_kind(kind):
    return isinstance(kind, str) and 0 < len(kind) <= _MAX_KIND_LEN and kind.isascii() and kind.isprintable()


def _valid_name(name):
    return isinstance(name, str) and name != "" and name.isascii() and name.isprintable()


# --------------------------------------------------------------- reading


def read_model(path, expected_kind: str | None = None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Read a model file; return ``(kind, meta, arrays)``.

    Raises FileNotFoundError for a missing file and ModelFileError for any
    problem with its contents, including a kind other than ``expected_kind``.
    The arrays are fresh, writeable, C-contiguous and in native byte order.
    """
    path = os.fsdecode(path)
    with open(path, "rb") as f:
        reader = _Reader(f, os.fstat(f.fileno()).st_size)
        try:
            kind, meta, arrays = _read(reader, path)
        except _Truncated:  # only if the file shrank while we read it
            raise ModelFileError(path, "file is truncated (it ended while being read)") from None
    if expected_kind is not None and kind != expected_kind:
        raise ModelFileError(path, f"file holds a {kind} model, expected {expected_kind}")
    return kind, meta, arrays


class _Truncated(Exception):
    pass


class _Bad(Exception):
    """A problem found in the header; ``truncated`` if the file is too short for it."""

    def __init__(self, message, truncated=False):
        super().__init__(message)
        self.truncated = truncated


class _Reader:
    """Reads a file front to back, hashing every byte it consumes."""

    def __init__(self, f, size):
        self.f, self.size, self.pos, self.sha = f, size, 0, hashlib.sha256()

    def read(self, n, exact=True):
        data = self.f.read(n)
        if exact and len(data) != n:
            raise _Truncated
        self.sha.update(data)
        self.pos += len(data)
        return data

    def read_into(self, buf):  # buf: 1-D uint8 array
        view, got = memoryview(buf), 0
        while got < len(view):
            n = self.f.readinto(view[got:])
            if not n:
                raise _Truncated
            got += n
        self.sha.update(buf)
        self.pos += got

    def skip(self, n):
        while n > 0:
            n -= len(self.read(min(n, _CHUNK)))

    def trailer_matches(self):
        """Read the trailer (unhashed) and compare it with the digest so far."""
        return self.f.read(_DIGEST_SIZE + 1) == self.sha.digest()

    def digest_matches(self):
        """Hash up to the trailer and compare; True if the file is intact."""
        try:
            if self.pos > self.size - _DIGEST_SIZE:
                return False
            self.skip(self.size - _DIGEST_SIZE - self.pos)
            return self.trailer_matches()
        except _Truncated:
            return False


def _read(r, path):
    size = r.size
    head = r.read(_PREFIX.size, exact=False)
    if head[:len(MAGIC)] != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise ModelFileError(path, f"file is truncated: only {size} bytes long")
        raise ModelFileError(path, f"not a den model file (starts with {head[:len(MAGIC)]!r}, "
                                   f"expected {MAGIC!r})")
    if len(head) < _PREFIX.size:
        raise ModelFileError(path, f"file is truncated: only {size} bytes long")
    _, version, header_len = _PREFIX.unpack(head)
    if version != FORMAT_VERSION:
        newer = " (written by a newer den; upgrade den to read it)" if version > FORMAT_VERSION else ""
        raise ModelFileError(path, f"file has format version {version}, but this den reads only "
                                   f"format version {FORMAT_VERSION}{newer}")
    try:
        data_start = _PREFIX.size + header_len
        if data_start + _DIGEST_SIZE > size:
            raise _Bad(f"header length {header_len} runs past the end of the {size}-byte file",
                       truncated=True)
        kind, meta, table = _parse_header(r.read(header_len), data_start, size)
    except _Bad as bad:
        # Tell damage (checksum fails) from a file that was written this way.
        if r.digest_matches():
            raise ModelFileError(path, f"malformed header: {bad}") from None
        if bad.truncated:
            raise ModelFileError(path, f"file is truncated (or corrupted): {bad}") from None
        raise ModelFileError(path, f"file is corrupted (checksum mismatch): {bad}") from None

    arrays, bad_bools = {}, []
    for name, dtype, shape, offset, nbytes in table:
        r.skip(data_start + offset - r.pos)
        arr = np.empty(shape, dtype=_NATIVE[dtype])
        if nbytes:
            raw = arr.reshape(-1).view(np.uint8)
            r.read_into(raw)
            if dtype == "|b1" and raw.max() > 1:
                bad_bools.append(name)
            if sys.byteorder == "big" and arr.itemsize > 1:
                arr.byteswap(inplace=True)
        arrays[name] = arr
    if not r.trailer_matches():
        raise ModelFileError(path, "checksum mismatch: the file is corrupted")
    if bad_bools:
        raise ModelFileError(path, f"malformed data: bool array {bad_bools[0]!r} holds bytes other than 0 and 1")
    return kind, meta, arrays


def _parse_header(raw, data_start, size):
    """Decode and check the header; return (kind, meta, [(name, dtype, shape, offset, nbytes)])."""
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # includes UnicodeDecodeError, JSONDecodeError
        raise _Bad(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) != {"kind", "meta", "arrays"}:
        raise _Bad('expected a JSON object with exactly the keys "kind", "meta", "arrays"')
    if not _valid_kind(doc["kind"]):
        raise _Bad(f"kind must be 1 to {_MAX_KIND_LEN} printable ASCII characters, got {doc['kind']!r}")
    if not isinstance(doc["meta"], dict):
        raise _Bad('"meta" must be a JSON object')
    try:
        meta = _decode_meta(doc["meta"])
    except RecursionError:
        raise _Bad("meta is nested too deeply") from None
    if not isinstance(doc["arrays"], list):
        raise _Bad('"arrays" must be a list')

    table, names, end = [], set(), 0
    data_end = size - _DIGEST_SIZE
    for i, entry in enumerate(doc["arrays"]):
        if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise _Bad(f'array entry {i} must have exactly the keys "name", "dtype", "shape", "offset", "nbytes"')
        name, dtype, shape, offset, nbytes = (entry[k] for k in ("name", "dtype", "shape", "offset", "nbytes"))
        if not _valid_name(name):
            raise _Bad(f"array entry {i} has an invalid name {name!r}")
        if name in names:
            raise _Bad(f"duplicate array name {name!r}")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise _Bad(f"array {name!r} has dtype {dtype!r}, which is not allowed "
                       f"(allowed: {', '.join(_DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(_is_count(d) for d in shape)):
            raise _Bad(f"array {name!r} has an invalid shape {shape!r}")
        itemsize = _DTYPES[dtype].itemsize
        if math.prod(d for d in shape if d) * itemsize > sys.maxsize:
            raise _Bad(f"array {name!r} has an absurd shape {shape!r}")
        if not (_is_count(offset) and _is_count(nbytes)):
            raise _Bad(f"array {name!r} has an invalid offset or nbytes")
        if nbytes != math.prod(shape) * itemsize:
            raise _Bad(f"array {name!r}: nbytes {nbytes} does not match shape {shape} of {dtype}")
        if offset < end:
            raise _Bad(f"array {name!r} at offset {offset} overlaps the previous array or is out of order")
        end = offset + nbytes
        if data_start + end > data_end:
            raise _Bad(f"array {name!r} spans file bytes {data_start + offset}..{data_start + end}, "
                       f"past the end of the data section at byte {data_end} of the {size}-byte file",
                       truncated=True)
        table.append((name, dtype, tuple(shape), offset, nbytes))
    if data_start + end != data_end:
        raise _Bad(f"{data_end - data_start - end} unexpected bytes between the last array and the checksum")
    return doc["kind"], meta, table


def _is_count(x):
    return type(x) is int and x >= 0


def _no_duplicate_keys(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Bad("duplicate key in a JSON object")
    return out


def _no_constant(name):
    raise _Bad(f"{name} is not valid in strict JSON")


def _decode_meta(obj):
    if isinstance(obj, list):
        return [_decode_meta(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key == "$float":
            if not isinstance(value, str) or value not in _NONFINITE:
                raise _Bad(f"bad $float tag in meta: {value!r}")
            return _NONFINITE[value]
        if key == "$dict":
            if not isinstance(value, dict):
                raise _Bad("bad $dict tag in meta")
            obj = value
    return {k: _decode_meta(v) for k, v in obj.items()}
