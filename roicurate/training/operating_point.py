"""The last phases of ``roicurate train``: calibrate the fitted network (and weigh its shape prior), choose the
threshold, and describe the run in the card. ``run`` is the :class:`roicurate.training.train.Run` of that training."""
from dataclasses import replace

import numpy as np

from roicurate import calibrate as cal
from roicurate.labels import cell_labels
from roicurate.scale import reference_diameter
from roicurate.shape import fit_prior, prior_logit, scale_prior, shape_features
from roicurate.training.arch import fp16_round
from roicurate.training.data import recordings, stack, with_rehearsal
from roicurate.training.fit import DEFAULTS, fit, predict_scores, unjittered
from roicurate.training.outoflab import MIN_RECALL, lab_of, nested_metrics
from roicurate.training.outoflab import operating_point as out_of_lab_operating_point
from roicurate.training.points import HEAD, PLATT, choose_points, recall_rule

N_FOLDS = 3     # no validation recording: folds of the training recordings whose out-of-fold scores set the threshold


def _fold(run, calib, a, b, probe):
    """Fold an affine calibration into the output layer and re-round to the fp16 weights that ship."""
    import torch
    cal.fold_affine(run.module, a, b, torch.from_numpy(probe))
    fp16_round(run.module)
    calib["folded"] = True


def validation_scores(run):
    """P(positive) of every validation ROI with the network as the card now describes it."""
    from roicurate.models import Classifier
    clf = Classifier(run.module, run.card, run.arch.spec)
    return np.concatenate([clf.predict_proba(rs)[:, run.arch.pos] for rs in run.val_sets])


def shape_prior_of(run):
    """A logistic regression on the training ROIs' shape features (``--shape-prior``), or ``init``'s prior kept
    (re-weighted with the Platt calibration), or None."""
    options, arch = run.options, run.arch
    if options.shape_prior:
        return fit_shape_prior(run, run.train_sets, run.data.y_tr)
    init = arch.init
    if init is not None and init.card.get("head") is not None and not options.head:
        run.log(f"note: {init.name}'s stacked head is not carried over (it is fitted on leave-one-lab-out scores of "
                f"its own network: add --operating-point out-of-lab --head for a new one)")
    if init is not None and not arch.transfer and init.card.get("shape_prior"):
        if run.keep or (run.val_sets and options.calibration == "platt"):
            if not run.keep:
                run.log(f"{init.name}'s shape prior is kept and re-weighted on validation")
            return init.card["shape_prior"]
        run.log(f"note: {init.name}'s shape prior is not carried over (it is weighted by Platt calibration on "
                f"validation recordings: give --val)")
    return None


def fit_shape_prior(run, sets, y):
    binz = run.arch.crop.binarize or 0.0
    relative = run.arch.crop.scale == "reference"
    return fit_prior(np.concatenate([shape_features(rs, binz, relative) for rs in sets]), y, binz, relative=relative)


def calibrate_network(run):
    """Calibration on validation (K classes: temperature + per-class biases; two: ``--calibrate``, with the shape
    prior's weight), or on out-of-lab scores; folded into the output layer where it is affine. Sets the card's
    ``calibration``, ``shape_prior`` (and ``out_of_lab``); returns (calibration, prior, out-of-lab threshold)."""
    import torch
    from roicurate.models import Classifier
    options, arch, card, val_sets = run.options, run.arch, run.card, run.val_sets
    calib, prior, out_of_lab_threshold = None, shape_prior_of(run), None
    if arch.multi and val_sets and options.calibration != "none":
        proba = np.concatenate([Classifier(run.module, card, arch.spec).predict_proba(rs) for rs in val_sets])
        calib, (a, bias) = cal.fit_classes(options.calibration, run.data.y_va, proba, arch.pos)
        _fold(run, calib, a, torch.tensor(bias, dtype=torch.float32), run.data.x_va[:64])
        run.log(f"calibration ({calib['method']}, {len(arch.classes)} classes, on validation): log-loss "
                f"{calib['log_loss_before']:.3f} -> {calib['log_loss_after']:.3f}; ECE of {arch.classes[arch.pos]} "
                f"{calib['ece_before']:.3f} -> {calib['ece_after']:.3f}")
    elif val_sets and options.calibration != "none":
        offset = None if prior is None else np.concatenate([prior_logit(prior, rs) for rs in val_sets])
        calib = cal.fit(options.calibration, run.y_val, validation_scores(run), offset)
        if cal.affine(calib):
            _fold(run, calib, *cal.affine(calib), run.data.x_va[:64])
        run.log(f"calibration ({calib['method']}, on validation): ECE {calib['ece_before']:.3f} -> "
                f"{calib['ece_after']:.3f}")
    if prior is not None and calib is None:
        card["shape_prior"] = prior
    elif prior is not None:
        card["shape_prior"] = scale_prior(prior, calib["prior_weight"])
        run.log(f"shape prior: weight {calib['prior_weight']:.3f} (network logit weight {calib['a']:.3f})")
    if options.operating_point == "out-of-lab":
        calib, prior, out_of_lab_threshold = calibrate_out_of_lab(run, prior)
    card["calibration"] = calib
    return calib, prior, out_of_lab_threshold


def calibrate_out_of_lab(run, prior):
    """Platt (+ prior weight) and the threshold from leave-one-lab-out scores (roicurate/training/outoflab.py); with
    ``--head``, the stacked head fitted on those scores after Platt (roicurate/training/head.py), its points and
    threshold chosen on its output. The card gets the named points and each lab's nested numbers. Returns
    (calibration, prior or None, threshold)."""
    options, card, min_recall = run.options, run.card, run.options.min_recall or MIN_RECALL
    lab_scores = out_of_lab_scores(run, prior_fit=(lambda ss, y: fit_shape_prior(run, ss, y)) if options.shape_prior else None)
    scores = (lab_scores["y"], lab_scores["p"], lab_scores["offset"], lab_scores["lab"])
    np.savez(run.out / f"{run.name}.out-of-lab.npz", **{k: v for k, v in lab_scores.items() if v is not None})   # per ROI
    calib, thr = out_of_lab_operating_point(*scores, min_recall)
    q = cal.apply(calib, lab_scores["p"], lab_scores["offset"])          # before folding: apply then passes p on
    _fold(run, calib, calib["a"], calib["b"], unjittered(run.data.x_tr[:64]))
    if options.head:
        from roicurate.training.head import folded_logits, inputs_of, out_of_lab_head
        binz = run.arch.crop.binarize or 0.0
        S = inputs_of(run.sets, lab_scores["set"], lab_scores["index"], binz)
        with_images = not np.array_equal(lab_scores["p_mask"], lab_scores["p"])      # the recordings had images
        z_mask = folded_logits(calib, lab_scores["p_mask"]) if with_images else None
        card["head"], nested, card["operating_points"], thr = out_of_lab_head(
            lab_scores["y"], folded_logits(calib, lab_scores["p"]), S, lab_scores["lab"], binz, min_recall, z_mask)
        run.log("head: " + ", ".join(f"{i} {c:+.3f}" for i, c in zip(card["head"]["inputs"], card["head"]["coef"])))
    else:
        card["operating_points"] = choose_points(lab_scores["y"], q, lab_scores["lab"], min_recall)
        nested = nested_metrics(*scores, min_recall)
    if prior is not None and calib["prior_weight"] < 1e-3:
        run.log(f"shape prior dropped: its fitted weight on the out-of-lab scores is {calib['prior_weight']:.1e}")
        card.pop("shape_prior", None)
        prior = None
    elif prior is not None:
        card["shape_prior"] = scale_prior(prior, calib["prior_weight"])
    card["out_of_lab"] = {"min_recall": min_recall,
                          "labs": {lab: sorted({rs.recording for rs in run.sets if lab_of(rs.recording) == lab})
                                   for lab in run.labs},
                          "nested": {k: v for k, v in nested.items() if k.startswith(("labs", "pooled", "points"))}}
    for lab, m in nested["labs"].items():
        run.log(f"out of lab {lab}: precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  "
                f"ROC AUC {m['roc_auc']:.3f}  ECE {m['ece']:.3f} (calibration and threshold from the other labs)")
    return calib, prior, thr


def out_of_lab_scores(run, prior_fit=None):
    """For every lab, a model trained on the other labs scores that lab's ROIs: {"y": labels, "p": network
    probabilities (uncalibrated), "p_tta": the same with test-time augmentation, "p_mask": the same with every
    summary image removed (what a mask-only recording gets), "offset": shape-prior logits or
    None, "lab", "recording", "set" (the position of the ROI's RoiSet in ``run.sets``), "index" (the ROI's index
    in it)} per ROI."""
    from roicurate.models import Classifier
    arch = run.arch
    y, p, p_tta, p_mask, off, group, recs, index, which = [], [], [], [], [], [], [], [], []
    bare = dict(run.card, calibration=None)
    bare.pop("shape_prior", None)
    for lab in run.labs:
        inside = [(k, rs) for k, rs in enumerate(run.sets) if lab_of(rs.recording) == lab]
        rest = [rs for rs in run.sets if lab_of(rs.recording) != lab]
        x, yy = stack(rest, arch.crop, None, run.options.scale_jitter)
        m, _ = arch.new_module()
        fit(m, x, yy, unjittered(x[:0]), yy[:0], log=lambda s: None, **run.fit_kw)
        m.cpu().eval()
        fp16_round(m)
        prior = prior_fit(rest, yy) if prior_fit else None
        clf, clf_tta = Classifier(m, bare, arch.spec), Classifier(m, bare, arch.spec, tta=True)
        for k, rs in inside:
            which.append(np.full(len(rs), k))
            y.append(cell_labels(rs) > 0)
            p.append(clf.predict_proba(rs)[:, clf.positive])
            p_tta.append(clf_tta.predict_proba(rs)[:, clf.positive])
            p_mask.append(clf.predict_proba(replace(rs, images={}))[:, clf.positive] if rs.images else p[-1])
            index.append(np.arange(len(rs)))
            off.append(prior_logit(prior, rs) if prior else np.zeros(len(rs)))
            group += [lab] * len(rs)
            recs += [rs.recording] * len(rs)
        run.log(f"out of lab {lab}: scored {sum(len(r) for _, r in inside)} ROIs with a model trained on "
                f"{len(yy)} ROIs of the other labs")
    return {"y": np.concatenate(y), "p": np.concatenate(p), "offset": np.concatenate(off) if prior_fit else None,
            "lab": np.array(group), "recording": np.array(recs), "index": np.concatenate(index),
            "set": np.concatenate(which), "p_tta": np.concatenate(p_tta), "p_mask": np.concatenate(p_mask)}


def recording_folds(groups, seed):
    """(fold index per ROI, what the folds are): scikit-learn's GroupKFold on ``groups`` (each ROI's recording),
    N_FOLDS folds or one per recording when there are fewer, so no recording is on both sides of a fold; a
    single recording falls back to N_FOLDS random folds of its ROIs."""
    from sklearn.model_selection import GroupKFold
    n_recs = len(set(groups))
    if n_recs < 2:
        return (np.random.default_rng(seed).permutation(len(groups)) % N_FOLDS,
                f"{N_FOLDS} folds of the ROIs of the one training recording")
    folds = np.zeros(len(groups), np.int64)
    for f, (_, held) in enumerate(GroupKFold(min(N_FOLDS, n_recs)).split(groups, groups=groups)):
        folds[held] = f
    return folds, f"{min(N_FOLDS, n_recs)} folds of whole training recordings"


def out_of_fold_scores(new_module, x, y, hp, seed, device, positive=-1, rehearsal=None, share=0.5, groups=None,
                       log=print, **fit_kw):
    """(scores, what the folds are): scores of the training ROIs by models that did not see them or their recording
    (``groups``: each ROI's recording, see :func:`recording_folds`), each trained (same settings, no validation, the same
    rehearsal) on the other folds. Used for the threshold when there is no validation recording."""
    folds, how = recording_folds(np.zeros(len(y)) if groups is None else np.asarray(groups), seed)
    log(f"out-of-fold scores: {how}")
    scores = np.zeros(len(y))
    for f in range(int(folds.max()) + 1):
        m, _ = new_module()
        xf, yf, draw = with_rehearsal(x[folds != f], y[folds != f], rehearsal, share)
        fit(m, xf, yf, unjittered(x[:0]), y[:0], hp, seed=seed, device=device, log=lambda s: None, positive=positive,
            draw=draw, **fit_kw)
        m.cpu()
        fp16_round(m)
        scores[folds == f] = predict_scores(m, x[folds == f], "cpu", positive=positive)
    return scores, how


def choose_threshold(y, s, target_precision):
    """Precision first: the lowest threshold reaching ``target_precision`` on validation; max F1 if none does."""
    from roicurate.evaluate import best_f1_threshold, threshold_for_precision
    thr = threshold_for_precision(y, s, target_precision) if target_precision else None
    if thr is not None:
        return thr, f"lowest threshold with validation precision >= {target_precision}"
    thr, f1 = best_f1_threshold(y, s)
    how = "maximum validation F1" + (f" (precision {target_precision} is never reached)" if target_precision else "")
    return thr, how


def set_threshold(run, out_of_lab_threshold):
    """The operating threshold and the rule that chose it (out of lab, on validation, or on out-of-fold scores
    of the training ROIs when there is no validation recording); written into the card."""
    options, arch, d = run.options, run.arch, run.data
    if options.operating_point == "out-of-lab":
        thr, how = out_of_lab_threshold, recall_rule(options.min_recall or MIN_RECALL, HEAD if options.head else PLATT)
    elif run.val_sets:
        thr, how = choose_threshold(run.y_val, validation_scores(run), options.target_precision)
    else:
        fit_kw = {k: v for k, v in run.fit_kw.items() if k not in ("hp", "seed", "device", "positive")}
        groups = np.repeat([rs.recording for rs in run.train_sets], [len(rs) for rs in run.train_sets])
        fold_scores, folds = out_of_fold_scores(arch.new_module, d.x_tr, d.y_tr, run.hp, options.seed, options.device, arch.pos,
                                        d.rehearsal, options.rehearse_share, groups, run.log, **fit_kw)
        y_cell = d.y_tr == arch.pos if arch.multi else d.y_tr
        thr, how = choose_threshold(y_cell, fold_scores, options.target_precision)
        how = how.replace("validation", f"out-of-fold ({folds})")
    run.card.update(threshold=thr, threshold_rule=how, target_precision=options.target_precision)


def training_record(run, history, rows, frozen, prior, calib):
    """The card's ``training``: what the model was trained on, how, and with what result per epoch."""
    options, arch, d, hp = run.options, run.arch, run.data, run.hp
    classes, multi, relative = arch.classes, arch.multi, arch.crop.scale == "reference"
    counts = lambda y: dict(zip(classes, np.bincount(y, minlength=len(classes)).tolist()))
    labelled = run.train_sets + run.val_sets
    diameters = [reference_diameter(rs) for rs in labelled] if relative else None
    augmentation = "8 rotations/flips" + (f", scale jitter x{sorted(options.scale_jitter)}" if relative and options.scale_jitter
                                          else "") + (f", image channels dropped in {options.image_dropout:.0%}"
                                                      if run.fit_kw["dropout_channels"] else "")
    if prior is None:
        prior_text = None
    elif options.shape_prior:
        prior_text = "logistic regression on shape features of the training ROIs, weighted on validation"
    else:
        prior_text = f"{arch.init.name}'s" + (", re-weighted on validation" if calib else "")
    rehearse = options.rehearse
    return {
        "recordings": recordings(run.train_sets), "validation_recordings": recordings(run.val_sets),
        "test_recordings": recordings(run.test_sets),
        "label_sources": sorted({str(rs.origin["label_source"]) for rs in labelled}),
        "n_train": int(len(d.y_tr)), "n_train_cells": run.ncell(d.y_tr), "n_val": int(len(d.y_va)),
        "n_val_cells": run.ncell(d.y_va), "epochs_run": len(history), **{k: hp[k] for k in DEFAULTS}, "seed": options.seed,
        "augmentation": augmentation,
        "class_balance": "cross-entropy weighted by inverse class frequency" if multi
                         else "BCE pos_weight = negatives/positives",
        "class_counts": {"train": counts(d.y_tr), "validation": counts(d.y_va)} if multi else None,
        "shape_prior": prior_text,
        "head": "stacked head fitted on the leave-one-lab-out scores (train --head; the card's head)"
                if options.head else None,
        "reference_diameter_px": [min(diameters), max(diameters)] if relative else None,
        "split": "by lab" if options.operating_point == "out-of-lab" else "by recording",
        "init": None if arch.init is None else {"name": arch.init.card.get("name"),
                                                "sha256": arch.init.card.get("sha256"), "transfer": arch.transfer},
        "freeze_until": options.freeze_until, "frozen_parameters": len(frozen), "history": history, "search": rows,
        "rehearsal": {"recordings": recordings(rehearse), "n": int(len(d.rehearsal[1])), "share": options.rehearse_share,
                      "label_sources": sorted({str(rs.origin["label_source"]) for rs in rehearse})}
                     if rehearse else None}
