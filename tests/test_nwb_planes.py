"""Issue #23 item 6: an NWB file with two PlaneSegmentation tables (plane0 and plane1 of the bundled Suite2p example,
each on its own imaging plane, with Suite2p's ``Backgrounds_0`` / ``Backgrounds_1`` image sets): each table is read
with its own plane's images, and two concurrent ``apply`` runs cannot leave the tables at different thresholds (the
file's tables are one critical section)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_model, tree_hashes
from test_safety_fault_injection import wait_until_locked

pynwb = pytest.importorskip("pynwb")
from roicurate import RoicurateError  # noqa: E402
from roicurate_plugins.nwb import NwbSource, nwb_write  # noqa: E402
from roicurate_plugins.suite2p import Suite2pSource  # noqa: E402
from test_nwb import EXAMPLE, _nwbfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = NwbSource()
PLANES = ("plane0", "plane1")
# imaging plane names of the two tables: numbered; unnumbered (natural order); numbered against the insertion order
NAMINGS = {"numbered": ("ImagingPlane0", "ImagingPlane1"), "natural": ("plane", "plane_b"),
           "reversed": ("ImagingPlane1", "ImagingPlane0")}


def write_two_planes(path, naming="numbered", shared=False):
    """Two tables, table i on imaging plane NAMINGS[naming][i] holding plane i's ROIs; Backgrounds_<n> holds the
    images of the plane whose imaging plane is the n-th (by its number, else in natural order). Returns
    {table name: the plane folder it came from}."""
    from pynwb import NWBHDF5IO
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import ImageSegmentation, OpticalChannel
    nwb, _ = _nwbfile()                     # its "ImagingPlane" is left unused unless ``shared``
    names = NAMINGS[naming]
    seg = ImageSegmentation()
    ophys = nwb.create_processing_module(name="ophys", description="optical physiology processed data")
    ophys.add(seg)
    out, images = {}, {}
    for i, plane_dir in enumerate(PLANES):
        rs = Suite2pSource().read(EXAMPLE / plane_dir)
        plane = nwb.imaging_planes["ImagingPlane"] if shared else nwb.create_imaging_plane(
            name=f"{names[i]}", optical_channel=OpticalChannel(name="OpticalChannel", description="green",
                                                               emission_lambda=500.0),
            imaging_rate=30.0, description=plane_dir, device=nwb.devices["Microscope"], excitation_lambda=920.0,
            indicator="GCaMP", location="V1")
        name = "PlaneSegmentation" if i == 0 else "PlaneSegmentation_1"
        ps = seg.create_plane_segmentation(name=name, description=f"suite2p {plane_dir}", imaging_plane=plane)
        for k in range(len(rs)):
            sl = slice(rs.indptr[k], rs.indptr[k + 1])
            ps.add_roi(pixel_mask=np.array([rs.y[sl], rs.x[sl], rs.weight[sl]]).T)
        ps.add_column("iscell", "two columns - iscell & probcell", np.load(EXAMPLE / plane_dir / "iscell.npy"))
        out[f"ophys/ImageSegmentation/{name}"] = plane_dir
        images[names[i]] = rs.images
    order = sorted(names, key=lambda n: (int(n[-1]) if n[-1].isdigit() else -1, n))
    for n, plane_name in enumerate(order):
        container = Images(name=f"Backgrounds_{n}")
        for key, iname in (("mean", "meanImg"), ("corr", "Vcorr"), ("max", "max_proj")):
            container.add_image(GrayscaleImage(name=iname, data=images[plane_name][key].astype(np.float32)))
        ophys.add(container)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return out


@pytest.mark.parametrize("naming", list(NAMINGS))
def test_each_table_gets_its_own_planes_images(tmp_path, naming):
    path = tmp_path / "two.nwb"
    tables = write_two_planes(path, naming)
    units = SRC.expand(path)
    assert len(units) == 2
    plane_images = {p: Suite2pSource().read(EXAMPLE / p).images for p in PLANES}
    assert not np.allclose(plane_images["plane0"]["mean"], plane_images["plane1"]["mean"])
    for unit in units:
        rs = SRC.read(unit)
        own = plane_images[tables[unit.split("::")[1]]]
        for key in ("mean", "corr", "max"):
            np.testing.assert_allclose(rs.images[key], own[key].astype(np.float32), err_msg=f"{unit} {key}")


def test_tables_sharing_a_plane_with_two_image_sets_is_one_line(tmp_path):
    path = tmp_path / "shared.nwb"
    write_two_planes(path, shared=True)
    unit = SRC.expand(path)[1]
    with pytest.raises(RoicurateError) as e:
        SRC.read(unit)
    assert "\n" not in str(e.value) and "share the imaging plane" in str(e.value)


def test_one_table_keeps_backgrounds_0(tmp_path):
    """Suite2p's own single-plane layout (one table on ``ImagingPlane``): Backgrounds_0, as before."""
    from test_nwb import write_suite2p_layout
    path = tmp_path / "one.nwb"
    write_suite2p_layout(path)
    rs = SRC.read(path)
    np.testing.assert_allclose(rs.images["mean"], Suite2pSource().read(EXAMPLE / "plane0").images["mean"])


# ---- two concurrent runs on one two-table file --------------------------------------------------------------------
# ``roicurate apply`` in a process that imports everything, prints "ready" and starts when a line comes on stdin
DRIVER = """
import runpy, sys
import torch, pynwb, roicurate.cli, roicurate.api.applying, roicurate.curation, roicurate.models  # noqa
print("ready", flush=True)
sys.stdin.readline()
sys.argv = ["roicurate", *sys.argv[1:]]
runpy.run_module("roicurate", run_name="__main__")
"""


def start(path, model, threshold, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), ROICURATE_LOAD_PLUGINS="", **env)
    p = subprocess.Popen([sys.executable, "-c", DRIVER, "-q", "apply", str(path), "--model", str(model),
                          "--threshold", str(threshold)], env=e, text=True, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_two_concurrent_applies_leave_the_tables_consistent(tmp_path):
    """Run A is slow between its two tables (ROICURATE_TEST_PAUSE_BEFORE_LOCK: it sleeps before each lock it
    takes); run B starts once A holds the lock for its first table. Without one critical section per file, B wrote
    both tables while A slept and A then wrote its second: the tables ended at different thresholds."""
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "two.nwb"
    tables = list(write_two_planes(path))
    model = save_tiny_model(tmp_path / "model", "suite2p")
    a = start(path, model, 0.3, ROICURATE_TEST_PAUSE_BEFORE_LOCK="3")
    b = start(path, model, 0.7)
    a.stdin.write("go\n")
    a.stdin.flush()
    wait_until_locked(folder)
    b.stdin.write("go\n")
    b.stdin.flush()
    results = [(p.wait(120), p.stderr.read()) for p in (a, b)]
    for rc, err in results:
        assert "Traceback" not in err, err
        assert rc == 0 or (rc == 1 and "busy" in err and len(err.strip().splitlines()) == 1), (rc, err)
    thresholds = {t: nwb_write.recorded(path, t)["threshold"] for t in tables}
    assert len(set(thresholds.values())) == 1, thresholds
    assert not list(folder.glob(".*.tmp"))
    SRC.revert(f"{path}::{tables[0]}")                # the whole file back to the original
    assert sorted(tree_hashes(folder)) == ["two.nwb"]
