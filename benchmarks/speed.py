"""Speed on this machine: crop building, inference per registered network, and `roicurate apply` end to end.

`python benchmarks/speed.py [--rois 5000] [--threads N] [--batch 256]` prints one table; peak RSS is the
process's maximum resident memory at the end of each row's measurement.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roicurate.crops import CropSpec, make_crops
from roicurate.models import Classifier
from roicurate.plugins import model_specs, sources
from roicurate.rois import RoiSet

from splits import DATA


def tiled(roiset, n):
    """``n`` ROIs made by repeating a real plane's ROIs over a larger frame (real shapes, realistic density)."""
    reps = int(np.ceil(n / len(roiset)))
    side = int(np.ceil(np.sqrt(reps)))
    Ly, Lx = roiset.shape
    ys, xs, ws = [], [], []
    for k in range(reps):
        oy, ox = (k // side) * Ly, (k % side) * Lx
        for i in range(len(roiset)):
            sl = slice(roiset.indptr[i], roiset.indptr[i + 1])
            ys.append(roiset.y[sl] + oy), xs.append(roiset.x[sl] + ox), ws.append(roiset.weight[sl])
    return RoiSet.from_pixels((side * Ly, side * Lx), ys[:n], xs[:n], ws[:n])


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timeit(fn, min_time=2.0):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rois", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    plane = sources()["suite2p"].read(DATA / "sim/s2p_sim1/suite2p/plane0")
    big = tiled(plane, a.rois)
    print(f"{a.rois} ROIs tiled from s2p_sim1/plane0; torch {torch.__version__}, {a.threads} threads, batch {a.batch}, "
          "channels-last")
    print("| what | crop | ROIs/s | peak RSS (MB) |")
    print("|---|---|---|---|")
    for spec in (CropSpec(64, binarize=0.0), CropSpec(50, binarize=0.2)):
        dt = timeit(lambda: make_crops(big, spec))
        print(f"| crop building | {spec.size}x{spec.size} mask | {a.rois / dt:,.0f} | {peak_mb():,.0f} |")
    specs = model_specs()
    # trained models first; the full-width study network last (it needs GBs for a batch of 64x64 crops)
    for name, spec in sorted(specs.items(), key=lambda kv: (not kv[1].weights, kv[0] == "resnet50")):
        if spec.weights:
            clf = Classifier.load(name, specs, batch_size=a.batch)
        else:
            crop = spec.crop or CropSpec(64 if name == "resnet50" else 50)
            kw = {"size": crop.size} if name == "cnn2" else {}
            card = {"name": name, "arch": name, "crop": crop.to_dict(), "classes": list(spec.classes),
                    "threshold": 0.5, "sha256": "-"}
            clf = Classifier(spec.build(**kw), card, spec, batch_size=a.batch if name != "resnet50" else 16)
        sub = big.subset(np.arange(min(a.rois, 512 if clf.crop.size == 64 else a.rois, 64 if name == "resnet50" else a.rois)))
        dt = timeit(lambda: clf.predict_proba(sub), min_time=3.0)
        kw = clf.card.get("build_kwargs", {})
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in kw.items() if k != 'size')})" if kw else "")
        print(f"| inference (crop + network) {label} | {clf.crop.size}x{clf.crop.size} | {len(sub) / dt:,.0f} | "
              f"{peak_mb():,.0f} |")
    end_to_end = (("suite2p-resnet50", "ROI Suite2p plane (read + crop + infer + write", write_plane, "plane0"),
                  ("caiman-cnn2", "component CaImAn file (read + crop + infer + backup + write", write_caiman,
                   "cnmf.hdf5"))
    for model, what, write, name in end_to_end:
        if model in specs:
            with tempfile.TemporaryDirectory() as tmp:
                seconds, rss = time_apply(write(Path(tmp) / name, big))
            crop = specs[model].crop.size
            print(f"| `roicurate apply` on one {a.rois}-{what}, incl. ~2 s start-up) | {crop}x{crop} | "
                  f"{a.rois / seconds:,.0f} | {rss:,.0f} |")


# Runs `roicurate apply` and reports the child's own peak memory: VmHWM is reset by exec, while ru_maxrss of a
# child would include this (large) benchmark process as it was at fork time.
_APPLY = """import sys, runpy
try:
    runpy.run_module("roicurate.cli", run_name="__main__")
finally:
    print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1], file=sys.stderr)
"""


def time_apply(path):
    """(seconds, peak RSS in MB) of `roicurate apply PATH` in a fresh process."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _APPLY, "apply", str(path)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr)
    return seconds, int(p.stderr.strip().splitlines()[-1]) / 1024


def write_caiman(path, roiset):
    """The part of a ``cnm.save()`` file `apply` reads and writes: estimates/A (CSC, Fortran pixel order), dims,
    idx_components / idx_components_bad."""
    import h5py
    import scipy.sparse as sp
    Ly, Lx = roiset.shape
    rows = roiset.y.astype(np.int64) + roiset.x.astype(np.int64) * Ly       # order="F" pixel index
    A = sp.csc_matrix((roiset.weight.astype(np.float64), (rows, roiset.roi_index)), shape=(Ly * Lx, len(roiset)))
    with h5py.File(path, "w") as f:
        g = f.create_group("estimates/A")
        for key, value in (("data", A.data), ("indices", A.indices), ("indptr", A.indptr), ("shape", A.shape)):
            g.create_dataset(key, data=np.asarray(value))
        f["estimates/dims"] = np.array([Ly, Lx])
        f["estimates/idx_components"] = np.arange(len(roiset))
        f["estimates/idx_components_bad"] = np.zeros(0, np.int64)
    return path


def write_plane(folder, roiset):
    """A Suite2p plane folder (stat.npy, iscell.npy, ops.npy) holding ``roiset``: what `apply` reads."""
    folder.mkdir(parents=True)
    stat = np.empty(len(roiset), object)
    for i in range(len(roiset)):
        sl = slice(roiset.indptr[i], roiset.indptr[i + 1])
        stat[i] = {"ypix": roiset.y[sl].astype(np.int64), "xpix": roiset.x[sl].astype(np.int64),
                   "lam": roiset.weight[sl], "npix": int(roiset.npix[i])}
    np.save(folder / "stat.npy", stat, allow_pickle=True)
    np.save(folder / "iscell.npy", np.ones((len(roiset), 2)))
    Ly, Lx = roiset.shape
    np.save(folder / "ops.npy", {"Ly": Ly, "Lx": Lx, "yrange": [0, Ly], "xrange": [0, Lx]}, allow_pickle=True)
    return folder

if __name__ == "__main__":
    main()
