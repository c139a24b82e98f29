"""Train a classifier on labelled ROI sets (``roicurate train``).

Split by recording (never by ROI); fit (``training.fit``) or a random search (``training.search``); calibration
and the operating threshold fitted on validation only; a card with the validation (and held-out test) numbers, computed
by the same code as ``roicurate evaluate``. Fine-tuning starts from any bundled or saved model and freezes the
layers below a named one. Without a validation recording (``--val none``, e.g. the one labelled video of a new lab)
every epoch runs and the threshold comes from out-of-fold scores: models trained on k-1 of k folds of whole
training recordings score the remaining fold, so the threshold is not chosen on scores of ROIs (or recordings) the
model was fitted to.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from roicurate.common import RoicurateError
from roicurate.labels import cell_labels
from roicurate.training.arch import fp16_round, resolve_architecture
from roicurate.training.data import recordings, select_recordings, split_by_recording, stack, with_rehearsal
from roicurate.training.fit import DEFAULTS, fit, freeze_below
from roicurate.training.operating_point import calibrate_network, set_threshold, training_record
from roicurate.training.outoflab import check_labs, lab_of

SCALE_JITTER = (0.8, 0.9, 1.0, 1.12, 1.25)   # factors of the reference diameter drawn in training


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
    head: bool = False
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
    options: TrainOptions
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
        return self.options.log

    @property
    def fit_kw(self):
        """What every fit of this run gets (the final one, search trials, out-of-fold and out-of-lab folds)."""
        dropout = [i for i, c in enumerate(self.arch.crop.channels) if c != "mask"] if self.options.image_dropout else []
        return dict(hp=self.hp, seed=self.options.seed, device=self.options.device, positive=self.arch.pos,
                    dropout_channels=dropout, dropout_p=self.options.image_dropout)

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
    leave-one-lab-out scores (roicurate/training/outoflab.py, ``min_recall`` on every lab) and the model is trained on every
    recording. ``scale_jitter``: scale factors drawn in training for a ``scale="reference"`` crop.
    ``image_dropout``: the share of training crops whose image channels are zeroed (a model that also works where a
    recording has no images: ``crop.optional_images``).

    The phases: check the options, resolve the architecture (roicurate/training/arch.py), crop the data, fit or search,
    calibrate, threshold, card (roicurate/training/operating_point.py)."""
    from roicurate.evaluate import evaluate_model
    from roicurate.report.evaluation import write_evaluation
    from roicurate.labels import log_label_sources
    from roicurate.models import Classifier, save_model
    run = check_options(sets, TrainOptions(**options), Path(out), name)
    run.train_sets, run.val_sets = ([], run.sets) if run.keep else (run.sets, []) \
        if run.options.operating_point == "out-of-lab" else split_by_recording(run.sets, val, run.options.seed)
    if run.options.shape_prior and not run.labs and (not run.val_sets or run.options.calibration != "platt"):
        raise RoicurateError("--shape-prior is weighted by the Platt calibration on validation recordings: "
                             "give --val and keep --calibrate platt")
    run.arch = resolve_architecture(arch_spec, crop, run.sets, run.options, run.keep)
    log_label_sources(run.train_sets + run.val_sets + run.test_sets, run.log)     # every option checked
    if run.options.rehearse:
        log_label_sources(run.options.rehearse, run.log, "rehearsal ")
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
        run.card["class_rule"] = run.options.class_rule
    calib, prior, out_of_lab_threshold = calibrate_network(run)
    set_threshold(run, out_of_lab_threshold)
    run.card["training"] = training_record(run, history, rows, frozen, prior, calib)
    if run.val_sets:
        numbers = evaluate_model(Classifier(run.module, run.card, arch.spec), run.val_sets, baselines=False)[0]
        run.card["validation"] = {k: v for k, v in numbers.items()
                                  if k in ("pooled", "macro", "per_recording", "classes")}
    path = save_model(run.out, name, run.module, run.card)
    (run.out / f"{name}.ckpt.pt").unlink(missing_ok=True)
    if run.test_sets:
        numbers, table = evaluate_model(Classifier.load(path, device=run.options.device), run.test_sets,
                                        suite2p_classifier=run.options.suite2p_classifier)
        write_evaluation(run.out / f"{name}.test", numbers, table)
    return path


def check_options(sets, options, out, name):
    """A Run with the ``--test`` recordings held out, or a one-line error for options that cannot work together
    (before anything is cropped or trained)."""
    hp = dict(DEFAULTS, **{k: v for k, v in (options.hp or {}).items() if v is not None})
    test_sets = []
    if options.test:
        held = select_recordings(sets, options.test, "--test")
        test_sets = [rs for rs in sets if rs.recording in held]
        sets = [rs for rs in sets if rs.recording not in held]
        if not sets:
            raise RoicurateError("--test takes every recording; nothing is left to train on")
    keep = options.init is not None and hp["epochs"] == 0
    if hp["epochs"] == 0 and options.init is None:
        raise RoicurateError("--epochs 0 keeps the weights of a model as they are: give it with --init")
    if keep and (options.search or options.shape_prior or options.rehearse or options.resume):
        raise RoicurateError("--epochs 0 trains nothing: --search, --shape-prior, --rehearse and --resume need epochs")
    if options.operating_point not in ("validation", "out-of-lab"):
        raise RoicurateError(f"--operating-point {options.operating_point}: choose validation or out-of-lab")
    out_of_lab = options.operating_point == "out-of-lab"
    if out_of_lab and (keep or options.search or options.rehearse or options.resume or options.calibration != "platt"):
        raise RoicurateError("--operating-point out-of-lab trains one model per lab and calibrates with Platt: "
                             "without --epochs 0, --search, --rehearse, --resume or another --calibrate")
    if options.head and (not out_of_lab or options.shape_prior):
        raise RoicurateError("--head is fitted on leave-one-lab-out scores and holds the shape features itself: "
                             "give it with --operating-point out-of-lab and without --shape-prior")
    labs = check_labs([lab_of(rs.recording) for rs in sets]) if out_of_lab else None
    return Run(options, hp, out, name, sets, test_sets, keep, labs)


def crop_data(run):
    """Crops and labels: training (scale-jittered), validation, rehearsal, and what the fit draws from."""
    options, arch = run.options, run.arch
    classes = arch.classes if arch.multi else None
    x_tr, y_tr = stack(run.train_sets, arch.crop, classes, options.scale_jitter)
    x_va, y_va = stack(run.val_sets, arch.crop, classes)
    rehearsal = None
    if options.rehearse:
        mixed = set(recordings(options.rehearse)) & set(recordings(run.sets + run.test_sets))
        if mixed:
            raise RoicurateError(f"--rehearse: {', '.join(sorted(mixed))} also in the training paths")
        if not 0 < options.rehearse_share < 1:
            raise RoicurateError("--rehearse-share must be between 0 and 1")
        rehearsal = stack(options.rehearse, arch.crop, classes, options.scale_jitter)
        run.log(f"rehearsal: {len(rehearsal[1])} ROIs from {len(recordings(options.rehearse))} recordings, "
                f"{options.rehearse_share:.0%} of every epoch's draws")
    x_fit, y_fit, draw = with_rehearsal(x_tr, y_tr, rehearsal, options.rehearse_share)
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
    options, arch, d, hp = run.options, run.arch, run.data, run.hp
    config = {"train": recordings(run.train_sets), "val": recordings(run.val_sets), "n": [len(d.y_tr), len(d.y_va)],
              "arch": arch.spec.name, "build_kwargs": arch.build_kwargs, "crop": arch.crop.to_dict(), "hp": hp,
              "seed": options.seed, "init": None if arch.init is None else arch.init.card.get("sha256"),
              "freeze_until": options.freeze_until, "rehearse": recordings(options.rehearse or []),
              "rehearse_share": options.rehearse_share if options.rehearse else None}
    run.out.mkdir(parents=True, exist_ok=True)
    fit_kw = {k: v for k, v in run.fit_kw.items() if k != "hp"}
    if options.search:
        if not run.val_sets:
            raise RoicurateError("--search scores trials on validation F1; give validation recordings with --val")
        if options.resume:
            raise RoicurateError("--resume continues a single training run, not a --search")
        from roicurate.training.search import format_table, random_search

        def run_trial(trial_hp):
            t0 = time.time()
            m, _ = arch.new_module()
            hist = fit(m, d.x_fit, d.y_fit, d.x_va, d.y_va, dict(hp, **trial_hp), log=lambda s: None, draw=d.draw,
                       **fit_kw)
            best = max(hist, key=lambda h: h["val_f1"])
            return best["val_f1"], best["val_roc_auc"], hist, m, time.time() - t0

        best_hp, module, history, rows = random_search(options.search, run_trial, seed=options.seed, log=run.log,
                                                       table_path=run.out / f"{run.name}.search.csv")
        hp.update(best_hp)
        run.log(format_table(rows))
        return module, history, rows, freeze_below(module, options.freeze_until) if options.freeze_until else []
    module, frozen = arch.new_module()
    if run.keep:
        run.log(f"--epochs 0: the weights of {arch.init.name} as they are; calibration and threshold from the "
                f"{len(d.y_va)} ROIs of {len(recordings(run.val_sets))} recordings given")
        return module, [], None, frozen
    history = fit(module, d.x_fit, d.y_fit, d.x_va, d.y_va, hp, log=run.log, checkpoint=run.out / f"{run.name}.ckpt.pt",
                  resume=options.resume, config=config, draw=d.draw, **fit_kw)
    return module, history, None, frozen
