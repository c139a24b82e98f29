"""Where training/evaluation labels come from, in this order of precedence:

1. labels roicurate itself wrote beside the pipeline output (``roicurate_labels.json``: ``roicurate label``),
2. a dataset ``labels.json`` in a parent folder (the layout of ../shared/datasets: ``rois[<relative ROI file>].label``),
3. the pipeline's own verdict, which is a human's after curation in the Suite2p GUI / a CaImAn script.
"""
import json
from pathlib import Path

import numpy as np

from roicurate import RoicurateError

LABELS_NAME = "roicurate_labels.json"


def own_labels_path(roiset):
    """``plane0/roicurate_labels.json`` for a folder source, ``NAME.roicurate_labels.json`` for a file source."""
    p = Path(roiset.origin["path"])
    return p / LABELS_NAME if p.is_dir() else p.with_name(p.stem + "." + LABELS_NAME)


def _dataset_labels(roi_file, max_up=4):
    roi_file = Path(roi_file).resolve()
    for parent in list(roi_file.parents)[:max_up]:
        f = parent / "labels.json"
        if f.exists():
            d = json.loads(f.read_text())
            rel = roi_file.relative_to(parent).as_posix()
            if rel in d.get("rois", {}):
                return np.asarray(d["rois"][rel]["label"], np.int64), d.get("recording", str(parent)), str(f)
    return None


def attach_labels(roiset, use_pipeline=True):
    """Set ``roiset.labels`` and ``origin['recording']`` / ``origin['label_source']``; returns the RoiSet.

    ``recording`` groups ROI sets that must stay on the same side of a train/validation split
    (the planes of one session, say)."""
    where = roiset.origin.get("path", "input")
    n = len(roiset)
    labels, recording, source = None, roiset.origin.get("path"), None
    own = own_labels_path(roiset)
    found = _dataset_labels(roiset.origin.get("roi_file", where))
    if own.exists():
        d = json.loads(own.read_text())
        labels, source = np.asarray(d["label"], np.int64), str(own)
        recording = d.get("recording") or (found[1] if found else recording)
    elif found:
        labels, recording, source = found
    elif use_pipeline and roiset.pipeline_accepted is not None:
        labels, source = roiset.pipeline_accepted.astype(np.int64), "pipeline verdict"
    if labels is not None and len(labels) != n:
        raise RoicurateError(f"{source}: has {len(labels)} labels for {n} ROIs in {where}")
    roiset.labels = labels
    roiset.origin.update(recording=str(recording), label_source=source)
    return roiset
