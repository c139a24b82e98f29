"""Leave-recordings-out accuracy on ../shared/datasets: K folds of whole recordings (stratified by dataset), a
model trained on the other recordings of each fold (one validation recording per dataset for early stopping,
calibration and the threshold), every recording tested exactly once. One table per pipeline: the model vs
accepting everything, the pipeline's own verdict and Suite2p's built-in classifier, on the same ROIs.

    python benchmarks/loro.py                       # both pipelines, cnn2, 3 folds (~15 min on 2 CPU cores)
    python benchmarks/loro.py suite2p --epochs 2    # a quick look
    python benchmarks/loro.py --json loro.json --device cuda --arch resnet50 --build width=16 --build first_stride=2

Everything goes through roicurate's own train / evaluate code (`roicurate.training.train.train`, `evaluate_model`), so each
fold's numbers are what `roicurate train ... --test` and `roicurate evaluate` report for it.
"""
import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from splits import SPLITS, path

from roicurate.evaluate import evaluate_model, jsonable, metrics
from roicurate.models import Classifier
from roicurate.plugins import model_specs, sources
from roicurate.training.data import load_labelled
from roicurate.training.train import train

BASELINES = (("accept_all", "accept all"), ("pipeline", "pipeline's own"), ("suite2p_builtin", "Suite2p built-in"))


def dataset_of(recording):
    return "sim" if "sim" in recording else recording.split("/")[0]


def make_folds(recordings, k):
    """Round-robin within each dataset, so every fold tests some recordings of every dataset."""
    by = defaultdict(list)
    for r in sorted(recordings):
        by[dataset_of(r)].append(r)
    folds = [[] for _ in range(k)]
    for recs in by.values():
        for i, r in enumerate(recs):
            folds[i % k].append(r)
    return folds


def validation_for(train_recs, fold):
    """One validation recording per dataset among the training recordings (a different one in each fold)."""
    by = defaultdict(list)
    for r in sorted(train_recs):
        by[dataset_of(r)].append(r)
    return [recs[fold % len(recs)] for recs in by.values() if len(recs) > 1]


def fit_and_score(sets, train_recs, val_recs, test_recs, spec, crop, build, args, out, log=lambda m: None, **kw):
    """Train on ``train_recs`` (validation ``val_recs``), score ``test_recs``: (numbers, table, model threshold)."""
    keep = set(train_recs) | set(val_recs)
    card = train([rs for rs in sets if rs.recording in keep], spec, crop, list(val_recs), out, "model",
                 hp={"epochs": args.epochs, "patience": args.patience, "lr": args.lr}, seed=args.seed,
                 device=args.device, build_kwargs=dict(build), log=log, **kw)
    clf = Classifier.load(card, device=args.device)
    numbers, table = evaluate_model(clf, [rs for rs in sets if rs.recording in set(test_recs)])
    table["model_accepted"] = table["model"] >= clf.threshold
    return numbers, table, clf.threshold


def summarize(tables):
    """Per dataset: {method: metrics} over the concatenated per-ROI tables of every fold."""
    cat = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    out = {}
    for ds in sorted({dataset_of(r) for r in cat["recording"]}):
        m = np.array([dataset_of(r) == ds for r in cat["recording"]])
        y = cat["label"][m]
        row = {"recordings": sorted(set(cat["recording"][m])), "model": metrics(y, cat["model"][m], 0.5,
                                                                                  cat["model_accepted"][m])}
        row["model"]["threshold"] = None
        per = [metrics(y[cat["recording"][m] == r], cat["model"][m][cat["recording"][m] == r], 0.5,
                       cat["model_accepted"][m][cat["recording"][m] == r])["f1"] for r in row["recordings"]]
        row["model_macro_f1"] = float(np.nanmean(per))
        for k, _ in BASELINES:
            if f"{k}_score" in cat:
                row[k] = metrics(y, cat[f"{k}_score"][m], 0.5, cat[f"{k}_accepted"][m])
                row[k]["constant_score"] = bool(np.ptp(cat[f"{k}_score"][m]) == 0)
        out[ds] = row
    return out


def print_table(pipeline, summary, title):
    print(f"\n{title}\n")
    hdr = ["dataset", "recs", "ROIs", "cell frac", "model P", "model R", "model F1 (mean/rec)", "model ROC AUC",
           "model PR AUC"] + [f"{name} F1" + ("" if k == "accept_all" else " / AUC") for k, name in BASELINES]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    f = lambda v: "–" if v is None or v != v else f"{v:.3f}"
    for ds, r in summary.items():
        m = r["model"]
        cells = [ds, str(len(r["recordings"])), str(m["n"]), f(m["cell_fraction"]), f(m["precision"]), f(m["recall"]),
                 f"{f(m['f1'])} ({f(r['model_macro_f1'])})", f(m["roc_auc"]), f(m["pr_auc"])]
        for k, _ in BASELINES:
            b = r.get(k)
            auc = None if b is None or b.get("constant_score") else b["roc_auc"]     # no ranking: no AUC
            cells.append("–" if b is None else (f(b["f1"]) if k == "accept_all" else f"{f(b['f1'])} / {f(auc)}"))
        print("| " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipelines", nargs="*", metavar="suite2p|caiman", help="default: both")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--arch", default="cnn2")
    ap.add_argument("--build", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="write every number (per fold and per dataset) here")
    args = ap.parse_args()
    if set(args.pipelines) - set(SPLITS):
        ap.error(f"pipelines are {', '.join(SPLITS)}")
    args.build_kwargs = {k: json.loads(v) for k, _, v in (b.partition("=") for b in args.build)}
    report = {"settings": {k: v for k, v in vars(args).items() if k != "build_kwargs"}, "pipelines": {}}
    for pipeline in args.pipelines or list(SPLITS):
        t0 = time.time()
        recs = [r for part in SPLITS[pipeline].values() for r in part]
        sets = load_labelled([str(path(r, pipeline)) for r in recs], pipeline, use_pipeline_labels=False)
        spec = model_specs()[args.arch]
        crop = spec.crop or sources()[pipeline].crop
        build = dict(args.build_kwargs)
        if "size" in spec.build.__code__.co_varnames:
            build.setdefault("size", crop.size)
        names = sorted({rs.recording for rs in sets})
        tables, folds = [], []
        for k, test_recs in enumerate(make_folds(names, args.folds)):
            rest = [r for r in names if r not in test_recs]
            val = validation_for(rest, k)
            with tempfile.TemporaryDirectory() as tmp:
                numbers, table, thr = fit_and_score(sets, [r for r in rest if r not in val], val, test_recs, spec,
                                                    crop, build, args, tmp)
            tables.append(table)
            folds.append({"test": test_recs, "validation": val, "threshold": thr, "numbers": numbers})
            print(f"{pipeline} fold {k + 1}/{args.folds}: tested {', '.join(test_recs)} "
                  f"(F1 {numbers['pooled']['f1']:.3f}, {time.time() - t0:.0f} s so far)", file=sys.stderr, flush=True)
        summary = summarize(tables)
        report["pipelines"][pipeline] = {"folds": folds, "datasets": summary, "seconds": round(time.time() - t0)}
        print_table(pipeline, summary, f"{pipeline}: {args.arch}, {args.folds}-fold leave-recordings-out, "
                                       f"{args.epochs} epochs max ({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(jsonable(report), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
