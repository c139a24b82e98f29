"""Built-in plugin: the ``report`` and ``explain`` commands (``apply --report`` calls the same code).

    roicurate report suite2p/plane0 --out report/                # report on an already-curated plane
    roicurate explain suite2p/plane0 --rois 12,40,41 --out why/  # saliency + occlusion panels for chosen ROIs

On a plane roicurate already curated, the model, threshold and the pipeline's original verdict are the ones
it recorded (Suite2p: roicurate.json + iscell_suite2p.npy; CaImAn: the roicurate_* attributes + the backup
file); elsewhere the pipeline's default model and its current verdict are used.
"""
from pathlib import Path

import click
import numpy as np

from roicurate import RoicurateError
from roicurate.cli.common import add_image_option, echo
from roicurate.hookspecs import hookimpl

def truth_labels(roiset, path, iou=0.5):
    """Labels from ground-truth masks (and the classes.json beside them, if any), matched one-to-one on IoU
    exactly as ``roicurate label`` does."""
    from roicurate.labels import label_from_truth, read_classes, read_regions
    truth = read_regions(path, roiset.shape)
    classes = Path(path).with_name("classes.json")
    is_cell = read_classes(classes, truth.origin["ids"])[0] if classes.exists() else None
    lab = np.asarray(label_from_truth(roiset, truth, is_cell, iou_threshold=iou)["label"])
    return lab, f"{path} (matched one-to-one, IoU >= {iou:g})"


def load_units(paths, model_name=None, threshold=None, device="auto", truth=(), iou=0.5, images=()):
    """ReportUnits for every unit under ``paths``: scores from the recorded (or given, or default) model."""
    from roicurate.progress import progress
    from roicurate.curation import curate
    from roicurate.models import Classifier
    from roicurate.plugins import default_model, model_specs
    from roicurate.report import ReportUnit, pipeline_name
    from roicurate.scale import set_diameter
    from roicurate.sources import read_units

    units = []
    for src, unit, rs in read_units(paths, images):
        if len(rs):
            units.append((src, unit, rs))
        else:
            echo(f"{unit}: no ROIs, left out")
    if truth and len(truth) != len(units):
        raise RoicurateError(f"--truth: give one file per plane/file ({len(units)}), in the same order; "
                             f"got {len(truth)}")
    specs, classifiers, out = model_specs(), {}, []
    bar = progress(sum(len(rs) for _, _, rs in units), "classifying")
    for k, (src, unit, rs) in enumerate(units):
        rec = src.recorded(unit)
        name = model_name or (rec and rec["model"]) or default_model(rs.pipeline)
        if name not in classifiers:
            try:
                classifiers[name] = Classifier.load(name, specs, device=device)
            except RoicurateError as e:
                if model_name or not rec:
                    raise
                raise RoicurateError(f"{unit}: was curated with model '{name}', which cannot be loaded here ({e}); "
                                     f"pass --model") from None
        clf = classifiers[name]
        same_model = rec is not None and (not model_name or rec.get("sha256") == clf.card["sha256"])
        if same_model and rec.get("tta"):              # re-scored as the verdict was made: with TTA
            if (name, "tta") not in classifiers:
                classifiers[name, "tta"] = clf.with_tta()
            clf = classifiers[name, "tta"]
        thr = threshold if threshold is not None else (rec["threshold"] if same_model else None)
        if same_model and rec.get("diameter"):          # the cell diameter the verdict was made with
            set_diameter(rs, *rec["diameter"])
        cur = curate(rs, clf, thr, progress=bar.update, also_accept=rec.get("also_accept", []) if same_model else ())
        if same_model and threshold is None:           # the recorded threshold is the operating point it names
            cur.operating_point = rec.get("operating_point")
        notes = []
        if clf.card.get("pipeline") not in (None, "any", rs.pipeline):
            notes.append(f"{clf.name} was made for {clf.card['pipeline']} ROIs, and these are {rs.pipeline} ROIs: its "
                         f"crops, scale and threshold were not chosen for them.")
        if rec is None:
            notes.append(f"roicurate has not written a verdict here: 'before' is {pipeline_name(rs)}'s current "
                         f"verdict and the accepted/rejected split is what {clf.name} would write.")
        else:
            if same_model and rec.get("sha256") and rec["sha256"] != clf.card["sha256"]:
                notes.append(f"The installed '{name}' differs from the one that curated this (sha256 "
                             f"{str(rec['sha256'])[:12]} then, {clf.card['sha256'][:12]} now): scores may differ.")
            in_file = rec.get("verdict", rs.pipeline_accepted)     # NWB: roicurate's table, not the pipeline's
            edited = int(np.sum(np.asarray(in_file, bool) != cur.accepted)) \
                if in_file is not None and len(in_file) == len(cur.accepted) else 0
            if edited:
                notes.append(f"{edited} ROIs have a different verdict in the file than the model gives "
                             f"(edited by hand since roicurate wrote it, or another model or threshold).")
        before = src.original_verdict(unit, rs)[0]
        labels, source = truth_labels(rs, truth[k], iou) if truth else (None, None)
        out.append(ReportUnit.build(unit, rs, cur, clf, before=before, labels=labels, label_source=source,
                                    notes=notes))
    bar.close()
    return out


def _rois(text):
    """'12,40,41' or '10-20,33' -> int array."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, _, b = part.partition("-")
        try:
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
        except ValueError:
            raise click.BadParameter(f"'{part}' is not an ROI number or range (e.g. 12,40-45)") from None
    return np.asarray(out, np.int64)


def _common(f):
    opts = [
        click.option("--model", "model_name", help="model to explain with (default: the one recorded when the "
                                                   "plane was curated, else the pipeline's default)"),
        click.option("--threshold", type=click.FloatRange(0, 1), help="default: the recorded or the model's"),
        click.option("--window", default=5, show_default=True, help="occlusion patch size (pixels)"),
        click.option("--stride", default=1, show_default=True, help="occlusion patch step (pixels)"),
        click.option("--fill", default=0.0, show_default=True, help="value given to occluded pixels"),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (cuda when present)"),
        add_image_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for index.html + figures")
@click.option("--truth", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="ground-truth masks (Neurofinder regions.json) for ROC/PR curves; one per plane, in order")
@click.option("--iou", default=0.5, show_default=True, help="IoU an ROI needs with a --truth mask to count as it")
@click.option("--explain", "n_explain", default=50, show_default=True,
              help="show saliency/occlusion for this many of the ROIs closest to the threshold")
@click.option("--examples", "n_examples", default=4, show_default=True,
              help="confident accepts and rejects shown as examples")
@_common
def report(paths, out, truth, iou, n_explain, n_examples, model_name, threshold, window, stride, fill, device,
           add_image):
    """Write an HTML report (OUT/index.html) on the ROIs under PATHS: counts, score histogram, outlines on
    the field of view, the closest calls with saliency and occlusion maps, curves against labels. Writes
    nothing into PATHS."""
    import time
    from roicurate.report import check_can_write, write_report
    t0 = time.monotonic()
    check_can_write(out)
    from roicurate.images import parse_image_options
    units = load_units(paths, model_name, threshold, device, truth, iou, parse_image_options(add_image))
    page = write_report(out, units, n_explain=n_explain, n_examples=n_examples, window=window, stride=stride,
                        fill=fill)
    echo(f"report: {page} ({len(units)} plane{'s' * (len(units) != 1)}/file{'s' * (len(units) != 1)}, "
               f"{sum(len(u.roiset) for u in units)} ROIs, {time.monotonic() - t0:.1f} s)")


@click.command("explain")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--rois", help="ROI numbers (0-based), e.g. 12,40,41 or 10-20 (default: the --n closest calls)")
@click.option("--n", "n", default=50, show_default=True, help="without --rois: this many ROIs closest to the threshold")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for one PNG per ROI, explanations.npz (the arrays) and index.html")
@_common
def explain_cmd(paths, rois, n, out, model_name, threshold, window, stride, fill, device, add_image):
    """Saliency (guided backprop) and occlusion maps for chosen ROIs."""
    from roicurate.report import check_can_write, write_explanations
    check_can_write(out)
    from roicurate.images import parse_image_options
    units = load_units(paths, model_name, threshold, device, images=parse_image_options(add_image))
    index = None if rois is None else _rois(rois)
    page = write_explanations(out, units, index, n=n, window=window, stride=stride, fill=fill)
    echo(f"explanations: {page}")


@hookimpl
def register_commands(cli):
    cli.add_command(report)
    cli.add_command(explain_cmd)
