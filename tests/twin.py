"""NumPy twins of the C core, in float64: the reference every kernel is checked against.

A twin mirrors one piece of csrc/ with plain NumPy and no cleverness:
  gather/scatter  model.c   (compact model from a net state, and back)
  forward/loss    dense.c + loss.c (ReLU trunk, sigmoid-BCE / softmax-CE heads, timestamps)
  gradients       dense.c backward
  optim_step      optim.c   (Adam/SGD + weight decay, anchor pull, mask, L1 and group prox)
  train_full_batch train.c  (full-batch steps: every step sees all samples)
  fisher          train.c   (empirical / exact diagonal Fisher)
States are the dicts of den._core.Net.get_state().
"""

from __future__ import annotations

import copy

import numpy as np


# ---- gather / scatter ----------------------------------------------------------------------

def prefix(state, task):
    """Units of each hidden layer with stamp <= task (task < 0: all)."""
    return [int(np.sum(l["stamp"] <= task)) if task >= 0 else len(l["stamp"]) for l in state["layers"]]


def gather(state, head, *, units=None, inputs=None, train=None, max_stamp=-1, use_stamps=True,
           anchor=None, coef=None, head_train=True):
    """The compact model one head's training/inference runs on (float64 copies)."""
    L = len(state["layers"])
    task = int(state["heads"][head]["stamp"][0])
    idx = [np.arange(state["n_input"])] if inputs is None else [np.flatnonzero(inputs)]
    for l, layer in enumerate(state["layers"]):
        keep = np.ones(len(layer["b"]), bool) if units is None or units[l] is None else np.asarray(units[l], bool)
        if max_stamp >= 0:
            keep &= layer["stamp"] <= max_stamp
        idx.append(np.flatnonzero(keep))
    model = {"layers": [], "idx": idx, "head_index": head}
    for l, layer in enumerate(state["layers"]):
        blk = _block(layer, idx[l + 1], idx[l])
        on = np.ones(len(idx[l + 1]), bool)
        if train is not None and train[l] is not None:
            on = np.asarray(train[l], bool)[idx[l + 1]]
        blk["row_on"] = on
        _anchor(blk, idx[l + 1], idx[l], None if anchor is None else anchor["layers"][l],
                None if coef is None else coef["layers"][l])
        model["layers"].append(blk)
    hd = state["heads"][head]
    blk = _block(hd, np.arange(len(hd["b"])), idx[L])
    blk["row_on"] = np.full(len(hd["b"]), bool(head_train))
    blk["kind"] = hd["kind"]
    _anchor(blk, None, None, None, None)
    model["head"] = blk
    widths = []
    for l in range(L):
        st = model["layers"][l]["stamp"]
        widths.append(int(np.sum(st <= task)) if use_stamps else len(st))
    model["widths"] = widths
    return model


def _block(layer, rows, ins):
    return {
        "W": layer["W"][np.ix_(rows, ins)].astype(np.float64),
        "b": layer["b"][rows].astype(np.float64),
        "mask": layer["mask"][np.ix_(rows, ins)].astype(np.float64),
        "stamp": layer["stamp"][rows],
        "rows": rows,
        "ins": ins,
    }


def _anchor(blk, rows, ins, A, C):
    blk["aW"] = blk["ab"] = blk["cW"] = blk["cb"] = None
    blk["arows"] = blk["acols"] = 0
    if A is None:
        return
    arows = int(np.sum(rows < A["W"].shape[0]))
    acols = int(np.sum(ins < A["W"].shape[1]))
    aW = np.zeros_like(blk["W"])
    ab = np.zeros_like(blk["b"])
    aW[:arows, :acols] = A["W"][np.ix_(rows[:arows], ins[:acols])]
    ab[:arows] = A["b"][rows[:arows]]
    blk.update(aW=aW, ab=ab, arows=arows, acols=acols)
    if C is not None:
        cW = np.zeros_like(blk["W"])
        cb = np.zeros_like(blk["b"])
        cW[:arows, :acols] = C["W"][np.ix_(rows[:arows], ins[:acols])]
        cb[:arows] = C["b"][rows[:arows]]
        blk.update(cW=cW, cb=cb)


def scatter(state, model):
    """A copy of state with the model's trainable rows written back (float32)."""
    out = copy.deepcopy(state)
    blocks = [(out["layers"][l], b) for l, b in enumerate(model["layers"])]
    blocks.append((out["heads"][model["head_index"]], model["head"]))
    for layer, blk in blocks:
        for r in np.flatnonzero(blk["row_on"]):
            layer["W"][blk["rows"][r], blk["ins"]] = blk["W"][r]
            layer["b"][blk["rows"][r]] = blk["b"][r]
    return out


# ---- forward, loss, gradients --------------------------------------------------------------

def forward(model, X):
    """Activations of every layer and the logits; X has the net's full input width."""
    a = np.asarray(X, np.float64)[:, model["idx"][0]]
    acts = [a]
    below = a.shape[1]
    for l, blk in enumerate(model["layers"]):
        w = model["widths"][l]
        a = np.maximum(a @ blk["W"][:w, :below].T + blk["b"][:w], 0.0)
        acts.append(a)
        below = w
    H = model["head"]
    logits = a @ H["W"][:, :below].T + H["b"]
    return acts, logits


def probabilities(logits, kind):
    if kind == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def loss(model, X, Y):
    """Mean over samples of the head's loss (summed over sigmoid outputs)."""
    _, logits = forward(model, X)
    kind = model["head"]["kind"]
    if kind == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(Y)), Y].mean())
    Yf = np.asarray(Y, np.float64)
    return float((np.maximum(logits, 0) - logits * Yf + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1).mean())


def _backprop(model, acts, delta):
    """Given d(loss)/d(logits) (n, k), gradients of every block (list of (dW, db), head last)."""
    H = model["head"]
    below = acts[-1].shape[1]
    grads = [None] * (len(model["layers"]) + 1)
    gW = np.zeros_like(H["W"])
    gW[:, :below] = delta.T @ acts[-1]
    grads[-1] = (gW, delta.sum(axis=0))
    d = delta @ H["W"][:, :below]
    for l in range(len(model["layers"]) - 1, -1, -1):
        blk = model["layers"][l]
        w = model["widths"][l]
        d = d * (acts[l + 1] > 0)
        inp = acts[l]
        gW = np.zeros_like(blk["W"])
        gb = np.zeros_like(blk["b"])
        gW[:w, : inp.shape[1]] = d.T @ inp
        gb[:w] = d.sum(axis=0)
        grads[l] = (gW, gb)
        d = d @ blk["W"][:w, : inp.shape[1]]
    return grads


def gradients(model, X, Y):
    """Gradient of the mean loss w.r.t. every block (list of (dW, db), head last)."""
    acts, logits = forward(model, X)
    p = probabilities(logits, model["head"]["kind"])
    n = len(X)
    if model["head"]["kind"] == "softmax":
        delta = p.copy()
        delta[np.arange(n), Y] -= 1.0
    else:
        delta = p - np.asarray(Y, np.float64)
    return _backprop(model, acts, delta / n)


def numeric_gradient(model, X, Y, block, which, index, h=1e-6):
    """Central difference of the mean loss w.r.t. one parameter (float64)."""
    blk = model["head"] if block == -1 else model["layers"][block]
    old = blk[which][index]
    blk[which][index] = old + h
    up = loss(model, X, Y)
    blk[which][index] = old - h
    down = loss(model, X, Y)
    blk[which][index] = old
    return (up - down) / (2 * h)


# ---- optimizer -----------------------------------------------------------------------------

def optim_step(blk, gW, gb, state, opt, reg, rows, cols):
    """One fused step on the block's [:rows, :cols] region, as csrc/optim.c does it."""
    lr = opt["lr"]
    state["t"] += 1
    t = state["t"]
    W, b = blk["W"], blk["b"]
    for r in range(rows):
        if not blk["row_on"][r]:
            continue
        # weights: penalties, then mask
        g = gW[r, :cols] + reg.get("wd", 0.0) * W[r, :cols]
        if blk["aW"] is not None and r < blk["arows"]:
            ac = min(blk["acols"], cols)
            c = 1.0 if blk["cW"] is None else blk["cW"][r, :ac]
            g[:ac] += reg.get("pull", 0.0) * c * (W[r, :ac] - blk["aW"][r, :ac])
        g = g * blk["mask"][r, :cols]
        W[r, :cols] = _update(W[r, :cols], g, state["mW"][r, :cols], state["vW"][r, :cols], opt, t)
        thr = lr * reg.get("l1", 0.0)
        if thr > 0:
            W[r, :cols] = np.sign(W[r, :cols]) * np.maximum(np.abs(W[r, :cols]) - thr, 0.0)
        # bias: pull only
        gbr = np.array([gb[r]])
        if blk["ab"] is not None and r < blk["arows"]:
            c = 1.0 if blk["cb"] is None else blk["cb"][r]
            gbr += reg.get("pull", 0.0) * c * (b[r] - blk["ab"][r])
        b[r:r + 1] = _update(b[r:r + 1], gbr, state["mb"][r:r + 1], state["vb"][r:r + 1], opt, t)
        gthr = lr * reg.get("group", 0.0)
        if gthr > 0:
            norm = np.sqrt(np.sum(W[r, :cols] ** 2) + b[r] ** 2)
            f = 1.0 - gthr / norm if norm > gthr else 0.0
            W[r, :cols] *= f
            b[r] *= f


def _update(w, g, m, v, opt, t):
    """Adam or SGD on one span; m and v are updated in place (views)."""
    if opt["kind"] == "adam":
        b1, b2 = opt.get("beta1", 0.9), opt.get("beta2", 0.999)
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        return w - opt["lr"] * mhat / (np.sqrt(vhat) + opt.get("eps", 1e-8))
    mom = opt.get("momentum", 0.0)
    if mom > 0:
        m[:] = mom * m + g
        return w - opt["lr"] * m
    return w - opt["lr"] * g


def train_full_batch(model, X, Y, steps, opt, layer_reg=None, head_reg=None):
    """`steps` full-batch optimizer steps on the compact model (in place)."""
    layer_reg, head_reg = layer_reg or {}, head_reg or {}
    blocks = model["layers"] + [model["head"]]
    states = [{"t": 0, "mW": np.zeros_like(b["W"]), "vW": np.zeros_like(b["W"]), "mb": np.zeros_like(b["b"]),
               "vb": np.zeros_like(b["b"])} for b in blocks]
    for _ in range(steps):
        grads = gradients(model, X, Y)
        below = len(model["idx"][0])
        for l, blk in enumerate(model["layers"]):
            w = model["widths"][l]
            if blk["row_on"].any():
                optim_step(blk, grads[l][0], grads[l][1], states[l], opt, layer_reg, w, below)
            below = w
        H = model["head"]
        if H["row_on"].any():
            optim_step(H, grads[-1][0], grads[-1][1], states[-1], opt, head_reg, H["W"].shape[0], below)
    return model


# ---- Fisher --------------------------------------------------------------------------------

def fisher(model, X, Y, mode):
    """Mean over samples of squared per-sample gradients; exact = expectation over the model's
    own predictive distribution. Computed sample by sample, the slow obvious way."""
    kind = model["head"]["kind"]
    total = None
    for i in range(len(X)):
        x = X[i:i + 1]
        acts, logits = forward(model, x)
        p = probabilities(logits, kind)[0]
        k = len(p)
        if mode == "empirical":
            if kind == "softmax":
                g = p.copy()
                g[Y[i]] -= 1
            else:
                g = p - np.asarray(Y[i], np.float64)
            cases = [(1.0, g)]
        elif kind == "softmax":
            cases = [(p[c], p - np.eye(k)[c]) for c in range(k)]
        else:
            # all 2^k label vectors, weighted by their probability
            cases = []
            for bits in range(2 ** k):
                y = np.array([(bits >> j) & 1 for j in range(k)], np.float64)
                weight = np.prod(np.where(y == 1, p, 1 - p))
                cases.append((weight, p - y))
        for weight, delta in cases:
            grads = _backprop(model, acts, delta[None, :])
            sq = [(weight * gW ** 2, weight * gb ** 2) for gW, gb in grads]
            total = sq if total is None else [(a + c, b + d) for (a, b), (c, d) in zip(total, sq)]
    return [(a / len(X), b / len(X)) for a, b in total]
