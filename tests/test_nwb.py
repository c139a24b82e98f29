"""The NWB source (roicurate_plugins/nwb/): read, write, validate, revert, hostile files.

Files come from (a) pynwb directly, in the layouts Suite2p's ``save_nwb`` and CaImAn's ``save_NWB`` write (fast,
no Suite2p needed), and (b) the REAL Suite2p 1.1.0 ``save_nwb`` run in ``.suite2p-env`` (``bash tests/suite2p_env.sh``)
on the bundled example: plane0 alone (a pixel_mask table) and both planes (one voxel_mask table, two units).
The (b) tests skip when that venv is missing, unless ROICURATE_REQUIRE_SUITE2P=1.
"""
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_run, one_line_error

pynwb = pytest.importorskip("pynwb")
from roicurate_plugins.nwb import NwbSource  # noqa: E402
from roicurate_plugins.suite2p import Suite2pSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "s2p_sim2" / "suite2p"
SUITE2P_ENV = Path(os.environ.get("ROICURATE_SUITE2P_ENV", ".suite2p-env"))
SUITE2P_PYTHON = (SUITE2P_ENV if SUITE2P_ENV.is_absolute() else REPO / SUITE2P_ENV) / "bin" / "python"
SRC = NwbSource()


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_state(folder):
    return {p.name: sha(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def validate(path):
    try:
        errors = pynwb.validate(path=str(path))            # pynwb >= 3
    except TypeError:
        errors = pynwb.validate(paths=[str(path)])[0]      # pynwb 2.x
    return list(errors[0] if isinstance(errors, tuple) else errors)


def _nwbfile():
    from pynwb import NWBFile
    from pynwb.ophys import OpticalChannel
    nwb = NWBFile(session_description="test", identifier="roicurate-test",
                  session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    device = nwb.create_device(name="Microscope")
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=OpticalChannel(
        name="OpticalChannel", description="green", emission_lambda=500.0), imaging_rate=30.0, description="plane",
        device=device, excitation_lambda=920.0, indicator="GCaMP", location="V1")
    return nwb, plane


def _series(plane, shape):
    from pynwb.ophys import TwoPhotonSeries
    return TwoPhotonSeries(name="TwoPhotonSeries", dimension=list(shape), external_file=["movie.tif"],
                           imaging_plane=plane, starting_frame=[0], format="external", starting_time=0.0,
                           rate=30.0, num_samples=100)


def write_suite2p_layout(path, plane_dir=EXAMPLE / "plane0", n=None, mutate=None):
    """What Suite2p 1.1.0's save_nwb writes for one plane: pixel_mask [ypix, xpix, lam], an ``iscell`` column and
    ``Backgrounds_0`` (meanImg, Vcorr, max_proj), built with pynwb. ``mutate(ys, xs)`` may corrupt the masks."""
    from pynwb import NWBHDF5IO
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import ImageSegmentation
    rs = Suite2pSource().read(plane_dir)
    iscell = np.load(plane_dir / "iscell.npy")
    n = len(rs) if n is None else n
    nwb, plane = _nwbfile()
    series = _series(plane, rs.shape)
    nwb.add_acquisition(series)
    seg = ImageSegmentation()
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="suite2p output", imaging_plane=plane,
                                       reference_images=series)
    ophys = nwb.create_processing_module(name="ophys", description="optical physiology processed data")
    ophys.add(seg)
    ys = [rs.y[rs.indptr[i]:rs.indptr[i + 1]].copy() for i in range(n)]
    xs = [rs.x[rs.indptr[i]:rs.indptr[i + 1]].copy() for i in range(n)]
    if mutate:
        mutate(ys, xs)
    for i in range(n):
        ps.add_roi(pixel_mask=np.array([ys[i], xs[i], rs.weight[rs.indptr[i]:rs.indptr[i + 1]]]).T)
    if n:
        ps.add_column("iscell", "two columns - iscell & probcell", iscell[:n])
    images = Images(name="Backgrounds_0")
    for key, name in (("mean", "meanImg"), ("corr", "Vcorr"), ("max", "max_proj")):
        images.add_image(GrayscaleImage(name=name, data=rs.images[key].astype(np.float32)))
    ophys.add(images)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return rs


def write_caiman_layout(path, shape=(40, 50), k=6, n_bg=1, seed=0):
    """What CaImAn's save_NWB writes: each column of A (pixels in Fortran order) as ``image_mask = A[:, i].reshape
    (dims)`` (C order), columns r / snr / accepted / rejected / cnn / keep, then the background components (r, snr
    NaN), and the correlation image. Returns the true (rows, cols) masks and keep."""
    from pynwb import NWBHDF5IO
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import ImageSegmentation
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, *shape), np.float32)
    for i in range(k):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        masks[i] = np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / 16.0, 0, None)
    keep = np.arange(k) % 2 == 0
    nwb, plane = _nwbfile()
    nwb.add_acquisition(_series(plane, shape))
    seg = ImageSegmentation()
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="CNMF_ROIs", imaging_plane=plane)
    mod = nwb.create_processing_module(name="ophys", description="CaImAn")
    mod.add(seg)
    for col, text in (("r", "r values"), ("snr", "signal to noise ratio"), ("accepted", "in accepted list"),
                      ("rejected", "in rejected list"), ("cnn", "CNN"), ("keep", "in idx_components")):
        ps.add_column(col, text)
    for i in range(k):
        a_col = masks[i].ravel(order="F")                   # CaImAn's A[:, i]
        ps.add_roi(image_mask=a_col.reshape(shape), r=0.9, snr=5.0 + i, accepted=False, rejected=False,
                   cnn=0.1 * i, keep=bool(keep[i]))
    for _ in range(n_bg):
        ps.add_roi(image_mask=np.full(shape, 0.5, np.float32), r=np.nan, snr=np.nan, accepted=False,
                   rejected=False, cnn=np.nan, keep=False)
    images = Images(name="summary_images")
    images.add_image(GrayscaleImage(name="local_correlations", data=masks.max(0)))
    mod.add(images)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return masks, keep


@pytest.fixture
def s2p_file(tmp_path):
    path = tmp_path / "s2p.nwb"
    write_suite2p_layout(path)
    return path


# ---- the real Suite2p save_nwb ----------------------------------------------------------------------------------
SAVE_NWB = "import sys\nfrom suite2p.io.nwb import save_nwb\nfor d in sys.argv[1:]:\n    save_nwb(d)\n"


@pytest.fixture(scope="module")
def real_suite2p_nwb(tmp_path_factory):
    """{'single': ophys.nwb of plane0 alone, 'multi': ophys.nwb of both planes}, by Suite2p 1.1.0's own save_nwb."""
    if not SUITE2P_PYTHON.exists():
        if os.environ.get("ROICURATE_REQUIRE_SUITE2P") == "1":
            pytest.fail(f"{SUITE2P_PYTHON} missing: run bash tests/suite2p_env.sh")
        pytest.skip("the real Suite2p venv is missing (bash tests/suite2p_env.sh)")
    root = tmp_path_factory.mktemp("save_nwb")
    (root / "single").mkdir()
    shutil.copytree(EXAMPLE / "plane0", root / "single" / "plane0")
    shutil.copytree(EXAMPLE, root / "multi", ignore=shutil.ignore_patterns("combined"))
    env = dict(os.environ, HOME=str(root), MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    r = subprocess.run([str(SUITE2P_PYTHON), "-c", SAVE_NWB, str(root / "single"), str(root / "multi")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return {k: root / k / "ophys.nwb" for k in ("single", "multi")}


@pytest.mark.suite2p_gui
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_real_save_nwb_curated_in_place(real_suite2p_nwb, kind, tmp_path):
    """A file written by Suite2p's own save_nwb: read like the plane folders, curated in place with the bundled
    Suite2p model, valid NWB that pynwb reads the verdict back from, and reverted byte for byte."""
    path = tmp_path / "ophys.nwb"
    shutil.copy(real_suite2p_nwb[kind], path)
    original = sha(path)
    units = SRC.expand(str(path))
    planes = ["plane0"] if kind == "single" else ["plane0", "plane1"]
    assert len(units) == len(planes)
    for unit, plane in zip(units, planes):
        a, b = Suite2pSource().read(EXAMPLE / plane), SRC.read(unit)
        assert b.pipeline == "suite2p" and b.shape == a.shape
        for key in ("indptr", "y", "x", "weight", "pipeline_accepted"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key
        for key in ("mean", "max", "corr"):
            assert np.allclose(a.images[key], b.images[key], atol=1e-5), key
    r = cli_run("apply", path)
    assert "suite2p-resnet50" in r.output
    assert validate(path) == []
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        ps = nwb.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        mod = nwb.processing["roicurate"]
        cur = mod["curations"].to_dataframe()
        assert len(cur) == len(planes) and set(cur["model"]) == {"suite2p-resnet50"}
        rows = []
        for _, row in cur.iterrows():
            t = mod[row["table"]]
            assert t["roi"].table is ps
            p, acc = np.asarray(t["probability"].data[:]), np.asarray(t["accepted"].data[:])
            assert np.array_equal(acc, p >= row["threshold"])
            rows += list(t["roi"].data[:])
        assert sorted(rows) == list(range(len(ps.id)))
        assert np.array_equal(ps["iscell"].data[:], np.load(EXAMPLE / "plane0" / "iscell.npy")) or kind == "multi"
    assert "nothing to revert" not in cli_run("revert", path).output
    assert sha(path) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ophys.nwb"]


# ---- reading -----------------------------------------------------------------------------------------------------
def test_suite2p_layout_read_like_the_plane_folder(s2p_file):
    a, b = Suite2pSource().read(EXAMPLE / "plane0"), SRC.read(str(s2p_file))
    assert SRC.detect(str(s2p_file)) and SRC.expand(str(s2p_file)) == [str(s2p_file)]
    assert (b.source, b.pipeline, b.path) == ("nwb", "suite2p", str(s2p_file))
    for key in ("indptr", "y", "x", "weight", "pipeline_accepted"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert set(b.images) == {"mean", "corr", "max"}
    assert np.array_equal(b.features["suite2p_prob"], a.features["suite2p_prob"])


def test_caiman_layout_unscrambled_backgrounds_left_out(tmp_path):
    path = tmp_path / "cnm.nwb"
    masks, keep = write_caiman_layout(path)
    rs = SRC.read(str(path))
    assert rs.pipeline == "caiman" and len(rs) == len(masks) and rs.shape == masks.shape[1:]
    for i in range(len(rs)):
        img = np.zeros(rs.shape, np.float32)
        s = slice(rs.indptr[i], rs.indptr[i + 1])
        img[rs.y[s], rs.x[s]] = rs.weight[s]
        assert np.array_equal(img, masks[i]), i
    assert np.array_equal(rs.pipeline_accepted, keep)
    assert np.allclose(rs.images["corr"], masks.max(0))
    assert SRC.original_verdict(str(path), rs)[1] is not None             # CaImAn's cnn column


def test_without_pynwb_one_line_install_hint(s2p_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    assert SRC.detect(str(s2p_file))
    one_line_error(lambda: SRC.read(str(s2p_file)), "pip install 'roicurate[nwb]'")


# ---- writing, hand edits, revert ----------------------------------------------------------------------------------
def test_apply_validate_read_back_revert(s2p_file, tiny_model, tmp_path):
    original = sha(s2p_file)
    cli_run("apply", s2p_file)
    backup = tmp_path / "s2p.roicurate-backup.nwb"
    assert sha(backup) == original and validate(s2p_file) == []
    from roicurate.plugins import model_specs
    import json
    card = json.loads(Path(model_specs()["suite2p-resnet50"].card_path).read_text())
    with pynwb.NWBHDF5IO(str(s2p_file), "r") as io:
        mod = io.read().processing["roicurate"]
        row = mod["curations"].to_dataframe().iloc[0]
        t = mod["PlaneSegmentation"]
        assert (row["model"], row["model_sha256"], row["pipeline"]) == ("suite2p-resnet50", card["sha256"], "suite2p")
        assert row["backup_sha256"] == original and row["reference_diameter_px"] > 0
        assert np.array_equal(t["accepted"].data[:], t["probability"].data[:] >= row["threshold"])
    rec = SRC.recorded(str(s2p_file))
    assert rec["intact"] and rec["model"] == "suite2p-resnet50"
    cli_run("apply", s2p_file, "--model", tiny_model / "tiny.json")     # a re-run keeps the first original
    assert sha(backup) == original and validate(s2p_file) == []
    assert "restored" in cli_run("revert", s2p_file).output
    assert sha(s2p_file) == original and not backup.exists()
    assert "nothing to revert" in cli_run("revert", s2p_file).output


def test_hand_edit_refused_then_kept_with_force(s2p_file, tiny_model, tmp_path):
    import h5py
    model = tiny_model / "tiny.json"
    cli_run("apply", s2p_file, "--model", model)
    with h5py.File(s2p_file, "r+") as f:
        acc = f["processing/roicurate/PlaneSegmentation/accepted"]
        acc[0] = not acc[0]
    edited, before = sha(s2p_file), folder_state(tmp_path)
    for args in (("apply", s2p_file, "--model", model), ("revert", s2p_file)):
        r = cli_run(*args, ok=False)
        assert r.exit_code == 1 and "--force" in r.output and r.output.count("\n") == 1, r.output
        assert folder_state(tmp_path) == before
    r = cli_run("apply", s2p_file, "--model", model, "--force")
    kept = [p for p in tmp_path.iterdir() if ".roicurate-edited-" in p.name]
    assert len(kept) == 1 and sha(kept[0]) == edited and "hand edits kept" in r.output
    assert SRC.recorded(str(s2p_file))["intact"] and validate(s2p_file) == []


def test_caiman_file_gets_the_caiman_model(tmp_path):
    path = tmp_path / "cnm.nwb"
    write_caiman_layout(path, shape=(60, 60), k=5)
    original = sha(path)
    r = cli_run("apply", path)
    assert "caiman-cnn2" in r.output and validate(path) == []
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        t = io.read().processing["roicurate"]["PlaneSegmentation"]
        assert list(t["roi"].data[:]) == list(range(5))          # the background row is not curated
    cli_run("revert", path)
    assert sha(path) == original


# ---- hostile files: one line, non-zero exit, nothing changed -------------------------------------------------------
def _no_segmentation(path):
    from pynwb import NWBHDF5IO
    nwb, _ = _nwbfile()
    nwb.create_processing_module(name="ophys", description="nothing segmented")
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def _outside(ys, xs):
    xs[3] = xs[3] + 1000


def _truncated(path):
    write_suite2p_layout(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BAD = {"no PlaneSegmentation": (_no_segmentation, "no PlaneSegmentation"),
       "zero ROIs": (lambda p: write_suite2p_layout(p, n=0), "has no ROIs"),
       "mask outside the frame": (lambda p: write_suite2p_layout(p, mutate=_outside), "outside the 128x128 frame"),
       "truncated": (_truncated, "cannot be")}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_nothing_written(case, tmp_path):
    make, words = BAD[case]
    path = tmp_path / "bad.nwb"
    make(path)
    before = folder_state(tmp_path)
    r = cli_run("apply", path, ok=False)
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1 and words in r.output and str(path) in r.output, r.output
    assert folder_state(tmp_path) == before


def test_json_and_status_on_an_nwb_file(s2p_file, tiny_model, tmp_path):
    import json
    run = lambda *a: subprocess.run([sys.executable, "-m", "roicurate", *map(str, a)], capture_output=True, text=True)
    p = run("apply", s2p_file, "--model", tiny_model, "--json")
    [unit, totals] = [json.loads(line) for line in p.stdout.splitlines()]
    backup = tmp_path / "s2p.roicurate-backup.nwb"
    assert (unit["source"], unit["pipeline"], unit["backup"]) == ("nwb", "suite2p", str(backup))
    assert unit["written"] == sorted([str(s2p_file), str(backup)]) and totals["written_units"] == 1
    assert "done: 1 plane," in p.stderr
    [row] = [json.loads(line) for line in run("status", s2p_file, "--json").stdout.splitlines()]
    assert (row["state"], row["model"], row["backup"]) == ("curated", str(tiny_model / "tiny.json"), str(backup))
    assert row["date"] and row["date"].startswith("20")
