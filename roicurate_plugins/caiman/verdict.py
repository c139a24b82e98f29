"""The one mapping of a Curation onto CaImAn's Estimates, for the HDF5 file and the live object alike.

``verdict(curation)`` says what to set: per-component fields (``idx_components``, ``idx_components_bad``,
``roicurate_probability``, ``cnn_preds`` on request, ``roicurate_class_probability`` for a model with more than
two classes) and ``roicurate_*`` strings (a ``str`` value of an Estimates is what ``cnm.save()`` writes as an
attribute of ``/estimates``, and ``load_CNMF`` sets it back). ``store_in_group`` writes it into an open
``/estimates`` group, ``store_on_object`` onto a live Estimates: a file curated on disk and one curated in a script
then saved carry the same names and values. ``recorded`` and ``edited_after_write`` read it back.
"""
import datetime
import json
from typing import NamedTuple

import numpy as np

import roicurate
from roicurate_plugins.caiman.read import read_value

# the per-component fields a verdict sets; everything else in the file stays byte-identical
WRITTEN = ("idx_components", "idx_components_bad", "roicurate_probability", "cnn_preds", "roicurate_class_probability")
ATTRS = ("roicurate_model", "roicurate_sha256", "roicurate_threshold", "roicurate_version", "roicurate_time")
# models with more than two classes: estimates/roicurate_class_probability (float64, components x classes, the
# columns named by the JSON list in the roicurate_classes attribute) and the accepted classes (roicurate_accept)
CLASS_ATTRS = ("roicurate_classes", "roicurate_accept")
# the scale and inputs the model was given: reference cell diameter (px, "none" for native-pixel crops), where it
# came from, and the crop channels used (a JSON list)
SCALE_ATTRS = ("roicurate_reference_diameter", "roicurate_diameter_source", "roicurate_inputs")
# the review answers that set the verdict (roicurate review): JSON {"reviewed", "cell", "not_cell", "overruled"}
HUMAN_ATTR = "roicurate_human"
# the model card's operating point the threshold is ("" for a custom threshold or a card without points), and
# "true"/"false": probabilities averaged over the eight rotations/flips of each crop (test-time augmentation)
POINT_ATTRS = ("roicurate_operating_point", "roicurate_tta")


class Verdict(NamedTuple):
    fields: dict     # name -> array: datasets under /estimates, attributes of a live Estimates
    attrs: dict      # name -> str: attributes of /estimates, str attributes of a live Estimates
    drop: tuple      # names an earlier curation with a K-class model left behind, removed


def verdict(curation, as_cnn_preds=False):
    """The Verdict of ``curation``. ``as_cnn_preds`` also sets ``cnn_preds``, so CaImAn's ``filter_components`` can
    combine our probabilities with its SNR and r-values. The model is recorded as what finds it again (its
    ``source``: a registered name, or the resolved path of its card), so ``report`` can load it."""
    accepted = np.asarray(curation.accepted, bool)
    fields = {"idx_components": np.flatnonzero(accepted).astype(np.int64),
              "idx_components_bad": np.flatnonzero(~accepted).astype(np.int64),
              "roicurate_probability": np.asarray(curation.score, np.float64)}
    if as_cnn_preds:
        fields["cnn_preds"] = fields["roicurate_probability"].copy()
    model = curation.model.get("source") or curation.model.get("name", "")
    diameter = "none" if curation.diameter is None else repr(round(float(curation.diameter), 3))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    attrs = dict(zip(ATTRS, (str(model), str(curation.model.get("sha256", "")),
                             repr(float(curation.threshold)), roicurate.__version__, now)))
    attrs.update(zip(SCALE_ATTRS, (diameter, curation.diameter_source or "", json.dumps(list(curation.inputs)))))
    attrs[HUMAN_ATTR] = json.dumps(curation.human_record(), sort_keys=True)
    attrs.update(zip(POINT_ATTRS, (curation.operating_point or "", json.dumps(bool(curation.tta)))))
    drop = ()
    if len(curation.classes) > 2:
        fields["roicurate_class_probability"] = np.asarray(curation.probabilities, np.float64)
        attrs.update(zip(CLASS_ATTRS, (json.dumps(list(curation.classes)), json.dumps(curation.accepted_classes))))
    else:
        drop = ("roicurate_class_probability",) + CLASS_ATTRS
    return Verdict(fields, attrs, drop)


def store_in_group(est, v):
    """Write Verdict ``v`` into an open ``/estimates`` group (h5py), replacing what an earlier run wrote."""
    for key, value in v.fields.items():
        if key in est:
            del est[key]
        est.create_dataset(key, data=value)
    for key, value in v.attrs.items():
        est.attrs[key] = value
    for key in v.drop:
        if key in est:
            del est[key]
        est.attrs.pop(key, None)


def store_on_object(est, v):
    """Set Verdict ``v`` on a live Estimates, as ``load_CNMF`` would after ``store_in_group``."""
    for key, value in {**v.fields, **v.attrs}.items():
        setattr(est, key, value)
    for key in v.drop:
        if hasattr(est, key):
            delattr(est, key)


def recorded(est):
    """What roicurate recorded in an open ``/estimates`` group (see ``Source.recorded``), or None."""
    if est is None or "roicurate_model" not in est.attrs:
        return None
    thr, sha = est.attrs.get("roicurate_threshold"), est.attrs.get("roicurate_sha256")
    accept, point = est.attrs.get("roicurate_accept"), est.attrs.get(POINT_ATTRS[0])
    return {"model": str(est.attrs["roicurate_model"]), "sha256": None if sha is None else str(sha),
            "threshold": None if thr is None else float(thr), "operating_point": str(point) if point else None,
            "tta": str(est.attrs.get(POINT_ATTRS[1], "")) == "true",
            "also_accept": json.loads(accept)[1:] if accept is not None else [],
            "diameter": _recorded_diameter(est.attrs),
            "date": str(est.attrs["roicurate_time"]) if "roicurate_time" in est.attrs else None,
            "intact": "roicurate_probability" in est and not edited_after_write(est)}


def _recorded_diameter(attrs):
    """(px, source) of the reference diameter a curation used, or None (native-pixel crops, or an older file)."""
    d = attrs.get("roicurate_reference_diameter")
    try:
        return float(d), str(attrs.get("roicurate_diameter_source", ""))
    except (TypeError, ValueError):
        return None


def edited_after_write(est):
    """roicurate wrote this file, and idx_components no longer says what roicurate_probability (or, with
    accepted classes, the sum of their class probabilities) says."""
    p, thr, idx = read_value(est, "roicurate_probability"), est.attrs.get("roicurate_threshold"), \
        read_value(est, "idx_components")
    if p is None or thr is None or idx is None:
        return False
    if "roicurate_class_probability" in est and all(k in est.attrs for k in CLASS_ATTRS):
        try:
            names, accept = json.loads(est.attrs["roicurate_classes"]), json.loads(est.attrs["roicurate_accept"])
            p = np.asarray(read_value(est, "roicurate_class_probability"))[:, [names.index(c) for c in accept]].sum(1)
        except (TypeError, ValueError, IndexError):
            return True
    try:
        return not np.array_equal(np.flatnonzero(np.asarray(p) >= float(thr)), np.sort(np.asarray(idx, np.int64)))
    except (TypeError, ValueError):
        return True
