"""benchmarks/chan2_sim.py: a simulated structural channel on a Suite2p simulation (the bundled example's plane0, its
ROIs' own masks as the ground truth: conftest.simulation_folder), checked against real Suite2p.

The Suite2p comparison runs the real 1.1.0 chan2detect in the suite2p venv (``ROICURATE_SUITE2P_ENV``, default
.suite2p-env); it is skipped when that venv is missing unless ROICURATE_REQUIRE_SUITE2P=1.
"""
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import chan2_sim  # noqa: E402

SUITE2P_ENV = Path(os.environ.get("ROICURATE_SUITE2P_ENV", ".suite2p-env"))
SUITE2P_ENV = SUITE2P_ENV if SUITE2P_ENV.is_absolute() else REPO / SUITE2P_ENV
SUITE2P_PYTHON = SUITE2P_ENV / "bin" / "python"

# Runs inside the suite2p venv: python - PLANE_DIR OUT_NPZ
REAL_SCRIPT = r'''
import sys, numpy as np, torch
import suite2p
from suite2p.detection import chan2detect
plane, out = sys.argv[1], sys.argv[2]
ops = np.load(plane + "/ops.npy", allow_pickle=True).item()
stat = np.load(plane + "/stat.npy", allow_pickle=True)
thr = ops["detection"]["chan2_threshold"]
_, red = chan2detect.detect(ops["meanImg"], ops["meanImg_chan2"], stat, diameter=ops["diameter"],
                            cellpose_chan2=False, chan2_threshold=thr, device=torch.device("cpu"),
                            inner_neuropil_radius=ops["extraction"]["inner_neuropil_radius"],
                            min_neuropil_pixels=ops["extraction"]["min_neuropil_pixels"])
Ly, Lx = ops["meanImg"].shape
cor = chan2detect.correct_bleedthrough(Ly, Lx, 3, ops["meanImg"].copy(), ops["meanImg_chan2"].copy())
np.savez(out, redcell=red, corrected=cor, version=suite2p.version)
'''


def _hashes(folder):
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _auc(score, y):
    from scipy.stats import rankdata
    y = np.asarray(y, bool)
    r = rankdata(score)
    return (r[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())


def _types(plane_dir):
    rows = list(csv.DictReader(open(plane_dir / "cell_types.csv")))
    return np.array([int(r["roi"]) for r in rows]), np.array([r["class"] == "red" for r in rows])


@pytest.fixture(scope="module")
def sim_folder(suite2p_sessions, tmp_path_factory):
    """A one-plane simulation folder (suite2p/, truth/, labels.json) from the example's plane0: 34 ROIs, the 20
    Suite2p accepted are the somata."""
    from conftest import simulation_folder
    return simulation_folder(suite2p_sessions[1], tmp_path_factory.mktemp("sim") / "s2p_sim1")


@pytest.fixture(scope="module")
def sim1(sim_folder, tmp_path_factory):
    src = sim_folder
    before = _hashes(src)
    out = tmp_path_factory.mktemp("chan2") / "sim1"
    res = chan2_sim.make_two_channel(src, out, fraction=0.3, seed=0)
    return src, out, res, before


def test_shared_data_untouched(sim1):
    src, _, _, before = sim1
    assert _hashes(src) == before


def test_roicurate_reads_two_channel_folder(sim1):
    from roicurate.plugins import sources
    _, out, res, _ = sim1
    rs = sources()["suite2p"].read(out / "suite2p" / "plane0")
    assert rs.images["mean_chan2"].shape == rs.shape == (128, 128)
    plane = out / "suite2p" / "plane0"
    db, reg = (np.load(plane / f, allow_pickle=True).item() for f in ("db.npy", "reg_outputs.npy"))
    top = np.load(out / "suite2p" / "db.npy", allow_pickle=True).item()
    assert db["nchannels"] == top["nchannels"] == 2
    assert reg["meanImg_chan2"].dtype == np.float32 and db["meanImg_chan2"].dtype == np.float64
    red = np.load(plane / "redcell.npy")
    n = len(np.load(plane / "stat.npy", allow_pickle=True))
    assert red.shape == (n, 2) and red.dtype == np.float32
    assert np.array_equal(red[:, 0], (red[:, 1] > 0.25).astype(np.float32))
    info = json.loads((out / "chan2_sim.json").read_text())
    assert info["planes"]["plane0"]["n_red_somata"] == 6 and info["seed"] == 0       # round(0.3 x 20 somata)


def test_cell_types_are_exactly_the_matched_somata(sim1, sim_folder):
    _, out, res, _ = sim1
    lab = json.loads((sim_folder / "labels.json").read_text())["rois"]["suite2p/plane0/stat.npy"]
    idx, y = _types(out / "suite2p" / "plane0")
    assert idx.tolist() == [i for i, v in enumerate(lab["label"]) if v == 1]
    regions = json.loads((sim_folder / "truth/regions.json").read_text())
    red_ids = set(res["planes"]["plane0"]["red_somata"])
    assert y.tolist() == [regions[lab["matched_gt"][i]]["id"] in red_ids for i in idx]
    assert 0.15 < y.mean() < 0.5


def test_red_rois_are_brighter(sim_folder, tmp_path):
    """Without bleed-through/background modulation the red somata must stand out in the structural image;
    with the defaults Suite2p's own ratio must separate them well but not perfectly (a realistic baseline)."""
    out = tmp_path / "clean"
    chan2_sim.make_two_channel(sim_folder, out, bleed=0.0, autofluo_mod=0.0)
    plane = out / "suite2p" / "plane0"
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    idx, y = _types(plane)
    inmask = np.array([ops["meanImg_chan2"][stat[i]["ypix"], stat[i]["xpix"]].mean() for i in idx])
    assert _auc(inmask, y) > 0.95


def test_suite2p_prob_baseline_is_realistic(sim1):
    _, out, _, _ = sim1
    idx, y = _types(out / "suite2p" / "plane0")
    auc = _auc(np.load(out / "suite2p" / "plane0" / "redcell.npy")[idx, 1], y)
    assert 0.8 < auc < 0.99, auc


def test_deterministic(sim_folder, sim1, tmp_path):
    _, out, res, _ = sim1
    again = chan2_sim.make_two_channel(sim_folder, tmp_path / "again", fraction=0.3, seed=0)
    other = chan2_sim.make_two_channel(sim_folder, tmp_path / "other", fraction=0.3, seed=1)
    img = lambda o: np.load(o / "suite2p/plane0/reg_outputs.npy", allow_pickle=True).item()["meanImg_chan2"]
    assert np.array_equal(img(out), img(tmp_path / "again"))
    assert again["planes"]["plane0"]["red_somata"] == res["planes"]["plane0"]["red_somata"]
    assert other["planes"]["plane0"]["red_somata"] != res["planes"]["plane0"]["red_somata"]
    with pytest.raises(FileExistsError):
        chan2_sim.make_two_channel(sim_folder, tmp_path / "again")


def test_matches_real_suite2p(sim1):
    if not SUITE2P_PYTHON.exists():
        msg = f"Suite2p venv not found at {SUITE2P_ENV}; create it with: bash tests/suite2p_env.sh"
        if os.environ.get("ROICURATE_REQUIRE_SUITE2P"):
            pytest.fail(msg + " (ROICURATE_REQUIRE_SUITE2P is set)")
        pytest.skip(msg)
    _, out, _, _ = sim1
    plane = out / "suite2p" / "plane0"
    with tempfile.TemporaryDirectory(prefix="s2p-chan2-home-") as home:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(HOME=home, PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
        res = Path(home) / "real.npz"
        proc = subprocess.run([str(SUITE2P_PYTHON), "-", str(plane), str(res)], input=REAL_SCRIPT, text=True,
                              capture_output=True, env=env, cwd=home, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        real = dict(np.load(res))
    assert str(real["version"]) == "1.1.0"
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    mine = chan2_sim.suite2p_chan2_prob(stat, ops["meanImg_chan2"])
    np.testing.assert_allclose(mine, real["redcell"][:, 1], rtol=0, atol=1e-6)
    ours = np.load(plane / "redcell.npy")
    assert ours.dtype == real["redcell"].dtype and ours.shape == real["redcell"].shape
    assert np.array_equal(ours[:, 0], real["redcell"][:, 0])
    np.testing.assert_allclose(ours[:, 1], real["redcell"][:, 1], rtol=0, atol=1e-6)
    cor = chan2_sim.correct_bleedthrough(ops["meanImg"], ops["meanImg_chan2"])
    np.testing.assert_allclose(cor, real["corrected"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ops["meanImg_chan2_corrected"], real["corrected"], rtol=1e-5, atol=1e-3)
