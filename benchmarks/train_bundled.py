"""Retrain a bundled model exactly as shipped: `python benchmarks/train_bundled.py suite2p|caiman [--epochs N]`.
Runs `roicurate train` on the train + validation recordings of benchmarks/splits.py."""
import argparse
import subprocess
import sys
from pathlib import Path

from splits import paths, val_names

RECIPES = {
    "suite2p": dict(name="suite2p-resnet50", arch="resnet50", build=["width=16", "first_stride=2"], epochs=20,
                    target_precision=0.9, flags=["--shape-prior"]),
    "caiman": dict(name="caiman-cnn2", arch="cnn2", build=[], epochs=30, target_precision=0.9),
}

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("pipeline", choices=RECIPES)
ap.add_argument("--epochs", type=int)
ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "roicurate_plugins" / "weights"))
a = ap.parse_args()
r = RECIPES[a.pipeline]
cmd = [sys.executable, "-m", "roicurate.cli", "train", *paths(a.pipeline, "train", "val"), "--pipeline", a.pipeline,
       "--arch", r["arch"], "--val", val_names(a.pipeline), "--epochs", str(a.epochs or r["epochs"]),
       "--out", a.out, "--name", r["name"], "--target-precision", str(r["target_precision"]), "--seed", "0", *r.get("flags", [])]
for b in r["build"]:
    cmd += ["--build", b]
print(" ".join(cmd), flush=True)
sys.exit(subprocess.call(cmd))
