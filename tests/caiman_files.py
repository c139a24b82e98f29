"""Small CaImAn results in the exact layout of CaImAn 1.12.1's ``cnm.save()``, written with h5py alone.

The layout (group and dataset names, dtypes, attributes, the ``'NoneType'`` stand-in for None, the CSC group of
``A``, ``|S32`` strings for ``bl c1 lam neurons_sn``, ``cnn_preds`` saved as shape (0,) when ``use_cnn=False``,
``discarded_components`` after ``select_components``) is that of the real files of the shared datasets
(``sim/caiman_sim*/caiman/*.hdf5``, ``real/abo275/*/caiman/estimates.hdf5``); ``test_caiman_files.py``
compares them when those are present. The contents are a deterministic simulation: somata (round), processes
(thin curved lines) and small blobs, each column of ``A`` of L2 norm 1 over pixels in Fortran order, traces
``C = AR(1)(S)``, two background components, a correlation image ``Cn``, and CaImAn's quality metrics
``SNR_comp`` / ``r_values`` with ``idx_components`` from CaImAn's own rule (``select_components_from_metrics``:
accept ``r >= rval_thr or SNR > min_SNR``, then drop ``r <= rval_lowest or SNR <= SNR_lowest``).

    write_evaluated(path)     # after cnm.refit + evaluate_components (the usual input of roicurate)
    write_selected(path)      # the same after estimates.select_components(use_object=True) and detrend_df_f
    write_shape_only(path)    # A, dims and idx_components only, as the labelled real sets store masks
"""
import numpy as np

NONE = "NoneType"      # cnm.save() stores None as this scalar variable-length string

# every dataset and attribute of /params in a real cnm.save() file (CaImAn 1.12.1, the demo's quality settings);
# /params/data/dims is set to the file's own dims
PARAMS = {
    'data': (
        {'caiman_version': '1.12.1', 'last_commit': 'FILE-1795225907', 'var_name_hdf5': 'mov'},
        {'decay_time': 0.4, 'dims': None, 'dxy': np.array([1.0, 1.0], float),
         'fnames': np.array([b'/data/movie.tif'], '|S34'), 'fr': 30}),
    'init': (
        {'SC_kernel': 'heat', 'greedyroi_nmf_init_method': 'nndsvdar', 'method_init': 'greedy_roi', 'seed_method': 'auto'},
        {'K': 4, 'SC_nnn': 20, 'SC_normalize': True, 'SC_sigma': 1, 'SC_thr': 0, 'SC_use_NN': False,
         'alpha_snmf': 0.5, 'center_psf': False, 'gSig': np.array([4, 4]), 'gSiz': np.array([9, 9]),
         'greedyroi_nmf_max_iter': 200, 'init_iter': 2, 'kernel': None, 'lambda_gnmf': 1, 'maxIter': 5,
         'max_iter_snmf': 500, 'min_corr': 0.85, 'min_pnr': 20, 'nIter': 5, 'nb': 2, 'normalize_init': True,
         'options_local_NMF': None, 'perc_baseline_snmf': 20, 'ring_size_factor': 1.5, 'rolling_length': 100,
         'rolling_sum': True, 'sigma_smooth_snmf': np.array([0.5, 0.5, 0.5], float), 'snmf_l1_ratio': 0.0,
         'ssub': 2, 'ssub_B': 2, 'tsub': 2}),
    'merging': (
        {},
        {'do_merge': True, 'merge_parallel': False, 'merge_thr': 0.85}),
    'motion': (
        {'border_nan': 'copy'},
        {'gSig_filt': None, 'indices': np.array([b'slice(None, None, None)', b'slice(None, None, None)'], '|S32'),
         'is3D': False, 'max_deviation_rigid': 3, 'max_shifts': np.array([6, 6]), 'min_mov': None, 'niter_rig': 1,
         'nonneg_movie': True, 'num_frames_split': 80, 'num_splits_to_process_els': None,
         'num_splits_to_process_rig': None, 'overlaps': np.array([32, 32]), 'pw_rigid': False,
         'shifts_interpolate': False, 'shifts_opencv': True, 'splits_els': 25, 'splits_rig': 25,
         'strides': np.array([96, 96]), 'upsample_factor_grid': 4, 'use_cuda': False}),
    'online': (
        {'init_method': 'bare', 'movie_name_online': '/data/online_movie.mp4', 'opencv_codec': 'H264', 'path_to_model': '/data/cnn_model_online.h5'},
        {'N_samples_exceptionality': 12, 'W_update_factor': 1, 'batch_update_suff_stat': False,
         'dist_shape_update': False, 'ds_factor': 1, 'epochs': 1, 'expected_comps': 500, 'full_XXt': False,
         'init_batch': 2000, 'iters_shape': 5, 'max_comp_update_shape': np.inf, 'max_num_added': 5,
         'max_shifts_online': 10, 'min_SNR': 2.5, 'min_num_trial': 5, 'minibatch_shape': 100,
         'minibatch_suff_stat': 5, 'motion_correct': True, 'n_refit': 0, 'normalize': False,
         'num_times_comp_updated': np.inf, 'ring_CNN': False, 'rval_thr': 0.8, 'save_online_movie': False,
         'show_movie': False, 'simultaneously': False, 'sniper_mode': False, 'stop_detection': False,
         'test_both': False, 'thresh_CNN_noisy': 0.5, 'thresh_fitness_delta': -50,
         'thresh_fitness_raw': -60.97977932734429, 'thresh_overlap': 0.5, 'update_freq': 200,
         'update_num_comps': True, 'use_corr_img': False, 'use_dense': True, 'use_peak_max': True}),
    'patch': (
        {},
        {'border_pix': 0, 'del_duplicates': False, 'in_memory': True, 'low_rank_background': True,
         'memory_fact': 1, 'n_processes': 2, 'nb_patch': 1, 'only_init': False, 'p_patch': 0, 'p_ssub': 2,
         'p_tsub': 2, 'remove_very_bad_comps': False, 'rf': None, 'skip_refinement': False, 'stride': 6}),
    'preprocess': (
        {'noise_method': 'mean'},
        {'check_nan': True, 'compute_g': False, 'include_noise': False, 'lags': 5, 'max_num_samples_fft': 3072,
         'n_pixels_per_process': 32768, 'noise_range': np.array([0.25, 0.5], float), 'p': 1, 'pixels': None,
         'sn': None}),
    'quality': (
        {},
        {'SNR_lowest': 0.5, 'cnn_lowest': 0.1, 'gSig_range': None, 'max_ecc': 3, 'min_SNR': 2, 'min_cnn_thr': 0.99,
         'rval_lowest': -1, 'rval_thr': 0.85, 'use_cnn': False, 'use_ecc': False}),
    'ring_CNN': (
        {'loss_fn': 'pct'},
        {'lr': 0.001, 'lr_scheduler': None, 'max_epochs': 100, 'n_channels': 2, 'path_to_model': None,
         'patience': 3, 'pct': 0.01, 'remove_activity': False, 'reuse_model': False, 'use_add': False,
         'use_bias': False, 'width': 5}),
    'spatial': (
        {'method_exp': 'dilate', 'method_ls': 'lasso_lars', 'thr_method': 'nrg'},
        {'dist': 3,
         'expandCore': np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]),
         'extract_cc': True, 'maxthr': 0.1, 'medw': None, 'n_pixels_per_process': 32768, 'nb': 2,
         'normalize_yyt_one': True, 'nrgthr': 0.9999, 'num_blocks_per_run_spat': 20, 'se': None, 'ss': None,
         'update_background_components': True}),
    'temporal': (
        {'method_deconvolution': 'oasis', 'noise_method': 'mean'},
        {'ITER': 2, 'bas_nonneg': False, 'block_size_temp': 5000, 'fudge_factor': 0.96, 'lags': 5, 'nb': 2,
         'noise_range': np.array([0.25, 0.5], float), 'num_blocks_per_run_temp': 20, 'optimize_g': False, 'p': 1,
         's_min': None, 'solvers': np.array([b'ECOS', b'SCS'], '|S4'), 'verbosity': False}),
}

ESTIMATES_KEYS = (
    "A", "A_thr", "Ab", "Ab_dense", "AtA", "AtY_buf", "C", "CC", "CY", "C_on", "Cf", "Cn", "F_dff",
    "OASISinstances", "R", "S", "SNR_comp", "W", "YrA", "Yr_buf", "b", "b0", "bl", "c1", "center", "cnn_preds",
    "dims", "discarded_components", "ecc", "f", "g", "idx_components", "idx_components_bad", "ind_new", "lam",
    "mn", "neurons_sn", "noisyC", "nr", "psx", "r_values", "rho_buf", "shifts", "sn", "sv", "vr")
PER_COMPONENT = ("C", "R", "S", "YrA", "F_dff", "SNR_comp", "r_values", "g", "bl", "c1", "lam", "neurons_sn")
DIMS = (90, 110)                  # rows x columns, not square: a transposed reshape cannot pass
FRAMES = 300
MMAP = "/data/memmap_d1_90_d2_110_d3_1_order_C_frames_300.mmap"


def _disc(dims, cy, cx, sigma, rng):
    yy, xx = np.mgrid[:dims[0], :dims[1]]
    w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)) * (1 + 0.1 * rng.random(dims))
    return np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= (2.2 * sigma) ** 2, w, 0.0)


def _process(dims, rng):
    """A thin curved line (a dendrite or axon segment seen in the plane), 1-2 px wide, 25-40 px long."""
    img = np.zeros(dims)
    y, x = rng.uniform(12, dims[0] - 12), rng.uniform(12, dims[1] - 12)
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(25, 41))):
        angle += rng.normal(0, 0.15)
        y, x = np.clip(y + np.sin(angle), 0, dims[0] - 1), np.clip(x + np.cos(angle), 0, dims[1] - 1)
        iy, ix = int(round(y)), int(round(x))
        img[iy, ix] = max(img[iy, ix], 1.0)
        if iy + 1 < dims[0]:
            img[iy + 1, ix] = max(img[iy + 1, ix], 0.4)
    return img


def simulate(seed=0, dims=DIMS, frames=FRAMES, n_soma=24, n_process=6, n_blob=6):
    """The arrays of an evaluated CNMF result: {name: value} for /estimates, plus ``kind`` (soma / process /
    blob per component). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    kinds = ["soma"] * n_soma + ["process"] * n_process + ["blob"] * n_blob
    rng.shuffle(kinds)
    images = []
    for i, kind in enumerate(kinds):
        if kind == "soma":
            # the first soma sits on the frame's corner: a patch window that has to be clipped
            if i == kinds.index("soma"):
                cy, cx = 2.0, 3.0
            else:
                cy, cx = rng.uniform(6, dims[0] - 6), rng.uniform(6, dims[1] - 6)
            images.append(_disc(dims, cy, cx, rng.uniform(2.3, 3.0), rng))
        elif kind == "process":
            images.append(_process(dims, rng))
        else:
            images.append(_disc(dims, rng.uniform(4, dims[0] - 4), rng.uniform(4, dims[1] - 4), 0.8, rng))
    dense = np.stack([im.ravel(order="F") for im in images], 1)
    dense /= np.linalg.norm(dense, axis=0)
    K = len(kinds)
    # metrics: somata mostly clear, processes in between, blobs mostly poor (CaImAn's SNR_comp and r_values)
    lo_hi = {"soma": ((0.3, 12.0), (0.2, 0.98)), "process": ((0.8, 4.0), (0.0, 0.9)), "blob": ((0.2, 1.8), (-0.3, 0.6))}
    snr = np.array([rng.uniform(*lo_hi[k][0]) for k in kinds])
    r_values = np.array([rng.uniform(*lo_hi[k][1]) for k in kinds])
    q = PARAMS["quality"][1]
    accepted = ((r_values >= q["rval_thr"]) | (snr > q["min_SNR"])) & \
        ~((r_values <= q["rval_lowest"]) | (snr <= q["SNR_lowest"]))
    # traces in the units of the movie (A's columns have norm 1): a soma adds about half the background at its centre
    spikes = (rng.random((K, frames)) < 0.02) * rng.uniform(0.5, 2.0, (K, frames)) * (10 + 10 * snr[:, None])
    g = rng.uniform(0.85, 0.95, K)
    C = np.zeros((K, frames))
    for t in range(frames):
        C[:, t] = (C[:, t - 1] * g if t else 0) + spikes[:, t]
    noise_sd = rng.uniform(0.5, 1.5, K)
    YrA = rng.normal(0, 1, (K, frames)) * noise_sd[:, None]
    yy, xx = np.mgrid[:dims[0], :dims[1]]
    b = np.stack([(8 + 3 * yy / dims[0] + 2 * xx / dims[1]).ravel(order="F"),
                  (5 + 5 * np.exp(-((yy - dims[0] / 2) ** 2 + (xx - dims[1] / 2) ** 2) / 800)).ravel(order="F")], 1)
    f = np.stack([1 + 0.05 * np.sin(np.arange(frames) / 40), 1 + 0.1 * rng.random(frames)])
    weight = np.clip(r_values, 0, 1)
    Cn = sum(w * im / im.max() for w, im in zip(weight, images)) + rng.normal(0, 0.02, dims)
    baseline = C.min(1) - 2 * noise_sd
    return {
        "A": dense, "C": C, "R": YrA.copy(), "S": spikes, "YrA": YrA, "b": b, "f": f,
        "Cn": np.clip(Cn, -0.05, 0.95).astype(np.float32), "SNR_comp": snr, "r_values": r_values,
        "cnn_preds": np.zeros(0), "dims": np.array(dims, np.int64), "g": g[:, None],
        "idx_components": np.flatnonzero(accepted).astype(np.int64),
        "idx_components_bad": np.flatnonzero(~accepted).astype(np.int64),
        "bl": _strings(baseline), "c1": _strings(C[:, 0]), "lam": _strings(rng.uniform(0.3, 7, K)),
        "neurons_sn": _strings(noise_sd), "nr": np.int64(K), "shifts": np.zeros(0),
        "sn": rng.uniform(4, 7, dims[0] * dims[1]), "kind": np.array(kinds)}


def corner_soma(sim):
    """The index of the soma centred on the frame's corner (its CNN patch window is clipped)."""
    return int(np.flatnonzero(sim["kind"] == "soma")[0])


def _strings(values):
    """An object array saved by cnm.save(): its fallback to ``|S32`` bytes of each value's str()."""
    return np.array([str(float(v)).encode() for v in values], "S32")


def _write_value(group, key, value):
    import scipy.sparse as sp
    if value is None:
        group[key] = NONE
    elif sp.issparse(value) or (isinstance(value, np.ndarray) and key == "A"):
        A = sp.csc_matrix(value)
        sub = group.create_group(key)
        sub["data"], sub["indices"] = A.data.astype(np.float64), A.indices.astype(np.int32)
        sub["indptr"], sub["shape"] = A.indptr.astype(np.int32), np.array(A.shape, np.int64)
    elif isinstance(value, str):
        group.attrs[key] = value
    else:
        group[key] = value


def _write_params(f, dims, gsig):
    for name, (attrs, values) in PARAMS.items():
        group = f.create_group(f"params/{name}")
        for key, value in attrs.items():
            group.attrs[key] = value
        for key, value in values.items():
            if name == "data" and key == "dims":
                value = np.array(dims, np.int64)
            elif name == "init" and key == "gSig":
                value = np.array(gsig, np.int64)
            _write_value(group, key, value)


def _write(path, estimates, dims, *, gsig=(4, 4), root_dims=True, mmap=MMAP):
    import h5py
    with h5py.File(path, "w") as f:
        if mmap:
            f.attrs["mmap_file"] = mmap
        _write_value(f, "dims", np.array(dims, np.int64) if root_dims else None)
        _write_value(f, "dview", None)
        est = f.create_group("estimates")
        for key in ESTIMATES_KEYS:
            if key in estimates and key != "discarded_components":
                _write_value(est, key, estimates[key])
        disc = estimates.get("discarded_components")
        if isinstance(disc, dict):
            sub = est.create_group("discarded_components")
            for key, value in disc.items():
                _write_value(sub, key, value)
        elif "discarded_components" in estimates:
            _write_value(est, "discarded_components", None)
        _write_params(f, dims, gsig)
        _write_value(f, "remove_very_bad_comps", False)
        _write_value(f, "skip_refinement", False)
    return path


def evaluated_estimates(seed=0):
    """/estimates of an evaluated file: every key of ESTIMATES_KEYS, None where CaImAn leaves None."""
    sim = simulate(seed)
    return {k: sim.get(k) for k in ESTIMATES_KEYS}, sim


def write_evaluated(path, seed=0):
    """``cnmf_refit_evaluated.hdf5``: after refit and evaluate_components(use_cnn=False)."""
    estimates, _ = evaluated_estimates(seed)
    return _write(path, estimates, DIMS)


def write_selected(path, seed=0):
    """``cnmf_selected.hdf5``: the same result after ``select_components(use_object=True)`` (A and every
    per-component field cut to the accepted ones, the rest moved into ``discarded_components``, idx fields None)
    and ``detrend_df_f`` (F_dff)."""
    estimates, _ = evaluated_estimates(seed)
    good, bad = estimates["idx_components"], estimates["idx_components_bad"]
    estimates["F_dff"] = estimates["C"] / (np.abs(estimates["f"][0].mean()) + estimates["C"].mean(1, keepdims=True))
    discarded = {k: None for k in ESTIMATES_KEYS if k not in ("Cn", "psx")}
    discarded.update(dims=estimates["dims"], shifts=np.zeros(0), A=estimates["A"][:, bad], nr=np.int64(len(bad)))
    for key in PER_COMPONENT:
        discarded[key] = None if key == "F_dff" else estimates[key][bad]
        estimates[key] = estimates[key][good]
    estimates.update(A=estimates["A"][:, good], nr=np.int64(len(good)), idx_components=None,
                     idx_components_bad=None, discarded_components=discarded)
    return _write(path, estimates, DIMS)


def write_shape_only(path, seed=0, dims=(100, 96)):
    """A mask-only file as the labelled real sets keep CaImAn's masks (``real/abo275/*/caiman/estimates.hdf5``):
    A, /estimates/dims, every component in idx_components, no traces, images or metrics, /dims None, CaImAn's
    default gSig (5, 5)."""
    sim = simulate(seed, dims=dims, n_soma=14, n_process=3, n_blob=3)
    K = sim["A"].shape[1]
    estimates = {k: None for k in ESTIMATES_KEYS if k not in ("Cn", "psx", "nr")}
    estimates.update(A=sim["A"], dims=np.array(dims, np.int64), idx_components=np.arange(K, dtype=np.int64),
                     idx_components_bad=np.zeros(0, np.int64), g=np.float64(0.0), shifts=np.zeros(0))
    return _write(path, estimates, dims, gsig=(5, 5), root_dims=False, mmap=None)


def truth_record(sim, seed=0):
    """The simulation's truth in the layout of a dataset's ``labels.json`` record (shared datasets' protocol:
    ``label`` 1 iff the component's ground-truth partner is a soma at IoU >= 0.5; ``assigned_gt``,
    ``assigned_iou`` and ``assigned_class`` name the partner, -1 / 0 / None for none). Somata and processes are
    their own partners at a seeded IoU (some somata below 0.5: doubtful), blobs have none (noise)."""
    rng = np.random.default_rng(1000 + seed)
    kinds = sim["kind"]
    iou = np.where(kinds == "soma", rng.uniform(0.3, 0.95, len(kinds)),
                   np.where(kinds == "process", rng.uniform(0.05, 0.6, len(kinds)), 0.0)).round(5)
    has = kinds != "blob"
    return {"label": ((kinds == "soma") & (iou >= 0.5)).astype(int).tolist(),
            "assigned_gt": np.where(has, np.arange(len(kinds)), -1).tolist(), "assigned_iou": iou.tolist(),
            "assigned_class": [str(k) if h else None for k, h in zip(kinds, has)]}


def write_labelled_session(folder, seed=0):
    """``folder/caiman/cnmf_refit_evaluated.hdf5`` and ``folder/labels.json`` (recording = the folder's name) with
    the simulation's truth as the datasets' labels: what a labelled CaImAn recording of the shared datasets
    holds. Returns the HDF5 path."""
    import json
    from pathlib import Path
    folder = Path(folder)
    (folder / "caiman").mkdir(parents=True, exist_ok=True)
    path = write_evaluated(folder / "caiman" / "cnmf_refit_evaluated.hdf5", seed)
    record = truth_record(simulate(seed), seed)
    (folder / "labels.json").write_text(json.dumps({"recording": folder.name,
                                                    "rois": {"caiman/cnmf_refit_evaluated.hdf5": record}}))
    return path
