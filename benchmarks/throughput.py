"""Training throughput of den's C core, against PyTorch CPU, plain NumPy and the GEMM bound.

What is measured
  Samples per second for one epoch of training the 784-312-128-10 ReLU MLP (softmax
  cross-entropy, Adam with lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay) on --n random
  float32 inputs in [0, 1) with random labels (Fashion-MNIST's shape), for each batch size and
  thread count: n / seconds of the epoch, the best of --repeats rounds. The contenders:

  den    _core.Net.train: one call shuffles, then runs every minibatch's forward, backward and
         Adam step in C with the GIL released, on the system OpenBLAS den's extension links.
         Threads: den.set_num_threads.
  torch  a hand-written loop: nn.Sequential of Linear and ReLU, CrossEntropyLoss,
         torch.optim.Adam with the implementation its defaults pick (on CPU: the single-tensor
         for-loop, neither foreach nor fused), minibatches of a shuffled index per epoch.
         Threads: torch.set_num_threads. Skipped, with a note, if torch is not importable.
  numpy  the same MLP and Adam written with NumPy operations (matmuls by @), on NumPy's
         bundled OpenBLAS. Threads: threadpoolctl.
  bound  the GEMM bound: the sgemm calls of one den training step (forward of the three layers,
         weight gradients of the three, input gradients of layers 2 and 3; layer 1 needs none),
         with den's shapes and layouts, each timed alone in a loop through ctypes on the
         OpenBLAS den links (best of the rounds), summed: bound = batch / GEMM seconds per
         step. den/bound is the fraction of that speed den reaches.

How
  Every contender runs in a worker process of its own (this script with --worker), which
  first checks correctness, then times one epoch of each (threads, batch) after a warm-up on
  a tenth of the data, and writes JSON for the parent:
  - the check: den and torch start from the same NumPy initial weights as the NumPy
    implementation, and their loss and their weights after one full-batch Adam step must match
    NumPy's (relative errors, TOLERANCE); a mismatch stops the benchmark before any timing;
  - one process per contender: den's system OpenBLAS, NumPy's bundled OpenBLAS and PyTorch's
    MKL each have a thread pool, which would compete for the cores if they ran in one process;
    other BLAS libraries a worker happens to load are limited to 1 thread;
  - rounds: the parent runs --repeats rounds, each running every pass and contender once, so
    that the contenders are timed close together and a burst of other load spoils one round,
    not one contender; the best round counts;
  - passes: OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE when it is loaded, so the
    second pass (--no-unset-openblas-env skips it) runs fresh workers with both removed;
  - every worker runs with WORKER_ENV (a glibc malloc setting, see there).

Output: a table on stdout, JSON at --out, and (not with --quick) the same table, the command,
date, machine, library versions and kernels in the Throughput section of benchmarks/README.md.

    python benchmarks/throughput.py                 # full run: a few minutes
    python benchmarks/throughput.py --quick         # smoke test: n=6000, 1 round
"""

import argparse
import ctypes
import os
import re
import sys
import time

import numpy as np
import threadpoolctl

from _common import (blas_libraries, command_line, git_revision, linked_library, log, machine,
                     markdown_table, run_worker, today, update_readme_block, use_repo_den,
                     write_result, HERE)

SIZES = (784, 312, 128, 10)
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# With glibc's default malloc settings, the memory of NumPy's and PyTorch's per-step temporaries
# (up to a 1 MB weight gradient) goes back to the kernel and is page-faulted in anew at every
# step: 2-3x slower at batch 32, and how much depends on the process's history. M_TOP_PAD keeps
# 64 MiB of heap; den allocates once per train() call and is unaffected.
WORKER_ENV = {"MALLOC_TOP_PAD_": str(64 << 20)}
CONTENDERS = ("den", "torch", "numpy")
CHECK_ROWS = 256
# Relative errors allowed against NumPy. A first Adam step moves each weight by about
# lr * g / (|g| + eps), which float32 rounding of small gradients shifts the most, so the update
# itself gets a looser bound than the weights (seen: loss 1e-8, weights 1e-6, update 4e-5).
TOLERANCE = {"loss": 1e-5, "weights": 1e-5, "update": 1e-3}


# ---- data and initial weights ------------------------------------------------------------------


def make_data(n, seed=0):
    """X (n, 784) float32 in [0, 1), C-contiguous; y (n,) int32 labels in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], n, dtype=np.int32)


def init_params(seed=0):
    """[(W (out, in), b (out,))] per layer as float32: He-uniform weights, small biases."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        a = np.sqrt(6.0 / n_in)
        W = rng.uniform(-a, a, (n_out, n_in)).astype(np.float32)
        params.append((W, rng.uniform(-0.1, 0.1, n_out).astype(np.float32)))
    return params


# ---- the three implementations -----------------------------------------------------------------


class NumpyMLP:
    """The MLP and its Adam state as NumPy float32 arrays."""

    def __init__(self, params):
        self.params = [p.copy() for layer in params for p in layer]  # W1, b1, W2, b2, W3, b3
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def layers(self):
        return [(self.params[i], self.params[i + 1]) for i in range(0, len(self.params), 2)]

    def loss_and_grads(self, X, y):
        """Mean cross-entropy of the batch and its gradients, in the order of self.params."""
        W1, b1, W2, b2, W3, b3 = self.params
        h1 = np.maximum(X @ W1.T + b1, 0)
        h2 = np.maximum(h1 @ W2.T + b2, 0)
        z = h2 @ W3.T + b3
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(-np.log(p[rows, y]).mean())
        dz = p
        dz[rows, y] -= 1
        dz /= len(y)
        dh2 = (dz @ W3) * (h2 > 0)
        dh1 = (dh2 @ W2) * (h1 > 0)
        return loss, [dh1.T @ X, dh1.sum(0), dh2.T @ h1, dh2.sum(0), dz.T @ h2, dz.sum(0)]

    def adam(self, grads):
        self.t += 1
        step, inv_bc2 = LR / (1 - BETA1**self.t), 1 / (1 - BETA2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= BETA1
            m += (1 - BETA1) * g
            v *= BETA2
            v += (1 - BETA2) * g * g
            p -= step * m / (np.sqrt(v * inv_bc2) + EPS)

    def step(self, X, y):
        """One minibatch: returns the loss before the update."""
        loss, grads = self.loss_and_grads(X, y)
        self.adam(grads)
        return loss

    def epoch(self, X, y, batch, rng):
        order = rng.permutation(len(X))
        total = 0.0
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            total += self.step(X[idx], y[idx]) * len(idx)
        return total / len(X)


class TorchMLP:
    """The MLP as nn.Sequential, CrossEntropyLoss and torch.optim.Adam with default implementation."""

    def __init__(self, params=None):
        import torch
        from torch import nn

        self.torch = torch
        layers = []
        for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.model = nn.Sequential(*layers[:-1])
        self.linears = [m for m in self.model if isinstance(m, nn.Linear)]
        if params is not None:
            with torch.no_grad():
                for lin, (W, b) in zip(self.linears, params):
                    lin.weight.copy_(torch.from_numpy(W))
                    lin.bias.copy_(torch.from_numpy(b))
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)

    def layers(self):
        return [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in self.linears]

    def adam_implementation(self):
        """What torch.optim.Adam's defaults pick for these parameters (a private helper)."""
        try:
            from torch.optim.optimizer import _default_to_fused_or_foreach

            fused, foreach = _default_to_fused_or_foreach(list(self.model.parameters()), False, False)
        except (ImportError, TypeError):
            return "?"
        return "fused" if fused else "foreach" if foreach else "for-loop (single-tensor)"

    def step(self, X, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(X), y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def epoch(self, X, y, batch, generator):
        order = self.torch.randperm(len(X), generator=generator)
        total = 0.0
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            total += self.step(X[idx], y[idx]) * len(idx)
        return total / len(X)


def den_state(params):
    """The Net.from_state dict of a fully connected den net with these weights."""

    def layer(W, b):
        return {"W": W, "b": b, "mask": np.ones(W.shape, bool), "stamp": np.zeros(len(b), np.int32)}

    *hidden, head = params
    return {"n_input": SIZES[0], "layers": [layer(*p) for p in hidden],
            "heads": [dict(layer(*head), kind="softmax")]}


def den_layers(net):
    state = net.get_state()
    return [(L["W"], L["b"]) for L in state["layers"] + state["heads"]]


# ---- correctness -------------------------------------------------------------------------------


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(name, loss, layers, ref_loss, ref_layers, start):
    """Relative errors of one Adam step against NumPy's: the loss before it, the weights after
    it, and the update (weights after - before). Stops the benchmark on a mismatch."""
    flat = lambda ls: [p for layer in ls for p in layer]  # noqa: E731
    got, ref, before = flat(layers), flat(ref_layers), flat(start)
    errors = {
        "loss": relative_error(loss, ref_loss),
        "weights": max(relative_error(g, r) for g, r in zip(got, ref)),
        "update": max(relative_error(g - s, r - s) for g, r, s in zip(got, ref, before)),
    }
    bad = {k: e for k, e in errors.items() if not e <= TOLERANCE[k]}
    if bad:
        sys.exit("%s disagrees with the NumPy implementation after one Adam step: relative errors %s "
                 "(tolerances %s); not timing anything" % (name, bad, TOLERANCE))
    log("  check: %s matches NumPy (relative errors: %s)" % (name, ", ".join("%s %.1e" % kv for kv in errors.items())))
    return errors


def numpy_reference(X, y):
    """Initial weights, and NumPy's loss and weights after one full-batch Adam step from them."""
    params = init_params()
    ref = NumpyMLP(params)
    loss = ref.step(X, y)
    return params, loss, ref.layers()


def check_den():
    from den import _core

    X, y = make_data(CHECK_ROWS, seed=1)
    params, ref_loss, ref_layers = numpy_reference(X, y)
    net = _core.Net.from_state(den_state(params))
    loss = net.loss(X, y, 0)
    net.train([(X, y, 0)], epochs=1, batch_size=len(X), lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS)
    return compare("den", loss, den_layers(net), ref_loss, ref_layers, params)


def check_torch():
    import torch

    X, y = make_data(CHECK_ROWS, seed=1)
    params, ref_loss, ref_layers = numpy_reference(X, y)
    mlp = TorchMLP(params)
    loss = mlp.step(torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)))
    return compare("torch", loss, mlp.layers(), ref_loss, ref_layers, params)


# ---- the GEMM bound ----------------------------------------------------------------------------

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def step_gemms(batch):
    """den's sgemm calls in one training step: (name, transA, transB, M, N, K, lda, ldb, ldc)."""
    calls = []
    for l, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:]), 1):
        calls.append(("forward %d" % l, NO_TRANS, TRANS, batch, n_out, n_in, n_in, n_in, n_out))
        calls.append(("dW %d" % l, TRANS, NO_TRANS, n_out, n_in, batch, n_out, n_in, n_in))
        if l > 1:
            calls.append(("dX %d" % l, NO_TRANS, NO_TRANS, batch, n_in, n_out, n_out, n_in, n_in))
    return calls


class Sgemm:
    """cblas_sgemm of the OpenBLAS that den's extension links, through ctypes: looked up from the
    extension's own handle, so it is the very library (and thread pool) den calls."""

    def __init__(self, extension):
        self.fn = ctypes.CDLL(extension).cblas_sgemm
        self.fn.restype = None

    @staticmethod
    def arguments(ta, tb, M, N, K, lda, ldb, ldc):
        """ctypes arguments for one call on fresh random operands (kept alive in the result)."""
        rng = np.random.default_rng(0)
        a = rng.random((K if ta == TRANS else M, lda), dtype=np.float32)
        b = rng.random((N if tb == TRANS else K, ldb), dtype=np.float32)
        c = np.zeros((M, ldc), np.float32)
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        args = (i(ROW_MAJOR), i(ta), i(tb), i(M), i(N), i(K), f(1.0), p(a.ctypes.data), i(lda),
                p(b.ctypes.data), i(ldb), f(0.0), p(c.ctypes.data), i(ldc))
        return args, (a, b, c)

    def seconds_per_call(self, args, min_seconds=0.02):
        """Mean time of one call in a loop of calls lasting about min_seconds."""
        t0 = time.perf_counter()
        self.fn(*args)
        calls = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-7)))
        t0 = time.perf_counter()
        for _ in range(calls):
            self.fn(*args)
        return (time.perf_counter() - t0) / calls

    def call_overhead(self):
        """Seconds of a call that does no work (M = N = K = 0): ctypes and argument checks."""
        return self.seconds_per_call(self.arguments(NO_TRANS, NO_TRANS, 0, 0, 0, 1, 1, 1)[0])

    def step_seconds(self, batch):
        """{call name: seconds} for the sgemm calls of one training step at this batch."""
        out = {}
        for name, *shape in step_gemms(batch):
            args, _keep = self.arguments(*shape)
            out[name] = self.seconds_per_call(args)
        return out


# ---- workers: one per contender and pass ---------------------------------------------------------


def configs(args):
    return [(T, B) for T in args.threads for B in args.batches]


def time_epochs(name, make_epoch, set_threads, X, y, args):
    """One round: the seconds of one epoch for every (threads, batch). make_epoch(B) returns a
    function epoch(X, y) -> mean loss on a fresh model, warmed up on a tenth of the data first."""
    rows, warm = [], max(len(X) // 10, 1)
    for T, B in configs(args):
        set_threads(T)
        epoch = make_epoch(B)
        epoch(X[:warm], y[:warm])
        t0 = time.perf_counter()
        loss = epoch(X, y)
        rows.append({"threads": T, "batch": B, "seconds": time.perf_counter() - t0, "loss": loss})
        log("  %-5s T=%d B=%-4d %8.0f samples/s" % (name, T, B, len(X) / rows[-1]["seconds"]))
    return rows


def worker_den(args):
    import den
    from den import _core

    threadpoolctl.threadpool_limits(1, user_api="blas")  # SciPy's and NumPy's; den's is set below
    check = check_den()
    X, y = make_data(args.n)

    def make_epoch(B):
        net = _core.Net(SIZES[0], list(SIZES[1:-1]), seed=0)
        h = net.add_head("softmax", SIZES[-1], 0)
        return lambda X, y: net.train([(X, y, h)], epochs=1, batch_size=B, lr=LR)

    rows = time_epochs("den", make_epoch, den.set_num_threads, X, y, args)
    sgemm = Sgemm(_core.__file__)
    for row in rows:
        den.set_num_threads(row["threads"])
        row["gemm_seconds"] = sgemm.step_seconds(row["batch"])
        log("  bound T=%d B=%-4d %8.0f samples/s" % (row["threads"], row["batch"], row["batch"] / sum(row["gemm_seconds"].values())))
    path = linked_library(_core.__file__, "libopenblas")
    lib = next((b for b in blas_libraries() if path and os.path.realpath(b["filepath"]) == path), {})
    info = dict(den.blas_info(), library=path, version=lib.get("version"), architecture=lib.get("architecture"),
                sgemm_call_overhead_s=sgemm.call_overhead())
    return {"check": check, "blas": info, "results": rows}


def worker_numpy(args):
    X, y = make_data(args.n)
    controller = threadpoolctl.ThreadpoolController()

    def make_epoch(B):
        mlp, rng = NumpyMLP(init_params()), np.random.default_rng(0)
        return lambda X, y: mlp.epoch(X, y, B, rng)

    rows = time_epochs("numpy", make_epoch, lambda T: controller.limit(limits=T, user_api="blas"), X, y, args)
    return {"blas": {"numpy": np.__version__, "libraries": blas_libraries()}, "results": rows}


def torch_blas(torch):
    """What BLAS PyTorch was built with (torch.__config__.show()) and its CPU capability."""
    config = torch.__config__.show()
    blas = next((f.split("=", 1)[1] for f in config.replace(",", " ").split() if f.startswith("BLAS_INFO=")), "?")
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    return {"torch": torch.__version__, "blas": blas, "mkl": mkl and mkl.group(1),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def worker_torch(args):
    try:
        import torch
    except ImportError as e:
        log("  torch is not importable (%s): skipped" % e)
        return {"skipped": "torch is not importable: %s" % e}
    threadpoolctl.threadpool_limits(1, user_api="blas")  # NumPy's OpenBLAS, loaded with torch
    check = check_torch()
    X, y = make_data(args.n)

    def make_epoch(B):
        mlp, gen = TorchMLP(), torch.Generator().manual_seed(0)
        return lambda X, y: mlp.epoch(X, y, B, gen)

    rows = time_epochs("torch", make_epoch, torch.set_num_threads, torch.from_numpy(X),
                       torch.from_numpy(y.astype(np.int64)), args)
    info = dict(torch_blas(torch), adam=TorchMLP().adam_implementation())
    return {"check": check, "blas": info, "results": rows}


WORKERS = {"den": worker_den, "numpy": worker_numpy, "torch": worker_torch}


# ---- the parent: passes, table, targets, README ----------------------------------------------------


def passes(unset):
    """(name, environment) of each pass: as is, then without the OpenBLAS variables; both with
    WORKER_ENV added."""
    env = dict(os.environ, **WORKER_ENV)
    out = [("as-is", env)]
    if unset:
        out.append(("unset", {k: v for k, v in env.items() if k not in OPENBLAS_VARS}))
    return out


def worker_argv(args, contender):
    return ["--worker", contender, "--batches", ",".join(map(str, args.batches)),
            "--threads", ",".join(map(str, args.threads)), "--n", str(args.n)]


def by_config(doc):
    return {(r["threads"], r["batch"]): r for r in doc.get("results", [])}


def ksps(x):
    return "%.1fk" % (x / 1000) if x else "—"


def ratio(a, b):
    return a / b if a and b else None


def table(runs):
    header = ["pass", "threads", "batch", "den", "torch", "numpy", "GEMM bound", "den/bound", "den/torch"]
    rows = []
    for pass_name, docs in runs.items():
        den, torch, npy = (by_config(docs[c]) for c in CONTENDERS)
        for (T, B), d in den.items():
            t, n = torch.get((T, B), {}).get("samples_per_s"), npy.get((T, B), {}).get("samples_per_s")
            r_bound, r_torch = ratio(d["samples_per_s"], d["bound"]), ratio(d["samples_per_s"], t)
            rows.append([pass_name, T, B, ksps(d["samples_per_s"]), ksps(t), ksps(n), ksps(d["bound"]),
                         "%.0f%%" % (100 * r_bound), "%.2fx" % r_torch if r_torch else "—"])
    return header, rows


def targets(runs):
    """The issue's targets, per pass: (pass, target, measured, met)."""
    out = []
    for pass_name, docs in runs.items():
        den, torch = by_config(docs["den"]), by_config(docs["torch"])
        for (T, B), d in den.items():
            sps = d["samples_per_s"]
            if B in (128, 256):
                r = sps / d["bound"]
                out.append((pass_name, "den >= 85%% of GEMM bound, B=%d T=%d" % (B, T), "%.1f%%" % (100 * r), r >= 0.85))
            need = {32: 1.5, 128: 1.1}.get(B)
            if need and (T, B) in torch:
                r = sps / torch[(T, B)]["samples_per_s"]
                out.append((pass_name, "den >= %.1fx torch, B=%d T=%d" % (need, B, T), "%.2fx" % r, r >= need))
            if T == 2 and (1, B) in den:
                r = sps / den[(1, B)]["samples_per_s"]
                out.append((pass_name, "den 2 threads >= 1 thread, B=%d" % B, "%.2fx" % r, r >= 1.0))
    return out


def kernels(runs):
    """One row per pass: the library and kernel each contender ran on."""
    rows = []
    for pass_name, docs in runs.items():
        d = docs["den"]["blas"]
        den = "OpenBLAS %s, %s (%s)" % (d["version"], d["corename"], d["library"])
        npy = ["OpenBLAS %s, %s (%s)" % (b["version"], b["architecture"], os.path.basename(b["filepath"]))
               for b in docs["numpy"]["blas"]["libraries"] if "numpy" in b["filepath"]]
        t = docs["torch"].get("blas")
        torch = "%s %s, CPU capability %s; Adam: %s" % (t["blas"].upper(), t["mkl"] or "", t["cpu_capability"], t["adam"]) if t else "skipped"
        env = ", ".join("%s=%s" % (k, docs["env"][k]) for k in OPENBLAS_VARS if k in docs["env"]) or "both unset"
        rows.append([pass_name, env, den, "; ".join(npy) or "?", torch])
    return ["pass", "environment", "den", "numpy", "torch"], rows


def report(doc):
    """The markdown block: command, date, machine, versions, kernels, results, targets."""
    m = doc["machine"]
    lines = [
        "- Command: `%s` (%s, den %s)." % (doc["command"], doc["date"], doc["den_revision"]),
        "- Machine: %s, %d cores; %s; Python %s, NumPy %s, PyTorch %s." % (
            m["cpu"], m["cores"], m["os"], m["python"], doc["versions"]["numpy"], doc["versions"]["torch"]),
        "- Data: n = %d random samples; samples/s of the best of %d rounds. Workers ran with %s." % (
            doc["n"], doc["repeats"], ", ".join("%s=%s" % kv for kv in WORKER_ENV.items())),
        "- Other processes on the machine took %.0f%% of one core during the run%s." % (
            100 * doc["other_load"], " (**too busy: its 2-thread numbers are unreliable**)" if doc["other_load"] > 0.1 else ""),
        "", markdown_table(*kernels(doc["passes"])),
        "", markdown_table(*table(doc["passes"])),
        "", markdown_table(["pass", "target", "measured", "met"],
                           [[p, t, v, "yes" if ok else "**no**"] for p, t, v, ok in doc["targets"]]),
    ]
    return "\n".join(lines)


README_INTRO = """\
`benchmarks/throughput.py` times one epoch of training the 784-312-128-10 ReLU MLP (softmax
cross-entropy, Adam lr 1e-3) with den's C core (`_core.Net.train`), a PyTorch CPU loop, plain
NumPy, and the GEMM bound (the sgemm calls of one den training step, timed alone on den's
OpenBLAS), at several batch sizes and thread counts, after checking that den and PyTorch agree
with the NumPy implementation on one Adam step. See the script's docstring for details.
"""


def parse_args(argv=None):
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=ints, default=[32, 128, 256])
    p.add_argument("--threads", type=ints, default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="rounds; the best counts")
    p.add_argument("--n", type=int, default=60000, help="samples per epoch")
    p.add_argument("--quick", action="store_true", help="smoke test: n=6000, 1 round, README left alone")
    p.add_argument("--unset-openblas-env", action=argparse.BooleanOptionalAction, default=True,
                   help="a second pass without %s" % " and ".join(OPENBLAS_VARS))
    p.add_argument("--out", default=os.path.join(HERE, "out", "throughput.json"))
    p.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 6000, 1
    return args


def run_rounds(args):
    """{pass: {"env": ..., contender: merged document}}. Each of the --repeats rounds runs every
    pass and contender once, each in a fresh worker process, so that a contender's epochs are
    spread over the whole run and those of the contenders are close in time."""
    envs = passes(args.unset_openblas_env)
    rounds = {name: {c: [] for c in CONTENDERS} for name, _ in envs}
    for r in range(args.repeats):
        for name, env in envs:
            log("round %d/%d, pass %s: %s" % (r + 1, args.repeats, name, ", ".join(
                "%s=%s" % (k, env.get(k, "(unset)")) for k in OPENBLAS_VARS)))
            for c in CONTENDERS:
                rounds[name][c].append(run_worker(os.path.abspath(__file__), worker_argv(args, c), env))
    return {name: dict({"env": {k: env[k] for k in OPENBLAS_VARS + tuple(WORKER_ENV) if k in env}},
                       **{c: merge(rounds[name][c], args.n) for c in CONTENDERS}) for name, env in envs}


def other_load(runs):
    """CPU time other processes took during the workers' runs, per second of run: 0.25 means a
    quarter of a core was busy with something else on average."""
    docs = [d for docs in runs.values() for c in CONTENDERS for d in docs[c]["rounds"]]
    return sum(d["other_cpu_s"] for d in docs) / max(sum(d["wall_s"] for d in docs), 1e-9)


def merge(docs, n):
    """One contender's rounds as one document: its best epoch over the rounds, and for den each
    sgemm call's best time and the bound from them."""
    timing = ("wall_s", "other_cpu_s")
    out = {k: v for k, v in docs[0].items() if k not in timing}
    out["rounds"] = [{k: d[k] for k in timing} for d in docs]
    if "skipped" in out:
        return out
    out["results"] = []
    if "check" in docs[0]:
        out["check"] = {k: max(d["check"][k] for d in docs) for k in docs[0]["check"]}
    for rows in zip(*(d["results"] for d in docs)):
        row = dict(rows[0], seconds=[r["seconds"] for r in rows], loss=[r["loss"] for r in rows])
        row["samples_per_s"] = n / min(row["seconds"])
        if "gemm_seconds" in row:
            row["gemm_seconds"] = {k: min(r["gemm_seconds"][k] for r in rows) for k in row["gemm_seconds"]}
            row["bound"] = row["batch"] / sum(row["gemm_seconds"].values())
        out["results"].append(row)
    return out


def versions(runs):
    """NumPy's and PyTorch's versions, as the workers saw them."""
    docs = next(iter(runs.values()))
    return {"numpy": docs["numpy"]["blas"]["numpy"], "torch": docs["torch"].get("blas", {}).get("torch", "not installed")}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        use_repo_den()
        write_result(args.result, WORKERS[args.worker](args))
        return
    doc = {"command": command_line(), "date": today(), "machine": machine(), "den_revision": git_revision(),
           "n": args.n, "repeats": args.repeats, "batches": args.batches, "threads": args.threads}
    if os.getloadavg()[0] > 0.5:
        log("warning: load average %.2f: other processes are running, timings will be noisy" % os.getloadavg()[0])
    doc["passes"] = run_rounds(args)
    doc["other_load"] = other_load(doc["passes"])
    doc["targets"] = targets(doc["passes"])
    doc["versions"] = versions(doc["passes"])
    block = report(doc)
    print("\n" + block)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_result(args.out, doc)
    print("\nJSON: %s" % args.out)
    if not args.quick:
        update_readme_block("throughput", "Throughput", README_INTRO, block)
        print("README: benchmarks/README.md, section Throughput")


if __name__ == "__main__":
    main()
