"""Accuracy on recordings the model never saw (the test recordings of benchmarks/splits.py), per dataset,
against simple baselines scored on the same ROIs:

* accept all (what you have without curation),
* the pipeline's own verdict where it made one (Suite2p's built-in classifier on the simulated runs;
  CaImAn's SNR / r-value evaluation on the simulated runs) — the real sets only hold accepted ROIs,
* logistic regression on five shape features (area, compactness, aspect ratio, eccentricity, solidity),
  fitted on the same training recordings as the model.

`python benchmarks/accuracy.py suite2p [--model NAME|PATH] [--json out.json]`
"""
import argparse
import json
import sys
from collections import defaultdict

import numpy as np

from splits import MODELS, SPLITS, paths

from roicurate.evaluate import jsonable, metrics, pr_curve
from roicurate.models import Classifier
from roicurate.shape import shape_features
from roicurate.training.data import load_labelled


def group_of(recording):
    return "sim" if recording.startswith(("s2p_sim", "caiman_sim")) else recording.split("/")[0]


def pipeline_score(rs):
    """The pipeline's own probability-like score, where it exists."""
    f = rs.features
    if "suite2p_prob" in f and rs.recording.startswith("s2p_sim"):
        return f["suite2p_prob"]
    if "SNR_comp" in f and np.isfinite(f["SNR_comp"]).all():
        return f["SNR_comp"]
    return None


def lr_baseline(train_sets, binarize):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.concatenate([shape_features(rs, binarize) for rs in train_sets])
    y = np.concatenate([rs.labels for rs in train_sets])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


def precision_at_recall(y, s, recall=0.7):
    """The best precision among the thresholds that keep at least ``recall`` (read off the PR curve)."""
    p, r, _ = pr_curve(y, s)
    return float(p[r >= recall].max())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("pipeline", choices=SPLITS)
    ap.add_argument("--model", help="default: the bundled model of the pipeline")
    ap.add_argument("--json")
    ap.add_argument("--record", action="store_true",
                    help="store the numbers in the model card under 'test' (the weights and their sha256 are untouched)")
    a = ap.parse_args()
    model = a.model or MODELS[a.pipeline]
    clf = Classifier.load(model)
    train_sets = load_labelled(paths(a.pipeline, "train"), a.pipeline, use_pipeline_labels=False)
    test_sets = load_labelled(paths(a.pipeline, "test"), a.pipeline, use_pipeline_labels=False)
    binz = clf.crop.binarize if clf.crop.binarize is not None else 0.0
    lr = lr_baseline(train_sets, binz)
    rows = defaultdict(lambda: defaultdict(list))
    for rs in test_sets:
        g = rows[group_of(rs.recording)]
        g["y"].append(rs.labels)
        g["model"].append(clf.predict_proba(rs)[:, clf.positive])
        g["lr"].append(lr.predict_proba(shape_features(rs, binz))[:, 1])
        ps = pipeline_score(rs)
        g["pipe"].append(ps if ps is not None else np.full(len(rs), np.nan))
        g["pipe_acc"].append(rs.pipeline_accepted if rs.pipeline_accepted is not None else np.ones(len(rs), bool))
        g["recs"].append(rs.recording)
    lr_thr = 0.5
    out = {"model": clf.name, "sha256": clf.card["sha256"], "threshold": clf.threshold, "pipeline": a.pipeline,
           "test_recordings": SPLITS[a.pipeline]["test"], "datasets": {}}
    print(f"{a.pipeline}: {clf.name} (threshold {clf.threshold:.3f}) on test recordings never seen in training")
    hdr = ("dataset", "recs", "ROIs", "cell frac", "model P", "model R", "model F1", "model ROC AUC", "model PR AUC",
           "model P at R ≥ 0.7", "LR shape ROC AUC / F1", "pipeline ROC AUC / F1", "accept-all F1")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name in sorted(rows):
        g = {k: (np.concatenate(v) if k != "recs" else v) for k, v in rows[name].items()}
        y = g["y"].astype(bool)
        m = metrics(y, g["model"], clf.threshold)
        lrm = metrics(y, g["lr"], lr_thr)
        has_pipe = np.isfinite(g["pipe"]).all()
        pm = metrics(y, g["pipe"], np.inf) if has_pipe else None
        pacc = metrics(y, g["pipe_acc"].astype(float), 0.5) if has_pipe else None
        allm = metrics(y, np.ones(len(y)), 0.5)
        macro_f1 = float(np.nanmean([metrics(yy.astype(bool), s, clf.threshold)["f1"]
                                     for yy, s in zip(rows[name]["y"], rows[name]["model"])]))
        per_rec = {r: metrics(yy.astype(bool), s, clf.threshold)
                   for r, yy, s in zip(g["recs"], rows[name]["y"], rows[name]["model"])}
        p70 = precision_at_recall(y, g["model"])
        out["datasets"][name] = {"recordings": per_rec, "model": m, "model_macro_f1": macro_f1,
                                 "model_precision_at_recall_0.7": p70, "lr_shape": lrm,
                                 "pipeline_roc_auc": pm["roc_auc"] if pm else None,
                                 "pipeline_f1": pacc["f1"] if pacc else None, "accept_all_f1": allm["f1"]}
        pipe = f"{pm['roc_auc']:.3f} / {pacc['f1']:.3f}" if pm else "–"
        print(f"| {name} | {len(g['recs'])} | {len(y)} | {y.mean():.2f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['f1']:.3f} (macro {macro_f1:.3f}) | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {p70:.3f} | "
              f"{lrm['roc_auc']:.3f} / {lrm['f1']:.3f} | {pipe} | {allm['f1']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(jsonable(out), f, indent=1)
    if a.record:
        card_path = clf.card["source"] if clf.card["source"].endswith(".json") else specs_card(clf.card["source"])
        card = json.loads(open(card_path).read())
        card["test"] = jsonable({k: v for k, v in out.items() if k not in ("model", "sha256", "pipeline")})
        card["test"]["how"] = "benchmarks/accuracy.py: recordings never used in training, early stopping or threshold choice"
        with open(card_path, "w") as f:
            f.write(json.dumps(card, indent=1) + "\n")
        print(f"recorded in {card_path}")


def specs_card(name):
    from roicurate.plugins import model_specs
    return model_specs()[name].card_path


if __name__ == "__main__":
    sys.exit(main())
