"""Labels for training and evaluation, and where they come from, in this order of precedence:

1. labels roicurate wrote beside the pipeline output (``roicurate_labels.json``, made by ``roicurate label`` from
   ground-truth masks),
2. a dataset ``labels.json`` in a parent folder (the shared datasets' layout: ``rois[<relative ROI file>].label``),
3. the pipeline's own verdict — a human's after curation in the Suite2p GUI or a CaImAn script — unless that verdict
   is still exactly what ``roicurate apply`` wrote (a model's output is not a label); a person's answers in
   ``roicurate review`` (``RoiSet.human``, roicurate/review_answers.py) replace it ROI by ROI, and label the
   reviewed ROIs of a unit that has no other labels.

Matching ground truth (the protocol of the shared datasets' README): binarise each ROI as its source declares
(``scale.source_binarize``; Suite2p: weight > 0; CaImAn: weight > 0.2 x the component's max), IoU against every ground-truth mask,
one-to-one Hungarian assignment, label 1 iff the partner has IoU >= threshold (0.5) and is a cell.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError, __version__
from roicurate.rois import RoiSet, iou_matrix, match_labels
from roicurate.scale import source_binarize

LABELS_NAME = "roicurate_labels.json"
CELL_CLASSES = ("soma",)


def own_labels_path(roiset):
    """``plane0/roicurate_labels.json`` for a folder source, ``NAME.roicurate_labels.json`` for a file source."""
    p = Path(roiset.path)
    return p / LABELS_NAME if p.is_dir() else p.with_name(p.stem + "." + LABELS_NAME)


def mask_fingerprint(roiset):
    """sha256 of the ROI pixels (not weights, not verdicts): labels stay valid while the masks are the same."""
    h = hashlib.sha256()
    for a in (np.asarray(roiset.shape, np.int64), roiset.indptr, roiset.y, roiset.x):
        h.update(np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


# ---- ground truth ------------------------------------------------------------------------------------------
def read_regions(path, shape):
    """A Neurofinder ``regions.json`` (list of {"id", "coordinates": [[y, x], ...]}) as a RoiSet of binary masks;
    pixels outside the frame are dropped (as the reference implementation does) and counted in origin."""
    try:
        regions = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RoicurateError(f"{path}: cannot read ground truth ({e.__class__.__name__}: {e})") from None
    if not isinstance(regions, list) or not all(isinstance(r, dict) and "coordinates" in r for r in regions):
        raise RoicurateError(f"{path}: expected a JSON list of {{\"id\", \"coordinates\": [[y, x], ...]}} (Neurofinder format)")
    Ly, Lx = shape
    ys, xs, dropped = [], [], 0
    for i, r in enumerate(regions):
        c = np.asarray(r["coordinates"], np.int64).reshape(-1, 2) if len(r["coordinates"]) else np.zeros((0, 2), np.int64)
        ok = (c[:, 0] >= 0) & (c[:, 0] < Ly) & (c[:, 1] >= 0) & (c[:, 1] < Lx)
        dropped += int((~ok).sum())
        flat = np.unique(c[ok, 0] * Lx + c[ok, 1])
        ys.append(flat // Lx), xs.append(flat % Lx)
    ids = [str(r.get("id", i)) for i, r in enumerate(regions)]
    return RoiSet.from_pixels(shape, ys, xs, path=str(path), origin={"ids": ids, "dropped_pixels": dropped})


def read_classes(path, ids, cell_classes=CELL_CLASSES):
    """Which regions are cells, from a ``classes.json`` ({"classes": {id: class}}); regions missing there are not."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RoicurateError(f"{path}: cannot read classes ({e.__class__.__name__}: {e})") from None
    classes = d.get("classes", d) if isinstance(d, dict) else None
    if not isinstance(classes, dict):
        raise RoicurateError(f"{path}: expected {{\"classes\": {{region id: class name}}}}")
    names = [str(classes.get(i, "")) for i in ids]
    return np.array([n in cell_classes for n in names], bool), names


def label_from_truth(roiset, truth, is_cell=None, iou_threshold=0.5, binarize=None, class_names=None):
    """Per-ROI record of the one-to-one match of ``roiset`` against ``truth`` (a RoiSet of ground-truth masks);
    ``class_names`` (one per truth mask) adds each ROI's ``assigned_class``."""
    if binarize is None:
        binarize = source_binarize(roiset)
    iou = iou_matrix(roiset, truth, binarize_a=binarize)
    label, assigned, aiou = match_labels(iou, iou_threshold, is_cell)
    best = iou.argmax(1) if iou.shape[1] else np.zeros(len(roiset), np.int64)
    best_iou = iou.max(1) if iou.shape[1] else np.zeros(len(roiset))
    best = np.where(best_iou > 0, best, -1)
    n_cells = int(len(truth) if is_cell is None else np.sum(is_cell))
    extra = {} if class_names is None else {"assigned_class": [class_names[g] if g >= 0 else None for g in assigned]}
    return {"n_rois": len(roiset), "n_gt": len(truth), "n_gt_cells": n_cells, "n_label1": int(label.sum()),
            "label": label.tolist(), "matched_gt": np.where(label > 0, assigned, -1).tolist(),
            "assigned_gt": assigned.tolist(), "assigned_iou": [round(float(v), 5) for v in aiou],
            "best_gt": best.tolist(), "best_iou": [round(float(v), 5) for v in best_iou], **extra,
            "protocol": {"iou_threshold": iou_threshold, "binarize": binarize,
                         "matching": "one-to-one Hungarian assignment on IoU; IoU-0 pairs are not assignments"}}


def write_own_labels(roiset, record, truth_path, classes_path=None, recording=None):
    """Write ``record`` as ``roicurate_labels.json`` beside the pipeline output (never into the pipeline's files)."""
    from roicurate.safeio import atomic_write
    out = own_labels_path(roiset)
    data = dict(record, roicurate_version=__version__, recording=recording,
                truth={"file": str(Path(truth_path).resolve()), "classes": None if classes_path is None else
                       str(Path(classes_path).resolve())},
                roi_file=str(Path(roiset.origin.get("roi_file", roiset.path)).resolve()),
                masks_sha256=mask_fingerprint(roiset))
    text = (json.dumps(data) + "\n").encode()
    atomic_write(out, lambda f: f.write(text))
    return out


# ---- attaching labels -----------------------------------------------------------------------------------------
def _dataset_labels(roi_file, max_up=4):
    roi_file = Path(roi_file).resolve()
    for parent in list(roi_file.parents)[:max_up]:
        f = parent / "labels.json"
        if f.exists():
            d = json.loads(f.read_text())
            rel = roi_file.relative_to(parent).as_posix()
            if rel in d.get("rois", {}):
                return d["rois"][rel], d.get("recording", str(parent)), str(f)
    return None


def add_dataset_images(roiset, npz):
    """The summary images a labelled dataset keeps beside its labels.json (``summary_images.npz``: mean, max, corr
    over the recording's frame) that the RoiSet does not already have from its pipeline's files."""
    if not npz.exists():
        return
    from roicurate.images import check_image
    with np.load(npz, allow_pickle=False) as z:
        for name in z.files:
            if name in ("mean", "max", "corr") and roiset.images.get(name) is None:
                roiset.images[name] = check_image(z[name], f"{npz}:{name}", roiset.shape)


def _source(roiset):
    from roicurate.plugins import sources
    return sources().get(roiset.source)


def default_recording(roiset):
    """What groups ROI sets in a split when nothing names the recording: the source's answer (the planes of
    one ``suite2p/`` folder belong together), else the path itself."""
    path, src = (roiset.path or "input"), _source(roiset)
    return src.recording(path) if src is not None else str(path)


def verdict_is_roicurate_output(roiset):
    """True when the pipeline's verdict file still holds exactly what ``roicurate apply`` wrote."""
    src = _source(roiset)
    rec = src.recorded(roiset.path) if src is not None and roiset.path else None
    return bool(rec and rec["intact"])


def describe_label_source(roiset):
    """(what the labels of ``roiset`` are, whether they are the pipeline's own automatic classifier's verdict): what
    ``train`` prints per recording. Suite2p writes iscell.npy as [P(cell) > 0.5, P(cell)], and its GUI flips the
    first column only, so a plane where the two agree on every ROI was never curated by hand; CaImAn's idx_components
    come from its automatic component evaluation."""
    source = roiset.origin.get("label_source")
    if source != "pipeline verdict":
        return str(source), False
    pipeline, acc = roiset.pipeline, roiset.pipeline_accepted
    if pipeline == "suite2p":
        prob = roiset.features.get("suite2p_prob")
        if prob is None:
            return "Suite2p's iscell.npy", False
        edited = int(np.sum(np.asarray(acc, bool) != (np.asarray(prob) > 0.5)))
        if edited:
            return f"Suite2p's iscell.npy, curated by hand ({edited} ROIs differ from its classifier's P > 0.5)", False
        return "Suite2p's iscell.npy as its built-in classifier wrote it (no ROI differs from P > 0.5)", True
    if pipeline == "caiman":
        return "CaImAn's idx_components (from its automatic component evaluation)", True
    return "the pipeline's verdict", False


def log_label_sources(sets, log, what=""):
    """One line per labelled unit saying where its labels come from, and a warning naming every one labelled only by
    its pipeline's automatic classifier: a model trained on those learns to copy that classifier, not a person."""
    automatic = []
    for rs in sets:
        where = rs.path or "input"
        text, auto = describe_label_source(rs)
        log(f"{what}labels of {where}: {text}")
        if auto:
            automatic.append(where)
    if automatic:
        log(f"warning: {len(automatic)} of {len(sets)} {what}units are labelled only by their pipeline's automatic "
            f"classifier ({', '.join(automatic[:3])}{', ...' if len(automatic) > 3 else ''}): the model learns to copy "
            f"it; label them with `roicurate label` (ground-truth masks) or curate them by hand first")


def attach_labels(roiset, use_pipeline=True, log=None, class_rule=None):
    """Set ``roiset.labels``, ``roiset.recording`` and ``origin['label_source']``; returns the RoiSet.

    ``recording`` groups ROI sets that must stay on the same side of a train/validation split. With a
    ``class_rule`` (see :func:`check_class_rule`), ROIs whose label record names the class of their ground-truth
    partner (``assigned_class``) get class indices into the rule's classes instead, and ``origin['label_classes']``
    / ``origin['label_positive']`` say what they mean; records without object classes stay cell / not cell."""
    where = roiset.path or "input"
    n = len(roiset)
    labels, recording, source, record = None, default_recording(roiset), None, None
    own = own_labels_path(roiset)
    found = _dataset_labels(roiset.origin.get("roi_file", where))
    if own.exists():
        try:
            record = json.loads(own.read_text())
            labels = np.asarray(record["label"], np.int64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RoicurateError(f"{own}: unreadable labels ({e.__class__.__name__}: {e})") from None
        if record.get("masks_sha256") and record["masks_sha256"] != mask_fingerprint(roiset):
            raise RoicurateError(f"{own}: was made for other ROI masks than {where} has now (pipeline re-run?); "
                                 f"make it again with: roicurate label {where} --truth ...")
        source = str(own)
        recording = record.get("recording") or (found[1] if found else recording)
    elif found:
        record, recording, source = found
        labels = np.asarray(record["label"], np.int64)
    elif use_pipeline and roiset.pipeline_accepted is not None:
        if verdict_is_roicurate_output(roiset):
            if log:
                log(f"{where}: its verdict is roicurate's own unedited output, not a human's; skipped (no labels)")
        else:
            labels, source = roiset.pipeline_accepted.astype(np.int64), "pipeline verdict"
    if labels is not None and len(labels) != n:
        raise RoicurateError(f"{source}: has {len(labels)} labels for {n} ROIs in {where}")
    roiset.origin.pop("review_answers", None)
    if roiset.human is not None and source in (None, "pipeline verdict"):
        labels, source = with_review_answers(roiset, labels, source)
    if found:
        add_dataset_images(roiset, Path(found[2]).parent / "summary_images.npz")
    roiset.origin.pop("label_classes", None)
    roiset.origin.pop("label_positive", None)
    if class_rule is not None and record is not None and record.get("assigned_class") is not None:
        labels = apply_class_rule(class_rule, record, source)
        roiset.origin.update(label_classes=list(class_rule["classes"]), label_positive=class_rule["positive"])
    roiset.labels = labels
    roiset.recording = str(recording)
    roiset.origin.update(label_source=source)
    return roiset


def with_review_answers(roiset, labels, source):
    """(labels, where they come from) once a person's review answers (``roiset.human``) replace the pipeline
    verdict's labels: a human answer beats a pipeline verdict. ROIs nobody labelled get -1 (``train.load_labelled``
    keeps only the labelled ones). Ground-truth labels (roicurate_labels.json, a dataset's labels.json) are not
    replaced: the caller passes only a pipeline verdict or nothing."""
    from roicurate.plugins import sources
    human = np.asarray(roiset.human, np.int64)
    base = np.full(len(human), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    src = sources().get(roiset.source)
    where = src.review_path(roiset.path) if src is not None else "roicurate review"
    k = int((human >= 0).sum())
    roiset.origin["review_answers"] = k
    text = f"{where} ({k} answers of a person in roicurate review" + (
        ", over the pipeline verdict)" if labels is not None else ", the other ROIs unlabelled)")
    return np.where(human >= 0, human, base), text


# ---- classes beyond cell / not cell ----------------------------------------------------------------------
def check_class_rule(rule, where="class rule"):
    """Raise RoicurateError unless ``rule`` is a class rule; returns it.

    A class rule maps each ROI's one-to-one ground-truth partner (its object class and IoU, as ``roicurate label``
    and the datasets' labels.json record them) to one of K class names::

        {"classes": ["a", "b", "c"], "positive": "a",           # positive: the class that counts as a cell
         "rules": [{"class": "a", "truth_classes": ["soma"], "min_iou": 0.5}, ...],
         "default": "c"}                                         # ROIs no rule claims (also: no partner)

    The first rule whose ``truth_classes`` hold the partner's class and whose ``min_iou`` its IoU reaches wins."""
    if not isinstance(rule, dict) or not isinstance(rule.get("classes"), list) or len(rule["classes"]) < 2:
        raise RoicurateError(f"{where}: expected {{\"classes\": [names], \"positive\", \"rules\", \"default\"}}")
    names = rule["classes"]
    if len(set(names)) != len(names) or not all(isinstance(c, str) and c for c in names):
        raise RoicurateError(f"{where}: class names must be distinct, non-empty strings")
    for key in ("positive", "default"):
        if rule.get(key) not in names:
            raise RoicurateError(f"{where}: '{key}' must be one of the classes ({', '.join(names)})")
    if not isinstance(rule.get("rules"), list):
        raise RoicurateError(f"{where}: 'rules' must be a list of {{\"class\", \"truth_classes\", \"min_iou\"}}")
    for i, r in enumerate(rule["rules"]):
        ok = isinstance(r, dict) and r.get("class") in names and isinstance(r.get("truth_classes"), list) \
            and isinstance(r.get("min_iou", 0), (int, float))
        if not ok:
            raise RoicurateError(f"{where}: rule {i} needs a 'class' among {', '.join(names)}, a list "
                                 f"'truth_classes' and a number 'min_iou'")
    return rule


def read_class_rule(path):
    try:
        rule = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RoicurateError(f"{path}: cannot read class rule ({e.__class__.__name__}: {e})") from None
    return check_class_rule(rule, str(path))


def apply_class_rule(rule, record, where="labels"):
    """int (N,) class index (into ``rule['classes']``) per ROI of a label record with ``assigned_gt``,
    ``assigned_iou`` and ``assigned_class``."""
    try:
        gt, iou, cls = (list(record[k]) for k in ("assigned_gt", "assigned_iou", "assigned_class"))
    except (KeyError, TypeError):
        raise RoicurateError(f"{where}: a class rule needs assigned_gt, assigned_iou and assigned_class "
                             f"(label with `roicurate label --classes classes.json`)") from None
    if not len(gt) == len(iou) == len(cls):
        raise RoicurateError(f"{where}: assigned_gt, assigned_iou and assigned_class differ in length")
    index = {c: i for i, c in enumerate(rule["classes"])}
    out = np.full(len(gt), index[rule["default"]], np.int64)
    for k, (g, v, c) in enumerate(zip(gt, iou, cls)):
        if g is None or g < 0:
            continue
        hit = next((r for r in rule["rules"] if c in r["truth_classes"] and v >= r.get("min_iou", 0)), None)
        if hit is not None:
            out[k] = index[hit["class"]]
    return out


def cell_labels(roiset):
    """bool (N,): the ROIs labelled as a cell — the positive class of class labels, else label 1."""
    labels = np.asarray(roiset.labels)
    classes = roiset.origin.get("label_classes")
    if classes is None:
        return labels > 0
    return labels == list(classes).index(roiset.origin["label_positive"])


# ---- cell types (labels of a model whose card says task "types") ---------------------------------------------
RED_CLASSES = ("not_red", "red")


def read_type_labels(roiset, source):
    """(int (N,) label index, -1 for ROIs without a type; class names in order of first appearance; where) of a
    RoiSet, from ``source``: ``redcell`` (the pipeline's red-cell labels, e.g. Suite2p's redcell.npy, curated in
    its GUI) or a CSV file ``roi,class`` (ROI index in the pipeline's order, 0-based; a header line is allowed;
    ROIs not listed have no type). A relative CSV path is looked up beside the output, like ``--add-image``."""
    n = len(roiset)
    where = Path(roiset.path or ".")
    if source == "redcell":
        red = roiset.features.get("redcell")
        if red is None:
            raise RoicurateError(roiset.origin.get("redcell_problem")
                                 or f"{where}: has no red-cell labels (redcell.npy) to train cell types on")
        return (np.asarray(red) > 0.5).astype(np.int64), list(RED_CLASSES), f"{where} (redcell)"
    from roicurate.images import beside_unit
    path = beside_unit(roiset, source)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise RoicurateError(f"{path}: cannot read cell types ({e.__class__.__name__}: {e})") from None
    labels, names = np.full(n, -1, np.int64), []
    for k, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        roi, sep, name = (part.strip().strip('"') for part in line.partition(","))
        if k == 0 and not roi.lstrip("-").isdigit():
            continue                                   # header
        if not sep or not name or not roi.lstrip("-").isdigit():
            raise RoicurateError(f"{path}:{k + 1}: expected 'roi,class' (ROI index, class name), got '{line}'")
        i = int(roi)
        if not 0 <= i < n:
            raise RoicurateError(f"{path}:{k + 1}: ROI {i} does not exist ({where} has {n} ROIs, numbered from 0)")
        if labels[i] >= 0:
            raise RoicurateError(f"{path}:{k + 1}: ROI {i} is listed twice")
        if name not in names:
            names.append(name)
        labels[i] = names.index(name)
    if not (labels >= 0).any():
        raise RoicurateError(f"{path}: lists no ROI")
    return labels, names, str(path)


def attach_type_labels(roiset, source, classes=None, read=None):
    """Set ``roiset.labels`` to cell-type indices into ``classes`` (default: the names found, sorted; the last
    is the 'positive' one, e.g. ``red``) and ``origin`` as :func:`attach_labels` does (``type_labels``: the
    ``source``); returns the RoiSet. ``read``: what :func:`read_type_labels` already returned for it."""
    labels, names, where = read or read_type_labels(roiset, source)
    classes = list(classes or sorted(names))
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise RoicurateError(f"{where}: class{'es' if len(unknown) > 1 else ''} {', '.join(unknown)} not among "
                             f"the model's classes ({', '.join(classes)})")
    to_model = np.asarray([classes.index(c) for c in names] or [0], np.int64)
    found = _dataset_labels(roiset.origin.get("roi_file", roiset.path or "input"))
    roiset.labels = np.where(labels >= 0, to_model[np.maximum(labels, 0)], -1)
    roiset.recording = str(found[1] if found else default_recording(roiset))
    roiset.origin.update(label_source=where, label_classes=classes, label_positive=classes[-1], type_labels=source)
    return roiset
