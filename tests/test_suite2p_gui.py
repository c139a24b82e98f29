"""The iscell.npy that roicurate writes, read by the REAL Suite2p 1.1.0 GUI loading code, headless.

roicurate never needs suite2p, so Suite2p lives in its own venv (``bash tests/suite2p_env.sh`` creates it at
``${ROICURATE_SUITE2P_ENV:-.suite2p-env}``). Each check runs a small script INSIDE that venv (``GUI_SCRIPT``), with
QT_QPA_PLATFORM=offscreen, MPLBACKEND=Agg and a temporary HOME, and reads back JSON of what the GUI shows.

The loader call, on ``<plane>/stat.npy`` (``gui2p.MainWindow(statfile=...)`` is what ``suite2p.gui.run`` builds):

1. ``suite2p.gui.io.load_files(stat_path)``: Suite2p's file reader. Returns ``(stat, ops, F, Fneu, spks, iscell,
   probcell, ...)`` with ``iscell = np.load(iscell.npy)[:, 0].astype(bool)`` and ``probcell = [:, 1]``.
2. ``suite2p.gui.gui2p.MainWindow(statfile=stat_path)``: the real main window, offscreen. Its constructor runs
   ``io.load_proc`` -> ``load_files`` -> ``load_to_GUI`` (masks, colours, classifier colour bar, traces), exactly as
   when a user opens stat.npy. Nothing is faked except ``io.load_again`` (the modal "choose another?" box, which would
   block a headless run): it raises instead.

Fields checked: ``window.loaded``, ``window.iscell`` (the cell / not-cell split), ``window.probcell`` (the classifier
probability the GUI colours by), the "cells" / "not cells" counts in ``lcell0`` / ``lcell1``, the number of ROIs, what
the loader printed (e.g. "no manual labels found (iscell.npy)"), and that loading did not change any file.

Set ROICURATE_REQUIRE_SUITE2P=1 (CI) to turn the "venv missing" skip into a failure.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.suite2p_gui

REPO = Path(__file__).resolve().parents[1]
SUITE2P_ENV = Path(os.environ.get("ROICURATE_SUITE2P_ENV", ".suite2p-env"))
if not SUITE2P_ENV.is_absolute():
    SUITE2P_ENV = REPO / SUITE2P_ENV
SUITE2P_PYTHON = SUITE2P_ENV / "bin" / "python"
PLANE = REPO / "examples" / "s2p_sim2" / "suite2p" / "plane0"   # the bundled Suite2p 1.1.0 output, 34 ROIs

# Runs inside the suite2p venv: python - OUT_JSON PLANE_DIR [PLANE_DIR ...]
GUI_SCRIPT = r'''
import contextlib, io as _io, json, os, sys, traceback
out_path, planes = sys.argv[1], sys.argv[2:]
import numpy as np
from qtpy.QtWidgets import QApplication
app = QApplication.instance() or QApplication(["roicurate-suite2p-gui-test"])
import suite2p
from suite2p.gui import gui2p, io as gui_io

def no_dialog(parent, text):          # io.load_again opens a modal QMessageBox: never block a headless run
    raise RuntimeError("the GUI would ask 'choose another?': " + text)
gui_io.load_again = no_dialog

def error(e):
    return {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}

def arr(a):
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.tolist()}

results = []
for plane in planes:
    stat_path = os.path.join(plane, "stat.npy")
    r = {"plane": plane}
    buf = _io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            out = gui_io.load_files(stat_path)
            if out is None:
                r["load_files"] = {"returned_none": True}
            else:
                r["load_files"] = {"n_rois": len(out[0]), "iscell": arr(out[5]), "probcell": arr(out[6]),
                                   "redcell": arr(out[7]), "probredcell": arr(out[8]), "hasred": bool(out[9])}
        except Exception as e:
            r["load_files"] = {"error": error(e)}
    r["load_files_stdout"] = buf.getvalue()
    buf = _io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            win = gui2p.MainWindow(statfile=stat_path)
            r["gui"] = {"loaded": bool(win.loaded), "n_rois": len(win.stat), "iscell": arr(win.iscell),
                        "probcell": arr(win.probcell), "cells_label": win.lcell0.text(),
                        "noncells_label": win.lcell1.text(), "hasred": bool(win.hasred),
                        "redcell": arr(win.redcell), "probredcell": arr(win.probredcell)}
            win.close()
            win.deleteLater()
        except Exception as e:
            r["gui"] = {"error": error(e)}
    r["gui_stdout"] = buf.getvalue()
    results.append(r)
with open(out_path, "w") as f:
    json.dump({"suite2p_version": suite2p.version, "python": sys.executable, "results": results}, f)
'''


def _unavailable(msg):
    if os.environ.get("ROICURATE_REQUIRE_SUITE2P"):
        pytest.fail(msg + " (ROICURATE_REQUIRE_SUITE2P is set)")
    pytest.skip(msg)


def run_gui_loaders(plane_dirs, timeout=600):
    """Load each plane folder in the real Suite2p GUI (one subprocess in the suite2p venv); one dict per folder.

    Each dict: ``load_files`` ({n_rois, iscell, probcell, redcell, probredcell, hasred} or {error}), ``gui``
    ({loaded, n_rois, iscell, probcell, cells_label, noncells_label, hasred, redcell, probredcell} or {error}),
    ``load_files_stdout``, ``gui_stdout``. Arrays are {dtype, shape, values}.
    """
    if not SUITE2P_PYTHON.exists():
        _unavailable(f"Suite2p GUI venv not found at {SUITE2P_ENV}; create it with: bash tests/suite2p_env.sh")
    with tempfile.TemporaryDirectory(prefix="s2p-gui-home-") as home:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        env.update(HOME=home, QT_QPA_PLATFORM="offscreen", MPLBACKEND="Agg", PYTHONNOUSERSITE="1",
                   MPLCONFIGDIR=os.path.join(home, "mpl"), XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   XDG_CACHE_HOME=os.path.join(home, ".cache"), XDG_RUNTIME_DIR=home)
        out = Path(home) / "gui.json"
        proc = subprocess.run([str(SUITE2P_PYTHON), "-", str(out), *map(str, plane_dirs)], input=GUI_SCRIPT,
                              text=True, capture_output=True, env=env, cwd=home, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            pytest.fail(f"Suite2p GUI script failed (rc {proc.returncode})\n--- stdout\n{proc.stdout[-4000:]}"
                        f"\n--- stderr\n{proc.stderr[-8000:]}")
        data = json.loads(out.read_text())
    assert data["suite2p_version"] == "1.1.0", data["suite2p_version"]
    return data["results"]


def run_gui_loader(plane_dir):
    """What the real Suite2p 1.1.0 GUI shows for one plane folder (see run_gui_loaders)."""
    return run_gui_loaders([plane_dir])[0]


def gui_problems(result, iscell_file):
    """Ways the GUI's view differs from the (N, 2) [label, probability] array in ``iscell_file``; [] if none."""
    want = np.asarray(iscell_file)
    want_cell, want_prob = want[:, 0].astype(bool), want[:, 1].astype(np.float64)
    problems = []
    for stage in ("load_files", "gui"):
        got = result[stage]
        if "error" in got:
            problems.append(f"{stage} raised {got['error']['type']}: {got['error']['message']}")
            continue
        if got.get("returned_none"):
            problems.append(f"{stage} returned None")
            continue
        cell, prob = np.array(got["iscell"]["values"]), np.array(got["probcell"]["values"])
        if got["n_rois"] != len(want):
            problems.append(f"{stage}: {got['n_rois']} ROIs, file has {len(want)} rows")
        if cell.shape != want_cell.shape or cell.dtype != bool or not np.array_equal(cell, want_cell):
            problems.append(f"{stage}: iscell {got['iscell']['dtype']}{got['iscell']['shape']} != file column 0")
        if prob.shape != want_prob.shape or prob.dtype.kind != "f" or not np.array_equal(prob, want_prob):
            problems.append(f"{stage}: probcell {got['probcell']['dtype']}{got['probcell']['shape']} != file column 1")
    gui = result["gui"]
    if "error" not in gui:
        if not gui["loaded"]:
            problems.append("gui: window.loaded is False")
        if (gui["cells_label"], gui["noncells_label"]) != (str(want_cell.sum()), str(len(want) - want_cell.sum())):
            problems.append(f"gui: counts {gui['cells_label']}/{gui['noncells_label']} != file")
    if "no manual labels" in result["load_files_stdout"] + result["gui_stdout"]:
        problems.append("the loader ignored iscell.npy ('no manual labels found')")
    return problems


def roicurate_apply(plane_dir):
    """The real thing: `roicurate apply` with the bundled Suite2p model writes iscell.npy."""
    subprocess.run([sys.executable, "-m", "roicurate.cli", "apply", str(plane_dir)], check=True, capture_output=True)


def copy_plane(dst):
    """Writable copy of the bundled example's plane0 (a real Suite2p 1.1.0 output; the repository's copy stays as
    it is)."""
    shutil.copytree(PLANE, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if p.is_dir() else 0))
    return dst


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


# The wrong writers the GUI must reject or misread (FACTS-suite2p.md §E): proves the checks above can fail.
def _bool(a):
    return a.astype(bool)


def _one_d(a):
    return a[:, 0].copy()


def _short(a):
    return a[:-1].copy()


def _object(a):
    return a.astype(object)


BAD_WRITERS = {"bool": _bool, "1d": _one_d, "short": _short, "object": _object}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every plane variant, copied and written, then loaded by the GUI in ONE suite2p subprocess (about 10 s)."""
    if not SUITE2P_PYTHON.exists():
        _unavailable(f"Suite2p GUI venv not found at {SUITE2P_ENV}; create it with: bash tests/suite2p_env.sh")
    base = tmp_path_factory.mktemp("s2p_gui")
    planes = {"untouched": copy_plane(base / "untouched"), "roicurate": copy_plane(base / "roicurate")}
    roicurate_apply(planes["roicurate"])
    good = np.load(planes["roicurate"] / "iscell.npy")
    for name, writer in BAD_WRITERS.items():
        planes[name] = copy_plane(base / name)
        np.save(planes[name] / "iscell.npy", writer(good))   # np.save pickles the object array (allow_pickle=True)
    files = {name: np.load(p / "iscell.npy", allow_pickle=True) for name, p in planes.items()}
    before = {name: file_hashes(p) for name, p in planes.items()}
    results = dict(zip(planes, run_gui_loaders(list(planes.values()))))
    after = {name: file_hashes(p) for name, p in planes.items()}
    return {"planes": planes, "files": files, "results": results, "before": before, "after": after}


def test_untouched_suite2p_output_loads_as_written(loaded):
    """Sanity: the GUI shows Suite2p's own iscell.npy exactly (labels, probabilities, counts)."""
    original = np.load(PLANE / "iscell.npy")
    assert original.dtype == np.float64 and original.shape == (34, 2)
    r = loaded["results"]["untouched"]
    assert gui_problems(r, original) == []
    assert r["gui"]["cells_label"] == str(int(original[:, 0].sum()))
    assert loaded["after"]["untouched"] == loaded["before"]["untouched"], "loading changed a file"


def test_roicurate_iscell_loads_as_written(loaded):
    """roicurate's float64 (N, 2) [accepted, probability] is what the GUI shows: its labels, its probabilities."""
    written = loaded["files"]["roicurate"]
    original = np.load(PLANE / "iscell.npy")
    assert written.dtype == np.float64 and written.shape == original.shape
    assert not np.array_equal(written, original), "the rewritten iscell.npy equals Suite2p's: the test proves nothing"
    r = loaded["results"]["roicurate"]
    assert gui_problems(r, written) == []
    gui_cell = np.array(r["gui"]["iscell"]["values"])
    gui_prob = np.array(r["gui"]["probcell"]["values"])
    assert np.array_equal(gui_cell, written[:, 0] == 1) and np.array_equal(gui_prob, written[:, 1])
    assert r["gui"]["iscell"]["dtype"] == "bool" and r["gui"]["probcell"]["dtype"] == "float64"
    # the GUI shows roicurate's labels, not Suite2p's (the model disagrees with Suite2p's classifier on some ROIs)
    assert (gui_cell != original[:, 0].astype(bool)).any()
    backup = loaded["planes"]["roicurate"] / "iscell_suite2p.npy"
    assert backup.read_bytes() == (PLANE / "iscell.npy").read_bytes(), "Suite2p's own iscell.npy was not kept"
    assert loaded["after"]["roicurate"] == loaded["before"]["roicurate"], "loading changed a file"


@pytest.mark.parametrize("variant", sorted(BAD_WRITERS))
def test_wrong_iscell_formats_are_caught(loaded, variant):
    """A wrong writer makes the same checks fail, with the GUI behaviour FACTS-suite2p.md §E records."""
    r = loaded["results"][variant]
    good = loaded["files"]["roicurate"]
    assert gui_problems(r, good) != []
    gui = r["gui"]
    if variant == "bool":       # loads, then the classifier colour bar does arithmetic on a bool probcell
        assert r["load_files"]["probcell"]["dtype"] == "bool"
        assert gui["error"]["type"] == "TypeError" and "class_masks" in gui["error"]["traceback"]
    elif variant == "1d":       # iscell[:, 1] on a 1-D array: IndexError, not caught by the loader
        assert r["load_files"]["error"]["type"] == "IndexError"
        assert gui["error"]["type"] == "IndexError"
    elif variant == "short":    # N-1 labels for N ROIs
        assert gui["error"]["type"] == "IndexError"
    elif variant == "object":   # np.load without allow_pickle fails, silently caught: every ROI shown as a cell
        assert "no manual labels found (iscell.npy)" in r["gui_stdout"]
        assert gui["loaded"] and all(gui["iscell"]["values"]) and len(gui["iscell"]["values"]) == len(good)
