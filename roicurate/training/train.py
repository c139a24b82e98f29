"""Train a classifier on labelled ROI sets (``roicurate train``).

Split by recording (never by ROI); fit (roicurate/fit.py) or a random search (roicurate/search.py); calibration and
the operating threshold fitted on validation only; a card with the validation (and held-out test) numbers, computed
by the same code as ``roicurate evaluate``. Fine-tuning starts from any bundled or saved model and freezes the
layers below a named one. Without a validation recording (``--val none``, e.g. the one labelled video of a new lab)
every epoch runs and the threshold comes from out-of-fold scores: models trained on k-1 of k folds of whole
training recordings score the remaining fold, so the threshold is not chosen on scores of ROIs (or recordings) the
model was fitted to.
"""
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from roicurate import RoicurateError
from roicurate.crops import make_crops
from roicurate.evaluate import class_indices
from roicurate.fit import DEFAULTS, fit, freeze_below, predict_scores, unjittered  # noqa: F401 (freeze_below: API)
from roicurate.labels import attach_labels, cell_labels
from roicurate.outoflab import check_labs, lab_of
from roicurate.train_arch import fp16_round, resolve_architecture, transfer_weights  # noqa: F401 (transfer_weights: API)
from roicurate.train_operating_point import calibrate, threshold, training_record

OOF_FOLDS = 3     # no validation recording: folds of the training recordings whose out-of-fold scores set the threshold
SCALE_JITTER = (0.8, 0.9, 1.0, 1.12, 1.25)   # factors of the reference diameter drawn in training


def load_labelled(paths, pipeline=None, use_pipeline_labels=True, log=None, class_rule=None, types=None,
                  type_classes=None, images=()):
    """Read every unit under ``paths``; keep those with labels (review answers alone: the answered ROIs). Returns
    [RoiSet]. ``class_rule``: class labels where label records name object classes (``labels.attach_labels``).
    ``types``: cell-type labels instead (``labels.attach_type_labels``: ``redcell`` or a CSV) over ``type_classes``
    (default: all names, sorted); only ROIs with a type are kept. ``images``: [(name, file)] added to each unit."""
    from roicurate.labels import attach_type_labels, read_type_labels
    from roicurate.sources import read_units
    sets = []
    for _, _, rs in read_units(paths, images, pipeline):
        if not len(rs):
            continue
        if types is None:
            rs = attach_labels(rs, use_pipeline=use_pipeline_labels, log=log, class_rule=class_rule)
            rs = _typed_only(rs) if rs.origin.get("review_answers") and (rs.labels < 0).any() else rs
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
    """The ROIs of ``rs`` with a label (a type, a review answer), remembering their numbers in the pipeline's order."""
    index = np.flatnonzero(rs.labels >= 0)
    sub = rs.subset(index)
    sub.origin["roi_index"] = index.tolist()
    return sub


def recordings(sets):
    return sorted({rs.recording for rs in sets})


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
    train = [rs for rs in sets if rs.recording not in val_recs]
    valid = [rs for rs in sets if rs.recording in val_recs]
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
        raise RoicurateError(f"{rs.origin.get('label_source') or rs.path}: labels are "
                             f"{'cell / not cell only' if names is None else 'of the classes ' + ', '.join(names)}, "
                             f"but the model has the classes {', '.join(classes)}; train it on ground truth with "
                             f"object classes (classes.json) and a class rule that names them")
    return y


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
        fp16_round(m)
        scores[folds == f] = predict_scores(m, x[folds == f], "cpu", positive=positive)
    return scores, how




@dataclass
class TrainOptions:
    """Every option of a training run (``roicurate train``'s, under the same names); see :func:`train`."""
    hp: dict | None = None
    seed: int = 0
    device: str = "auto"
    target_precision: float | None = None
    build_kwargs: dict | None = None
    calibration: str = "platt"
    init: object = None
    freeze_until: str | None = None
    search: int = 0
    test: list | None = None
    resume: bool = False
    suite2p_classifier: str | None = None
    shape_prior: bool = False
    class_rule: dict | None = None
    rehearse: list | None = None
    rehearse_share: float = 0.5
    operating_point: str = "validation"
    min_recall: float | None = None
    scale_jitter: tuple = SCALE_JITTER
    image_dropout: float = 0.0
    log: object = print


@dataclass
class Run:
    """The state the phases of one training share."""
    o: TrainOptions
    hp: dict
    out: Path
    name: str
    sets: list                      # every labelled set but the held-out test ones
    test_sets: list
    keep: bool                      # --epochs 0: ``init``'s weights as they are
    labs: list | None = None
    train_sets: list = field(default_factory=list)
    val_sets: list = field(default_factory=list)
    arch: object = None
    data: object = None
    module: object = None
    card: dict = field(default_factory=dict)

    @property
    def log(self):
        return self.o.log

    @property
    def fit_kw(self):
        """What every fit of this run gets (the final one, search trials, out-of-fold and out-of-lab folds)."""
        dropout = [i for i, c in enumerate(self.arch.crop.channels) if c != "mask"] if self.o.image_dropout else []
        return dict(hp=self.hp, seed=self.o.seed, device=self.o.device, positive=self.arch.pos,
                    dropout_channels=dropout, dropout_p=self.o.image_dropout)

    @property
    def y_val(self):
        return np.concatenate([cell_labels(rs) for rs in self.val_sets]) if self.val_sets else None

    def ncell(self, y):
        return int((y == self.arch.pos).sum()) if self.arch.multi else int(y.sum())


def train(sets, arch_spec, crop, val, out, name, **options):
    """Split, fit (or search), calibrate, choose the threshold on validation, save weights + card; evaluate held-out
    ``test`` recordings the way ``roicurate evaluate`` does (into ``OUT/NAME.test/``). Returns the card path.

    ``options`` are :class:`TrainOptions`. ``init``: a loaded Classifier to fine-tune (its architecture, crop and
    weights are used; ``arch_spec``, ``crop`` and ``build_kwargs`` are ignored); ``freeze_until``: the first layer
    that trains. ``shape_prior``: also fit a logistic regression on five shape features of the training ROIs
    (roicurate/shape.py) whose logit is added to the network's, weighted together with the Platt calibration on
    validation. A model with K > 2 classes (``arch_spec.classes``) trains on class labels (``class_rule``: how they
    were derived, kept in the card), is calibrated with ``calibrate.fit_classes`` and gets its threshold on the
    probability of its positive class. ``rehearse``: labelled RoiSets of other recordings (e.g. what ``init`` was
    trained on) that are only trained on, drawn as ``rehearse_share`` of every epoch, so that fine-tuning on a few
    new recordings keeps what the model knew; validation, calibration and the threshold use ``sets`` alone.
    ``operating_point="out-of-lab"``: no validation split; the calibration and the threshold come from
    leave-one-lab-out scores (roicurate/outoflab.py, ``min_recall`` on every lab) and the model is trained on every
    recording. ``scale_jitter``: scale factors drawn in training for a ``scale="reference"`` crop.
    ``image_dropout``: the share of training crops whose image channels are zeroed (a model that also works where a
    recording has no images: ``crop.optional_images``).

    The phases: check the options, resolve the architecture (roicurate/train_arch.py), crop the data, fit or search,
    calibrate, threshold, card (roicurate/train_operating_point.py)."""
    from roicurate.evaluate import evaluate_model, write_evaluation
    from roicurate.labels import log_label_sources
    from roicurate.models import Classifier, save_model
    run = check_options(sets, TrainOptions(**options), Path(out), name)
    run.train_sets, run.val_sets = ([], run.sets) if run.keep else (run.sets, []) \
        if run.o.operating_point == "out-of-lab" else split_by_recording(run.sets, val, run.o.seed)
    if run.o.shape_prior and not run.labs and (not run.val_sets or run.o.calibration != "platt"):
        raise RoicurateError("--shape-prior is weighted by the Platt calibration on validation recordings: "
                             "give --val and keep --calibrate platt")
    run.arch = resolve_architecture(arch_spec, crop, run.sets, run.o, run.keep)
    log_label_sources(run.train_sets + run.val_sets + run.test_sets, run.log)     # every option checked
    if run.o.rehearse:
        log_label_sources(run.o.rehearse, run.log, "rehearsal ")
    run.data = crop_data(run)
    run.module, history, rows, frozen = fit_or_search(run)
    run.module.cpu().eval()
    fp16_round(run.module)
    arch = run.arch
    run.card = {"arch": arch.spec.name, "build_kwargs": arch.build_kwargs,
                "pipeline": (run.train_sets or run.val_sets)[0].pipeline, "crop": arch.crop.to_dict(),
                "classes": arch.classes, "positive_class": arch.classes[arch.pos], "threshold": 0.5, "name": name,
                "sha256": None, "task": arch.task}
    if arch.multi:
        run.card["class_rule"] = run.o.class_rule
    calib, prior, oof_thr = calibrate(run)
    threshold(run, oof_thr)
    run.card["training"] = training_record(run, history, rows, frozen, prior, calib)
    if run.val_sets:
        numbers = evaluate_model(Classifier(run.module, run.card, arch.spec), run.val_sets, baselines=False)[0]
        run.card["validation"] = {k: v for k, v in numbers.items()
                                  if k in ("pooled", "macro", "per_recording", "classes")}
    path = save_model(run.out, name, run.module, run.card)
    (run.out / f"{name}.ckpt.pt").unlink(missing_ok=True)
    if run.test_sets:
        numbers, table = evaluate_model(Classifier.load(path, device=run.o.device), run.test_sets,
                                        suite2p_classifier=run.o.suite2p_classifier)
        write_evaluation(run.out / f"{name}.test", numbers, table)
    return path


def check_options(sets, o, out, name):
    """A Run with the ``--test`` recordings held out, or a one-line error for options that cannot work together
    (before anything is cropped or trained)."""
    hp = dict(DEFAULTS, **{k: v for k, v in (o.hp or {}).items() if v is not None})
    test_sets = []
    if o.test:
        held = select_recordings(sets, o.test, "--test")
        test_sets = [rs for rs in sets if rs.recording in held]
        sets = [rs for rs in sets if rs.recording not in held]
        if not sets:
            raise RoicurateError("--test takes every recording; nothing is left to train on")
    keep = o.init is not None and hp["epochs"] == 0
    if hp["epochs"] == 0 and o.init is None:
        raise RoicurateError("--epochs 0 keeps the weights of a model as they are: give it with --init")
    if keep and (o.search or o.shape_prior or o.rehearse or o.resume):
        raise RoicurateError("--epochs 0 trains nothing: --search, --shape-prior, --rehearse and --resume need epochs")
    if o.operating_point not in ("validation", "out-of-lab"):
        raise RoicurateError(f"--operating-point {o.operating_point}: choose validation or out-of-lab")
    out_of_lab = o.operating_point == "out-of-lab"
    if out_of_lab and (keep or o.search or o.rehearse or o.resume or o.calibration != "platt"):
        raise RoicurateError("--operating-point out-of-lab trains one model per lab and calibrates with Platt: "
                             "without --epochs 0, --search, --rehearse, --resume or another --calibrate")
    labs = check_labs([lab_of(rs.recording) for rs in sets]) if out_of_lab else None
    return Run(o, hp, out, name, sets, test_sets, keep, labs)


def crop_data(run):
    """Crops and labels: training (scale-jittered), validation, rehearsal, and what the fit draws from."""
    o, arch = run.o, run.arch
    classes = arch.classes if arch.multi else None
    x_tr, y_tr = stack(run.train_sets, arch.crop, classes, o.scale_jitter)
    x_va, y_va = stack(run.val_sets, arch.crop, classes)
    rehearsal = None
    if o.rehearse:
        mixed = set(recordings(o.rehearse)) & set(recordings(run.sets + run.test_sets))
        if mixed:
            raise RoicurateError(f"--rehearse: {', '.join(sorted(mixed))} also in the training paths")
        if not 0 < o.rehearse_share < 1:
            raise RoicurateError("--rehearse-share must be between 0 and 1")
        rehearsal = stack(o.rehearse, arch.crop, classes, o.scale_jitter)
        run.log(f"rehearsal: {len(rehearsal[1])} ROIs from {len(recordings(o.rehearse))} recordings, "
                f"{o.rehearse_share:.0%} of every epoch's draws")
    x_fit, y_fit, draw = with_rehearsal(x_tr, y_tr, rehearsal, o.rehearse_share)
    pos_name = arch.classes[arch.pos]
    ncell = lambda y: int((y == arch.pos).sum()) if arch.multi else int(y.sum())
    run.log(f"train: {len(y_tr)} ROIs ({ncell(y_tr)} {pos_name}) from {len(recordings(run.train_sets))} recordings; "
            f"validation: {len(y_va)} ROIs ({ncell(y_va)} {pos_name}) from {len(recordings(run.val_sets))} recordings"
            + (f"; test (held out): {sum(len(r) for r in run.test_sets)} ROIs from {len(recordings(run.test_sets))} "
               f"recordings" if run.test_sets else ""))
    if not run.val_sets and not run.labs:
        run.log("no validation recordings: training runs every epoch, the threshold is chosen on out-of-fold scores "
                "(folds of whole training recordings) and the probabilities are not calibrated")
    return SimpleNamespace(x_tr=x_tr, y_tr=y_tr, x_va=x_va, y_va=y_va, rehearsal=rehearsal, x_fit=x_fit,
                           y_fit=y_fit, draw=draw)


def fit_or_search(run):
    """(module, history, search table or None, frozen parameter names): a random search scored on validation F1,
    ``init``'s weights as they are (--epochs 0), or one fit (checkpointed, resumable)."""
    o, arch, d, hp = run.o, run.arch, run.data, run.hp
    config = {"train": recordings(run.train_sets), "val": recordings(run.val_sets), "n": [len(d.y_tr), len(d.y_va)],
              "arch": arch.spec.name, "build_kwargs": arch.build_kwargs, "crop": arch.crop.to_dict(), "hp": hp,
              "seed": o.seed, "init": None if arch.init is None else arch.init.card.get("sha256"),
              "freeze_until": o.freeze_until, "rehearse": recordings(o.rehearse or []),
              "rehearse_share": o.rehearse_share if o.rehearse else None}
    run.out.mkdir(parents=True, exist_ok=True)
    fit_kw = {k: v for k, v in run.fit_kw.items() if k != "hp"}
    if o.search:
        if not run.val_sets:
            raise RoicurateError("--search scores trials on validation F1; give validation recordings with --val")
        if o.resume:
            raise RoicurateError("--resume continues a single training run, not a --search")
        from roicurate.search import format_table, random_search

        def run_trial(trial_hp):
            t0 = time.time()
            m, _ = arch.new_module()
            hist = fit(m, d.x_fit, d.y_fit, d.x_va, d.y_va, dict(hp, **trial_hp), log=lambda s: None, draw=d.draw,
                       **fit_kw)
            best = max(hist, key=lambda h: h["val_f1"])
            return best["val_f1"], best["val_roc_auc"], hist, m, time.time() - t0

        best_hp, module, history, rows = random_search(o.search, run_trial, seed=o.seed, log=run.log,
                                                       table_path=run.out / f"{run.name}.search.csv")
        hp.update(best_hp)
        run.log(format_table(rows))
        return module, history, rows, freeze_below(module, o.freeze_until) if o.freeze_until else []
    module, frozen = arch.new_module()
    if run.keep:
        run.log(f"--epochs 0: the weights of {arch.init.name} as they are; calibration and threshold from the "
                f"{len(d.y_va)} ROIs of {len(recordings(run.val_sets))} recordings given")
        return module, [], None, frozen
    history = fit(module, d.x_fit, d.y_fit, d.x_va, d.y_va, hp, log=run.log, checkpoint=run.out / f"{run.name}.ckpt.pt",
                  resume=o.resume, config=config, draw=d.draw, **fit_kw)
    return module, history, None, frozen
