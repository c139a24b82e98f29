"""NWB files whose PlaneSegmentation holds pixel / voxel masks and nothing that states the frame size (no image
series, no summary image: valid NWB that some converters write): the frame is taken from the masks' extent and
said so, the file is curated, still validates, and revert gives it back byte for byte. Files are built with pynwb
from the bundled example's Suite2p planes."""
import datetime
from pathlib import Path

import numpy as np
import pytest

import roicurate
from conftest import cli_run

pynwb = pytest.importorskip("pynwb")
from roicurate_plugins.nwb import NwbSource  # noqa: E402
from roicurate_plugins.suite2p import Suite2pSource  # noqa: E402
from test_nwb import sha, validate  # noqa: E402  (one pynwb validator call for every NWB test)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "s2p_sim2" / "suite2p"
SRC = NwbSource()


def masks_of(plane):
    """(RoiSet, per-ROI (ys, xs, weights)) of a bundled Suite2p plane."""
    rs = Suite2pSource().read(EXAMPLE / plane)
    cut = lambda a: [a[rs.indptr[i]:rs.indptr[i + 1]] for i in range(len(rs))]     # noqa: E731
    return rs, list(zip(cut(rs.y), cut(rs.x), cut(rs.weight)))


def write_masks_only(path, planes=("plane0",), voxel=False, stated_frame=None):
    """One PlaneSegmentation of the planes' ROIs as pixel masks (voxel masks with z = plane index when
    ``voxel``), Suite2p's iscell column, and no image series / summary image, unless ``stated_frame`` adds a
    TwoPhotonSeries of that dimension. Returns [(y, x, z)] of every mask entry."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import ImageSegmentation, OpticalChannel, TwoPhotonSeries
    nwb = NWBFile(session_description="converted", identifier="masks-only",
                  session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    plane = nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=OpticalChannel(name="green", description="green", emission_lambda=500.0),
        imaging_rate=30.0, description="plane", device=nwb.create_device(name="Microscope"), excitation_lambda=920.0,
        indicator="GCaMP", location="V1")
    if stated_frame:
        nwb.add_acquisition(TwoPhotonSeries(name="TwoPhotonSeries", dimension=list(stated_frame),
                                            external_file=["movie.tif"], imaging_plane=plane, starting_frame=[0],
                                            format="external", starting_time=0.0, rate=30.0,
                                            num_samples=100))
    seg = ImageSegmentation()
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="converted ROIs", imaging_plane=plane)
    nwb.create_processing_module(name="ophys", description="optical physiology").add(seg)
    entries, iscell = [], []
    for z, name in enumerate(planes):
        _, rois = masks_of(name)
        iscell.append(np.load(EXAMPLE / name / "iscell.npy"))
        for ys, xs, ws in rois:
            if voxel:
                ps.add_roi(voxel_mask=[(int(y), int(x), z, float(w)) for y, x, w in zip(ys, xs, ws)])
            else:
                ps.add_roi(pixel_mask=[(int(y), int(x), float(w)) for y, x, w in zip(ys, xs, ws)])
            entries += [(int(y), int(x), z) for y, x in zip(ys, xs)]
    ps.add_column("iscell", "two columns - iscell & probcell", np.concatenate(iscell))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return np.array(entries)


def extent(entries):
    return int(entries[:, 0].max()) + 1, int(entries[:, 1].max()) + 1


def test_frame_from_the_masks_curated_validated_reverted(tmp_path):
    path = tmp_path / "converted.nwb"
    entries = write_masks_only(path)
    h, w = extent(entries)
    rs = SRC.read(str(path))
    assert rs.shape == (h, w) and rs.frame_source == "the masks' extent"
    assert rs.shape != Suite2pSource().read(EXAMPLE / "plane0").shape      # the masks do not reach the frame's edge
    original = sha(path)
    p = roicurate.predict(path)
    assert sha(path) == original and p.shape == (len(rs),)

    out = cli_run("apply", path).output
    assert f"frame {h}×{w} px taken from the masks' extent" in out, out
    assert validate(path) == []
    backup = tmp_path / "converted.roicurate-backup.nwb"
    assert sha(backup) == original
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        table = io.read().processing["roicurate"]["PlaneSegmentation"]
        assert np.array_equal(table["probability"].data[:], p)
    assert [r.state for r in roicurate.status(path)] == ["curated"]
    [undone] = roicurate.revert(path)
    assert undone.reverted and sha(path) == original and not backup.exists()


def test_a_stated_frame_wins_and_is_not_remarked(tmp_path):
    path = tmp_path / "with_series.nwb"
    frame = Suite2pSource().read(EXAMPLE / "plane0").shape
    write_masks_only(path, stated_frame=frame)
    rs = SRC.read(str(path))
    assert rs.shape == frame and rs.frame_source == ""
    [r] = roicurate.apply(path, dry_run=True)
    assert "taken from" not in r.line and r.rois == len(rs)


def test_voxel_planes_share_the_extent_of_every_plane(tmp_path):
    path = tmp_path / "voxels.nwb"
    entries = write_masks_only(path, planes=("plane0", "plane1"), voxel=True)
    units = SRC.expand(str(path))
    assert [u.rsplit("/", 1)[1] for u in units] == ["plane0", "plane1"]
    shapes = {SRC.read(u).shape for u in units}
    own = [extent(entries[entries[:, 2] == z]) for z in (0, 1)]
    assert shapes == {extent(entries)} and extent(entries) not in own      # (125, 125), not (125, 124) / (124, 125)
    before = sha(path)
    results = roicurate.apply(path, dry_run=True)
    assert [r.rois for r in results] == [len(masks_of(p)[1]) for p in ("plane0", "plane1")]
    assert all("px taken from the masks' extent" in r.line for r in results) and sha(path) == before
