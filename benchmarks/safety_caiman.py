"""What the data-safety protocol costs on a big CaImAn file: the backup copy, a first apply, a re-run (which
verifies the backup by its sha256 and compares the file with it by a block-wise content hash, never loading a
whole dataset), and a revert. Each step runs in its own process, so its peak RSS is its own.

`python benchmarks/safety_caiman.py [--mb 500] [--dir /tmp]`

The file is a real cnm.save() output (datasets/sim/caiman_sim1, 205 components) whose estimates/C is replaced by
205 x T random traces, T chosen to make the file --mb MB. The verdict is a fixed random one (no model), so the
numbers are the cost of reading, checking and writing alone. The file is deleted at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "datasets" / "sim/caiman_sim1/caiman/cnmf_refit_evaluated.hdf5"

STEP = r"""
import json, resource, sys, time
import numpy as np
from roicurate.curation import Curation
from roicurate.safeio import clone_or_copy
from roicurate_plugins.caiman import CaimanSource
op, path = sys.argv[1], sys.argv[2]
src = CaimanSource()
t = time.perf_counter()
info = {}
if op == "copy":
    info["how"] = clone_or_copy(path, path + ".copy")
elif op == "read":
    src.read(path)
elif op in ("apply", "rerun"):
    rs = src.read(path)
    t_read = time.perf_counter() - t
    p = np.random.default_rng(op == "rerun").random(len(rs))
    cur = Curation(probabilities=np.stack([1 - p, p], 1), accepted=p >= 0.5, threshold=0.5,
                   classes=("not_cell", "cell"), positive=1, model={"name": "bench", "sha256": "0"})
    src.check_writable(path)
    src.write(path, rs, cur)
    info["read_s"] = round(t_read, 2)
else:
    src.revert(path)
info["seconds"] = round(time.perf_counter() - t, 2)
info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(info))
"""


def make_file(path, mb):
    shutil.copyfile(SOURCE, path)
    with h5py.File(path, "r+") as f:
        est = f["estimates"]
        K = est["C"].shape[0]
        T = int(mb * 1e6 / (8 * K))
        del est["C"]
        C = est.create_dataset("C", (K, T), np.float64)
        rng = np.random.default_rng(0)
        for i in range(0, K, 16):
            C[i:i + 16] = rng.random((min(16, K - i), T))
    return os.path.getsize(path)


def step(op, path):
    r = subprocess.run([sys.executable, "-c", STEP, op, str(path)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=500)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="roicurate-safety-", dir=args.dir))
    try:
        path = folder / "big.hdf5"
        size = make_file(path, args.mb)
        print(f"file: {size / 1e6:.0f} MB ({path})")
        rows = [("backup copy (clone_or_copy)", step("copy", path))]
        os.unlink(str(path) + ".copy")
        rows.append(("read alone", step("read", path)))
        rows.append(("first apply (read + checks + backup + write)", step("apply", path)))
        rows.append(("re-run apply (backup verified, content hashed)", step("rerun", path)))
        rows.append(("revert (backup verified, copied, sha256 checked)", step("revert", path)))
        print(f"| step | time (s) | peak RSS (MB) | note |\n|---|---|---|---|")
        for name, info in rows:
            note = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("seconds", "peak_rss_mb"))
            print(f"| {name} | {info['seconds']} | {info['peak_rss_mb']} | {note} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
