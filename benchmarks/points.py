"""Named operating points and test-time augmentation, measured on leave-one-lab-out scores.

    python benchmarks/lolo.py caiman ...recipe of train_bundled.py... --scores /tmp/caiman.npz     # the scores
    python benchmarks/points.py caiman --scores /tmp/caiman.npz [--card roicurate_plugins/weights/caiman-cnn2.json]
        [--speed 2000]

Prints, for each held-out lab, precision / recall / F1 at each named point (recall, balanced, precision), each
lab's point chosen on the *other* labs' scores alone (roicurate/training/points.py, as a new lab would get it),
next to accepting everything; then ROC AUC with and without test-time augmentation (the eight rotations/flips,
``Classifier(tta=True)``) on the same out-of-lab models; with ``--speed N``, the bundled model's ROIs/s on N tiled
ROIs with and without it.

``--card``: write the points into that (bundled) card. Its recall point is the card's own threshold and rule (chosen
when the model was trained); the balanced and precision points are chosen on these scores, calibrated the way
``roicurate train --operating-point out-of-lab`` calibrates them (Platt fitted on the pooled out-of-lab scores).
The scores come from a re-run of the shipped recipe: the thresholds it gives for the recall point are printed
beside the card's so the run-to-run spread is visible. The weights are not touched.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from roicurate import calibrate as cal
from roicurate.evaluate import roc_auc
from roicurate.training.outoflab import nested_metrics, operating_point
from roicurate.training.points import POINTS, choose_points


def point_table(d):
    offset = d["offset"] if "offset" in d else None
    nested = nested_metrics(d["y"], d["p"], offset, d["lab"])["points"]
    print("| held-out lab | ROIs | cell frac | accept-all F1 | " +
          " | ".join(f"{n}: P / R / F1" for n in POINTS) + " |")
    print("|---|---|---|---|" + "---|" * len(POINTS))
    for lab in sorted(nested["recall"]):
        y = d["y"][d["lab"] == lab].astype(bool)
        frac = y.mean()
        cells = [nested[n][lab] for n in POINTS]
        print(f"| {lab} | {len(y)} | {frac:.2f} | {2 * frac / (1 + frac):.3f} | " +
              " | ".join(f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}" for m in cells) + " |")
    return nested


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
    from roicurate.plugins import model_specs, sources
    from splits import DATA
    clf, clf_tta = Classifier.load(model), Classifier.load(model, tta=True)
    plane = sources()["suite2p"].read(DATA / "sim/s2p_sim1/suite2p/plane0")
    rois = tiled(plane, n)
    plain, tta = best(2, lambda: clf.predict_proba(rois), lambda: clf_tta.predict_proba(rois))
    print(f"\n{model}, {n} ROIs in process (crops + network, best of 2): {n / plain:,.0f} ROIs/s without TTA, "
          f"{n / tta:,.0f} ROIs/s with TTA ({tta / plain:.1f}x the time)")


def write_card(path, d, nested):
    card = json.loads(Path(path).read_text())
    offset = d["offset"] if "offset" in d else None
    calib, recall_thr = operating_point(d["y"], d["p"], offset, d["lab"])
    points = choose_points(d["y"], cal.apply(calib, d["p"], offset), d["lab"])
    print(f"\nrecall point on these scores: {recall_thr:.3f} (the card's, chosen when the model was trained: "
          f"{card['threshold']:.3f})")
    points["recall"] = {"threshold": card["threshold"], "rule": card["threshold_rule"]}
    for name in ("balanced", "precision"):
        points[name]["rule"] += (" (chosen on out-of-lab scores of a re-run of the shipped recipe, "
                                 "benchmarks/points.py)")
    card["operating_points"] = points
    card["out_of_lab"]["nested"]["points"] = {n: nested[n] for n in POINTS}
    Path(path).write_text(json.dumps(card, indent=1) + "\n")
    for name, p in points.items():
        print(f"{name}: threshold {p['threshold']:.3f}  {p['rule']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=("suite2p", "caiman"))
    ap.add_argument("--scores", required=True, help=".npz of benchmarks/lolo.py --scores (outside the repository)")
    ap.add_argument("--card", help="write the points into this card")
    ap.add_argument("--speed", type=int, default=0, metavar="N", help="also time the bundled model on N ROIs")
    a = ap.parse_args()
    d = dict(np.load(a.scores))
    d["y"] = d["y"].astype(bool)
    print(f"{a.pipeline}: {len(d['y'])} ROIs of {len(set(d['lab']))} labs, out-of-lab scores from {a.scores}\n")
    nested = point_table(d)
    tta_table(d)
    if a.card:
        write_card(a.card, d, nested)
    if a.speed:
        speed({"suite2p": "suite2p-resnet50", "caiman": "caiman-cnn2"}[a.pipeline], a.speed)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f} s)")
