"""Retrain a bundled model exactly as shipped: `python benchmarks/train_bundled.py suite2p|caiman [--epochs N]`.

Runs benchmarks/lolo.py with the model's recipe: one model per lab on the other labs for the leave-one-lab-out table
and the operating point (calibration and threshold from those out-of-lab scores), then the shipped model on every
labelled recording of the shared datasets, saved into roicurate_plugins/weights/."""
import argparse
import subprocess
import sys
from pathlib import Path

IMAGES = ["--channels", "mask,max", "--image-dropout", "0.3"]   # the max projection where a recording has one
RECIPES = {
    "suite2p": dict(name="suite2p-resnet50", args=["--arch", "resnet50", "--build", "width=16", "--build",
                                                   "first_stride=2", "--shape-prior", *IMAGES], epochs=6),
    "caiman": dict(name="caiman-cnn2", args=["--arch", "cnn2", *IMAGES], epochs=8),
}

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("pipeline", choices=RECIPES)
ap.add_argument("--epochs", type=int)
ap.add_argument("--out", help="default: roicurate_plugins/weights/")
a = ap.parse_args()
r = RECIPES[a.pipeline]
cmd = [sys.executable, str(Path(__file__).with_name("lolo.py")), a.pipeline, *r["args"], "--scale", "reference",
       "--epochs", str(a.epochs or r["epochs"]), "--seed", "0", "--bundle", r["name"]] + (["--out", a.out] if a.out else [])
print(" ".join(cmd), flush=True)
sys.exit(subprocess.call(cmd))
