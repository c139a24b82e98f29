"""`unet-mean` on the real labelled recordings: training, the leave-one-lab-out table and `--missed` on real data.

    python benchmarks/segment_real.py train --hold nf01 --out lolo/a      # one fold: trained without lab nf01
    python benchmarks/segment_real.py train --hold none                   # the bundled model (all labs)
    python benchmarks/segment_real.py table lolo/a [lolo/b ...] --sim-only DIR   # the docs/segment.md table
    python benchmarks/segment_real.py missed lolo/a --sim-only DIR        # `--missed` against the labels

Labs (a lab = its recordings; split by lab, never by cell): nf01, nf02, nf04 = Neurofinder training videos
XX.00 and XX.01, their `mean` image (summary_images.npz = ops meanImg); abo = the six Allen L275 sessions, their
`max` image (the only one they have: an 8-bit contrast-stretched JPEG; per-image normalisation makes it usable).
Truth: Neurofinder `truth/regions.json` (the original Neurofinder labels, what its test set is scored against)
or `--labels grader1` (`regions_grader1.json`, STNeuroNet's denser re-annotation) for training; every score is
against the original labels (Grader1 too, in the table's last column). ABO: `truth/regions.json` (FinalGT).

Training (benchmarks/train_unet.py's loop and target): random `--window` windows each holding a cell, the 8
rotations/flips, contrast x0.8-1.25 and brightness +-0.1 after normalising each image by its 1st/99th
percentiles, and with `--zoom 0.6 1.6` a scale change (the labs' cells differ in size: median 70-200 px);
BCE + soft Dice, Adam with cosine decay. The simulations enter twice: `--init sim` starts from the
simulation-only model (`--sim-only`, the unet-mean of 0.1.0, trained on s2p_sim1 + caiman_sim1), `--sims` adds
their mean images (s2p_sim1/2, caiman_sim1/2; the sim3 pair stays unseen). The fold's threshold and minimum
object size are chosen on its training recordings (never the held-out lab): best pooled Neurofinder F1 against
the original labels (ABO: FinalGT). The last step's weights are kept (no held-out data inside a fold to pick a
checkpoint on).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splits import DATA  # noqa: E402
from train_unet import MIN_SIZES, PERCENTILES, THRESHOLDS, fit, images, rounded, scores, target  # noqa: E402

from roicurate.models import save_model  # noqa: E402
from roicurate_plugins.unet import scoring as ev  # noqa: E402
from roicurate_plugins.unet.model import ARCH, CLASSES, Segmenter, normalise, probability, unet  # noqa: E402

REAL = DATA / "real"
NF = REAL / "neurofinder_train"
LABS = {"nf01": ["neurofinder.01.00", "neurofinder.01.01"], "nf02": ["neurofinder.02.00", "neurofinder.02.01"],
        "nf04": ["neurofinder.04.00", "neurofinder.04.01"],
        "abo": ["501484643", "501574836", "502608215", "510214538", "524691284", "527048992"]}
NF_LABS = ("nf01", "nf02", "nf04")
WEIGHTS = Path(__file__).resolve().parents[1] / "roicurate_plugins" / "weights"
SIMS = ["s2p_sim1", "caiman_sim1", "s2p_sim2", "caiman_sim2"]
SIM_TEST = ["s2p_sim3", "caiman_sim3"]                                # never trained on
PUBLISHED = {"U-Net2DS (published, Neurofinder test set, trained on its training mean images)": 0.57}


def folder(rec):
    return NF / rec if rec.startswith("neurofinder") else REAL / "abo275" / rec


def real_images(lab, labels="original"):
    """[(name, image, regions)] of a lab: Neurofinder mean images or Allen max images, with their cell masks."""
    out = []
    for rec in LABS[lab]:
        base = folder(rec)
        with np.load(base / "summary_images.npz") as d:
            image = d["mean" if lab != "abo" else "max"].astype(np.float32)
        truth = base / "truth" / ("regions_grader1.json" if labels == "grader1" and lab != "abo" else "regions.json")
        out.append((rec, image, ev.read_truth(truth, image.shape)[0]))
    return out


def train(a):
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    labs = [lab for lab in LABS if lab != a.hold and (lab != "abo" or a.abo)]
    train_sets = [im for lab in labs for im in real_images(lab, a.labels)]
    if a.sims:
        train_sets += [im for rec in SIMS for im in images(rec, "mean")]
    data = [(normalise(img, *PERCENTILES), target(regs, img.shape), ev.centres(regs)) for _, img, regs in train_sets]
    build = {"in_channels": 1, "width": 16, "dropout": 0.1}
    model = unet(**build)
    if a.init == "sim":
        model.load_state_dict({k: v.float() for k, v in Segmenter.load(a.sim_only).module.state_dict().items()})
    (_, _, state), seconds = fit(model, data, rng, a.steps, a.batch, a.lr, None, a.eval_every, a.window,
                               a.zoom)
    model.load_state_dict(state)
    choose_on = [im for lab in labs for im in real_images(lab, "original")]      # scored like the test set
    maps, _ = predict_all(model, choose_on)
    best = max((scores(maps, t, m)["pooled"]["f1"], -i, t, m) for i, (t, m) in
               enumerate((t, m) for t in THRESHOLDS for m in MIN_SIZES))
    thr, min_size = float(best[2]), int(best[3])
    base_thr, base_min = choose_baseline(choose_on)
    card = {
        "arch": ARCH, "build_kwargs": build, "pipeline": "any", "task": "segmentation", "crop": None,
        "classes": list(CLASSES), "positive_class": "neuron",
        "input": {"image": "mean", "percentiles": list(PERCENTILES),
                  "normalisation": "per image: (x - p1) / (p99 - p1) over the whole image"},
        "threshold": thr, "min_size": min_size,
        "threshold_rule": "probability threshold and minimum object size (pixels, 8-connected) with the best pooled "
                          "Neurofinder F1 (centres within 5 px) on the training recordings against the original "
                          "Neurofinder labels (ABO: FinalGT), without TTA",
        "target": "labelled cell pixels; pixels where two cells touch or overlap are background",
        "training": {"recordings": [n for n, _, _ in train_sets], "validation_recordings": [],   # none: see threshold_rule
                     "labs": labs + ["sim"] * a.sims,
                     "held_out_lab": a.hold,
                     "test_recordings": LABS.get(a.hold, []), "images": {lab: "max" if lab == "abo" else "mean"
                                                                         for lab in labs},
                     "labels": {"neurofinder": "original (truth/regions.json)" if a.labels == "original" else
                                "Grader1 (truth/regions_grader1.json)", "abo": "FinalGT (truth/regions.json)"},
                     "init": "simulation-only unet-mean 0.1.0 (s2p_sim1 + caiman_sim1)" if a.init == "sim" else
                             "random", "steps": a.steps, "batch": a.batch, "window": a.window, "lr": a.lr,
                     "schedule": "cosine to lr/100", "optimizer": "Adam", "loss": "BCE + soft Dice",
                     "augmentation": "8 rotations/flips, contrast x0.8-1.25, brightness +-0.1"
                                     + (f", zoom x{a.zoom[0]:g}-{a.zoom[1]:g} (log-uniform)" if a.zoom else ""),
                     "seed": a.seed, "threads": a.threads, "torch": torch.__version__, "seconds": round(seconds, 1)},
        "validation": rounded(scores(maps, thr, min_size)),
        "baseline": {"rule": "normalised image >= threshold, 8-connected components, minimum size, both chosen "
                             "on the training recordings like the model's", "threshold": base_thr,
                     "min_size": base_min},
    }
    if a.hold in LABS:
        held = predict_all(model, real_images(a.hold))[0]
        card["test"] = {"model": rounded(scores(held, thr, min_size))}
    else:                                     # all labs: the simulations it never saw are its only test here
        card["training"]["test_recordings"] = SIM_TEST
        held = predict_all(model, [im for rec in SIM_TEST for im in images(rec, "mean")])[0]
        card["test"] = {"model": rounded(scores(held, thr, min_size)),
                        "leave_one_lab_out": "docs/segment.md (benchmarks/segment_real.py table)"}
    name = a.name or f"unet-{a.hold}"
    path = save_model(a.out, name, model, card)
    print(f"{path}: trained on {', '.join(card['training']['labs'])} in {seconds:.0f} s; threshold {thr:.2f}, min size {min_size}; "
          f"training F1 {card['validation']['pooled']['f1']:.3f}"
          + (f"; held-out {a.hold} F1 {card['test']['model']['pooled']['f1']:.3f}" if a.hold in LABS else ""))


def predict_all(module, sets):
    module.eval()
    return [(n, img, regs, probability(module, normalise(img, *PERCENTILES))) for n, img, regs in sets], None


def choose_baseline(sets):
    maps = [(n, img, regs, normalise(img, *PERCENTILES)) for n, img, regs in sets]
    best = max((scores(maps, t, m)["pooled"]["f1"], -i, t, m) for i, (t, m) in
               enumerate((t, m) for t in np.round(np.arange(0.1, 1.51, 0.05), 3) for m in MIN_SIZES))
    return float(best[2]), int(best[3])


# ---- the table ---------------------------------------------------------------------------------------------------
def fold_models(directory):
    """{held-out lab: Segmenter} of a folder of fold models (unet-<lab>.json)."""
    out = {}
    for card in sorted(Path(directory).glob("unet-*.json")):
        lab = card.stem.removeprefix("unet-")
        if lab in LABS:
            out[lab] = Segmenter.load(card)
    return out


def evaluate(seg, lab, threshold=None, min_size=None):
    """Per-image scores against the original labels and Grader1 (Neurofinder), and seconds per image."""
    per, per_g1, secs = [], [], []
    for (name, img, truth), (_, _, g1) in zip(real_images(lab), real_images(lab, "grader1")):
        t0 = time.perf_counter()
        labels = seg.objects(seg.probability(img), threshold, min_size)
        secs.append(time.perf_counter() - t0)
        regions = ev.regions_from_labels(labels)
        per.append(ev.score(truth, regions, img.shape))
        per_g1.append(ev.score(g1, regions, img.shape))
    return ev.pooled(per), ev.pooled(per_g1), float(np.mean(secs)), per


def evaluate_baseline(lab, threshold, min_size):
    per, per_g1, secs = [], [], []
    for (name, img, truth), (_, _, g1) in zip(real_images(lab), real_images(lab, "grader1")):
        t0 = time.perf_counter()
        regions = ev.regions_from_labels(ev.label_objects(normalise(img, *PERCENTILES) >= threshold, min_size))
        secs.append(time.perf_counter() - t0)
        per.append(ev.score(truth, regions, img.shape))
        per_g1.append(ev.score(g1, regions, img.shape))
    return ev.pooled(per), ev.pooled(per_g1), float(np.mean(secs)), per


def row(method, lab, s, g1, sec, per):
    f1s = " / ".join(f"{p['f1']:.2f}" for p in per)
    return (f"| {method} | {lab} | {s['n_truth']} | {s['n_pred']} | {s['precision']:.3f} | {s['recall']:.3f} | "
            f"**{s['f1']:.3f}** ({f1s}) | {s['inclusion']:.3f} | {s['exclusion']:.3f} | {s['pixel_iou']:.3f} | "
            f"{g1['f1']:.3f} | {sec:.2f} |")


def table(a):
    torch.set_num_threads(a.threads)
    sim = Segmenter.load(a.sim_only)
    configs = {str(d): fold_models(d) for d in a.folds}
    print(f"simulation-only model: {sim.card['name']} sha256 {sim.card['sha256'][:12]} (threshold {sim.threshold}, "
          f"min size {sim.min_size}); torch {torch.__version__}, {a.threads} threads; scores against the original "
          f"labels (ABO: FinalGT), pooled over the lab's recordings (per-recording F1 in brackets)\n")
    print("| method | held-out lab | cells | objects | precision | recall | F1 | inclusion | exclusion | pixel IoU "
          "| F1 vs Grader1 | s / image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    labs = [lab for lab in LABS if any(lab in models for models in configs.values())]
    for lab in labs:
        for d, models in configs.items():
            if lab in models:
                seg = models[lab]
                tr = seg.card["training"]
                how = f"{Path(d).name}: {'+'.join(tr['labs'])}, {tr['labels']['neurofinder'].split()[0]} labels, " \
                      f"init {tr['init'].split()[0]}"
                print(row(f"U-Net trained on real images ({how})", lab, *evaluate(seg, lab)))
        first = next(m[lab] for m in configs.values() if lab in m)
        b = first.card["baseline"]
        print(row(f"threshold the image (≥ {b['threshold']:.2f}, ≥ {b['min_size']} px, chosen on the training "
                  f"labs)",
                  lab, *evaluate_baseline(lab, b["threshold"], b["min_size"])))
        print(row("simulation-only unet-mean (0.1.0)", lab, *evaluate(sim, lab)))
    for method, f1 in PUBLISHED.items():
        print(f"| {method} | Neurofinder test | | | | | **{f1:.2f}** | | | | | |")


# ---- missed cells ------------------------------------------------------------------------------------------------
def pipeline_rois(rs):
    """[(n, 2) (y, x) pixels] of every pipeline ROI, binarised as the labelling protocol does."""
    from roicurate.labels import match_binarize
    keep = rs.binary(match_binarize(rs))
    return [np.stack([rs.y[i:j][keep[i:j]], rs.x[i:j][keep[i:j]]], 1) for i, j in zip(rs.indptr[:-1], rs.indptr[1:])]


def missed(a):
    """For each real recording and pipeline: labelled cells no pipeline ROI covers (no ROI centre within 5 px, the
    Neurofinder match), how many of them `--missed` finds, and how many of its objects are labelled cells."""
    from roicurate.plugins import sources
    from roicurate_plugins.unet import missed_objects
    torch.set_num_threads(a.threads)
    models = {"real-image U-Net (its fold: never saw the lab)": fold_models(a.folds[0])}
    if a.sim_only:
        sim = Segmenter.load(a.sim_only)
        models["simulation-only unet-mean (0.1.0)"] = {lab: sim for lab in LABS}
    print("| model | lab | pipeline | pipeline ROIs | labelled cells | cells no ROI covers | of those found by "
          "--missed | --missed objects | of those labelled cells | … in either Neurofinder label set |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, segs in models.items():
        for lab in [lab for lab in LABS if lab in segs]:
            for pipe, rel in (("suite2p", "suite2p/plane0"), ("caiman", "caiman/estimates.hdf5")):
                tot = np.zeros(7, int)
                grader1 = {name: regs for name, _, regs in real_images(lab, "grader1")}
                for name, img, truth in real_images(lab):
                    rs = sources()[pipe].read(folder(name) / rel)
                    seg = segs[lab]
                    prob = seg.probability(img)
                    found, _ = missed_objects(ev.regions_from_labels(seg.objects(prob)), prob, rs)
                    no_roi = ev.neurofinder_match(truth, pipeline_rois(rs)) < 0
                    objs = [np.asarray(m["coordinates"]) for m in found]
                    hit = ev.neurofinder_match(truth, objs) if objs else np.full(len(truth), -1)
                    is_cell = ev.neurofinder_match(objs, truth) >= 0 if objs else np.zeros(0, bool)
                    either = is_cell.copy()
                    if lab != "abo" and objs:                    # Neurofinder: a cell in either label set
                        either |= ev.neurofinder_match(objs, grader1[name]) >= 0
                    tot += [len(rs), len(truth), no_roi.sum(), ((hit >= 0) & no_roi).sum(), len(objs), is_cell.sum(),
                            either.sum()]
                n, cells, no, fnd, objs, real, real_either = tot
                share = lambda k, m: f"{k} ({k / m:.0%})" if m else f"{k}"
                print(f"| {label} | {lab} | {pipe} | {n} | {cells} | {no} | {share(fnd, no)} | {objs} | "
                      f"{share(real, objs)} | {share(real_either, objs) if lab != 'abo' else '–'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--hold", required=True, choices=[*LABS, "none"], help="held-out lab ('none': train on all)")
    t.add_argument("--labels", default="original", choices=("original", "grader1"))
    t.add_argument("--no-abo", dest="abo", action="store_false", help="leave the Allen max images out")
    t.add_argument("--sims", action="store_true", help=f"add the simulations' mean images ({', '.join(SIMS)})")
    t.add_argument("--init", default="sim", choices=("sim", "random"))
    t.add_argument("--steps", type=int, default=150)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--window", type=int, default=96)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--zoom", type=float, nargs=2, metavar=("LO", "HI"), help="scale augmentation: cells LO-HI times "
                   "their size (log-uniform)")
    t.add_argument("--eval-every", type=int, default=25)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name")
    t.add_argument("--out", default=str(WEIGHTS))
    for p in (t, sub.add_parser("table"), sub.add_parser("missed")):
        if p is not t:
            p.add_argument("folds", nargs="+", help="folders of fold models (unet-<lab>.json)")
        p.add_argument("--sim-only", default="unet-mean", help="the simulation-only model (name or NAME.json)")
        p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    {"train": train, "table": table, "missed": missed}[a.cmd](a)


if __name__ == "__main__":
    main()
