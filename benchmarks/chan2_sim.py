"""Add a simulated structural (red) channel to a shared simulated Suite2p recording.

Why: roicurate's two-channel cell typing (GCaMP + a structural marker such as mCherry in, e.g., inhibitory
neurons) needs recordings where we KNOW which somata are labelled, and no such public data exists here. This
module takes a real Suite2p 1.1.0 run on a simulated movie (``shared/datasets/sim/s2p_simN``), picks a seeded
subset of the ground-truth somata as "red", renders the structural mean image a two-channel run would have,
and writes it, plus ``redcell.npy``, exactly where Suite2p 1.1.0 keeps them:

* ``meanImg_chan2``: ``reg_outputs.npy`` (float32, registered; ``register.py`` registration_outputs_to_dict)
  and ``db.npy`` (float64, the pre-registration mean from the tiff conversion, ``io/tiff.py``); ``ops.npy`` is
  ``{**db, **settings, **reg_outputs, **detect_outputs}`` so it carries the registered one.
* ``nchannels = 2`` lives in ``db`` (``run_s2p.py``: ``twoc = db["nchannels"] > 1``), per plane and top level.
* ``redcell.npy``: ``chan2detect.intensity_ratio`` on the *uncorrected* ``meanImg_chan2`` (1.1.0 commented out
  the bleed-through correction), label = prob > settings['detection']['chan2_threshold'] (0.25).
* ``meanImg_chan2_corrected``: 1.1.0 never computes it (only its GUI displays it when present). 0.14 stored
  ``correct_bleedthrough(Ly, Lx, 3, meanImg, meanImg_chan2)`` in ops; we add the same to ops.npy and
  reg_outputs.npy so GUI and readers can show it. It is an addition, recorded in ``chan2_sim.json``.

Not written: ``F_chan2.npy`` / ``Fneu_chan2.npy`` (there is no red movie) and ``data_chan2.bin``.
Ground truth per plane: ``planeX/cell_types.csv`` (roi,class) for ROIs matched one-to-one to a soma.
Usage: python benchmarks/chan2_sim.py SIM_DIR OUT_DIR [--fraction 0.3] [--seed 0]
"""
import argparse
import json
import os
import shutil
import stat as stat_mod
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, percentile_filter

DEFAULTS = dict(
    red_photons=1.0,        # mean photons/px/frame in a red soma's cytoplasm (before per-cell brightness)
    red_sigma=0.8,          # lognormal sigma of per-cell expression: some cells are dim expressers
    nucleus_dim=(0.3, 0.6), # cytoplasmic marker: the nucleus is this much dimmer than the rim
    nucleus_frac=(0.45, 0.65),  # nucleus edge, as a fraction of the depth inside the soma mask
    psf_sigma=1.0,          # px, Gaussian PSF applied to the red objects
    distractor_frac=0.15,   # red out-of-focus blobs that are no ROI, per red soma
    distractor_photons=(0.3, 0.8),  # their peak, as a fraction of red_photons
    autofluo_photons=2.0,   # smooth autofluorescence background, photons/px/frame
    autofluo_mod=0.4,       # its relative spatial modulation (smooth, sigma autofluo_sigma px)
    autofluo_sigma=30.0,
    bleed=0.12,             # fraction of the green signal ((meanImg - offset)/gain photons) seen in the red PMT
    gain=20.0, offset=200.0, read_noise=15.0,  # red detector, like the green one of the simulator
    chan2_threshold=0.25,   # Suite2p 1.1.0 default settings['detection']['chan2_threshold']
)


# ----------------------------------------------------------------------------- Suite2p 1.1.0, re-implemented
def _extend_roi(ypix, xpix, Ly, Lx, niter=1):
    """sparsedetect.extendROI: grow by the 4-neighbours, niter times."""
    for _ in range(niter):
        yx = np.array(((ypix, ypix, ypix, ypix - 1, ypix + 1), (xpix, xpix + 1, xpix - 1, xpix, xpix)))
        yu = np.unique(yx.reshape(2, -1), axis=1)
        ok = (yu[0] >= 0) & (yu[0] < Ly) & (yu[1] >= 0) & (yu[1] < Lx)
        ypix, xpix = yu[:, ok]
    return ypix, xpix


def _cell_pix(stat, Ly, Lx, lam_percentile=50.0):
    """masks.create_cell_pix: pixels with a high enough lam of some ROI (excluded from every neuropil)."""
    lammap = np.zeros((Ly, Lx))
    for s in stat:
        lammap[s["ypix"], s["xpix"]] = np.maximum(lammap[s["ypix"], s["xpix"]], s["lam"])
    radius = np.median([s["radius"] for s in stat])
    filt = percentile_filter(lammap, percentile=lam_percentile, size=int(radius * 5))
    return ~np.logical_or(lammap < filt, lammap == 0)


def _neuropil_pix(ypix, xpix, cell_pix, inner_radius=2, min_pixels=350, extend_by=5):
    """masks.create_neuropil_masks (rectangular): grow a box until it holds > min_pixels free pixels."""
    Ly, Lx = cell_pix.shape
    ypix, xpix = _extend_roi(ypix, xpix, Ly, Lx, niter=inner_radius)
    nring = np.sum(cell_pix[ypix, xpix] < .5)
    y1, x1, n = ypix.copy(), xpix.copy(), 0
    while n < 100 and np.sum(cell_pix[y1, x1] < .5) - nring <= min_pixels:
        n += 1
        y1, x1 = np.meshgrid(np.arange(max(0, y1.min() - extend_by), min(Ly, y1.max() + extend_by + 1)),
                             np.arange(max(0, x1.min() - extend_by), min(Lx, x1.max() + extend_by + 1)),
                             indexing="ij")
    mask = np.zeros((Ly, Lx), bool)
    ok = cell_pix[y1, x1] < .5
    mask[y1[ok], x1[ok]] = True
    mask[ypix, xpix] = False
    return mask


def suite2p_chan2_prob(stat, meanImg_chan2, inner_neuropil_radius=2, min_neuropil_pixels=350):
    """Suite2p 1.1.0 ``chan2detect.intensity_ratio`` probability, (N,): in / (in + surround) red intensity.

    ``in`` is the lam-weighted mean of the ROI (overlaps included), ``surround`` the mean of its neuropil box
    without any ROI's cell pixels. 1.1.0's ``detect`` feeds it the UNcorrected ``meanImg_chan2`` of the full
    frame, with the extraction defaults inner_neuropil_radius=2, min_neuropil_pixels=350.
    """
    img = np.asarray(meanImg_chan2, np.float64)
    Ly, Lx = img.shape
    cell_pix = _cell_pix(stat, Ly, Lx)
    prob = np.zeros(len(stat))
    for i, s in enumerate(stat):
        lam = np.asarray(s["lam"], np.float64)
        inpix = max(1e-3, float((lam / lam.sum()) @ img[s["ypix"], s["xpix"]]))
        npil = _neuropil_pix(s["ypix"], s["xpix"], cell_pix, inner_neuropil_radius, min_neuropil_pixels)
        prob[i] = inpix / (inpix + img[npil].mean())
    return prob


def correct_bleedthrough(meanImg, meanImg_chan2, nblks=3):
    """chan2detect.correct_bleedthrough: subtract a smoothly blended per-block regression of red on green."""
    mimg, mimg2 = np.asarray(meanImg, np.float64), np.array(meanImg_chan2, np.float64)
    Ly, Lx = mimg.shape
    sT = np.round((Ly + Lx) / (nblks * 2) * 0.25)
    yb, xb = np.linspace(0, Ly, nblks + 1).astype(int), np.linspace(0, Lx, nblks + 1).astype(int)
    masks, weights = np.zeros((nblks, nblks, Ly, Lx)), np.zeros((nblks, nblks))
    for iy in range(nblks):
        for ix in range(nblks):
            sl = np.s_[yb[iy]:yb[iy + 1], xb[ix]:xb[ix + 1]]
            m = np.zeros((Ly, Lx), np.float32)
            m[sl] = 1
            masks[iy, ix] = gaussian_filter(m, sT)
            x, x2 = mimg[sl].ravel(), mimg2[sl].ravel()
            weights[iy, ix] = (x * x2).sum() / (x * x).sum()
    masks /= masks.sum(axis=(0, 1))
    return np.maximum(0, mimg2 - (masks * weights[:, :, None, None]).sum(axis=(0, 1)) * mimg)


# ----------------------------------------------------------------------------- rendering
def _soma_image(coords, shape, brightness, nuc_dim, nuc_frac):
    """A cytoplasmic marker: bright rim, dimmer nucleus (depth from the mask edge), one soma, photons."""
    img = np.zeros(shape)
    yx = np.asarray(coords, int)
    y0, x0 = yx.min(0) - 1
    patch = np.zeros(tuple(yx.max(0) - (y0, x0) + 2), bool)
    patch[yx[:, 0] - y0, yx[:, 1] - x0] = True
    depth = distance_transform_edt(patch)[yx[:, 0] - y0, yx[:, 1] - x0]
    depth = depth / depth.max()
    img[yx[:, 0], yx[:, 1]] = brightness * (1 - nuc_dim / (1 + np.exp(-(depth - nuc_frac) / 0.08)))
    return img


def render_chan2(shape, red_regions, meanImg, nframes, rng, p):
    """Structural mean image (detector units) and per-soma brightness: red somata + distractors, PSF,
    autofluorescence, green bleed-through, and shot + read noise of a mean over ``nframes`` frames."""
    Ly, Lx = shape
    red = np.zeros(shape)
    bright = p["red_photons"] * rng.lognormal(0, p["red_sigma"], len(red_regions))
    for coords, b in zip(red_regions, bright):
        red += _soma_image(coords, shape, b, rng.uniform(*p["nucleus_dim"]), rng.uniform(*p["nucleus_frac"]))
    n_distract = int(round(p["distractor_frac"] * len(red_regions)))
    yy, xx = np.mgrid[:Ly, :Lx]
    for _ in range(n_distract):   # out-of-focus red cells above/below the plane: broad, dim, anywhere
        cy, cx, r, blur = rng.uniform(0, Ly), rng.uniform(0, Lx), rng.uniform(6, 10), rng.uniform(2.5, 4.0)
        blob = gaussian_filter((((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(float), blur)
        red += p["red_photons"] * rng.uniform(*p["distractor_photons"]) * blob / max(blob.max(), 1e-12)
    red = gaussian_filter(red, p["psf_sigma"])
    field = gaussian_filter(rng.standard_normal(shape), p["autofluo_sigma"])
    field /= field.std() + 1e-12
    autofluo = p["autofluo_photons"] * np.clip(1 + p["autofluo_mod"] * field, 0.2, None)
    bleed = p["bleed"] * np.clip((np.asarray(meanImg, np.float64) - p["offset"]) / p["gain"], 0, None)
    photons = red + autofluo + bleed
    sd = np.sqrt(p["gain"] ** 2 * photons + p["read_noise"] ** 2) / np.sqrt(nframes)
    img = p["offset"] + p["gain"] * photons + sd * rng.standard_normal(shape)
    return img.astype(np.float32), bright


def _motion_blur(img, yoff, xoff):
    """The pre-registration mean (db.npy) of a moving frame: the registered mean averaged over the offsets."""
    pairs, counts = np.unique(np.stack([yoff, xoff], 1).astype(int), axis=0, return_counts=True)
    img = np.asarray(img, np.float64)
    return sum(c * np.roll(img, (dy, dx), (0, 1)) for (dy, dx), c in zip(pairs, counts)) / counts.sum()


# ----------------------------------------------------------------------------- files
def _load(path):
    return np.load(path, allow_pickle=True).item()


def _writable_copy(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            q = os.path.join(root, name)
            extra = stat_mod.S_IXUSR if name in dirs else 0
            os.chmod(q, os.stat(q).st_mode | stat_mod.S_IWUSR | stat_mod.S_IRUSR | extra)
    os.chmod(dst, os.stat(dst).st_mode | stat_mod.S_IWUSR)


def make_two_channel(sim_dir, out_dir, fraction=0.3, seed=0, **image_params):
    """Copy ``sim_dir`` to ``out_dir`` and turn its Suite2p run into a two-channel one with known red somata.

    Returns {"planes": {plane: {paths, counts, red_somata (truth ids), ...}}, "params": ...}; the same goes to
    ``out_dir/chan2_sim.json``. ``sim_dir`` is only read.
    """
    unknown = set(image_params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown image parameters: {sorted(unknown)}")
    p = {**DEFAULTS, **image_params}
    sim_dir, out_dir = Path(sim_dir), Path(out_dir)
    if (out_dir / "suite2p").exists():   # stale planes of another recording would be silently mixed in
        raise FileExistsError(f"{out_dir / 'suite2p'} exists; choose a new OUT_DIR")
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in ("suite2p", "truth", "labels.json"):
        src = sim_dir / item
        if src.is_dir():
            _writable_copy(src, out_dir / item)
        elif src.exists():
            shutil.copyfile(src, out_dir / item)
            os.chmod(out_dir / item, 0o644)
    labels = json.loads((sim_dir / "labels.json").read_text())["rois"]
    rng = np.random.default_rng(seed)
    s2p = out_dir / "suite2p"
    planes = sorted((d.name for d in s2p.iterdir() if d.name.startswith("plane")), key=lambda n: int(n[5:]))
    result = {"sim_dir": str(sim_dir), "out_dir": str(out_dir), "fraction": fraction, "seed": seed,
              "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}, "planes": {},
              "meanImg_chan2_corrected": "not produced by Suite2p 1.1.0 (correct_bleedthrough is commented out in "
              "chan2detect.detect); added with correct_bleedthrough(nblks=3) to ops.npy and reg_outputs.npy"}
    chan2_images = {}
    for plane in planes:
        pdir = s2p / plane
        tdir = sim_dir / "truth" / plane if (sim_dir / "truth" / plane).is_dir() else sim_dir / "truth"
        regions = json.loads((tdir / "regions.json").read_text())
        classes = json.loads((tdir / "classes.json").read_text())["classes"]
        soma_idx = np.array([i for i, r in enumerate(regions) if classes[r["id"]] == "soma"])
        red_idx = np.sort(rng.choice(soma_idx, int(round(fraction * len(soma_idx))), replace=False))
        db, reg, ops = _load(pdir / "db.npy"), _load(pdir / "reg_outputs.npy"), _load(pdir / "ops.npy")
        settings = _load(pdir / "settings.npy")
        stat = np.load(pdir / "stat.npy", allow_pickle=True)
        shape = (int(db["Ly"]), int(db["Lx"]))
        img, bright = render_chan2(shape, [regions[i]["coordinates"] for i in red_idx], reg["meanImg"],
                                   int(db["nframes"]), rng, p)
        corrected = correct_bleedthrough(reg["meanImg"], img).astype(np.float32)
        thr = settings["detection"].get("chan2_threshold", p["chan2_threshold"])
        prob = suite2p_chan2_prob(stat, img).astype(np.float32)
        redcell = np.stack([prob > thr, prob], axis=-1).astype(np.float32)   # 1.1.0: stack(bool, float32)
        reg_file_chan2 = str(Path(str(db.get("reg_file", "data.bin"))).with_name("data_chan2.bin"))
        db.update(nchannels=2, reg_file_chan2=reg_file_chan2,
                  meanImg_chan2=_motion_blur(img, reg["yoff"], reg["xoff"]))
        reg.update(meanImg_chan2=img, meanImg_chan2_corrected=corrected)
        ops.update(nchannels=2, reg_file_chan2=reg_file_chan2, meanImg_chan2=img, meanImg_chan2_corrected=corrected)
        for name, d in (("db", db), ("reg_outputs", reg), ("ops", ops)):
            np.save(pdir / f"{name}.npy", d)
        np.save(pdir / "redcell.npy", redcell)
        lab = labels[f"suite2p/{plane}/stat.npy"]
        red_set = set(red_idx.tolist())
        rows = [(i, "red" if g in red_set else "not_red")
                for i, (l, g) in enumerate(zip(lab["label"], lab["matched_gt"])) if l == 1]
        (pdir / "cell_types.csv").write_text("roi,class\n" + "".join(f"{i},{c}\n" for i, c in rows))
        chan2_images[plane] = (img, corrected, redcell)
        result["planes"][plane] = {
            "plane_dir": str(pdir), "cell_types": str(pdir / "cell_types.csv"), "redcell": str(pdir / "redcell.npy"),
            "n_somata": int(len(soma_idx)), "n_red_somata": int(len(red_idx)), "n_rois": int(len(stat)),
            "n_typed_rois": len(rows), "n_red_rois": sum(c == "red" for _, c in rows),
            "n_suite2p_red": int(redcell[:, 0].sum()), "chan2_threshold": float(thr),
            "red_somata": [regions[i]["id"] for i in red_idx],
            "red_brightness": {regions[i]["id"]: round(float(b), 4) for i, b in zip(red_idx, bright)}}
    top = _load(s2p / "db.npy")
    top["nchannels"] = 2
    np.save(s2p / "db.npy", top)
    if (s2p / "combined").is_dir():
        _update_combined(s2p / "combined", planes, chan2_images)
    (out_dir / "chan2_sim.json").write_text(json.dumps(result, indent=1))
    return result


def _update_combined(cdir, planes, chan2_images):
    """io.save.combined for two channels: tiled meanImg_chan2(_corrected) in db.npy, concatenated redcell."""
    db = _load(cdir / "db.npy")
    LY, LX = db["meanImg"].shape
    full, fullc = np.zeros((LY, LX)), np.zeros((LY, LX))
    for plane in planes:
        meanImg = _load(cdir.parent / plane / "reg_outputs.npy")["meanImg"]
        Ly, Lx = meanImg.shape
        (dy, dx), = [(y, x) for y in range(0, LY - Ly + 1, Ly) for x in range(0, LX - Lx + 1, Lx)
                     if np.array_equal(db["meanImg"][y:y + Ly, x:x + Lx], meanImg)]
        full[dy:dy + Ly, dx:dx + Lx], fullc[dy:dy + Ly, dx:dx + Lx] = chan2_images[plane][:2]
    db.update(nchannels=2, meanImg_chan2=full, meanImg_chan2_corrected=fullc)
    np.save(cdir / "db.npy", db)
    np.save(cdir / "redcell.npy", np.concatenate([chan2_images[p][2] for p in planes]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    res = make_two_channel(a.sim_dir, a.out_dir, fraction=a.fraction, seed=a.seed)
    for plane, r in res["planes"].items():
        print(f"{plane}: {r['n_red_somata']}/{r['n_somata']} somata red; {r['n_typed_rois']} of {r['n_rois']} ROIs "
              f"typed ({r['n_red_rois']} red); Suite2p redcell (prob > {r['chan2_threshold']}): {r['n_suite2p_red']}")


if __name__ == "__main__":
    main()
