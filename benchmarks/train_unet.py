"""Train the bundled U-Net (`roicurate segment`) on the simulated recordings' summary images:

    python benchmarks/train_unet.py                       # writes roicurate_plugins/weights/unet-mean.*
    python benchmarks/train_unet.py --image max --name unet-max --out lab_unet/

This trains the simulation-only model (0.1.0's unet-mean). The bundled model since 0.2.0 is trained on the real
Neurofinder mean and Allen max images as well, starting from this one: benchmarks/segment_real.py (which uses
``fit``, ``windows`` and ``target`` from here). A lab with its own mean images and hand-drawn regions.json
trains its own the same way.

Split by recording, as benchmarks/splits.py splits the classifiers' data: train s2p_sim1 + caiman_sim1,
validation s2p_sim2 (both planes) + caiman_sim2 (checkpoint choice, threshold, minimum object size), test
s2p_sim3 + caiman_sim3 (never seen before the end).

Target: the pixels of regions classes.json calls ``soma``; processes and out-of-focus blobs are background (they
are not cells and the network must learn to leave them out), and so are pixels where two somata touch or overlap,
so that touching cells come out as separate connected components.
Training: random 128x128 windows each containing a soma, one of the 8 rotations/flips, a random contrast and
brightness change (x0.8-1.25, +-0.1 after normalisation), batch norm, spatial dropout 0.1, BCE + soft Dice loss,
Adam with a cosine learning-rate decay from 1e-3 (1e-4 as in the literature needs many more steps than a
2-core CPU gives in minutes). The seed fixes the windows and augmentations; multi-threaded CPU convolutions sum
in a varying order, so a rerun's weights and numbers differ in the last digits.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splits import DATA  # noqa: E402

from roicurate.models import save_model  # noqa: E402
from roicurate_plugins.unet import scoring as ev  # noqa: E402
from roicurate_plugins.unet.model import ARCH, CLASSES, normalise, probability, unet  # noqa: E402

SPLIT = {"train": ["s2p_sim1", "caiman_sim1"], "val": ["s2p_sim2", "caiman_sim2"], "test": ["s2p_sim3", "caiman_sim3"]}
PERCENTILES = (1.0, 99.0)
THRESHOLDS = np.round(np.arange(0.2, 0.951, 0.05), 3)
MIN_SIZES = (10, 20, 30, 40)
BASELINE_THRESHOLDS = np.round(np.arange(0.1, 1.51, 0.05), 3)


def images(recording, kind="mean"):
    """[(name, image, cell regions)] of one simulated recording (s2p_sim2: one per plane)."""
    base = DATA / "sim" / recording
    planes = sorted(base.glob("summary_images_plane*.npz"))
    pairs = [(f"{recording}/plane{p.stem[-1]}", p, base / "truth" / f"plane{p.stem[-1]}" / "regions.json")
             for p in planes] or [(recording, base / "summary_images.npz", base / "truth" / "regions.json")]
    out = []
    for name, npz, truth in pairs:
        with np.load(npz) as d:
            image = d[kind].astype(np.float32)
        out.append((name, image, ev.read_truth(truth, image.shape)[0]))
    return out


def target(regions, shape):
    """Soma pixels that belong to exactly one soma and touch no other (8-neighbourhood)."""
    count = np.zeros(shape, np.int16)
    grown = np.zeros(shape, np.int16)
    for r in regions:
        m = ev.union_mask([r], shape)
        count += m
        grown += ndimage.binary_dilation(m, np.ones((3, 3), bool))
    return (count == 1) & (grown == 1)


def windows(data, rng, n, size=128, zoom=None):
    """n random (size x size) windows of normalised image + target, each containing a soma centre. ``zoom`` (lo, hi):
    each window is a (size / z)-pixel crop resampled to size x size, z log-uniform in [lo, hi] (cells z times
    larger)."""
    xs, ys = np.zeros((n, 1, size, size), np.float32), np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        img, tgt, cents = data[rng.integers(len(data))]
        H, W = img.shape
        s = min(int(round(size / np.exp(rng.uniform(*np.log(zoom))))), H, W) if zoom else size
        cy, cx = cents[rng.integers(len(cents))]
        y0 = int(np.clip(rng.integers(int(cy) - s + 9, int(cy) - 7), 0, H - s))
        x0 = int(np.clip(rng.integers(int(cx) - s + 9, int(cx) - 7), 0, W - s))
        win, win_t = img[y0:y0 + s, x0:x0 + s], tgt[y0:y0 + s, x0:x0 + s]
        if s != size:
            resample = lambda a: ndimage.zoom(a, size / s, order=1, grid_mode=True, mode="nearest")[:size, :size]
            win, win_t = resample(win), resample(win_t.astype(np.float32)) > 0.5
        xs[i, 0] = win * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1)
        ys[i, 0] = win_t
    k = int(rng.integers(8))
    flip = (lambda a: a[..., ::-1]) if k >= 4 else (lambda a: a)
    rot = lambda a: np.rot90(flip(a), k % 4, (2, 3)).copy()
    return torch.from_numpy(rot(xs)), torch.from_numpy(rot(ys))


def loss_fn(logits, y):
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice


def scores(items, threshold, min_size):
    """Per-image ``ev.score`` of the objects (map >= threshold, at least ``min_size`` pixels) of each, and their pooled numbers."""
    per = {}
    for name, img, regions, out in items:
        labels = ev.label_objects(out >= threshold, min_size)
        per[name] = ev.score(regions, ev.regions_from_labels(labels), img.shape)
    return {"pooled": ev.pooled(list(per.values())), "per_recording": per}


def choose(items, thresholds):
    """(threshold, min_size) with the best pooled Neurofinder F1 over ``items`` (name, image, regions, map)."""
    best = max(((scores(items, t, m)["pooled"]["f1"], -i, t, m) for i, (t, m) in
                enumerate((t, m) for t in thresholds for m in MIN_SIZES)))
    return float(best[2]), int(best[3])


def predict_all(module, sets, tta=False):
    """[(name, image, regions, probability map)] and seconds per image."""
    module.eval()
    t0 = time.perf_counter()
    out = [(n, img, regs, probability(module, normalise(img, *PERCENTILES), tta)) for n, img, regs in sets]
    return out, (time.perf_counter() - t0) / max(len(sets), 1)


def baseline_maps(sets):
    """The trivial baseline's 'probability': the normalised raw image itself."""
    return [(n, img, regs, normalise(img, *PERCENTILES)) for n, img, regs in sets]


def rounded(d):
    if isinstance(d, dict):
        return {k: rounded(v) for k, v in d.items()}
    return round(d, 4) if isinstance(d, float) else d


def fit(model, data, rng, steps, batch, lr, val_f1=None, eval_every=50, window=128, zoom=None):
    """Train ``model`` on random windows of ``data`` [(normalised image, target, soma centres)]: Adam, cosine decay
    from ``lr`` to lr/100, BCE + soft Dice (``window``, ``zoom``: see ``windows``). With ``val_f1`` (model -> F1)
    every ``eval_every`` steps, returns the best (F1, step, state dict) and the seconds; without it, the last
    step's (None, steps, state dict)."""
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    best, t0, running = (-1.0, 0, None), time.time(), []
    for step in range(1, steps + 1):
        model.train()
        x, y = windows(data, rng, batch, window, zoom)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % eval_every == 0 or step == steps:
            f1 = val_f1(model) if val_f1 else None
            if val_f1 is None:
                best = (None, step, copy.deepcopy(model.state_dict()))
            elif f1 > best[0]:
                best = (f1, step, copy.deepcopy(model.state_dict()))
            note = f", validation F1 {f1:.3f} (best {best[0]:.3f} at step {best[1]})" if val_f1 else ""
            print(f"step {step}: loss {np.mean(running):.4f}{note}, {time.time() - t0:.0f} s", flush=True)
            running = []
    return best, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="mean", help="summary image to train on (mean, max or corr)")
    ap.add_argument("--width", type=int, default=16, help="first level's channels (32 = the literature's half width)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="unet-mean")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "roicurate_plugins" / "weights"))
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    sets = {part: [im for rec in recs for im in images(rec, a.image)] for part, recs in SPLIT.items()}
    data = [(normalise(img, *PERCENTILES), target(regs, img.shape), ev.centres(regs)) for _, img, regs in sets["train"]]
    build = {"in_channels": 1, "width": a.width, "dropout": 0.1}
    model = unet(**build)
    val_f1 = lambda m: scores(predict_all(m, sets["val"])[0], 0.5, 20)["pooled"]["f1"]
    best, seconds = fit(model, data, rng, a.steps, a.batch, a.lr, val_f1, a.eval_every)
    model.load_state_dict(best[2])
    val_maps, _ = predict_all(model, sets["val"])
    thr, min_size = choose(val_maps, THRESHOLDS)
    base_thr, base_min = choose(baseline_maps(sets["val"]), BASELINE_THRESHOLDS)
    test_maps, sec = predict_all(model, sets["test"])
    tta_maps, sec_tta = predict_all(model, sets["test"], tta=True)
    test = {"model": dict(scores(test_maps, thr, min_size), seconds_per_image=sec),
            "model_tta": dict(scores(tta_maps, thr, min_size), seconds_per_image=sec_tta),
            "baseline": scores(baseline_maps(sets["test"]), base_thr, base_min)}
    card = {
        "arch": ARCH, "build_kwargs": build, "pipeline": "any", "task": "segmentation", "crop": None,
        "classes": list(CLASSES), "positive_class": "neuron",
        "input": {"image": a.image, "percentiles": list(PERCENTILES),
                  "normalisation": "per image: (x - p1) / (p99 - p1) over the whole image"},
        "threshold": thr, "min_size": min_size,
        "threshold_rule": "probability threshold and minimum object size (pixels, 8-connected) with the best pooled "
                          "Neurofinder F1 (centres within 5 px) on the validation recordings, without TTA",
        "target": "soma pixels; processes, out-of-focus blobs and pixels where two somata touch are background",
        "training": {"recordings": SPLIT["train"], "validation_recordings": SPLIT["val"],
                     "test_recordings": SPLIT["test"], "images": [n for n, _, _ in sets["train"]],
                     "steps": a.steps, "best_step": best[1], "batch": a.batch, "window": 128, "lr": a.lr,
                     "schedule": "cosine to lr/100", "optimizer": "Adam", "loss": "BCE + soft Dice",
                     "augmentation": "8 rotations/flips, contrast x0.8-1.25, brightness +-0.1",
                     "seed": a.seed, "threads": a.threads, "torch": torch.__version__, "seconds": round(seconds, 1)},
        "validation": rounded(scores(val_maps, thr, min_size)),
        "test": rounded(test),
        "baseline": {"rule": "normalised image >= threshold, 8-connected components, minimum size, both chosen "
                             "on the validation recordings like the model's", "threshold": base_thr,
                     "min_size": base_min},
    }
    path = save_model(a.out, a.name, model, card)
    print(f"{path}: threshold {thr:.2f}, min size {min_size}; validation F1 {card['validation']['pooled']['f1']:.3f}")
    for k, v in test.items():
        p = v["pooled"]
        print(f"test {k:<10} precision {p['precision']:.3f} recall {p['recall']:.3f} F1 {p['f1']:.3f} "
              f"pixel IoU {p['pixel_iou']:.3f}")


if __name__ == "__main__":
    main()
