"""The engine of ``roicurate.apply`` and ``roicurate apply``: read and check every unit, then classify and write
them one by one, yielding each unit's result as soon as it is written (160 planes print 160 lines as they go)."""
import os
import time
from pathlib import Path

from roicurate.common import RoicurateError
from roicurate.api.lines import DRY_RUN, count_units, types_line, undo_command, undo_line, verdict_line
from roicurate.api.paths import as_names, as_paths, expand, image_items
from roicurate.api.results import ApplyTotals, BatchStopped, Events, UnitResult


def check_pipeline(clf, pipeline, unit, any_pipeline=False):
    """Refuse (one line) a model trained for another pipeline's ROIs, unless ``any_pipeline``: its crops, scale and
    threshold were chosen on that pipeline's ROIs, and the verdict it writes would look plausible and be wrong."""
    made_for = clf.card.get("pipeline")
    if made_for in (None, "any", pipeline) or any_pipeline:
        return
    raise RoicurateError(f"{unit}: is {pipeline} output, but model '{clf.name}' was made for {made_for} ROIs; use a "
                         f"{pipeline} model (the default when --model is left out) or pass --any-pipeline to apply "
                         f"it anyway")


def check_options(threshold, diameter, explain, operating_point=None):
    """The bounds the command line's options enforce, for Python callers."""
    from roicurate.curation import check_one_of
    if threshold is not None and not 0 <= threshold <= 1:
        raise RoicurateError(f"threshold {threshold}: must be between 0 and 1")
    check_one_of(threshold, operating_point)
    if diameter is not None and not 1 <= diameter <= 1000:
        raise RoicurateError(f"diameter {diameter}: must be between 1 and 1000 px")
    if explain < 0:
        raise RoicurateError(f"explain {explain}: must be 0 or more")


def load_model(model, device, tta=False):
    """A loaded Classifier: ``model`` itself, or the registered name / model folder / NAME.json it names (``tta``:
    loaded with test-time augmentation)."""
    from roicurate.models import Classifier
    if not isinstance(model, Classifier):
        return Classifier.load(os.fspath(model), device=device, tta=tta)
    if tta and not model.tta:
        raise RoicurateError(f"tta=True with a loaded model: load it with Classifier.load('{model.name}', tta=True)")
    return model


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


def load_classifiers(units, chosen, device, also_accept, any_pipeline, events, operating_point=None, tta=False):
    """{pipeline: (Classifier, the column indices of ``also_accept``)}: ``chosen`` (``model=``), else each
    pipeline's default, checked against its ROIs (and that its card has ``operating_point``)."""
    from roicurate.curation import accept_columns, choose_threshold
    from roicurate.plugins import default_model
    classifiers, defaults = {}, {}
    for pipeline in sorted({rs.pipeline for _, _, rs in units if len(rs)}):
        clf = chosen
        if clf is None:
            name = default_model(pipeline)
            clf = defaults[name] = defaults.get(name) or load_model(name, device, tta)
        also_columns = accept_columns(clf.classes, clf.positive, also_accept, f"model '{clf.name}'")
        choose_threshold(clf, None, operating_point)
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
                 also_columns=also_columns, operating_point=o["operating_point"])
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
                      tuple(notes), tuple(warnings), cur, cur.operating_point, cur.tta)


def original_verdict(src, unit, rs, backup, written):
    """The pipeline's own verdict for the summary line: a backup this write created holds the file as it was read,
    so the RoiSet already carries it; a backup from an earlier run is read (the unit now holds roicurate's)."""
    if backup is not None and str(backup) in written:
        return rs.pipeline_accepted
    return src.original_verdict(unit, rs)[0]


def iter_apply(*paths, model=None, threshold=None, dry_run=False, force=False, diameter=None, device="auto",
               recursive=False, also_accept=(), as_cnn_preds=False, redcell=False, add_image=(), any_pipeline=False,
               report=None, explain=50, events=None, operating_point=None, tta=False):
    """``roicurate.apply`` one unit at a time: a generator of UnitResult, each yielded as soon as its unit is
    written. Everything is read and checked for every unit (the free space of the whole batch included) before the
    first write. A unit that fails at write time is undone; the units written before it stay written, their
    ``finish_batch`` (combined/) runs, the undo line for exactly them is told, and ``BatchStopped`` is raised.
    ``events`` (an ``Events``) hears what is found, read and loaded, the progress, and at the end the
    ``ApplyTotals``."""
    from roicurate.images import parse_image_options
    events = events or Events()
    t0 = time.monotonic()
    roots, also_accept = as_paths(paths), as_names(also_accept)
    check_options(threshold, diameter, explain, operating_point)
    if report:
        from roicurate.report import check_can_write
        check_can_write(report)
    images = parse_image_options(image_items(add_image))
    # every model is loaded before the first write: a missing model must not leave a half-curated batch
    chosen = None if model is None else load_model(model, device, tta)
    types = chosen is not None and chosen.task == "types"
    if redcell and not types:
        raise RoicurateError("--redcell writes a cell-type model's verdict; give one with --model")
    if report and types:
        raise RoicurateError("--report explains cell / not-cell verdicts, not cell types; use roicurate explain")
    units = read_and_check(expand(roots, recursive, events), images, diameter,
                           None if dry_run else (types, force, redcell), events)
    if not dry_run:
        check_batch_space(units)
    classifiers = load_classifiers(units, chosen, device, also_accept, any_pipeline, events, operating_point, tta)
    options = {"threshold": threshold, "operating_point": operating_point, "also_accept": also_accept,
               "dry_run": dry_run, "force": force, "types": types, "redcell": redcell, "as_cnn_preds": as_cnn_preds}
    batch = Batch(types)
    bar = events.progress(sum(len(rs) for _, _, rs in units), "classifying")
    try:
        yield from curate_units(units, classifiers, options, bar, batch)
    except GeneratorExit:                        # the caller stopped early: what was written is still finished
        finish_quietly(batch, roots, recursive, events)
        raise
    except Exception as e:                       # noqa: BLE001 (finished below, then raised again)
        batch.stopped = e
    bar.close()
    lines = finish_written(batch, roots, recursive, events)
    if report and batch.reported:
        from roicurate.report import write_report
        where = write_report(report, batch.reported, n_explain=explain, progress=events.show_progress)
        lines.append(f"report: {where}")
        events.line(lines[-1])
    n_rois = sum(len(rs) for _, _, rs in units)
    seconds = time.monotonic() - t0
    done = (f"done: {count_units(src for src, _, _ in units)}, {n_rois} ROIs, {batch.n_accepted} "
            f"{'typed' if types else 'accepted'}, {seconds:.1f} s" + DRY_RUN * dry_run)
    n_written = 0 if dry_run else sum(1 for _, _, rs in units if len(rs))
    events.finished(ApplyTotals(len(units), n_rois, batch.n_accepted, n_written, seconds, dry_run, tuple(lines),
                                done))


class Batch:
    """What an ``apply`` run has done so far: ``written`` {source: [units]} (for ``finish_batch``, combined/, and the
    undo line; a cell-type model's units need neither, but are undone by the same revert), ``reported`` (for
    ``--report``), the accepted count, and the failure that ``stopped`` it."""

    def __init__(self, types=False):
        self.types, self.written, self.reported, self.n_accepted, self.stopped = types, {}, [], 0, None
        self.in_finish = False        # True: what stopped it was a finish_batch (combined/), not a unit


def curate_units(units, classifiers, options, bar, batch):
    """Classify and write each unit in order, yielding its UnitResult; ``batch`` keeps track of what was written."""
    for src, unit, rs in units:
        if not len(rs):
            yield empty_result(src, unit, rs, options["dry_run"])
            continue
        result = curate_unit(src, unit, rs, classifiers[rs.pipeline], options, bar)
        batch.reported.append((unit, rs, result.curation, classifiers[rs.pipeline][0]))
        batch.n_accepted += int(result.accepted.sum())
        if not options["dry_run"]:
            batch.written.setdefault(src, []).append(unit)
        yield result


def finish_written(batch, roots, recursive, events):
    """After the units: each source's ``finish_batch`` (Suite2p: combined/ of every suite2p/ folder written to) and
    the undo line, told to ``events`` as they are made; returns those lines. Where a unit (or a ``finish_batch``)
    failed, raises: the original error when nothing was written, else ``BatchStopped`` (one line: what failed, what
    stays written and the command that reverts exactly that)."""
    lines = []
    for src, done in ({} if batch.types else batch.written).items():
        try:
            message = src.finish_batch(done)
        except (RoicurateError, OSError) as e:    # combined/ stays as it was (its own transaction undid it)
            if batch.stopped is None:
                batch.stopped, batch.in_finish = e, True
            continue
        if message:
            lines.append(message)
            events.line(message)
    exact = written_paths(batch.written)
    if batch.stopped is not None and exact:
        lines.append(undo_line(batch.written, exact))
        events.line(lines[-1])
    elif batch.written and not batch.types:
        lines.append(undo_line(batch.written, roots, recursive))
        events.line(lines[-1])
    if batch.stopped is not None:
        raise stopped_error(batch, undo_command(exact))
    return lines


def finish_quietly(batch, roots, recursive, events):
    """``finish_written`` for a caller that closed the generator: a failure is told to ``events``, not raised."""
    try:
        finish_written(batch, roots, recursive, events)
    except RoicurateError as e:
        events.line(str(e))


def written_paths(written):
    """The paths that revert exactly the units written (an NWB file once for all of its tables)."""
    return list(dict.fromkeys(str(src.location(u)) for src, units in written.items() for u in units))


def stopped_error(batch, command):
    """The error a stopped batch ends with: the failure itself where nothing was written (it was undone); else one
    line saying what failed, what stays written and ``command``, which reverts exactly that (``BatchStopped``)."""
    e = batch.stopped
    if not isinstance(e, (RoicurateError, OSError)):
        return e                                  # a bug, not a write failure: its traceback is wanted
    cause = str(e) if isinstance(e, RoicurateError) else f"{e.filename or 'write'}: {e.strerror or e}"
    if not batch.written:
        return e if isinstance(e, RoicurateError) else RoicurateError(cause)
    n = count_units(src for src, units in batch.written.items() for _ in units)
    for said in ("; nothing changed", "; nothing written"):     # true of the failed unit only: said below
        cause = cause[:-len(said)] if cause.endswith(said) else cause
    what = ("it was left as it was; the {n} written stay written" if batch.in_finish else
            "that unit was left as it was and the batch stopped there: the {n} written before it stay written")
    return BatchStopped(f"{cause}; {what.format(n=n)} (undo with: {command})",
                        [u for units in batch.written.values() for u in units], command)


def check_batch_space(units):
    """Before the first write: for every filesystem that holds two or more of the batch's units, the bytes they
    all keep (new backups, records) plus the largest temporary need (a temp copy) must be free
    (``Source.space_needed``; units whose need cannot be known are left to their own check under the lock)."""
    from roicurate.safeio import check_free_space
    needs, seen = {}, set()
    for src, unit, rs in units:
        where = Path(src.location(unit))
        if not len(rs) or where in seen:          # an NWB file's tables share one backup and one temp copy
            continue
        seen.add(where)
        need = src.space_needed(unit)
        if need is None:
            continue
        folder = where if where.is_dir() else where.parent
        entry = needs.setdefault(os.stat(folder).st_dev, [folder, 0, 0, 0])
        entry[1], entry[2], entry[3] = entry[1] + need[0], max(entry[2], need[1]), entry[3] + 1
    for folder, kept, temporary, n in needs.values():
        if n > 1:
            check_free_space(folder, kept + temporary, f"the {n} units this batch writes on its filesystem")
