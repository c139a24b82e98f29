"""Labelled ROI sets as training sees them: read and labelled, split by recording, and stacked into the crops and
labels a network trains on. A leaf of roicurate/training/: it imports nothing from the modules beside it."""
import random

import numpy as np

from roicurate.common import RoicurateError
from roicurate.crops import make_crops
from roicurate.evaluate import class_indices
from roicurate.labels import attach_labels, cell_labels


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
