#!/usr/bin/env bash
# Create (idempotently) the virtual environment that holds the REAL Suite2p 1.1.0 for tests/test_suite2p_gui.py.
#
#   bash tests/suite2p_env.sh            # create it, or check it and do nothing if it is already fine
#   bash tests/suite2p_env.sh --force    # rebuild it from scratch
#
# Environment:
#   ROICURATE_SUITE2P_ENV     where the venv goes (default .suite2p-env, relative to the repository root)
#   ROICURATE_SUITE2P_PYTHON  interpreter used to create it (default python3; the CPU torch wheel is cp311)
#
# roicurate itself never needs suite2p: this venv is separate and only the GUI test uses it.
#
# How Suite2p is installed, and why (see tests/suite2p-constraints.txt for the pins):
#   python -m venv ENV
#   ENV/bin/python -m pip install -c tests/suite2p-constraints.txt "suite2p[gui]==1.1.0" pynwb
# * No patching, no --no-deps: a normal pip install from the package registry, with constraints.
# * torch is pinned to the local CPU wheel 2.13.0+cpu (an unpinned torch drags in ~3 GB of CUDA wheels).
# * `import suite2p` always imports cellpose.transforms (suite2p/registration/utils.py). cellpose >= 4.2.0 imports
#   torchvision there, and the only torchvision for torch 2.13 on the registry (0.28.0) is a CUDA build that fails
#   to import on CPU torch. cellpose 4.1.1 (allowed by suite2p's cellpose>=4.0.1) does not import torchvision, so the
#   constraints pin it. torchvision is still installed, as cellpose declares it, but it is never imported: the check
#   below fails if it is.
# * The [gui] extra brings PyQt6, pyqtgraph, qtpy, superqt and rastermap, which suite2p.gui needs.
# * pynwb (pinned in the constraints) lets tests/test_nwb.py run Suite2p's own save_nwb (suite2p.io.nwb).
# The check runs with a temporary HOME (`import suite2p` creates ~/.suite2p) and QT_QPA_PLATFORM=offscreen.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
constraints="$repo_root/tests/suite2p-constraints.txt"
env_dir="${ROICURATE_SUITE2P_ENV:-.suite2p-env}"
case "$env_dir" in /*) ;; *) env_dir="$repo_root/$env_dir" ;; esac
python="${ROICURATE_SUITE2P_PYTHON:-python3}"
requirement="suite2p[gui]==1.1.0"
extra_requirements=(pynwb)      # for suite2p.io.save_nwb (tests/test_nwb.py)
stamp_file="$env_dir/.roicurate-suite2p-stamp"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "suite2p_env.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

log() { echo "[suite2p_env] $*"; }

# What the environment was built from: a change to the constraints or the requirement rebuilds it.
stamp() { { echo "$requirement" "${extra_requirements[@]}"; cat "$constraints"; } | sha256sum | cut -d' ' -f1; }

# Import what the GUI test imports, headless, with a throw-away HOME. Prints versions; non-zero exit if not usable.
check_env() {
    [ -x "$env_dir/bin/python" ] || return 1
    local tmp_home rc=0
    tmp_home="$(mktemp -d)"
    HOME="$tmp_home" QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg PYTHONWARNINGS=ignore \
        "$env_dir/bin/python" - <<'EOF' || rc=$?
import sys
import torch
assert torch.__version__.startswith("2.13.0") and torch.version.cuda is None, \
    f"expected CPU torch 2.13.0, got {torch.__version__} (cuda {torch.version.cuda})"
import suite2p, cellpose
import pynwb
from suite2p.io.nwb import save_nwb  # tests/test_nwb.py writes its NWB files with it
from suite2p.gui import gui2p, io  # the GUI window and its loader (suite2p/gui/io.py load_files/load_proc)
from qtpy.QtWidgets import QApplication
import qtpy
app = QApplication([])              # proves Qt starts headless (offscreen platform plugin + system libraries)
assert suite2p.version == "1.1.0", suite2p.version
assert "torchvision" not in sys.modules, "torchvision was imported: it is a CUDA build and must stay unused"
print(f"[suite2p_env] OK: python {sys.version.split()[0]}, suite2p {suite2p.version}, cellpose {cellpose.version}, "
      f"pynwb {pynwb.__version__}, torch {torch.__version__}, {qtpy.API_NAME} {qtpy.QT_VERSION}; torchvision not imported")
EOF
    rm -rf "$tmp_home"
    return $rc
}

if [ "$force" = 0 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(stamp)" ]; then
    if check_env 2>/dev/null; then
        log "environment $env_dir is ready; nothing to do (--force rebuilds it)"
        exit 0
    fi
    log "environment $env_dir exists but does not import cleanly; rebuilding"
elif [ -d "$env_dir" ]; then
    log "environment $env_dir is missing, out of date (constraints changed) or --force given; rebuilding"
fi

start=$SECONDS
log "creating venv $env_dir with $python ($("$python" --version 2>&1))"
"$python" -m venv --clear "$env_dir"
rm -f "$stamp_file"

log "pip install -c tests/suite2p-constraints.txt \"$requirement\" ${extra_requirements[*]}  (torch pinned to 2.13.0+cpu, cellpose to 4.1.1)"
if ! PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$env_dir/bin/python" -m pip install --progress-bar off -c "$constraints" "$requirement" "${extra_requirements[@]}"; then
    log "pip install failed. torch==2.13.0+cpu must come from pip's configured find-links/index (the local CPU wheel);"
    log "this script never installs another torch. See tests/suite2p-constraints.txt."
    exit 1
fi
log "installed in $((SECONDS - start)) s; checking (the first import also compiles bytecode)"

if ! check_env; then
    log "the environment was installed but suite2p's GUI cannot be imported headless (see the error above)"
    exit 1
fi
stamp > "$stamp_file"
log "done in $((SECONDS - start)) s: $env_dir"
