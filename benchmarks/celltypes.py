"""Two-channel cell typing on simulated recordings: cross-validation by recording.

The shared simulated Suite2p runs get a structural (red) channel in which a known subset of the somata is
labelled (benchmarks/chan2_sim.py; each seed labels another subset). Labels: the simulator's cell_types.csv
(red / not_red, for the ROIs matched to a soma). Folds: one simulated recording (s2p_sim1, s2p_sim2 with its
two planes, s2p_sim3) is the test fold, the others train; ``--folds`` is the number of recordings there are
(three), not ten, because there are no more. Training uses seeds 0..S-1 of the training recordings' red
channel; validation (early stopping, calibration, threshold) the same recordings with seed S, another subset
of red cells over the same green data; the test recording's green data and red subsets are never seen.

Models: celltype-cnn2 from scratch, celltype-resnet50 from scratch, and celltype-resnet50 started from the
bundled suite2p-resnet50 with everything below layer3 frozen (the study's "retrain the upper third") or below
layer1 (only the first convolution's block fixed); the first convolution, which had the mask channel only,
keeps its filters there, starts at zero on the images, and trains. Baselines: Suite2p's own red-cell probability (redcell.npy,
its intensity ratio) and accept-all, on the same ROIs.

    python benchmarks/celltypes.py                    # all three models, 3 folds
    python benchmarks/celltypes.py --models cnn2 --seeds 2 --epochs 10
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chan2_sim import make_two_channel  # noqa: E402
from splits import DATA  # noqa: E402

from roicurate.evaluate import evaluate_model, jsonable  # noqa: E402
from roicurate.models import Classifier  # noqa: E402
from roicurate.plugins import model_specs  # noqa: E402
from roicurate.training.data import load_labelled  # noqa: E402
from roicurate.training.train import train  # noqa: E402

SIMS = ["s2p_sim1", "s2p_sim2", "s2p_sim3"]
RED = ["not_red", "red"]
MODELS = {"cnn2": ("celltype-cnn2", None, None),
          "resnet50": ("celltype-resnet50", None, None),
          "resnet50-ft": ("celltype-resnet50", "suite2p-resnet50", "layer3"),
          "resnet50-ft-layer1": ("celltype-resnet50", "suite2p-resnet50", "layer1")}


def simulate(root, seeds, fraction):
    """{(sim, seed): suite2p folder} of two-channel copies of the simulated recordings."""
    out = {}
    for sim in SIMS:
        for seed in seeds:
            d = Path(root) / f"{sim}_red{seed}"
            make_two_channel(DATA / "sim" / sim, d, fraction=fraction, seed=seed)
            out[sim, seed] = d / "suite2p"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--seeds", type=int, default=3, help="red subsets per training recording (one more validates)")
    ap.add_argument("--fraction", type=float, default=0.3, help="fraction of the somata that are red")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-on", nargs="+", default=SIMS, choices=SIMS, help="test folds to run (default: all)")
    ap.add_argument("--json")
    a = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)
    t0 = time.time()
    tmp = tempfile.TemporaryDirectory()
    test_seed = 100                       # the test recording's red subset: one no training run used
    folders = simulate(tmp.name, list(range(a.seeds + 1)) + [test_seed], a.fraction)

    def load(keys):
        """The typed ROIs of these (recording, red subset) copies; each copy counts as a recording of its own."""
        sets = []
        for sim, k in keys:
            for rs in load_labelled([folders[sim, k]], "suite2p", types="cell_types.csv", type_classes=RED):
                rs.recording = f"{sim}_red{k}"
                sets.append(rs)
        return sets
    specs = model_specs()
    results = {m: [] for m in a.models}
    baseline = []
    for test in a.test_on:
        others = [s for s in SIMS if s != test]
        sets = load([(s, k) for s in others for k in range(a.seeds + 1)])
        val = sorted({rs.recording for rs in sets if rs.recording.endswith(f"_red{a.seeds}")})
        test_sets = load([(test, test_seed)])
        log(f"fold {test}: train {sum(len(r) for r in sets)} typed ROIs (incl. validation), test "
            f"{sum(len(r) for r in test_sets)} ({int(sum(r.labels.sum() for r in test_sets))} red)")
        for m in a.models:
            arch, init, freeze = MODELS[m]
            spec = specs[arch]
            kw = {"size": spec.crop.size} if arch.endswith("cnn2") else {"width": 16, "first_stride": 2}
            t1 = time.time()
            card = train(sets, spec, spec.crop, val, f"{tmp.name}/{m}_{test}", m, seed=a.seed, device="cpu",
                         hp={"epochs": a.epochs, "lr": a.lr if init is None else a.lr / 3},
                         build_kwargs=None if init else kw, init=Classifier.load(init) if init else None,
                         freeze_until=freeze, log=lambda s: None)
            numbers, _ = evaluate_model(Classifier.load(card), test_sets)
            numbers["train_s"] = time.time() - t1
            results[m].append(numbers)
            p = numbers["pooled"]
            log(f"  {m}: F1 {p['f1']:.3f} ROC AUC {p['roc_auc']:.3f} ({numbers['train_s']:.0f} s)")
        baseline.append(numbers["baselines"])
    print(f"\ncell types on simulated two-channel recordings ({len(SIMS)} folds by recording, red fraction "
          f"{a.fraction}, {a.seeds} training subsets + 1 validation subset per recording; {time.time() - t0:.0f} s)\n")
    hdr = ["model", "test recording", "typed ROIs (red)", "precision", "recall", "F1", "ROC AUC", "PR AUC"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))

    def rows(label, per_fold):
        for sim, n in zip(a.test_on, per_fold):
            p = n["pooled"]
            print(f"| {label} | {sim} | {p['n']} ({p['n_cell']}) | {p['precision']:.3f} | {p['recall']:.3f} | "
                  f"{p['f1']:.3f} | {p['roc_auc']:.3f} | {p['pr_auc']:.3f} |")
        mean = lambda k: np.mean([n["pooled"][k] for n in per_fold])
        print(f"| {label} | **mean of folds** | | {mean('precision'):.3f} | {mean('recall'):.3f} | "
              f"**{mean('f1'):.3f}** | **{mean('roc_auc'):.3f}** | {mean('pr_auc'):.3f} |")

    for m in a.models:
        rows(m, results[m])
    rows("Suite2p red-cell probability (redcell.npy)", [b["pipeline_red"] for b in baseline])
    rows("accept all", [b["accept_all"] for b in baseline])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(jsonable({"settings": vars(a), "results": results, "baselines": baseline}), f, indent=1)
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
