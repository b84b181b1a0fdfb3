"""The paper's figures from den.RunResult objects (matplotlib).

(a) mean per-task AUROC over the tasks learned so far, after each task (Fig. 3, top row);
(b) final mean AUROC against capacity relative to the base network (Fig. 3, bottom row);
(c) one task's AUROC after each later task: semantic drift (Fig. 5).
"""

from __future__ import annotations

import numpy as np


def figures(results, task=0):
    """One figure with the three panels for a list of RunResult (several seeds of the same
    model are averaged, with their spread shaded). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    groups = {}
    for r in results:
        groups.setdefault(r.model, []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax_a, ax_b, ax_c = axes
    for i, (name, rs) in enumerate(groups.items()):
        color = f"C{i % 10}"
        T = rs[0].n_tasks
        x = np.arange(1, T + 1)
        curves = np.array([r.mean_auroc_curve() for r in rs])
        _band(ax_a, x, curves, color, name, marker="o")
        caps = np.array([r.relative_capacity for r in rs])
        aucs = np.array([r.mean_auroc for r in rs])
        ax_b.errorbar(caps.mean(), aucs.mean(), xerr=caps.std(), yerr=aucs.std(), fmt="o", color=color,
                      label=name, capsize=3)
        ax_b.annotate(name, (caps.mean(), aucs.mean()), textcoords="offset points", xytext=(5, 4), fontsize=7,
                      color=color)
        if task < T:
            drift = np.array([r.auroc[:, task] for r in rs])
            _band(ax_c, x, drift, color, name, marker=".")
    ax_a.set(xlabel="number of tasks learned", ylabel="mean AUROC (tasks so far)", title="(a) average per-task AUROC")
    ax_b.margins(x=0.15)  # room for the labels of the points at the edges
    ax_b.set(xlabel="capacity (x base network)", ylabel="final mean AUROC", title="(b) AUROC vs capacity")
    ax_c.set(xlabel="after learning task", ylabel=f"AUROC on task {task + 1}", title=f"(c) semantic drift of task {task + 1}")
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _band(ax, x, rows, color, label, marker):
    rows = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(rows).any(axis=0)
    if not finite.any():
        return
    with np.errstate(all="ignore"):
        mean = np.nanmean(rows[:, finite], axis=0)
        std = np.nanstd(rows[:, finite], axis=0)
    ax.plot(x[finite], mean, marker=marker, color=color, label=label)
    if rows.shape[0] > 1:
        ax.fill_between(x[finite], mean - std, mean + std, color=color, alpha=0.15)


def growth(model):
    """DEN: units of each hidden layer by the task that created them (stacked bars)."""
    import matplotlib.pyplot as plt

    units = model.units_by_task()
    L, T = units.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * T, 3.5))
    bottom = np.zeros(L)
    for t in range(T):
        ax.bar([f"layer {l + 1}" for l in range(L)], units[:, t], bottom=bottom, label=f"task {t + 1}",
               color=f"C{t % 10}")
        bottom += units[:, t]
    ax.set(ylabel="units", title="units per layer, by the task that added them")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
