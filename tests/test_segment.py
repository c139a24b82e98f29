"""`roicurate segment` (roicurate_plugins/unet/) and its scoring (roicurate_plugins/unet/scoring.py): the
scores on hand-made cases with known answers, the network's shapes and test-time augmentation, the command end to
end on a Suite2p plane, a CaImAn file and image files, the bundled model against the raw-image baseline on held-out
simulations, and one-line errors for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import cli_run as run
from PIL import Image

from roicurate import RoicurateError
from roicurate.models import Classifier
from roicurate.safeio import sha256_file
from roicurate.plugins import model_specs
from roicurate_plugins.unet import scoring as ev
from roicurate_plugins.unet.model import MODEL, Segmenter, normalise, probability, unet

S2P = "plane1"                                     # of the bundled example (shared datasets: s2p_sim3)
S2P_SHARED = "sim/s2p_sim3/suite2p/plane0"
CAIMAN_SHARED = "sim/caiman_sim3/caiman/cnmf_refit_evaluated.hdf5"


def caiman_files_dims():
    import caiman_files
    return caiman_files.DIMS


def caiman_files_n():
    import caiman_files
    return caiman_files.simulate(2)["A"].shape[1]       # caiman_sim3 of conftest.caiman_sessions: seed 2


def square(y, x, h, w):
    yy, xx = np.mgrid[y:y + h, x:x + w]
    return np.stack([yy.ravel(), xx.ravel()], 1)


@pytest.fixture(scope="module")
def seg():
    return Segmenter.load()


# ---- scoring, on cases worked out by hand -------------------------------------------------------------------------
def test_neurofinder_matching_is_greedy_in_truth_order_and_strict_on_distance():
    truth = [square(8, 8, 4, 4), square(8, 12, 4, 4)]          # centres (9.5, 9.5) and (9.5, 13.5)
    pred = [square(8, 10, 4, 4)]                                 # centre (9.5, 11.5): 2 px from both
    assert ev.neurofinder_match(truth, pred).tolist() == [0, -1]  # the first truth region takes it
    s = ev.neurofinder_scores(truth, pred)
    assert (s["recall"], s["precision"], s["n_matched"]) == (0.5, 1.0, 1)
    assert s["f1"] == pytest.approx(2 / 3)
    far = [square(8, 12, 4, 4)]                                  # exactly 4 px away: a match within 5, not within 4
    assert ev.neurofinder_match(truth[:1], far, distance=5).tolist() == [0]
    assert ev.neurofinder_match(truth[:1], far, distance=4).tolist() == [-1]


def test_inclusion_exclusion_and_pixel_iou():
    truth = [square(0, 0, 4, 4)]                                 # 16 px
    half = [square(0, 0, 4, 2)]                                  # 8 px inside it (centre 1.5, 0.5: 1 px away)
    s = ev.score(truth, half, (10, 10))
    assert (s["inclusion"], s["exclusion"]) == (0.5, 1.0) and s["pixel_iou"] == 0.5
    big = [square(0, 0, 4, 8)]                                   # 32 px covering it (centre 2 px away)
    s = ev.score(truth, big, (10, 10))
    assert (s["inclusion"], s["exclusion"]) == (1.0, 0.5) and s["pixel_iou"] == 0.5
    s = ev.score(truth, [], (10, 10))
    assert (s["recall"], s["precision"], s["f1"], s["inclusion"], s["exclusion"], s["pixel_iou"]) == (0, 0, 0, 0, 1, 0)


def test_pooled_sums_before_dividing():
    a = ev.score([square(0, 0, 3, 3)] * 1, [square(0, 0, 3, 3)], (20, 20))          # 1 of 1, IoU 9/9
    b = ev.score([square(0, 0, 3, 3), square(10, 10, 3, 3)], [square(10, 10, 3, 3), square(0, 15, 2, 2)], (20, 20))
    p = ev.pooled([a, b])
    assert (p["n_truth"], p["n_pred"], p["n_matched"]) == (3, 3, 2)
    assert p["recall"] == pytest.approx(2 / 3) and p["precision"] == pytest.approx(2 / 3)
    assert p["pixel_iou"] == pytest.approx((9 + 9) / (9 + 9 + 9 + 4))


def test_objects_are_8_connected_and_small_ones_dropped():
    m = np.zeros((8, 8), bool)
    m[1, 1] = m[2, 2] = m[3, 3] = True                           # a diagonal: one object with 8-connectivity
    m[6, 6] = True                                               # a single pixel
    lab = ev.label_objects(m, min_size=1)
    assert lab.max() == 2 and lab[1, 1] == lab[3, 3] != lab[6, 6]
    lab = ev.label_objects(m, min_size=2)
    assert lab.max() == 1 and lab[6, 6] == 0
    regions = ev.regions_from_labels(lab)
    assert len(regions) == 1 and sorted(map(tuple, regions[0])) == [(1, 1), (2, 2), (3, 3)]
    assert ev.regions_json(regions) == [{"id": "0", "coordinates": [[1, 1], [2, 2], [3, 3]]}]


# ---- the network ----------------------------------------------------------------------------------------------------
def test_unet_shapes_and_tta_equivariance():
    torch.manual_seed(0)
    net = unet(width=4).eval()
    assert net(torch.zeros(2, 1, 32, 48)).shape == (2, 1, 32, 48)
    img = np.random.default_rng(0).normal(size=(37, 50)).astype(np.float32)
    p = probability(net, img)
    assert p.shape == (37, 50) and p.dtype == np.float32 and (0 <= p).all() and (p <= 1).all()
    # 8-fold TTA averages over the whole dihedral group: rotating or flipping the input does the same to the output
    sq = np.random.default_rng(1).normal(size=(32, 32)).astype(np.float32)
    ref = probability(net, sq, tta=True)
    np.testing.assert_allclose(probability(net, np.rot90(sq).copy(), tta=True), np.rot90(ref), atol=1e-5)
    np.testing.assert_allclose(probability(net, sq[:, ::-1].copy(), tta=True), ref[:, ::-1], atol=1e-5)
    assert not np.allclose(probability(net, np.rot90(sq).copy()), np.rot90(probability(net, sq)), atol=1e-5)


def test_bundled_model_is_registered_and_listed(seg):
    spec = model_specs()[MODEL]
    assert spec.pipeline == "any" and spec.classes == ("background", "neuron") and spec.weights
    card = json.loads(open(spec.card_path).read())
    assert card["sha256"] == sha256_file(spec.weights) and card["arch"] == "unet" and card["input"]["image"] == "mean"
    assert set(card["training"]["recordings"]).isdisjoint(card["training"]["test_recordings"])
    out = run("models").output
    assert MODEL in out and "background,neuron" in out and card["sha256"][:12] in out
    # it is no ROI classifier: loading it as one is a clean error, and a classifier is no U-Net
    with pytest.raises(RoicurateError, match="'unet-mean' is a segmentation model"):
        Classifier.load(MODEL)
    with pytest.raises(RoicurateError, match="ROI classifier, not a U-Net"):
        Segmenter.load("caiman-cnn2")


# ---- the command end to end ------------------------------------------------------------------------------------------
def check_outputs(out, shape, threshold, min_size):
    prob = np.load(out / "probability.npy")
    assert prob.shape == shape and prob.dtype == np.float32
    regions = json.loads((out / "regions.json").read_text())
    summary = json.loads((out / "segment.json").read_text())
    assert summary["objects"] == len(regions) > 0 and summary["shape"] == list(shape)
    labels = ev.label_objects(prob >= threshold, min_size)        # regions.json is exactly threshold + components
    assert [sorted(map(tuple, r)) for r in ev.regions_from_labels(labels)] == \
           [sorted(map(tuple, r["coordinates"])) for r in regions]
    assert (out / "probability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return prob, regions, summary


@pytest.mark.datasets
def test_segment_suite2p_plane_with_truth_and_missed(datasets, tmp_path, seg):
    """Through the installed console entry point, as a user runs it."""
    out = tmp_path / "seg"
    p = subprocess.run([sys.executable, "-m", "roicurate.cli", "segment", datasets / S2P_SHARED, "--out", out,
                        "--truth", datasets / "sim/s2p_sim3/truth/regions.json", "--missed"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    prob, regions, summary = check_outputs(out, (256, 256), seg.threshold, seg.min_size)
    e = summary["evaluation"]
    assert e["n_truth"] == 200 and "cell regions" in e["truth"]      # somata only: classes.json is beside it
    assert f"F1 {e['f1']:.3f}" in p.stdout and f"pixel IoU {e['pixel_iou']:.3f}" in p.stdout
    missed = json.loads((out / "missed.json").read_text())
    assert summary["missed"] == len(missed) and (out / "missed.png").exists()
    from roicurate.plugins import sources
    rs = sources()["suite2p"].read(datasets / S2P_SHARED)
    covered = np.zeros(rs.shape, bool)
    covered[rs.y[rs.weight > 0], rs.x[rs.weight > 0]] = True
    # Suite2p found 134 ROIs for 200 somata here: what the U-Net says it missed are real somata
    truth, _ = ev.read_truth(datasets / "sim/s2p_sim3/truth/regions.json", rs.shape)
    hits = ev.neurofinder_match([np.asarray(m["coordinates"]) for m in missed], truth)
    assert len(missed) >= 30 and (hits >= 0).mean() >= 0.9
    for m in missed:                                              # truly outside every ROI, and a listed object
        c = np.asarray(m["coordinates"])
        assert not covered[c[:, 0], c[:, 1]].any()
        assert [sorted(map(tuple, c))] == [sorted(map(tuple, r["coordinates"])) for r in regions
                                            if r["id"] == m["id"]]


def test_segment_caiman_file_with_tta(caiman_files, tmp_path, seg):
    out = tmp_path / "seg"
    r = run("segment", caiman_files["evaluated"], "--out", out, "--tta", "--threshold", "0.6", "--min-size", "25")
    prob, regions, summary = check_outputs(out, caiman_files_dims(), 0.6, 25)
    assert summary["tta"] and summary["threshold"] == 0.6 and "8-fold TTA" in r.output
    from roicurate.plugins import sources
    mean = sources()["caiman"].read(caiman_files["evaluated"]).images["mean"]
    np.testing.assert_allclose(prob, seg.probability(mean, tta=True), atol=1e-6)


def test_segment_image_files(example_suite2p, tmp_path, seg):
    from roicurate.plugins import sources
    images = sources()["suite2p"].read(example_suite2p / "plane0").images
    np.savez(tmp_path / "summary_images.npz", mean=images["mean"], max=images["max"])   # as a dataset keeps them
    mean = images["mean"][:100, :90]                                    # not a multiple of 16
    np.save(tmp_path / "mean.npy", mean)
    Image.fromarray(mean.astype(np.float32)).save(tmp_path / "mean.tif")
    results = []
    for f in ("mean.npy", "mean.tif"):
        run("segment", tmp_path / f, "--out", tmp_path / f"out_{f}")
        results.append(check_outputs(tmp_path / f"out_{f}", (100, 90), seg.threshold, seg.min_size)[0])
    np.testing.assert_array_equal(results[0], results[1])
    run("segment", tmp_path / "summary_images.npz", "--image", "max", "--out", tmp_path / "npz")
    assert json.loads((tmp_path / "npz" / "segment.json").read_text())["image"] == "max"


# ---- the bundled model against the trivial baseline, on recordings it never saw ------------------------------------
@pytest.mark.parametrize("sim, min_f1", [("s2p_sim3", 0.85), ("caiman_sim3", 0.85)])
@pytest.mark.datasets
def test_bundled_model_beats_thresholding_the_mean_image(datasets, seg, sim, min_f1):
    """Measured (benchmarks/segment.py): thresholding the mean image scores F1 0.41 (s2p_sim3) and 0.71
    (caiman_sim3), the bundled U-Net 0.98 and 0.99."""
    assert sim in seg.card["training"]["test_recordings"]
    mean = np.load(datasets / "sim" / sim / "summary_images.npz")["mean"]
    truth, _ = ev.read_truth(datasets / "sim" / sim / "truth/regions.json", mean.shape)
    model = ev.score(truth, ev.regions_from_labels(seg.objects(seg.probability(mean))), mean.shape)
    b = seg.card["baseline"]
    base = ev.score(truth, ev.regions_from_labels(ev.label_objects(normalise(mean) >= b["threshold"], b["min_size"])),
                    mean.shape)
    assert model["f1"] >= min_f1 and model["f1"] >= base["f1"] + 0.2
    assert model["pixel_iou"] > base["pixel_iou"]


# ---- bad input: one line, exit status 1 ----------------------------------------------------------------------------
def test_bad_inputs_give_one_line_errors(example_suite2p, caiman_files, tmp_path):
    np.save(tmp_path / "movie.npy", np.zeros((3, 32, 32), np.float32))
    nan = np.ones((32, 32), np.float32)
    nan[3, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "flat.npy", np.ones((32, 32), np.float32))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    frames = [Image.fromarray(np.zeros((32, 32), np.float32)) for _ in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    cases = [
        (("segment", tmp_path / "nope.npy"), "no such file"),
        (("segment", tmp_path / "movie.npy"), "expected one 2-D numeric image"),
        (("segment", tmp_path / "nan.npy"), "NaN or infinite"),
        (("segment", tmp_path / "flat.npy"), "the image is flat"),
        (("segment", tmp_path / "broken.npy"), "cannot read image"),
        (("segment", tmp_path / "stack.tif"), "TIFF stack of 3 pages"),
        (("segment", example_suite2p), "holds 2 planes"),
        (("segment", caiman_files["evaluated"], "--image", "max"), "has no 'max' summary image"),
        (("segment", tmp_path / "flat.npy", "--missed"), "--missed needs a Suite2p plane or CaImAn file"),
        (("segment", example_suite2p / S2P, "--model", "suite2p-resnet50"), "not a U-Net"),
        (("segment", example_suite2p / S2P, "--truth", tmp_path / "flat.npy"), "cannot read ground truth"),
        (("segment", tmp_path), "not a Suite2p plane, a CaImAn .hdf5 file or an image file"),
    ]
    (tmp_path / "afile").write_text("x")
    cases.append((("segment", example_suite2p / S2P, "--out", tmp_path / "afile"), "exists and is not a folder"))
    for args, message in cases:
        if "--out" not in args:
            args = args + ("--out", tmp_path / "out")
        r = run(*args, ok=False)
        assert r.exit_code == 1, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("roicurate: error:") and message in lines[0], (args, r.stderr)
        assert not (tmp_path / "out").exists()                   # nothing written


# ---- the U-Net map as a crop channel (register_images) and the cnn2-unet architectures --------------------------------
def test_unet_channel_is_the_map_window_computed_once_per_recording(example_suite2p, geometry_only_plane, tmp_path,
                                                                   seg, monkeypatch):
    from roicurate.crops import CropSpec, make_crops
    from roicurate.models import save_model
    from roicurate.plugins import image_providers, sources
    from roicurate_plugins import unet as unet_plugin
    from roicurate_plugins.nets import cnn2
    calls = []
    real = unet_plugin.probability_map
    monkeypatch.setattr(unet_plugin, "probability_map", lambda rs: calls.append(1) or real(rs))
    assert image_providers()["unet"].compute is unet_plugin.probability_map
    spec = model_specs()["cnn2-unet-64"]
    assert spec.crop.channels == ("mask", "unet") and spec.crop.size == 64 and spec.pipeline == "suite2p"
    torch.manual_seed(0)
    kw = {"in_channels": 2, "size": 64, "channels": [8, 16], "hidden": 32}
    card = {"arch": "cnn2-unet-64", "build_kwargs": kw, "crop": spec.crop.to_dict(), "classes": ["not_cell", "cell"],
            "threshold": 0.5}
    clf = Classifier.load(save_model(tmp_path, "two_channel", cnn2(**kw), card), batch_size=16)
    rs = sources()["suite2p"].read(example_suite2p / S2P)
    p = clf.predict_proba(rs)                                # 27 ROIs: 2 batches
    assert len(calls) == 1 and p.shape == (27, 2)
    want = seg.probability(rs.images["mean"])                # the bundled U-Net, no TTA
    np.testing.assert_array_equal(rs.images["unet"], want)
    crops = make_crops(rs, clf.crop)
    assert len(calls) == 1
    c = np.rint(rs.centroids(0.0)).astype(int)
    padded = np.pad(want, 32)
    for i in range(0, len(rs), 7):
        np.testing.assert_array_equal(crops[i, 1], padded[c[i, 0]:c[i, 0] + 64, c[i, 1]:c[i, 1] + 64])
    assert crops[:, 1].max() <= 1 and crops[:, 1].min() >= 0            # a probability, not standardised
    # a second reading of the recording is a new RoiSet: computed again, once
    clf.predict_proba(sources()["suite2p"].read(example_suite2p / S2P))
    assert len(calls) == 2
    # a recording without a mean image: one line naming what is missing
    abo = sources()["suite2p"].read(geometry_only_plane)
    with pytest.raises(RoicurateError, match="cannot compute the 'unet' image: the U-Net reads the 'mean' image"):
        make_crops(abo, CropSpec(64, ("mask", "unet")))


def test_train_and_apply_a_cnn2_unet_model(caiman_sessions, tmp_path):
    """roicurate train --arch cnn2-unet on CaImAn simulations, then apply: the map is a crop channel end to end."""
    sims = [caiman_sessions[i] / "caiman/cnmf_refit_evaluated.hdf5" for i in (1, 2)]
    run("train", *sims, "--arch", "cnn2-unet", "--val", "caiman_sim2", "--epochs", "2", "--batch-size", "32",
        "--build", "channels=[8, 16]", "--build", "hidden=32", "--seed", "0", "--out", tmp_path / "m", "--name", "cu")
    card = json.loads((tmp_path / "m" / "cu.json").read_text())
    assert card["crop"]["channels"] == ["mask", "unet"] and card["crop"]["size"] == 50
    assert card["build_kwargs"]["in_channels"] == 2
    import shutil
    f = tmp_path / "c.hdf5"
    shutil.copyfile(caiman_sessions[3] / "caiman/cnmf_refit_evaluated.hdf5", f)
    f.chmod(0o644)
    r = run("apply", f, "--model", tmp_path / "m", "--dry-run")
    assert f"{caiman_files_n()} ROIs" in r.output


# ---- training windows (benchmarks/train_unet.py, used by benchmarks/segment_real.py) -------------------------------
def test_training_windows_hold_a_cell_and_zoom_scales_it():
    """Each window holds the cell's target; ``zoom`` (z, z) resamples the crop so that the cell is z times wider."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from train_unet import windows
    yy, xx = np.mgrid[:200, :180]
    disk = (yy - 100) ** 2 + (xx - 90) ** 2 <= 8 ** 2                  # 197 px
    image = np.where(disk, 1.0, 0.0).astype(np.float32)
    data = [(image, disk, np.array([[100.0, 90.0]]))]
    rng = np.random.default_rng(0)
    x, y = windows(data, rng, 6, 64)
    assert x.shape == y.shape == (6, 1, 64, 64)
    assert (y.sum((1, 2, 3)) == disk.sum()).all()                      # the whole cell, rotated or flipped only
    for z in (0.5, 1.5):
        x, y = windows(data, rng, 6, 64, zoom=(z, z))
        area = y.sum((1, 2, 3)).numpy()
        assert np.allclose(area, disk.sum() * z ** 2, rtol=0.15), (z, area)
        # image and target stay aligned: the cell's pixels are the bright ones
        assert ((x > 0.5 * x.amax((2, 3), keepdim=True)) == (y > 0)).float().mean() > 0.99
