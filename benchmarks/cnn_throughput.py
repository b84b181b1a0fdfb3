"""CNN training throughput of den's C core against PyTorch CPU: the LeNet-like and AlexNet-like trunks.

What is measured
  Images per second for one epoch of training den.LENET and den.ALEXNET (conv trunks, then the
  dense layers, then a 10-way softmax head; cross-entropy, Adam with lr 1e-3, betas 0.9/0.999,
  eps 1e-8) at batch --batch (64) on random float32 3x32x32 images in [0, 1) (CIFAR's shape)
  with random labels: n / seconds of the epoch, the best of --repeats rounds, with 1 and 2
  threads. Each conv entry (filters, kernel, pool) is a 'same'-padded stride-1 convolution with
  bias, ReLU, then max-pooling with window = stride = pool if pool > 1; the last map is
  flattened channel-major (C, H, W) into the dense layers. The contenders:

  den    _core.Net(3072, hidden, conv=..., input_shape=(3, 32, 32)).train: one call shuffles,
         then runs every minibatch's forward, backward (im2col + sgemm) and Adam step in C with
         the GIL released, on the system OpenBLAS den's extension links. Threads:
         den.set_num_threads.
  torch  the same network as nn.Sequential (Conv2d(c, f, k, padding=k//2), ReLU, MaxPool2d,
         Flatten, Linear, ReLU, ...), CrossEntropyLoss and torch.optim.Adam with the
         implementation its defaults pick, in throughput.py's loop (TorchMLP.epoch: minibatches
         of a shuffled index per epoch). Threads: torch.set_num_threads. Its convolutions run on
         the backend PyTorch selects (oneDNN on this wheel; recorded per layer). Skipped, with a
         note, if torch is not importable.
  bound  the GEMM bound: the sgemm calls of one den training step at this batch (step_gemms:
         forward, weight gradient and, above the first layer, input gradient of every conv
         chunk and dense layer), each timed alone on the OpenBLAS den links with the same
         threads; bound = batch / their summed seconds. den/bound is how much of den's time is
         matrix products; torch/bound above 1 means PyTorch's convolutions are faster than
         OpenBLAS's sgemm could make den.

How
  Like throughput.py, whose conventions and helpers (passes, WORKER_ENV, the Adam constants,
  TorchMLP's training loop, torch_blas, relative_error) this script reuses:
  - the check: before any timing, in each pass, a check worker builds the den net and the
    torch model with the same initial weights (den's initialisation, with random biases, set
    through Net.from_state and copied into torch) and compares, on CHECK_ROWS images, den's
    loss, its weight gradients and its weights after one full-batch Adam step with torch's
    (TOLERANCE says what is compared and why), for every arch and thread count; a mismatch
    stops the benchmark. It is the only process that loads both den and torch, and it times
    nothing;
  - one timing process per (pass, contender, round): den's system OpenBLAS and PyTorch's MKL and
    OpenMP pools would compete for the cores in one process; other BLAS libraries a worker
    happens to load are held to 1 thread;
  - rounds: each of the --repeats rounds runs every pass and contender once; the best round
    counts. Each worker times one epoch per (arch, threads) after a warm-up epoch on a tenth of
    the data, on a fresh network;
  - passes: OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE when it is loaded, so the
    second pass (--no-unset-openblas-env skips it) runs fresh workers with both removed.

den's working memory for one training call at batch B is computed from the layout that
csrc/model.h (den_data) and csrc/conv.h describe, which is train.c's work_layout: see
working_memory(); the den worker reads what the core really allocated (Net.workspace_bytes
after one training call) and the benchmark stops if the two differ by more than MEMORY_SLACK.

Output: a table on stdout, JSON at --out, and (not with --quick) the command, date, machine,
libraries, results and working memory in the CNN throughput section of benchmarks/README.md.

    python benchmarks/cnn_throughput.py             # full run: several minutes, machine idle
    python benchmarks/cnn_throughput.py --quick     # smoke test: tiny n, 1 round, README left alone
"""

import argparse
import os
import sys

import numpy as np
import threadpoolctl

from _common import (blas_libraries, command_line, git_revision, linked_library, log, machine,
                     markdown_table, run_worker, today, update_readme_block, use_repo_den,
                     write_result, HERE)
from throughput import (BETA1, BETA2, EPS, LR, NO_TRANS, OPENBLAS_VARS, TRANS, WORKER_ENV, Sgemm, TorchMLP,
                        passes, relative_error, time_epochs, torch_blas)

use_repo_den()
from den import ALEXNET, LENET  # noqa: E402  (plain dicts; the parent needs them for shapes)

ARCHS = {"lenet": LENET, "alexnet": ALEXNET}
INPUT_SHAPE = (3, 32, 32)
N_INPUT = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
N_CLASSES = 10
CONTENDERS = ("den", "torch")
CHECK_ROWS = 8
# What the check allows between den and torch (float32 both, different summation orders and
# convolution algorithms), from the same weights on CHECK_ROWS images:
#   loss      relative error of the loss;
#   gradient  relative error of each layer's weight gradient (Net.gradients against .grad);
#   weights   relative error of each layer's weights after one full-batch Adam step, over the
#             weights that den and torch moved the same way;
#   flipped   the fraction of weights that den and torch moved opposite ways.
# A first Adam step moves each weight by lr * g / (|g| + eps), about lr * sign(g): it shows the
# signs of the gradient g and little else, hence the separate gradient check. In a deep ReLU
# net, float32 rounding can put a pre-activation or a pooling window's runner-up on the other
# side of a kink (ReLU at 0, a pooling tie); that changes the gradient of every weight below it
# by ~1e-3 relative, flips the signs of the smallest gradients and changes the steps of those
# near eps. Seen on AlexNet, 8 images: float32 PyTorch against float64 PyTorch, gradients
# 1-2e-3 apart in conv layers 1-4; den against PyTorch, gradients 1e-6 apart, but after den's
# training step (which shuffles the batch, so other rounding) up to 9e-5 of the weights flipped
# and the others 6e-5 apart (LeNet: 5e-8, nothing flipped). Errors that a bug would cause are far
# larger: a wrong gradient (indexing, padding) is off by more than 1e-2 and flips about half the
# signs; an Adam step without bias correction is 3x too long, ~1e-2 on the weights.
TOLERANCE = {"loss": 1e-4, "gradient": 1e-2, "weights": 1e-3, "flipped": 1e-3}


# ---- data, networks, initial weights -----------------------------------------------------------


def make_data(n, seed=0):
    """X (n, 3072) float32 in [0, 1), C-contiguous, each row a (3, 32, 32) image in C order;
    y (n,) int32 labels in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, N_INPUT), dtype=np.float32), rng.integers(0, N_CLASSES, n, dtype=np.int32)


def den_net(arch, seed=0):
    """A den net of this arch with its softmax head (head 0)."""
    from den import _core

    net = _core.Net(N_INPUT, list(arch["hidden"]), seed=seed, conv=[list(c) for c in arch["conv"]],
                    input_shape=INPUT_SHAPE)
    net.add_head("softmax", N_CLASSES, 0)
    return net


def initial_state(arch, seed=0):
    """den's initial weights for this arch (Net.get_state), with biases drawn uniformly in
    [-0.1, 0.1] so that the check exercises them (den starts them at 0)."""
    state = den_net(arch, seed).get_state()
    rng = np.random.default_rng(seed)
    for layer in state["layers"] + state["heads"]:
        layer["b"] = rng.uniform(-0.1, 0.1, layer["b"].shape).astype(np.float32)
    return state


def den_layers(net):
    """[(W, b)] of every layer and the head: conv W is (F, C*kh*kw), channel-major."""
    state = net.get_state()
    return [(L["W"], L["b"]) for L in state["layers"] + state["heads"]]


class TorchCNN(TorchMLP):
    """The arch as nn.Sequential; loss, optimizer, step and epoch are TorchMLP's. Inputs are
    (n, 3, 32, 32) tensors."""

    def __init__(self, arch, state=None):
        import torch
        from torch import nn

        self.torch = torch
        mods, c, size = [], INPUT_SHAPE[0], INPUT_SHAPE[1]
        for f, k, p in arch["conv"]:
            mods += [nn.Conv2d(c, f, k, padding=k // 2), nn.ReLU()]
            if p > 1:
                mods.append(nn.MaxPool2d(p))
                size //= p
            c = f
        mods.append(nn.Flatten())
        width = c * size * size
        for h in arch["hidden"]:
            mods += [nn.Linear(width, h), nn.ReLU()]
            width = h
        mods.append(nn.Linear(width, N_CLASSES))
        self.model = nn.Sequential(*mods)
        self.linears = [m for m in self.model if isinstance(m, (nn.Conv2d, nn.Linear))]
        if state is not None:
            with torch.no_grad():
                for mod, L in zip(self.linears, state["layers"] + state["heads"]):
                    mod.weight.copy_(torch.from_numpy(L["W"]).reshape(mod.weight.shape))
                    mod.bias.copy_(torch.from_numpy(L["b"]))
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)

    def layers(self):
        """[(W, b)] in den's layout: conv weights (F, C, kh, kw) as (F, C*kh*kw)."""
        return [(m.weight.detach().numpy().reshape(m.weight.shape[0], -1), m.bias.detach().numpy())
                for m in self.linears]

    def conv_backends(self, batch):
        """The convolution backend PyTorch selects for each conv layer at this batch and the
        current thread count (torch._C._select_conv_backend, a private helper), e.g. 'Mkldnn'."""
        torch = self.torch
        out, x = [], torch.zeros(batch, *INPUT_SHAPE)
        try:
            for m in self.model:
                if isinstance(m, torch.nn.Conv2d):
                    b = torch._C._select_conv_backend(x, m.weight, m.bias, m.stride, m.padding, m.dilation,
                                                      False, (0, 0), m.groups, None)
                    out.append(str(b).rsplit(".", 1)[-1])
                with torch.no_grad():
                    x = m(x)
                if isinstance(m, torch.nn.Flatten):
                    break
        except (AttributeError, RuntimeError, TypeError):
            return ["?"]
        return out


# ---- den's working memory ------------------------------------------------------------------------


def conv_geometry(arch):
    """Per conv layer: (C in, H, W, F, kh, kw, pool), H and W being the map it convolves."""
    out, (c, h, w) = [], INPUT_SHAPE
    for f, k, p in arch["conv"]:
        out.append((c, h, w, f, k, k, p))
        c, h, w = f, h // p, w // p
    return out, c * h * w


def samples_per_gemm(B, C, H, W, kh, kw):
    """den_conv_samples_per_gemm (csrc/conv.c): samples whose im2col columns fit in
    DEN_CONV_COLS_FLOATS (conv.h; _core.CONV_COLS_FLOATS), at least 1, at most B."""
    from den import _core

    per = C * kh * kw * H * W
    return max(1, min(B, _core.CONV_COLS_FLOATS // per))


def step_gemms(arch, B):
    """den's sgemm calls in one training step at batch B, as (count, transA, transB, M, N, K,
    lda, ldb, ldc): per conv layer and chunk of nb samples (N = nb*h*w columns) the forward
    (F x N x C*kh*kw), the weight gradient and, above the first layer, the input gradient
    (csrc/conv.c); per dense layer and the head the same three (csrc/dense.c)."""
    geo, flat = conv_geometry(arch)
    calls = []
    for l, (c, h, w, f, kh, kw, p) in enumerate(geo):
        nb, K = samples_per_gemm(B, c, h, w, kh, kw), c * kh * kw
        for m, count in ((nb, B // nb), (B % nb, 1)):
            if m == 0 or count == 0:
                continue
            N = m * h * w
            calls.append((count, NO_TRANS, NO_TRANS, f, N, K, K, N, N))
            calls.append((count, NO_TRANS, TRANS, f, K, N, N, N, K))
            if l > 0:
                calls.append((count, TRANS, NO_TRANS, K, N, f, K, N, N))
    n_in = flat
    for n_out in list(arch["hidden"]) + [N_CLASSES]:
        calls.append((1, NO_TRANS, TRANS, B, n_out, n_in, n_in, n_in, n_out))
        calls.append((1, TRANS, NO_TRANS, n_out, n_in, B, n_out, n_in, n_in))
        calls.append((1, NO_TRANS, NO_TRANS, B, n_in, n_out, n_out, n_in, n_in))
        n_in = n_out
    return calls


def gemm_seconds(sgemm, arch, B):
    """Seconds of one training step's sgemm calls, each timed alone on den's OpenBLAS."""
    total = 0.0
    for count, *shape in step_gemms(arch, B):
        args, _keep = sgemm.arguments(*shape)
        total += count * sgemm.seconds_per_call(args)
    return total


def gemm_flops(arch, B):
    return sum(2.0 * count * M * N * K for count, ta, tb, M, N, K, *_ in step_gemms(arch, B))


def working_memory(arch, B):
    """Bytes of den's training workspace for batches of B rows, as csrc/model.h (den_data) and
    csrc/conv.h describe it and csrc/train.c (work_layout) allocates it, once per train() call:

      per minibatch row: the input (3072 floats); every layer's output (units * out_pixels);
        for each pooled conv layer its pre-pooling map (units * h * w floats) and the pooling
        argmax (units * out_pixels int32); two gradient rows of the largest layer output; 4 rows
        of the widest head (logits, probabilities, their gradient, sigmoid targets); the class
        id (int32) and the sample index (int64);
      for the whole batch: one im2col buffer, C*kh*kw * nb*h*w floats, and one GEMM result,
        F * nb*h*w floats, each the largest over the conv layers, nb = den_conv_samples_per_gemm
        (as many samples as keep the columns within _core.CONV_COLS_FLOATS); and one pre-pooling
        gradient map, B * the largest F*h*w.

    Alignment padding (under 64 B per buffer, den_take) and the few pointer arrays are left out.
    Returns {part: bytes} with "total", and the samples per GEMM of each conv layer."""
    geo, flat = conv_geometry(arch)
    out_sizes = [f * (h // p) * (w // p) for c, h, w, f, kh, kw, p in geo] + list(arch["hidden"])
    per_row = {"input": 4 * N_INPUT, "layer outputs": 4 * sum(out_sizes),
               "pre-pooling maps": 4 * sum(f * h * w for c, h, w, f, kh, kw, p in geo if p > 1),
               "pooling argmax": 4 * sum(f * (h // p) * (w // p) for c, h, w, f, kh, kw, p in geo if p > 1),
               "gradient rows": 2 * 4 * max(out_sizes), "head rows": 4 * 4 * N_CLASSES + 4 + 8}
    nbs = [samples_per_gemm(B, c, h, w, kh, kw) for c, h, w, f, kh, kw, p in geo]
    whole = {"im2col columns": 4 * max(nb * c * kh * kw * h * w for nb, (c, h, w, f, kh, kw, p) in zip(nbs, geo)),
             "conv GEMM result": 4 * max(nb * f * h * w for nb, (c, h, w, f, kh, kw, p) in zip(nbs, geo)),
             "pre-pooling gradient": 4 * B * max(f * h * w for c, h, w, f, kh, kw, p in geo)}
    parts = dict({k: B * v for k, v in per_row.items()}, **whole)
    parts["total"] = sum(parts.values())
    return dict(parts, samples_per_gemm=nbs)


def n_parameters(arch):
    geo, flat = conv_geometry(arch)
    n = sum(f * (c * kh * kw + 1) for c, h, w, f, kh, kw, p in geo)
    for h in list(arch["hidden"]) + [N_CLASSES]:
        n, flat = n + h * (flat + 1), h
    return n


# ---- correctness -------------------------------------------------------------------------------


def compare(arch_name, threads, den_run, torch_run, start):
    """den against torch from the same weights `start` ([(W, b)]): each run is (loss, gradients
    [(gW, gb)], weights after one Adam step [(W, b)]). Returns the errors of TOLERANCE; stops
    the benchmark on a mismatch."""
    flat = lambda ls: [p for layer in ls for p in layer]  # noqa: E731
    (loss, grads, after), (t_loss, t_grads, t_after) = den_run, torch_run
    same = [np.sign(a - s) == np.sign(b - s) for a, b, s in zip(flat(after), flat(t_after), flat(start))]
    errors = {
        "loss": relative_error(loss, t_loss),
        "gradient": max(relative_error(g, r) for g, r in zip(flat(grads), flat(t_grads))),
        "weights": max(relative_error(a[m], b[m]) for a, b, m in zip(flat(after), flat(t_after), same)),
        "flipped": sum(int(m.size - m.sum()) for m in same) / sum(m.size for m in same),
    }
    bad = {k: e for k, e in errors.items() if not e <= TOLERANCE[k]}
    if bad:
        sys.exit("den disagrees with PyTorch on %s (%d threads): %s (tolerances %s); not timing anything"
                 % (arch_name, threads, bad, TOLERANCE))
    log("  check: den matches torch, %s, %d thread(s) (%s)" % (
        arch_name, threads, ", ".join("%s %.1e" % kv for kv in errors.items())))
    return errors


def worker_check(args):
    """den against torch on CHECK_ROWS images (loss, gradients, one full-batch Adam step), for
    every arch and thread count. The only worker that loads both libraries; it times nothing."""
    import den
    from den import _core

    try:
        import torch
    except ImportError as e:
        log("  torch is not importable (%s): den is not checked" % e)
        return {"skipped": "torch is not importable: %s" % e}
    threadpoolctl.threadpool_limits(1, user_api="blas")
    X, y = make_data(CHECK_ROWS, seed=1)
    Xt, yt = torch.from_numpy(X).reshape(-1, *INPUT_SHAPE), torch.from_numpy(y.astype(np.int64))
    out = {}
    for name in args.archs:
        arch = ARCHS[name]
        state = initial_state(arch)
        start = [(L["W"], L["b"]) for L in state["layers"] + state["heads"]]
        for T in args.threads:
            den.set_num_threads(T)
            torch.set_num_threads(T)
            net = _core.Net.from_state(state)
            loss = net.loss(X, y, 0)
            grads = den_layers(net.gradients(X, y, 0))
            net.train([(X, y, 0)], epochs=1, batch_size=len(X), lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS)
            cnn = TorchCNN(arch, state)
            t_loss = cnn.step(Xt, yt)
            t_grads = [(m.weight.grad.numpy().reshape(m.weight.shape[0], -1), m.bias.grad.numpy())
                       for m in cnn.linears]
            out["%s T=%d" % (name, T)] = compare(name, T, (loss, grads, den_layers(net)),
                                                 (t_loss, t_grads, cnn.layers()), start)
    return {"check": out}


# ---- timing workers: one per pass, contender and round --------------------------------------------


def time_archs(name, make_epoch, set_threads, data, args):
    """time_epochs (throughput.py) for each arch: rows of (arch, threads, batch, seconds, loss).
    make_epoch(arch, B) returns epoch(X, y) on a fresh network; data(n) -> (X, y)."""
    rows, one = [], argparse.Namespace(threads=args.threads, batches=[args.batch])
    for arch in args.archs:
        X, y = data(args.n[arch])
        for row in time_epochs("%s %s" % (name, arch), lambda B: make_epoch(arch, B), set_threads, X, y, one):
            rows.append(dict(row, arch=arch, n=len(X)))
    return rows


def worker_den(args):
    import den
    from den import _core

    threadpoolctl.threadpool_limits(1, user_api="blas")  # SciPy's and NumPy's; den's is set below

    def make_epoch(arch, B):
        net = den_net(ARCHS[arch])
        return lambda X, y: net.train([(X, y, 0)], epochs=1, batch_size=B, lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS)

    rows = time_archs("den", make_epoch, den.set_num_threads, make_data, args)
    sgemm = Sgemm(_core.__file__)
    for row in rows:  # the GEMM bound: the step's sgemm calls alone, same library and threads
        den.set_num_threads(row["threads"])
        row["gemm_s"] = gemm_seconds(sgemm, ARCHS[row["arch"]], row["batch"])
        log("  bound %s T=%d B=%d %8.0f samples/s" % (row["arch"], row["threads"], row["batch"],
                                                       row["batch"] / row["gemm_s"]))
    workspace = {}  # what the core allocates for one training call, against working_memory()
    for arch in args.archs:
        net, (X, y) = den_net(ARCHS[arch]), make_data(args.batch)
        net.train([(X, y, 0)], epochs=1, batch_size=args.batch, lr=LR)
        workspace[arch] = net.workspace_bytes
    path = linked_library(_core.__file__, "libopenblas")
    lib = next((b for b in blas_libraries() if path and os.path.realpath(b["filepath"]) == path), {})
    info = dict(den.blas_info(), library=path, version=lib.get("version"), architecture=lib.get("architecture"))
    return {"blas": info, "results": rows, "workspace_bytes": workspace}


def worker_torch(args):
    try:
        import torch
    except ImportError as e:
        log("  torch is not importable (%s): skipped" % e)
        return {"skipped": "torch is not importable: %s" % e}
    threadpoolctl.threadpool_limits(1, user_api="blas")  # NumPy's OpenBLAS, loaded with torch
    backends = {}

    def make_epoch(arch, B):
        cnn, gen = TorchCNN(ARCHS[arch]), torch.Generator().manual_seed(0)
        backends["%s T=%d" % (arch, torch.get_num_threads())] = cnn.conv_backends(B)
        return lambda X, y: cnn.epoch(X, y, B, gen)

    def data(n):
        X, y = make_data(n)
        return torch.from_numpy(X).reshape(-1, *INPUT_SHAPE), torch.from_numpy(y.astype(np.int64))

    rows = time_archs("torch", make_epoch, torch.set_num_threads, data, args)
    config = torch.__config__.show()
    onednn = next((line.split("MKL-DNN", 1)[1].split("(")[0].strip() for line in config.splitlines()
                   if "MKL-DNN" in line), None)
    info = dict(torch_blas(torch), adam=TorchCNN(LENET).adam_implementation(), onednn=onednn,
                mkldnn_available=torch.backends.mkldnn.is_available(), mkldnn_enabled=torch.backends.mkldnn.enabled,
                conv_backends=backends)
    return {"blas": info, "results": rows}


WORKERS = {"check": worker_check, "den": worker_den, "torch": worker_torch}


# ---- the parent: passes, table, targets, README ----------------------------------------------------


def worker_argv(args, worker):
    return ["--worker", worker, "--archs", ",".join(args.archs), "--threads", ",".join(map(str, args.threads)),
            "--batch", str(args.batch), "--n-lenet", str(args.n["lenet"]), "--n-alexnet", str(args.n["alexnet"])]


def run_rounds(args):
    """{pass: {"env", "check", contender: merged document}}: first the check worker of every
    pass, then --repeats rounds, each running every pass and contender once in a fresh process."""
    envs = passes(args.unset_openblas_env)
    script = os.path.abspath(__file__)
    checks = {}
    for name, env in envs:
        log("check, pass %s" % name)
        checks[name] = run_worker(script, worker_argv(args, "check"), env)
    rounds = {name: {c: [] for c in CONTENDERS} for name, _ in envs}
    for r in range(args.repeats):
        for name, env in envs:
            log("round %d/%d, pass %s: %s" % (r + 1, args.repeats, name, ", ".join(
                "%s=%s" % (k, env.get(k, "(unset)")) for k in OPENBLAS_VARS)))
            for c in CONTENDERS:
                rounds[name][c].append(run_worker(script, worker_argv(args, c), env))
    return {name: dict({"env": {k: env[k] for k in OPENBLAS_VARS + tuple(WORKER_ENV) if k in env},
                        "check": checks[name]}, **{c: merge(rounds[name][c]) for c in CONTENDERS})
            for name, env in envs}


def merge(docs):
    """One contender's rounds as one document: its best epoch per (arch, threads) over the rounds."""
    timing = ("wall_s", "other_cpu_s")
    out = {k: v for k, v in docs[0].items() if k not in timing}
    out["rounds"] = [{k: d[k] for k in timing} for d in docs]
    if "skipped" in out:
        return out
    out["results"] = []
    for rows in zip(*(d["results"] for d in docs)):
        row = dict(rows[0], seconds=[r["seconds"] for r in rows], loss=[r["loss"] for r in rows])
        row["images_per_s"] = row["n"] / min(row["seconds"])
        if "gemm_s" in row:
            row["bound"] = row["batch"] / min(r["gemm_s"] for r in rows)
        out["results"].append(row)
    return out


def by_config(doc):
    return {(r["arch"], r["threads"]): r for r in doc.get("results", [])}


def other_load(runs):
    """CPU time other processes took during the timing workers' runs, per second of run."""
    docs = [d for docs in runs.values() for c in CONTENDERS for d in docs[c]["rounds"]]
    return sum(d["other_cpu_s"] for d in docs) / max(sum(d["wall_s"] for d in docs), 1e-9)


def results(runs):
    """[(pass, threads, arch, den img/s, torch img/s or None, GEMM bound img/s)], in table order."""
    out = []
    for pass_name, docs in runs.items():
        den, torch = by_config(docs["den"]), by_config(docs["torch"])
        for (arch, T), d in sorted(den.items(), key=lambda kv: (kv[0][1], list(ARCHS).index(kv[0][0]))):
            out.append((pass_name, T, arch, d["images_per_s"], torch.get((arch, T), {}).get("images_per_s"),
                        d["bound"]))
    return out


def table(runs):
    fmt = lambda x: "{:,.0f}".format(x) if x else "—"  # noqa: E731
    rows = [[p, T, a, fmt(d), fmt(t), "%.2fx" % (d / t) if t else "—", fmt(g), "%.0f%%" % (100 * d / g),
             "%.2fx" % (t / g) if t else "—"] for p, T, a, d, t, g in results(runs)]
    return ["pass", "threads", "arch", "den img/s", "torch img/s", "den/torch", "GEMM bound img/s", "den/bound",
            "torch/bound"], rows


def targets(runs):
    """The issue's target, per pass, threads and arch: den at least as fast as PyTorch."""
    return [(p, "den >= torch, %s T=%d" % (a, T), "%.2fx" % (d / t), d >= t) for p, T, a, d, t, g in results(runs)
            if t]


def kernels(runs):
    """One row per pass: what each contender ran on, and the check's largest relative errors."""
    rows = []
    for pass_name, docs in runs.items():
        d = docs["den"]["blas"]
        den = "OpenBLAS %s, %s (%s)" % (d["version"], d["corename"], d["library"])
        t = docs["torch"].get("blas")
        if t:
            convs = sorted({b for bs in t["conv_backends"].values() for b in bs})
            torch = "%s %s, CPU capability %s; conv: %s (oneDNN %s); Adam: %s" % (
                t["blas"].upper(), t["mkl"] or "", t["cpu_capability"], "/".join(convs), t["onednn"], t["adam"])
        else:
            torch = "skipped"
        check = docs["check"].get("check")
        errs = (", ".join("%s %.0e" % (k, max(e[k] for e in check.values())) for k in TOLERANCE)
                if check else "not checked")
        env = ", ".join("%s=%s" % (k, docs["env"][k]) for k in OPENBLAS_VARS if k in docs["env"]) or "both unset"
        rows.append([pass_name, env, den, torch, errs])
    return ["pass", "environment", "den", "torch", "check (largest errors)"], rows


# What the core may allocate beyond working_memory(): alignment padding (under 64 B for each of
# the few dozen buffers) and the per-layer pointer arrays. Seen: 320-552 B.
MEMORY_SLACK = 4096


def memory(batch, archs, allocated):
    """{arch: working_memory} and the markdown table of it, with the bytes the core allocated
    (`allocated`, {arch: Net.workspace_bytes}); stops the benchmark if the formula is off."""
    mib = lambda b: "%.1f MiB" % (b / 2**20)  # noqa: E731
    mem = {a: dict(working_memory(ARCHS[a], batch), parameters=n_parameters(ARCHS[a])) for a in archs}
    rows = []
    for a, m in mem.items():
        extra = allocated[a] - m["total"]
        if not 0 <= extra <= MEMORY_SLACK:
            raise SystemExit("working memory of %s at batch %d: the core allocated %d B, the formula (csrc/model.h, "
                             "working_memory) gives %d B" % (a, batch, allocated[a], m["total"]))
        per_row = sum(v for k, v in m.items() if k in ("input", "layer outputs", "pre-pooling maps", "pooling argmax",
                                                        "gradient rows", "head rows"))
        rows.append([a, batch, mib(m["total"]), "%s (+%d B)" % (mib(allocated[a]), extra), mib(per_row),
                     mib(m["im2col columns"]), mib(m["conv GEMM result"]), mib(m["pre-pooling gradient"]),
                     ",".join(map(str, m["samples_per_gemm"])), "{:,}".format(m["parameters"]),
                     mib(16 * m["parameters"])])
    header = ["arch", "batch", "workspace (formula)", "allocated by the core", "per-row buffers", "im2col",
              "GEMM result", "pre-pool gradient", "samples per GEMM", "parameters", "W + grad + Adam m, v"]
    return mem, (header, rows)


def report(doc):
    """The markdown block: command, date, machine, versions, kernels, results, targets, memory."""
    m = doc["machine"]
    lines = [
        "- Command: `%s` (%s, den %s)." % (doc["command"], doc["date"], doc["den_revision"]),
        "- Machine: %s, %d cores; %s; Python %s, NumPy %s, PyTorch %s." % (
            m["cpu"], m["cores"], m["os"], m["python"], np.__version__, doc["versions"]["torch"]),
        "- Data: random 3x32x32 float32 images, 10 classes, batch %d; %s; images/s of the best of %d rounds. "
        "Workers ran with %s." % (doc["batch"], ", ".join("n = %d for %s" % (doc["n"][a], a) for a in doc["archs"]),
                                  doc["repeats"], ", ".join("%s=%s" % kv for kv in WORKER_ENV.items())),
        "- GEMM work per image in one training step: %s." % ", ".join(
            "%s %.4g GFLOP" % kv for kv in doc["gemm_gflop_per_image"].items()),
        "- Other processes on the machine took %.0f%% of one core during the run%s." % (
            100 * doc["other_load"], " (**too busy: its 2-thread numbers are unreliable**)" if doc["other_load"] > 0.1 else ""),
        "", markdown_table(*kernels(doc["passes"])),
        "", markdown_table(*table(doc["passes"])),
        "", markdown_table(["pass", "target", "measured", "met"],
                           [[p, t, v, "yes" if ok else "**no**"] for p, t, v, ok in doc["targets"]]),
        "", "den's working memory for one training call (allocated once per call): the formula of csrc/model.h "
            "and csrc/conv.h, checked against what the core allocated (`Net.workspace_bytes`); and the gathered "
            "model's parameters, gradients and Adam moments (16 B per parameter):",
        "", markdown_table(*doc["memory_table"]),
    ]
    return "\n".join(lines)


README_INTRO = """\
`benchmarks/cnn_throughput.py` times one epoch of training den's conv trunks `den.LENET` and
`den.ALEXNET` (then the dense layers and a 10-way softmax head; cross-entropy, Adam lr 1e-3) at
batch 64 on random 3x32x32 images, with den's C core (`_core.Net.train`, im2col + sgemm on the
system OpenBLAS) and the same network in PyTorch CPU (`nn.Conv2d`, `nn.MaxPool2d`, `nn.Linear`,
`torch.optim.Adam`), with 1 and 2 threads, in the same run and the same way as the Throughput
section above (one worker process per contender, best of rounds, a second pass without the
OpenBLAS variables). Before timing, a check worker builds both networks from the same weights
and requires den's loss, weight gradients and weights after one full-batch Adam step to match
PyTorch's (tolerances and why: `TOLERANCE` in the script). The target is den at least as fast
as PyTorch. The GEMM bound is the speed den would reach if its training step were nothing but
its sgemm calls (each timed alone on den's OpenBLAS, same threads). The last table gives den's
working memory per training call, from the formula that `csrc/model.h` and `csrc/conv.h` state,
checked against what the core allocated. See the script's docstring for details.
"""


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", type=lambda s: s.split(","), default=list(ARCHS), help="comma-separated: lenet,alexnet")
    p.add_argument("--threads", type=ints, default=[1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-lenet", type=int, default=8192, help="images per LeNet epoch")
    p.add_argument("--n-alexnet", type=int, default=512, help="images per AlexNet epoch")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the best counts")
    p.add_argument("--quick", action="store_true", help="smoke test: n = 512 and 64, 1 round, README left alone")
    p.add_argument("--unset-openblas-env", action=argparse.BooleanOptionalAction, default=True,
                   help="a second pass without %s" % " and ".join(OPENBLAS_VARS))
    p.add_argument("--out", default=os.path.join(HERE, "out", "cnn_throughput.json"))
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not set(args.archs) <= set(ARCHS):
        p.error("--archs: unknown %s (known: %s)" % (",".join(sorted(set(args.archs) - set(ARCHS))), ",".join(ARCHS)))
    if args.quick:
        args.n_lenet, args.n_alexnet, args.repeats = 512, 64, 1
    args.n = {"lenet": args.n_lenet, "alexnet": args.n_alexnet}
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        write_result(args.result, WORKERS[args.worker](args))
        return
    doc = {"command": command_line(), "date": today(), "machine": machine(), "den_revision": git_revision(),
           "archs": args.archs, "n": {a: args.n[a] for a in args.archs}, "batch": args.batch,
           "threads": args.threads, "repeats": args.repeats}
    doc["gemm_gflop_per_image"] = {a: gemm_flops(ARCHS[a], args.batch) / args.batch / 1e9 for a in args.archs}
    if os.getloadavg()[0] > 0.5:
        log("warning: load average %.2f: other processes are running, timings will be noisy" % os.getloadavg()[0])
    doc["passes"] = run_rounds(args)
    allocated = next(iter(doc["passes"].values()))["den"]["workspace_bytes"]
    doc["working_memory"], doc["memory_table"] = memory(args.batch, args.archs, allocated)
    doc["other_load"] = other_load(doc["passes"])
    doc["targets"] = targets(doc["passes"])
    torch_doc = next(iter(doc["passes"].values()))["torch"]
    doc["versions"] = {"torch": torch_doc.get("blas", {}).get("torch", "not installed")}
    block = report(doc)
    print("\n" + block)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_result(args.out, doc)
    print("\nJSON: %s" % args.out)
    if not args.quick:
        update_readme_block("cnn_throughput", "CNN throughput", README_INTRO, block)
        print("README: benchmarks/README.md, section CNN throughput")


if __name__ == "__main__":
    main()
