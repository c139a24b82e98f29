"""Named operating points and test-time augmentation, measured on leave-one-lab-out scores.

    python benchmarks/lolo.py caiman ...recipe of train_bundled.py... --scores /tmp/caiman.npz     # the scores
    python benchmarks/points.py caiman --scores /tmp/caiman.npz [--speed 2000]

Prints, for each held-out lab, precision / recall / F1 at each named point (recall, balanced, precision), each
lab's point chosen on the *other* labs' scores alone (roicurate/training/points.py, as a new lab would get it),
next to accepting everything; then ROC AUC with and without test-time augmentation (the eight rotations/flips,
``Classifier(tta=True)``) on the same out-of-lab models; with ``--speed N``, the bundled model's ROIs/s on N tiled
ROIs with and without it.

These are the network's own points (Platt-calibrated, no head); the bundled models' cards carry the points of
their stacked heads, chosen by ``benchmarks/head.py --card``.
"""
import argparse
import time

import numpy as np

from splits import DATA, MODELS

from roicurate.evaluate import roc_auc
from roicurate.training.outoflab import nested_metrics
from roicurate.training.points import POINTS


def print_points(points, y, labs):
    """Each held-out lab's precision / recall / F1 at every named point (``points``: {point: {lab: metrics}}, as
    ``nested_metrics(...)["points"]`` gives them), next to accepting everything."""
    print("| held-out lab | ROIs | cell frac | accept-all F1 | " +
          " | ".join(f"{n}: P / R / F1" for n in POINTS) + " |")
    print("|---|---|---|---|" + "---|" * len(POINTS))
    for lab in sorted(points["recall"]):
        frac = y[labs == lab].mean()
        print(f"| {lab} | {int((labs == lab).sum())} | {frac:.2f} | {2 * frac / (1 + frac):.3f} | " +
              " | ".join(f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}"
                         for m in (points[n][lab] for n in POINTS)) + " |")


def tta_table(d):
    print("\n| held-out lab | ROC AUC | ROC AUC, TTA | gain |")
    print("|---|---|---|---|")
    gains = []
    for lab in [*sorted(set(d["lab"])), "pooled"]:
        inside = np.ones(len(d["y"]), bool) if lab == "pooled" else d["lab"] == lab
        y = d["y"][inside].astype(bool)
        a, b = roc_auc(y, d["p"][inside]), roc_auc(y, d["p_tta"][inside])
        gains.append(b - a)
        print(f"| {lab} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    return gains


def speed(model, n):
    from speed import best, tiled

    from roicurate.models import Classifier
    from roicurate.plugins import sources
    clf, clf_tta = Classifier.load(model), Classifier.load(model, tta=True)
    plane = sources()["suite2p"].read(DATA / "sim/s2p_sim1/suite2p/plane0")
    rois = tiled(plane, n)
    plain, tta = best(2, lambda: clf.predict_proba(rois), lambda: clf_tta.predict_proba(rois))
    print(f"\n{model}, {n} ROIs in process (crops + network, best of 2): {n / plain:,.0f} ROIs/s without TTA, "
          f"{n / tta:,.0f} ROIs/s with TTA ({tta / plain:.1f}x the time)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=("suite2p", "caiman"))
    ap.add_argument("--scores", required=True, help=".npz of benchmarks/lolo.py --scores (outside the repository)")
    ap.add_argument("--speed", type=int, default=0, metavar="N", help="also time the bundled model on N ROIs")
    a = ap.parse_args()
    d = dict(np.load(a.scores))
    d["y"] = d["y"].astype(bool)
    print(f"{a.pipeline}: {len(d['y'])} ROIs of {len(set(d['lab']))} labs, out-of-lab scores from {a.scores}\n")
    offset = d["offset"] if "offset" in d else None
    print_points(nested_metrics(d["y"], d["p"], offset, d["lab"])["points"], d["y"], d["lab"])
    tta_table(d)
    if a.speed:
        speed(MODELS[a.pipeline], a.speed)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f} s)")
