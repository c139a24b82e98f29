"""The engine of ``roicurate.apply`` and ``roicurate apply``: read and check every unit, then classify and write
them one by one, yielding each unit's result as soon as it is written (160 planes print 160 lines as they go)."""
import os
import time

from roicurate.common import RoicurateError
from roicurate.api.lines import DRY_RUN, count_units, types_line, undo_line, verdict_line
from roicurate.api.paths import as_names, as_paths, expand, image_items
from roicurate.api.results import ApplyTotals, Events, UnitResult


def check_pipeline(clf, pipeline, unit, any_pipeline=False):
    """Refuse (one line) a model trained for another pipeline's ROIs, unless ``any_pipeline``: its crops, scale and
    threshold were chosen on that pipeline's ROIs, and the verdict it writes would look plausible and be wrong."""
    made_for = clf.card.get("pipeline")
    if made_for in (None, "any", pipeline) or any_pipeline:
        return
    raise RoicurateError(f"{unit}: is {pipeline} output, but model '{clf.name}' was made for {made_for} ROIs; use a "
                         f"{pipeline} model (the default when --model is left out) or pass --any-pipeline to apply "
                         f"it anyway")


def check_options(threshold, diameter, explain):
    """The bounds the command line's options enforce, for Python callers."""
    if threshold is not None and not 0 <= threshold <= 1:
        raise RoicurateError(f"threshold {threshold}: must be between 0 and 1")
    if diameter is not None and not 1 <= diameter <= 1000:
        raise RoicurateError(f"diameter {diameter}: must be between 1 and 1000 px")
    if explain < 0:
        raise RoicurateError(f"explain {explain}: must be 0 or more")


def load_model(model, device):
    """A loaded Classifier: ``model`` itself, or the registered name / model folder / NAME.json it names."""
    from roicurate.models import Classifier
    return model if isinstance(model, Classifier) else Classifier.load(os.fspath(model), device=device)


def read_and_check(paths, images, diameter, writing, events):
    """Read every unit; with ``writing`` = (types, force, redcell), check each can be written, before the first
    write."""
    from roicurate.scale import SOURCE_OVERRIDE, set_diameter
    from roicurate.sources import read_units
    units = read_units(paths, images)
    for src, unit, rs in units:
        if diameter is not None:
            set_diameter(rs, diameter, SOURCE_OVERRIDE)
        if writing and len(rs):
            types, force, redcell = writing
            if types:
                src.check_types_writable(unit, force=force, redcell=redcell)
            else:
                src.check_writable(unit, force=force)
        events.detail(f"{unit}: read {len(rs)} ROIs ({src.name})")
    return units


def load_classifiers(units, chosen, device, also_accept, any_pipeline, events):
    """{pipeline: (Classifier, the column indices of ``also_accept``)}: ``chosen`` (``model=``), else each
    pipeline's default, checked against its ROIs."""
    from roicurate.curation import accept_columns
    from roicurate.models import Classifier
    from roicurate.plugins import default_model
    classifiers, defaults = {}, {}
    for pipeline in sorted({rs.pipeline for _, _, rs in units if len(rs)}):
        clf = chosen
        if clf is None:
            name = default_model(pipeline)
            clf = defaults[name] = defaults.get(name) or Classifier.load(name, device=device)
        also_columns = accept_columns(clf.classes, clf.positive, also_accept, f"model '{clf.name}'")
        check_pipeline(clf, pipeline, next(u for _, u, rs in units if rs.pipeline == pipeline and len(rs)),
                       any_pipeline)
        classifiers[pipeline] = clf, also_columns
        events.detail(f"{pipeline}: model {clf.name} (sha256 {clf.card['sha256'][:12]}) on {clf.device}")
    return classifiers


def files_of(src, unit):
    """{path: (inode, size, mtime)} of the files in the unit's folder (a plane folder, or the folder holding the
    file): comparing two of these says which files a write replaced or created."""
    where = src.location(unit)
    folder = where if where.is_dir() else where.parent
    try:
        stats = {e.path: e.stat(follow_symlinks=False) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)}
    except OSError:
        return {}
    return {str(p): (st.st_ino, st.st_size, st.st_mtime_ns) for p, st in stats.items()}


def changed_files(before, after):
    return tuple(sorted(p for p, st in after.items() if before.get(p) != st))


def empty_result(src, unit, rs, dry_run):
    import numpy as np
    return UnitResult(str(unit), src.name, rs.pipeline, np.zeros(0, np.float64), np.zeros(0, bool), None, None, None,
                      (), None, None, (), None, dry_run, f"{unit}: no ROIs, nothing written")


def curate_unit(src, unit, rs, classifier, options, progress):
    """Classify one unit with ``classifier`` (a Classifier and its ``also_accept`` columns) and (unless
    ``options["dry_run"]``) write its verdict: its UnitResult."""
    from roicurate.curation import curate
    o = options
    clf, also_columns = classifier
    cur = curate(rs, clf, o["threshold"], progress=progress.update, also_accept=o["also_accept"],
                 also_columns=also_columns)
    progress.clear()
    notes, written = [], ()
    if not o["dry_run"]:
        before = files_of(src, unit)
        message = src.write_types(unit, rs, cur, force=o["force"], redcell=o["redcell"]) if o["types"] else \
            src.write(unit, rs, cur, force=o["force"], **({"as_cnn_preds": True} if o["as_cnn_preds"] else {}))
        notes = [message] if message else []
        written = changed_files(before, files_of(src, unit))
    warnings = []
    backup = src.backup_path(unit)
    if o["types"]:
        line = types_line(unit, cur, clf, o["redcell"], o["dry_run"])
    else:
        line, warnings = verdict_line(unit, rs, cur, clf, o["dry_run"], original_verdict(src, unit, rs, backup,
                                                                                         written))
    s = cur.summary()
    return UnitResult(str(unit), src.name, rs.pipeline, cur.score.copy(), cur.accepted.copy(), s["threshold"],
                      clf.name, clf.card.get("sha256"), tuple(cur.inputs), cur.diameter, cur.diameter_source or None,
                      written, str(backup) if backup is not None and backup.exists() else None, o["dry_run"], line,
                      tuple(notes), tuple(warnings), cur)


def original_verdict(src, unit, rs, backup, written):
    """The pipeline's own verdict for the summary line: a backup this write created holds the file as it was read,
    so the RoiSet already carries it; a backup from an earlier run is read (the unit now holds roicurate's)."""
    if backup is not None and str(backup) in written:
        return rs.pipeline_accepted
    return src.original_verdict(unit, rs)[0]


def iter_apply(*paths, model=None, threshold=None, dry_run=False, force=False, diameter=None, device="auto",
               recursive=False, also_accept=(), as_cnn_preds=False, redcell=False, add_image=(), any_pipeline=False,
               report=None, explain=50, events=None):
    """``roicurate.apply`` one unit at a time: a generator of UnitResult, each yielded as soon as its unit is
    written. Everything is read and checked for every unit before the first write. ``events`` (an
    ``Events``) hears what is found, read and loaded, the progress, and at the end the ``ApplyTotals``."""
    from roicurate.images import parse_image_options
    events = events or Events()
    t0 = time.monotonic()
    roots, also_accept = as_paths(paths), as_names(also_accept)
    check_options(threshold, diameter, explain)
    if report:
        from roicurate.report import check_can_write
        check_can_write(report)
    images = parse_image_options(image_items(add_image))
    # every model is loaded before the first write: a missing model must not leave a half-curated batch
    chosen = None if model is None else load_model(model, device)
    types = chosen is not None and chosen.task == "types"
    if redcell and not types:
        raise RoicurateError("--redcell writes a cell-type model's verdict; give one with --model")
    if report and types:
        raise RoicurateError("--report explains cell / not-cell verdicts, not cell types; use roicurate explain")
    units = read_and_check(expand(roots, recursive, events), images, diameter,
                           None if dry_run else (types, force, redcell), events)
    classifiers = load_classifiers(units, chosen, device, also_accept, any_pipeline, events)
    options = {"threshold": threshold, "also_accept": also_accept, "dry_run": dry_run, "force": force,
               "types": types, "redcell": redcell, "as_cnn_preds": as_cnn_preds}
    written, reported, n_accepted = {}, [], 0
    bar = events.progress(sum(len(rs) for _, _, rs in units), "classifying")
    for src, unit, rs in units:
        if not len(rs):
            yield empty_result(src, unit, rs, dry_run)
            continue
        result = curate_unit(src, unit, rs, classifiers[rs.pipeline], options, bar)
        reported.append((unit, rs, result.curation, classifiers[rs.pipeline][0]))
        n_accepted += int(result.accepted.sum())
        if not dry_run and not types:
            written.setdefault(src, []).append(unit)
        yield result
    bar.close()
    lines = [m for m in (src.finish_batch(done) for src, done in written.items()) if m]
    if written:
        lines.append(undo_line(written, roots, recursive))
    for line in lines:
        events.line(line)
    if report and reported:
        from roicurate.report import write_report
        lines.append(f"report: {write_report(report, reported, n_explain=explain, progress=events.show_progress)}")
        events.line(lines[-1])
    n_rois = sum(len(rs) for _, _, rs in units)
    seconds = time.monotonic() - t0
    done = (f"done: {count_units(src for src, _, _ in units)}, {n_rois} ROIs, {n_accepted} "
            f"{'typed' if types else 'accepted'}, {seconds:.1f} s" + DRY_RUN * dry_run)
    n_written = 0 if dry_run else sum(1 for _, _, rs in units if len(rs))
    events.finished(ApplyTotals(len(units), n_rois, n_accepted, n_written, seconds, dry_run, tuple(lines), done))
