"""Suite2p source on real Suite2p output (the bundled example, a Suite2p 1.1.0 run) copied to tmp_path: read
every layout, write, revert, combined/, bad input. The legacy 0.x layout is read from the shared datasets."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from roicurate import RoicurateError
from roicurate.curation import Curation
from roicurate_plugins.suite2p import Suite2pSource, natural_key

from conftest import EXAMPLE_SUITE2P

FISSA = "real/fissa_example/suite2p/plane0"         # Suite2p 0.x, flat ops.npy, solidity (shared datasets)
# the bundled example (conftest.EXAMPLE_SUITE2P): Suite2p 1.1.0, two planes + combined/, each plane with ops.npy +
# settings/db/reg/detect; copy_example("plane0") copies one plane

src = Suite2pSource()


def load(path, pickle=False):
    return np.load(path, allow_pickle=pickle)


def ops_of(folder):
    return load(folder / "ops.npy", True).item()


def curation_for(n, seed=0):
    p = np.random.default_rng(seed).random(n)
    return Curation(probabilities=np.stack([1 - p, p], 1), accepted=p >= 0.5, threshold=0.5,
                    classes=("not_cell", "cell"), positive=1, model={"name": "t", "sha256": "0", "arch": "x"})


def curate(plane, seed=0, force=False):
    roiset = src.read(plane)
    src.check_writable(plane, force=force)
    cur = curation_for(len(roiset), seed)
    src.write(plane, roiset, cur, force=force)
    return cur


# ---- detect / expand ----------------------------------------------------------------------------------

def test_detect(example_suite2p, geometry_only_plane, single_plane_folder, tmp_path):
    session = example_suite2p.parent
    for path in (single_plane_folder, single_plane_folder / "plane0", example_suite2p, example_suite2p / "plane1",
                 geometry_only_plane, session):                                              # last: a session
        assert src.detect(path), path
    assert [p.name for p in src.expand(session)] == ["plane0", "plane1"]
    (tmp_path / "truth").mkdir()
    (tmp_path / "LICENSE").write_text("text")
    for path in (tmp_path / "LICENSE", tmp_path / "truth", example_suite2p / "plane0" / "stat.npy"):
        assert not src.detect(path), path
    assert not src.detect(tmp_path)
    assert not src.detect(tmp_path / "missing")


def test_registered_as_plugin(example_suite2p):
    from roicurate import plugins
    assert isinstance(plugins.sources()["suite2p"], Suite2pSource)
    assert plugins.source_for(example_suite2p / "plane0").name == "suite2p"


def test_expand_natural_order(copy_example, example_suite2p):
    s2p = copy_example()
    assert [p.name for p in src.expand(s2p)] == ["plane0", "plane1"]
    assert src.expand(s2p / "plane1") == [s2p / "plane1"]
    for name in ("plane10", "plane2"):
        (s2p / name).mkdir()
    assert [p.name for p in src.expand(s2p)] == ["plane0", "plane1", "plane2", "plane10"]
    assert sorted(["plane10", "plane2", "plane1"], key=natural_key) == ["plane1", "plane2", "plane10"]
    with pytest.raises(RoicurateError, match="combined"):
        src.expand(example_suite2p / "combined")


# ---- reading --------------------------------------------------------------------------------------------

def check_cropped_images(roiset, ops):
    (y0, y1), (x0, x1) = ops["yrange"], ops["xrange"]
    for name, key in (("max", "max_proj"), ("corr", "Vcorr")):
        full, crop = roiset.images[name], ops[key]
        assert full.shape == roiset.shape
        np.testing.assert_array_equal(full[y0:y1, x0:x1], crop)
        assert full[y0 + 1, x0 + 2] == crop[1, 2]
        outside = np.ones(roiset.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert outside.any() and not full[outside].any()


def test_read_suite2p_1x(example_suite2p):
    plane = example_suite2p / "plane0"
    stat, iscell, ops = load(plane / "stat.npy", True), load(plane / "iscell.npy"), ops_of(plane)
    r = src.read(plane)
    assert len(r) == len(stat) == 34 and r.shape == (ops["Ly"], ops["Lx"]) == (128, 128)
    np.testing.assert_array_equal(r.y[r.indptr[3]:r.indptr[4]], stat[3]["ypix"])
    np.testing.assert_array_equal(r.x[r.indptr[3]:r.indptr[4]], stat[3]["xpix"])
    np.testing.assert_array_equal(r.weight[r.indptr[3]:r.indptr[4]], stat[3]["lam"])
    np.testing.assert_array_equal(r.pipeline_accepted, iscell[:, 0] > 0.5)
    np.testing.assert_array_equal(r.features["suite2p_prob"], iscell[:, 1])
    assert r.features["skew"].dtype == np.float64 and r.features["skew"][7] == np.float32(stat[7]["skew"])
    assert {"compact", "npix_norm", "snr", "footprint", "radius", "aspect_ratio", "npix"} <= set(r.features)
    assert not {"ypix", "lam", "med", "soma_crop", "overlap"} & set(r.features)
    np.testing.assert_array_equal(r.images["mean"], ops["meanImg"])
    np.testing.assert_array_equal(r.images["mean_enhanced"], ops["meanImgE"])
    check_cropped_images(r, ops)
    assert isinstance(r.traces, np.memmap) and r.traces.shape == (34, 1500)
    assert (r.source, r.pipeline, r.path) == ("suite2p", "suite2p", str(plane))
    assert r.origin == {"roi_file": str(plane / "stat.npy"), "n": 34}


def test_read_1x_without_ops_npy(copy_example, example_suite2p):
    plane = copy_example("plane0")
    (plane / "ops.npy").unlink()
    with_ops = src.read(example_suite2p / "plane0")
    r = src.read(plane)
    assert len(r) == len(with_ops) and r.shape == with_ops.shape
    assert set(r.images) == {"mean", "mean_enhanced", "max", "corr"}
    for name in r.images:
        np.testing.assert_array_equal(r.images[name], with_ops.images[name])
    merged = {**load(plane / "db.npy", True).item(), **load(plane / "reg_outputs.npy", True).item(),
              **load(plane / "detect_outputs.npy", True).item()}
    check_cropped_images(r, merged)


@pytest.mark.datasets
def test_read_suite2p_014_flat_ops(datasets):
    plane = datasets / FISSA
    assert src.detect(plane) and src.detect(datasets / "real/abo275/501484643/suite2p/plane0")
    assert not src.detect(datasets / "real/fissa_example/LICENSE")
    ops = ops_of(plane)
    r = src.read(plane)
    assert len(r) == len(load(plane / "stat.npy", True)) == 23 and r.shape == (176, 156)
    assert "solidity" in r.features and "snr" not in r.features
    assert r.pipeline_accepted.sum() == 21
    check_cropped_images(r, ops)
    assert r.traces.shape == (23, 864)


@pytest.fixture(scope="session")
def single_plane_folder(tmp_path_factory):
    """A one-plane Suite2p output folder (suite2p/plane0, no combined/), from the example's plane0."""
    s2p = tmp_path_factory.mktemp("single") / "suite2p"
    s2p.mkdir()
    shutil.copytree(EXAMPLE_SUITE2P / "plane0", s2p / "plane0")
    for name in ("db.npy", "settings.npy"):
        shutil.copyfile(EXAMPLE_SUITE2P / name, s2p / name)
    return s2p


def test_read_geometry_only_ops(geometry_only_plane):
    plane = geometry_only_plane
    r = src.read(plane)
    assert len(r) == len(load(plane / "stat.npy", True)) == 34 and r.shape == (128, 128)
    assert r.images == {} and r.traces is None
    assert set(np.unique(r.weight)) <= {0.0, 1.0}
    assert r.pipeline_accepted.all()


def test_read_writes_nothing(copy_example, hash_tree):
    s2p = copy_example()
    before = hash_tree(s2p)
    for plane in src.expand(s2p):
        src.read(plane)
    assert hash_tree(s2p) == before


def test_rois_on_the_frame_border_are_valid(copy_example):
    plane = copy_example("plane0")
    stat = load(plane / "stat.npy", True)
    stat[0]["ypix"] = np.array([0, 0, 1, 127, 127])
    stat[0]["xpix"] = np.array([0, 1, 0, 127, 126])
    stat[0]["lam"] = np.ones(5, np.float32)
    np.save(plane / "stat.npy", stat)
    assert len(src.read(plane)) == 34


def test_empty_plane(copy_example, hash_tree):
    plane = copy_example("plane0")
    np.save(plane / "stat.npy", np.array([], dtype=object))
    np.save(plane / "iscell.npy", np.zeros((0, 2)))
    (plane / "F.npy").unlink()
    r = src.read(plane)
    assert len(r) == 0 and r.shape == (128, 128)
    before = hash_tree(plane)
    src.write(plane, r, curation_for(0))
    assert hash_tree(plane) == before


# ---- bad input: one-line RoicurateError naming the file, nothing changed --------------------------------

def _stat(plane):
    return load(plane / "stat.npy", True)


def _save_stat(plane, edit):
    stat = _stat(plane)
    edit(stat)
    np.save(plane / "stat.npy", stat)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set(key, value, i=0):
    def edit(stat):
        stat[i][key] = value
    return edit


BAD = {
    "stat missing": ("stat.npy", lambda p: (p / "stat.npy").unlink()),
    "stat truncated": ("stat.npy", lambda p: _truncate(p / "stat.npy")),
    "stat garbage": ("stat.npy", lambda p: (p / "stat.npy").write_bytes(os.urandom(500))),
    "stat numeric array": ("stat.npy", lambda p: np.save(p / "stat.npy", np.zeros(34))),
    "stat not dicts": ("stat.npy", lambda p: np.save(p / "stat.npy", np.array([1, "a"] * 17, dtype=object))),
    "stat pickled dict": ("stat.npy", lambda p: np.save(p / "stat.npy", {"ypix": 1})),
    "stat without lam": ("stat.npy", lambda p: _save_stat(p, lambda s: s[5].pop("lam"))),
    "ROI with no pixels": ("stat.npy", lambda p: _save_stat(p, lambda s: s[3].update(
        ypix=np.zeros(0, np.int64), xpix=np.zeros(0, np.int64), lam=np.zeros(0, np.float32)))),
    "NaN lam": ("stat.npy", lambda p: _save_stat(p, lambda s: s[2]["lam"].__setitem__(0, np.nan))),
    "negative lam": ("stat.npy", lambda p: _save_stat(p, lambda s: s[2]["lam"].__setitem__(0, -1.0))),
    "lam length": ("stat.npy", lambda p: _save_stat(p, _set("lam", np.ones(2, np.float32)))),
    "float ypix": ("stat.npy", lambda p: _save_stat(p, lambda s: s[1].update(ypix=s[1]["ypix"] + 0.5))),
    "pixel below 0": ("stat.npy", lambda p: _save_stat(p, lambda s: s[4]["ypix"].__setitem__(0, -1))),
    "pixel past Lx": ("stat.npy", lambda p: _save_stat(p, lambda s: s[4]["xpix"].__setitem__(0, 128))),
    "iscell missing": ("iscell.npy", lambda p: (p / "iscell.npy").unlink()),
    "iscell truncated": ("iscell.npy", lambda p: _truncate(p / "iscell.npy")),
    "iscell garbage": ("iscell.npy", lambda p: (p / "iscell.npy").write_bytes(b"\x93NUMPY garbage" * 10)),
    "iscell 1-D": ("iscell.npy", lambda p: np.save(p / "iscell.npy", np.ones(34))),
    "iscell 3 columns": ("iscell.npy", lambda p: np.save(p / "iscell.npy", np.ones((34, 3)))),
    "iscell bool": ("iscell.npy", lambda p: np.save(p / "iscell.npy", np.ones((34, 2), bool))),
    "iscell object": ("iscell.npy", lambda p: np.save(p / "iscell.npy", np.ones((34, 2), object))),
    "iscell NaN": ("iscell.npy", lambda p: np.save(p / "iscell.npy", np.full((34, 2), np.nan))),
    "iscell N-1 rows": ("iscell.npy", lambda p: np.save(p / "iscell.npy", load(p / "iscell.npy")[:-1])),
    "ops missing": ("ops.npy", lambda p: [(p / f).unlink() for f in
                                          ("ops.npy", "db.npy", "settings.npy", "reg_outputs.npy", "detect_outputs.npy")]),
    "ops truncated": ("ops.npy", lambda p: _truncate(p / "ops.npy")),
    "ops not a dict": ("ops.npy", lambda p: np.save(p / "ops.npy", np.zeros(3))),
    "ops without Ly": ("ops.npy", lambda p: np.save(p / "ops.npy", {"Lx": 128})),
    "db.npy corrupt, no ops.npy": ("db.npy", lambda p: ((p / "ops.npy").unlink(), _truncate(p / "db.npy"))),
    "F.npy wrong rows": ("F.npy", lambda p: np.save(p / "F.npy", np.zeros((3, 10), np.float32))),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, copy_example, hash_tree):
    plane = copy_example("plane0")
    fname, damage = BAD[case]
    damage(plane)
    before = hash_tree(plane)
    with pytest.raises(RoicurateError) as e:
        src.read(plane)
    msg = str(e.value)
    assert "\n" not in msg and fname in msg, msg
    assert hash_tree(plane) == before


# ---- writing --------------------------------------------------------------------------------------------

def test_write(copy_example):
    plane = copy_example("plane0")
    original = (plane / "iscell.npy").read_bytes()
    pipeline_accepted = int((load(plane / "iscell.npy")[:, 0] > 0.5).sum())
    cur = curate(plane)
    iscell = load(plane / "iscell.npy")
    assert iscell.dtype == np.float64 and iscell.shape == (34, 2)
    np.testing.assert_array_equal(iscell[:, 0], cur.accepted.astype(float))
    np.testing.assert_array_equal(iscell[:, 1], cur.score)
    assert (plane / "iscell_suite2p.npy").read_bytes() == original
    rec = json.loads((plane / "roicurate.json").read_text())
    assert rec["model"] == {"name": "t", "sha256": "0", "arch": "x"} and rec["threshold"] == 0.5
    assert rec["counts"] == {"rois": 34, "accepted_before": pipeline_accepted, "accepted_after": int(cur.accepted.sum())}
    assert rec["classes"] == ["not_cell", "cell"] and rec["roicurate_version"] and rec["time"]
    assert rec["written_sha256"] == hashlib.sha256((plane / "iscell.npy").read_bytes()).hexdigest()
    # what Suite2p's GUI does with it: np.load without pickle, column 0 as bool
    assert load(plane / "iscell.npy")[:, 0].astype(bool).sum() == cur.accepted.sum()
    assert len(src.read(plane)) == 34


def test_second_write_keeps_first_original_and_revert(copy_example, hash_tree):
    plane = copy_example("plane1")
    before = hash_tree(plane)
    original = (plane / "iscell.npy").read_bytes()
    curate(plane, seed=1)
    curate(plane, seed=2)
    assert (plane / "iscell_suite2p.npy").read_bytes() == original
    assert "restored" in src.revert(plane)
    assert (plane / "iscell.npy").read_bytes() == original
    assert not (plane / "iscell_suite2p.npy").exists() and not (plane / "roicurate.json").exists()
    assert hash_tree(plane) == before
    with pytest.raises(RoicurateError, match="nothing to revert"):
        src.revert(plane)


def test_edited_after_write_needs_force(copy_example, hash_tree):
    plane = copy_example("plane1")
    curate(plane)
    iscell = load(plane / "iscell.npy")
    iscell[0, 0] = 1 - iscell[0, 0]          # a flip in the Suite2p GUI rewrites the whole file
    np.save(plane / "iscell.npy", iscell)
    before = hash_tree(plane)
    with pytest.raises(RoicurateError, match="--force") as e:
        src.check_writable(plane)
    assert "iscell.npy" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RoicurateError, match="--force"):
        src.write(plane, src.read(plane), curation_for(27))
    assert hash_tree(plane) == before
    src.check_writable(plane, force=True)
    curate(plane, seed=3, force=True)
    src.check_writable(plane)                # our own write is recognised again


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(copy_example, hash_tree):
    plane = copy_example("plane0")
    before = hash_tree(plane)
    os.chmod(plane, 0o555)
    try:
        src.read(plane)
        with pytest.raises(RoicurateError, match="not writable"):
            src.check_writable(plane)
    finally:
        os.chmod(plane, 0o755)
    assert hash_tree(plane) == before


# ---- combined/ --------------------------------------------------------------------------------------------

def test_combined_is_rebuilt_and_reverted(copy_example, hash_tree):
    s2p = copy_example()
    before = hash_tree(s2p)
    comb_original = (s2p / "combined" / "iscell.npy").read_bytes()
    # the shipped combined/ is what Suite2p made: the planes' iscell concatenated
    np.testing.assert_array_equal(load(s2p / "combined" / "iscell.npy"),
                                  np.concatenate([load(s2p / p / "iscell.npy") for p in ("plane0", "plane1")]))
    planes = src.expand(s2p)
    for i, plane in enumerate(planes):
        curate(plane, seed=i)
    src.finish_batch(planes)
    comb = load(s2p / "combined" / "iscell.npy")
    assert comb.dtype == np.float64 and comb.shape == (61, 2)
    np.testing.assert_array_equal(comb, np.concatenate([load(p / "iscell.npy") for p in planes]))
    assert (s2p / "combined" / "iscell_suite2p.npy").read_bytes() == comb_original
    assert json.loads((s2p / "combined" / "roicurate.json").read_text())["rebuilt_from"] == ["plane0", "plane1"]

    curate(planes[0], seed=5)                # a second run keeps combined's first original too
    src.finish_batch(planes[:1])
    assert (s2p / "combined" / "iscell_suite2p.npy").read_bytes() == comb_original

    msg = src.revert(s2p)
    assert "plane0" in msg and "plane1" in msg and "combined" in msg
    assert hash_tree(s2p) == before


def test_revert_plane_by_plane_keeps_combined_in_step(copy_example, hash_tree):
    s2p = copy_example()
    before = hash_tree(s2p)
    planes = src.expand(s2p)
    for plane in planes:
        curate(plane)
    src.finish_batch(planes)
    src.revert(planes[0])                    # plane1 still curated: combined follows the planes
    np.testing.assert_array_equal(load(s2p / "combined" / "iscell.npy"),
                                  np.concatenate([load(p / "iscell.npy") for p in planes]))
    src.revert(planes[1])                    # nothing curated any more: combined's original is back
    assert hash_tree(s2p) == before
    with pytest.raises(RoicurateError, match="nothing to revert"):
        src.revert(s2p)


def test_combined_row_mismatch(copy_example, hash_tree):
    s2p = copy_example()
    stat = load(s2p / "combined" / "stat.npy", True)
    np.save(s2p / "combined" / "stat.npy", stat[:-1])
    before = hash_tree(s2p)
    with pytest.raises(RoicurateError, match="combined") as e:
        src.check_writable(s2p / "plane0")
    assert "\n" not in str(e.value)
    with pytest.raises(RoicurateError, match="combined"):
        src.finish_batch([s2p / "plane0"])
    assert hash_tree(s2p) == before


def test_combined_folder_is_refused(copy_example):
    s2p = copy_example()
    assert src.detect(s2p / "combined")
    for call in (src.expand, src.revert):
        with pytest.raises(RoicurateError, match="suite2p"):
            call(s2p / "combined")


def test_single_plane_folder_without_combined(single_plane_folder, tmp_path):
    s2p = tmp_path / "suite2p"
    shutil.copytree(single_plane_folder, s2p)
    planes = src.expand(s2p)
    curate(planes[0])
    src.finish_batch(planes)                       # no combined/: nothing else written
    assert sorted(p.name for p in s2p.iterdir()) == ["db.npy", "plane0", "settings.npy"]
