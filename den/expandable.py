"""DEN: Dynamically Expandable Networks (Yoon, Yang, Lee, Hwang; ICLR 2018).

Python chooses the stages and reports; the C core does the work (training on a gathered
subnetwork, breadth-first selection, expansion, pruning, split/duplication, timestamps).

Learning task t (0-based; the paper's Algorithm 1):

  t = 0   train the whole network with L1 (Eq. 2): proximal soft-thresholding after every
          step, threshold lr * l1, so weights become exactly zero.
  t > 0   1. selective retraining (Alg. 2): fit a new sparse head (Eq. 3, L1) on the frozen
             trunk, on trunk features computed once; select the units with a nonzero weight
             into ANY output of the head and follow nonzero weights breadth-first down to the
             inputs: the subnetwork S. Retrain only S (gathered into compact matrices) with
             L2 to the previous weights (Eq. 4) and L1. Everything outside S is untouched.
          2. dynamic expansion (Alg. 3): if the VALIDATION loss is above tau, add k units to
             every hidden layer, train only the new units' weights (and the new head) with
             L1 + group lasso (Eq. 5; a group is one new unit's incoming weights and bias),
             then delete new units whose group is all zero or that feed nothing.
          3. split/duplication (Alg. 4): train the task's subnetwork with L2 to the previous
             weights (Eq. 6), measure every old unit's drift rho_i = ||w_i^t - w_i^{t-1}||_2
             over its incoming weights; each unit with rho_i > sigma is duplicated (the copy
             keeps the drifted weights, is stamped t and takes over for task t), the original
             gets its t-1 weights back and is frozen; then retrain (Eq. 6) from there.
  Units born while learning task t carry the timestamp t; predicting task j uses only units
  stamped <= j (timestamped inference).

Departures of the authors' reference code that den does NOT copy: its sparse head fit runs a
single step (den trains it for head_epochs); its selection looks at output column 0 only (den
uses every output); its expansion test uses the last minibatch's training loss (den: the mean
validation loss); its split picks the LEAST drifted candidates (den: every unit above sigma);
its duplication resets all old units through a shallow copy (den restores exactly the
duplicated units).

Ablations (the paper's):
  DNN-L2-Selective   DEN(expansion="none", split=False): selective retraining only
  DEN-Constant(k)    DEN(expansion="constant", k=k): k units added every task, not pruned
  DEN-No-Stamp       DEN(timestamps=False): every task predicts with every unit
  DEN-Finetune       DEN(finetune=True): after the last task, fine-tune the learned
                     structure on all tasks jointly (den.run / fit_all call finish(tasks))
  full retraining    DEN(selective=False): retrain the whole network with Eq. 4 instead of S
                     (the paper's Fig. 4a comparison)
"""

from __future__ import annotations

import numpy as np

from . import _validate as check
from ._base import Model

EXPANSIONS = ("dynamic", "constant", "none")


class DEN(Model):
    """Dynamically Expandable Network.

    Parameters (names follow the paper)
    ----------
    hidden : base network widths, default (312, 128).
    l1 : mu, L1 strength (Eqs. 2-6 keep the network sparse in every stage).
    head_l1 : L1 strength of the new head's sparse fit on the frozen trunk (Eq. 3), which
        decides the selected subnetwork; default: l1.
    l2_prev : lambda, strength of the pull lambda * ||W - W^{t-1}||^2 (Eqs. 4 and 6).
    group_lasso : gamma, group lasso strength on the new units (Eq. 5).
        The three are on the scale of the training objective (mean loss + penalties): the core
        takes its proximal steps in the optimizer's metric, so a weight stays exactly zero
        while its loss gradient is below l1 whatever the optimizer (see csrc/optim.h).
    tau : expansion threshold on the mean validation loss after selective retraining (the
        loss of a sigmoid head sums its k outputs' binary cross-entropies).
    sigma : split threshold on a unit's drift ||w_i^t - w_i^{t-1}||_2.
    k : units added to each hidden layer on expansion (int, or one per layer).
    epochs : epochs of task 0 and of every retraining stage; head_epochs and expand_epochs
        override it for the sparse head fit and the expansion.
    split_epochs : epochs of a separate Eq. 6 pass before the drift is measured (Alg. 4's
        first step). Default 0: selective retraining already trained S with Eq. 6's objective
        (L2 to the previous weights), so the drift is measured on its result; the retraining
        after duplication always runs `epochs`.
    finetune_epochs : epochs of the DEN-Finetune pass (finetune=True).
    expansion : "dynamic" (the paper), "constant" (DEN-Constant) or "none".
    selective, split, timestamps, finetune : switch the corresponding parts off/on.
    Plus the shared ones (head, batch_size, lr, optimizer, lr_decay, seed, progress):
    see den.Model.
    """

    kind = "DEN"

    def __init__(self, hidden=(312, 128), *, l1=2e-4, head_l1=None, l2_prev=3e-3, group_lasso=1e-4, tau=0.65,
                 sigma=0.2, k=10,
                 epochs=10, head_epochs=None, expand_epochs=None, split_epochs=0, finetune_epochs=None,
                 expansion="dynamic", selective=True, split=True, timestamps=True, finetune=False, **kwargs):
        super().__init__(hidden, epochs=epochs, **kwargs)
        self.l1 = check.number(l1, "l1", low=0)
        self.head_l1 = None if head_l1 is None else check.number(head_l1, "head_l1", low=0)
        self.l2_prev = check.number(l2_prev, "l2_prev", low=0)
        self.group_lasso = check.number(group_lasso, "group_lasso", low=0)
        self.tau = check.number(tau, "tau", low=0)
        self.sigma = check.number(sigma, "sigma", low=0)
        if expansion not in EXPANSIONS:
            raise ValueError(f"expansion must be one of {EXPANSIONS}, got {expansion!r}")
        self.expansion = expansion
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            ks = [k] * len(self.layer_sizes)
        else:
            try:
                ks = list(k)
            except TypeError:
                raise TypeError(f"k must be an int or one int per hidden layer, got {k!r}") from None
        if len(ks) != len(self.layer_sizes):
            raise ValueError(f"k must be an int or give one count per trunk layer ({len(self.layer_sizes)}), "
                             f"got {k!r}")
        ks = [check.number(v, "k", low=0, high=check.MAX_UNITS, integer=True) for v in ks]
        if expansion != "none" and not any(ks):
            raise ValueError(f"k = {k!r} adds no unit, but expansion={expansion!r} needs k >= 1")
        self.k = ks[0] if len(set(ks)) == 1 and isinstance(k, (int, np.integer)) else tuple(ks)
        self._k = ks
        for name, value in (("head_epochs", head_epochs), ("expand_epochs", expand_epochs),
                            ("split_epochs", split_epochs), ("finetune_epochs", finetune_epochs)):
            setattr(self, name, None if value is None else check.number(value, name, low=0, high=check.MAX_EPOCHS,
                                                                         integer=True))
        self.selective = bool(selective)
        self.split = bool(split)
        self.timestamps = bool(timestamps)
        self.finetune = bool(finetune)

    # ---- learning -----------------------------------------------------------------------------

    def _learn(self, task):
        t = self._begin(task)
        if t == 0:
            self._first_task(task)
        else:
            self._next_task(t, task)
        net = self._nets["main"]
        report = self.history[t]
        if self.expansion != "constant":  # DEN-Constant keeps what it adds, by definition
            report["removed_dead"] = self._prune()
        report["units"] = list(net.widths)
        report["sparsity"] = self._sparsity()
        return t

    def _first_task(self, task):
        self._nets["main"] = net = self._new_net()
        h = net.add_head(task["head"], task["n_outputs"], 0, seed=self._seed("head", 0))
        self._train(net, [(task["X"], task["Y"], h)], task=0, stage="train",
                    layer_reg={"l1": self.l1}, head_reg={"l1": self.l1})

    def _next_task(self, t, task):
        net = self._nets["main"]
        report = self.history[t]
        prev = net.clone()
        h = net.add_head(task["head"], task["n_outputs"], t, seed=self._seed("head", t))
        data = [(task["X"], task["Y"], h)]
        eq4 = self._eq46(prev)

        # 1. selective retraining (Alg. 2)
        features = net.features(task["X"], h)
        self._train(net, [(features, task["Y"], h)], task=t, stage="head", head_only=True,
                    epochs=self._epochs("head"), head_reg={"l1": self.l1 if self.head_l1 is None else self.head_l1})
        units, inputs = net.select(h)
        report["selected"] = [int(u.sum()) for u in units]
        report["selected_units"] = [np.flatnonzero(u).tolist() for u in units]
        report["selected_inputs"] = int(inputs.sum())
        if not self.selective:
            self._train(net, data, task=t, stage="retrain", **eq4)
        elif any(u.any() for u in units):
            self._train(net, data, task=t, stage="selective", units=units, inputs=inputs, **eq4)

        # 2. dynamic expansion (Alg. 3)
        if self.expansion != "none":
            loss = self._validation_loss(net, task, h)
            report["val_loss"] = loss
            if self.expansion == "constant" or loss > self.tau:
                self._expand(net, t, task, h, report)
            else:
                report["added"] = [0] * len(self.layer_sizes)

        # 3. split / duplication (Alg. 4)
        if self.split:
            self._split(net, prev, t, data, h, report)

    def _validation_loss(self, net, task, h):
        if task["X_val"] is None:
            raise ValueError("DEN decides on expansion with the validation loss: pass X_val and y_val "
                             "(or use expansion='constant' or 'none')")
        return float(net.loss(task["X_val"], task["Y_val"], h))

    def _expand(self, net, t, task, h, report):
        before = net.widths
        net.add_units(self._k, t, seed=self._seed("expand", t))
        new = [np.arange(w) >= b for w, b in zip(net.widths, before)]
        reg = {"l1": self.l1}
        if self.expansion == "dynamic":
            reg["group"] = self.group_lasso
        self._train(net, [(task["X"], task["Y"], h)], task=t, stage="expand", epochs=self._epochs("expand"),
                    train=new, layer_reg=reg, head_reg={"l1": self.l1})
        report["added"] = list(self._k)
        if self.expansion == "dynamic":
            self._prune(born=t)
            report["kept"] = [int((layer["stamp"] == t).sum()) for layer in net.get_state()["layers"]]

    def _eq46(self, prev):
        """Training arguments of Eqs. 4 and 6: L2 toward the previous weights, and L1."""
        return {"layer_reg": {"l1": self.l1, "pull": 2.0 * self.l2_prev}, "head_reg": {"l1": self.l1},
                "anchor": prev}

    def _split(self, net, prev, t, data, h, report):
        eq6 = self._eq46(prev)
        if self.split_epochs:
            # Alg. 4's first Eq. 6 pass as a stage of its own; by default (split_epochs=0) the
            # drift is that of selective retraining, which already trained S with Eq. 6's objective
            units, inputs = net.select(h)
            self._train(net, data, task=t, stage="split", epochs=self.split_epochs, units=units, inputs=inputs,
                        **eq6)
        dup = []
        for l, old in enumerate(prev.widths):
            rho = net.drift(prev, l)
            over = np.zeros(net.widths[l], bool)
            over[:old] = rho[:old] > self.sigma
            dup.append(over)
        report["duplicated"] = [int(d.sum()) for d in dup]
        report["duplicated_units"] = [np.flatnonzero(d).tolist() for d in dup]
        report["max_drift"] = [float(net.drift(prev, l)[:old].max(initial=0.0)) for l, old in enumerate(prev.widths)]
        if not any(d.any() for d in dup):
            return
        net.duplicate_units(dup, t)
        originals = [np.concatenate([d, np.zeros(w - len(d), bool)]) for d, w in zip(dup, net.widths)]
        net.restore_units(prev, originals)
        units, inputs = net.select(h)
        self._train(net, data, task=t, stage="split-retrain", units=units, inputs=inputs,
                    train=[~o for o in originals], **eq6)

    def _prune(self, born=None):
        """Remove dead units (all-zero incoming group, or no nonzero outgoing weight), only those
        born at task `born` if given; repeat until none is left (a removal can kill the units
        feeding it). Exact: a dead unit changes no task's prediction. Returns units removed per
        layer."""
        net = self._nets["main"]
        removed = [0] * net.n_layers
        while True:
            stamps = [layer["stamp"] for layer in net.get_state()["layers"]]
            dead = [net.dead_units(l) & (True if born is None else s == born) for l, s in enumerate(stamps)]
            # never empty a layer: keep its first unit even if dead
            for l, d in enumerate(dead):
                if d.all():
                    d[0] = False
            if not any(d.any() for d in dead):
                return removed
            net.remove_units([~d if d.any() else None for d in dead])
            removed = [r + int(d.sum()) for r, d in zip(removed, dead)]

    def finish(self, tasks) -> bool:
        """DEN-Finetune: fine-tune the learned structure on all tasks jointly (timestamps
        still apply). Does nothing unless finetune=True; returns whether it trained. den.run
        calls it after the last task; fit_all does too."""
        if not self.finetune:
            return False
        prepared = self._check_finetune(tasks)
        return self._transaction(lambda: self._finetune(prepared))

    def _after_all(self, tasks):
        if self.finetune:
            self._finetune(self._check_finetune(tasks))

    def _check_finetune(self, tasks):
        prepared = self._prepare_all(tasks)
        if len(prepared) != self.n_tasks:
            raise ValueError(f"DEN-Finetune needs the {self.n_tasks} tasks this model learned, got {len(prepared)}")
        for i, p in enumerate(prepared):
            if p["n_outputs"] != self._tasks[i]["n_outputs"] or p["head"] != self._tasks[i]["head"]:
                raise ValueError(f"tasks[{i}] does not match the head this model learned for task {i}")
        return prepared

    def _finetune(self, prepared):
        net = self._nets["main"]
        data = [(p["X"], p["Y"], i) for i, p in enumerate(prepared)]
        self._train(net, data, task=self.n_tasks - 1, stage="finetune", epochs=self._epochs("finetune"),
                    layer_reg={"l1": self.l1}, head_reg={"l1": self.l1}, use_stamps=self.timestamps)
        return True

    # ---- inference and introspection ----------------------------------------------------------

    def _predict(self, X, t):
        return self._nets["main"].predict(X, t, use_stamps=self.timestamps)

    def _n_params(self, task):
        net = self._nets["main"]
        if task is None:
            return net.nonzero()
        if self.timestamps:
            return net.nonzero(task)
        state = net.get_state()
        count = sum(int((l["W"] != 0).sum() + (l["b"] != 0).sum()) for l in state["layers"])
        head = state["heads"][task]
        return count + int((head["W"] != 0).sum() + (head["b"] != 0).sum())

    def _epochs(self, stage):
        value = getattr(self, f"{stage}_epochs")
        return self.epochs if value is None else value

    def _sparsity(self) -> float:
        """Fraction of the trunk's allowed weights that are exactly zero."""
        state = self._nets["main"].get_state()
        allowed = sum(int(l["mask"].sum()) for l in state["layers"])
        zeros = sum(int(((l["W"] == 0) & l["mask"]).sum()) for l in state["layers"])
        return zeros / allowed if allowed else 0.0

    def units_by_task(self) -> np.ndarray:
        """units[l, t]: units (conv filters first) of trunk layer l born at task t (still alive)."""
        state = self._nets["main"].get_state()
        out = np.zeros((len(self.layer_sizes), max(self.n_tasks, 1)), dtype=np.int64)
        for l, layer in enumerate(state["layers"]):
            out[l] = np.bincount(layer["stamp"], minlength=out.shape[1])[: out.shape[1]]
        return out
