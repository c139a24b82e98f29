"""Does the U-Net probability map help the classifier as an extra crop channel? The same network (``cnn2``) trained
on the same ROIs with the crop channels ("mask",), ("mask", "unet") and ("mask", "mean"), several seeds each,
and measured on the held-out simulated recording of each pipeline.

    OMP_NUM_THREADS=1 python benchmarks/unet_channel.py [--pipelines caiman,suite2p] [--seeds 0,1,2] [--epochs 30]

Simulations only: the real human-labelled sets (ABO, Neurofinder) carry masks but no images, so there is no mean
image to run the U-Net on. Split by recording exactly as benchmarks/splits.py splits the simulations, which is
also the U-Net's split (benchmarks/train_unet.py): train on sim1, early stopping / calibration / threshold on
sim2, test on sim3, which neither the classifier nor the U-Net ever saw. On sim1 the map is the U-Net's own
training image (in-sample, cleaner than on new recordings): the classifier learns from a map a little better
than the one it is tested on, as it would on a lab's own recordings.

Variants (CropSpec ``image_norm``): the map is a probability, kept as it is ("none"); the mean image is standardised
per window ("zscore", as image channels are by default); ``unet-z`` also standardises the map.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splits import SPLITS, path  # noqa: E402

from roicurate.crops import CropSpec  # noqa: E402
from roicurate.evaluate import evaluate_model  # noqa: E402
from roicurate.models import Classifier  # noqa: E402
from roicurate.plugins import model_specs, sources  # noqa: E402
from roicurate.training.data import load_labelled  # noqa: E402
from roicurate.training.train import train  # noqa: E402

VARIANTS = {"mask": (("mask",), "zscore"), "mask+unet": (("mask", "unet"), "none"),
            "mask+unet-z": (("mask", "unet"), "zscore"), "mask+mean": (("mask", "mean"), "zscore")}


def sims(pipeline, part):
    return [r for r in SPLITS[pipeline][part] if r.startswith("sim/")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipelines", default="caiman,suite2p")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="where the models go (default: a temporary folder)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out or tempfile.mkdtemp(prefix="unet_channel_"))
    seeds = [int(s) for s in a.seeds.split(",")]
    hp = {"epochs": a.epochs, "patience": a.patience, "batch_size": a.batch_size}
    rows = []
    for pipeline in a.pipelines.split(","):
        crop0 = sources()[pipeline].crop
        parts = {p: load_labelled([str(path(r, pipeline)) for r in sims(pipeline, p)], pipeline,
                 use_pipeline_labels=False) for p in ("train", "val", "test")}
        t0 = time.perf_counter()
        from roicurate.crops import summary_image
        for rs in (r for p in parts.values() for r in p):
            summary_image(rs, "unet")                      # once per recording, shared by every variant and seed
        unet_s = time.perf_counter() - t0
        sets = parts["train"] + parts["val"]
        val = [r.split("/")[-1] for r in sims(pipeline, "val")]
        n = {p: (sum(len(r) for r in v), int(sum((r.labels > 0).sum() for r in v))) for p, v in parts.items()}
        print(f"{pipeline}: train {sims(pipeline, 'train')} {n['train']}, val {val} {n['val']}, test "
              f"{sims(pipeline, 'test')} {n['test']} (ROIs, cells); U-Net maps {unet_s:.1f} s", flush=True)
        for variant in a.variants.split(","):
            channels, norm = VARIANTS[variant]
            crop = CropSpec(crop0.size, channels, binarize=crop0.binarize, image_norm=norm)
            got = []
            for seed in seeds:
                t0 = time.perf_counter()
                card = train(sets, model_specs()["cnn2"], crop, val, out / pipeline, f"{variant}-s{seed}", hp=hp,
                             seed=seed, device="cpu", build_kwargs={"size": crop.size}, log=lambda s: None)
                numbers, _ = evaluate_model(Classifier.load(card), parts["test"], baselines=False)
                p = numbers["pooled"]
                got.append((p["roc_auc"], p["pr_auc"], p["f1"], p["fp"], p["fn"]))
                print(f"  {variant:<12} seed {seed}: ROC AUC {p['roc_auc']:.3f} PR AUC {p['pr_auc']:.3f} "
                      f"F1 {p['f1']:.3f} FP {p['fp']} FN {p['fn']} ({time.perf_counter() - t0:.0f} s)", flush=True)
            rows.append((pipeline, variant, channels, norm, np.array(got)))
    print("\n| pipeline (test recording) | crop channels | window norm. | ROC AUC | PR AUC | F1 | errors (FP + FN) "
          "| F1 per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for pipeline, variant, channels, norm, g in rows:
        m, s = g.mean(0), g.std(0)
        cell = lambda k: f"{m[k]:.3f} ± {s[k]:.3f}"
        print(f"| {pipeline} ({sims(pipeline, 'test')[0].split('/')[-1]}) | {', '.join(channels)} | "
              f"{norm if len(channels) > 1 else '–'} | {cell(0)} | {cell(1)} | {cell(2)} | "
              f"{m[3]:.1f} + {m[4]:.1f} | "
              f"{' / '.join(f'{v:.3f}' for v in g[:, 2])} |")
    print(f"\nmean ± standard deviation over seeds {a.seeds} (errors: mean false positives + false negatives at the "
          f"model's threshold); cnn2, {a.epochs} epochs at most, early stopping after "
          f"{a.patience}, batch {a.batch_size}, Platt calibration and max-F1 threshold on validation; models in {out}")


if __name__ == "__main__":
    main()
