"""Speed on this machine, for every registered model with trained weights: crop building, inference, `roicurate
apply` end to end on an N-ROI and a 50,000-ROI input, and how much of the work is reading, cropping and writing.

`python benchmarks/speed.py [--rois 5000] [--big 50000] [--frames 0] [--threads N] [--batch 64] [--repeat 3]
[--models a,b]`

Inputs: real Suite2p ROI shapes (s2p_sim1/plane0) tiled over a larger frame, written as a Suite2p plane folder or as
a CaImAn file holding estimates/A (plus, with --frames T, the traces C, YrA, S, R and the background b, f of T
frames that cnm.save() also writes). "x plain" is the speed-up over the plain fp32 network
(``Classifier(fast=False)``) measured in the same run; the other rows run what `apply` runs. Times are the best of
--repeat runs, taken in turns with the plain network's (a shared machine's load then hits both alike). Peak RSS:
this process's maximum so far for in-process rows (it only grows), the child's own peak for `roicurate apply` rows.
"""
import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roicurate.crops import make_crops
from roicurate.curation import curate
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
    shape = (side * Ly, side * Lx)
    # a max projection (Suite2p keeps one in every run): models with an image channel crop and resample it too
    images = {"max": np.random.default_rng(0).random(shape, np.float32)}
    return RoiSet.from_pixels(shape, ys[:n], xs[:n], ws[:n], images=images)


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best(repeat, *fns):
    """The shortest of ``repeat`` timed runs of each function, in seconds; the functions run in turns, so that a
    load that comes and goes on a shared machine slows them alike."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def build_crops(roiset, clf):
    """The crops `predict_proba` builds, batch by batch in its order (it keeps one batch in memory)."""
    order = np.argsort(roiset.npix, kind="stable")
    for start in range(0, len(roiset), clf.batch_size):
        make_crops(roiset, clf.crop, order[start:start + clf.batch_size])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rois", type=int, default=5000)
    ap.add_argument("--big", type=int, default=50000, help="ROIs of the large input (0: skip those rows)")
    ap.add_argument("--frames", type=int, default=0, help="CaImAn files: also write traces of this many frames")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", help="comma-separated model names (default: every model with trained weights)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    plane = sources()["suite2p"].read(DATA / "sim/s2p_sim1/suite2p/plane0")
    rois = tiled(plane, a.rois)
    inputs = [rois] + ([tiled(plane, a.big)] if a.big else [])
    specs = model_specs()
    trained = a.models.split(",") if a.models else sorted(name for name, spec in specs.items()
                                                             if spec.weights and spec.crop is not None)   # classifiers
    frames = f" + traces of {a.frames} frames" if a.frames else ""
    print(f"ROIs tiled from s2p_sim1/plane0; torch {torch.__version__}, {a.threads} threads, batch {a.batch}; "
          f"CaImAn files hold estimates/A{frames}\n")
    print("| model | what | ROIs/s | x plain | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in trained:
            spec = specs[name]
            clf = Classifier.load(name, specs, batch_size=a.batch)
            plain = Classifier.load(name, specs, batch_size=a.batch, fast=False)

            def row(what, n, seconds, base_seconds=None, rss=None):
                ratio = "" if base_seconds is None else f"{base_seconds / seconds:.2f}"
                print(f"| {name} | {what} | {n / seconds:,.0f} | {ratio} | {rss or peak_mb():,.0f} |")

            [crops] = best(a.repeat, lambda: build_crops(rois, clf))
            row(f"crop building, {clf.crop.size}x{clf.crop.size}, batches of {a.batch}", a.rois, crops)
            base, fast = best(a.repeat, lambda: plain.predict_proba(rois), lambda: clf.predict_proba(rois))
            row("inference (crops + network), plain fp32", a.rois, base, base)
            form = getattr(clf.spec.inference, "__name__", "plain")
            row(f"inference (crops + network), as `apply` runs it ({form})", a.rois, fast, base)
            unit = "Suite2p plane" if spec.pipeline == "suite2p" else "CaImAn file"
            for roiset in inputs:
                path = WRITERS[spec.pipeline](tmp / f"{name}-{len(roiset)}", roiset, a.frames)
                runs = {"plain": [], "fast": []}
                for _ in range(a.repeat):          # in turns, as in best()
                    for mode, r in runs.items():
                        r.append(time_apply(path, tmp / "run", name, mode))
                (plain_s, plain_rss), (fast_s, fast_rss) = ((min(t for t, _ in r), max(m for _, m in r))
                                                            for r in runs.values())
                what = f"`roicurate apply`, one {len(roiset):,}-ROI {unit}"
                row(f"{what}, plain fp32 network", len(roiset), plain_s, plain_s, plain_rss)
                row(what, len(roiset), fast_s, plain_s, fast_rss)
                if roiset is rois:
                    read, write = io_seconds(spec.pipeline, path, tmp / "run", clf, a.repeat)
                    shares.append((name, unit, read, crops, write, fast - crops))
    print(f"\nReading, crop building and writing against the network, {a.rois:,} ROIs (in process, best of "
          f"{a.repeat}; network = inference as `apply` runs it minus its crop building):\n")
    print("| model | input | read (s) | crops (s) | write (s) | network (s) | (read + crops + write) / network |")
    print("|---|---|---|---|---|---|---|")
    for name, unit, read, crops, write, network in shares:
        print(f"| {name} | one {a.rois:,}-ROI {unit} | {read:.3f} | {crops:.3f} | {write:.3f} | {network:.3f} | "
              f"{(read + crops + write) / network:.0%} |")


def fresh_copy(src, dst):
    """A pristine copy of the input (``apply`` writes into it and keeps a backup beside it)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir()
    if src.is_dir():
        return Path(shutil.copytree(src, dst / src.name))
    return Path(shutil.copyfile(src, dst / src.name))


def io_seconds(pipeline, path, work, clf, repeat):
    """(read, write) seconds of the pipeline's source on ``path``, in process."""
    source = sources()[pipeline]
    [read] = best(repeat, lambda: source.read(path))
    rs = source.read(path)
    cur = curate(rs, clf)
    writes = []
    for _ in range(repeat):
        p = fresh_copy(path, work)
        t0 = time.perf_counter()
        source.write(p, rs, cur)
        source.finish_batch([p])
        writes.append(time.perf_counter() - t0)
    return read, min(writes)


# Runs `roicurate apply` and reports the child's own peak memory: VmHWM is reset by exec, while ru_maxrss of a
# child would include this (large) benchmark process as it was at fork time. "plain" runs the plain fp32 network.
_APPLY = """import sys, runpy
if sys.argv.pop(1) == "plain":
    from functools import partialmethod
    from roicurate.models import Classifier
    Classifier.__init__ = partialmethod(Classifier.__init__, fast=False)
try:
    runpy.run_module("roicurate.cli", run_name="__main__")
finally:
    print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1], file=sys.stderr)
"""


def time_apply(path, work, model, mode):
    """(seconds, peak RSS in MB) of `roicurate apply --model MODEL` on a fresh copy of ``path``, in a new process
    (Python and torch start-up included)."""
    path = fresh_copy(path, work)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _APPLY, mode, "apply", str(path), "--model", model],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(p.stderr)
    return seconds, int(p.stderr.strip().splitlines()[-1]) / 1024


def write_caiman(path, roiset, frames=0):
    """A ``cnm.save()``-style file: estimates/A (CSC, Fortran pixel order), dims, idx_components /
    idx_components_bad, and with ``frames`` the traces C, YrA, S, R (K x T) and the background b, f (2 components)."""
    import h5py
    import scipy.sparse as sp
    path = path.with_suffix(".hdf5")
    Ly, Lx = roiset.shape
    K = len(roiset)
    rows = roiset.y.astype(np.int64) + roiset.x.astype(np.int64) * Ly       # order="F" pixel index
    A = sp.csc_matrix((roiset.weight.astype(np.float64), (rows, roiset.roi_index)), shape=(Ly * Lx, K))
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        g = f.create_group("estimates/A")
        for key, value in (("data", A.data), ("indices", A.indices), ("indptr", A.indptr), ("shape", A.shape)):
            g.create_dataset(key, data=np.asarray(value))
        f["estimates/dims"] = np.array([Ly, Lx])
        f["estimates/idx_components"] = np.arange(K)
        f["estimates/idx_components_bad"] = np.zeros(0, np.int64)
        if frames:
            for key in ("C", "YrA", "S", "R"):
                d = f.create_dataset(f"estimates/{key}", (K, frames), np.float64)
                for i in range(0, K, 1000):
                    d[i:i + 1000] = rng.standard_normal((min(1000, K - i), frames))
            f["estimates/b"] = rng.random((Ly * Lx, 2))
            f["estimates/f"] = rng.random((2, frames))
    return path


def write_plane(folder, roiset, frames=0):
    """A Suite2p plane folder (stat.npy, iscell.npy, ops.npy) holding ``roiset``: what `apply` reads."""
    folder = folder / "plane0"
    folder.mkdir(parents=True)
    stat = np.empty(len(roiset), object)
    for i in range(len(roiset)):
        sl = slice(roiset.indptr[i], roiset.indptr[i + 1])
        stat[i] = {"ypix": roiset.y[sl].astype(np.int64), "xpix": roiset.x[sl].astype(np.int64),
                   "lam": roiset.weight[sl], "npix": int(roiset.npix[i])}
    np.save(folder / "stat.npy", stat, allow_pickle=True)
    np.save(folder / "iscell.npy", np.ones((len(roiset), 2)))
    Ly, Lx = roiset.shape
    np.save(folder / "ops.npy", {"Ly": Ly, "Lx": Lx, "yrange": [0, Ly], "xrange": [0, Lx],
                                 "max_proj": roiset.images["max"]}, allow_pickle=True)
    return folder


WRITERS = {"suite2p": write_plane, "caiman": write_caiman}

if __name__ == "__main__":
    main()
