"""Does fine-tuning on a little of a new lab's data beat the model as shipped? ("multi-point retraining")

1. base model: trained on the six Allen Brain Observatory sessions (one of them for validation), or ``--base``
   (e.g. the bundled suite2p-resnet50);
2. fine-tuned: the base model, layers below ``--freeze-until`` frozen, trained on ONE Neurofinder video (about
   10 % of the Neurofinder ROIs; the threshold chosen on that video, since it is all the new lab has labelled);
   with ``--rehearse``, the six ABO sessions (the base's training data) are mixed into fine-tuning as half of
   every epoch's draws, so that the model keeps what it knew (``roicurate train --rehearse``);
3. from scratch: the same architecture trained on that one video only (same settings), as a control;
4. all three, the base with calibration and threshold re-fitted on the one video (``--epochs 0``), accept-all and
   Suite2p's built-in classifier, evaluated on the OTHER five Neurofinder videos (and on the lab's other video).

    python benchmarks/finetune_neurofinder.py                          # suite2p, cnn2, fine-tune on 01.00
    python benchmarks/finetune_neurofinder.py --finetune-on all        # each video in turn as the fine-tuning one
    python benchmarks/finetune_neurofinder.py --base suite2p-resnet50 --finetune-on 01.01 --evaluate-on 04.01
    python benchmarks/finetune_neurofinder.py --finetune-on all --rehearse --freeze-until none --lr 3e-4 \
        --epochs 8                         # the README's rehearsal table (all other videos, then the lab's other)
"""
import argparse
import json
import sys
import tempfile
import time

import numpy as np

from splits import DATA

from roicurate.evaluate import best_f1_threshold, evaluate_model, jsonable
from roicurate.models import Classifier
from roicurate.plugins import model_specs, sources
from roicurate.training.data import load_labelled
from roicurate.training.train import train

NF = ["01.00", "01.01", "02.00", "02.01", "04.00", "04.01"]
ABO = ["501484643", "501574836", "502608215", "510214538", "524691284", "527048992"]


def unit(pipeline, folder):
    return str(folder / ("suite2p" if pipeline == "suite2p" else "caiman/estimates.hdf5"))


RETHRESHOLD = "base, threshold from the video"
LABELS = ("base", RETHRESHOLD, "fine-tuned", "from scratch")


def score(clf, sets):
    """What `roicurate evaluate` reports, plus each recording's F1 at its own best threshold (``best_f1``): how
    well the model ranks around the operating point, whatever threshold it brought along."""
    numbers, table = evaluate_model(clf, sets)
    for rec, n in numbers["per_recording"].items():
        m = table["recording"] == rec
        n["best_f1"] = best_f1_threshold(table["label"][m], table["model"][m])[1]
    return numbers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", choices=["suite2p", "caiman"], default="suite2p")
    ap.add_argument("--base", help="model to fine-tune (default: train cnn2 on the ABO sessions first)")
    ap.add_argument("--finetune-on", nargs="+", default=["01.00"], choices=NF + ["all"],
                    help="the video(s) to fine-tune on, each in turn; 'all': every one")
    ap.add_argument("--evaluate-on", nargs="+", choices=NF, help="score only these videos (default: all the others); "
                    "e.g. the bundled model's held-out 01.01 / 04.01, since it was trained on 01.00, 02.00, 04.00")
    ap.add_argument("--same-lab", action="store_true", help="score only the other video(s) of the fine-tuning "
                    "video's lab (neurofinder.NN.xx: one lab per NN), the lab's 'other recordings'")
    ap.add_argument("--out", help="keep the trained models here (default: a temporary folder)")
    ap.add_argument("--freeze-until", default=None, help="default: head (cnn2) / layer3 (resnet50); none: train all")
    ap.add_argument("--rehearse", action="store_true", help="mix the ABO sessions into fine-tuning (rehearsal)")
    ap.add_argument("--rehearse-share", type=float, default=0.5)
    ap.add_argument("--base-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=15, help="fine-tuning and from-scratch epochs")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json")
    a = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)
    t0 = time.time()
    real = DATA / "real"
    nf_sets = load_labelled([unit(a.pipeline, real / "neurofinder_train" / f"neurofinder.{v}") for v in NF],
                            a.pipeline, use_pipeline_labels=False)
    spec = model_specs()["cnn2"]
    crop = sources()[a.pipeline].crop
    tmp = tempfile.TemporaryDirectory()
    work = a.out or tmp.name
    abo = load_labelled([unit(a.pipeline, real / "abo275" / s) for s in ABO], a.pipeline, use_pipeline_labels=False)
    if a.base:
        base = Classifier.load(a.base, device=a.device)
    else:
        log(f"base: cnn2 on {len(ABO)} ABO sessions ({sum(len(r) for r in abo)} ROIs)")
        base = Classifier.load(train(abo, spec, crop, [ABO[3]], f"{work}/base", "base", seed=a.seed,
                                     hp={"epochs": a.base_epochs}, device=a.device, build_kwargs={"size": crop.size},
                                     log=lambda m: None), device=a.device)
    freeze = a.freeze_until or {"cnn2": "head", "resnet50": "layer3"}.get(base.card["arch"])
    freeze = None if freeze == "none" else freeze
    results = []
    for video in (NF if "all" in a.finetune_on else a.finetune_on):
        name = f"neurofinder_train/neurofinder.{video}"
        ft_sets = [rs for rs in nf_sets if rs.recording == name]
        test = [rs for rs in nf_sets if rs.recording != name
                and (not a.evaluate_on or rs.recording[-5:] in a.evaluate_on)
                and (not a.same_lab or rs.recording[-5:-3] == video[:2])]
        share = sum(len(r) for r in ft_sets) / sum(len(r) for r in nf_sets)
        log(f"fine-tuning on {name}: {sum(len(r) for r in ft_sets)} ROIs ({share:.0%} of the Neurofinder ROIs)")
        hp = {"epochs": a.epochs, "lr": a.lr}
        ft = Classifier.load(train(ft_sets, base.spec, base.crop, None, f"{work}/ft{video}", "ft", hp=hp,
                                   seed=a.seed, device=a.device, init=base, freeze_until=freeze,
                                   rehearse=abo if a.rehearse else None, rehearse_share=a.rehearse_share,
                                   log=lambda m: None),
                             device=a.device)
        scratch = Classifier.load(train(ft_sets, base.spec, base.crop, None, f"{work}/sc{video}", "sc",
                                        hp=dict(hp, lr=1e-3), seed=a.seed, device=a.device,
                                        build_kwargs=base.card.get("build_kwargs"), log=lambda m: None), device=a.device)
        row = {"finetune_on": name, "share_of_rois": share, "test": sorted({rs.recording for rs in test})}
        for label, clf in (("base", base), ("fine-tuned", ft), ("from scratch", scratch)):
            row[label] = score(clf, test)
        # the cheapest adaptation: the base's weights as they are, calibration and threshold (best F1) fitted on
        # the new video (`roicurate train --init BASE --epochs 0`)
        refit = Classifier.load(train(ft_sets, base.spec, base.crop, None, f"{work}/th{video}", "th", hp={"epochs": 0},
                                      init=base, device=a.device, log=lambda m: None), device=a.device)
        row[RETHRESHOLD] = score(refit, test)
        results.append(row)
    print(f"\n{a.pipeline}: base {base.card['arch']} ({a.base or 'trained on ABO'}), fine-tuned with layers below "
          f"'{freeze}' frozen{', ABO rehearsed' if a.rehearse else ''}; scored on the other Neurofinder videos "
          f"({time.time() - t0:.0f} s)\n")
    hdr = ["fine-tuned on", "share", "model", "threshold", "P", "R", "F1 (mean/rec)", "ROC AUC", "PR AUC"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for row in results:
        lead = [row["finetune_on"].split(".", 1)[1], f"{row['share_of_rois']:.0%}"]
        for label in LABELS:
            n = row[label]
            p = n["pooled"]
            print(f"| {lead[0]} | {lead[1]} | {label} | {n['threshold']:.3f} | {p['precision']:.3f} | "
                  f"{p['recall']:.3f} | {p['f1']:.3f} ({n['macro']['f1']:.3f}) | {p['roc_auc']:.3f} | {p['pr_auc']:.3f} |")
            lead = ["", ""]
        for k, label in (("accept_all", "accept all"), ("suite2p_builtin", "Suite2p built-in")):
            if k in row["base"]["baselines"]:
                b = row["base"]["baselines"][k]
                p = b["pooled"]
                auc = "–" if k == "accept_all" else f"{p['roc_auc']:.3f}"
                print(f"| | | {label} | – | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} "
                      f"({b['macro']['f1']:.3f}) | {auc} | {p['pr_auc']:.3f} |")
    if len(results) > 1:
        for label in LABELS:
            f1 = np.mean([r[label]["pooled"]["f1"] for r in results])
            auc = np.mean([r[label]["pooled"]["roc_auc"] for r in results])
            pr = np.mean([r[label]["pooled"]["pr_auc"] for r in results])
            print(f"mean over {len(results)} choices of the fine-tuning video: {label}: F1 {f1:.3f}, "
                  f"ROC AUC {auc:.3f}, PR AUC {pr:.3f}")
        if not a.same_lab and not a.evaluate_on:     # the same numbers on the lab's other video alone
            for label in LABELS:
                same = [next(v for k, v in r[label]["per_recording"].items() if k[-5:-3] == r["finetune_on"][-5:-3])
                        for r in results]
                mean = {k: np.mean([n[k] for n in same]) for k in ("f1", "roc_auc", "pr_auc", "best_f1")}
                pairs = " ".join(f"{n['f1']:.3f}/{n['best_f1']:.3f}" for n in same)
                print(f"  the lab's other video only: {label}: F1 {mean['f1']:.3f}, ROC AUC {mean['roc_auc']:.3f}, "
                      f"PR AUC {mean['pr_auc']:.3f}, F1 at the video's best threshold {mean['best_f1']:.3f} "
                      f"(per pair, F1 / best-threshold F1: {pairs})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(jsonable({"settings": vars(a), "results": results}), f, indent=1)
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
