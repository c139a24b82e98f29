"""Curate a live CaImAn result in the user's own script, right after ``evaluate_components``::

    cnm.estimates.evaluate_components(images, cnm.params, dview=dview)
    import roicurate.caiman
    roicurate.caiman.curate(cnm)                    # sets idx_components / idx_components_bad in place
    cnm.estimates.select_components(use_object=True)
    cnm.save("results.hdf5")

Objects are taken by duck typing (a ``CNMF``/``OnACID`` with ``.estimates``, or an ``Estimates``): nothing
here imports CaImAn. The CaImAn source plugin (found through the plugin manager) builds the RoiSet with the
function its file reader uses, and sets the verdict with the mapping its file writer uses.
"""


def _source():
    """The registered CaImAn source (core finds it through the plugin manager, as it would a third party's)."""
    from roicurate.plugins import pipeline_source
    return pipeline_source("caiman")


def roiset(obj):
    """The RoiSet of a CNMF or Estimates object (what ``curate`` classifies)."""
    return _source().roiset_from_object(obj)


def curate(obj, model=None, threshold=None, as_cnn_preds=False, device="auto", also_accept=(), diameter=None,
           operating_point=None, tta=False):
    """Classify every component of ``obj`` (a CNMF or its ``.estimates``) and update it in place.

    Sets ``idx_components`` and ``idx_components_bad`` (sorted int64), ``roicurate_probability`` (K floats) and
    the ``roicurate_*`` provenance strings that ``cnm.save()`` writes as attributes, exactly as the file writer
    does (one mapping serves both); with ``as_cnn_preds`` also ``cnn_preds``, so CaImAn's ``filter_components`` can
    combine our probabilities with its SNR and r-values. A model with more than two classes also sets
    ``roicurate_class_probability`` (components x classes), ``roicurate_classes`` and ``roicurate_accept`` (JSON
    lists of class names), as the file writer does; ``also_accept`` names classes accepted besides the positive
    one. ``model``: a registered name or a model's path (default: the CaImAn source's default model); it is recorded
    as what finds it again, so ``roicurate report`` can load it from the saved file. ``diameter``: the reference
    cell diameter in pixels (default: CaImAn's gSig where set, else a statistic of the components; see
    roicurate/scale.py). ``operating_point``: the threshold of this named point of the model card (not with
    ``threshold``); ``tta``: test-time augmentation; both recorded as the file writer does. Returns the
    ``Curation``. (CaImAn's ``select_components`` subsets only its own per-component fields, so
    ``roicurate_probability`` keeps all K entries afterwards.)"""
    from roicurate.curation import curate as run
    from roicurate.models import Classifier
    src = _source()
    rs = src.roiset_from_object(obj)
    if diameter is not None:
        from roicurate.scale import SOURCE_OVERRIDE, set_diameter
        set_diameter(rs, diameter, SOURCE_OVERRIDE)
    clf = Classifier.load(model or src.default_model, device=device, tta=tta)
    cur = run(rs, clf, threshold, also_accept=also_accept, operating_point=operating_point)
    src.apply_to_object(obj, cur, as_cnn_preds=as_cnn_preds)
    return cur
