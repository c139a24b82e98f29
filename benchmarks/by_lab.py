"""A trained model on every lab of the shared datasets, at its own threshold: precision, recall, F1, ROC / PR AUC
and calibration error per lab (ABO, Neurofinder 01 / 02 / 04, simulations) and pooled.

    python benchmarks/by_lab.py suite2p --model suite2p-resnet50
    python benchmarks/by_lab.py caiman --model path/to/old/caiman-cnn2.json

Unlike benchmarks/lolo.py this does not hold labs out: a model scored on labs it was trained on looks better here
than it would on a new lab. It is how the previous release is put beside the new one.
"""
import argparse
import sys
from collections import defaultdict

import numpy as np

from splits import SPLITS, path

from roicurate.evaluate import metrics
from roicurate.models import Classifier
from roicurate.training.outoflab import lab_of
from roicurate.training.data import load_labelled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=SPLITS)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    clf = Classifier.load(a.model)
    recs = [r for part in SPLITS[a.pipeline].values() for r in part]
    sets = load_labelled([str(path(r, a.pipeline)) for r in recs], a.pipeline, use_pipeline_labels=False)
    by = defaultdict(lambda: ([], []))
    for rs in sets:
        y, s = by[lab_of(rs.recording)]
        y.append(rs.labels > 0)
        s.append(clf.predict_proba(rs)[:, clf.positive])
    print(f"{a.pipeline}: {clf.name} ({clf.card['sha256'][:12]}) at its threshold {clf.threshold:.3f}\n")
    print("| lab | ROIs | cell frac | P | R | F1 | ROC AUC | PR AUC | ECE |\n|---|---|---|---|---|---|---|---|---|")
    ys, ss = [], []
    for lab in sorted(by):
        y, s = (np.concatenate(v) for v in by[lab])
        ys.append(y), ss.append(s)
        m = metrics(y, s, clf.threshold)
        print(f"| {lab} | {m['n']} | {m['cell_fraction']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['f1']:.3f} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {m['ece']:.3f} |")
    m = metrics(np.concatenate(ys), np.concatenate(ss), clf.threshold)
    print(f"| pooled | {m['n']} | {m['cell_fraction']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | "
          f"{m['f1']:.3f} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {m['ece']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
