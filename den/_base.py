"""What every den model shares: checking data, transactional fit, prediction, capacity, files.

A model keeps its networks in ``self._nets`` (name -> ``den._core.Net``) and everything else
it learns in JSON-friendly attributes, so that saving, loading and rolling back a failed fit
are written once, here.
"""

from __future__ import annotations

import copy
import inspect
import time
import zlib

import numpy as np

from . import _core, _io
from . import _validate as check
from ._progress import StageBar

# kind (as written in files) -> class; filled by Model.__init_subclass__
MODEL_KINDS: dict = {}

#: A small LeNet-like conv trunk (for tests and quick runs): den.DEN(**den.LENET)
LENET = {"conv": ((6, 5, 2), (16, 5, 2)), "hidden": (120, 84)}
#: The paper's modified AlexNet for CIFAR-100: conv 64-128-256-256-128 with 5x5 filters, FC 384-192
ALEXNET = {"conv": ((64, 5, 2), (128, 5, 2), (256, 5, 1), (256, 5, 1), (128, 5, 2)), "hidden": (384, 192)}


class Model:
    """Base class of den's continual learners (DEN and the baselines).

    Parameters shared by every model
    --------------------------------
    hidden : tuple of int
        Widths of the fully connected ReLU trunk (the paper's base network is (312, 128)).
    conv : None, or a sequence of (filters, kernel, pool) conv layers before the dense ones,
        e.g. den.LENET["conv"]; kernels are odd and square with "same" padding, pool is the
        max-pooling window after the layer's ReLU (1: none). Tasks then need an input_shape.
    input_shape : (channels, height, width) of each row of X for a conv trunk; by default
        taken from the first task (a 4-d X, or fit_task's input_shape).
    head : {"sigmoid", "softmax"}
        Default head kind for tasks whose kind is not given to ``fit_task``: k independent
        sigmoid outputs with binary cross-entropy (the paper's and the reference code's choice),
        or a k-way softmax with cross-entropy.
    epochs, batch_size, lr, optimizer : training of each task ("adam" or "sgd").
    lr_decay : learning rate multiplied by this after every epoch (1 = constant).
    seed : int; every random choice (initialisation, shuffling) derives from it.
    progress : bool; show a progress bar per training stage.
    """

    #: written into saved files; subclasses override
    kind = "Model"
    #: whether fit_task makes sense for this model (MTL learns all tasks at once)
    incremental = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # internal helper classes name no kind of their own
            MODEL_KINDS[cls.kind] = cls

    def __init__(self, hidden=(312, 128), *, conv=None, input_shape=None, head="sigmoid", epochs=10,
                 batch_size=128, lr=1e-3, optimizer="adam", lr_decay=1.0, seed=0, progress=False):
        self.hidden = check.widths(hidden)
        self.conv = check.conv_spec(conv)
        self.input_shape = None if input_shape is None else check.shape3(input_shape, "input_shape")
        self.head = check.head_kind(head)
        self.epochs = check.number(epochs, "epochs", low=0, high=check.MAX_EPOCHS, integer=True)
        self.batch_size = check.number(batch_size, "batch_size", low=1, high=check.MAX_BATCH, integer=True)
        self.lr = check.number(lr, "lr", low=0, low_open=True)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer = optimizer
        self.lr_decay = check.number(lr_decay, "lr_decay", low=0, low_open=True, high=1)
        self.seed = check.number(seed, "seed", low=0, integer=True)
        self.progress = bool(progress)
        self._nets = {}
        self._tasks = []       # per task: {"n_outputs", "head"}
        self._n_features = None
        self.history = []      # per task: {"seconds": {stage: s}, ...stage reports}

    # ---- hyperparameters ---------------------------------------------------------------------

    @classmethod
    def _param_names(cls):
        names = []
        for klass in cls.__mro__:
            if "__init__" not in klass.__dict__:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict:
        """The constructor arguments of this model (as stored, after validation)."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            out[name] = _plain(value)
        return out

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- the public face ---------------------------------------------------------------------

    @property
    def n_tasks(self) -> int:
        """Number of tasks learned so far."""
        return len(self._tasks)

    @property
    def n_features(self):
        """Input features, fixed by the first task (None before)."""
        return self._n_features

    def task_info(self, task) -> dict:
        """The head kind and width of a learned task."""
        return dict(self._tasks[self._check_task(task)])

    @property
    def layer_sizes(self) -> tuple:
        """Units of every trunk layer of the base network: conv filters, then dense widths."""
        return tuple(c[0] for c in self.conv) + self.hidden

    def fit_task(self, X, y, X_val=None, y_val=None, *, n_outputs=None, head=None, input_shape=None) -> int:
        """Learn one more task; returns its task id (0, 1, ...).

        X : (n, d) inputs. y : (n,) integer class labels, or (n, k) 0/1 targets for sigmoid
        heads. X_val, y_val : validation data (DEN uses it to decide on expansion).
        n_outputs : head width k (default: inferred from y, see ``den._validate.infer_outputs``).
        head : "sigmoid" or "softmax" (default: the model's ``head``).
        input_shape : (C, H, W) of each row of X, for conv trunks (or pass X as (n, C, H, W)).
        If anything fails or is interrupted, the model is left exactly as it was.
        """
        if not self.incremental:
            raise TypeError(f"{type(self).__name__} learns all tasks jointly: use fit_all(tasks)")
        task = self._prepare(X, y, X_val, y_val, n_outputs, head, input_shape=input_shape)
        return self._transaction(lambda: self._learn(task))

    def predict_proba(self, X, task) -> np.ndarray:
        """Probabilities (n, k) of task `task`'s head for inputs X."""
        t = self._check_task(task)
        X = check.inputs(self._flatten(X, None, "X")[0], "X", self._n_features, min_rows=0)
        return self._predict(X, t)

    def predict(self, X, task) -> np.ndarray:
        """Predicted labels: argmax for multi-output heads, probability > 0.5 for one output."""
        p = self.predict_proba(X, task)
        return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)

    def n_params(self, task=None) -> int:
        """Capacity: nonzero parameters that task `task`'s prediction uses, or of the whole model."""
        if task is not None:
            task = self._check_task(task)
        return int(self._n_params(task))

    def base_params(self, n_outputs=None) -> int:
        """Parameters of one dense base network (trunk and one head): the paper's unit of capacity."""
        if self._n_features is None:
            raise RuntimeError("no task learned yet: the input width is unknown")
        k = n_outputs if n_outputs is not None else self._tasks[0]["n_outputs"]
        total, units, pixels = 0, self._n_features, 1
        if self.conv:
            c, h, w = self.input_shape
            units, pixels = c, h * w
            for filters, kernel, pool in self.conv:
                total += filters * (units * kernel * kernel + 1)
                h, w = h // pool, w // pool
                units, pixels = filters, h * w
        for width in (*self.hidden, k):
            total += width * (units * pixels + 1)
            units, pixels = width, 1
        return int(total)

    def save(self, path):
        """Write the whole model to `path` (atomic; no pickle). Read it back with den.load."""
        arrays, nets = {}, {}
        for name, net in self._nets.items():
            nets[name] = _split_state(net.get_state(), name, arrays)
        meta = {
            "params": self.get_params(),
            "tasks": self._tasks,
            "n_features": self._n_features,
            "history": self.history,
            "extra": self._extra_state(),
            "nets": nets,
        }
        _io.write_model(path, self.kind, meta, arrays)

    @classmethod
    def _from_file(cls, meta, arrays):
        model = cls(**meta["params"])
        tasks, history = meta["tasks"], meta["history"]
        if not isinstance(tasks, list) or not isinstance(history, list) or len(history) != len(tasks):
            raise ValueError("tasks and history must be lists of one entry per task")
        for i, t in enumerate(tasks):
            if not (isinstance(t, dict) and isinstance(t.get("n_outputs"), int) and t.get("head") in check.HEADS):
                raise ValueError(f"tasks[{i}] must give n_outputs and head")
        model._tasks, model.history = tasks, history
        model._n_features = meta["n_features"]
        model._nets = {str(name): _core.Net.from_state(_join_state(skeleton, arrays))
                       for name, skeleton in dict(meta["nets"]).items()}
        model._set_extra_state(meta["extra"])
        model._check_consistent()
        return model

    def _task_heads(self):
        """(net name, head index) that predicts each task."""
        return [("main", t) for t in range(self.n_tasks)]

    def _required_nets(self):
        """Nets a model of this kind must hold beyond the tasks' own."""
        return []

    def _check_consistent(self):
        """Raise ValueError unless nets, heads and task records agree (used when loading)."""
        if self.n_tasks and not isinstance(self._n_features, int):
            raise ValueError("n_features is missing")
        needed = {name for name, _ in self._task_heads()} | set(self._required_nets())
        missing = needed - set(self._nets)
        if missing:
            raise ValueError(f"the {self.kind} model needs the nets {sorted(missing)}")
        for name, net in self._nets.items():
            if net.n_input != self._n_features:
                raise ValueError(f"net {name!r} reads {net.n_input} features, the model {self._n_features}")
        for t, (name, h) in enumerate(self._task_heads()):
            heads = self._nets[name].get_state()["heads"]
            if h >= len(heads):
                raise ValueError(f"task {t} has no head in net {name!r}")
            if heads[h]["W"].shape[0] != self._tasks[t]["n_outputs"] or heads[h]["kind"] != self._tasks[t]["head"]:
                raise ValueError(f"task {t}'s head does not match its record")

    # ---- for subclasses ----------------------------------------------------------------------

    def fit_all(self, tasks):
        """Learn a list of tasks (den.datasets.Task or anything with X_train, y_train, X_val,
        y_val, n_outputs and head). Sequential models learn them one after another; MTL and
        DEN-Finetune override this to train on all of them together. All or nothing: every task
        is checked first, and if learning any of them fails the model is left as it was."""
        if not self.incremental:
            raise TypeError(f"{type(self).__name__} must override fit_all")
        prepared = self._prepare_all(tasks)

        def work():
            for task in prepared:
                self._learn(task)
            self._after_all(tasks)
            return self

        return self._transaction(work)

    def _after_all(self, tasks):
        """Hook run inside fit_all's transaction after the last task (DEN-Finetune)."""

    def _prepare_all(self, tasks):
        """Check a list of task objects; messages name the task ("tasks[2].X_train ...")."""
        try:
            tasks = list(tasks)
        except TypeError:
            raise TypeError(f"tasks must be a list of tasks, got {type(tasks).__name__}") from None
        if not tasks:
            raise ValueError("tasks is empty")
        prepared = []
        for i, t in enumerate(tasks):
            missing = [a for a in ("X_train", "y_train", "n_outputs", "head") if not hasattr(t, a)]
            if missing:
                raise TypeError(f"tasks[{i}] must be a task (den.datasets.Task), it has no {', '.join(missing)}")
            p = self._prepare(t.X_train, t.y_train, getattr(t, "X_val", None), getattr(t, "y_val", None),
                              t.n_outputs, t.head, f"tasks[{i}].", input_shape=getattr(t, "input_shape", None))
            prepared.append(p)
        widths = {p["X"].shape[1] for p in prepared}
        if len(widths) != 1 or (self._n_features is not None and widths != {self._n_features}):
            raise ValueError(f"all tasks must have the model's number of features, got {sorted(widths)}")
        return prepared

    def _learn(self, task) -> int:
        """Learn a prepared task (see _prepare); returns its id. Subclasses implement."""
        raise NotImplementedError

    def _predict(self, X, t):
        raise NotImplementedError

    def _n_params(self, task):
        raise NotImplementedError

    def _extra_state(self) -> dict:
        """JSON-friendly state beyond nets, tasks and history (saved with the model)."""
        return {}

    def _set_extra_state(self, extra):
        pass

    def _new_net(self, stream=0):
        """A fresh trunk of the base architecture (no heads)."""
        return _core.Net(self._n_features, list(self.hidden), seed=self._seed("net", stream),
                         conv=[list(c) for c in self.conv] or None, input_shape=self.input_shape)

    def _seed(self, *parts) -> int:
        """A seed derived deterministically from the model's seed and labels (task, stage...)."""
        words = [self.seed] + [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
        return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])

    def _train(self, net, data, *, task, stage, epochs=None, **kwargs):
        """One training stage on `net` through the C core, timed and with a progress bar."""
        epochs = self.epochs if epochs is None else epochs
        bar = StageBar(f"task {task} {stage}", self.progress)
        start = time.perf_counter()
        try:
            loss = net.train(data, epochs=epochs, batch_size=self.batch_size, lr=self.lr,
                             optimizer=self.optimizer, lr_decay=self.lr_decay, seed=self._seed(task, stage),
                             callback=bar, **kwargs)
        finally:
            bar.close()
        self._timing(task, stage, time.perf_counter() - start)
        return loss

    def _timing(self, task, stage, seconds):
        record = self.history[task].setdefault("seconds", {})
        record[stage] = record.get(stage, 0.0) + seconds

    def _transaction(self, work):
        """Run work(); if it raises (or Ctrl-C), put every attribute back as it was."""
        saved = copy.deepcopy(self.__dict__)
        try:
            return work()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _flatten(self, X, input_shape, name):
        """Conv trunks: (X as rows, the image shape) from a 4-d X or an explicit input_shape,
        checked against the model's; dense trunks take X as it is. Changes nothing."""
        if not self.conv:
            return X, None
        arr = np.asarray(X)
        shape = tuple(arr.shape[1:]) if arr.ndim == 4 else None
        if input_shape is not None:
            given = check.shape3(input_shape, "input_shape")
            if shape is not None and shape != given:
                raise ValueError(f"{name} has images of shape {shape} but input_shape is {given}")
            shape = given
        if shape is None:
            shape = self.input_shape
        if shape is None:
            raise ValueError(f"a conv trunk needs the image shape: pass {name} as (n, C, H, W) or input_shape")
        if self.input_shape is not None and shape != self.input_shape:
            raise ValueError(f"{name} has images of shape {shape}, the model was built for {self.input_shape}")
        return (arr.reshape(arr.shape[0], -1) if arr.ndim == 4 else arr), shape

    def _prepare(self, X, y, X_val, y_val, n_outputs, head, name="", input_shape=None):
        """Check one task's data; returns a dict with core-ready arrays and the head spec."""
        head = check.head_kind(self.head if head is None else head, f"{name}head")
        X, shape = self._flatten(X, input_shape, f"{name}X")
        X = check.inputs(X, f"{name}X", self._n_features)
        if shape is not None and X.shape[1] != int(np.prod(shape)):
            raise ValueError(f"{name}X has {X.shape[1]} features, but images of shape {shape} have "
                             f"{int(np.prod(shape))}")
        y = check.labels(y, f"{name}y", X.shape[0])
        k = check.infer_outputs(y, head) if n_outputs is None else check.number(
            n_outputs, f"{name}n_outputs", low=1, high=check.MAX_UNITS, integer=True)
        if head == "softmax" and k < 2:
            raise ValueError(f"{name}n_outputs: a softmax head needs at least 2 outputs, got {k}")
        Y = check.targets(y, f"{name}y", head, k)
        task = {"X": X, "Y": Y, "n_outputs": k, "head": head, "X_val": None, "Y_val": None, "input_shape": shape}
        if (X_val is None) != (y_val is None):
            raise ValueError(f"{name}X_val and {name}y_val must be given together")
        if X_val is not None:
            Xv = check.inputs(self._flatten(X_val, shape, f"{name}X_val")[0], f"{name}X_val", X.shape[1])
            yv = check.labels(y_val, f"{name}y_val", Xv.shape[0])
            task["X_val"], task["Y_val"] = Xv, check.targets(yv, f"{name}y_val", head, k)
        return task

    def _begin(self, task) -> int:
        """Register a prepared task (inside the transaction) and return its id."""
        if self._n_features is None:
            self._n_features = task["X"].shape[1]
            if self.conv:
                self.input_shape = task["input_shape"]
        self._tasks.append({"n_outputs": task["n_outputs"], "head": task["head"]})
        self.history.append({"seconds": {}})
        return len(self._tasks) - 1

    def _check_task(self, task) -> int:
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
            raise TypeError(f"task must be an integer task id, got {task!r}")
        if not 0 <= task < len(self._tasks):
            raise ValueError(f"unknown task {task}: this model has learned {len(self._tasks)} task(s)"
                             + (f" (ids 0..{len(self._tasks) - 1})" if self._tasks else ""))
        return int(task)


def _plain(value):
    """Tuples (also nested) as lists, so that parameters survive a JSON round trip unchanged."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _split_state(state, prefix, arrays):
    """Net.get_state() -> a JSON skeleton, its arrays moved into `arrays` under path-like names."""
    if isinstance(state, np.ndarray):
        arrays[prefix] = state
        return {"$array": prefix}
    if isinstance(state, dict):
        return {k: _split_state(v, f"{prefix}/{k}", arrays) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_split_state(v, f"{prefix}/{i}", arrays) for i, v in enumerate(state)]
    return state


def _join_state(skeleton, arrays):
    """The inverse of _split_state."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"$array"}:
            return arrays[skeleton["$array"]]
        return {k: _join_state(v, arrays) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_join_state(v, arrays) for v in skeleton]
    return skeleton


def load(path) -> Model:
    """Read a model written by Model.save (any den model class)."""
    kind, meta, arrays = _io.read_model(path)
    cls = MODEL_KINDS.get(kind)
    if cls is None:
        raise _io.ModelFileError(str(path), f"holds a model of kind {kind!r}, which this den does not know")
    try:
        return cls._from_file(meta, arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _io.ModelFileError(str(path), f"the {kind} model in this file is inconsistent: {exc}") from exc
