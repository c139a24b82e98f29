"""``roicurate apply``: classify every ROI and write the verdict in the pipeline's own format."""
import os
import shlex
import time

import click

from roicurate import RoicurateError
from roicurate.cli import (add_image_option, cli, detail, emit, expand_paths, json_mode, note, recursive_option,
                           say)
from roicurate.progress import progress


DRY_RUN = "  [dry run: nothing written]"


def short(source):
    """'Suite2p diameter setting', '--diameter', 'ROI statistic' (the part before any parenthesis)."""
    return source.split(" (")[0]


def check_pipeline(clf, pipeline, unit, any_pipeline=False):
    """Refuse (one line) a model trained for another pipeline's ROIs, unless ``any_pipeline``: its crops, scale and
    threshold were chosen on that pipeline's ROIs, and the verdict it writes would look plausible and be wrong."""
    made_for = clf.card.get("pipeline")
    if made_for in (None, "any", pipeline) or any_pipeline:
        return
    raise RoicurateError(f"{unit}: is {pipeline} output, but model '{clf.name}' was made for {made_for} ROIs; use a "
                         f"{pipeline} model (the default when --model is left out) or pass --any-pipeline to apply "
                         f"it anyway")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_name", help="registered model name, or a folder / NAME.json of a trained model")
@click.option("--threshold", type=click.FloatRange(0, 1), help="accept ROIs with probability >= this (default: the model's)")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (cuda when present)")
@click.option("--dry-run", is_flag=True, help="classify and print the summary, write nothing")
@click.option("--force", is_flag=True, help="overwrite a verdict that was edited by hand after roicurate wrote it")
@click.option("--as-cnn-preds", is_flag=True, help="CaImAn: also store the probabilities in estimates/cnn_preds")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="also write an HTML report on these ROIs (DIR/index.html + figures; see roicurate report)")
@click.option("--explain", "n_explain", default=50, show_default=True, type=click.IntRange(0),
              help="with --report: saliency/occlusion for this many of the ROIs closest to the threshold, per plane")
@click.option("--any-pipeline", is_flag=True,
              help="apply a model made for another pipeline's ROIs (e.g. caiman-cnn2 on Suite2p planes) anyway")
@click.option("--also-accept", "also_accept", multiple=True, metavar="CLASS",
              help="models with more than two classes: also accept this class (repeatable); an ROI is accepted when "
                   "P(positive class) + P(each such class) >= the threshold")
@click.option("--redcell", is_flag=True, help="two-class cell-type models (e.g. not_red / red), Suite2p: also write "
              "redcell.npy [P(red) >= threshold, P(red)] (the original is kept once as redcell_suite2p.npy)")
@click.option("--diameter", type=click.FloatRange(1, 1000), metavar="PX",
              help="the recordings' cell diameter in pixels, for models that scale crops by it (default: Suite2p's "
                   "diameter / CaImAn's gSig where set, else measured from the ROIs)")
@recursive_option
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per plane/file on stdout, then a totals object; human lines go to stderr")
@add_image_option
def apply(paths, model_name, threshold, device, dry_run, force, as_cnn_preds, report_dir, n_explain, any_pipeline,
          also_accept, redcell, add_image, diameter=None, recursive=False, as_json=False):
    """Classify every ROI under PATHS and write the verdict in the pipeline's own format.

    PATHS are Suite2p plane folders, suite2p/ folders (every planeN, and combined/ is rebuilt) or CaImAn
    .hdf5 files (with --recursive: folders to search). Everything is read and checked first: if any input is bad,
    nothing is written. A cell-type model (task "types") writes its class probabilities beside the verdict instead
    (Suite2p: roicurate_types.npy, class names in roicurate.json) and leaves iscell.npy alone."""
    from roicurate.curation import curate
    from roicurate.images import parse_image_options
    from roicurate.models import Classifier

    t0 = time.monotonic()
    if as_json:
        json_mode()
    if report_dir:
        from roicurate.report import check_can_write
        check_can_write(report_dir)
    images = parse_image_options(add_image)
    # every model is loaded before the first write: a missing model must not leave a half-curated batch
    by_name = {model_name: Classifier.load(model_name, device=device)} if model_name else {}
    types = model_name is not None and by_name[model_name].task == "types"
    if redcell and not types:
        raise RoicurateError("--redcell writes a cell-type model's verdict; give one with --model")
    if report_dir and types:
        raise RoicurateError("--report explains cell / not-cell verdicts, not cell types; use roicurate explain")
    roots, paths = paths, expand_paths(paths, recursive, as_json)
    units = read_and_check(paths, images, diameter, None if dry_run else (types, force, redcell))
    classifiers = load_classifiers(units, model_name, by_name, device, also_accept, any_pipeline)
    written, reported, n_accepted, n_written = {}, [], 0, 0
    bar = progress(sum(len(rs) for _, _, rs in units), "classifying")
    for src, unit, rs in units:
        if not len(rs):
            say(f"{unit}: no ROIs, nothing written")
            if as_json:
                emit({"type": "unit", "path": str(unit), "source": src.name, "pipeline": rs.pipeline, "rois": 0,
                      "written": [], "dry_run": dry_run})
            continue
        clf = classifiers[rs.pipeline]
        cur = curate(rs, clf, threshold, progress=bar.update, also_accept=also_accept)
        reported.append((unit, rs, cur, clf))
        n_accepted += cur.summary()["accepted"]
        bar.clear()
        before = files_of(src, unit) if as_json else None
        if not dry_run:
            message = src.write_types(unit, rs, cur, force=force, redcell=redcell) if types else \
                src.write(unit, rs, cur, force=force, **({"as_cnn_preds": True} if as_cnn_preds else {}))
            if message:
                note(message)
            n_written += 1
            if not types:
                written.setdefault(src, []).append(unit)
        say(types_line(unit, cur, clf, redcell, dry_run) if types
            else verdict_line(src, unit, rs, cur, clf, dry_run))
        if as_json:
            emit(unit_record(src, unit, rs, cur, clf, changed_files(before, files_of(src, unit)), dry_run))
    bar.close()
    for src, done in written.items():
        message = src.finish(done)
        if message:
            say(message)
    if written:
        say(undo_line(written, roots, recursive))
    if report_dir and reported:
        from roicurate.report import write_report
        say(f"report: {write_report(report_dir, reported, n_explain=n_explain)}")
    n_rois = sum(len(rs) for _, _, rs in units)
    seconds = time.monotonic() - t0
    note(f"done: {count_units(src for src, _, _ in units)}, {n_rois} ROIs, {n_accepted} "
         f"{'typed' if types else 'accepted'}, {seconds:.1f} s" + DRY_RUN * dry_run)
    if as_json:
        emit({"type": "totals", "units": len(units), "rois": n_rois, "accepted": n_accepted,
              "rejected": n_rois - n_accepted, "written_units": n_written,
              "seconds": round(seconds, 3), "dry_run": dry_run})


def read_and_check(paths, images, diameter, writing):
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
        detail(f"{unit}: read {len(rs)} ROIs ({src.name})")
    return units


def load_classifiers(units, model_name, by_name, device, also_accept, any_pipeline):
    """{pipeline: Classifier}: ``--model``, else each pipeline's default, checked against its ROIs."""
    from roicurate.curation import accept_columns
    from roicurate.models import Classifier
    from roicurate.plugins import default_model
    classifiers = {}
    for pipeline in sorted({rs.pipeline for _, _, rs in units if len(rs)}):
        name = model_name or default_model(pipeline)
        if name not in by_name:
            by_name[name] = Classifier.load(name, device=device)
        clf = by_name[name]
        accept_columns(clf.classes, clf.positive, also_accept, f"model '{name}'")
        check_pipeline(clf, pipeline, next(u for _, u, rs in units if rs.pipeline == pipeline and len(rs)),
                       any_pipeline)
        classifiers[pipeline] = clf
        detail(f"{pipeline}: model {clf.name} (sha256 {clf.card['sha256'][:12]}) on {clf.device}")
    return classifiers


def verdict_line(src, unit, rs, cur, clf, dry_run):
    """'PLANE: N ROIs, A accepted, R rejected (pipeline accepted P); MODEL at threshold T; ...'"""
    from roicurate.scale import outside_range
    s = cur.summary()
    original = src.original_verdict(unit, rs)[0]     # the pipeline's own, from the backup on a re-run
    before = "" if original is None else f" (pipeline accepted {int(original.sum())})"
    rule = "" if not cur.also_accept else f" on P({' + '.join(cur.accepted_classes)})"
    counts = "" if "classes" not in s else \
        "; most probable class: " + ", ".join(f"{c} {k}" for c, k in s["classes"].items())
    scale = "" if cur.diameter is None else f"; cell diameter {cur.diameter:.1f} px ({short(cur.diameter_source)})"
    inputs = "" if list(cur.inputs) == ["mask"] else f"; inputs {'+'.join(cur.inputs)}"
    warning = outside_range(cur.diameter, clf.card.get("training", {}).get("reference_diameter_px"))
    if warning:
        click.echo(f"{unit}: warning: {warning}", err=True)
    return (f"{unit}: {s['rois']} ROIs, {s['accepted']} accepted, {s['rejected']} rejected{before}; "
            f"{clf.name} at threshold {s['threshold']:.3f}{rule}{counts}{scale}{inputs}{DRY_RUN * dry_run}")


def types_line(unit, cur, clf, redcell, dry_run):
    s = cur.summary()
    if len(cur.classes) == 2:
        counts = f"{s['accepted']} {cur.classes[cur.positive]} at threshold {s['threshold']:.3f}"
    else:
        best = cur.probabilities.argmax(1).tolist()
        counts = "most probable class: " + ", ".join(f"{c} {best.count(j)}" for j, c in enumerate(cur.classes))
    return (f"{unit}: {s['rois']} ROIs typed by {clf.name}: {counts}" + ("; written to redcell.npy too" if redcell
                                                                          else "") + DRY_RUN * dry_run)


def unit_record(src, unit, rs, cur, clf, written, dry_run):
    """What ``apply --json`` prints for one plane/file (README: "apply --json")."""
    s = cur.summary()
    backup = src.backup_path(unit) if hasattr(src, "backup_path") else None
    return {"type": "unit", "path": str(unit), "source": src.name, "pipeline": rs.pipeline, "model": clf.name,
            "sha256": clf.card.get("sha256"), "threshold": s["threshold"], "rois": s["rois"],
            "accepted": s["accepted"], "rejected": s["rejected"], "inputs": list(cur.inputs),
            "reference_diameter": cur.diameter, "diameter_source": cur.diameter_source or None,
            "written": written, "backup": str(backup) if backup is not None and backup.exists() else None,
            "dry_run": dry_run}


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
    return sorted(p for p, st in after.items() if before.get(p) != st)


def count_units(srcs):
    """'2 planes, 1 file' (each source names its units)."""
    from collections import Counter
    n = Counter(src.unit_noun for src in srcs)
    return ", ".join(f"{k} {noun}{'s' * (k != 1)}" for noun, k in sorted(n.items(), reverse=True)) or "0 planes"


def undo_line(written, paths, recursive=False):
    """Where the pipeline's original verdict is kept, and the command that puts it back."""
    kept = list(dict.fromkeys(str(src.backup_path(u)) for src, units in written.items()
                              if hasattr(src, "backup_path") for u in units))      # NWB planes share one backup
    where = "" if not kept else f" in {kept[0]}" + (f" (and {len(kept) - 1} more like it)" if len(kept) > 1 else "")
    return (f"the pipeline's original verdict is kept{where}; undo with: roicurate revert "
            + ("--recursive " if recursive else "") + " ".join(shlex.quote(str(p)) for p in paths))
