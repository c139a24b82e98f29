#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel (not editable) into a fresh venv outside the checkout, and use it
# from another folder as a lab would: --version, models, python -m, the Python API, the README demo.
#   bash .ci/check_wheel.sh        (from anywhere; needs python3 and the package registry for torch and the deps)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say() { echo "[check_wheel] $*"; }

python3 -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q build
"$work/build-env/bin/python" -m build -q --sdist --wheel --outdir "$work/dist" "$repo" >/dev/null
sdist=("$work"/dist/roicurate-*.tar.gz); wheel=("$work"/dist/roicurate-*.whl)
say "built $(basename "${sdist[0]}") and $(basename "${wheel[0]}")"
tar -tzf "${sdist[0]}" > "$work/sdist.txt"
for f in LICENSE MODEL_LICENSE pyproject.toml roicurate/cli/apply.py roicurate_plugins/weights/suite2p-resnet50.safetensors; do
    grep -q "^roicurate-[^/]*/$f\$" "$work/sdist.txt" || { echo "sdist lacks $f" >&2; exit 1; }
done

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0 "${wheel[0]}"
mkdir "$work/elsewhere" && cd "$work/elsewhere"
export PATH="$work/venv/bin:$PATH" ROICURATE_LOAD_PLUGINS=""
say "$(roicurate --version)"
[ "$(python -m roicurate --version)" = "$(roicurate --version)" ]
roicurate models >/dev/null
python - "$repo" <<'PY'
import sys
from pathlib import Path
import roicurate
from roicurate.caiman import curate  # noqa: F401  (the CaImAn script entry point)
assert Path(roicurate.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), roicurate.__file__
print("[check_wheel] roicurate imported from", Path(roicurate.__file__).parent)
PY
cp -r "$repo/examples/s2p_sim2" "$work/demo"
roicurate apply "$work/demo/suite2p"                       # the README demo, from the installed wheel
cp -r "$repo/examples/s2p_sim2" "$work/dry"
python - "$work" <<'PY'
import hashlib, sys
from pathlib import Path
import numpy as np
import roicurate
work = Path(sys.argv[1])
def tree(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}
for plane in ("plane0", "plane1"):
    written = np.load(work / "demo" / "suite2p" / plane / "iscell.npy")
    p = roicurate.predict(work / "dry" / "suite2p" / plane)
    assert p.shape == (len(written),) and np.array_equal(p, written[:, 1]), plane
before = tree(work / "dry")
results = roicurate.apply(work / "dry" / "suite2p", dry_run=True)
assert len(results) == 2 and tree(work / "dry") == before
print("[check_wheel] predict == what apply wrote, on", sum(len(np.load(work / "demo" / "suite2p" / p / "iscell.npy")) for p in ("plane0", "plane1")), "ROIs; apply(dry_run=True) wrote nothing")
PY
say "ok"
