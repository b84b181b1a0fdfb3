"""DEN on 10 tasks of permuted Fashion-MNIST (784-312-128, sigmoid heads as in the authors' code).

Measures what the DEN issue asks for, in one process on den's one BLAS pool:
  - per-task test AUROC after the last task for DEN, STL and DNN; final capacity relative to the
    base network and to STL; wall seconds per training stage (selective / expansion / split)
    and in total;
  - selective vs full retraining at equal epochs (the paper's Fig. 4a): DEN against DEN with
    the whole network retrained in step 1 of every task (selective=False): seconds of that
    retraining stage and mean AUROC;
  - the targets: DEN mean AUROC within 0.5 points (0.005) of STL and above DNN, capacity at
    most 2x the base network, selective retraining at most half the time of full retraining.

    python benchmarks/den_permuted.py                  # full size: 50,000/10,000/10,000 per task
    python benchmarks/den_permuted.py --quick          # 4 tasks x 3,000 samples, 2 epochs

Writes benchmarks/out/den_permuted.json and the "DEN on permuted Fashion-MNIST" section of
benchmarks/README.md. Needs Fashion-MNIST (Debian: apt-get install dataset-fashion-mnist).
"""

import argparse
import json
import os
import time

import _common
from _common import log, markdown_table

_common.use_repo_den()
import den  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--n-val", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="den.set_num_threads (1: deterministic)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="DEN constructor argument, e.g. --set sigma=0.4 (repeatable)")
    p.add_argument("--skip-fig4a", action="store_true", help="skip the full-retraining run")
    p.add_argument("--quick", action="store_true", help="4 tasks x 3,000 samples, 2 epochs: a smoke test")
    p.add_argument("--out", default=os.path.join(_common.HERE, "out", "den_permuted.json"))
    p.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    args = p.parse_args()
    if args.quick:
        args.tasks, args.n_train, args.n_val, args.n_test, args.epochs = 4, 3000, 600, 2000, 2
    return args


def den_settings(args):
    import ast

    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        try:
            extra[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            extra[key] = value
    return extra


def run(label, model, tasks):
    log(f"{label}: {len(tasks)} tasks ...")
    r = den.run(model, tasks, progress=False, name=label)
    log(f"  {r.summary()}")
    return r


def retrain_seconds(result, stage):
    return sum(s.get(stage, 0.0) for s in result.seconds)


def main():
    args = parse_args()
    den.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tasks = den.datasets.load("permuted-fashion-mnist", n_tasks=args.tasks, seed=args.seed, n_train=args.n_train,
                              n_val=args.n_val, n_test=args.n_test, head="sigmoid")
    log(f"loaded {len(tasks)} tasks in {time.perf_counter() - t0:.1f} s: {tasks[0]}")
    common = {"hidden": (312, 128), "epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3,
              "seed": args.seed}
    extra = den_settings(args)
    results = {
        "DEN": run("DEN", den.DEN(**common, **extra), tasks),
        "STL": run("STL", den.STL(**common), tasks),
        "DNN": run("DNN", den.DNN(**common), tasks),
    }
    if not args.skip_fig4a:
        results["full"] = run("DEN, full retraining", den.DEN(**common, **{**extra, "selective": False}), tasks)
    doc = summarize(args, common, extra, results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"wrote {args.out}")
    text = report(doc)
    print(text)
    if not args.no_readme and not args.quick:
        _common.update_readme_block("den_permuted", "DEN on permuted Fashion-MNIST", __doc__.split("\n\n")[1], text)
        log("updated benchmarks/README.md")


def summarize(args, common, extra, results):
    d, stl, dnn = results["DEN"], results["STL"], results["DNN"]
    doc = {
        "command": _common.command_line(), "date": _common.today(), "revision": _common.git_revision(),
        "machine": _common.machine(), "threads": args.threads, "settings": {**common, **extra},
        "den_params": den.DEN(**common, **extra).get_params(),
        "results": {k: r.to_dict() for k, r in results.items()},
    }
    targets = {
        "den_within_0.005_of_stl": bool(stl.mean_auroc - d.mean_auroc <= 0.005),
        "den_above_dnn": bool(d.mean_auroc > dnn.mean_auroc),
        "capacity_at_most_2x_base": bool(d.relative_capacity <= 2.0),
    }
    if "full" in results:
        sel_s = retrain_seconds(d, "selective")
        full_s = retrain_seconds(results["full"], "retrain")
        doc["fig4a"] = {"selective_seconds": sel_s, "full_seconds": full_s, "ratio": sel_s / full_s if full_s else None,
                        "selective_auroc": d.mean_auroc, "full_auroc": results["full"].mean_auroc,
                        "selective_total_seconds": d.total_seconds, "full_total_seconds": results["full"].total_seconds,
                        "full_capacity": results["full"].relative_capacity}
        targets["selective_at_most_half_of_full"] = bool(full_s and sel_s <= 0.5 * full_s)
    doc["targets"] = targets
    return doc


def report(doc):
    R = {k: den.RunResult.from_json(json.dumps(v)) for k, v in doc["results"].items()}
    d, stl = R["DEN"], R["STL"]
    T = d.n_tasks
    lines = [f"`{doc['command']}` — {doc['date']}, revision {doc['revision']}, {doc['machine']['cpu']}, "
             f"{doc['threads']} BLAS thread(s). DEN settings: `{json.dumps(doc['den_params'])}`.", ""]
    header = ["model"] + [f"task {j + 1}" for j in range(T)] + ["mean", "capacity (x base)", "capacity (x STL)",
                                                               "seconds"]
    rows = []
    for name in ("DEN", "STL", "DNN"):
        r = R[name]
        rows.append([name] + [f"{v:.4f}" for v in r.final_auroc] + [
            f"**{r.mean_auroc:.4f}**", f"{r.relative_capacity:.2f}", f"{r.capacity[-1] / stl.capacity[-1]:.3f}",
            f"{r.total_seconds:.0f}"])
    lines += ["Test AUROC of every task after the last task:", "", markdown_table(header, rows), ""]
    stages = d.stage_seconds()
    lines += ["DEN wall seconds per stage, summed over tasks: " + ", ".join(
        f"{k} {v:.0f}" for k, v in stages.items()) + f"; total {d.total_seconds:.0f} s (with evaluation).", ""]
    rows = []
    for t, h in enumerate(d.history):
        rows.append([t + 1, h.get("selected", "-"), f"{h['val_loss']:.3f}" if "val_loss" in h else "-",
                     h.get("added", "-"), h.get("kept", "-"), h.get("duplicated", "-"), h["units"],
                     f"{h['sparsity']:.2f}"])
    lines += ["DEN per task: units of the selected subnetwork S per layer, validation loss after selective retraining, "
              "units added / kept by expansion, units duplicated by the split, layer widths after the task, "
              "fraction of exact zeros in the trunk:", "",
              markdown_table(["task", "selected", "val loss", "added", "kept", "split", "widths", "sparsity"], rows), ""]
    if "fig4a" in doc:
        f = doc["fig4a"]
        lines += [f"Selective vs full retraining at equal epochs (DEN vs DEN with selective=False): step-1 "
                  f"retraining {f['selective_seconds']:.0f} s vs {f['full_seconds']:.0f} s summed over tasks (ratio "
                  f"{f['ratio']:.2f}); whole run {f['selective_total_seconds']:.0f} s vs "
                  f"{f['full_total_seconds']:.0f} s; mean AUROC {f['selective_auroc']:.4f} vs {f['full_auroc']:.4f}; "
                  f"capacity {d.relative_capacity:.2f}x vs {f['full_capacity']:.2f}x.", ""]
    lines += ["Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in doc["targets"].items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
