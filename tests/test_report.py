"""The HTML report and the explain command: what they say, and that every file they point to exists."""
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from roicurate import report
from roicurate.crops import CropSpec
from roicurate.curation import curate
from roicurate.models import Classifier, save_model
from roicurate.plugins import sources
from roicurate_plugins.nets import cnn2
from roicurate_plugins.report import truth_labels


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "roicurate.cli", *map(str, args)], capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def save_small_model(folder, pipeline="suite2p", seed=0):
    """An untrained, deliberately small cnn2 (fast occlusion) saved as a real model."""
    size, binz = (64, 0.0) if pipeline == "suite2p" else (50, 0.2)
    torch.manual_seed(seed)
    kw = {"size": size, "channels": [8, 16], "hidden": 32}
    card = {"arch": "cnn2", "build_kwargs": kw, "pipeline": pipeline, "crop": CropSpec(size, binarize=binz).to_dict(),
            "classes": ["not_cell", "cell"], "threshold": 0.5, "threshold_rule": "fixed for the test"}
    save_model(folder, "small", cnn2(**kw), card)
    return folder


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("small_model"))


@pytest.fixture(scope="module")
def small_caiman_model(tmp_path_factory):
    return save_small_model(tmp_path_factory.mktemp("small_caiman_model"), "caiman")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.imgs, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src"))
        if a.get("id"):
            self.ids.add(a["id"])


def check_page(page):
    """Every src/href is a relative path to a file under the report folder (or an anchor on the page), every
    image a real PNG; returns the page text and its image paths."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    p = _Refs()
    p.feed(text)
    assert p.imgs
    for ref in p.refs:
        if ref.startswith("#"):
            assert ref[1:] in p.ids, ref
            continue
        assert "://" not in ref and not ref.startswith("/"), f"absolute or external reference {ref}"
        f = (page.parent / ref).resolve()
        assert f.is_file() and page.parent.resolve() in f.parents, f"{ref} does not exist"
        if ref.endswith(".png"):
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", ref
    return text, p.imgs


def test_apply_report_on_a_plane_with_labels(copy_dataset, small_model):
    rec = copy_dataset("sim/s2p_sim2")
    plane = rec / "suite2p" / "plane0"
    before = np.load(plane / "iscell.npy")[:, 0] > 0.5
    p = run("apply", plane, "--model", small_model, "--report", rec / "report")
    assert "report:" in p.stdout and (plane / "iscell_suite2p.npy").exists()          # the verdict was written too
    text, imgs = check_page(rec / "report" / "index.html")
    after = np.load(plane / "iscell.npy")[:, 0] > 0.5
    assert f"accepted by Suite2p (before)</th><td>{before.sum()} (" in text
    assert f"accepted by roicurate (after)</th><td>{after.sum()} (" in text
    assert "threshold</th><td>0.500" in text
    # 34 ROIs < 50: every ROI is in the closest-calls gallery, each with its own panel
    assert all(f"plane0/roi{i}.png" in imgs for i in range(34))
    assert {"plane0/scores.png", "plane0/fov.png", "plane0/curves.png"} <= set(imgs)   # labels.json -> curves
    assert "labels.json" in text and "precision" in text


def test_report_on_curated_folder_has_one_section_per_plane_and_writes_nothing(copy_dataset, small_model, hash_tree,
                                                                               tmp_path):
    s2p = copy_dataset("sim/s2p_sim2/suite2p")
    originals = {pl: np.load(s2p / pl / "iscell.npy")[:, 0] > 0.5 for pl in ("plane0", "plane1")}
    run("apply", s2p, "--model", small_model, "--threshold", "0.45")
    tree = hash_tree(s2p)
    run("report", s2p, "--out", tmp_path / "r", "--model", small_model, "--explain", 3, "--examples", 1)
    assert hash_tree(s2p) == tree
    text, imgs = check_page(tmp_path / "r" / "index.html")
    for pl in ("plane0", "plane1"):
        assert f"id='{pl}'" in text and f"{pl}/fov.png" in imgs
        # 'before' is the pipeline's original verdict (from the backup), not roicurate's
        assert f"accepted by Suite2p (before)</th><td>{originals[pl].sum()} (" in text
    assert text.count("set by hand; the model's own threshold is 0.500") == 2        # the recorded 0.45 is used
    for pl in ("plane0", "plane1"):      # 3 closest calls + 1 confident accept + 1 confident reject (if any)
        rejected = (np.load(s2p / pl / "iscell.npy")[:, 0] == 0).sum()
        assert len([i for i in imgs if i.startswith(f"{pl}/roi")]) == 3 + 1 + min(1, rejected)
    # without --model, the model recorded in roicurate.json (by the path of its card) is used again
    run("report", s2p, "--out", tmp_path / "r2", "--explain", 1, "--examples", 1)
    assert hash_tree(s2p) == tree
    assert check_page(tmp_path / "r2" / "index.html")[0].count("small (cnn2") == 2


def test_report_on_a_caiman_file(datasets, small_caiman_model, tmp_path):
    f = datasets / "sim/caiman_sim3/caiman/cnmf_refit_evaluated.hdf5"
    run("report", f, "--out", tmp_path / "r", "--model", small_caiman_model, "--explain", 2, "--examples", 1)
    text, imgs = check_page(tmp_path / "r" / "index.html")
    assert "accepted by CaImAn (before)" in text and "cnmf_refit_evaluated/curves.png" in imgs
    assert "has not written a verdict here" in text
    assert "mean image" in text or "corr image" in text


def test_report_on_a_curated_caiman_file_uses_the_backup_as_before(copy_dataset, small_caiman_model, tmp_path):
    import h5py
    f = copy_dataset("sim/caiman_sim3/caiman") / "cnmf_refit_evaluated.hdf5"
    with h5py.File(f, "r") as h:
        before = len(h["estimates/idx_components"][()])
    run("apply", f, "--model", small_caiman_model, "--threshold", "0.6")
    run("report", f, "--out", tmp_path / "r", "--model", small_caiman_model, "--explain", 2, "--examples", 1)
    text, _ = check_page(tmp_path / "r" / "index.html")
    assert f"accepted by CaImAn (before)</th><td>{before} (" in text and "has not written" not in text
    assert "threshold</th><td>0.600" in text


def test_truth_masks_give_the_datasets_own_labels(datasets):
    """--truth regions.json (+ classes.json) reproduces labels.json's protocol exactly."""
    rs = sources()["suite2p"].read(datasets / "sim/s2p_sim1/suite2p/plane0")
    lab, source = truth_labels(rs, datasets / "sim/s2p_sim1/truth/regions.json")
    want = json.loads((datasets / "sim/s2p_sim1/labels.json").read_text())["rois"]["suite2p/plane0/stat.npy"]["label"]
    np.testing.assert_array_equal(lab, want)
    assert "IoU >= 0.5" in source


def test_truth_option_and_a_shape_only_dataset(datasets, small_model, tmp_path):
    rec = datasets / "real/abo275/501484643"
    run("report", rec / "suite2p/plane0", "--truth", rec / "truth/regions.json", "--out", tmp_path / "r",
        "--model", small_model, "--explain", 2, "--examples", 1)
    text, imgs = check_page(tmp_path / "r" / "index.html")
    assert "no summary image" in text and "plane0/curves.png" in imgs and "regions.json (matched one-to-one" in text
    p = run("report", rec / "suite2p/plane0", "--truth", rec / "truth/regions.json", "--truth",
            rec / "truth/regions.json", "--out", tmp_path / "r2", "--model", small_model, ok=False)
    assert p.returncode == 1 and "one file per plane" in p.stderr


def test_outlines_are_the_boundary_of_every_mask(datasets):
    rs = sources()["caiman"].read(datasets / "sim/caiman_sim3/caiman/cnmf_refit_evaluated.hdf5")  # overlapping ROIs
    roi, y, x = report.outline_pixels(rs, 0.2)
    keep = rs.binary(0.2)
    for i in range(0, len(rs), 17):
        m = np.zeros(rs.shape, bool)
        sel = keep & (rs.roi_index == i)
        m[rs.y[sel], rs.x[sel]] = True
        edge = m & ~ndimage.binary_erosion(m, border_value=0)
        got = np.zeros(rs.shape, bool)
        got[y[roi == i], x[roi == i]] = True
        np.testing.assert_array_equal(got, edge)


def test_write_report_from_python_with_gallery_order(datasets, small_model, tmp_path):
    rs = sources()["suite2p"].read(datasets / "sim/s2p_sim1/suite2p/plane0")
    clf = Classifier.load(str(small_model))
    cur = curate(rs, clf, threshold=float(np.median(clf.predict_proba(rs)[:, 1])))
    page = report.write_report(tmp_path / "r", [("my plane", rs, cur, clf)], n_explain=4, n_examples=2,
                               progress=False)
    text, imgs = check_page(page)
    gallery = [int(i.split("roi")[1][:-4]) for i in imgs if "/roi" in i]
    assert gallery[:4] == [int(i) for i in cur.uncertain[:4]]             # most uncertain first
    order = np.argsort(-cur.score)
    assert gallery[4:6] == [int(i) for i in order[:2]] and gallery[6:8] == [int(i) for i in order[::-1][:2]]
    assert "How to read this report" in text and "my plane" in text


def test_explain_command(datasets, small_model, tmp_path):
    plane = datasets / "sim/s2p_sim2/suite2p/plane1"
    run("explain", plane, "--rois", "3,5-6", "--out", tmp_path / "why", "--model", small_model)
    text, imgs = check_page(tmp_path / "why" / "index.html")
    assert imgs == ["plane1/roi3.png", "plane1/roi5.png", "plane1/roi6.png"]
    npz = np.load(tmp_path / "why" / "plane1" / "explanations.npz")
    assert list(npz["index"]) == [3, 5, 6] and npz["occlusion"].shape == npz["saliency"].shape == (3, 64, 64)
    p = run("explain", plane, "--rois", "999", "--out", tmp_path / "why2", "--model", small_model, ok=False)
    assert p.returncode == 1 and "no ROI 999" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_report_and_explain_are_plugin_commands():
    from roicurate.plugins import plugin_info
    hooks = {name: h for name, _, h in plugin_info()}
    assert "register_commands" in hooks["roicurate_plugins.report"]
    assert "--report DIR" in run("apply", "--help").stdout
