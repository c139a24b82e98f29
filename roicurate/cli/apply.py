"""``roicurate apply``: classify every ROI and write the verdict in the pipeline's own format."""
import shlex
import time

import click

from roicurate import RoicurateError
from roicurate.cli import add_image_option, cli, detail, say
from roicurate.progress import progress


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
@add_image_option
def apply(paths, model_name, threshold, device, dry_run, force, as_cnn_preds, report_dir, n_explain, any_pipeline,
          also_accept, redcell, add_image, diameter=None):
    """Classify every ROI under PATHS and write the verdict in the pipeline's own format.

    PATHS are Suite2p plane folders, suite2p/ folders (every planeN, and combined/ is rebuilt) or CaImAn
    .hdf5 files. Everything is read and checked first: if any input is bad, nothing is written. A cell-type
    model (task "types") writes its class probabilities beside the verdict instead (Suite2p: roicurate_types.npy,
    class names in roicurate.json) and leaves iscell.npy alone."""
    from roicurate.curation import accept_columns, curate
    from roicurate.images import parse_image_options
    from roicurate.models import Classifier
    from roicurate.plugins import default_model, model_specs
    from roicurate.scale import SOURCE_OVERRIDE, outside_range, set_diameter
    from roicurate.sources import read_units

    t0 = time.monotonic()
    if report_dir:
        from roicurate.report import check_can_write
        check_can_write(report_dir)
    images = parse_image_options(add_image)
    specs = model_specs()
    # every model is loaded before the first write: a missing model must not leave a half-curated batch
    by_name = {model_name: Classifier.load(model_name, specs, device=device)} if model_name else {}
    types = model_name is not None and by_name[model_name].task == "types"
    if redcell and not types:
        raise RoicurateError("--redcell writes a cell-type model's verdict; give one with --model")
    if report_dir and types:
        raise RoicurateError("--report explains cell / not-cell verdicts, not cell types; use roicurate explain")
    units = read_units(paths, images)
    for src, unit, rs in units:
        if diameter is not None:
            set_diameter(rs, diameter, SOURCE_OVERRIDE)
        if not dry_run and len(rs):
            if types:
                src.check_types_writable(unit, force=force, redcell=redcell)
            else:
                src.check_writable(unit, force=force)
        detail(f"{unit}: read {len(rs)} ROIs ({src.name})")
    classifiers = {}
    for pipeline in sorted({rs.pipeline for _, _, rs in units if len(rs)}):
        name = model_name or default_model(pipeline)
        if name not in by_name:
            by_name[name] = Classifier.load(name, specs, device=device)
        accept_columns(by_name[name].classes, by_name[name].positive, also_accept, f"model '{name}'")
        check_pipeline(by_name[name], pipeline, next(u for _, u, rs in units if rs.pipeline == pipeline and len(rs)),
                       any_pipeline)
        classifiers[pipeline] = by_name[name]
        detail(f"{pipeline}: model {by_name[name].name} (sha256 {by_name[name].card['sha256'][:12]}) on {by_name[name].device}")
    written = {}
    reported = []
    n_accepted = 0
    bar = progress(sum(len(rs) for _, _, rs in units), "classifying")
    for src, unit, rs in units:
        if not len(rs):
            say(f"{unit}: no ROIs, nothing written")
            continue
        clf = classifiers[rs.pipeline]
        cur = curate(rs, clf, threshold, progress=bar.update, also_accept=also_accept)
        reported.append((unit, rs, cur, clf))
        s = cur.summary()
        n_accepted += s["accepted"]
        bar.clear()
        if types:
            if not dry_run:
                src.write_types(unit, rs, cur, force=force, redcell=redcell)
            if len(cur.classes) == 2:
                counts = f"{s['accepted']} {cur.classes[cur.positive]} at threshold {s['threshold']:.3f}"
            else:
                best = cur.probabilities.argmax(1).tolist()
                counts = "most probable class: " + ", ".join(f"{c} {best.count(j)}" for j, c in enumerate(cur.classes))
            say(f"{unit}: {s['rois']} ROIs typed by {clf.name}: {counts}"
                       + ("; written to redcell.npy too" if redcell else "")
                       + ("  [dry run: nothing written]" if dry_run else ""))
            continue
        if not dry_run:
            extra = {"as_cnn_preds": True} if as_cnn_preds else {}
            note = src.write(unit, rs, cur, force=force, **extra)
            if note:
                click.echo(note)
            written.setdefault(src, []).append(unit)
        original = src.original_verdict(unit, rs)[0]     # the pipeline's own, from the backup on a re-run
        before = "" if original is None else f" (pipeline accepted {int(original.sum())})"
        rule = "" if not cur.also_accept else f" on P({' + '.join(cur.accepted_classes)})"
        counts = "" if "classes" not in s else \
            "; most probable class: " + ", ".join(f"{c} {k}" for c, k in s["classes"].items())
        scale = "" if cur.diameter is None else f"; cell diameter {cur.diameter:.1f} px ({short(cur.diameter_source)})"
        inputs = "" if list(cur.inputs) == ["mask"] else f"; inputs {'+'.join(cur.inputs)}"
        say(f"{unit}: {s['rois']} ROIs, {s['accepted']} accepted, {s['rejected']} rejected{before}; "
             f"{clf.name} at threshold {s['threshold']:.3f}{rule}{counts}{scale}{inputs}"
             f"{'  [dry run: nothing written]' if dry_run else ''}")
        warning = outside_range(cur.diameter, clf.card.get("training", {}).get("reference_diameter_px"))
        if warning:
            click.echo(f"{unit}: warning: {warning}", err=True)
    bar.close()
    for src, done in written.items():
        note = src.finish(done)
        if note:
            say(note)
    if written:
        say(undo_line(written, paths))
    if report_dir and reported:
        from roicurate.report import write_report
        say(f"report: {write_report(report_dir, reported, n_explain=n_explain)}")
    n_rois = sum(len(rs) for _, _, rs in units)
    what = "typed" if types else "accepted"
    click.echo(f"done: {count_units(src for src, _, _ in units)}, {n_rois} ROIs, {n_accepted} {what}, "
               f"{time.monotonic() - t0:.1f} s" + ("  [dry run: nothing written]" if dry_run else ""))



def count_units(srcs):
    """'2 planes, 1 file': Suite2p units are planes, the others files."""
    from collections import Counter
    n = Counter("plane" if src.name == "suite2p" else "file" for src in srcs)
    return ", ".join(f"{k} {noun}{'s' * (k != 1)}" for noun, k in sorted(n.items(), reverse=True)) or "0 planes"


def undo_line(written, paths):
    """Where the pipeline's original verdict is kept, and the command that puts it back."""
    kept = [str(src.backup_path(u)) for src, units in written.items() if hasattr(src, "backup_path") for u in units]
    where = "" if not kept else f" in {kept[0]}" + (f" (and {len(kept) - 1} more like it)" if len(kept) > 1 else "")
    return (f"the pipeline's original verdict is kept{where}; undo with: roicurate revert "
            + " ".join(shlex.quote(str(p)) for p in paths))


