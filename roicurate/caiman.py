"""Curate a live CaImAn result in the user's own script, right after ``evaluate_components``::

    cnm.estimates.evaluate_components(images, cnm.params, dview=dview)
    import roicurate.caiman
    roicurate.caiman.curate(cnm)                    # sets idx_components / idx_components_bad in place
    cnm.estimates.select_components(use_object=True)
    cnm.save("results.hdf5")

Objects are taken by duck typing (a ``CNMF``/``OnACID`` with ``.estimates``, or an ``Estimates``): nothing
here imports CaImAn. The RoiSet is built by the same function the file reader uses.
"""
import json

import numpy as np

from roicurate import RoicurateError, __version__

DEFAULT_MODEL = "caiman-cnn2"


def roiset(obj):
    """The RoiSet of a CNMF or Estimates object (what ``curate`` classifies)."""
    from roicurate_plugins.caiman import FEATURES, already_selected, roiset_from_estimates
    est = getattr(obj, "estimates", obj)
    if not hasattr(est, "A") or not hasattr(est, "dims"):
        raise RoicurateError(f"{type(obj).__name__}: not a CaImAn CNMF or Estimates object (needs .A and .dims)")
    if getattr(est, "idx_components", None) is None and getattr(est, "discarded_components", None) is not None:
        raise RoicurateError(already_selected("cnm.estimates", live=True))
    gsig = _gsig(getattr(obj, "params", None))
    get = lambda name: getattr(est, name, None)
    return roiset_from_estimates(
        est.A, est.dims, b=get("b"), f=get("f"), C=get("C"), Cn=get("Cn"), idx_components=get("idx_components"),
        features={k: get(k) for k in FEATURES}, where="cnm.estimates",
        path="<in memory>", origin={"gSig": gsig})


def curate(obj, model=None, threshold=None, as_cnn_preds=False, device="auto", also_accept=(), diameter=None):
    """Classify every component of ``obj`` (a CNMF or its ``.estimates``) and update it in place.

    Sets ``idx_components`` and ``idx_components_bad`` (sorted int64), ``roicurate_probability`` (K floats) and
    the ``roicurate_*`` provenance strings that ``cnm.save()`` writes as attributes, exactly as the file writer
    does; with ``as_cnn_preds`` also ``cnn_preds``, so CaImAn's ``filter_components`` can combine our
    probabilities with its SNR and r-values. A model with more than two classes also sets
    ``roicurate_class_probability`` (components x classes), ``roicurate_classes`` and ``roicurate_accept`` (JSON
    lists of class names), as the file writer does; ``also_accept`` names classes accepted besides the positive
    one. ``diameter``: the reference cell diameter in pixels (default: CaImAn's gSig where set, else a statistic of
    the components; see roicurate/scale.py). Returns the ``Curation``. (CaImAn's ``select_components`` subsets only its own per-component fields, so
    ``roicurate_probability`` keeps all K entries afterwards.)"""
    from roicurate.curation import curate as run
    from roicurate.models import Classifier
    rs = roiset(obj)
    if diameter is not None:
        from roicurate.scale import SOURCE_OVERRIDE, set_diameter
        set_diameter(rs, diameter, SOURCE_OVERRIDE)
    clf = Classifier.load(model or DEFAULT_MODEL, device=device)
    cur = run(rs, clf, threshold, also_accept=also_accept)
    est = getattr(obj, "estimates", obj)
    est.idx_components = np.flatnonzero(cur.accepted).astype(np.int64)
    est.idx_components_bad = np.flatnonzero(~cur.accepted).astype(np.int64)
    est.roicurate_probability = np.asarray(cur.score, np.float64)
    est.roicurate_model = str(cur.model["name"])
    est.roicurate_sha256 = str(cur.model["sha256"])
    est.roicurate_threshold = repr(float(cur.threshold))
    est.roicurate_version = __version__
    from roicurate_plugins.caiman import SCALE_ATTRS, scale_attrs
    for key, value in zip(SCALE_ATTRS, scale_attrs(cur)):
        setattr(est, key, value)
    if len(cur.classes) > 2:
        est.roicurate_class_probability = np.asarray(cur.probabilities, np.float64)
        est.roicurate_classes = json.dumps(list(cur.classes))
        est.roicurate_accept = json.dumps(cur.accepted_classes)
    else:                                  # left by an earlier curate() with a K-class model
        for key in ("roicurate_class_probability", "roicurate_classes", "roicurate_accept"):
            if hasattr(est, key):
                delattr(est, key)
    if as_cnn_preds:
        est.cnn_preds = est.roicurate_probability.copy()
    return cur


def _gsig(params):
    """gSig from a CNMFParams (``params.init['gSig']``) or a plain dict of groups; None when absent."""
    if params is None:
        return None
    try:
        init = params.init if hasattr(params, "init") else params["init"]
        g = init["gSig"]
    except (KeyError, TypeError, AttributeError):
        return None
    return None if g is None else [int(v) for v in np.ravel(g)]
