"""How much a person's review lifts the written verdict, with a simulated annotator who always answers right.

Per lab (abo275, Neurofinder 01 / 02 / 04, simulations), every ROI is scored by a model trained on the *other* labs
(leave-one-lab-out: `roicurate train --operating-point out-of-lab`, roicurate/training/outoflab.py), calibrated (Platt) and
thresholded on the other labs' out-of-lab scores (nested, as a new lab would get them). Then, in every recording,
the first 0, 5, 10 and 20 % of its ROIs in a review order get the true label, and the F1 of the verdict written
(human answer where there is one, else the model's) is computed over the lab's ROIs. Orders:

* expected error: P(the model's verdict is wrong) from the calibrated probability, largest first (1 - p for an
  accepted ROI, p for a rejected one);
* closest to threshold: |p - threshold| smallest first (the order of `roicurate review`: it did best);
* index: the pipeline's ROI order (clicking through the Suite2p GUI);
* random: a seeded shuffle (mean over 20 seeds).

    python benchmarks/review.py suite2p                 # trains the cnn2 LOLO models (~2 min idle, 2 cores)
    python benchmarks/review.py suite2p --scores S.npz   # re-use saved out-of-lab scores (--save S.npz)
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from splits import SPLITS, path

from roicurate.evaluate import prf
from roicurate.training.outoflab import MIN_RECALL, nested_metrics

FRACTIONS = (0.0, 0.05, 0.10, 0.20)
SEEDS = 20


def out_of_lab(pipeline, arch, epochs, seed, device):
    """{"y", "p", "offset", "lab", "recording"} per ROI, from LOLO training of ``arch`` (reference scale, mask)."""
    from dataclasses import replace

    from roicurate.plugins import model_specs, sources
    from roicurate.training.data import load_labelled
    from roicurate.training.train import train
    recs = [r for part in SPLITS[pipeline].values() for r in part]
    sets = load_labelled([str(path(r, pipeline)) for r in recs], pipeline, use_pipeline_labels=False)
    spec = model_specs()[arch]
    crop = replace(spec.crop or sources()[pipeline].crop, scale="reference", scaled_diameter=12.0)
    build = {"size": crop.size} if "size" in spec.build.__code__.co_varnames else {}
    with tempfile.TemporaryDirectory() as tmp:
        card = train(sets, spec, crop, None, tmp, "model", hp={"epochs": epochs, "lr": 1e-3}, seed=seed,
                     device=device, build_kwargs=build, operating_point="out-of-lab",
                     scale_jitter=(0.8, 0.9, 1.0, 1.12, 1.25), log=lambda m: print(m, file=sys.stderr, flush=True))
        with np.load(Path(card).with_suffix(".out-of-lab.npz")) as z:
            return dict(z)


def nested(oof):
    """Calibrated probability and verdict of every ROI, each lab's operating point chosen on the other labs."""
    off = oof.get("offset")
    m = nested_metrics(oof["y"].astype(bool), oof["p"], off, oof["lab"], MIN_RECALL)
    thr = np.array([m["labs"][g]["threshold"] for g in oof["lab"]])
    return m["probability"], m["accepted"], thr


def orders(q, accepted, thr, rng_seed):
    """{name: ROI indices of one recording in review order}."""
    wrong = np.where(accepted, 1 - q, q)
    n = len(q)
    return {"expected error": np.argsort(-wrong, kind="stable"),
            "closest to threshold": np.argsort(np.abs(q - thr), kind="stable"),
            "index": np.arange(n),
            "random": np.random.default_rng(rng_seed).permutation(n)}


def reviewed_f1(y, accepted, order, fraction):
    """F1 of the verdict after the first ``fraction`` of ``order`` got the true label (rounded up)."""
    written = accepted.copy()
    k = int(np.ceil(fraction * len(y)))
    written[order[:k]] = y[order[:k]]
    return written


def table(oof):
    y = oof["y"].astype(bool)
    q, accepted, thr = nested(oof)
    labs, recs = oof["lab"], oof["recording"]
    names = ("expected error", "closest to threshold", "index", "random")
    print("| held-out lab | ROIs | cell frac | order | " + " | ".join(f"{int(f * 100)} %" for f in FRACTIONS)
          + " | errors left at 10 % |\n|---|---|---|---|" + "---|" * (len(FRACTIONS) + 1))
    result = {}
    for lab in sorted(set(labs)):
        in_lab = labs == lab
        result[lab] = {}
        for name in names:
            f1s, left = [], []
            for seed in range(SEEDS if name == "random" else 1):
                per_f = {f: accepted.copy() for f in FRACTIONS}
                for rec in sorted(set(recs[in_lab])):
                    idx = np.flatnonzero(recs == rec)
                    order = orders(q[idx], accepted[idx], thr[idx], seed)[name]
                    for f in FRACTIONS:
                        per_f[f][idx] = reviewed_f1(y[idx], accepted[idx], order, f)
                f1s.append([prf(y[in_lab], per_f[f][in_lab])["f1"] for f in FRACTIONS])
                left.append(int((per_f[0.10][in_lab] != y[in_lab]).sum()))
            mean = np.mean(f1s, 0)
            result[lab][name] = mean
            print(f"| {lab} | {in_lab.sum()} | {y[in_lab].mean():.2f} | {name} | "
                  + " | ".join(f"{v:.3f}" for v in mean) + f" | {np.mean(left):.0f} |")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=SPLITS)
    ap.add_argument("--arch", default="cnn2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--scores", help="out-of-lab scores saved by an earlier run (--save); no training")
    ap.add_argument("--save", help="keep the out-of-lab scores here (per-ROI labels of the shared sets: not in git)")
    a = ap.parse_args()
    t0 = time.time()
    if a.scores:
        with np.load(a.scores) as z:
            oof = dict(z)
    else:
        oof = out_of_lab(a.pipeline, a.arch, a.epochs, a.seed, a.device)
        if a.save:
            np.savez(a.save, **oof)
    print(f"\n{a.pipeline}: {a.arch} leave-one-lab-out models (reference scale, mask crops), nested Platt "
          f"calibration and threshold (every lab's recall >= {MIN_RECALL} on the other labs); F1 of the written "
          f"verdict after reviewing a share of each recording's ROIs:\n")
    rows = table(oof)
    for name in ("closest to threshold", "expected error"):
        wins = [lab for lab, r in rows.items() if r[name][2] > r["index"][2]]
        print(f"\n{name} beats index order at 10 % on {len(wins)} of {len(rows)} labs", end="")
    print(f"  ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
