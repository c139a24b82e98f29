"""CaImAn source and live API on files in the layout of CaImAn 1.12.1's cnm.save() (built by caiman_files.py),
copied to tmp_path."""
import hashlib
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sp

import roicurate.caiman as live
from roicurate import RoicurateError, __version__
from roicurate.crops import CropSpec, linear_resize_matrix, make_crops
from roicurate.curation import Curation
from roicurate.rois import RoiSet, roi_fingerprint
from roicurate_plugins.caiman import CaimanSource, load_estimates

import caiman_files

EVALUATED = "evaluated"            # N components, idx_components set (caiman_files.write_evaluated)
SELECTED = "selected"              # after select_components: the N_ACCEPTED accepted + discarded_components
REAL = "shape_only"                # shape-only, as the labelled real sets: A, dims, idx_components
SIM = caiman_files.simulate(0)     # what the evaluated and selected files hold
N, N_ACCEPTED = SIM["A"].shape[1], len(SIM["idx_components"])
DIMS = caiman_files.DIMS
OURS = {"estimates/idx_components", "estimates/idx_components_bad", "estimates/roicurate_probability",
        "estimates/cnn_preds"}
OUR_ATTRS = {"roicurate_model", "roicurate_sha256", "roicurate_threshold", "roicurate_version", "roicurate_time",
             "roicurate_reference_diameter", "roicurate_diameter_source", "roicurate_inputs",
             "roicurate_backup_sha256", "roicurate_content_sha256", "roicurate_human", "roicurate_roi_sha256",
             "roicurate_operating_point", "roicurate_tta"}

# Every attribute of a CaImAn 1.12.1 Estimates after fit/refit/evaluate_components and a script that sets Cn:
# the /estimates keys of cnm.save()'s file (asserted below against the real file) plus the three it never saves.
ESTIMATES_SAVED = (
    "A", "A_thr", "Ab", "Ab_dense", "AtA", "AtY_buf", "C", "CC", "CY", "C_on", "Cf", "Cn", "F_dff",
    "OASISinstances", "R", "S", "SNR_comp", "W", "YrA", "Yr_buf", "b", "b0", "bl", "c1", "center", "cnn_preds",
    "dims", "discarded_components", "ecc", "f", "g", "idx_components", "idx_components_bad", "ind_new", "lam",
    "mn", "neurons_sn", "noisyC", "nr", "psx", "r_values", "rho_buf", "shifts", "sn", "sv", "vr")
ESTIMATES_UNSAVED = ("coordinates", "groups", "merged_ROIs")

src = CaimanSource()


# ---- fixtures and helpers ----------------------------------------------------------------------------
@pytest.fixture
def copy_file(copy_caiman):
    return copy_caiman


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained cnn2 saved as a roicurate model (the bundled caiman-cnn2 is trained elsewhere)."""
    import torch
    from roicurate.models import save_model
    from roicurate_plugins.nets import cnn2
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model")
    save_model(out, "tiny", cnn2(), {"arch": "cnn2", "build_kwargs": {}, "crop": CropSpec(50, binarize=0.2).to_dict(),
                                     "classes": ["not_cell", "cell"], "threshold": 0.5})
    return str(out)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def curation_for(n, seed=0):
    p = np.random.default_rng(seed).random(n)
    return Curation(probabilities=np.stack([1 - p, p], 1), accepted=p >= 0.5, threshold=0.5,
                    classes=("not_cell", "cell"), positive=1, model={"name": "t", "sha256": "0", "arch": "x"})


def snapshot(path):
    """{name: (dtype, shape, value bytes, attrs)} of every group and dataset in an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: (type(v).__name__, repr(v)) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                if isinstance(v, np.ndarray):
                    v = repr(v.tolist()) if v.dtype == object else v.tobytes()
                out[name] = (str(obj.dtype), obj.shape, v if isinstance(v, bytes) else repr(v), attrs)
            else:
                out[name] = ("group", None, None, attrs)
        out["/"] = ("group", None, None, {k: repr(v) for k, v in f.attrs.items()})
        f.visititems(visit)
    return out


def read_A(path):
    with h5py.File(path, "r") as f:
        g = f["estimates/A"]
        A = sp.csc_matrix((g["data"][()], g["indices"][()], g["indptr"][()]), shape=tuple(g["shape"][()]))
        return A, tuple(int(d) for d in f["estimates/dims"][()])


class Estimates:
    """Stand-in with exactly the attributes of CaImAn 1.12.1's Estimates (None unless given)."""

    def __init__(self, **values):
        for name in ESTIMATES_SAVED + ESTIMATES_UNSAVED:
            setattr(self, name, values.pop(name, None))
        assert not values, f"not an Estimates attribute: {sorted(values)}"


class CNMF:
    def __init__(self, estimates, gsig=(4, 4)):
        self.estimates = estimates
        self.params = type("CNMFParams", (), {"init": {"gSig": list(gsig)}})()


def estimates_from_file(path):
    """What load_CNMF gives, by hand: every /estimates dataset as an attribute, 'NoneType' -> None, A -> csc."""
    values = {}
    with h5py.File(path, "r") as f:
        for key, obj in f["estimates"].items():
            if key == "discarded_components":
                values[key] = None if isinstance(obj, h5py.Dataset) else Estimates()
            elif isinstance(obj, h5py.Group):
                values[key] = sp.csc_matrix((obj["data"][()], obj["indices"][()], obj["indptr"][()]),
                                            shape=tuple(obj["shape"][()]))
            else:
                v = obj[()]
                values[key] = None if isinstance(v, bytes) and v == b"NoneType" else v
    values["dims"] = tuple(int(d) for d in values["dims"])
    return Estimates(**values)


# ---- layout and reading --------------------------------------------------------------------------------
def test_stand_in_has_the_estimates_keys_of_saved_files(caiman_files):
    for kind in (EVALUATED, SELECTED):
        with h5py.File(caiman_files[kind], "r") as f:
            assert sorted(f["estimates"]) == sorted(ESTIMATES_SAVED)


@pytest.mark.datasets
def test_stand_in_has_the_real_estimates_keys(datasets):
    for rel in ("sim/caiman_sim1/caiman/cnmf_refit_evaluated.hdf5", "sim/caiman_sim1/caiman/cnmf_selected.hdf5"):
        with h5py.File(datasets / rel, "r") as f:
            assert sorted(f["estimates"]) == sorted(ESTIMATES_SAVED)


def test_detect(copy_file, tmp_path):
    p = copy_file(REAL)
    assert src.detect(p)
    h5 = tmp_path / "x.h5"
    h5.write_bytes(b"")
    assert src.detect(h5)
    assert not src.detect(tmp_path)
    (tmp_path / "stat.npy").write_bytes(b"")
    assert not src.detect(tmp_path / "stat.npy")
    assert src.expand(p) == [p]


def test_read_evaluated_file(copy_file):
    p = copy_file(EVALUATED)
    rs = src.read(p)
    A, dims = read_A(p)
    assert len(rs) == N and rs.shape == dims == DIMS
    for k in (0, 17, N - 1):                      # pixel (y, x) = unravel_index(row, dims, order='F')
        dense = np.zeros(dims, np.float32)
        sl = slice(rs.indptr[k], rs.indptr[k + 1])
        dense[rs.y[sl], rs.x[sl]] = rs.weight[sl]
        np.testing.assert_array_equal(dense, A[:, k].toarray().reshape(dims, order="F").astype(np.float32))
    with h5py.File(p, "r") as f:
        idx = f["estimates/idx_components"][()]
        np.testing.assert_array_equal(rs.images["corr"], f["estimates/Cn"][()])
        np.testing.assert_array_equal(rs.features["SNR_comp"], f["estimates/SNR_comp"][()])
        np.testing.assert_array_equal(rs.features["r_values"], f["estimates/r_values"][()])
    assert "cnn_preds" not in rs.features          # use_cnn=False: cnn_preds is [] in the file
    np.testing.assert_array_equal(np.flatnonzero(rs.pipeline_accepted), idx)
    assert rs.pipeline_accepted.sum() == N_ACCEPTED
    assert (rs.source, rs.pipeline, rs.path) == ("caiman", "caiman", str(p))
    assert rs.origin == {"roi_file": str(p), "n": N, "gSig": [4, 4]}
    # mean image = temporal mean of CaImAn's model A C + b f, pixels in Fortran order
    mean = (A @ SIM["C"].mean(1) + SIM["b"] @ SIM["f"].mean(1)).reshape(dims, order="F")
    np.testing.assert_allclose(rs.images["mean"], mean.astype(np.float32), rtol=1e-5)


@pytest.mark.datasets
def test_mean_image_matches_the_movie_of_a_real_caiman_run(datasets):
    """On CaImAn's own output the model's mean image is the movie's real mean image."""
    rs = src.read(datasets / "sim/caiman_sim1/caiman/cnmf_refit_evaluated.hdf5")
    mean = np.load(datasets / "sim/caiman_sim1/summary_images.npz")["mean"]
    assert len(rs) == 205 and rs.pipeline_accepted.sum() == 146
    assert np.corrcoef(rs.images["mean"].ravel(), mean.ravel())[0, 1] > 0.9999


def test_read_selected_and_shape_only_files(copy_file):
    rs = src.read(copy_file(SELECTED))
    assert len(rs) == N_ACCEPTED and rs.pipeline_accepted.all()
    real = copy_file(REAL)
    rs = src.read(real)                            # /dims, b, C, Cn are all None here
    with h5py.File(real, "r") as f:
        n_real, dims_real = f["estimates/A/shape"][1], tuple(f["estimates/dims"][()])
    assert len(rs) == n_real > 0 and rs.shape == dims_real and rs.images == {} and rs.features == {}
    assert rs.pipeline_accepted.all() and rs.origin["gSig"] == [5, 5]


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _set_A(f, A):
    A = sp.csc_matrix(A)
    del f["estimates/A"]
    g = f.create_group("estimates/A")
    for k, v in (("data", A.data), ("indices", A.indices), ("indptr", A.indptr), ("shape", np.array(A.shape))):
        g.create_dataset(k, data=v)


def _nan(f):
    f["estimates/A/data"][3] = np.nan


def _no_A(f):
    del f["estimates/A"]


def _bad_dims(f):                      # the shape-only file is 100 x 96 pixels
    del f["estimates/dims"]
    f["estimates/dims"] = np.array([90, 96])


def _bad_indices(f):
    f["estimates/A/indices"][0] = 10 ** 7


def _zero_components(f):
    _set_A(f, sp.csc_matrix((100 * 96, 0)))


@pytest.mark.parametrize("edit, message", [
    (None, "not an HDF5 file"),
    (_no_A, "no estimates/A"),
    (_bad_dims, "has 9600 rows but dims 90x96"),
    (_zero_components, "has no components"),
    (_nan, "NaN"),
    (_bad_indices, "estimates.A is not a valid matrix"),
])
def test_bad_input_is_one_line_and_untouched(copy_file, edit, message):
    p = copy_file(REAL)
    if edit is None:
        p.write_bytes(b"this is not HDF5\n" * 10)
    else:
        _edit(p, edit)
    before = sha(p)
    with pytest.raises(RoicurateError) as e:
        src.read(p)
    assert message in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)
    assert sha(p) == before and sorted(os.listdir(p.parent)) == [p.name]


def test_backup_file_is_refused(copy_file):
    p = copy_file(REAL, "estimates.roicurate-backup.hdf5")
    with pytest.raises(RoicurateError, match="roicurate's backup of estimates.hdf5"):
        src.read(p)


# ---- CaImAn's CNN patch convention -----------------------------------------------------------------------
def test_linear_resize_matches_cv2_by_hand():
    # cv2.resize(np.array([[0., 1.]]), (4, 1)) == [[0, .25, .75, 1]] (half-pixel centres, clamped edges)
    np.testing.assert_allclose(linear_resize_matrix(2, 4), [[1, 0], [.75, .25], [.25, .75], [0, 1]])
    np.testing.assert_allclose(linear_resize_matrix(4, 2), [[.5, .5, 0, 0], [0, 0, .5, .5]])
    np.testing.assert_array_equal(linear_resize_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(linear_resize_matrix(34, 50).sum(1), 1)


def _blob(shape, cy, cx, s=2.0, r=6):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    keep = w > np.exp(-r * r / (2 * s * s))
    return yy[keep], xx[keep], w[keep]


def test_caiman_patch_norm_centring_and_clipping():
    rois = [_blob((80, 90), 30.6, 40.2), _blob((80, 90), 2.0, 3.0), _blob((80, 90), 78.0, 88.5)]
    rs = RoiSet.from_pixels((80, 90), *zip(*rois))
    # size == 2*half makes the resize the identity: the raw patch, L2-normalised
    spec = CropSpec(size=18, style="caiman", gsig=2)          # half = min(4*2+1, 18) = 9
    crops = make_crops(rs, spec)
    assert crops.shape == (3, 1, 18, 18)
    np.testing.assert_allclose((crops.astype(np.float64) ** 2).sum((1, 2, 3)), 1, rtol=1e-6)
    # centre of mass (30.6, 40.2) truncates to (30, 40): window rows 21..38, cols 31..48
    dense = np.zeros((80, 90))
    dense[rois[0][0], rois[0][1]] = rois[0][2]
    ref = dense[21:39, 31:49] / np.linalg.norm(dense[21:39, 31:49])
    np.testing.assert_allclose(crops[0, 0], ref, rtol=1e-6, atol=1e-7)
    # near the edges the centre is clipped to [half, dims - half]: the window stays inside the frame
    dense[:] = 0
    dense[rois[1][0], rois[1][1]] = rois[1][2]
    np.testing.assert_allclose(crops[1, 0], dense[:18, :18] / np.linalg.norm(dense[:18, :18]), rtol=1e-6, atol=1e-7)
    dense[:] = 0
    dense[rois[2][0], rois[2][1]] = rois[2][2]
    np.testing.assert_allclose(crops[2, 0], dense[-18:, -18:] / np.linalg.norm(dense[-18:, -18:]), rtol=1e-6, atol=1e-7)
    # gSig from the RoiSet's origin when the spec has none, default 4 without either
    rs.origin["gSig"] = [2, 2]
    np.testing.assert_array_equal(make_crops(rs, CropSpec(size=18, style="caiman")), crops)
    rs.origin.clear()
    np.testing.assert_array_equal(make_crops(rs, CropSpec(size=34, style="caiman"))[:1],
                                  make_crops(rs, CropSpec(size=34, style="caiman", gsig=4))[:1])


def _caiman_reference(A, dims, gSig, patch_size=50):
    """evaluate_components_CNN's patch code, with its cv2.resize written out pixel by pixel."""
    half = np.minimum(gSig[0] * 4 + 1, patch_size), np.minimum(gSig[1] * 4 + 1, patch_size)
    dims = np.array(dims)
    coms = [ndi.center_of_mass(mm.toarray().reshape(dims, order="F")) for mm in A.tocsc().T]
    coms = np.maximum(coms, half)
    coms = np.array([np.minimum(c, dims - half) for c in coms]).astype(int)
    out = []
    for mm, c in zip(A.tocsc().T, coms):
        im = mm.toarray().reshape(dims, order="F")[c[0] - half[0]:c[0] + half[0], c[1] - half[1]:c[1] + half[1]]
        im = im / np.linalg.norm(im)
        res = np.zeros((patch_size, patch_size))
        for dy in range(patch_size):
            for dx in range(patch_size):
                v = 0.0
                sy, sx = (dy + .5) * im.shape[0] / patch_size - .5, (dx + .5) * im.shape[1] / patch_size - .5
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                fy, fx = sy - y0, sx - x0
                if y0 < 0: y0, fy = 0, 0.0
                if x0 < 0: x0, fx = 0, 0.0
                if y0 >= im.shape[0] - 1: y0, fy = im.shape[0] - 1, 0.0
                if x0 >= im.shape[1] - 1: x0, fx = im.shape[1] - 1, 0.0
                for wy, yy in ((1 - fy, y0), (fy, min(y0 + 1, im.shape[0] - 1))):
                    for wx, xx in ((1 - fx, x0), (fx, min(x0 + 1, im.shape[1] - 1))):
                        v += wy * wx * im[yy, xx]
                res[dy, dx] = v
        out.append(res)
    return np.array(out)


def test_caiman_patches_match_caiman_on_a_real_file(copy_file):
    p = copy_file(EVALUATED)
    rs = src.read(p)
    A, dims = read_A(p)
    ks = np.array([caiman_files.corner_soma(SIM), 10, 20, N - 1])
    ours = make_crops(rs, CropSpec(50, style="caiman"), ks)[:, 0]
    np.testing.assert_allclose(ours, _caiman_reference(A[:, ks], dims, (4, 4)), atol=1e-6)
    try:
        import cv2
    except ImportError:
        return
    ref = [cv2.resize(x, (50, 50)) for x in _caiman_reference(A[:, ks], dims, (4, 4), patch_size=34)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_cropspec_style_round_trip_and_errors():
    spec = CropSpec(50, style="caiman", gsig=(4, 5))
    assert CropSpec.from_dict(spec.to_dict()) == spec
    assert CropSpec.from_dict({"size": 50, "channels": ["mask"]}).style == "centered"
    rs = RoiSet.from_pixels((20, 20), [[5, 6]], [[5, 5]])
    with pytest.raises(RoicurateError, match="only the mask channel"):
        make_crops(rs, CropSpec(50, ("mask", "mean"), style="caiman"))
    with pytest.raises(RoicurateError, match="unknown crop style"):
        make_crops(rs, CropSpec(50, style="nope"))


# ---- writing and reverting ---------------------------------------------------------------------------
def test_write_sets_only_our_keys_and_keeps_a_backup(copy_file):
    p = copy_file(EVALUATED)
    original, before = sha(p), snapshot(p)
    rs = src.read(p)
    src.check_writable(p)
    cur = curation_for(len(rs))
    src.write(p, rs, cur)
    backup = p.with_name("cnmf_refit_evaluated.roicurate-backup.hdf5")
    assert sha(backup) == original
    assert sorted(os.listdir(p.parent)) == sorted([p.name, backup.name])          # no temp file left
    after = snapshot(p)
    assert set(after) - OURS == set(before) - OURS
    for name, (dtype, shape, value, attrs) in before.items():
        if name in OURS:
            continue
        a_dtype, a_shape, a_value, a_attrs = after[name]
        if name == "estimates":
            assert {k for k in a_attrs} == OUR_ATTRS | set(attrs)
            a_attrs = {k: v for k, v in a_attrs.items() if k not in OUR_ATTRS}
        assert (dtype, shape, value, attrs) == (a_dtype, a_shape, a_value, a_attrs), name
    assert after["estimates/cnn_preds"] == before["estimates/cnn_preds"]           # untouched without as_cnn_preds
    with h5py.File(p, "r") as f:
        est = f["estimates"]
        good, bad = est["idx_components"][()], est["idx_components_bad"][()]
        assert good.dtype == bad.dtype == np.int64
        np.testing.assert_array_equal(good, np.flatnonzero(cur.accepted))
        np.testing.assert_array_equal(np.sort(np.concatenate([good, bad])), np.arange(N))
        np.testing.assert_array_equal(est["roicurate_probability"][()], cur.score)
        assert est["roicurate_probability"].dtype == np.float64
        assert dict(est.attrs) == {"roicurate_model": "t", "roicurate_sha256": "0", "roicurate_threshold": "0.5",
                                   "roicurate_version": __version__, "roicurate_reference_diameter": "none",
                                   "roicurate_diameter_source": "", "roicurate_inputs": '["mask"]',
                                   "roicurate_backup_sha256": original,
                                   "roicurate_roi_sha256": roi_fingerprint(src.read(p)),
                                   "roicurate_content_sha256": est.attrs["roicurate_content_sha256"],
                                   "roicurate_time": est.attrs["roicurate_time"],
                                   "roicurate_human": '{"cell": 0, "not_cell": 0, "overruled": 0, "reviewed": 0}',
                                   "roicurate_operating_point": "", "roicurate_tta": "false"}
        assert est.attrs["roicurate_time"].startswith("20")           # when (roicurate status)
        assert all(isinstance(v, str) for v in est.attrs.values())       # load_CNMF turns them into str values
    np.testing.assert_array_equal(src.read(p).pipeline_accepted, cur.accepted)
    # a second run keeps the first original as the backup; revert restores it byte for byte
    src.check_writable(p)
    src.write(p, rs, curation_for(len(rs), seed=1), as_cnn_preds=True)
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["estimates/cnn_preds"][()], curation_for(N, seed=1).score)
    assert sha(backup) == original
    assert "restored" in src.revert(p)
    assert sha(p) == original and not backup.exists()
    with pytest.raises(RoicurateError, match="no roicurate backup"):
        src.revert(p)


def test_written_file_loads_like_load_cnmf(copy_file, tiny_model):
    p = copy_file(EVALUATED)
    rs = src.read(p)
    src.write(p, rs, curation_for(len(rs)), as_cnn_preds=True)
    est = load_estimates(p)
    assert est.roicurate_threshold == "0.5" and est.cnn_preds.shape == (N,)
    assert est.idx_components.dtype == np.int64 and est.A.shape == (DIMS[0] * DIMS[1], N)
    assert est.discarded_components is None
    cur = live.curate(est, model=tiny_model)                 # a reloaded file can be curated again in memory
    assert len(cur.accepted) == N


def test_selected_file_is_refused_before_anything_is_written(copy_file):
    p = copy_file(SELECTED)
    before = sha(p)
    rs = src.read(p)
    for call in (lambda: src.check_writable(p), lambda: src.write(p, rs, curation_for(len(rs)))):
        with pytest.raises(RoicurateError, match="select_components.*cnmf_refit_evaluated.hdf5.*curate\\(cnm\\)"):
            call()
    assert sha(p) == before and os.listdir(p.parent) == [p.name]


def test_hand_edits_and_stale_backups_need_force(copy_file, caiman_files):
    p = copy_file(EVALUATED)
    rs = src.read(p)
    src.write(p, rs, curation_for(len(rs)))
    with h5py.File(p, "r+") as f:                            # re-filtered after roicurate wrote it
        del f["estimates/idx_components"]
        f["estimates/idx_components"] = np.arange(10)
    with pytest.raises(RoicurateError, match="changed since roicurate wrote it"):
        src.check_writable(p)
    src.check_writable(p, force=True)
    src.write(p, rs, curation_for(len(rs)), force=True)
    # CaImAn re-run and saved under the same name: the old backup belongs to other data
    backup = p.with_name("cnmf_refit_evaluated.roicurate-backup.hdf5")
    shutil.copyfile(caiman_files["evaluated_seed1"], p)
    old_backup = sha(backup)
    src.check_writable(p)           # other components: a re-run, no --force needed (tests/test_reruns.py)
    assert sha(backup) == old_backup
    new_original = sha(p)
    rs = src.read(p)
    src.write(p, rs, curation_for(len(rs)), force=True)
    assert sha(backup) == new_original


def test_write_failure_leaves_the_file_untouched(copy_file, monkeypatch):
    p = copy_file(REAL)
    before = sha(p)
    rs = src.read(p)

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RoicurateError, match="disk full.*nothing changed") as e:
        src.write(p, rs, curation_for(len(rs)))
    monkeypatch.undo()
    assert "\n" not in str(e.value)
    assert sha(p) == before
    assert os.listdir(p.parent) == [p.name]                      # no temp file, and the new backup undone


def test_wrong_component_count_is_refused(copy_file):
    p = copy_file(REAL)
    rs = src.read(p)
    with pytest.raises(RoicurateError, match=f"{len(rs)} components but the curation has 5"):
        src.write(p, rs, curation_for(5))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_and_folder(copy_file):
    p = copy_file(REAL)
    os.chmod(p, 0o444)
    with pytest.raises(RoicurateError, match="read-only"):
        src.check_writable(p)
    os.chmod(p, 0o644)
    os.chmod(p.parent, 0o555)
    try:
        with pytest.raises(RoicurateError, match="not writable"):
            src.check_writable(p)
    finally:
        os.chmod(p.parent, 0o755)


# ---- live objects --------------------------------------------------------------------------------------
def test_live_curate_on_stand_in_objects(caiman_files, tiny_model, copy_file):
    est = estimates_from_file(caiman_files[EVALUATED])
    A_before = est.A.copy()
    cur = live.curate(CNMF(est), model=tiny_model)
    assert len(cur.accepted) == N
    assert est.idx_components.dtype == est.idx_components_bad.dtype == np.int64
    np.testing.assert_array_equal(est.idx_components, np.flatnonzero(cur.accepted))
    np.testing.assert_array_equal(np.sort(np.concatenate([est.idx_components, est.idx_components_bad])), np.arange(N))
    assert est.cnn_preds.shape == (0,)                   # untouched without as_cnn_preds
    assert (est.A != A_before).nnz == 0
    # recorded as what finds the model again (its card's path when given by path), as the file writer does
    assert est.roicurate_model == str((Path(tiny_model) / "tiny.json").resolve()) and est.roicurate_threshold == "0.5"
    # the file path gives the same probabilities (one RoiSet builder for both)
    p = copy_file(EVALUATED)
    from roicurate.curation import curate as run
    from roicurate.models import Classifier
    np.testing.assert_allclose(run(src.read(p), Classifier.load(tiny_model)).probabilities, cur.probabilities)
    # Estimates directly, dense A, as_cnn_preds and a threshold
    dense = Estimates(A=A_before.toarray(), dims=DIMS)
    cur2 = live.curate(dense, model=tiny_model, threshold=0.0, as_cnn_preds=True)
    np.testing.assert_allclose(cur2.probabilities, cur.probabilities, rtol=1e-5)
    assert cur2.accepted.all() and len(dense.idx_components_bad) == 0
    np.testing.assert_array_equal(dense.cnn_preds, cur2.score)


def save_like_cnm(est, path):
    """What ``cnm.save()`` writes of the fields curate() sets: a str as an attribute of /estimates, an array as a
    dataset (into an existing file, standing in for a full save)."""
    with h5py.File(path, "r+") as f:
        g = f["estimates"]
        for key, value in vars(est).items():
            if not (key.startswith("roicurate_") or key in ("idx_components", "idx_components_bad", "cnn_preds")):
                continue
            if isinstance(value, str):
                g.attrs[key] = value
            else:
                if key in g:
                    del g[key]
                g.create_dataset(key, data=value)


def test_live_curate_with_a_model_by_path_saves_a_model_report_can_load(caiman_files, tiny_model, copy_file):
    from roicurate.models import Classifier
    est = estimates_from_file(caiman_files[EVALUATED])
    cur = live.curate(CNMF(est), model=tiny_model, as_cnn_preds=True)
    p = copy_file(EVALUATED, "saved.hdf5")
    save_like_cnm(est, p)
    rec = src.recorded(p)
    assert rec["model"] == cur.model["source"] != cur.model["name"] and rec["intact"]
    clf = Classifier.load(rec["model"])
    assert clf.card["sha256"] == rec["sha256"] == est.roicurate_sha256
    # the live object and the file writer set the same fields and attributes (one verdict mapping)
    q = copy_file(EVALUATED)
    src.write(q, src.read(q), cur, as_cnn_preds=True)
    with h5py.File(p, "r") as fp, h5py.File(q, "r") as fq:
        a, b = fp["estimates"], fq["estimates"]
        backup_attrs = {"roicurate_backup_sha256", "roicurate_content_sha256"}
        # the same attributes and values, but the time of writing (the two writes may fall in different seconds)
        assert {k: v for k, v in a.attrs.items() if k != "roicurate_time"} == \
            {k: v for k, v in b.attrs.items() if k not in backup_attrs | {"roicurate_time"}}
        assert a.attrs["roicurate_time"].startswith("20") and b.attrs["roicurate_time"].startswith("20")
        for key in ("idx_components", "idx_components_bad", "roicurate_probability", "cnn_preds"):
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key][()], b[key][()])


def test_live_curate_refuses_selected_and_foreign_objects(caiman_files, tiny_model):
    est = estimates_from_file(caiman_files[SELECTED])
    assert est.idx_components is None and est.discarded_components is not None
    with pytest.raises(RoicurateError, match="before cnm.estimates.select_components"):
        live.curate(CNMF(est), model=tiny_model)
    with pytest.raises(RoicurateError, match="not a CaImAn CNMF or Estimates"):
        live.curate(object(), model=tiny_model)
    with pytest.raises(RoicurateError, match="has no components"):
        live.curate(Estimates(A=sp.csc_matrix((100, 0)), dims=(10, 10)), model=tiny_model)
    with pytest.raises(RoicurateError, match="only 2-D"):
        live.curate(Estimates(A=sp.csc_matrix((1000, 2)), dims=(10, 10, 10)), model=tiny_model)


def test_cli_apply_and_revert(copy_file, tiny_model):
    from click.testing import CliRunner
    from roicurate.cli import cli
    p = copy_file(EVALUATED)
    sel = copy_file(SELECTED)
    original = sha(p)
    r = CliRunner().invoke(cli, ["apply", str(p), str(sel), "--model", tiny_model])
    assert r.exit_code != 0 and "select_components" in r.output and sha(p) == original   # nothing written
    r = CliRunner().invoke(cli, ["apply", str(p), "--model", tiny_model, "--as-cnn-preds"])
    assert r.exit_code == 0, r.output
    assert f"{N} ROIs" in r.output and f"pipeline accepted {N_ACCEPTED}" in r.output
    assert load_estimates(p).cnn_preds.shape == (N,)
    r = CliRunner().invoke(cli, ["apply", str(p), "--model", tiny_model, "--threshold", "0.99"])
    assert r.exit_code == 0 and f"pipeline accepted {N_ACCEPTED}" in r.output      # CaImAn's own, from the backup
    r = CliRunner().invoke(cli, ["revert", str(p)])
    assert r.exit_code == 0 and sha(p) == original


def test_example_script_demo(copy_file, tiny_model):
    import subprocess
    import sys
    p = copy_file(EVALUATED)
    before = sha(p)
    script = Path(__file__).resolve().parents[1] / "examples" / "caiman_after_cnmf.py"
    r = subprocess.run([sys.executable, str(script), "--demo", str(p), "--model", tiny_model],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{N} components" in r.stdout and f"CaImAn's own evaluation accepted {N_ACCEPTED}" in r.stdout
    assert sha(p) == before
    r = subprocess.run([sys.executable, str(script), "--demo", str(copy_file(SELECTED)), "--model", tiny_model],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "select_components" in r.stderr
