"""Leave-one-lab-out: how a model does on a lab it never saw, at the threshold it would ship with.

Labs: ABO (abo275), Neurofinder 01, 02 and 04 (two videos each), simulations. `roicurate train --operating-point
out-of-lab` trains one model per lab on the other labs and scores that lab (roicurate/training/outoflab.py); each lab's
numbers use the calibration and threshold chosen on the *other* labs' out-of-lab scores (nested), as a new lab
would get them. Beside the model, on the same ROIs: accepting everything, the pipeline's own verdict (the simulated
runs; the real sets hold only ROIs the pipeline accepted) and a logistic regression on the five shape features
(log area in pixels, compactness, aspect ratio, eccentricity, solidity) trained on the other labs, at 0.5.

    python benchmarks/lolo.py suite2p --arch cnn2 --scale reference              # a variant, ~2 min
    python benchmarks/lolo.py caiman --bundle caiman-cnn2                         # retrain and ship a bundled model
    python benchmarks/lolo.py suite2p --arch resnet50 --build width=16 --build first_stride=2 --shape-prior \\
        --epochs 12 --bundle suite2p-resnet50                                     # ~1 h on 2 cores
"""
import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from splits import SPLITS, path

from roicurate.evaluate import jsonable, metrics
from roicurate.training.outoflab import lab_of
from roicurate.plugins import model_specs, sources
from roicurate.shape import shape_features
from roicurate.training.data import load_labelled
from roicurate.training.train import train

WEIGHTS = Path(__file__).resolve().parents[1] / "roicurate_plugins" / "weights"


def shape_lr(sets, labs, binarize):
    """Out-of-lab probabilities of the five-feature logistic regression, in the order of ``sets``' ROIs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = [shape_features(rs, binarize) for rs in sets]
    group = [lab_of(rs.recording) for rs in sets]
    out = [None] * len(sets)
    for lab in labs:
        tr = [i for i, g in enumerate(group) if g != lab]
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        lr.fit(np.concatenate([X[i] for i in tr]), np.concatenate([sets[i].labels > 0 for i in tr]))
        for i, g in enumerate(group):
            if g == lab:
                out[i] = lr.predict_proba(X[i])[:, 1]
    return out


def table(pipeline, card, sets, lr):
    labs = card["out_of_lab"]["nested"]["labs"]
    print(f"\n{pipeline}: {card['arch']} {card['build_kwargs']}, crop {card['crop']['size']} px "
          f"{'+'.join(card['crop']['channels'])}, scale {card['crop'].get('scale', 'native')}; "
          f"shipped threshold {card['threshold']:.3f} ({card['threshold_rule']})\n")
    hdr = ["held-out lab", "ROIs", "cell frac", "P", "R", "F1", "ROC AUC", "PR AUC", "ECE", "threshold",
           "shape LR ROC AUC / F1", "pipeline's own F1", "accept-all F1"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    group = np.array([lab_of(rs.recording) for rs in sets for _ in range(len(rs))])
    y = np.concatenate([rs.labels > 0 for rs in sets])
    lrs = np.concatenate(lr)
    own = np.concatenate([rs.pipeline_accepted if rs.pipeline_accepted is not None else np.ones(len(rs), bool)
                          for rs in sets])
    rows = {}
    for lab, m in labs.items():
        g = group == lab
        lm = metrics(y[g], lrs[g], 0.5)
        om = metrics(y[g], own[g].astype(float), 0.5) if not own[g].all() else None
        am = metrics(y[g], np.ones(g.sum()), 0.5)
        rows[lab] = {"model": m, "shape_lr": lm, "pipeline": om, "accept_all": am}
        f = lambda v: f"{v:.3f}"
        print(f"| {lab} | {m['n']} | {m['cell_fraction']:.2f} | {f(m['precision'])} | {f(m['recall'])} | "
              f"{f(m['f1'])} | {f(m['roc_auc'])} | {f(m['pr_auc'])} | {f(m['ece'])} | {f(m['threshold'])} | "
              f"{f(lm['roc_auc'])} / {f(lm['f1'])} | {'–' if om is None else f(om['f1'])} | {f(am['f1'])} |")
    p = card["out_of_lab"]["nested"]["pooled"]
    print(f"| pooled | {p['n']} | {p['cell_fraction']:.2f} | {p['precision']:.3f} | {p['recall']:.3f} | "
          f"{p['f1']:.3f} | {p['roc_auc']:.3f} | {p['pr_auc']:.3f} | {p['ece']:.3f} | – | "
          f"{metrics(y, lrs, 0.5)['roc_auc']:.3f} / {metrics(y, lrs, 0.5)['f1']:.3f} | – | "
          f"{metrics(y, np.ones(len(y)), 0.5)['f1']:.3f} |")
    return rows


def adaptation(oof, min_recall):
    """Adapting to the held-out lab with one of its recordings, weights unchanged (what `roicurate train --init
    BASE --epochs 0` does): Platt calibration and the best-F1 threshold fitted on that recording's out-of-lab scores,
    then scored on the lab's other recordings; beside it, the operating point chosen on the other labs. F1 means
    over every choice of adaptation recording."""
    from roicurate import calibrate as cal
    from roicurate.evaluate import best_f1_threshold
    from roicurate.training.outoflab import operating_point
    y, p, lab, rec = oof["y"].astype(bool), oof["p"], oof["lab"], oof["recording"]
    off = oof["offset"] if "offset" in oof else None
    sub = lambda a, m: None if a is None else a[m]
    print("\nAdapting to the held-out lab with one of its recordings (weights unchanged), F1 on its other recordings:\n")
    print("| held-out lab | recordings | F1, operating point of the other labs | F1, Platt + threshold from one "
          "recording | ROC AUC |\n|---|---|---|---|---|")
    rows = {}
    for g in sorted(set(lab)):
        recs = sorted(set(rec[lab == g]))
        if len(recs) < 2:
            continue
        out = lab != g
        calib, thr = operating_point(y[out], p[out], sub(off, out), lab[out], min_recall)
        base, adapted = [], []
        for r in recs:
            fit_on, test = rec == r, (lab == g) & (rec != r)
            base.append(metrics(y[test], cal.apply(calib, p[test], sub(off, test)), thr)["f1"])
            c = cal.fit("platt", y[fit_on], p[fit_on], sub(off, fit_on))
            t, _ = best_f1_threshold(y[fit_on], cal.apply(c, p[fit_on], sub(off, fit_on)))
            adapted.append(metrics(y[test], cal.apply(c, p[test], sub(off, test)), t)["f1"])
        inside = lab == g
        auc = metrics(y[inside], p[inside], 0.5)["roc_auc"]
        rows[g] = {"base_f1": float(np.mean(base)), "adapted_f1": float(np.mean(adapted))}
        print(f"| {g} | {len(recs)} | {np.mean(base):.3f} | {np.mean(adapted):.3f} | {auc:.3f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=SPLITS)
    ap.add_argument("--arch", default="cnn2")
    ap.add_argument("--build", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--scale", choices=("native", "reference"), default="reference")
    ap.add_argument("--scaled-diameter", type=float, default=12.0)
    ap.add_argument("--channels", default="mask")
    ap.add_argument("--image-dropout", type=float, default=0.0)
    ap.add_argument("--no-jitter", action="store_true")
    ap.add_argument("--shape-prior", action="store_true")
    ap.add_argument("--head", action="store_true", help="a stacked head on the out-of-lab scores (train --head)")
    ap.add_argument("--min-recall", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bundle", metavar="NAME", help="save the model trained on every lab as this bundled model")
    ap.add_argument("--out", help="with --bundle: save it here instead of roicurate_plugins/weights/")
    ap.add_argument("--json")
    ap.add_argument("--scores", help="keep the per-ROI out-of-lab scores (.npz) here (outside the repository)")
    a = ap.parse_args()
    t0 = time.time()
    recs = [r for part in SPLITS[a.pipeline].values() for r in part]
    sets = load_labelled([str(path(r, a.pipeline)) for r in recs], a.pipeline, use_pipeline_labels=False)
    spec = model_specs()[a.arch]
    channels = tuple(a.channels.split(","))
    crop = replace(spec.crop or sources()[a.pipeline].crop, scale=a.scale, scaled_diameter=a.scaled_diameter,
                   channels=channels, optional_images=channels != ("mask",))
    build = {k: json.loads(v) for k, _, v in (b.partition("=") for b in a.build)}
    if "size" in spec.build.__code__.co_varnames:
        build.setdefault("size", crop.size)
    with tempfile.TemporaryDirectory() as tmp:
        out = a.bundle and (a.out or str(WEIGHTS)) or tmp
        card_path = train(sets, spec, crop, None, out, a.bundle or "model", hp={"epochs": a.epochs, "lr": a.lr},
                          seed=a.seed, device=a.device, build_kwargs=build, shape_prior=a.shape_prior, head=a.head,
                          operating_point="out-of-lab", min_recall=a.min_recall,
                          scale_jitter=None if a.no_jitter else (0.8, 0.9, 1.0, 1.12, 1.25),
                          image_dropout=a.image_dropout, log=lambda m: print(m, file=sys.stderr, flush=True))
        card = json.loads(Path(card_path).read_text())
        npz = Path(card_path).with_suffix(".out-of-lab.npz")
        with np.load(npz) as z:
            oof = dict(z)
        if a.scores:
            Path(a.scores).write_bytes(npz.read_bytes())
        npz.unlink()            # per-ROI labels of the shared sets: never beside a bundled model
    binz = crop.binarize or 0.0
    labs = sorted({lab_of(rs.recording) for rs in sets})
    rows = table(a.pipeline, card, sets, shape_lr(sets, labs, binz))
    adapted = adaptation(oof, card["out_of_lab"]["min_recall"])
    print(f"\n({time.time() - t0:.0f} s{', saved as ' + card_path if a.bundle else ''})")
    if a.json:
        Path(a.json).write_text(json.dumps(jsonable({"settings": vars(a), "card_threshold": card["threshold"],
                                                     "labs": rows, "adaptation": adapted}), indent=1))


if __name__ == "__main__":
    sys.exit(main())
