"""The baselines of the DEN paper, all on the same C core and head kinds as DEN.

- STL: one independent network per task (no forgetting, capacity grows T-fold).
- MTL: one trunk and one head per task, trained on all tasks jointly (fit_all).
- DNN: one trunk, a new head per task, plain sequential fine-tuning (forgets).
- L2: DNN plus lambda * ||W - W_{t-1}||^2 on the trunk while learning task t.
- EWC: DNN plus the elastic weight consolidation penalty (Kirkpatrick et al., 2017).
- Progressive: a new column per task with lateral connections from every earlier column
  (Rusu et al., 2016); earlier columns frozen exactly.
"""

from __future__ import annotations

import numpy as np

from . import _validate as check
from ._base import Model


class STL(Model):
    """Single-task learning: an independent network (trunk + head) for every task."""

    kind = "STL"

    def _learn(self, task):
        t = self._begin(task)
        net = self._new_net(stream=t)
        net.add_head(task["head"], task["n_outputs"], 0, seed=self._seed("head", t))
        self._nets[f"task{t}"] = net
        self._train(net, [(task["X"], task["Y"], 0)], task=t, stage="train")
        return t

    def _task_heads(self):
        return [(f"task{t}", 0) for t in range(self.n_tasks)]

    def _predict(self, X, t):
        return self._nets[f"task{t}"].predict(X, 0)

    def _n_params(self, task):
        if task is None:
            return sum(net.nonzero() for net in self._nets.values())
        return self._nets[f"task{task}"].nonzero()


class _SharedTrunk(Model):
    """One trunk with a head per task (head t belongs to task t)."""

    def _net(self):
        if "main" not in self._nets:
            self._nets["main"] = self._new_net()
        return self._nets["main"]

    def _add_head(self, net, task, t):
        h = net.add_head(task["head"], task["n_outputs"], t, seed=self._seed("head", t))
        assert h == t, "heads are numbered like tasks"
        return h

    def _predict(self, X, t):
        return self._nets["main"].predict(X, t)

    def _n_params(self, task):
        return self._nets["main"].nonzero(-1 if task is None else task)


class DNN(_SharedTrunk):
    """Sequential fine-tuning: the whole trunk and the new task's head train on each task."""

    kind = "DNN"

    def _learn(self, task):
        t = self._begin(task)
        net = self._net()
        h = self._add_head(net, task, t)
        penalty = self._penalty(net, t)
        self._train(net, [(task["X"], task["Y"], h)], task=t, stage="train", **penalty)
        self._after_task(net, t, task)
        return t

    def _penalty(self, net, t) -> dict:
        """Extra arguments of Net.train that keep earlier tasks (none for plain DNN)."""
        return {}

    def _after_task(self, net, t, task):
        pass


class L2(DNN):
    """DNN with an L2 pull toward the previous task's trunk: loss + l2_prev * ||W - W_{t-1}||^2.

    l2_prev : lambda, the strength of the pull (per weight and bias of the trunk)."""

    kind = "L2"

    def __init__(self, hidden=(312, 128), *, l2_prev=1.0, **kwargs):
        super().__init__(hidden, **kwargs)
        self.l2_prev = check.number(l2_prev, "l2_prev", low=0)

    def _penalty(self, net, t):
        if t == 0 or self.l2_prev == 0:
            return {}
        # d/dW lambda ||W - W_prev||^2 = 2 lambda (W - W_prev)
        return {"anchor": net.clone(), "layer_reg": {"pull": 2.0 * self.l2_prev}}


class EWC(DNN):
    """Elastic weight consolidation (Kirkpatrick et al., 2017).

    While learning task t the trunk pays (lam / 2) * sum_i F_i (theta_i - theta*_i)^2 on top of
    the task's mean loss, with F the diagonal Fisher information of earlier tasks:

    - fisher="exact": E_{y ~ p(y|x)} of the squared per-sample gradient (the true Fisher; k
      backward passes per sample); fisher="empirical": the squared gradient at the true label.
      Both are MEANS over `fisher_samples` training samples (more samples: less noise, same
      scale), so lam is measured against one sample's loss: with the mean-loss objective a lam
      near 1/(learning signal per weight) matters; typical useful values here span 1..1e4.
      The empirical Fisher is larger on misfit samples and smaller on well fit ones than the
      exact one, so the same lam acts differently on the two.
    - online=False ("separate"): one penalty per earlier task, summed, so the total pull grows
      with the number of tasks (each task's F adds up); online=True: one running penalty,
      F <- gamma * F + F_t anchored at the latest weights (Schwarz et al., 2018), bounded for
      gamma < 1.
    """

    kind = "EWC"

    def __init__(self, hidden=(312, 128), *, lam=100.0, fisher="exact", fisher_samples=1000, online=False,
                 gamma=1.0, **kwargs):
        super().__init__(hidden, **kwargs)
        self.lam = check.number(lam, "lam", low=0)
        if fisher not in ("exact", "empirical"):
            raise ValueError(f"fisher must be 'exact' or 'empirical', got {fisher!r}")
        self.fisher = fisher
        self.fisher_samples = check.number(fisher_samples, "fisher_samples", low=1, integer=True)
        self.online = bool(online)
        self.gamma = check.number(gamma, "gamma", low=0, high=1)

    def _required_nets(self):
        return ["anchor", "fisher"] if self.n_tasks else []

    def _penalty(self, net, t):
        if t == 0 or self.lam == 0:
            return {}
        return {"anchor": self._nets["anchor"], "coef": self._nets["fisher"], "layer_reg": {"pull": self.lam}}

    def _after_task(self, net, t, task):
        rng = np.random.default_rng(self._seed("fisher", t) % (2**63))
        n = task["X"].shape[0]
        rows = np.sort(rng.choice(n, size=min(n, self.fisher_samples), replace=False))
        X = np.ascontiguousarray(task["X"][rows])
        Y = np.ascontiguousarray(task["Y"][rows])
        fisher_t = net.fisher(X, Y, t, mode=self.fisher)
        if t == 0:
            self._nets["fisher"], self._nets["anchor"] = fisher_t, net.clone()
            return
        current, f_new = net.get_state(), fisher_t.get_state()
        f_old, a_old = self._nets["fisher"].get_state(), self._nets["anchor"].get_state()
        for l, layer in enumerate(current["layers"]):
            for key in ("W", "b"):
                F_old, F_t, theta = f_old["layers"][l][key], f_new["layers"][l][key], layer[key]
                if self.online:
                    f_new["layers"][l][key] = self.gamma * F_old + F_t
                    a_old["layers"][l][key] = theta
                else:
                    # sum_k F_k (w - a_k)^2 = (sum_k F_k) (w - abar)^2 + const, with
                    # abar the Fisher-weighted mean of the anchors
                    F_sum = F_old + F_t
                    with np.errstate(invalid="ignore", divide="ignore"):
                        abar = (F_old * a_old["layers"][l][key] + F_t * theta) / F_sum
                    a_old["layers"][l][key] = np.where(F_sum > 0, abar, theta).astype(np.float32)
                    f_new["layers"][l][key] = F_sum
        # the anchor/fisher nets only matter for the trunk; their heads follow the current net
        a_old["heads"], f_new["heads"] = current["heads"], f_new["heads"]
        self._nets["anchor"] = type(net).from_state(a_old)
        self._nets["fisher"] = type(net).from_state(f_new)

    def _n_params(self, task):
        return self._nets["main"].nonzero(-1 if task is None else task)


class MTL(_SharedTrunk):
    """Multi-task learning: one trunk and a head per task, all tasks trained jointly.

    Minibatches come from one task at a time, tasks interleaved round-robin; an epoch passes
    over every sample of every task. Use fit_all(tasks); it cannot learn tasks one by one."""

    kind = "MTL"
    incremental = False

    def fit_all(self, tasks):
        if self._tasks:
            raise RuntimeError("this MTL model has already been fitted; make a new one")
        prepared = self._prepare_all(tasks)

        def work():
            ids = [self._begin(p) for p in prepared]
            net = self._net()
            data = [(p["X"], p["Y"], self._add_head(net, p, t)) for t, p in zip(ids, prepared)]
            self._train(net, data, task=ids[-1], stage="joint")
            return self

        return self._transaction(work)


class Progressive(_SharedTrunk):
    """Progressive networks (Rusu et al., 2016): task t adds a column of `column` units per layer
    that reads every unit of the layer below in all columns so far (linear lateral
    connections, Rusu's Eq. 1) and feeds only columns >= t; only the new column and the new
    head train, so earlier tasks' predictions stay bit-identical.

    column : units of each new column per trunk layer, conv filters first (default: the base
        network's layer sizes)."""

    kind = "Progressive"

    def __init__(self, hidden=(312, 128), *, column=None, **kwargs):
        super().__init__(hidden, **kwargs)
        sizes = self.layer_sizes
        self.column = sizes if column is None else check.widths(column, "column")  # each <= MAX_UNITS
        if len(self.column) != len(sizes):
            raise ValueError(f"column must have {len(sizes)} layers like the trunk, got {len(self.column)}")

    def _learn(self, task):
        t = self._begin(task)
        if t == 0:
            self._nets["main"] = self._new_net()
            net, train = self._nets["main"], None
        else:
            net = self._nets["main"]
            before = net.widths
            net.add_units(list(self.column), t, seed=self._seed("column", t))
            train = [np.arange(w) >= b for w, b in zip(net.widths, before)]
        h = self._add_head(net, task, t)
        self._train(net, [(task["X"], task["Y"], h)], task=t, stage="train", train=train)
        return t
