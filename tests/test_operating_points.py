"""``apply --operating-point NAME`` / ``--tta``: the threshold a card's named point gives, and the point (or None for a
custom threshold or a card without points) recorded wherever the threshold is: Suite2p's roicurate.json, CaImAn's
/estimates attributes, NWB's curations table, the unit line, ``--json`` and ``status``. Real files, small untrained
models whose points are quartiles of their own probabilities on those files (so every point splits the ROIs)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import roicurate
from conftest import EXAMPLE_SUITE2P, cli_run, one_line_error, save_tiny_model, tree_hashes


def pointed_model(folder, pipeline, unit):
    """(plain card, pointed card, {point: threshold}): the same untrained weights, without and with
    ``operating_points`` at the quartiles of their probabilities on ``unit``."""
    plain = save_tiny_model(folder / "plain", pipeline=pipeline, name=f"{pipeline}-plain")
    q = np.quantile(roicurate.predict(unit, model=plain), [0.25, 0.5, 0.75])
    assert q[0] < q[1] < q[2], q
    points = dict(zip(("recall", "balanced", "precision"), map(float, q)))
    pointed = save_tiny_model(folder / "pointed", pipeline=pipeline, name=f"{pipeline}-pointed",
                              threshold=points["balanced"], operating_points=points)
    return plain, pointed, points


@pytest.fixture(scope="module")
def s2p_models(tmp_path_factory):
    return pointed_model(tmp_path_factory.mktemp("s2p_models"), "suite2p", EXAMPLE_SUITE2P / "plane0")


@pytest.fixture(scope="module")
def caiman_models(tmp_path_factory, caiman_files):
    return pointed_model(tmp_path_factory.mktemp("caiman_models"), "caiman", caiman_files["evaluated"])


def ways(points):
    """(options, threshold used, point recorded) for the default point, a named one and a custom threshold."""
    custom = (points["recall"] + points["balanced"]) / 2
    return [((), points["balanced"], "balanced"),
            (("--operating-point", "recall"), points["recall"], "recall"),
            (("--threshold", repr(custom)), custom, None)]


def apply_json(*args):
    """``roicurate apply ARGS --json``: the unit record (one unit)."""
    r = cli_run("apply", *args, "--json")
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    [unit] = [x for x in records if x["type"] == "unit"]
    return unit, r.stderr


def check_split(accepted, probability, threshold):
    """The verdict is exactly probability >= threshold, and that threshold splits the ROIs."""
    accepted, probability = np.asarray(accepted, bool), np.asarray(probability)
    assert np.array_equal(accepted, probability >= threshold)
    assert 0 < accepted.sum() < len(accepted)


@pytest.mark.parametrize("way", range(3), ids=["default-point", "named-point", "custom-threshold"])
def test_suite2p_threshold_used_and_recorded(way, s2p_models, copy_example):
    _, pointed, points = s2p_models
    options, threshold, point = ways(points)[way]
    plane = copy_example("plane0")
    unit, stderr = apply_json(plane, "--model", pointed, *options)
    iscell = np.load(plane / "iscell.npy")
    check_split(iscell[:, 0] > 0.5, iscell[:, 1], threshold)
    rec = json.loads((plane / "roicurate.json").read_text())
    assert (rec["threshold"], rec["operating_point"], rec["tta"]) == (threshold, point, False)
    assert (unit["threshold"], unit["operating_point"], unit["tta"]) == (threshold, point, False)
    assert f"at threshold {threshold:.3f}{f' ({point} point)' if point else ''}" in stderr
    assert ("point)" in stderr) == (point is not None)
    [row] = roicurate.status(plane)
    assert (row.state, row.operating_point, row.record()["operating_point"]) == ("curated", point, point)
    assert (f"({point} point)" in row.line) == (point is not None)


def test_suite2p_combined_record_names_each_planes_point(s2p_models, copy_example):
    """combined/roicurate.json says whose verdict each plane's rows are, and follows a re-run that changes only
    the point (the same verdict under a custom threshold equal to the recall point's: identical iscell bytes)."""
    _, pointed, points = s2p_models
    s2p = copy_example()

    def verdicts():
        return json.loads((s2p / "combined" / "roicurate.json").read_text())["verdicts"]

    cli_run("apply", s2p, "--model", pointed, "--operating-point", "recall")
    assert {p: (v["threshold"], v["operating_point"], v["tta"]) for p, v in verdicts().items()} == \
        {"plane0": (points["recall"], "recall", False), "plane1": (points["recall"], "recall", False)}
    assert verdicts()["plane0"]["sha256"] == json.loads((s2p / "plane0" / "roicurate.json").read_text())["model"]["sha256"]
    combined = (s2p / "combined" / "iscell.npy").read_bytes()
    cli_run("apply", s2p / "plane0", "--model", pointed, "--threshold", repr(points["recall"]))
    assert (s2p / "combined" / "iscell.npy").read_bytes() == combined
    assert [(v["threshold"], v["operating_point"]) for v in verdicts().values()] == \
        [(points["recall"], None), (points["recall"], "recall")]
    cli_run("revert", s2p / "plane0")
    assert verdicts()["plane0"] is None and verdicts()["plane1"]["operating_point"] == "recall"


@pytest.mark.parametrize("way", range(3), ids=["default-point", "named-point", "custom-threshold"])
def test_caiman_threshold_used_and_recorded(way, caiman_models, copy_caiman):
    import h5py
    _, pointed, points = caiman_models
    options, threshold, point = ways(points)[way]
    path = copy_caiman("evaluated")
    unit, _ = apply_json(path, "--model", pointed, *options)
    with h5py.File(path, "r") as f:
        est = f["estimates"]
        p = est["roicurate_probability"][()]
        accepted = np.zeros(len(p), bool)
        accepted[est["idx_components"][()]] = True
        attrs = {k: est.attrs[k] for k in ("roicurate_threshold", "roicurate_operating_point", "roicurate_tta")}
    check_split(accepted, p, threshold)
    assert attrs == {"roicurate_threshold": repr(threshold), "roicurate_operating_point": point or "",
                     "roicurate_tta": "false"}
    assert (unit["threshold"], unit["operating_point"]) == (threshold, point)
    [row] = roicurate.status(path)
    assert (row.state, row.threshold, row.operating_point) == ("curated", threshold, point)


def test_nwb_column_and_status(s2p_models, tmp_path):
    pynwb = pytest.importorskip("pynwb")
    from test_nwb import write_suite2p_layout
    _, pointed, points = s2p_models
    path = tmp_path / "s2p.nwb"
    write_suite2p_layout(path)
    [r] = roicurate.apply(path, model=pointed, operating_point="precision")
    assert (r.threshold, r.operating_point) == (points["precision"], "precision")
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        mod = io.read().processing["roicurate"]
        row = mod["curations"].to_dataframe().iloc[0]
        t = mod["PlaneSegmentation"]
        check_split(t["accepted"].data[:], t["probability"].data[:], points["precision"])
    assert (row["threshold"], row["operating_point"], row["tta"]) == (points["precision"], "precision", "false")
    [status] = roicurate.status(path)
    assert (status.state, status.operating_point) == ("curated", "precision")


def test_a_card_without_points_records_none(s2p_models, caiman_models, copy_example, copy_caiman):
    import h5py
    plane, path = copy_example("plane0"), copy_caiman("evaluated")
    [r] = roicurate.apply(plane, model=s2p_models[0])
    assert (r.threshold, r.operating_point, r.record()["operating_point"]) == (0.5, None, None)
    assert "point)" not in r.line and "TTA" not in r.line
    assert json.loads((plane / "roicurate.json").read_text())["operating_point"] is None
    roicurate.apply(path, model=caiman_models[0])
    with h5py.File(path, "r") as f:
        assert f["estimates"].attrs["roicurate_operating_point"] == ""
    assert roicurate.status(path)[0].operating_point is None


def test_unknown_point_one_line_nothing_written(s2p_models, copy_example):
    plain, pointed, _ = s2p_models
    s2p = copy_example()
    before = tree_hashes(s2p)
    r = cli_run("apply", s2p, "--model", pointed, "--operating-point", "strict", ok=False)
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert "no operating point 'strict'" in r.stderr and "recall, balanced, precision" in r.stderr
    one_line_error(lambda: roicurate.apply(s2p, model=plain, operating_point="recall"),
                   "no operating point 'recall'", "suite2p-plain")
    assert tree_hashes(s2p) == before


def test_every_default_model_is_checked_before_the_first_write(copy_example, copy_caiman, tmp_path, monkeypatch):
    """Two pipelines, each its default model; the second pipeline's default names no points: the whole run is
    refused before the first pipeline's write."""
    import dataclasses
    from roicurate import plugins
    specs = dict(plugins.model_specs())
    spec = specs["caiman-cnn2"]
    card = json.loads(Path(spec.card_path).read_text())
    card.pop("operating_points")
    (tmp_path / "caiman-cnn2.json").write_text(json.dumps(card))
    shutil.copyfile(spec.weights, tmp_path / "caiman-cnn2.safetensors")
    specs["caiman-cnn2"] = dataclasses.replace(spec, weights=str(tmp_path / "caiman-cnn2.safetensors"))
    monkeypatch.setattr(plugins, "model_specs", lambda: specs)
    s2p, path = copy_example(), copy_caiman("evaluated")
    before = (tree_hashes(s2p), tree_hashes(path.parent))
    one_line_error(lambda: roicurate.apply(s2p, path, operating_point="recall"),
                   "model 'caiman-cnn2' has no operating point 'recall'")
    assert (tree_hashes(s2p), tree_hashes(path.parent)) == before


def test_threshold_with_point_one_line_nothing_written(s2p_models, copy_example):
    _, pointed, _ = s2p_models
    plane = copy_example("plane0")
    before = tree_hashes(plane)
    r = cli_run("apply", plane, "--model", pointed, "--threshold", "0.5", "--operating-point", "recall", ok=False)
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert "--threshold 0.5 and --operating-point recall" in r.stderr
    one_line_error(lambda: roicurate.apply(plane, model=pointed, threshold=0.5, operating_point="recall"),
                   "--threshold", "--operating-point")
    assert tree_hashes(plane) == before


def test_tta_changes_the_probabilities_and_is_recorded(s2p_models, copy_example):
    plain, _, _ = s2p_models
    plane = copy_example("plane0")
    [without] = roicurate.apply(plane, model=plain, dry_run=True)
    unit, stderr = apply_json(plane, "--model", plain, "--tta")
    iscell = np.load(plane / "iscell.npy")
    assert not np.allclose(iscell[:, 1], without.probabilities, atol=1e-4)
    assert np.array_equal(iscell[:, 0] > 0.5, iscell[:, 1] >= 0.5)
    assert unit["tta"] is True and without.tta is False and "at threshold 0.500 + TTA" in stderr
    assert json.loads((plane / "roicurate.json").read_text())["tta"] is True


@pytest.mark.parametrize("source", ["suite2p", "caiman", "nwb"])
def test_report_rescores_with_tta_when_the_verdict_had_it(source, s2p_models, caiman_models, copy_example,
                                                           copy_caiman, tmp_path):
    """``report`` on a unit applied with --tta re-scores it with TTA: its probabilities are the written ones, so
    no ROI is taken for a hand edit; the record of each source says so."""
    from roicurate_plugins.report_commands import load_units
    plain = (caiman_models if source == "caiman" else s2p_models)[0]
    if source == "nwb":
        pytest.importorskip("pynwb")
        from test_nwb import write_suite2p_layout
        unit = tmp_path / "s2p.nwb"
        write_suite2p_layout(unit)
    else:
        unit = copy_example("plane0") if source == "suite2p" else copy_caiman("evaluated")
    [without] = roicurate.apply(unit, model=plain, dry_run=True)
    [written] = roicurate.apply(unit, model=plain, tta=True)
    [row] = roicurate.status(unit)
    assert row.tta is True and row.record()["tta"] is True and "+ TTA" in row.line
    [rep] = load_units([unit])
    assert rep.curation.tta is True and rep.classifier.tta is True
    np.testing.assert_allclose(rep.curation.probabilities[:, rep.curation.positive], written.probabilities, atol=1e-6)
    assert not np.allclose(rep.curation.probabilities[:, rep.curation.positive], without.probabilities, atol=1e-4)
    assert not any("different verdict" in n for n in rep.notes)
    [again] = load_units([unit], model_name=plain)      # the same model named: still as the verdict was made
    assert again.classifier.tta is True


def test_tta_with_an_already_loaded_model_without_it_is_refused(s2p_models, copy_example):
    from roicurate.models import Classifier
    plane = copy_example("plane0")
    one_line_error(lambda: roicurate.apply(plane, model=Classifier.load(s2p_models[0]), tta=True, dry_run=True),
                   "tta=True")
    [r] = roicurate.apply(plane, model=Classifier.load(s2p_models[0], tta=True), tta=True, dry_run=True)
    assert r.tta is True


def test_report_names_the_point(s2p_models, copy_example, tmp_path):
    _, pointed, points = s2p_models
    plane = copy_example("plane0")
    cli_run("apply", plane, "--model", pointed, "--operating-point", "recall", "--report", tmp_path / "rep",
            "--explain", "0")
    row = f"<th>threshold</th><td>{points['recall']:.3f} (operating point 'recall': test point recall)"
    assert row in (tmp_path / "rep" / "index.html").read_text()
    cli_run("report", plane, "--out", tmp_path / "later", "--explain", "0")     # from the record, later
    assert row in (tmp_path / "later" / "index.html").read_text()


def test_nwb_written_before_points_still_reads(s2p_models, tmp_path):
    """A curations table without the operating_point / tta columns (an older roicurate's) reads as no point, and a
    new apply writes them."""
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("pynwb")
    from test_nwb import write_suite2p_layout
    _, pointed, points = s2p_models
    path = tmp_path / "s2p.nwb"
    write_suite2p_layout(path)
    roicurate.apply(path, model=pointed)
    with h5py.File(path, "r+") as f:
        table = f["processing/roicurate/curations"]
        for name in ("operating_point", "tta"):
            del table[name]
        table.attrs["colnames"] = [c for c in table.attrs["colnames"] if c not in ("operating_point", "tta")]
    [row] = roicurate.status(path)
    assert (row.state, row.threshold, row.operating_point) == ("curated", points["balanced"], None)
    [r] = roicurate.apply(path, model=pointed, operating_point="recall")
    assert roicurate.status(path)[0].operating_point == "recall" == r.operating_point
