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
from dataclasses import replace
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate.crops import make_crops
from roicurate.evaluate import best_f1_threshold, class_indices, threshold_for_precision
from roicurate.fit import DEFAULTS, fit, freeze_below, predict_scores, unjittered
from roicurate.labels import attach_labels, cell_labels
from roicurate.outoflab import MIN_RECALL, check_labs, lab_of, nested_metrics
from roicurate.outoflab import operating_point as oof_operating_point
from roicurate.scale import reference_diameter
from roicurate.shape import fit_prior, prior_logit, scale_prior, shape_features

OOF_FOLDS = 3     # no validation recording: folds of the training ROIs that give out-of-fold scores for the threshold
SCALE_JITTER = (0.8, 0.9, 1.0, 1.12, 1.25)   # factors of the reference diameter drawn in training


def load_labelled(paths, pipeline=None, use_pipeline_labels=True, log=None, class_rule=None, types=None,
                  type_classes=None, images=()):
    """Read every unit under ``paths`` with its source; keep those with labels. Returns [RoiSet].
    ``class_rule``: class labels where the label records name object classes (``labels.attach_labels``).
    ``types``: cell-type labels instead (``labels.attach_type_labels``: ``redcell`` or a CSV), over ``type_classes``
    (default: every name found, sorted); only the ROIs with a type are kept. ``images``: [(name, file)] added to
    each unit's images (roicurate/images.py)."""
    from roicurate.images import add_images
    from roicurate.labels import attach_type_labels, read_type_labels
    from roicurate.plugins import source_for
    sets = []
    for path in paths:
        src = source_for(str(path))
        if pipeline and src.name != pipeline:
            raise RoicurateError(f"{path}: is {src.name} output, but --pipeline {pipeline} was given")
        for unit in src.expand(str(path)):
            rs = add_images(src.read(unit), images)
            rs.origin["source"] = src.name
            if not len(rs):
                continue
            if types is None:
                rs = attach_labels(rs, use_pipeline=use_pipeline_labels, log=log, class_rule=class_rule)
            if rs.labels is not None or types is not None:
                sets.append(rs)
    if types is not None:
        read = [read_type_labels(rs, types) for rs in sets]
        if type_classes is None:
            type_classes = sorted({c for _, names, _ in read for c in names})
        sets = [_typed_only(attach_type_labels(rs, types, type_classes, r)) for rs, r in zip(sets, read)]
    if not sets:
        raise RoicurateError("no labelled ROIs found in the given paths")
    return sets


def _typed_only(rs):
    """The ROIs of ``rs`` that have a type, remembering their numbers in the pipeline's order."""
    index = np.flatnonzero(rs.labels >= 0)
    sub = rs.subset(index)
    sub.origin["roi_index"] = index.tolist()
    return sub


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


def stack(sets, crop, classes=None, jitter=None):
    """Crops and labels: 1.0 / 0.0 (cell or not), or with ``classes`` (a K-class model's names) class indices.
    ``jitter``: scale factors of the reference diameter (a ``scale="reference"`` crop): the crops are then
    (N, J, C, S, S), variant 0 unjittered, and training draws one variant per crop (``fit``)."""
    if not sets:
        return (np.zeros((0, len(crop.channels), crop.size, crop.size), np.float32),
                np.zeros(0, np.float32 if classes is None else np.int64))
    if jitter and crop.scale == "reference":
        factors = [1.0] + [f for f in jitter if f != 1.0]
        x = np.concatenate([np.stack([make_crops(rs, crop, scale_factor=f) for f in factors], 1) for rs in sets])
    else:
        x = np.concatenate([make_crops(rs, crop) for rs in sets])
    if classes is None:
        return x, np.concatenate([cell_labels(rs).astype(np.float32) for rs in sets])
    return x, np.concatenate([_class_labels(rs, classes) for rs in sets])


def _class_labels(rs, classes):
    """The class labels of ``rs`` as indices into ``classes`` (the model's names, which the labels must have)."""
    y = class_indices(rs, classes)
    if len(y) and (y < 0).any():
        names = rs.origin.get("label_classes")
        raise RoicurateError(f"{rs.origin.get('label_source') or rs.origin.get('path')}: labels are "
                             f"{'cell / not cell only' if names is None else 'of the classes ' + ', '.join(names)}, "
                             f"but the model has the classes {', '.join(classes)}; train it on ground truth with "
                             f"object classes (classes.json) and a class rule that names them")
    return y


def choose_threshold(y, s, target_precision):
    """Precision first: the lowest threshold reaching ``target_precision`` on validation; max F1 if none does."""
    thr = threshold_for_precision(y, s, target_precision) if target_precision else None
    if thr is not None:
        return thr, f"lowest threshold with validation precision >= {target_precision}"
    thr, f1 = best_f1_threshold(y, s)
    how = "maximum validation F1" + (f" (precision {target_precision} is never reached)" if target_precision else "")
    return thr, how


def with_rehearsal(x, y, rehearsal, share):
    """Training arrays with the ``rehearsal`` items (x, y) appended and the draw probabilities that make them
    ``share`` of every epoch (None without rehearsal: every item once per epoch)."""
    if rehearsal is None:
        return x, y, None
    xr, yr = rehearsal
    draw = np.r_[np.full(len(y), (1 - share) / max(len(y), 1)), np.full(len(yr), share / len(yr))]
    return np.concatenate([x, xr]), np.concatenate([y, yr]), draw


def oof_folds(groups, seed):
    """(fold index per ROI, what the folds are): scikit-learn's GroupKFold on ``groups`` (each ROI's recording),
    OOF_FOLDS folds or one per recording when there are fewer, so no recording is on both sides of a fold; a
    single recording falls back to OOF_FOLDS random folds of its ROIs."""
    from sklearn.model_selection import GroupKFold
    n_recs = len(set(groups))
    if n_recs < 2:
        return (np.random.default_rng(seed).permutation(len(groups)) % OOF_FOLDS,
                f"{OOF_FOLDS} folds of the ROIs of the one training recording")
    folds = np.zeros(len(groups), np.int64)
    for f, (_, held) in enumerate(GroupKFold(min(OOF_FOLDS, n_recs)).split(groups, groups=groups)):
        folds[held] = f
    return folds, f"{min(OOF_FOLDS, n_recs)} folds of whole training recordings"


def out_of_fold_scores(new_module, x, y, hp, seed, device, positive=-1, rehearsal=None, share=0.5, groups=None,
                       log=print, **fit_kw):
    """(scores, what the folds are): scores of the training ROIs by models that did not see them or their recording
    (``groups``: each ROI's recording, see :func:`oof_folds`), each trained (same settings, no validation, the same
    rehearsal) on the other folds. Used for the threshold when there is no validation recording."""
    folds, how = oof_folds(np.zeros(len(y)) if groups is None else np.asarray(groups), seed)
    log(f"out-of-fold scores: {how}")
    scores = np.zeros(len(y))
    for f in range(int(folds.max()) + 1):
        m, _ = new_module()
        xf, yf, draw = with_rehearsal(x[folds != f], y[folds != f], rehearsal, share)
        fit(m, xf, yf, unjittered(x[:0]), y[:0], hp, seed=seed, device=device, log=lambda s: None, positive=positive,
            draw=draw, **fit_kw)
        m.cpu()
        _fp16_round(m)
        scores[folds == f] = predict_scores(m, x[folds == f], "cpu", positive=positive)
    return scores, how


def transfer_weights(module, state, new_output=False):
    """Load into ``module`` what fits of another network's ``state``: tensors of the same name and shape are
    copied; a convolution with more input channels (the trained network's channels first, e.g. mask -> mask +
    images) gets the trained filters on those and zeros on the new ones, so that it starts out computing exactly
    what the trained network did and learns what the new channels add; the rest keep their fresh initialisation,
    and so does the output layer (the last module with parameters) when ``new_output`` (other classes). Returns
    the names of the parameters not copied as they were."""
    import torch
    own = module.state_dict()
    last = [name for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))][-1]
    new = {}
    for k, v in own.items():
        w = state.get(k)
        if w is None or not w.is_floating_point() or (new_output and k.rsplit(".", 1)[0] == last):
            continue
        if w.shape == v.shape:
            new[k] = w
        elif w.ndim == v.ndim == 4 and w.shape[0] == v.shape[0] and w.shape[2:] == v.shape[2:] \
                and w.shape[1] < v.shape[1]:
            new[k] = torch.zeros_like(v)
            new[k][:, :w.shape[1]] = w
    module.load_state_dict({**own, **new})
    return {n for n, _ in module.named_parameters() if n not in new or new[n].shape != state[n].shape}


def _fp16_round(module):
    """Score with the fp16 weights that will ship, so that the card describes the saved model."""
    module.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in module.state_dict().items()})


def train(sets, arch_spec, crop, val, out, name, hp=None, seed=0, device="auto", target_precision=None,
          build_kwargs=None, calibration="platt", init=None, freeze_until=None, search=0, test=None,
          resume=False, suite2p_classifier=None, shape_prior=False, class_rule=None, rehearse=None,
          rehearse_share=0.5, operating_point="validation", min_recall=None, scale_jitter=SCALE_JITTER,
          image_dropout=0.0, log=print):
    """Split, fit (or search), calibrate, choose the threshold on validation, save weights + card; evaluate held-out
    ``test`` recordings the way ``roicurate evaluate`` does (into ``OUT/NAME.test/``). Returns the card path.

    ``init``: a loaded Classifier to fine-tune (its architecture, crop and weights are used; ``arch_spec``,
    ``crop`` and ``build_kwargs`` are ignored); ``freeze_until``: the first layer that trains. ``shape_prior``: also
    fit a logistic regression on five shape features of the training ROIs (roicurate/shape.py) whose logit is added
    to the network's, weighted together with the Platt calibration on validation. A model with K > 2 classes
    (``arch_spec.classes``) trains on class labels (``class_rule``: how they were derived, kept in the card), is
    calibrated with ``calibrate.fit_classes`` and gets its threshold on the probability of its positive class.
    ``rehearse``: labelled RoiSets of other recordings (e.g. what ``init`` was trained on) that are only trained on,
    drawn as ``rehearse_share`` of every epoch, so that fine-tuning on a few new recordings keeps what the model
    knew; validation, calibration and the threshold use ``sets`` alone. ``operating_point="out-of-lab"``: no
    validation split; the calibration and the threshold come from leave-one-lab-out scores (roicurate/outoflab.py,
    ``min_recall`` on every lab) and the model is trained on every recording. ``scale_jitter``: scale factors drawn
    in training for a ``scale="reference"`` crop. ``image_dropout``: the share of training crops whose image
    channels are zeroed (a model that also works where a recording has no images: ``crop.optional_images``)."""
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
    # --epochs 0: ``init``'s weights as they are; every recording given fits the calibration and the threshold
    keep = init is not None and hp["epochs"] == 0
    if hp["epochs"] == 0 and init is None:
        raise RoicurateError("--epochs 0 keeps the weights of a model as they are: give it with --init")
    if keep and (search or shape_prior or rehearse or resume):
        raise RoicurateError("--epochs 0 trains nothing: --search, --shape-prior, --rehearse and --resume need epochs")
    out_of_lab = operating_point == "out-of-lab"
    if operating_point not in ("validation", "out-of-lab"):
        raise RoicurateError(f"--operating-point {operating_point}: choose validation or out-of-lab")
    if out_of_lab and (keep or search or rehearse or resume or calibration != "platt"):
        raise RoicurateError("--operating-point out-of-lab trains one model per lab and calibrates with Platt: "
                             "without --epochs 0, --search, --rehearse, --resume or another --calibrate")
    labs = check_labs([lab_of(rs.origin["recording"]) for rs in sets]) if out_of_lab else None
    train_sets, val_sets = ([], sets) if keep else (sets, []) if out_of_lab else split_by_recording(sets, val, seed)
    if shape_prior and not out_of_lab and (not val_sets or calibration != "platt"):
        raise RoicurateError("--shape-prior is weighted by the Platt calibration on validation recordings: "
                             "give --val and keep --calibrate platt")
    task = getattr(arch_spec, "task", "curate")
    # fine-tuning a model as it is, or ``transfer``: the weights that fit a network of another architecture, input
    # channels or classes (a cell-type network started from the bundled cell / not-cell one)
    transfer = init is not None and (arch_spec.name != init.spec.name or task == "types")
    if keep and transfer:
        raise RoicurateError("--epochs 0 keeps --init as it is; another architecture, input or classes needs training")
    if init is not None:
        init_state = {k: v.detach().cpu().clone() for k, v in init.module.state_dict().items()}
    if transfer and tuple(crop.channels[:len(init.crop.channels)]) != tuple(init.crop.channels):
        raise RoicurateError(f"--init {init.name}: its input channels ({', '.join(init.crop.channels)}) must come "
                             f"first in the new network's ({', '.join(crop.channels)})")
    if init is not None and not transfer:
        arch_spec, crop = init.spec, init.crop
        build_kwargs = dict(init.card.get("build_kwargs", {}))
    else:
        inherited = {} if init is None else {k: v for k, v in init.card.get("build_kwargs", {}).items()
                                             if k not in ("in_channels", "n_out")}   # e.g. the width, so weights fit
        build_kwargs = {**inherited, **(build_kwargs or {})}
        build_kwargs.setdefault("in_channels", len(crop.channels))
    if task == "types":
        found = {tuple(rs.origin.get("label_classes") or ()) for rs in sets}
        if len(found) != 1 or len(next(iter(found))) < 2:
            raise RoicurateError(f"a cell-type model trains on cell-type labels of one set of two or more classes "
                                 f"(--types); found {', '.join('/'.join(f) or 'none' for f in found)}")
        arch_spec = replace(arch_spec, classes=next(iter(found)), positive_class=None)
        build_kwargs.setdefault("n_out", 1 if len(arch_spec.classes) == 2 else len(arch_spec.classes))
    classes = list(arch_spec.classes)
    multi = len(classes) > 2       # K-class model: class-index labels, K-class calibration
    if out_of_lab and multi:
        raise RoicurateError("--operating-point out-of-lab is for cell / not-cell models")
    relative = crop.scale == "reference"    # shape features relative to the reference cell
    dropout = [i for i, c in enumerate(crop.channels) if c != "mask"] if image_dropout else []
    dropout_kw = {"dropout_channels": dropout, "dropout_p": image_dropout}      # every fit of this run
    pos = classes.index(arch_spec.positive_class or classes[-1])
    if multi and shape_prior:
        raise RoicurateError("--shape-prior adds to a one-output network's logit; this model has "
                             f"{len(classes)} classes")
    if multi and class_rule is not None and class_rule["positive"] != classes[pos]:
        raise RoicurateError(f"the class rule's positive class is '{class_rule['positive']}', the model's "
                             f"'{classes[pos]}'")

    def new_module():
        torch.manual_seed(seed)
        m = arch_spec.build(**build_kwargs)
        reshaped = set()
        if transfer:
            reshaped = transfer_weights(m, init_state, new_output=list(init.classes) != classes)
        elif init is not None:
            m.load_state_dict(init_state)
        frozen = freeze_below(m, freeze_until) if freeze_until else []
        mods = list(m.named_modules())
        for (a, _), (b, bn) in zip(mods, mods[1:]):   # the batch norm right after a reshaped convolution
            if isinstance(bn, torch.nn.BatchNorm2d) and f"{a}.weight" in reshaped:
                reshaped |= {f"{b}.weight", f"{b}.bias"}
        for name, p in m.named_parameters():       # nothing of theirs to keep: they train
            if name in reshaped:
                p.requires_grad_(True)
        return m, [n for n in frozen if n not in reshaped]

    from roicurate.labels import log_label_sources       # every option checked: say what the labels are
    log_label_sources(train_sets + val_sets + test_sets, log)
    if rehearse:
        log_label_sources(rehearse, log, "rehearsal ")
    x_tr, y_tr = stack(train_sets, crop, classes if multi else None, scale_jitter)
    x_va, y_va = stack(val_sets, crop, classes if multi else None)
    rehearsal = None
    if rehearse:
        mixed = set(recordings(rehearse)) & set(recordings(sets + test_sets))
        if mixed:
            raise RoicurateError(f"--rehearse: {', '.join(sorted(mixed))} also in the training paths")
        if not 0 < rehearse_share < 1:
            raise RoicurateError("--rehearse-share must be between 0 and 1")
        rehearsal = stack(rehearse, crop, classes if multi else None, scale_jitter)
        log(f"rehearsal: {len(rehearsal[1])} ROIs from {len(recordings(rehearse))} recordings, "
            f"{rehearse_share:.0%} of every epoch's draws")
    x_fit, y_fit, draw = with_rehearsal(x_tr, y_tr, rehearsal, rehearse_share)
    ncell = lambda y: int((y == pos).sum()) if multi else int(y.sum())
    log(f"train: {len(y_tr)} ROIs ({ncell(y_tr)} {classes[pos]}) from {len(recordings(train_sets))} recordings; "
        f"validation: {len(y_va)} ROIs ({ncell(y_va)} {classes[pos]}) from {len(recordings(val_sets))} recordings"
        + (f"; test (held out): {sum(len(r) for r in test_sets)} ROIs from {len(recordings(test_sets))} recordings"
           if test_sets else ""))
    if not val_sets and not out_of_lab:
        log(f"no validation recordings: training runs every epoch, the threshold is chosen on out-of-fold scores "
            f"({OOF_FOLDS} folds of the training ROIs) and the probabilities are not calibrated")
    config = {"train": recordings(train_sets), "val": recordings(val_sets), "n": [len(y_tr), len(y_va)],
              "arch": arch_spec.name, "build_kwargs": build_kwargs, "crop": crop.to_dict(), "hp": hp, "seed": seed,
              "init": None if init is None else init.card.get("sha256"), "freeze_until": freeze_until,
              "rehearse": recordings(rehearse or []), "rehearse_share": rehearse_share if rehearse else None}
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
            hist = fit(m, x_fit, y_fit, x_va, y_va, dict(hp, **trial_hp), seed=seed, device=device,
                       log=lambda s: None, positive=pos, draw=draw, **dropout_kw)
            best = max(hist, key=lambda h: h["val_f1"])
            return best["val_f1"], best["val_roc_auc"], hist, m, time.time() - t0

        best_hp, module, history, rows = random_search(search, run_trial, seed=seed, log=log,
                                                       table_path=out / f"{name}.search.csv")
        hp.update(best_hp)
        log(format_table(rows))
        frozen = freeze_below(module, freeze_until) if freeze_until else []
    elif keep:
        module, frozen = new_module()
        history = []
        log(f"--epochs 0: the weights of {init.name} as they are; calibration and threshold from the "
            f"{len(y_va)} ROIs of {len(recordings(val_sets))} recordings given")
    else:
        module, frozen = new_module()
        history = fit(module, x_fit, y_fit, x_va, y_va, hp, seed=seed, device=device, log=log, checkpoint=ckpt,
                      resume=resume, config=config, positive=pos, draw=draw, **dropout_kw)
    module.cpu().eval()
    _fp16_round(module)

    card = {"arch": arch_spec.name, "build_kwargs": build_kwargs,
            "pipeline": (train_sets or val_sets)[0].origin["source"],
            "crop": crop.to_dict(), "classes": classes, "positive_class": classes[pos],
            "threshold": 0.5, "name": name, "sha256": None, "task": task}
    if multi:
        card["class_rule"] = class_rule
    y_va_all = np.concatenate([cell_labels(rs) for rs in val_sets]) if val_sets else None
    score = lambda c: np.concatenate([Classifier(module, c, arch_spec).predict_proba(rs)[:, pos] for rs in val_sets])
    calib = prior = None
    if shape_prior:
        binz = crop.binarize or 0.0
        prior = fit_prior(np.concatenate([shape_features(rs, binz, relative) for rs in train_sets]), y_tr, binz,
                          relative=relative)
    elif init is not None and not transfer and init.card.get("shape_prior"):
        if keep or (val_sets and calibration == "platt"):
            prior = init.card["shape_prior"]         # kept, and re-weighted with the Platt calibration
            if not keep:
                log(f"{init.name}'s shape prior is kept and re-weighted on validation")
        else:
            log(f"note: {init.name}'s shape prior is not carried over (it is weighted by Platt calibration on "
                f"validation recordings: give --val)")
    # ---- K-class calibration (fourclass etc.): temperature + per-class biases, folded into the output layer ----
    if multi and val_sets and calibration != "none":
        proba = np.concatenate([Classifier(module, card, arch_spec).predict_proba(rs) for rs in val_sets])
        calib, (a, bias) = cal.fit_classes(calibration, y_va, proba, pos)
        cal.fold_affine(module, a, torch.tensor(bias, dtype=torch.float32), torch.from_numpy(x_va[:64]))
        _fp16_round(module)
        calib["folded"] = True
        log(f"calibration ({calib['method']}, {len(classes)} classes, on validation): log-loss "
            f"{calib['log_loss_before']:.3f} -> {calib['log_loss_after']:.3f}; ECE of {classes[pos]} "
            f"{calib['ece_before']:.3f} -> {calib['ece_after']:.3f}")
    # ---- end of K-class calibration ----
    if val_sets and calibration != "none" and not multi:
        offset = None if prior is None else np.concatenate([prior_logit(prior, rs) for rs in val_sets])
        calib = cal.fit(calibration, y_va_all, score(card), offset)
        if cal.affine(calib):
            cal.fold_affine(module, *cal.affine(calib), torch.from_numpy(x_va[:64]))
            _fp16_round(module)
            calib["folded"] = True
        log(f"calibration ({calib['method']}, on validation): ECE {calib['ece_before']:.3f} -> {calib['ece_after']:.3f}")
    if prior is not None and calib is None:
        card["shape_prior"] = prior
    elif prior is not None:
        card["shape_prior"] = scale_prior(prior, calib["prior_weight"])
        log(f"shape prior: weight {calib['prior_weight']:.3f} (network logit weight {calib['a']:.3f})")
    if out_of_lab:
        oof = out_of_lab_scores(sets, labs, new_module, stack_sets=lambda ss: stack(ss, crop, None, scale_jitter),
                                fit_kw=dict(hp=hp, seed=seed, device=device, positive=pos, **dropout_kw),
                                card=card, arch_spec=arch_spec, prior_fit=(lambda ss, y: fit_prior(
                                    np.concatenate([shape_features(rs, binz, relative) for rs in ss]), y, binz,
                                    relative=relative)) if shape_prior else None, log=log)
        scores = (oof["y"], oof["p"], oof["offset"], oof["lab"])
        np.savez(out / f"{name}.out-of-lab.npz", **{k: v for k, v in oof.items() if v is not None})   # per ROI
        calib, oof_thr = oof_operating_point(*scores, min_recall or MIN_RECALL)
        cal.fold_affine(module, calib["a"], calib["b"], torch.from_numpy(unjittered(x_tr[:64])))
        _fp16_round(module)
        calib["folded"] = True
        if prior is not None and calib["prior_weight"] < 1e-3:
            log(f"shape prior dropped: its fitted weight on the out-of-lab scores is {calib['prior_weight']:.1e}")
            card.pop("shape_prior", None)
            prior = None
        elif prior is not None:
            card["shape_prior"] = scale_prior(prior, calib["prior_weight"])
        nested = nested_metrics(*scores, min_recall or MIN_RECALL)
        card["out_of_lab"] = {"min_recall": min_recall or MIN_RECALL,
                              "labs": {lab: sorted({rs.origin["recording"] for rs in sets
                                                    if lab_of(rs.origin["recording"]) == lab}) for lab in labs},
                              "nested": {"labs": nested["labs"], "pooled": nested["pooled"]}}
        for lab, m in nested["labs"].items():
            log(f"out of lab {lab}: precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  "
                f"ROC AUC {m['roc_auc']:.3f}  ECE {m['ece']:.3f} (calibration and threshold from the other labs)")
    card["calibration"] = calib
    if out_of_lab:
        thr, how = oof_thr, (f"highest threshold at which every lab's out-of-lab recall is >= "
                             f"{min_recall or MIN_RECALL} (Platt-calibrated pooled leave-one-lab-out scores)")
    elif val_sets:
        thr, how = choose_threshold(y_va_all, score(card), target_precision)
    else:
        oof, folds = out_of_fold_scores(new_module, x_tr, y_tr, hp, seed, device, pos, rehearsal, rehearse_share,
                                        np.repeat([rs.origin["recording"] for rs in train_sets],
                                                  [len(rs) for rs in train_sets]), log, **dropout_kw)
        thr, how = choose_threshold(y_tr == pos if multi else y_tr, oof, target_precision)
        how = how.replace("validation", f"out-of-fold ({folds})")
    card.update(threshold=thr, threshold_rule=how, target_precision=target_precision)
    diameters = [reference_diameter(rs) for rs in train_sets + val_sets] if relative else None
    card["training"] = {
        "recordings": recordings(train_sets), "validation_recordings": recordings(val_sets),
        "test_recordings": recordings(test_sets),
        "label_sources": sorted({str(rs.origin["label_source"]) for rs in train_sets + val_sets}),
        "n_train": int(len(y_tr)), "n_train_cells": ncell(y_tr), "n_val": int(len(y_va)),
        "n_val_cells": ncell(y_va), "epochs_run": len(history), **{k: hp[k] for k in DEFAULTS}, "seed": seed,
        "augmentation": "8 rotations/flips" + (f", scale jitter x{sorted(scale_jitter)}" if relative and scale_jitter
                                                 else "") + (f", image channels dropped in {image_dropout:.0%}"
                                                             if dropout else ""),
        "class_balance": "cross-entropy weighted by inverse class frequency" if multi
                         else "BCE pos_weight = negatives/positives",
        "class_counts": {"train": dict(zip(classes, np.bincount(y_tr, minlength=len(classes)).tolist())),
                         "validation": dict(zip(classes, np.bincount(y_va, minlength=len(classes)).tolist()))}
                        if multi else None,
        "shape_prior": None if prior is None else
                       "logistic regression on shape features of the training ROIs, weighted on validation"
                       if shape_prior else f"{init.name}'s" + (", re-weighted on validation" if calib else ""),
        "reference_diameter_px": [min(diameters), max(diameters)] if relative else None,
        "split": "by lab" if out_of_lab else "by recording",
        "init": None if init is None else {"name": init.card.get("name"), "sha256": init.card.get("sha256"),
                                           "transfer": transfer},
        "freeze_until": freeze_until, "frozen_parameters": len(frozen), "history": history, "search": rows,
        "rehearsal": {"recordings": recordings(rehearse), "n": int(len(rehearsal[1])), "share": rehearse_share,
                      "label_sources": sorted({str(rs.origin["label_source"]) for rs in rehearse})}
                     if rehearse else None}
    if val_sets:
        card["validation"] = {k: v for k, v in evaluate_model(Classifier(module, card, arch_spec), val_sets,
                                                              baselines=False)[0].items()
                              if k in ("pooled", "macro", "per_recording", "classes")}
    path = save_model(out, name, module, card)
    if ckpt.exists():
        ckpt.unlink()
    if test_sets:
        numbers, table = evaluate_model(Classifier.load(path, device=device), test_sets,
                                        suite2p_classifier=suite2p_classifier)
        write_evaluation(out / f"{name}.test", numbers, table)
    return path


def out_of_lab_scores(sets, labs, new_module, stack_sets, fit_kw, card, arch_spec, prior_fit=None, log=print):
    """For every lab, a model trained (``new_module``, ``fit``) on the other labs scores that lab's ROIs:
    {"y": labels, "p": network probabilities (uncalibrated), "offset": shape-prior logits or None, "lab",
    "recording"} per ROI."""
    from roicurate.models import Classifier
    y, p, off, group, recs = [], [], [], [], []
    bare = dict(card, calibration=None)
    bare.pop("shape_prior", None)
    for lab in labs:
        inside = [rs for rs in sets if lab_of(rs.origin["recording"]) == lab]
        rest = [rs for rs in sets if lab_of(rs.origin["recording"]) != lab]
        x, yy = stack_sets(rest)
        m, _ = new_module()
        fit(m, x, yy, unjittered(x[:0]), yy[:0], log=lambda s: None, **fit_kw)
        m.cpu().eval()
        _fp16_round(m)
        prior = prior_fit(rest, yy) if prior_fit else None
        clf = Classifier(m, bare, arch_spec)
        for rs in inside:
            y.append(cell_labels(rs) > 0)
            p.append(clf.predict_proba(rs)[:, clf.positive])
            off.append(prior_logit(prior, rs) if prior else np.zeros(len(rs)))
            group += [lab] * len(rs)
            recs += [rs.origin["recording"]] * len(rs)
        log(f"out of lab {lab}: scored {sum(len(r) for r in inside)} ROIs with a model trained on "
            f"{len(yy)} ROIs of the other labs")
    return {"y": np.concatenate(y), "p": np.concatenate(p), "offset": np.concatenate(off) if prior_fit else None,
            "lab": np.array(group), "recording": np.array(recs)}
