"""roicurate's Python API (what ``roicurate apply``, ``revert`` and ``status`` themselves call), for notebooks and
scripts::

    import roicurate
    p = roicurate.predict("suite2p/plane0")                   # P(cell) per ROI, nothing written
    [r] = roicurate.apply("suite2p/plane0", dry_run=True)     # the verdict, nothing written
    results = roicurate.apply("suite2p")                      # every plane written, combined/ rebuilt
    roicurate.status("suite2p"); roicurate.revert("suite2p")

Library calls print nothing: every line the command would print is in the results (``line``, ``notes``,
``warnings``); must-see notes (hand edits kept beside a file) are also given to ``warnings.warn``. Every problem with
the input is a ``roicurate.RoicurateError`` whose message is one line naming the file, and nothing has been written.
Nothing here imports torch until a model is loaded.
"""
import warnings as _warnings

from roicurate.common import RoicurateError
from roicurate.api.applying import iter_apply
from roicurate.api.restoring import iter_revert, iter_status
from roicurate.api.results import ApplyTotals, Events, RevertResult, RoicurateWarning, StatusResult, UnitResult

__all__ = ["apply", "predict", "revert", "status", "iter_apply", "iter_revert", "iter_status", "UnitResult",
           "RevertResult", "StatusResult", "ApplyTotals", "Events", "RoicurateError", "RoicurateWarning"]


def apply(*paths, model=None, threshold=None, dry_run=False, force=False, diameter=None, device="auto",
          recursive=False, also_accept=(), as_cnn_preds=False, redcell=False, add_image=(), any_pipeline=False,
          report=None, explain=50, operating_point=None, tta=False):
    """Classify every ROI under ``paths`` and write the verdict in each pipeline's own format (``roicurate apply``).

    Everything is read and checked for every unit before the first write: if any input is bad, nothing is written.
    The pipeline's original verdict is kept once in a verified backup, so :func:`revert` restores it byte for byte.

    Args:
        *paths: Suite2p plane folders, suite2p/ folders (every planeN; combined/ is rebuilt), CaImAn .hdf5 files
            from ``cnm.save()``, NWB files (``FILE::table`` for one ROI table); with ``recursive``, folders to search.
        model: a registered model name, a trained model's folder or NAME.json, or a loaded
            :class:`roicurate.models.Classifier`; default: each pipeline's own default model.
        threshold: accept ROIs with probability >= this (0..1); default: the model's.
        dry_run: classify and return the verdict, write nothing (every file stays byte-identical).
        force: overwrite a verdict that was edited by hand after roicurate wrote it (the edits are kept beside it).
        diameter: the recordings' cell diameter in pixels (1..1000) for models that scale crops by it; default:
            Suite2p's diameter / CaImAn's gSig where set, else measured from the ROIs.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda when present).
        recursive: ``paths`` are folders; curate every pipeline output found under them.
        also_accept: models with more than two classes: class names also accepted (their probabilities are added
            to the positive class's before the threshold).
        as_cnn_preds: CaImAn: also store the probabilities in ``estimates/cnn_preds``.
        redcell: two-class cell-type models, Suite2p: also write redcell.npy.
        add_image: extra summary images as crop channels: ``"NAME=FILE"`` strings or a ``{name: file}`` dict (a
            relative file is looked up in each plane folder / beside each file).
        any_pipeline: apply a model made for another pipeline's ROIs anyway.
        report: also write an HTML report on these ROIs into this folder.
        explain: with ``report``, explain this many of the ROIs closest to the threshold, per unit.
        operating_point: use the threshold of this named operating point of the model card (``"recall"``,
            ``"balanced"``, ``"precision"`` ...), checked against every model before the first write; not with
            ``threshold``. Default: the card's threshold (its default point, where it names points).
        tta: test-time augmentation: the model averaged over the eight rotations/flips of each crop (eight times
            the network work); recorded with the verdict.

    Returns:
        list[UnitResult]: one per unit (plane, file or NWB table), in order.

    Raises:
        RoicurateError: a bad input, option or model (one line naming the file); nothing was written.
        roicurate.api.results.BatchStopped: a unit could not be written after the checks passed (e.g. the disk
            filled): it was undone, the units before it stay written (``.written``; ``.undo`` reverts them).
    """
    results = list(iter_apply(*paths, model=model, threshold=threshold, dry_run=dry_run, force=force,
                              diameter=diameter, device=device, recursive=recursive, also_accept=also_accept,
                              as_cnn_preds=as_cnn_preds, redcell=redcell, add_image=add_image,
                              any_pipeline=any_pipeline, report=report, explain=explain,
                              operating_point=operating_point, tta=tta))
    for result in results:
        for message in (*result.notes, *result.warnings):
            _warnings.warn(message, RoicurateWarning, stacklevel=2)
    return results


def predict(path, model=None, *, diameter=None, device="auto", add_image=(), any_pipeline=False):
    """The model's probability that each ROI of ONE unit is a cell; reads only, writes nothing.

    Args:
        path: one unit: a Suite2p plane folder (or a suite2p/ folder with a single plane), a CaImAn .hdf5 file,
            an NWB file with one ROI table (or ``FILE::table``).
        model: a registered model name, a model folder or NAME.json, or a loaded Classifier; default: the
            pipeline's own default model.
        diameter: the cell diameter in pixels, for models that scale crops by it (default as in :func:`apply`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        add_image: extra summary images, as in :func:`apply`.
        any_pipeline: use a model made for another pipeline's ROIs anyway.

    Returns:
        numpy.ndarray: float64 (N,), P(positive class) per ROI in the pipeline's ROI order (what ``apply`` writes
        as iscell.npy's probability column).

    Raises:
        RoicurateError: a bad input or model, or a path that holds several units (name one plane, or use
        ``apply(path, dry_run=True)``).
    """
    from roicurate.api.applying import check_options, check_pipeline, load_model
    from roicurate.api.paths import as_paths, image_items
    from roicurate.images import parse_image_options
    from roicurate.plugins import default_model, source_for
    from roicurate.scale import SOURCE_OVERRIDE, set_diameter
    from roicurate.sources import read_units
    [path] = as_paths([path])
    check_options(None, diameter, 0)
    images = parse_image_options(image_items(add_image))
    units = source_for(path).expand(path)
    if len(units) != 1:
        raise RoicurateError(f"{path}: holds {len(units)} units ({', '.join(map(str, units))}); predict takes one: "
                             f"give one of them, or use roicurate.apply({str(path)!r}, dry_run=True) for all")
    [(_, unit, rs)] = read_units(units, images)
    if diameter is not None:
        set_diameter(rs, diameter, SOURCE_OVERRIDE)
    clf = load_model(model if model is not None else default_model(rs.pipeline), device)
    if not len(rs):
        import numpy as np
        return np.zeros(0, np.float64)
    check_pipeline(clf, rs.pipeline, unit, any_pipeline)
    return clf.predict_proba(rs)[:, clf.positive]


def revert(*paths, force=False, recursive=False):
    """Put back the pipeline's original verdict (byte for byte, after verifying roicurate's backup) and remove
    roicurate's files (``roicurate revert``).

    Args:
        *paths: what :func:`apply` was given (plane folders, suite2p/ folders, files).
        force: revert even over hand edits made after roicurate wrote (they are kept beside the file).
        recursive: ``paths`` are folders; revert every pipeline output under them.

    Returns:
        list[RevertResult]: one per path; ``reverted`` is False where there was nothing to revert.

    Raises:
        RoicurateError: a path that does not exist, a backup that fails verification, hand edits without
        ``force``; that path is left as it was (paths before it are already reverted).
    """
    return list(iter_revert(*paths, force=force, recursive=recursive))


def status(*paths, recursive=False):
    """What roicurate did to each unit under ``paths`` (``roicurate status``); reads only roicurate's record.

    Args:
        *paths: plane folders, suite2p/ folders, files.
        recursive: ``paths`` are folders; every pipeline output under them.

    Returns:
        list[StatusResult]: one per unit, ``state`` one of ``not curated``, ``curated``, ``edited since``,
        ``re-run``, ``backup missing``, ``backup damaged``, ``record missing``, ``unreadable`` (a unit whose files
        cannot be read is reported so, and the others follow).

    Raises:
        RoicurateError: a path that does not exist or that no source claims.
    """
    return list(iter_status(*paths, recursive=recursive))
