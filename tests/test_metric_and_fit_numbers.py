"""The numbers scikit-learn computes for roicurate (metrics, isotonic and liblinear fits, the search sampler, the
out-of-fold folds) and the TIFF reader: each checked against a hand computation or the property that matters."""
import json
import math

import numpy as np
import pytest
from conftest import cli_run as run
from scipy.stats import kstest, mannwhitneyu

from roicurate import calibrate, evaluate
from roicurate.training import search
from roicurate.baselines import liblinear_logistic
from roicurate.training.operating_point import N_FOLDS, recording_folds

# 4 cells, 3 non-cells, ties across the classes at 0.5 and 0.1
Y = np.array([1, 0, 1, 1, 0, 0, 1], bool)
S = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.1, 0.1])


def test_metrics_of_a_hand_computed_example():
    # ROC AUC: P(cell score > non-cell score) + ties / 2 over the 12 pairs: (3 + 1.5 + 1.5 + 0.5) / 12
    assert evaluate.roc_auc(Y, S) == pytest.approx(13 / 24, abs=1e-12)
    # thresholds 0.9, 0.8, 0.5, 0.1: (precision, recall) = (1, 1/4), (1/2, 1/4), (3/5, 3/4), (4/7, 1)
    p, r, thr = evaluate.pr_curve(Y, S)
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.5, 0.1])
    np.testing.assert_allclose(p, [1, 1 / 2, 3 / 5, 4 / 7])
    np.testing.assert_allclose(r, [1 / 4, 1 / 4, 3 / 4, 1])
    assert evaluate.pr_auc(Y, S) == pytest.approx(1 / 4 + 1 / 2 * 3 / 5 + 1 / 4 * 4 / 7, abs=1e-12)
    fpr, tpr, thr = evaluate.roc_curve(Y, S)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 4, 1 / 4, 3 / 4, 1])
    assert thr[0] == np.inf
    m = evaluate.metrics(Y, S, 0.5)
    assert m["confusion_matrix"] == [[1, 2], [1, 3]] and (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 1)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((3 / 5, 3 / 4, 2 / 3))
    # one ROI per bin except 0.5 (3 ROIs, 2 cells) and 0.1 (2 ROIs, 1 cell)
    assert m["ece"] == pytest.approx((0.1 + 0.8 + 3 * (2 / 3 - 0.5) + 2 * 0.4) / 7, abs=1e-12)
    assert evaluate.best_f1_threshold(Y, S) == pytest.approx((0.1, 8 / 11))
    assert evaluate.threshold_for_precision(Y, S, 0.6) == 0.5 and evaluate.threshold_for_precision(Y[1:], S[1:], 0.9) is None


def test_single_class_and_empty_groups():
    assert np.isnan(evaluate.roc_auc(np.ones(5, bool), np.arange(5))) and np.isnan(evaluate.pr_auc(np.zeros(5), np.arange(5)))
    assert np.isnan(evaluate.ece(Y, S * 10))                       # not a probability
    m = evaluate.metrics(np.zeros(0, bool), np.zeros(0), 0.5)
    assert m["confusion_matrix"] == [[0, 0], [0, 0]] and np.isnan(m["f1"]) and np.isnan(m["ece"])
    assert evaluate.best_f1_threshold([], []) == (0.5, pytest.approx(float("nan"), nan_ok=True))
    assert evaluate.class_metrics([], [], ["a", "b", "c"])["confusion_matrix"] == [[0] * 3] * 3


@pytest.mark.parametrize("decimals", [None, 2])
def test_roc_auc_is_the_mann_whitney_statistic(decimals):
    rng = np.random.default_rng(3)
    y = rng.random(800) < 0.4
    s = 0.3 * y + rng.random(800)
    s = np.round(s, decimals) if decimals else s
    u = mannwhitneyu(s[y], s[~y]).statistic
    assert evaluate.roc_auc(y, s) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)


def test_reliability_bins_are_equal_width_and_a_score_on_an_edge_belongs_to_the_lower_bin():
    n, conf, frac = evaluate.reliability([1, 0, 1], [0.2, 0.15, 1.0])       # 0.2 = 3/15: the top of bin 2
    assert n.tolist() == [0, 0, 2] + [0] * 11 + [1]
    assert conf[2] == pytest.approx(0.175) and frac[2] == 0.5 and np.isnan(conf[0]) and frac[14] == 1
    assert evaluate.reliability([1], [0.0])[0][0] == 1


def test_class_metrics_confusion_matrix():
    m = evaluate.class_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6) and m["per_class"]["b"]["precision"] == 0.5


def test_isotonic_calibration_pools_adjacent_violators():
    cal = calibrate.fit("isotonic", [0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.4])
    assert cal["x"] == [0.1, 0.2, 0.3, 0.4] and cal["y"] == pytest.approx([0, 0.5, 0.5, 1])
    np.testing.assert_allclose(calibrate.apply(cal, [0.0, 0.25, 0.35, 0.9]), [0, 0.5, 0.75, 1])
    rng = np.random.default_rng(4)
    s = rng.random(3000)
    y = rng.random(3000) < s ** 2
    cal = calibrate.fit("isotonic", y, s)
    assert np.all(np.diff(cal["y"]) >= 0) and np.all(np.diff(cal["x"]) >= 0)
    assert np.mean(calibrate.apply(cal, s)) == pytest.approx(y.mean(), abs=1e-9)   # pooling keeps the mean
    assert cal["ece_after"] < cal["ece_before"]


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_liblinear_minimises_the_penalised_log_loss_intercept_included(C):
    """0.5 |[w, b]|^2 + C * sum log(1 + exp(-t (x w + b))): the gradient vanishes to liblinear's tolerance."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 3)) * [1, 4, 0.3]
    y = x @ [1, -0.3, 2] + rng.logistic(size=600) > -1.0
    w = liblinear_logistic(x, y, C)
    X = np.c_[x, np.ones(len(x))]
    t = np.where(y, 1.0, -1.0)
    sig = 1 / (1 + np.exp(-t * (X @ w)))
    grad = w + X.T @ (C * (sig - 1) * t)
    g0 = np.linalg.norm(X.T @ (C * -0.5 * t))                       # the gradient at w = 0
    assert np.linalg.norm(grad) <= 1e-4 * g0 * 10
    # the intercept's own penalty term is part of that zero: without it the last component would be -w[-1]
    assert abs(w[-1]) > 10 * np.linalg.norm(grad)


def test_liblinear_needs_both_classes():
    from roicurate import RoicurateError
    with pytest.raises(RoicurateError, match="both cells and non-cells"):
        liblinear_logistic(np.zeros((4, 2)), np.ones(4, bool), 1.0)


def test_search_draws_log_uniformly_and_narrows_around_the_best():
    draws = [search.sample(np.random.RandomState(0)) for _ in range(2)]
    assert draws[0] == draws[1] and list(draws[0]) == list(search.SPACE)          # a seed gives the same trials
    rs = np.random.RandomState(1)
    coarse = [search.sample(rs) for _ in range(3000)]
    for name, dom in search.SPACE.items():
        v = [d[name] for d in coarse]
        if isinstance(dom, list):
            assert set(v) == set(dom) and all(type(x) is int for x in v)
        else:
            u = (np.log(v) - math.log(dom[0])) / (math.log(dom[1]) - math.log(dom[0]))
            assert u.min() >= 0 and u.max() <= 1 and kstest(u, "uniform").pvalue > 0.01
    best = {"lr": 3e-3, "weight_decay": 1e-6, "batch_size": 16, "lr_decay": 0.5}
    fine = [search.sample(rs, best) for _ in range(2000)]
    assert {d["batch_size"] for d in fine} == {16, 32}
    wd = np.array([d["weight_decay"] for d in fine])
    assert wd.min() >= 1e-6 and wd.max() <= 1e-6 * search.FINE_SPAN                # clipped to the space
    lr = np.array([d["lr"] for d in fine])
    u = (np.log(lr) - math.log(3e-3 / search.FINE_SPAN)) / (2 * math.log(search.FINE_SPAN))
    assert u.min() >= 0 and u.max() <= 1 and kstest(u, "uniform").pvalue > 0.01


def test_search_keeps_the_best_trial():
    seen = []

    def trial(hp):
        seen.append(hp)
        return -abs(math.log10(hp["lr"]) + 2.5), 0.9, [], object(), 0.0

    best, _, _, rows = search.random_search(6, trial, seed=2, log=lambda s: None)
    assert len(rows) == 6 and [r["phase"] for r in rows] == ["coarse"] * 3 + ["fine"] * 3
    assert best == max(seen, key=lambda hp: -abs(math.log10(hp["lr"]) + 2.5))


@pytest.mark.parametrize("n_recs", [1, 2, 3, 7])
def test_out_of_fold_folds_never_split_a_recording(n_recs):
    rng = np.random.default_rng(n_recs)
    groups = np.repeat([f"lab/rec{i}" for i in range(n_recs)], rng.integers(5, 60, n_recs))
    folds, how = recording_folds(groups, seed=0)
    k = int(folds.max()) + 1
    if n_recs == 1:                       # nothing to split by: folds of the ROIs, and the rule says so
        assert k == N_FOLDS and "one training recording" in how
        return
    assert k == min(N_FOLDS, n_recs) and f"{k} folds of whole training recordings" == how
    for f in range(k):
        held, train = set(groups[folds == f]), set(groups[folds != f])
        assert held and train and not held & train


@pytest.mark.parametrize("dtype, bigtiff", [(np.float32, True), (np.float64, False), (np.uint16, True)])
def test_tiff_summary_images_are_read_with_their_sample_type(tmp_path, dtype, bigtiff):
    """Suite2p / CaImAn summary images: float32 BigTIFF, float64 (which Pillow cannot read), 16-bit."""
    tifffile = pytest.importorskip("tifffile")
    from roicurate.images import add_images, read_image_file
    from roicurate.rois import RoiSet
    img = (np.random.default_rng(6).random((24, 31)) * 1000).astype(dtype)
    tifffile.imwrite(tmp_path / "img.tif", img, bigtiff=bigtiff)
    with tifffile.TiffFile(tmp_path / "img.tif") as t:
        assert t.is_bigtiff == bigtiff
    back = read_image_file(tmp_path / "img.tif")
    assert back.dtype == dtype and np.array_equal(back, img)
    rs = RoiSet.from_pixels(img.shape, [[3]], [[4]], path=str(tmp_path))    # a plane folder's one ROI
    assert np.array_equal(add_images(rs, [("red", "img.tif")]).images["red"], img.astype(np.float32))


def test_a_tiff_stack_is_refused(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from roicurate import RoicurateError
    from roicurate.images import read_image_file
    with tifffile.TiffWriter(tmp_path / "movie.tif", bigtiff=True) as w:
        for _ in range(4):
            w.write(np.zeros((8, 8), np.float32))
    with pytest.raises(RoicurateError, match="TIFF stack of 4 pages"):
        read_image_file(tmp_path / "movie.tif")


def test_train_without_validation_takes_its_threshold_from_folds_of_whole_recordings(suite2p_sessions, tmp_path):
    sims = [suite2p_sessions[1], suite2p_sessions[3]]
    r = run("train", *sims, "--arch", "cnn2", "--epochs", "1", "--val", "none", "--out", tmp_path)
    assert "out-of-fold scores: 2 folds of whole training recordings" in r.output
    assert "out-of-fold (2 folds of whole training recordings)" in json.loads((tmp_path / "model.json").read_text())[
        "threshold_rule"]
