"""Train a classifier on labelled ROI sets (``roicurate train``).

Split by recording (never by ROI); fit (roicurate/fit.py) or a random search (roicurate/search.py); calibration and
the operating threshold fitted on validation only; a card with the validation (and held-out test) numbers, computed
by the same code as ``roicurate evaluate``. Fine-tuning starts from any bundled or saved model and freezes the
layers below a named one. Without a validation recording (``--val none``, e.g. the one labelled video of a new lab)
every epoch runs and the threshold comes from out-of-fold scores: models trained on k-1 of k random folds of the
training ROIs score the remaining fold, so the threshold is not chosen on scores of ROIs the model was fitted to.
"""
import random
import time
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate.crops import make_crops
from roicurate.evaluate import best_f1_threshold, threshold_for_precision
from roicurate.fit import DEFAULTS, fit, freeze_below, predict_scores
from roicurate.labels import attach_labels

OOF_FOLDS = 3     # no validation recording: folds of the training ROIs that give out-of-fold scores for the threshold


def load_labelled(paths, pipeline=None, use_pipeline_labels=True, log=None):
    """Read every unit under ``paths`` with its source; keep those with labels. Returns [RoiSet]."""
    from roicurate.plugins import source_for
    sets = []
    for path in paths:
        src = source_for(str(path))
        if pipeline and src.name != pipeline:
            raise RoicurateError(f"{path}: is {src.name} output, but --pipeline {pipeline} was given")
        for unit in src.expand(str(path)):
            rs = attach_labels(src.read(unit), use_pipeline=use_pipeline_labels, log=log)
            if len(rs) and rs.labels is not None:
                rs.origin["source"] = src.name
                sets.append(rs)
    if not sets:
        raise RoicurateError("no labelled ROIs found in the given paths")
    return sets


def recordings(sets):
    return sorted({rs.origin["recording"] for rs in sets})


def select_recordings(sets, names, what="--val"):
    """Recordings named by ``names``: exact names, or names that end with ``/NAME``, or else substrings."""
    recs = recordings(sets)
    chosen = set()
    for v in names:
        hit = [r for r in recs if r == v or r.endswith("/" + v)] or [r for r in recs if v in r]
        if not hit:
            raise RoicurateError(f"{what}: no recording matches '{v}' (recordings: {', '.join(recs)})")
        chosen.update(hit)
    return chosen


def split_by_recording(sets, val, seed=0):
    """(train, validation) sets. ``val``: recording names (list), a fraction of recordings (float in (0, 1)),
    or None (no validation). Whole recordings go to one side: the planes of one session stay together."""
    recs = recordings(sets)
    if val is None:
        return list(sets), []
    if isinstance(val, float):
        if not 0 < val < 1:
            raise RoicurateError(f"--val {val}: a fraction must be between 0 and 1")
        shuffled = recs[:]
        random.Random(seed).shuffle(shuffled)
        nval = max(1, round(val * len(recs)))
        if nval >= len(recs):
            raise RoicurateError(f"--val {val}: need at least 2 recordings, found {len(recs)} ({', '.join(recs)})")
        val_recs = set(shuffled[:nval])
    else:
        val_recs = select_recordings(sets, val)
    train = [rs for rs in sets if rs.origin["recording"] not in val_recs]
    valid = [rs for rs in sets if rs.origin["recording"] in val_recs]
    if not train or not valid:
        raise RoicurateError("the split left no training or no validation recordings")
    return train, valid


def stack(sets, crop):
    if not sets:
        return np.zeros((0, len(crop.channels), crop.size, crop.size), np.float32), np.zeros(0, np.float32)
    x = np.concatenate([make_crops(rs, crop) for rs in sets])
    y = np.concatenate([(rs.labels > 0).astype(np.float32) for rs in sets])
    return x, y


def choose_threshold(y, s, target_precision):
    """Precision first: the lowest threshold reaching ``target_precision`` on validation; max F1 if none does."""
    thr = threshold_for_precision(y, s, target_precision) if target_precision else None
    if thr is not None:
        return thr, f"lowest threshold with validation precision >= {target_precision}"
    thr, f1 = best_f1_threshold(y, s)
    how = "maximum validation F1" + (f" (precision {target_precision} is never reached)" if target_precision else "")
    return thr, how


def out_of_fold_scores(new_module, x, y, hp, seed, device):
    """Scores of the training ROIs by models that did not see them: OOF_FOLDS models, each trained (same settings,
    no validation) on the other folds. Used for the threshold when there is no validation recording."""
    folds = np.random.default_rng(seed).permutation(len(y)) % OOF_FOLDS
    scores = np.zeros(len(y))
    for f in range(OOF_FOLDS):
        m, _ = new_module()
        fit(m, x[folds != f], y[folds != f], x[:0], y[:0], hp, seed=seed, device=device, log=lambda s: None)
        m.cpu()
        _fp16_round(m)
        scores[folds == f] = predict_scores(m, x[folds == f], "cpu")
    return scores


def _fp16_round(module):
    """Score with the fp16 weights that will ship, so that the card describes the saved model."""
    module.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in module.state_dict().items()})


def train(sets, arch_spec, crop, val, out, name, hp=None, seed=0, device="auto", target_precision=None,
          build_kwargs=None, calibration="platt", init=None, freeze_until=None, search=0, test=None,
          resume=False, suite2p_classifier=None, log=print):
    """Split, fit (or search), calibrate, choose the threshold on validation, save weights + card; evaluate held-out
    ``test`` recordings the way ``roicurate evaluate`` does (into ``OUT/NAME.test/``). Returns the card path.

    ``init``: a loaded Classifier to fine-tune (its architecture, crop and weights are used; ``arch_spec``,
    ``crop`` and ``build_kwargs`` are ignored); ``freeze_until``: the first layer that trains."""
    import torch
    from roicurate import calibrate as cal
    from roicurate.evaluate import evaluate_model, write_evaluation
    from roicurate.models import Classifier, save_model
    hp = dict(DEFAULTS, **{k: v for k, v in (hp or {}).items() if v is not None})
    out = Path(out)
    test_sets = []
    if test:
        held = select_recordings(sets, test, "--test")
        test_sets = [rs for rs in sets if rs.origin["recording"] in held]
        sets = [rs for rs in sets if rs.origin["recording"] not in held]
        if not sets:
            raise RoicurateError("--test takes every recording; nothing is left to train on")
    train_sets, val_sets = split_by_recording(sets, val, seed)
    if init is not None:
        arch_spec, crop = init.spec, init.crop
        build_kwargs = dict(init.card.get("build_kwargs", {}))
        init_state = {k: v.detach().cpu().clone() for k, v in init.module.state_dict().items()}
    else:
        build_kwargs = dict(build_kwargs or {})
        build_kwargs.setdefault("in_channels", len(crop.channels))

    def new_module():
        torch.manual_seed(seed)
        m = arch_spec.build(**build_kwargs)
        if init is not None:
            m.load_state_dict(init_state)
        frozen = freeze_below(m, freeze_until) if freeze_until else []
        return m, frozen

    x_tr, y_tr = stack(train_sets, crop)
    x_va, y_va = stack(val_sets, crop)
    log(f"train: {len(y_tr)} ROIs ({int(y_tr.sum())} cells) from {len(recordings(train_sets))} recordings; "
        f"validation: {len(y_va)} ROIs ({int(y_va.sum())} cells) from {len(recordings(val_sets))} recordings"
        + (f"; test (held out): {sum(len(r) for r in test_sets)} ROIs from {len(recordings(test_sets))} recordings"
           if test_sets else ""))
    if not val_sets:
        log(f"no validation recordings: training runs every epoch, the threshold is chosen on out-of-fold scores "
            f"({OOF_FOLDS} folds of the training ROIs) and the probabilities are not calibrated")
    config = {"train": recordings(train_sets), "val": recordings(val_sets), "n": [len(y_tr), len(y_va)],
              "arch": arch_spec.name, "build_kwargs": build_kwargs, "crop": crop.to_dict(), "hp": hp, "seed": seed,
              "init": None if init is None else init.card.get("sha256"), "freeze_until": freeze_until}
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{name}.ckpt.pt"
    rows = None
    if search:
        if not val_sets:
            raise RoicurateError("--search scores trials on validation F1; give validation recordings with --val")
        if resume:
            raise RoicurateError("--resume continues a single training run, not a --search")
        from roicurate.search import format_table, random_search

        def run_trial(trial_hp):
            t0 = time.time()
            m, _ = new_module()
            hist = fit(m, x_tr, y_tr, x_va, y_va, dict(hp, **trial_hp), seed=seed, device=device, log=lambda s: None)
            best = max(hist, key=lambda h: h["val_f1"])
            return best["val_f1"], best["val_roc_auc"], hist, m, time.time() - t0

        best_hp, module, history, rows = random_search(search, run_trial, seed=seed, log=log,
                                                       table_path=out / f"{name}.search.csv")
        hp.update(best_hp)
        log(format_table(rows))
        frozen = freeze_below(module, freeze_until) if freeze_until else []
    else:
        module, frozen = new_module()
        history = fit(module, x_tr, y_tr, x_va, y_va, hp, seed=seed, device=device, log=log, checkpoint=ckpt,
                      resume=resume, config=config)
    module.cpu().eval()
    _fp16_round(module)

    card = {"arch": arch_spec.name, "build_kwargs": build_kwargs, "pipeline": train_sets[0].origin["source"],
            "crop": crop.to_dict(), "classes": list(arch_spec.classes), "positive_class": arch_spec.classes[-1],
            "threshold": 0.5, "name": name, "sha256": None}
    y_va_all = np.concatenate([rs.labels > 0 for rs in val_sets]) if val_sets else None
    score = lambda c: np.concatenate([Classifier(module, c, arch_spec).predict_proba(rs)[:, -1] for rs in val_sets])
    calib = None
    if val_sets and calibration != "none":
        calib = cal.fit(calibration, y_va_all, score(card))
        if cal.affine(calib):
            cal.fold_affine(module, *cal.affine(calib), torch.from_numpy(x_va[:64]))
            _fp16_round(module)
            calib["folded"] = True
        log(f"calibration ({calib['method']}, on validation): ECE {calib['ece_before']:.3f} -> {calib['ece_after']:.3f}")
    card["calibration"] = calib
    if val_sets:
        thr, how = choose_threshold(y_va_all, score(card), target_precision)
    else:
        thr, how = choose_threshold(y_tr, out_of_fold_scores(new_module, x_tr, y_tr, hp, seed, device),
                                    target_precision)
        how = how.replace("validation", f"out-of-fold ({OOF_FOLDS} folds of the training ROIs)")
    card.update(threshold=thr, threshold_rule=how, target_precision=target_precision)
    card["training"] = {
        "recordings": recordings(train_sets), "validation_recordings": recordings(val_sets),
        "test_recordings": recordings(test_sets),
        "label_sources": sorted({str(rs.origin["label_source"]) for rs in train_sets + val_sets}),
        "n_train": int(len(y_tr)), "n_train_cells": int(y_tr.sum()), "n_val": int(len(y_va)),
        "n_val_cells": int(y_va.sum()), "epochs_run": len(history), **{k: hp[k] for k in DEFAULTS}, "seed": seed,
        "augmentation": "8 rotations/flips", "class_balance": "BCE pos_weight = negatives/positives",
        "split": "by recording", "init": None if init is None else {"name": init.card.get("name"),
                                                                      "sha256": init.card.get("sha256")},
        "freeze_until": freeze_until, "frozen_parameters": len(frozen), "history": history, "search": rows}
    if val_sets:
        card["validation"] = {k: v for k, v in evaluate_model(Classifier(module, card, arch_spec), val_sets,
                                                              baselines=False)[0].items()
                              if k in ("pooled", "macro", "per_recording")}
    path = save_model(out, name, module, card)
    if ckpt.exists():
        ckpt.unlink()
    if test_sets:
        numbers, table = evaluate_model(Classifier.load(path, device=device), test_sets,
                                        suite2p_classifier=suite2p_classifier)
        write_evaluation(out / f"{name}.test", numbers, table)
    return path
