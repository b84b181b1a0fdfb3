"""Command line: den run ... | den compare ... (also python -m den, outside the source checkout)

    den run --model den --dataset digits --tasks 10 --seed 0 --out r.json
    den compare --dataset digits --models den,stl,mtl,dnn,l2,ewc,progressive --seeds 5

Model settings: the models' defaults, or DATASET_SETTINGS for the data set (digits); then
--hidden 312,128 --epochs 10 ... apply to every model; --set KEY=VALUE sets any constructor
argument (--set den.tau=0.2 only for DEN; values are parsed as Python literals).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

MODELS = {"den": "DEN", "stl": "STL", "mtl": "MTL", "dnn": "DNN", "l2": "L2", "ewc": "EWC", "progressive": "Progressive"}

# Settings the command line uses per data set unless --hidden/--epochs/--set say otherwise: the
# models' own defaults suit the paper's data sets; the 1,078 training images of each digits
# task need a smaller net, smaller batches and a larger learning rate (and DEN thresholds for
# that loss scale).
DATASET_SETTINGS = {
    "digits": {
        "all": {"hidden": (64, 32), "epochs": 20, "batch_size": 32, "lr": 0.005},
        "den": {"l1": 1e-3, "group_lasso": 1e-3, "l2_prev": 0.1, "tau": 0.6, "sigma": 0.2},
        "l2": {"l2_prev": 0.05},
        "ewc": {"lam": 200.0, "fisher_samples": 300},
        "progressive": {"column": (32, 16)},
    },
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="den", description="Dynamically Expandable Networks and baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="learn a task sequence with one model and report per-task AUROC")
    run_p.add_argument("--model", default="den", choices=sorted(MODELS))
    run_p.add_argument("--seed", type=int, default=0)
    cmp_p = sub.add_parser("compare", help="run several models over several seeds and compare them")
    cmp_p.add_argument("--models", default="den,stl,mtl,dnn,l2,ewc,progressive")
    cmp_p.add_argument("--seeds", type=int, default=1, help="number of seeds (0..seeds-1)")
    for p in (run_p, cmp_p):
        p.add_argument("--dataset", default="digits", help="den.datasets name (default: digits, bundled)")
        p.add_argument("--tasks", type=int, default=None, help="number of tasks (default: the data set's)")
        p.add_argument("--path", default=None, help="folder with the data set's files (else $DEN_DATA)")
        p.add_argument("--head", default="sigmoid", choices=["sigmoid", "softmax"])
        p.add_argument("--hidden", default=None, help="hidden widths, e.g. 312,128")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--set", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
                       help="any constructor argument, e.g. --set den.tau=0.2 (repeatable)")
        p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                       help="data set size options, e.g. --data n_train=5000 (repeatable)")
        p.add_argument("--threads", type=int, default=None, help="BLAS threads (den.set_num_threads)")
        p.add_argument("--out", default=None, help="JSON file (run) or folder (compare) for the results")
        p.add_argument("--plot", default=None, help="write the figures to this PNG file")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        return _compare(args)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError, OverflowError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"error: out of memory ({exc}); try smaller --hidden, --batch-size or data sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items, what):
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _literal(value.strip())
    return out


def _model_kwargs(args, name):
    preset = DATASET_SETTINGS.get(args.dataset, {})
    kwargs = {"seed": 0, "head": args.head, "progress": not args.quiet, **preset.get("all", {}),
              **preset.get(name, {})}
    if args.hidden:
        try:
            kwargs["hidden"] = tuple(int(w) for w in args.hidden.split(","))
        except ValueError:
            raise ValueError(f"--hidden takes comma-separated layer widths like 312,128, got {args.hidden!r}") from None
    for key, attr in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, attr) is not None:
            kwargs[key] = getattr(args, attr)
    for key, value in _pairs(args.set, "--set").items():
        if "." in key:
            model, key = key.split(".", 1)
            if model.lower() not in MODELS:
                raise ValueError(f"--set {model}.{key}: unknown model {model!r} (known: {', '.join(MODELS)})")
            if model.lower() != name:
                continue
        kwargs[key] = value
    return kwargs


def _load_tasks(args, seed):
    import den

    return den.datasets.load(args.dataset, n_tasks=args.tasks, seed=seed, path=args.path, head=args.head,
                             **_pairs(args.data, "--data"))


def _make(name, kwargs):
    import den

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    return getattr(den, MODELS[name])(**kwargs)


def _setup(args):
    import den

    if args.threads is not None:
        den.set_num_threads(args.threads)


def _run(args):
    import den

    _setup(args)
    tasks = _load_tasks(args, args.seed)
    kwargs = _model_kwargs(args, args.model)
    kwargs["seed"] = args.seed
    model = _make(args.model, kwargs)
    result = den.run(model, tasks, progress=not args.quiet, dataset=args.dataset, seed=args.seed)
    _print_matrix(result)
    print(result.summary())
    if args.out:
        result.to_json(args.out)
        print(f"wrote {args.out}")
    if args.plot:
        _save_figure(result.plot(), args.plot)
    return 0


def _compare(args):
    import den

    _setup(args)
    names = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--models names no model (known: {', '.join(MODELS)})")
    for name in names:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    results = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        tasks = _load_tasks(args, seed)
        for name in names:
            kwargs = _model_kwargs(args, name)
            kwargs["seed"] = seed
            model = _make(name, kwargs)
            if not args.quiet:
                print(f"seed {seed}: {MODELS[name]}", file=sys.stderr)
            r = den.run(model, tasks, progress=not args.quiet, dataset=args.dataset, seed=seed)
            results.append(r)
    print(comparison_table(results))
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for r in results:
            r.to_json(os.path.join(args.out, f"{r.model.lower()}-seed{r.seed}.json"))
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summarize(results), f, indent=1)
        print(f"wrote {len(results)} results and summary.json to {args.out}")
    if args.plot:
        from .plots import figures

        _save_figure(figures(results), args.plot)
    return 0


def summarize(results):
    """Per model: mean and std over seeds of final mean AUROC, capacity and seconds."""
    import numpy as np

    out = {}
    stl = [r.capacity[-1] for r in results if r.model == "STL"]
    for name in dict.fromkeys(r.model for r in results):
        rs = [r for r in results if r.model == name]
        auc = np.array([r.mean_auroc for r in rs])
        cap = np.array([r.relative_capacity for r in rs])
        secs = np.array([r.total_seconds for r in rs])
        row = {"seeds": len(rs), "auroc_mean": float(auc.mean()), "auroc_std": float(auc.std()),
               "capacity_mean": float(cap.mean()), "capacity_std": float(cap.std()),
               "seconds_mean": float(secs.mean())}
        if stl:
            row["capacity_vs_stl"] = float(np.mean([r.capacity[-1] for r in rs]) / np.mean(stl))
        out[name] = row
    return out


def comparison_table(results):
    """A markdown table of summarize(results): one row per model (label)."""
    rows = summarize(results)
    lines = ["| model | seeds | mean AUROC | capacity (x base) | capacity (x STL) | seconds |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        vs = f"{r['capacity_vs_stl']:.3f}" if "capacity_vs_stl" in r else "-"
        lines.append(f"| {name} | {r['seeds']} | {r['auroc_mean']:.4f} ± {r['auroc_std']:.4f} | "
                     f"{r['capacity_mean']:.2f} | {vs} | {r['seconds_mean']:.1f} |")
    return "\n".join(lines)


def _print_matrix(result):
    import numpy as np

    T = result.n_tasks
    print("AUROC after task i (rows) on task j (columns):")
    print("      " + " ".join(f"{j + 1:>6d}" for j in range(T)))
    for i in range(T):
        row = " ".join("     -" if np.isnan(v) else f"{v:6.4f}" for v in result.auroc[i])
        print(f"{i + 1:>5d} {row}")


def _save_figure(fig, path):
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
