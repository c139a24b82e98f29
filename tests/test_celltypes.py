"""Two-channel cell types on simulated two-channel Suite2p recordings (benchmarks/chan2_sim.py on the bundled example's
planes, each ROI's own mask as its ground-truth object): labels from a CSV or
redcell.npy, a cell-type network trained and scored by recording, roicurate_types.npy / redcell.npy written with the
backup rules of iscell.npy, extra images from files, and weights carried over from the bundled cell / not-cell net."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from roicurate import RoicurateError
from roicurate.images import add_images
from roicurate.labels import attach_type_labels, read_type_labels
from roicurate.plugins import model_specs, sources
from roicurate.training.arch import transfer_weights
from roicurate.training.data import load_labelled

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from chan2_sim import make_two_channel  # noqa: E402
from conftest import cli_run, simulation_folder  # noqa: E402


def run(*args):
    r = cli_run(*args, ok=False)
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def two_channel(suite2p_sessions, tmp_path_factory):
    """sim1, sim1b (the example's plane0, red somata of seeds 0 and 2) to train on, sim3 (its plane1, seed 1) to
    test on, each with a red channel and cell_types.csv."""
    root = tmp_path_factory.mktemp("chan2")
    for name, session, seed in (("sim1", 1, 0), ("sim1b", 1, 2), ("sim3", 3, 1)):
        make_two_channel(simulation_folder(suite2p_sessions[session], root / "truth" / name), root / name, seed=seed)
    return root


@pytest.fixture(scope="module")
def two_channel_shared(datasets, tmp_path_factory):
    """The same from the shared datasets' simulations (155 and 148 ROIs, their simulator's truth): s2p_sim1 (seeds 0
    and 2) to train on, s2p_sim3 (seed 1) to test on."""
    root = tmp_path_factory.mktemp("chan2_shared")
    make_two_channel(datasets / "sim" / "s2p_sim1", root / "sim1", seed=0)
    make_two_channel(datasets / "sim" / "s2p_sim1", root / "sim1b", seed=2)
    make_two_channel(datasets / "sim" / "s2p_sim3", root / "sim3", seed=1)
    return root


def train_red_model(two_channel, out):
    code, text = run("train", two_channel / "sim1" / "suite2p", two_channel / "sim1b" / "suite2p",
                     "--arch", "celltype-cnn2", "--types",
                     "cell_types.csv", "--val", "none", "--epochs", 12, "--seed", 0, "--out", out, "--name", "red")
    assert code == 0, text
    return out


@pytest.fixture(scope="module")
def model(two_channel, tmp_path_factory):
    """celltype-cnn2 trained on sim1's red / not_red labels, two subsets of red cells over the same green data."""
    return train_red_model(two_channel, tmp_path_factory.mktemp("ctmodel"))


def evaluate_on_sim3(two_channel, model):
    """`evaluate --types` of ``model`` on sim3: checks what it scores and reports; returns metrics.json."""
    card = json.loads((model / "red.json").read_text())
    assert card["task"] == "types" and card["classes"] == ["not_red", "red"] and card["positive_class"] == "red"
    assert card["crop"]["channels"] == ["mask", "mean", "mean_chan2"]
    code, text = run("evaluate", two_channel / "sim3" / "suite2p", "--model", model, "--types", "cell_types.csv",
                     "--out", model / "eval")
    assert code == 0, text
    m = json.loads((model / "eval" / "metrics.json").read_text())
    typed = sum(1 for line in (two_channel / "sim3/suite2p/plane0/cell_types.csv").read_text().splitlines()[1:])
    assert m["n_rois"] == typed                                   # only the typed ROIs are scored
    assert "pipeline_red" in m["baselines"] and "suite2p_builtin" not in m["baselines"]
    scores = (model / "eval" / "scores.csv").read_text().splitlines()
    listed = {int(line.split(",")[0]) for line in (two_channel / "sim3/suite2p/plane0/cell_types.csv")
              .read_text().splitlines()[1:]}
    col = scores[0].split(",").index("roi")
    assert {int(r.split(",")[col]) for r in scores[1:]} == listed     # the pipeline's ROI numbers, not 0..n-1
    return m


def test_trained_model_is_evaluated_on_the_typed_rois_of_another_plane(two_channel, model):
    m = evaluate_on_sim3(two_channel, model)
    assert m["n_rois"] >= 10 and "roc_auc" in m["pooled"]


@pytest.mark.datasets
def test_trained_model_separates_red_cells_on_an_unseen_recording(two_channel_shared, tmp_path):
    """On the shared simulations (about 100 typed ROIs per recording) the model learns the red channel."""
    m = evaluate_on_sim3(two_channel_shared, train_red_model(two_channel_shared, tmp_path / "red"))
    assert m["pooled"]["roc_auc"] > 0.75                          # chance is 0.5


def test_fine_tune_a_cell_type_model_keeps_its_classes_and_channels(two_channel, model, tmp_path):
    code, text = run("train", two_channel / "sim3" / "suite2p", "--types", "cell_types.csv", "--init", model,
                     "--freeze-until", "head", "--epochs", 1, "--val", "none", "--out", tmp_path, "--name", "ft")
    assert code == 0, text
    card, base = (json.loads(p.read_text()) for p in (tmp_path / "ft.json", model / "red.json"))
    assert card["classes"] == base["classes"] and card["crop"] == base["crop"] and card["task"] == "types"
    assert card["training"]["init"]["sha256"] == base["sha256"] and card["training"]["frozen_parameters"] > 0


def test_apply_writes_types_and_redcell_with_backup_and_revert(two_channel, model, tmp_path, hash_tree):
    plane_dir = tmp_path / "suite2p"
    shutil.copytree(two_channel / "sim3" / "suite2p", plane_dir)
    plane = plane_dir / "plane0"
    original = hash_tree(plane_dir)
    suite2p_red = np.load(plane / "redcell.npy")
    code, text = run("apply", plane_dir, "--model", model, "--redcell")
    assert code == 0, text
    types = np.load(plane / "roicurate_types.npy")
    n = len(np.load(plane / "stat.npy", allow_pickle=True))
    assert types.shape == (n, 2) and types.dtype == np.float64 and np.allclose(types.sum(1), 1)
    red = np.load(plane / "redcell.npy")
    assert red.shape == (n, 2) and red.dtype == suite2p_red.dtype            # Suite2p's own dtype (float32)
    thr = json.loads((model / "red.json").read_text())["threshold"]
    assert np.array_equal(red[:, 0] > 0.5, types[:, 1] >= thr)
    assert np.array_equal(np.load(plane / "redcell_suite2p.npy"), suite2p_red)
    rec = json.loads((plane / "roicurate.json").read_text())["types"]
    assert rec["classes"] == ["not_red", "red"] and rec["redcell"]["backup"] == "redcell_suite2p.npy"
    after = hash_tree(plane_dir)
    assert after["plane0/iscell.npy"] == original["plane0/iscell.npy"]       # the cell verdict is not touched

    # a second run keeps the first original; a curated iscell run keeps the types record
    assert run("apply", plane_dir, "--model", model, "--redcell")[0] == 0
    assert np.array_equal(np.load(plane / "redcell_suite2p.npy"), suite2p_red)
    assert run("apply", plane_dir)[0] == 0
    assert json.loads((plane / "roicurate.json").read_text())["types"]["redcell"]["backup"] == "redcell_suite2p.npy"

    # red cells flipped by hand in the GUI are not overwritten without --force; nothing changes
    edited = red.copy()
    edited[0, 0] = 1 - edited[0, 0]
    np.save(plane / "redcell.npy", edited)
    before = hash_tree(plane_dir)
    code, text = run("apply", plane_dir, "--model", model, "--redcell")
    assert code != 0 and "changed since roicurate wrote it" in text and len(text.strip().splitlines()) == 1
    assert hash_tree(plane_dir) == before
    # the hand-edited red labels are labels again (no longer roicurate's output)
    rs = sources()["suite2p"].read(plane)
    assert np.array_equal(rs.features["redcell"], edited[:, 0])

    code, text = run("revert", plane_dir)
    assert code == 0, text
    assert hash_tree(plane_dir) == original


def test_redcell_made_where_there_was_none_is_removed_by_revert(two_channel, model, tmp_path, hash_tree):
    plane_dir = tmp_path / "suite2p"
    shutil.copytree(two_channel / "sim3" / "suite2p", plane_dir)
    (plane_dir / "plane0" / "redcell.npy").unlink()
    original = hash_tree(plane_dir)
    assert run("apply", plane_dir, "--model", model, "--redcell")[0] == 0
    assert not (plane_dir / "plane0" / "redcell_suite2p.npy").exists()
    assert np.load(plane_dir / "plane0" / "redcell.npy").dtype == np.float32
    assert run("apply", plane_dir, "--model", model, "--redcell")[0] == 0    # ours is not taken for an original
    assert not (plane_dir / "plane0" / "redcell_suite2p.npy").exists()
    assert run("revert", plane_dir)[0] == 0
    assert hash_tree(plane_dir) == original


def test_types_model_refuses_what_it_cannot_do(two_channel, model, tmp_path, copy_caiman, hash_tree):
    code, text = run("apply", two_channel / "sim3" / "suite2p", "--redcell")
    assert code != 0 and "cell-type model" in text
    caiman = copy_caiman("evaluated").parent
    np.save(caiman / "red.npy", np.ones(sources()["caiman"].read(caiman / "cnmf_refit_evaluated.hdf5").shape, np.float32))
    before = hash_tree(caiman)
    code, text = run("apply", caiman / "cnmf_refit_evaluated.hdf5", "--model", model, "--add-image", "mean_chan2=red.npy")
    assert code != 0 and "cannot write cell types" in text and len(text.strip().splitlines()) == 1
    assert hash_tree(caiman) == before
    code, text = run("evaluate", two_channel / "sim3" / "suite2p", "--model", model)
    assert code != 0 and "--types" in text
    code, text = run("train", two_channel / "sim1" / "suite2p", "--arch", "cnn2", "--types", "cell_types.csv",
                     "--out", tmp_path / "x")
    assert code != 0 and "cell-type architecture" in text


def test_type_labels_from_csv_and_redcell(two_channel, tmp_path):
    plane = two_channel / "sim3" / "suite2p" / "plane0"
    rs = sources()["suite2p"].read(plane)
    labels, names, _ = read_type_labels(rs, "cell_types.csv")
    rows = [line.split(",") for line in (plane / "cell_types.csv").read_text().splitlines()[1:]]
    assert sorted(names) == ["not_red", "red"] and (labels >= 0).sum() == len(rows)
    for roi, cls in rows:
        assert names[labels[int(roi)]] == cls
    rs = attach_type_labels(rs, "redcell")
    assert rs.origin["label_classes"] == ["not_red", "red"]
    assert np.array_equal(rs.labels, (np.load(plane / "redcell.npy")[:, 0] > 0.5).astype(int))
    n = len(rs)
    for text, msg in ((f"roi,class\n{n},red\n", "does not exist"), ("roi,class\n1,red\n1,red\n", "listed twice"),
                      ("roi,class\n1\n", "expected 'roi,class'"), ("roi,class\n", "lists no ROI")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(RoicurateError, match=msg):
            read_type_labels(rs, str(bad))
    with pytest.raises(RoicurateError, match="not among"):
        attach_type_labels(rs, "cell_types.csv", ["excitatory", "inhibitory"])


def test_add_image_from_a_file_beside_each_plane(two_channel, tmp_path):
    plane = tmp_path / "plane0"
    shutil.copytree(two_channel / "sim3" / "suite2p" / "plane0", plane)
    rs = sources()["suite2p"].read(plane)
    img = np.arange(np.prod(rs.shape), dtype=np.float32).reshape(rs.shape)
    np.save(plane / "red.npy", img)
    from PIL import Image
    Image.fromarray(img).save(plane / "red.tif")
    assert np.array_equal(add_images(rs, [("x", "red.npy"), ("y", "red.tif")]).images["y"], img)
    np.save(plane / "small.npy", img[:10])
    with pytest.raises(RoicurateError, match="frame is"):
        add_images(rs, [("x", "small.npy")])
    sets = load_labelled([plane], "suite2p", types="cell_types.csv", images=[("mean_chan2", "red.npy")])
    assert np.array_equal(sets[0].images["mean_chan2"], img)


def test_transfer_from_the_bundled_model_widens_the_first_layer():
    import torch
    specs = model_specs()
    base = specs["suite2p-resnet50"]
    from roicurate.models import Classifier
    clf = Classifier.load("suite2p-resnet50")
    m = specs["celltype-resnet50"].build(in_channels=3, n_out=3, **{k: v for k, v in base.build_kwargs.items()
                                                                   if k != "in_channels"})
    reshaped = transfer_weights(m, clf.module.state_dict(), new_output=True)
    w0 = clf.module.state_dict()["conv1.weight"]
    got = m.state_dict()["conv1.weight"]
    k = w0.shape[1]                         # the bundled model's own channels (mask, max) come first
    assert torch.equal(got[:, :k], w0) and not got[:, k:].any()      # its filters; zeros on the new images
    assert torch.equal(m.state_dict()["layer3.0.conv1.weight"], clf.module.state_dict()["layer3.0.conv1.weight"])
    assert reshaped == {"conv1.weight", "fc.weight", "fc.bias"}
    two = specs["celltype-resnet50"].build(in_channels=3, n_out=1, **{k: v for k, v in base.build_kwargs.items()
                                                                      if k != "in_channels"})
    assert "fc.weight" in transfer_weights(two, clf.module.state_dict(), new_output=True)   # not cell / not_cell


@pytest.mark.suite2p_gui
def test_suite2p_gui_shows_the_red_cells_roicurate_wrote(two_channel, model, tmp_path):
    from test_suite2p_gui import run_gui_loader
    plane_dir = tmp_path / "suite2p"
    shutil.copytree(two_channel / "sim3" / "suite2p", plane_dir)
    assert run("apply", plane_dir, "--model", model, "--redcell")[0] == 0
    red = np.load(plane_dir / "plane0" / "redcell.npy")
    assert 0 < red[:, 0].sum() < len(red)
    result = run_gui_loader(plane_dir / "plane0")
    for stage in ("load_files", "gui"):
        got = result[stage]
        assert "error" not in got, got
        assert got["hasred"]
        assert np.array_equal(np.array(got["redcell"]["values"], bool), red[:, 0] > 0.5)
        assert np.allclose(got["probredcell"]["values"], red[:, 1])


def test_broken_redcell_blocks_only_what_needs_it(two_channel, model, tmp_path, hash_tree):
    plane_dir = tmp_path / "suite2p"
    shutil.copytree(two_channel / "sim3" / "suite2p", plane_dir)
    red = plane_dir / "plane0" / "redcell.npy"
    np.save(red, np.load(red)[:-1])                                      # one row short
    before = hash_tree(plane_dir)
    code, text = run("apply", plane_dir, "--model", model, "--redcell")
    assert code != 0 and "redcell.npy" in text and len(text.strip().splitlines()) == 1
    assert hash_tree(plane_dir) == before
    code, text = run("train", plane_dir, "--arch", "celltype-cnn2", "--types", "redcell", "--out", tmp_path / "m")
    assert code != 0 and "redcell.npy: expected a finite (N, 2) array" in text
    assert run("apply", plane_dir)[0] == 0                               # cell / not-cell curation does not need it
