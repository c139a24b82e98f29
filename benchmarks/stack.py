"""Does a stacked head on the network's logit and the shape features beat both on labs it never saw?

    python benchmarks/stack.py caiman --scores /tmp/caiman.npz      # the .npz of benchmarks/lolo.py --scores

For every held-out lab, a logistic regression is fitted on the *other* labs' out-of-lab scores (so the network's
logit of each ROI comes from a model that never saw that ROI's lab either) and scores the held-out lab. Rows, ROC
AUC per held-out lab: the network alone (its out-of-lab probability), test-time augmentation, the shape LR of
benchmarks/lolo.py (five features, log area in pixels), and the stacked head on logit + the five shape features
relative to the recording's reference cell (+ the TTA logit, + the log area in pixels), and the ``--shape-prior`` form
(a shape LR fitted first, then Platt on the network's logit and the prior's). Nothing here is shipped: the table says whether a head
is worth putting in a card.
"""
import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lolo import WEIGHTS, shape_lr
from splits import SPLITS, path

from roicurate.evaluate import roc_auc
from roicurate.shape import shape_features
from roicurate.training.data import load_labelled
from roicurate.training.outoflab import lab_of

MODELS = {"suite2p": "suite2p-resnet50", "caiman": "caiman-cnn2"}


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def nested_lr(X, y, labs):
    """Each lab's probabilities from a logistic regression fitted on the other labs."""
    out = np.zeros(len(y))
    for lab in np.unique(labs):
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        lr.fit(X[labs != lab], y[labs != lab])
        out[labs == lab] = lr.predict_proba(X[labs == lab])[:, 1]
    return out


def nested_prior_head(X_shape, z, y, labs):
    """Each lab: a shape LR fitted on the other labs (as ``--shape-prior`` fits it), then Platt on the network logit
    ``z`` and that prior's logit, fitted on the other labs too."""
    out = np.zeros(len(y))
    for lab in np.unique(labs):
        tr = labs != lab
        prior = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_shape[tr], y[tr])
        Z = np.column_stack([z, prior.decision_function(X_shape)])
        out[~tr] = LogisticRegression(max_iter=2000).fit(Z[tr], y[tr]).predict_proba(Z[~tr])[:, 1]
    return out


def main():
    import json
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=MODELS)
    ap.add_argument("--scores", required=True)
    a = ap.parse_args()
    d = dict(np.load(a.scores))
    y, labs = d["y"].astype(bool), d["lab"]
    recs = [r for part in SPLITS[a.pipeline].values() for r in part]
    sets = load_labelled([str(path(r, a.pipeline)) for r in recs], a.pipeline, use_pipeline_labels=False)
    binz = json.loads((WEIGHTS / f"{MODELS[a.pipeline]}.json").read_text())["crop"].get("binarize") or 0.0
    by_rec = {rs.recording: rs for rs in sets}
    rel = {r: shape_features(rs, binz, relative=True) for r, rs in by_rec.items()}
    shape = np.stack([rel[r][i] for r, i in zip(d["recording"], d["index"])])
    px = {r: shape_features(rs, binz)[:, :1] for r, rs in by_rec.items()}          # log area in pixels
    area = np.stack([px[r][i] for r, i in zip(d["recording"], d["index"])])
    lr_probs = shape_lr(sets, sorted(set(labs)), binz)
    lr_by = {rs.recording: p for rs, p in zip(sets, lr_probs)}
    shape_only = np.array([lr_by[r][i] for r, i in zip(d["recording"], d["index"])])
    rows = {"network": d["p"], "network, TTA": d["p_tta"], "shape LR (lolo.py)": shape_only,
            "head: logit + relative shape": nested_lr(np.column_stack([logit(d["p"]), shape]), y, labs),
            "head: TTA logit + relative shape": nested_lr(np.column_stack([logit(d["p_tta"]), shape]), y, labs),
            "head: logit + relative shape + log area in px": nested_lr(np.column_stack([logit(d["p"]), shape, area]),
                                                                       y, labs),
            "prior: logit + shape LR logit (relative)": nested_prior_head(shape, logit(d["p"]), y, labs),
            "prior: logit + shape LR logit (relative + log area in px)":
                nested_prior_head(np.column_stack([shape, area]), logit(d["p"]), y, labs)}
    order = sorted(set(labs))
    print(f"{a.pipeline}: out-of-lab ROC AUC per held-out lab ({len(y)} ROIs, scores {a.scores})\n")
    print("| ranker | " + " | ".join(order) + " |")
    print("|---|" + "---|" * len(order))
    for name, s in rows.items():
        print(f"| {name} | " + " | ".join(f"{roc_auc(y[labs == g], s[labs == g]):.3f}" for g in order) + " |")


if __name__ == "__main__":
    main()
