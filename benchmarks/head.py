"""The stacked head (roicurate/head.py) on leave-one-lab-out scores: does it beat the network and the simple rankers
on every lab it never saw, with and without summary images?

    python benchmarks/lolo.py caiman ...recipe of train_bundled.py... --scores /tmp/caiman.npz     # the scores
    python benchmarks/head.py caiman --scores /tmp/caiman.npz [--card]

Every lab's ROIs were scored by a network trained on the other labs (with its max projection, without it: "mask
only", and with test-time augmentation). Each lab's head is fitted on the *other* labs' scores alone
(roicurate/training/head.py), as for a new lab. Rows, ROC AUC per held-out lab: the network alone, the shape LR of
benchmarks/lolo.py (five features, log area in pixels), the pipeline's own classifier where the recording has one
(Suite2p's ``iscell[:, 1]`` of its own run: the simulations), and the head; each network-based row also mask only
(the head fitted on scores with images, applied to the mask-only logits) and with TTA. Then P / R / F1 at the
head's named points, each chosen on the other labs. Last, the pipeline evidence the head leaves out (Suite2p's own
classifier and trace statistics, CaImAn's SNR and spatial r): only the simulations among the labelled sets have it,
so it is measured there alone, each simulated recording held out in turn.

``--card``: put the head fitted on every lab into the bundled card, with its named points (the ``recall`` point
becomes the card's threshold) and its nested numbers; the card's ``shape_prior`` goes (the head holds the shape).
The network's weights are not touched: the head's network input is the shipped network's logit (its Platt
calibration folded in), computed here from the out-of-lab probabilities with the card's own (a, b).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from lolo import WEIGHTS, shape_lr
from points import print_points
from splits import MODELS, SPLITS, path

from roicurate import calibrate as cal
from roicurate.evaluate import jsonable, roc_auc
from roicurate.training.data import load_labelled
from roicurate.training.head import fit_head, folded_logits, head_proba, inputs_of, out_of_lab_head
from roicurate.training.outoflab import lab_of
from roicurate.training.points import MIN_RECALL

# the pipeline evidence a recording's own files hold (RoiSet.features); among the labelled sets only the
# simulations have it: Suite2p's own classifier's probability and trace statistics, CaImAn's SNR and spatial r
EVIDENCE = {"suite2p": ("suite2p_prob", "skew", "std", "snr"), "caiman": ("SNR_comp", "r_values")}


def set_of_rois(sets, d):
    """The position in ``sets`` of each ROI's RoiSet, for scores saved before they named it ("set"): the scores
    hold each lab's sets in turn, in the order of ``sets``, each set's ROIs in order (checked)."""
    which = []
    for lab in dict.fromkeys(d["lab"]):
        which += [k for k, rs in enumerate(sets) if lab_of(rs.recording) == lab for _ in range(len(rs))]
    which = np.array(which)
    assert len(which) == len(d["y"]) and all(sets[k].recording == r for k, r in zip(which, d["recording"]))
    return which


def by_roi(per_set, which, index):
    """Per-ROI values from per-set arrays ``per_set``: ROI ``index[i]`` of set ``which[i]``."""
    return np.array([per_set[k][i] for k, i in zip(which, index)])


def evidence_of(rs, names):
    """(N, len(names)) the recording's evidence (log-odds of a probability, log of a positive scale), NaN without."""
    if not all(n in rs.features for n in names):
        return np.full((len(rs), len(names)), np.nan)
    f = {n: np.asarray(rs.features[n], float) for n in names}
    return np.column_stack([cal.logit(f[n]) if n == "suite2p_prob" else
                            np.log(np.maximum(f[n], 1e-6)) if n in ("std", "SNR_comp") else f[n] for n in names])


def evidence_table(pipeline, d, y, z, S, E, nested_head):
    """The simulations, each recording held out in turn: logistic regressions fitted on the *other* simulated
    recordings' out-of-lab scores, with and without the pipeline evidence, against the head fitted on the other
    labs (no evidence), the pipeline's own classifier and (Suite2p) the sum of its log-odds and the network's logit,
    which needs no fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    sim = np.isfinite(E).all(1)
    if not sim.any():
        return {}
    recs = sorted(set(d["recording"][sim]))
    variants = {"logit + shape (other simulations)": np.column_stack([z, S]),
                "logit + shape + evidence (other simulations)": np.column_stack([z, S, E]),
                "evidence alone (other simulations)": E}
    rows = {"network alone": {}, "head (other labs, no evidence)": {}, **{k: {} for k in variants}}
    if pipeline == "suite2p":
        rows["Suite2p's own classifier"] = {}
        rows["network logit + Suite2p's own log-odds (no fit)"] = {}
    for r in recs:
        test = d["recording"] == r
        train = sim & ~test
        rows["network alone"][r] = roc_auc(y[test], z[test])
        rows["head (other labs, no evidence)"][r] = roc_auc(y[test], nested_head[test])
        for name, X in variants.items():
            lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X[train], y[train])
            rows[name][r] = roc_auc(y[test], lr.predict_proba(X[test])[:, 1])
        if pipeline == "suite2p":
            rows["Suite2p's own classifier"][r] = roc_auc(y[test], E[test, 0])
            rows["network logit + Suite2p's own log-odds (no fit)"][r] = roc_auc(y[test], z[test] + E[test, 0])
    print(f"\nPipeline evidence ({', '.join(EVIDENCE[pipeline])}), simulations only (the only labelled sets that "
          f"have it), each recording held out, ROC AUC:\n")
    print("| ranker | " + " | ".join(recs) + " |\n|---|" + "---|" * len(recs))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(f"{cells[r]:.3f}" for r in recs) + " |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=MODELS)
    ap.add_argument("--scores", required=True, help="the .npz of benchmarks/lolo.py --scores")
    ap.add_argument("--card", action="store_true", help="write the head into the bundled card")
    ap.add_argument("--binarize", type=float, help="the head's mask pixels: weight > this x the ROI's maximum "
                    "(default: the card's crop binarize)")
    ap.add_argument("--json", help="also write the table here")
    a = ap.parse_args()
    d = dict(np.load(a.scores))
    y, labs = d["y"].astype(bool), d["lab"]
    card_path = WEIGHTS / f"{MODELS[a.pipeline]}.json"
    card = json.loads(card_path.read_text())
    calib = card["calibration"]
    assert calib["method"] == "platt" and calib.get("folded"), "the head follows a folded Platt calibration"
    logit = {k: folded_logits(calib, d[k]) for k in ("p", "p_mask", "p_tta")}       # as the shipped network gives them
    recs = [r for part in SPLITS[a.pipeline].values() for r in part]
    sets = load_labelled([str(path(r, a.pipeline)) for r in recs], a.pipeline, use_pipeline_labels=False)
    binz = a.binarize if a.binarize is not None else card["crop"].get("binarize") or 0.0
    which = d["set"] if "set" in d else set_of_rois(sets, d)
    S = inputs_of(sets, which, d["index"], binz)
    min_recall = card.get("out_of_lab", {}).get("min_recall", MIN_RECALL)
    head, nested, points, thr = out_of_lab_head(y, logit["p"], S, labs, binz, min_recall, logit["p_mask"])
    with_images, mask_only = nested["probability"], nested["probability_mask_only"]

    def nested_head(z, on=("p", "p_mask")):
        """Each lab's head probabilities for network logits ``z``, its head fitted on the other labs' logits ``on``
        (as shipped: every ROI with and without its images)."""
        out = np.zeros(len(y))
        for g in set(labs):
            train = np.concatenate([labs] * len(on)) != g
            h = fit_head(np.tile(y, len(on)), np.concatenate([logit[k] for k in on]), np.tile(S, (len(on), 1)),
                         binz, train)
            out[labs == g] = head_proba(h, z[labs == g], S[labs == g])
        return out

    own = [rs.features.get("suite2p_prob") for rs in sets]
    own = [None if o is None or np.ptp(o) == 0 else o for o in own]    # the real sets: accepted ROIs only, no ranking
    rows = {"network": d["p"], "network, mask only": d["p_mask"], "network, TTA": d["p_tta"],
            "shape LR (lolo.py)": by_roi(shape_lr(sets, sorted(set(labs)), binz), which, d["index"])}
    if any(o is not None for o in own):
        rows["pipeline's own classifier"] = by_roi([np.full(len(rs), np.nan) if o is None else o
                                                    for rs, o in zip(sets, own)], which, d["index"])
    rows.update({"head": with_images, "head, mask only": mask_only, "head, TTA": nested_head(logit["p_tta"]),
                 "head fitted on mask-only scores, mask only": nested_head(logit["p_mask"], on=("p_mask",))})
    order = sorted(set(labs))
    print(f"{a.pipeline}: out-of-lab ROC AUC per held-out lab ({len(y)} ROIs, scores {a.scores})\n")
    print("| ranker | " + " | ".join(order) + " | pooled |")
    print("|---|" + "---|" * (len(order) + 1))
    table = {}
    for name, s in rows.items():
        cells = {}
        for g in [*order, "pooled"]:
            inside = (labs == g) if g != "pooled" else np.ones(len(y), bool)
            ok = inside & np.isfinite(s)
            cells[g] = roc_auc(y[ok], s[ok]) if ok.sum() == inside.sum() else None
        table[name] = cells
        print(f"| {name} | " + " | ".join("–" if cells[g] is None else f"{cells[g]:.3f}"
                                          for g in [*order, "pooled"]) + " |")
    at_points = {"with images": nested["points"], "mask only": nested["points_mask_only"]}
    for h, per_point in at_points.items():
        print(f"\nThe head's named points, each lab's chosen on the other labs, {h}:\n")
        print_points(per_point, y, labs)
    print("\nhead (fitted on every lab): " + ", ".join(f"{i} {c:+.3f}" for i, c in zip(head["inputs"], head["coef"]))
          + f", intercept {head['intercept']:+.3f}; points: "
          + ", ".join(f"{n} {p['threshold']:.3f}" for n, p in points.items()))
    E = by_roi([evidence_of(rs, EVIDENCE[a.pipeline]) for rs in sets], which, d["index"])
    evidence = evidence_table(a.pipeline, d, y, logit["p"], S, E, with_images)
    if a.json:
        Path(a.json).write_text(json.dumps(jsonable({"roc_auc": table, "points": at_points,
                                                     "evidence": evidence}), indent=1))
    if a.card:
        card.pop("shape_prior", None)
        card["head"] = head
        card["operating_points"] = points
        card.update(threshold=thr, threshold_rule=points["recall"]["rule"])
        card["out_of_lab"]["nested"] = {k: v for k, v in nested.items() if not k.startswith("probability")}
        card["out_of_lab"]["nested"]["scored_by"] = "the head (benchmarks/head.py on a re-run of the recipe)"
        card["training"]["head"] = ("stacked head fitted by benchmarks/head.py on the out-of-lab scores of a re-run "
                                    "of the recipe (benchmarks/lolo.py --scores); the network's weights unchanged")
        card_path.write_text(json.dumps(jsonable(card), indent=1) + "\n")
        print(f"\nwrote the head, its points and nested numbers into {card_path}")


if __name__ == "__main__":
    main()
