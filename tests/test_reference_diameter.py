"""Scale-relative inputs: each recording's reference cell diameter (the pipeline's setting, --diameter, or a
statistic of its ROIs), crops resampled by it, relative shape features, and where apply records it."""
import json

import h5py
import numpy as np
import pytest
import torch
from conftest import cli_run as run

from roicurate import RoicurateError
from roicurate.crops import CropSpec, make_crops, resample_matrix
from roicurate.labels import attach_labels, cell_labels
from roicurate.plugins import sources
from roicurate.rois import RoiSet
from roicurate.scale import SOURCE_STATISTIC, equivalent_diameter, outside_range, reference_diameter, roi_statistic
from roicurate.shape import shape_features


def _zoomed(rs, k):
    """The same ROIs imaged at k x the magnification: every pixel becomes k x k pixels."""
    dy, dx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    ys = [(rs.y[a:b, None] * k + dy.ravel()).ravel() for a, b in zip(rs.indptr[:-1], rs.indptr[1:])]
    xs = [(rs.x[a:b, None] * k + dx.ravel()).ravel() for a, b in zip(rs.indptr[:-1], rs.indptr[1:])]
    ws = [np.repeat(rs.weight[a:b], k * k) for a, b in zip(rs.indptr[:-1], rs.indptr[1:])]
    return RoiSet.from_pixels((rs.shape[0] * k, rs.shape[1] * k), ys, xs, ws, source=rs.source, pipeline=rs.pipeline,
                              path=rs.path, origin=dict(rs.origin))


@pytest.mark.datasets
def test_statistic_is_not_fooled_by_junk(datasets):
    """neurofinder.04.00: 691 ROIs, 87 % of them small junk. The reference stays near the labelled cells' size,
    where the plain median ROI is half of it."""
    rs = attach_labels(sources()["suite2p"].read(datasets / "real/neurofinder_train/neurofinder.04.00/suite2p/plane0"))
    cells = equivalent_diameter(np.median(rs.npix[cell_labels(rs) > 0]))
    assert 0.8 * cells < reference_diameter(rs) < 1.1 * cells
    assert equivalent_diameter(np.median(rs.npix)) < 0.6 * cells
    assert rs.diameter_source == SOURCE_STATISTIC


def test_pipeline_settings_and_their_defaults(geometry_only_plane, caiman_files, copy_example):
    s2p, cm = sources()["suite2p"], sources()["caiman"]
    # the shape-only sets carry placeholders (Suite2p's default diameter 12, CaImAn's default gSig 5): not used
    assert s2p.read(geometry_only_plane).diameter is None
    assert cm.read(caiman_files["shape_only"]).diameter is None
    # CaImAn's gSig 4, set by whoever ran it: 3 x gSig
    rs = cm.read(caiman_files["evaluated"])
    assert rs.diameter == 12.0 and "gSig" in rs.diameter_source
    # a Suite2p diameter the user set
    plane = copy_example("plane1")
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    ops["diameter"] = np.array([16.0, 18.0])
    np.save(plane / "ops.npy", ops, allow_pickle=True)
    rs = s2p.read(plane)
    assert rs.diameter == 17.0 and rs.diameter_source == "Suite2p diameter setting"


def test_reference_crops_and_relative_features_do_not_depend_on_zoom(example_suite2p):
    rs = sources()["suite2p"].read(example_suite2p / "plane1")
    big = _zoomed(rs, 2)
    assert reference_diameter(big) == pytest.approx(2 * reference_diameter(rs), rel=0.02)
    spec = CropSpec(64, binarize=0.0, scale="reference", scaled_diameter=12.0)
    a, b = make_crops(rs, spec), make_crops(big, spec)
    # the same cells fill the same part of the crop (resampling blurs edges: compare areas and overlap)
    area_a, area_b = a.sum((1, 2, 3)), b.sum((1, 2, 3))
    np.testing.assert_allclose(area_b / area_a, 1.0, atol=0.25)
    overlap = (np.minimum(a, b).sum((1, 2, 3)) / np.maximum(a, b).sum((1, 2, 3)))
    assert np.median(overlap) > 0.75
    # native crops differ by 4x in area
    native = CropSpec(64, binarize=0.0)
    assert np.median(make_crops(big, native).sum((1, 2, 3)) / make_crops(rs, native).sum((1, 2, 3))) > 3
    fa, fb = shape_features(rs, 0.0, relative=True), shape_features(big, 0.0, relative=True)
    np.testing.assert_allclose(fa[:, 0], fb[:, 0], atol=0.05)          # log relative area
    assert np.abs(shape_features(big)[:, 0] - shape_features(rs)[:, 0]).min() > 1.3   # log area in pixels: + log 4


def test_resample_matrix_keeps_mass_when_shrinking():
    m = resample_matrix(90, 64)
    np.testing.assert_allclose(m.sum(1), 1.0)
    np.testing.assert_allclose(m.sum(0).sum(), 64)
    assert resample_matrix(40, 64).shape == (64, 40)


def test_outside_range_warns_beyond_jitter():
    assert outside_range(12.0, [10.0, 15.0]) is None
    assert outside_range(7.0, [10.0, 15.0]) and "--diameter" in outside_range(7.0, [10.0, 15.0])
    assert outside_range(20.0, [10.0, 15.0])
    assert outside_range(7.0, None) is None


def test_reference_is_checked():
    rs = RoiSet.from_pixels((10, 10), [[1, 2]], [[1, 1]])
    from roicurate.scale import set_diameter
    with pytest.raises(RoicurateError, match="not a diameter"):
        set_diameter(rs, float("nan"), "test")
    assert roi_statistic(RoiSet.from_pixels((10, 10), [], [])) is None


def _reference_model(folder, pipeline="suite2p"):
    """An untrained cnn2 with reference-scaled crops, saved as a real model."""
    from roicurate.models import save_model
    from roicurate_plugins.nets import cnn2
    size, binz = (64, 0.0) if pipeline == "suite2p" else (50, 0.2)
    torch.manual_seed(0)
    card = {"arch": "cnn2", "build_kwargs": {"size": size}, "pipeline": pipeline,
            "crop": CropSpec(size, binarize=binz, scale="reference").to_dict(), "classes": ["not_cell", "cell"],
            "threshold": 0.5, "training": {"reference_diameter_px": [11.0, 15.0]}}
    return save_model(folder, "ref", cnn2(size=size), card)


def test_apply_records_the_reference(copy_example, tmp_path):
    model = _reference_model(tmp_path / "m")
    plane = copy_example("plane1")
    r = run("apply", plane, "--model", model)
    rec = json.loads((plane / "roicurate.json").read_text())
    assert rec["reference_diameter"]["source"] == SOURCE_STATISTIC and rec["inputs"] == ["mask"]
    assert f"cell diameter {rec['reference_diameter']['px']:.1f} px (ROI statistic)" in r.output
    r = run("apply", plane, "--model", model, "--diameter", "30")
    rec = json.loads((plane / "roicurate.json").read_text())
    assert rec["reference_diameter"] == {"px": 30.0, "source": "--diameter"}
    assert "outside what the model was trained on" in r.output
    r = run("apply", plane, "--model", model, "--diameter", "0", ok=False)
    assert r.exit_code != 0


def test_caiman_attributes_record_the_reference(copy_caiman, tmp_path):
    model = _reference_model(tmp_path / "m", "caiman")
    f = copy_caiman("evaluated")
    run("apply", f, "--model", model)
    with h5py.File(f, "r") as h:
        attrs = h["estimates"].attrs
        assert float(attrs["roicurate_reference_diameter"]) == 12.0
        assert "gSig" in attrs["roicurate_diameter_source"] and json.loads(attrs["roicurate_inputs"]) == ["mask"]


def test_optional_image_missing_is_zeros_and_not_an_input(geometry_only_plane, example_suite2p, tmp_path):
    import shutil
    from conftest import write_labels_json
    from roicurate.curation import inputs_used
    # a labelled set as the shared datasets keep one: masks only, labels.json and summary_images.npz beside
    session = tmp_path / "labelled"
    shutil.copytree(geometry_only_plane, session / "suite2p" / "plane0")
    write_labels_json(session, ("plane0",))
    np.savez(session / "summary_images.npz", max=sources()["suite2p"].read(example_suite2p / "plane0").images["max"])
    rs = sources()["suite2p"].read(session / "suite2p" / "plane0")     # no images in ops.npy
    spec = CropSpec(64, channels=("mask", "max"), binarize=0.0, scale="reference", optional_images=True)
    crops = make_crops(rs, spec, np.arange(5))
    assert crops[:, 1].max() == 0 and crops[:, 0].max() > 0
    assert inputs_used(rs, spec) == ("mask",)
    with pytest.raises(RoicurateError, match="'max' image"):
        make_crops(rs, CropSpec(64, channels=("mask", "max"), binarize=0.0), np.arange(5))
    # the dataset's summary_images.npz gives the labelled set its image
    rs = attach_labels(rs)
    assert inputs_used(rs, spec) == ("mask", "max")
    assert np.abs(make_crops(rs, spec, np.arange(5))[:, 1]).max() > 0


def test_report_uses_the_recorded_reference(copy_example, tmp_path):
    from roicurate_plugins.report_commands import load_units
    model = _reference_model(tmp_path / "m")
    plane = copy_example("plane1")
    run("apply", plane, "--model", model, "--diameter", "20")
    unit = load_units([str(plane)])[0]
    assert unit.roiset.diameter == 20.0 and unit.roiset.diameter_source == "--diameter"
    np.testing.assert_allclose(unit.curation.score, np.load(plane / "iscell.npy")[:, 1])
