"""Running a model through a task sequence, and what comes out of it."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import evaluate

FORMAT = "den.RunResult/1"


@dataclass
class RunResult:
    """What den.run measured.

    auroc[i, j]   test AUROC on task j after learning task i (NaN for j > i, and for rows a
                  jointly trained model never produced)
    capacity[i]   nonzero parameters of the whole model after task i (NaN where not measured)
    task_capacity[j]  nonzero parameters task j's prediction uses, after the last task
    base_params   parameters of one dense base network (trunk + one head)
    seconds[i]    wall seconds per training stage of task i, e.g. {"train": 3.1}
    history       the model's per-task reports (selected units, expansion, split...)
    """

    model: str
    params: dict
    auroc: np.ndarray
    capacity: np.ndarray
    task_capacity: np.ndarray
    base_params: int
    seconds: list
    history: list = field(default_factory=list)
    dataset: str = ""
    seed: int = 0
    total_seconds: float = 0.0

    @property
    def n_tasks(self) -> int:
        return self.auroc.shape[0]

    @property
    def final_auroc(self) -> np.ndarray:
        """Per-task AUROC after the last task."""
        return self.auroc[-1]

    @property
    def mean_auroc(self) -> float:
        """Mean over tasks of the AUROC after the last task."""
        return float(np.nanmean(self.auroc[-1]))

    def mean_auroc_curve(self) -> np.ndarray:
        """Mean AUROC over the tasks learned so far, after each task (the paper's Fig. 3 top)."""
        out = np.full(self.n_tasks, np.nan)
        for i in range(self.n_tasks):
            row = self.auroc[i, : i + 1]
            if np.isfinite(row).any():
                out[i] = np.nanmean(row)
        return out

    @property
    def relative_capacity(self) -> float:
        """Final capacity relative to one base network."""
        return float(self.capacity[-1] / self.base_params)

    def stage_seconds(self) -> dict:
        """Total wall seconds per stage name over all tasks."""
        out = {}
        for row in self.seconds:
            for k, v in row.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "params": self.params,
            "dataset": self.dataset,
            "seed": self.seed,
            "auroc": _nan_to_none(self.auroc),
            "capacity": _nan_to_none(self.capacity),
            "task_capacity": _nan_to_none(self.task_capacity),
            "base_params": self.base_params,
            "seconds": self.seconds,
            "total_seconds": self.total_seconds,
            "history": self.history,
            "mean_auroc": _nan_to_none(np.array(self.mean_auroc)),
        }

    def to_json(self, path=None, indent=1) -> str:
        """The result as JSON (NaN written as null); also written to `path` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path) -> "RunResult":
        """Read a result written by to_json (a JSON string or a file path)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path) as f:
                text = f.read()
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"not a den run result (format {d.get('format')!r}, expected {FORMAT!r})")
        return cls(model=d["model"], params=d["params"], auroc=_none_to_nan(d["auroc"]),
                   capacity=_none_to_nan(d["capacity"]), task_capacity=_none_to_nan(d["task_capacity"]),
                   base_params=d["base_params"], seconds=d["seconds"], history=d.get("history", []),
                   dataset=d.get("dataset", ""), seed=d.get("seed", 0), total_seconds=d.get("total_seconds", 0.0))

    def plot(self, others=(), task=0):
        """The paper's figures for this result (and `others` to compare): see den.plots.figures."""
        from . import plots

        return plots.figures([self, *others], task=task)

    def summary(self) -> str:
        cap = self.relative_capacity
        return (f"{self.model}: mean AUROC {self.mean_auroc:.4f} over {self.n_tasks} tasks, "
                f"capacity {cap:.2f}x base, {self.total_seconds:.1f} s")


def _nan_to_none(a):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return None if math.isnan(a) else float(a)
    return [_nan_to_none(x) for x in a]


def _none_to_nan(x):
    return np.array(x if not isinstance(x, list) else _fill(x), dtype=np.float64)


def _fill(x):
    return [_fill(v) if isinstance(v, list) else (np.nan if v is None else v) for v in x]


def run(model, tasks, *, progress=True, dataset="", seed=None, name=None) -> RunResult:
    """Learn `tasks` in order with `model` and measure what the paper measures.

    After each task i the model is scored on every task learned so far (test AUROC), giving
    the matrix auroc[i, j]; capacity is recorded after each task. Models that learn jointly
    (MTL) are fitted once on all tasks and produce only the last row.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("run needs at least one task")
    if model.n_tasks:
        raise RuntimeError(f"the model has already learned {model.n_tasks} task(s); run needs a fresh model")
    T = len(tasks)
    R = np.full((T, T), np.nan)
    capacity = np.full(T, np.nan)
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc=name or type(model).__name__, unit="task")
    try:
        if model.incremental:
            for i, task in enumerate(tasks):
                model.fit_task(task.X_train, task.y_train, task.X_val, task.y_val, n_outputs=task.n_outputs,
                               head=task.head, input_shape=getattr(task, "input_shape", None))
                R[i, : i + 1] = evaluate.auroc(model, tasks[: i + 1])
                capacity[i] = model.n_params()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(auroc=f"{np.nanmean(R[i, : i + 1]):.4f}")
            finish = getattr(model, "finish", None)
            if finish is not None and finish(tasks):
                # a final pass over all tasks (DEN-Finetune) replaces the last row
                R[-1] = evaluate.auroc(model, tasks)
                capacity[-1] = model.n_params()
        else:
            model.fit_all(tasks)
            R[-1] = evaluate.auroc(model, tasks)
            capacity[-1] = model.n_params()
            if bar is not None:
                bar.update(T)
    finally:
        if bar is not None:
            bar.close()
    total = time.perf_counter() - start
    return RunResult(
        model=name or type(model).__name__,
        params=model.get_params(),
        auroc=R,
        capacity=capacity,
        task_capacity=np.array([model.n_params(j) for j in range(T)], dtype=np.float64),
        base_params=model.base_params(tasks[0].n_outputs),
        seconds=[dict(h.get("seconds", {})) for h in model.history],
        history=_jsonable(model.history),
        dataset=dataset,
        seed=model.seed if seed is None else seed,
        total_seconds=total,
    )


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
