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
from roicurate.report import figures as report_figures
from roicurate.crops import CropSpec
from roicurate.curation import curate
from roicurate.models import Classifier, save_model
from roicurate.plugins import sources
from roicurate_plugins.nets import cnn2
from roicurate_plugins.report_commands import truth_labels


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


def test_apply_report_on_a_plane_with_labels(copy_example, small_model):
    from conftest import write_labels_json
    rec = copy_example("", "s2p_sim2/suite2p").parent
    write_labels_json(rec)
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


def test_report_on_curated_folder_has_one_section_per_plane_and_writes_nothing(copy_example, small_model, hash_tree,
                                                                               tmp_path):
    s2p = copy_example()
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


def test_report_on_a_caiman_file(caiman_sessions, small_caiman_model, tmp_path):
    f = caiman_sessions[3] / "caiman/cnmf_refit_evaluated.hdf5"          # labels.json beside: curves
    run("report", f, "--out", tmp_path / "r", "--model", small_caiman_model, "--explain", 2, "--examples", 1)
    text, imgs = check_page(tmp_path / "r" / "index.html")
    assert "accepted by CaImAn (before)" in text and "cnmf_refit_evaluated/curves.png" in imgs
    assert "has not written a verdict here" in text
    assert "mean image" in text or "corr image" in text


def test_report_on_a_curated_caiman_file_uses_the_backup_as_before(copy_caiman, small_caiman_model, tmp_path):
    import h5py
    f = copy_caiman("evaluated")
    with h5py.File(f, "r") as h:
        before = len(h["estimates/idx_components"][()])
    run("apply", f, "--model", small_caiman_model, "--threshold", "0.6")
    run("report", f, "--out", tmp_path / "r", "--model", small_caiman_model, "--explain", 2, "--examples", 1)
    text, _ = check_page(tmp_path / "r" / "index.html")
    assert f"accepted by CaImAn (before)</th><td>{before} (" in text and "has not written" not in text
    assert "threshold</th><td>0.600" in text


@pytest.mark.datasets
def test_truth_masks_give_the_datasets_own_labels(datasets):
    """--truth regions.json (+ classes.json) reproduces labels.json's protocol exactly."""
    rs = sources()["suite2p"].read(datasets / "sim/s2p_sim1/suite2p/plane0")
    lab, source = truth_labels(rs, datasets / "sim/s2p_sim1/truth/regions.json")
    want = json.loads((datasets / "sim/s2p_sim1/labels.json").read_text())["rois"]["suite2p/plane0/stat.npy"]["label"]
    np.testing.assert_array_equal(lab, want)
    assert "IoU >= 0.5" in source


@pytest.mark.datasets
def test_truth_option_and_a_shape_only_dataset(datasets, small_model, tmp_path):
    rec = datasets / "real/abo275/501484643"
    run("report", rec / "suite2p/plane0", "--truth", rec / "truth/regions.json", "--out", tmp_path / "r",
        "--model", small_model, "--explain", 2, "--examples", 1)
    text, imgs = check_page(tmp_path / "r" / "index.html")
    assert "no summary image" in text and "plane0/curves.png" in imgs and "regions.json (matched one-to-one" in text
    assert "Possibly missed cells (U-Net)</h3><p class='note'>Not run: this recording has no mean image" in text
    assert "plane0/missed.png" not in imgs
    p = run("report", rec / "suite2p/plane0", "--truth", rec / "truth/regions.json", "--truth",
            rec / "truth/regions.json", "--out", tmp_path / "r2", "--model", small_model, ok=False)
    assert p.returncode == 1 and "one file per plane" in p.stderr


def test_outlines_are_the_boundary_of_every_mask(caiman_files):
    rs = sources()["caiman"].read(caiman_files["evaluated"])  # overlapping ROIs
    roi, y, x = report_figures.outline_pixels(rs, 0.2)
    keep = rs.binary(0.2)
    for i in range(0, len(rs), 17):
        m = np.zeros(rs.shape, bool)
        sel = keep & (rs.roi_index == i)
        m[rs.y[sel], rs.x[sel]] = True
        edge = m & ~ndimage.binary_erosion(m, border_value=0)
        got = np.zeros(rs.shape, bool)
        got[y[roi == i], x[roi == i]] = True
        np.testing.assert_array_equal(got, edge)


def test_write_report_from_python_with_gallery_order(example_suite2p, small_model, tmp_path):
    rs = sources()["suite2p"].read(example_suite2p / "plane0")
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


def test_explain_command(example_suite2p, small_model, tmp_path):
    plane = example_suite2p / "plane1"
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
    assert "register_commands" in hooks["roicurate_plugins.report_commands"]
    assert "--report DIR" in run("apply", "--help").stdout


# ---- sections from plugins: the U-Net's possibly missed cells ---------------------------------------------------------
def _listed(text):
    """(count in the text, [(y, x, pixels)] of the table) of the 'Possibly missed cells' section."""
    import re
    sec = text.split("<h3>Possibly missed cells (U-Net)</h3>")[1].split("<h3>")[0]
    n = int(re.search(r"<b>(\d+)</b> of the (\d+) cell bodies", sec).group(1))
    rows = re.findall(r"<tr><td>\d+</td><td>(\d+), (\d+)</td><td>(\d+)</td>", sec)
    return n, [tuple(map(int, r)) for r in rows], sec


def test_report_lists_cells_whose_rois_were_removed_and_not_covered_ones(copy_example, small_model, tmp_path):
    """A real Suite2p plane rewritten without some soma ROIs (stat.npy, iscell.npy and the traces): the U-Net objects
    under the removed ROIs are listed; objects any remaining ROI touches are not."""
    from roicurate_plugins.unet import bundled_unet
    plane = copy_example("plane0")
    rs = sources()["suite2p"].read(plane)
    seg = bundled_unet()
    objects = ev_regions(seg.objects(seg.probability(rs.images["mean"])))
    touching = []                                    # which ROIs (lam > 0 pixels) touch each object, by a plain loop
    for obj in objects:
        cells = {(int(y), int(x)) for y, x in obj}
        touching.append({i for i in range(len(rs)) for y, x in zip(rs.y[rs.indptr[i]:rs.indptr[i + 1]],
                                                                    rs.x[rs.indptr[i]:rs.indptr[i + 1]])
                         if (int(y), int(x)) in cells})
    alone = [next(iter(t)) for t in touching if len(t) == 1]
    drop = sorted(set(alone[:6]))
    assert len(drop) == 6
    keep = np.setdiff1d(np.arange(len(rs)), drop)
    for f in ("stat.npy", "iscell.npy", "F.npy", "Fneu.npy", "spks.npy"):
        a = np.load(plane / f, allow_pickle=True)
        np.save(plane / f, a[keep], allow_pickle=f == "stat.npy")
    run("report", plane, "--out", tmp_path / "r", "--model", small_model, "--explain", 2, "--examples", 1)
    text, imgs = check_page(tmp_path / "r" / "index.html")
    assert "plane0/missed.png" in imgs
    n, rows, sec = _listed(text)
    def found(obj):                                  # the table row of an object: same size, centre within rounding
        cy, cx = obj.mean(0)
        return any(a == len(obj) and abs(y - cy) <= 0.51 and abs(x - cx) <= 0.51 for y, x, a in rows)

    removed = [o for o, t in zip(objects, touching) if t and t <= set(drop)]      # touched only by dropped ROIs
    covered = [o for o, t in zip(objects, touching) if t - set(drop)]             # touched by a remaining ROI
    untouched = [o for o, t in zip(objects, touching) if not t]
    assert len(removed) >= 6 and all(found(o) for o in removed + untouched)
    assert not any(found(o) for o in covered)
    assert n == len(rows) == len(removed) + len(untouched)
    assert f"of the {len(objects)} cell bodies" in sec and "hints, not a count" in sec


def ev_regions(labels):
    from roicurate_plugins.unet.scoring import regions_from_labels
    return regions_from_labels(labels)


def test_a_plugin_section_is_rendered_and_a_failing_one_is_a_note(example_suite2p, small_model, tmp_path):
    from roicurate.hookspecs import hookimpl
    from roicurate.plugins import pm

    class Sections:
        class Good:
            name, title = "good", "Good section"

            def render(self, roiset, curation, folder):
                from roicurate.report.figures import figure, save
                fig = figure(2, 2)
                fig.add_subplot().imshow(roiset.images["mean"])
                save(fig, folder / "good.png")
                return report.ReportSection("A plugin's section", f"<p>{len(roiset)} ROIs, "
                                            f"{int(curation.accepted.sum())} accepted</p>", [("good.png", "mean")])

        class Bad:
            name, title = "bad", "Bad section"

            def render(self, roiset, curation, folder):
                from roicurate import RoicurateError
                raise RoicurateError("nothing to show here")

        @hookimpl
        def register_report_sections(self, register):
            register(self.Good())
            register(self.Bad())

    plugin = Sections()
    pm.register(plugin, "test-sections")
    try:
        rs = sources()["suite2p"].read(example_suite2p / "plane0")
        clf = Classifier.load(str(small_model))
        page = report.write_report(tmp_path / "r", [("p", rs, curate(rs, clf), clf)], n_explain=2, n_examples=1,
                                   progress=False)
    finally:
        pm.unregister(plugin)
    text, imgs = check_page(page)
    assert "p/good.png" in imgs and f"<h3>A plugin's section</h3><p>{len(rs)} ROIs" in text
    assert "<h3>Bad section</h3><p class='note'>Not shown: nothing to show here</p>" in text
