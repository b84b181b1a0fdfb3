"""NumPy twins of the C core, in float64: the reference every kernel is checked against.

A twin mirrors one piece of csrc/ with plain NumPy and no cleverness:
  gather/scatter   model.c   (compact model from a net state, and back)
  forward/loss     dense.c, conv.c, loss.c (ReLU trunk of conv and dense layers, max-pooling,
                   sigmoid-BCE / softmax-CE heads, timestamps)
  gradients        the backward passes
  optim_step       optim.c   (Adam/SGD + weight decay, anchor pull, mask, L1 and group prox)
  train_full_batch train.c   (full-batch steps: every step sees all samples)
  fisher           train.c   (empirical / exact diagonal Fisher, sample by sample)
States are the dicts of den._core.Net.get_state().
"""

from __future__ import annotations

import copy

import numpy as np


# ---- geometry ------------------------------------------------------------------------------

def geometry(state):
    """Per trunk layer: op, input height/width, kernel, pool, and span (columns per input unit)."""
    c, h, w = state.get("input_shape", (state["n_input"], 1, 1))
    out = []
    for layer in state["layers"]:
        if layer.get("op", "dense") == "conv":
            g = {"op": "conv", "h": h, "w": w, "kh": layer["kh"], "kw": layer["kw"], "pool": layer["pool"],
                 "span": layer["kh"] * layer["kw"], "in_pixels": h * w}
            h, w = h // g["pool"], w // g["pool"]
            g["out_pixels"] = h * w
        else:
            g = {"op": "dense", "span": h * w, "in_pixels": h * w, "out_pixels": 1}
            h = w = 1
        out.append(g)
    return out


def _columns(units, span):
    """Column indices owned by the given input units."""
    units = np.asarray(units, dtype=np.int64)
    return (units[:, None] * span + np.arange(span)[None, :]).reshape(-1)


# ---- gather / scatter ----------------------------------------------------------------------

def prefix(state, task):
    """Units of each hidden layer with stamp <= task (task < 0: all)."""
    return [int(np.sum(l["stamp"] <= task)) if task >= 0 else len(l["stamp"]) for l in state["layers"]]


def gather(state, head, *, units=None, inputs=None, train=None, max_stamp=-1, use_stamps=True,
           anchor=None, coef=None, head_train=True):
    """The compact model one head's training/inference runs on (float64 copies)."""
    geo = geometry(state)
    L = len(state["layers"])
    task = int(state["heads"][head]["stamp"][0])
    n_in0 = state["layers"][0]["W"].shape[1] // geo[0]["span"]
    idx = [np.arange(n_in0) if inputs is None else np.flatnonzero(inputs)]
    for l, layer in enumerate(state["layers"]):
        keep = np.ones(len(layer["b"]), bool) if units is None or units[l] is None else np.asarray(units[l], bool)
        if max_stamp >= 0:
            keep &= layer["stamp"] <= max_stamp
        idx.append(np.flatnonzero(keep))
    c, h, w = state.get("input_shape", (state["n_input"], 1, 1))
    model = {"layers": [], "idx": idx, "head_index": head, "in_pixels": h * w}
    for l, layer in enumerate(state["layers"]):
        blk = _block(layer, idx[l + 1], idx[l], geo[l]["span"])
        blk.update(geo[l])
        on = np.ones(len(idx[l + 1]), bool)
        if train is not None and train[l] is not None:
            on = np.asarray(train[l], bool)[idx[l + 1]]
        blk["row_on"] = on
        _anchor(blk, None if anchor is None else anchor["layers"][l], None if coef is None else coef["layers"][l])
        model["layers"].append(blk)
    hd = state["heads"][head]
    blk = _block(hd, np.arange(len(hd["b"])), idx[L], 1)
    blk.update(op="dense", span=1)
    blk["row_on"] = np.full(len(hd["b"]), bool(head_train))
    blk["kind"] = hd["kind"]
    _anchor(blk, None, None)
    model["head"] = blk
    model["widths"] = [int(np.sum(b["stamp"] <= task)) if use_stamps else len(b["stamp"]) for b in model["layers"]]
    return model


def _block(layer, rows, ins, span):
    cols = _columns(ins, span)
    return {
        "W": layer["W"][np.ix_(rows, cols)].astype(np.float64),
        "b": layer["b"][rows].astype(np.float64),
        "mask": layer["mask"][np.ix_(rows, cols)].astype(np.float64),
        "stamp": layer["stamp"][rows],
        "rows": rows,
        "ins": ins,
        "cols": cols,
        "span": span,
    }


def _anchor(blk, A, C):
    blk["aW"] = blk["ab"] = blk["cW"] = blk["cb"] = None
    blk["arows"] = blk["acols"] = 0
    if A is None:
        return
    rows, ins, span = blk["rows"], blk["ins"], blk["span"]
    arows = int(np.sum(rows < A["W"].shape[0]))
    ains = int(np.sum(ins < A["W"].shape[1] // span))
    acols = ains * span
    aW = np.zeros_like(blk["W"])
    ab = np.zeros_like(blk["b"])
    cols = _columns(ins[:ains], span)
    aW[:arows, :acols] = A["W"][np.ix_(rows[:arows], cols)]
    ab[:arows] = A["b"][rows[:arows]]
    blk.update(aW=aW, ab=ab, arows=arows, acols=acols)
    if C is not None:
        cW = np.zeros_like(blk["W"])
        cb = np.zeros_like(blk["b"])
        cW[:arows, :acols] = C["W"][np.ix_(rows[:arows], cols)]
        cb[:arows] = C["b"][rows[:arows]]
        blk.update(cW=cW, cb=cb)


def scatter(state, model):
    """A copy of state with the model's trainable rows written back (float32)."""
    out = copy.deepcopy(state)
    blocks = [(out["layers"][l], b) for l, b in enumerate(model["layers"])]
    blocks.append((out["heads"][model["head_index"]], model["head"]))
    for layer, blk in blocks:
        for r in np.flatnonzero(blk["row_on"]):
            layer["W"][blk["rows"][r], blk["cols"]] = blk["W"][r]
            layer["b"][blk["rows"][r]] = blk["b"][r]
    return out


# ---- convolution and pooling ---------------------------------------------------------------

def conv2d(x, Wt, b, kh, kw):
    """'same' zero-padded stride-1 convolution: x (n, C, H, W), Wt (F, C*kh*kw) -> (n, F, H, W)."""
    n, C, H, W = x.shape
    F = Wt.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (n, C, H, W, kh, kw)
    return np.einsum("ncyxij,fcij->nfyx", win, Wt.reshape(F, C, kh, kw)) + b[None, :, None, None]


def conv2d_backward(dz, x, Wt, kh, kw):
    """Gradients of conv2d: (dx, dW (F, C*kh*kw), db)."""
    n, C, H, W = x.shape
    F = Wt.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    dW = np.einsum("nfyx,ncyxij->fcij", dz, win).reshape(F, -1)
    db = dz.sum(axis=(0, 2, 3))
    dxp = np.zeros_like(xp)
    W4 = Wt.reshape(F, C, kh, kw)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + H, j:j + W] += np.einsum("nfyx,fc->ncyx", dz, W4[:, :, i, j])
    return dxp[:, :, kh // 2:kh // 2 + H, kw // 2:kw // 2 + W], dW, db


def maxpool(x, p):
    """p x p max-pooling, stride p, trailing rows/columns dropped."""
    n, C, H, W = x.shape
    Ho, Wo = H // p, W // p
    return x[:, :, :Ho * p, :Wo * p].reshape(n, C, Ho, p, Wo, p).max(axis=(3, 5))


def maxpool_backward(d, x, p):
    """Route d (n, C, H/p, W/p) to the (first) maximum of each window of x."""
    n, C, H, W = x.shape
    Ho, Wo = H // p, W // p
    win = x[:, :, :Ho * p, :Wo * p].reshape(n, C, Ho, p, Wo, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, C, Ho, Wo, p * p)
    first = win.argmax(axis=-1)
    dwin = np.zeros_like(win)
    np.put_along_axis(dwin, first[..., None], d[..., None], axis=-1)
    dx = np.zeros_like(x)
    dx[:, :, :Ho * p, :Wo * p] = dwin.reshape(n, C, Ho, Wo, p, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, C, Ho * p, Wo * p)
    return dx


# ---- forward, loss, gradients --------------------------------------------------------------

def forward(model, X):
    """Per layer (input, ReLU output before pooling, output) and the logits. X has the net's
    full input width; inputs are gathered by input unit (feature, or image channel)."""
    X = np.asarray(X, np.float64)
    px = model["in_pixels"]
    a = X.reshape(len(X), -1, px)[:, model["idx"][0]].reshape(len(X), -1)
    trace = []
    for l, blk in enumerate(model["layers"]):
        w = model["widths"][l]
        cin = len(model["idx"][0]) if l == 0 else model["widths"][l - 1]
        Wt = blk["W"][:w, : cin * blk["span"]]
        if blk["op"] == "conv":
            x4 = a.reshape(len(X), cin, blk["h"], blk["w"])
            r = np.maximum(conv2d(x4, Wt, blk["b"][:w], blk["kh"], blk["kw"]), 0.0)
            out = maxpool(r, blk["pool"]) if blk["pool"] > 1 else r
            trace.append((a, r, out.reshape(len(X), -1)))
        else:
            r = np.maximum(a @ Wt.T + blk["b"][:w], 0.0)
            trace.append((a, r, r))
        a = trace[-1][2]
    H = model["head"]
    logits = a @ H["W"][:, : a.shape[1]].T + H["b"]
    return trace, logits, a


def probabilities(logits, kind):
    if kind == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-logits))


def loss(model, X, Y):
    """Mean over samples of the head's loss (summed over sigmoid outputs)."""
    _, logits, _ = forward(model, X)
    kind = model["head"]["kind"]
    if kind == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(Y)), Y].mean())
    Yf = np.asarray(Y, np.float64)
    return float((np.maximum(logits, 0) - logits * Yf + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1).mean())


def _backprop(model, trace, top, delta):
    """Given d(loss)/d(logits) (n, k), gradients of every block (list of (dW, db), head last)."""
    H = model["head"]
    grads = [None] * (len(model["layers"]) + 1)
    gW = np.zeros_like(H["W"])
    gW[:, : top.shape[1]] = delta.T @ top
    grads[-1] = (gW, delta.sum(axis=0))
    d = delta @ H["W"][:, : top.shape[1]]
    n = len(delta)
    for l in range(len(model["layers"]) - 1, -1, -1):
        blk = model["layers"][l]
        w = model["widths"][l]
        inp, r, _ = trace[l]
        cin = inp.shape[1] // (blk["h"] * blk["w"] if blk["op"] == "conv" else blk["span"])
        gW = np.zeros_like(blk["W"])
        gb = np.zeros_like(blk["b"])
        Wt = blk["W"][:w, : cin * blk["span"]]
        if blk["op"] == "conv":
            d4 = d.reshape(n, w, blk["h"] // blk["pool"], blk["w"] // blk["pool"])
            dr = maxpool_backward(d4, r, blk["pool"]) if blk["pool"] > 1 else d4
            dz = dr * (r > 0)
            dx, dWl, dbl = conv2d_backward(dz, inp.reshape(n, cin, blk["h"], blk["w"]), Wt, blk["kh"], blk["kw"])
            gW[:w, : cin * blk["span"]] = dWl
            gb[:w] = dbl
            d = dx.reshape(n, -1)
        else:
            dz = d * (r > 0)
            gW[:w, : inp.shape[1]] = dz.T @ inp
            gb[:w] = dz.sum(axis=0)
            d = dz @ Wt
        grads[l] = (gW, gb)
    return grads


def gradients(model, X, Y):
    """Gradient of the mean loss w.r.t. every block (list of (dW, db), head last)."""
    trace, logits, top = forward(model, X)
    p = probabilities(logits, model["head"]["kind"])
    n = len(X)
    if model["head"]["kind"] == "softmax":
        delta = p.copy()
        delta[np.arange(n), Y] -= 1.0
    else:
        delta = p - np.asarray(Y, np.float64)
    return _backprop(model, trace, top, delta / n)


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
        d = _metric(state["vW"][r, :cols], opt, t)
        thr = lr * reg.get("l1", 0.0) / d
        if reg.get("l1", 0.0) > 0:
            W[r, :cols] = np.sign(W[r, :cols]) * np.maximum(np.abs(W[r, :cols]) - thr, 0.0)
        # bias: pull only
        gbr = np.array([gb[r]])
        if blk["ab"] is not None and r < blk["arows"]:
            c = 1.0 if blk["cb"] is None else blk["cb"][r]
            gbr += reg.get("pull", 0.0) * c * (b[r] - blk["ab"][r])
        b[r:r + 1] = _update(b[r:r + 1], gbr, state["mb"][r:r + 1], state["vb"][r:r + 1], opt, t)
        if reg.get("group", 0.0) > 0:
            dbar = np.mean(np.append(_metric(state["vW"][r, :cols], opt, t) * np.ones(cols),
                                     _metric(state["vb"][r:r + 1], opt, t)))
            gthr = lr * reg["group"] / dbar
            norm = np.sqrt(np.sum(W[r, :cols] ** 2) + b[r] ** 2)
            f = 1.0 - gthr / norm if norm > gthr else 0.0
            W[r, :cols] *= f
            b[r] *= f


def _metric(v, opt, t):
    """The optimizer's per-weight metric d: Adam's sqrt(v_hat) + eps, 1 for SGD."""
    if opt["kind"] != "adam":
        return 1.0
    return np.sqrt(v / (1 - opt.get("beta2", 0.999) ** t)) + opt.get("eps", 1e-8)


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
                optim_step(blk, grads[l][0], grads[l][1], states[l], opt, layer_reg, w, below * blk["span"])
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
        trace, logits, top = forward(model, x)
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
            grads = _backprop(model, trace, top, delta[None, :])
            sq = [(weight * gW ** 2, weight * gb ** 2) for gW, gb in grads]
            total = sq if total is None else [(a + c, b + d) for (a, b), (c, d) in zip(total, sq)]
    return [(a / len(X), b / len(X)) for a, b in total]
