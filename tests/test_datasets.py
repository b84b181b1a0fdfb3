"""Tests for den.datasets on small generated files (IDX, CIFAR-100 pickles, AwA features) and on
scikit-learn's bundled digits. One test reads the real Debian Fashion-MNIST when installed."""

import gzip
import itertools
import os
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from den import datasets
from den.datasets import Task, load

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_ambient_data(monkeypatch, tmp_path):
    """Every test starts with DEN_DATA unset and no Debian folder, unless it sets them."""
    monkeypatch.delenv("DEN_DATA", raising=False)
    src = datasets._SOURCES["fashion-mnist"]
    monkeypatch.setitem(datasets._SOURCES, "fashion-mnist",
                        replace(src, debian_dir=str(tmp_path / "no-debian-here")))


# --------------------------------------------------------------------------------------------
# Generated files


def write_idx(path, array, gz=None):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    gz = str(path).endswith(".gz") if gz is None else gz
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.tobytes())


def make_images(n, first_id, rng):
    """28x28 images whose pixels (0, 0) and (0, 1) encode a unique id, with a bright block in the
    top-left quadrant and faint noise."""
    images = rng.integers(0, 20, size=(n, 28, 28)).astype(np.uint8)
    images[:, 3:11, 4:12] = 255
    ids = np.arange(first_id, first_id + n)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    return images


def image_ids(X):
    """Ids of unpermuted, unrotated rows made by make_images (X in [0, 1])."""
    pixels = np.rint(X[:, :2] * 255).astype(int)
    return pixels[:, 0] * 256 + pixels[:, 1]


def write_mnist_like(folder, per_class_train=30, per_class_test=10, gz=True, seed=0):
    """10 classes; train ids 0.., test ids continue after them. Returns (images, labels) of the
    union in id order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = []
    first = 0
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = make_images(len(labels), first, rng)
        first += len(labels)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out.append((images, labels))
    return (np.concatenate([out[0][0], out[1][0]]), np.concatenate([out[0][1], out[1][1]]))


@pytest.fixture
def fashion(tmp_path):
    folder = tmp_path / "fm"
    images, labels = write_mnist_like(folder)
    return folder, images, labels


def cifar_dict(per_class, rng):
    """CIFAR-100 layout: R plane = fine label, G plane = index within the class, B = 200."""
    fine = rng.permutation(np.repeat(np.arange(100), per_class))
    within = np.zeros_like(fine)
    for c in range(100):
        within[fine == c] = np.arange(per_class)
    data = np.empty((len(fine), 3, 1024), dtype=np.uint8)
    data[:, 0], data[:, 1], data[:, 2] = fine[:, None], within[:, None], 200
    return {b"batch_label": b"training batch 1 of 1", b"filenames": [b"x.png"] * len(fine),
            b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
            b"data": data.reshape(len(fine), 3072)}


def write_cifar(folder, train_per_class=10, test_per_class=3, protocol=None):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class, proto in (("train", train_per_class, protocol),
                                   ("test", test_per_class, 5)):  # 5: arrays via _frombuffer
        with open(folder / name, "wb") as f:
            pickle.dump(cifar_dict(per_class, rng), f, protocol=proto)
    meta = {b"fine_label_names": [f"class{c:02d}".encode() for c in range(100)],
            b"coarse_label_names": [f"super{c:02d}".encode() for c in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return folder


def py2_pickle(d):
    """Hand-assembled Python 2 / NumPy 1 style protocol-2 pickle (as the real CIFAR-100 files):
    str as SHORT_BINSTRING/BINSTRING, arrays via numpy.core.multiarray._reconstruct."""
    def string(b):
        if len(b) < 256:
            return b"U" + bytes([len(b)]) + b
        return b"T" + struct.pack("<i", len(b)) + b

    def integer(i):
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    def value(v):
        if isinstance(v, bytes):
            return string(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, list):
            return b"](" + b"".join(value(x) for x in v) + b"e"
        assert isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 2
        dtype = (b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
                 b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                + integer(0) + b"\x85" + string(b"b") + b"\x87R"
                + b"(" + integer(1) + integer(v.shape[0]) + integer(v.shape[1]) + b"\x86"
                + dtype + b"\x89" + string(v.tobytes()) + b"tb")

    return b"\x80\x02}(" + b"".join(string(k) + value(v) for k, v in d.items()) + b"u."


def write_awa(folder, n_classes=12, per_class=70, d=40, text=False):
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    centres = rng.normal(size=(n_classes, d)) * 3
    features = (centres[labels] + rng.normal(size=(len(labels), d))).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    if text:
        np.savetxt(folder / "AwA2-features.txt", features, fmt="%.9g")
        np.savetxt(folder / "AwA2-labels.txt", labels + 1, fmt="%d")
    else:
        np.save(folder / "features.npy", features)
        np.save(folder / "labels.npy", labels)
    return features, labels


# --------------------------------------------------------------------------------------------
# Checks shared by the loaders


def all_arrays(task):
    return [task.X_train, task.y_train, task.X_val, task.y_val, task.X_test, task.y_test]


def check_conventions(tasks, name, n_tasks, n_outputs, input_shape, x_range=(0.0, 1.0)):
    assert len(tasks) == n_tasks
    for t, task in enumerate(tasks):
        assert isinstance(task, Task)
        assert task.name == f"{name}/{t}"
        assert task.n_outputs == n_outputs and task.input_shape == input_shape
        d = int(np.prod(input_shape))
        for X, y in zip(all_arrays(task)[::2], all_arrays(task)[1::2]):
            assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape[1] == d
            assert y.dtype == np.int64 and y.shape == (len(X),) and len(X) > 0
            assert y.min() >= 0 and y.max() < task.n_classes
            if x_range is not None:
                assert X.min() >= x_range[0] and X.max() <= x_range[1]


def check_independent(tasks, shared_X=False):
    """No two arrays of different tasks share memory (except a shared read-only X)."""
    for a, b in itertools.combinations(tasks, 2):
        for i, u in enumerate(all_arrays(a)):
            for j, v in enumerate(all_arrays(b)):
                if shared_X and i == j and i % 2 == 0:
                    assert u is v and not u.flags.writeable
                else:
                    assert not np.shares_memory(u, v)


def columns(X):
    return sorted(c.tobytes() for c in np.ascontiguousarray(X.T))


def permutation_of(base, task):
    """For each column of task's X, the base columns equal to it (KeyError if there is none)."""
    Xb, Xt = (np.concatenate([t.X_train, t.X_val, t.X_test]) for t in (base, task))
    where = {}
    for j, col in enumerate(np.ascontiguousarray(Xb.T)):
        where.setdefault(col.tobytes(), []).append(j)
    return tuple(tuple(where[col.tobytes()]) for col in np.ascontiguousarray(Xt.T))


def check_permuted(base, task):
    """task's X is base's X with the same column permutation on every row of every split."""
    Xb = np.concatenate([base.X_train, base.X_val, base.X_test])
    Xt = np.concatenate([task.X_train, task.X_val, task.X_test])
    np.testing.assert_array_equal(np.sort(Xb, axis=1), np.sort(Xt, axis=1))
    assert columns(Xb) == columns(Xt)
    assert not np.array_equal(Xb, Xt)
    for yb, yt in ((base.y_train, task.y_train), (base.y_val, task.y_val),
                   (base.y_test, task.y_test)):
        np.testing.assert_array_equal(yb, yt)


def same_tasks(a, b):
    return len(a) == len(b) and all(
        x.name == y.name and all(np.array_equal(u, v) for u, v in zip(all_arrays(x), all_arrays(y)))
        for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "i", images, gz=gz)
    write_idx(tmp_path / "l", labels, gz=gz)
    out = datasets.read_idx(tmp_path / "i")
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "l"), labels)


def _idx_bytes(array):
    return (bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            + array.tobytes())


GOOD = _idx_bytes(np.zeros((4, 28, 28), np.uint8))


@pytest.mark.parametrize("content, gz", [
    (GOOD[:-1], False),                                    # truncated body
    (GOOD + b"\x00", False),                               # trailing bytes
    (GOOD[:10], False),                                    # truncated header
    (b"\x00\x00", False),                                  # shorter than the magic
    (b"\x00\x00\x0d\x03" + GOOD[4:], False),               # float data, not unsigned bytes
    (b"\x01\x00\x08\x03" + GOOD[4:], False),               # bad leading bytes
    (_idx_bytes(np.zeros((4, 28), np.uint8)), False),      # 2-D: neither labels nor images
    (gzip.compress(GOOD)[:-20], True),                     # truncated gzip stream
    (GOOD[:-100], True),                                   # truncated, gzipped
])
def test_read_idx_rejects_malformed_files(tmp_path, content, gz):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(gzip.compress(content) if gz and content[:2] != b"\x1f\x8b" else content)
    with pytest.raises(ValueError, match="bad-images-idx3-ubyte"):
        datasets.read_idx(path)


def test_label_count_must_match_image_count(fashion):
    folder, _, _ = fashion
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(299, np.uint8))
    with pytest.raises(ValueError, match="300 images but .* 299 labels"):
        datasets.read_fashion_mnist(folder)


def test_images_and_labels_files_must_not_be_swapped(fashion):
    folder, _, _ = fashion
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros(300, np.uint8))
    with pytest.raises(ValueError, match="expected images"):
        datasets.read_fashion_mnist(folder)


# --------------------------------------------------------------------------------------------
# Where the data is looked for


def test_lookup_order(tmp_path, monkeypatch, fashion):
    folder, images, labels = fashion
    parent = tmp_path / "root"
    write_mnist_like(parent / "fashion-mnist")
    debian = tmp_path / "debian"
    write_mnist_like(debian)
    monkeypatch.setitem(datasets._SOURCES, "fashion-mnist",
                        replace(datasets._SOURCES["fashion-mnist"], debian_dir=str(debian)))
    assert datasets.find_data("fashion-mnist") == debian            # last resort
    monkeypatch.setenv("DEN_DATA", str(parent))
    assert datasets.find_data("fashion-mnist") == parent / "fashion-mnist"
    monkeypatch.setenv("DEN_DATA", str(folder))
    assert datasets.find_data("fashion-mnist") == folder
    assert datasets.find_data("fashion-mnist", path=parent) == parent / "fashion-mnist"
    # An explicit path that does not hold the files is an error, not a silent fallback.
    with pytest.raises(FileNotFoundError, match="path="):
        datasets.find_data("fashion-mnist", path=tmp_path / "empty")
    X_train = datasets.read_fashion_mnist()[0]
    np.testing.assert_array_equal(X_train, images[:300])


def test_missing_fashion_mnist_names_every_way(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load("permuted-fashion-mnist")
    message = str(err.value)
    for needle in ("path=", "DEN_DATA", "apt-get install dataset-fashion-mnist",
                   str(tmp_path / "no-debian-here"), *IDX_NAMES, "never downloads"):
        assert needle in message


@pytest.mark.parametrize("name, needles", [
    ("permuted-mnist", ("MNIST", "$DEN_DATA/mnist", "t10k-labels-idx1-ubyte")),
    ("mnist-variation", ("Fashion-MNIST", "apt-get install dataset-fashion-mnist")),
    ("split-cifar100", ("cifar-100-python", "train + test + meta")),
    ("awa", ("features.npy + labels.npy", "AwA2-features.txt + AwA2-labels.txt")),
])
def test_missing_files_message(tmp_path, monkeypatch, name, needles):
    monkeypatch.setenv("DEN_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load(name)
    message = str(err.value)
    assert "path=" in message and "DEN_DATA" in message and str(tmp_path) in message
    for needle in needles:
        assert needle in message
    if name != "mnist-variation":
        assert "apt-get" not in message


# --------------------------------------------------------------------------------------------
# digits (the real bundled data)


def test_digits_shapes_and_default_split():
    tasks = load("digits")
    check_conventions(tasks, "digits", 10, 10, (1, 8, 8))
    assert {t.head for t in tasks} == {"sigmoid"}
    # 60% / 10% (rounded down) / the rest of 1,797 images.
    assert [len(tasks[0].y_train), len(tasks[0].y_val), len(tasks[0].y_test)] == [1078, 179, 540]
    check_independent(tasks)
    before = tasks[1].X_train.copy()
    tasks[0].X_train[:] = 7.0
    np.testing.assert_array_equal(tasks[1].X_train, before)


def test_digits_task0_is_the_data_and_splits_partition_it():
    task = load("digits", n_tasks=1)[0]
    digits = load_digits()
    X = np.concatenate([task.X_train, task.X_val, task.X_test])
    y = np.concatenate([task.y_train, task.y_val, task.y_test])
    ours = sorted(zip(map(bytes, X), y))
    theirs = sorted(zip(map(bytes, (digits.data / 16).astype(np.float32)), digits.target))
    assert ours == theirs  # every image exactly once, pixels in place, label kept


def test_digits_later_tasks_are_pixel_permutations():
    tasks = load("digits", n_tasks=4, seed=3)
    for task in tasks[1:]:
        check_permuted(tasks[0], task)
    assert len({permutation_of(tasks[0], t) for t in tasks}) == 4  # all different


def test_digits_splits_are_stratified():
    task = load("digits", n_tasks=1, n_train=0.5, n_val=300, n_test=0.2)[0]
    pool = np.bincount(load_digits().target)
    for y, n in ((task.y_train, 898), (task.y_val, 300), (task.y_test, 359)):
        assert len(y) == n
        assert np.all(np.abs(np.bincount(y, minlength=10) - n * pool / pool.sum()) < 2)


def test_digits_deterministic_per_seed():
    a, b, c = load("digits", n_tasks=3, seed=5), load("digits", n_tasks=3, seed=5), \
        load("digits", n_tasks=3, seed=6)
    assert same_tasks(a, b)
    assert not np.array_equal(a[0].y_train, c[0].y_train)                    # another split
    assert permutation_of(a[0], a[1]) != permutation_of(c[0], c[1])          # another shuffle
    # Task t does not depend on how many tasks are loaded.
    assert same_tasks(a[:2], load("digits", n_tasks=2, seed=5))


def test_softmax_head_keeps_ten_outputs():
    tasks = load("digits", n_tasks=2, head="softmax")
    assert [(t.head, t.n_outputs) for t in tasks] == [("softmax", 10)] * 2


# --------------------------------------------------------------------------------------------
# permuted Fashion-MNIST / MNIST on generated IDX files


def test_permuted_fashion_mnist_sizes_and_stratification(fashion):
    folder, images, labels = fashion
    tasks = load("permuted-fashion-mnist", n_tasks=3, path=folder, n_train=200, n_val=50,
                 n_test=40)
    check_conventions(tasks, "permuted-fashion-mnist", 3, 10, (1, 28, 28))
    check_independent(tasks)
    t0 = tasks[0]
    assert t0.classes[9] == "Ankle boot"
    for X, y, per_class in ((t0.X_train, t0.y_train, 20), (t0.X_val, t0.y_val, 5),
                            (t0.X_test, t0.y_test, 4)):
        assert np.all(np.bincount(y, minlength=10) == per_class)
        ids = image_ids(X)
        np.testing.assert_array_equal(labels[ids], y)
        np.testing.assert_array_equal(X, images[ids].reshape(len(ids), -1) / np.float32(255))
    train, val, test = image_ids(t0.X_train), image_ids(t0.X_val), image_ids(t0.X_test)
    assert len(set(train) | set(val)) == 250 and max(train.max(), val.max()) < 300
    assert test.min() >= 300   # test comes from the test file
    for task in tasks[1:]:
        check_permuted(t0, task)


def test_permuted_sizes_fractions_and_defaults(fashion):
    folder, _, _ = fashion
    t = load("permuted-fashion-mnist", n_tasks=1, path=folder, n_train=0.5, n_val=0.1,
             n_test=0.5)[0]
    assert (len(t.y_train), len(t.y_val), len(t.y_test)) == (150, 30, 50)
    t = load("permuted-fashion-mnist", n_tasks=1, path=folder, n_val=60)[0]
    assert (len(t.y_train), len(t.y_val), len(t.y_test)) == (240, 60, 100)  # rest, all test
    with pytest.raises(ValueError, match="does not fit"):
        load("permuted-fashion-mnist", path=folder)  # default n_val=10,000 > 300 images


def test_permuted_mnist_from_plain_files_under_den_data(tmp_path, monkeypatch):
    images, _ = write_mnist_like(tmp_path / "data" / "mnist", gz=False)
    monkeypatch.setenv("DEN_DATA", str(tmp_path / "data"))
    tasks = load("permuted-mnist", n_tasks=2, n_val=30, seed=1)
    check_conventions(tasks, "permuted-mnist", 2, 10, (1, 28, 28))
    assert tasks[0].classes == tuple("0123456789")
    np.testing.assert_array_equal(np.rint(tasks[0].X_test * 255),
                                  images[image_ids(tasks[0].X_test)].reshape(100, -1))
    assert not same_tasks(tasks, load("permuted-mnist", n_tasks=2, n_val=30, seed=2))


# --------------------------------------------------------------------------------------------
# mnist-variation on generated IDX files


SMALL = dict(n_train_per_class=10, n_val_per_class=3, n_test_per_class=7)


def test_variation_tasks_are_balanced_one_vs_rest(fashion):
    folder, _, _ = fashion
    tasks = load("mnist-variation", path=folder, seed=2, **SMALL)
    check_conventions(tasks, "mnist-variation", 10, 1, (1, 28, 28))
    check_independent(tasks, shared_X=True)
    for c, task in enumerate(tasks):
        assert task.head == "sigmoid" and task.classes[1] == datasets.FASHION_MNIST_CLASSES[c]
        assert (len(task.y_train), len(task.y_val), len(task.y_test)) == (100, 30, 70)
        assert [task.y_train.sum(), task.y_val.sum(), task.y_test.sum()] == [10, 3, 7]
    with pytest.raises(ValueError):
        tasks[0].X_train[0, 0] = 1.0  # shared inputs are read-only
    positives = np.stack([t.y_train for t in tasks])
    assert np.all(positives.sum(axis=0) == 1)  # every image is positive for exactly its class
    softmax = load("mnist-variation", path=folder, head="softmax", n_tasks=3, **SMALL)
    assert [(t.head, t.n_outputs) for t in softmax] == [("softmax", 2)] * 3


def test_variation_draws_disjoint_per_class_sets_from_train_and_test(fashion, monkeypatch):
    from scipy import ndimage
    folder, images, labels = fashion
    monkeypatch.setattr(ndimage, "rotate", lambda image, angle, **kw: image)  # ids readable
    tasks = load("mnist-variation", path=folder, background="none", n_tasks=2,
                 per_class_train=20, per_class_val=5, per_class_test=15)   # the paper's spelling
    ids = [image_ids(X) for X in (tasks[0].X_train, tasks[0].X_val, tasks[0].X_test)]
    assert sum(map(len, ids)) == len(set(np.concatenate(ids))) == 400  # all 400, no overlap
    for split_ids, per_class in zip(ids, (20, 5, 15)):
        assert np.all(np.bincount(labels[split_ids], minlength=10) == per_class)
    np.testing.assert_array_equal(tasks[1].y_train, labels[ids[0]] == 1)
    with pytest.raises(ValueError, match="class 0 has 40 images"):
        load("mnist-variation", path=folder, n_train_per_class=30, n_val_per_class=5,
             n_test_per_class=6)


def test_variation_rotates_images(fashion):
    folder, images, _ = fashion
    task = load("mnist-variation", path=folder, background="none", n_tasks=1, **SMALL)[0]
    X = task.X_test.reshape(-1, 28, 28)
    # The source block sits in the top-left quadrant; a uniform rotation moves most of it
    # elsewhere in about 3 images out of 4.
    outside = 1 - X[:, :14, :14].sum(axis=(1, 2)) / X.sum(axis=(1, 2))
    assert 0.5 < np.mean(outside > 0.5) < 0.95
    sources = {bytes(row) for row in (images.reshape(len(images), -1) / np.float32(255))}
    assert not any(bytes(row) in sources for row in task.X_test)


def test_variation_backgrounds_compose_by_elementwise_max(fashion):
    folder, _, _ = fashion
    plain, image, noise = (load("mnist-variation", path=folder, background=b, n_tasks=1,
                                seed=4, **SMALL)[0] for b in ("none", "image", "noise"))
    for split in ("X_train", "X_val", "X_test"):
        p, i, n = getattr(plain, split), getattr(image, split), getattr(noise, split)
        assert np.all(i >= p) and np.all(n >= p)        # same rotations, background underneath
        assert np.all(i[p == 0] <= 0.5 + 1e-6)           # image backgrounds are dimmed to half
        assert np.mean(i > p) > 0.1 and np.mean(n > p) > 0.5
    np.testing.assert_array_equal(plain.y_test, image.y_test)


def test_variation_deterministic_and_seeded(fashion):
    folder, _, _ = fashion
    a = load("mnist-variation", path=folder, n_tasks=2, seed=7, **SMALL)
    assert same_tasks(a, load("mnist-variation", path=folder, n_tasks=2, seed=7, **SMALL))
    b = load("mnist-variation", path=folder, n_tasks=2, seed=8, **SMALL)
    assert not np.array_equal(a[0].X_train, b[0].X_train)


def test_variation_from_mnist_source(tmp_path):
    write_mnist_like(tmp_path / "mnist", gz=False)
    tasks = load("mnist-variation", source="mnist", path=tmp_path, n_tasks=10, **SMALL)
    assert tasks[3].classes == ("not 3", "3")
    with pytest.raises(FileNotFoundError):
        load("mnist-variation", path=tmp_path, **SMALL)  # Fashion-MNIST is not there


@pytest.mark.parametrize("kwargs", [dict(n_tasks=11), dict(source="cifar"),
                                    dict(background="snow"), dict(n_train_per_class=0),
                                    dict(n_val_per_class=2.5)])
def test_variation_bad_arguments(fashion, kwargs):
    folder, _, _ = fashion
    with pytest.raises(ValueError):
        load("mnist-variation", path=folder, **{**SMALL, **kwargs})


# --------------------------------------------------------------------------------------------
# split-cifar100 on generated pickles


def check_cifar_task(task, t, sizes):
    """Sizes, relabelling (R plane = fine label), C order, per-class balance, disjointness."""
    splits = ((task.X_train, task.y_train), (task.X_val, task.y_val), (task.X_test, task.y_test))
    assert tuple(len(y) for _, y in splits) == sizes
    assert task.classes == tuple(f"class{c:02d}" for c in range(10 * t, 10 * t + 10))
    for (X, y), n in zip(splits, sizes):
        planes = np.rint(X.reshape(-1, 3, 32, 32) * 255).astype(int)
        assert np.all(planes[:, 0] == (10 * t + y)[:, None, None])   # R plane: fine label
        assert np.all(planes[:, 2] == 200)                            # C order: B plane last
        assert np.all(np.bincount(y, minlength=10) == n // 10)
    # (class, index within class) identifies a training image: train and val are disjoint.
    train, val = ({(c, int(np.rint(g * 255))) for c, g in zip(y, X[:, 1024])}
                  for X, y in splits[:2])
    assert len(train) == sizes[0] and len(val) == sizes[1] and not train & val


def test_split_cifar100_tasks(tmp_path):
    write_cifar(tmp_path / "cifar-100-python")
    tasks = load("split-cifar100", path=tmp_path)  # the parent folder is accepted
    check_conventions(tasks, "split-cifar100", 10, 10, (3, 32, 32))
    check_independent(tasks)
    for t, task in enumerate(tasks):
        check_cifar_task(task, t, (90, 10, 30))  # 10% of 10 per class for val
    assert same_tasks(tasks[:2], load("split-cifar100", path=tmp_path / "cifar-100-python",
                                      n_tasks=2))
    other = load("split-cifar100", path=tmp_path, n_tasks=1, seed=1)[0]
    assert not np.array_equal(other.y_train, tasks[0].y_train)


def test_split_cifar100_sizes(tmp_path, monkeypatch):
    write_cifar(tmp_path / "data" / "cifar-100-python", protocol=3)  # GLOBAL opcodes
    monkeypatch.setenv("DEN_DATA", str(tmp_path / "data"))
    task = load("split-cifar100", n_tasks=3, val_fraction=0.2)[2]
    check_cifar_task(task, 2, (80, 20, 30))
    task = load("split-cifar100", n_tasks=2, n_train_per_class=3, n_val_per_class=2,
                n_test_per_class=1)[1]
    check_cifar_task(task, 1, (30, 20, 10))
    with pytest.raises(ValueError, match="not both"):
        load("split-cifar100", val_fraction=0.2, n_val_per_class=2)
    with pytest.raises(ValueError, match="fewer than"):
        load("split-cifar100", n_train_per_class=10)  # 10 + 1 val > 10 images per class
    with pytest.raises(ValueError):
        load("split-cifar100", n_tasks=11)


def test_python2_cifar_pickle_is_read(tmp_path):
    rng = np.random.default_rng(0)
    d = cifar_dict(2, rng)
    (tmp_path / "train").write_bytes(py2_pickle({k: d[k] for k in (b"data", b"fine_labels")}))
    (tmp_path / "test").write_bytes(py2_pickle({k: d[k] for k in (b"data", b"fine_labels")}))
    names = [f"class{c:02d}".encode() for c in range(100)]
    (tmp_path / "meta").write_bytes(py2_pickle({b"fine_label_names": names}))
    X, y, X_test, y_test, fine_names = datasets.read_cifar100(tmp_path)
    np.testing.assert_array_equal(X, d[b"data"])
    np.testing.assert_array_equal(y, d[b"fine_labels"])
    assert fine_names[42] == "class42" and y.dtype == np.int64


class Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalEvil(Evil):
    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize("cls, global_name", [(Evil, "system"), (EvalEvil, "builtins.eval")])
def test_restricted_unpickler_refuses_code(tmp_path, cls, global_name):
    sentinel = tmp_path / "pwned"
    folder = write_cifar(tmp_path / "cifar")
    payload = cifar_dict(1, np.random.default_rng(0))
    payload[b"fine_labels"] = cls(f"touch {sentinel}")
    with open(folder / "train", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(pickle.UnpicklingError, match=global_name) as err:
        load("split-cifar100", path=folder)
    assert isinstance(err.value, datasets.UnsafePickleError)
    assert "train" in str(err.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-a-dict", "bad-shape"])
def test_cifar_bad_files(tmp_path, damage):
    folder = write_cifar(tmp_path / "cifar")
    train = folder / "train"
    if damage == "truncate":
        train.write_bytes(train.read_bytes()[:500])
    elif damage == "garbage":
        train.write_bytes(b"\x00not a pickle at all")
    else:
        obj = [1, 2] if damage == "not-a-dict" else {b"data": np.zeros((4, 100), np.uint8),
                                                     b"fine_labels": [0, 1, 2, 3]}
        train.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match="train"):
        datasets.read_cifar100(folder)


# --------------------------------------------------------------------------------------------
# awa on generated feature files


def test_awa_tasks(tmp_path):
    write_awa(tmp_path / "awa")
    tasks = load("awa", path=tmp_path, n_components=8, seed=3)
    check_conventions(tasks, "awa", 10, 1, (8,), x_range=None)
    check_independent(tasks, shared_X=True)
    t = tasks[0]
    assert (len(t.y_train), len(t.y_val), len(t.y_test)) == (12 * 30, 12 * 30, 12 * 10)
    for c, task in enumerate(tasks):
        assert [task.y_train.sum(), task.y_val.sum(), task.y_test.sum()] == [30, 30, 10]
        assert task.classes == (f"not class {c}", f"class {c}")
    # Standardised with the training statistics (PCA and scaling fitted on train only).
    np.testing.assert_allclose(t.X_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(t.X_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(t.X_test.mean(axis=0)).max() > 1e-3
    assert same_tasks(tasks, load("awa", path=tmp_path, n_components=8, seed=3))
    assert not same_tasks(tasks, load("awa", path=tmp_path, n_components=8, seed=4))


def test_awa_text_files_match_npy(tmp_path):
    write_awa(tmp_path / "npy")
    write_awa(tmp_path / "txt", text=True)   # 1-based labels
    a = load("awa", path=tmp_path / "npy", n_components=None, n_tasks=12, n_test_per_class=5)
    b = load("awa", path=tmp_path / "txt", n_components=None, n_tasks=12, n_test_per_class=5)
    assert a[0].input_shape == (40,) and len(a[0].y_test) == 60
    for x, y in zip(a, b):
        for u, v in zip(all_arrays(x), all_arrays(y)):
            np.testing.assert_allclose(u, v, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(n_tasks=13), dict(n_components=361),
                                    dict(n_components=0), dict(n_train_per_class=60)])
def test_awa_bad_arguments(tmp_path, kwargs):
    write_awa(tmp_path)
    with pytest.raises(ValueError):
        load("awa", path=tmp_path, **kwargs)


def test_awa_refuses_pickled_npy(tmp_path):
    write_awa(tmp_path)
    np.save(tmp_path / "labels.npy", np.array([Evil("true")] * 840, dtype=object),
            allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load("awa", path=tmp_path)


# --------------------------------------------------------------------------------------------
# Arguments and Task


def test_unknown_name_lists_names():
    with pytest.raises(ValueError) as err:
        load("mnist")
    assert all(name in str(err.value) for name in datasets.NAMES)


@pytest.mark.parametrize("kwargs", [dict(n_tasks=0), dict(n_tasks=-1), dict(n_tasks=2.5),
                                    dict(n_tasks=True), dict(n_tasks="3"), dict(head="relu"),
                                    dict(seed=-1), dict(seed=1.5), dict(path="/tmp"),
                                    dict(n_train=0), dict(n_train=-3), dict(n_train=1.5),
                                    dict(n_train=0.0), dict(n_train="10"), dict(n_val=None),
                                    dict(n_train=1500, n_val=400), dict(n_train=0.0001)])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        load("digits", **kwargs)


def test_unknown_keywords_raise_type_error_naming_them():
    with pytest.raises(TypeError, match="bar, foo"):
        load("digits", foo=1, bar=2)
    with pytest.raises(TypeError, match="per_class_train"):
        load("digits", per_class_train=3)
    with pytest.raises(TypeError, match="not both"):
        load("mnist-variation", per_class_train=3, n_train_per_class=3)


def test_task_checks_its_arrays():
    X, y = np.zeros((4, 6), np.float32), np.array([0, 1, 1, 0])
    task = Task("t", X, y, X, y, X, y, n_outputs=1, head="sigmoid", input_shape=(6,))
    assert "Task('t', train=4x6" in repr(task) and task.n_classes == 2
    bad = [dict(X_train=X.astype(np.float64)), dict(X_train=np.zeros((6, 4), np.float32).T),
           dict(y_train=y + 1), dict(y_train=y.astype(np.int32)), dict(input_shape=(2, 2)),
           dict(head="relu"), dict(head="softmax"), dict(X_val=X[:0], y_val=y[:0])]
    base = dict(name="t", X_train=X, y_train=y, X_val=X, y_val=y, X_test=X, y_test=y,
                n_outputs=1, head="sigmoid", input_shape=(6,))
    for change in bad:
        with pytest.raises(ValueError):
            Task(**{**base, **change})


def test_split_helper_is_disjoint_and_exact():
    y = np.repeat(np.arange(3), [10, 20, 30])
    quotas = [np.array([2, 4, 6]), np.array([8, 0, 24])]
    parts = datasets._split_by_quota(y, np.arange(3), quotas, np.random.default_rng(0))
    assert not set(parts[0]) & set(parts[1])
    assert [list(np.bincount(y[p], minlength=3)) for p in parts] == [[2, 4, 6], [8, 0, 24]]


# --------------------------------------------------------------------------------------------
# The real Debian Fashion-MNIST (apt-get install dataset-fashion-mnist). Everything it checks is
# also covered above on generated files; this only confirms the real files parse.


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="REAL-DATA test: Debian dataset-fashion-mnist not installed "
                           "(same code paths are tested on generated IDX files)")
def test_real_debian_fashion_mnist(monkeypatch):
    monkeypatch.setitem(datasets._SOURCES, "fashion-mnist",
                        replace(datasets._SOURCES["fashion-mnist"], debian_dir=str(DEBIAN_FASHION)))
    tasks = load("permuted-fashion-mnist", n_tasks=2, n_train=500, n_val=100, n_test=200)
    check_conventions(tasks, "permuted-fashion-mnist", 2, 10, (1, 28, 28))
    assert np.all(np.bincount(tasks[0].y_train) == 50) and tasks[0].X_train.max() == 1.0
    check_permuted(tasks[0], tasks[1])
    tasks = load("mnist-variation", n_tasks=2, n_train_per_class=5, n_val_per_class=2,
                 n_test_per_class=3)
    assert [t.y_test.sum() for t in tasks] == [3, 3] and tasks[0].X_test.shape == (30, 784)


def test_python3_protocol2_pickles_load_and_codecs_stays_harmless(tmp_path):
    """Python 3 writes bytes into protocol-2 pickles through _codecs.encode(str, 'latin1'): such
    re-saved CIFAR files load; any other use of _codecs.encode is refused."""
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"fine_labels": [1, 2]}
    path = tmp_path / "p2"
    path.write_bytes(pickle.dumps(data, protocol=2))
    back = datasets.read_numpy_pickle(path)
    assert back[b"fine_labels"] == [1, 2] and np.array_equal(back[b"data"], data[b"data"])

    class Sneaky:
        def __reduce__(self):
            import _codecs
            return (_codecs.encode, ("x", "rot13"))

    path.write_bytes(pickle.dumps({b"a": Sneaky()}, protocol=2))
    with pytest.raises(datasets.UnsafePickleError):
        datasets.read_numpy_pickle(path)
