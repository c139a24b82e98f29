"""The ``roicurate`` command. Every user-facing error is one line on stderr and a non-zero exit status."""
import glob
import json
import math
import shlex
import sys
import time

import click

from roicurate import RoicurateError, __version__
from roicurate.progress import QUIET, VERBOSE, set_verbosity, verbosity


def _fail(e):
    click.echo(f"roicurate: error: {e}", err=True)
    sys.exit(1)


def _set_verbosity(ctx, param, value):
    if value:
        set_verbosity(ctx, quiet=param.name == "quiet", verbose=param.name == "verbose")


def _verbosity_params():
    return [click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_verbosity,
                         help="print only the totals, warnings and errors (no progress, no per-plane lines)"),
            click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_verbosity,
                         help="also print what each step read, used and took")]


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RoicurateError as e:
            _fail(e)

    def add_command(self, cmd, name=None):
        """Every command, plugins' included, takes -q/--quiet and -v/--verbose (as the group itself does)."""
        if not any(p.name in ("quiet", "verbose") for p in cmd.params):
            cmd.params.extend(_verbosity_params())
        super().add_command(cmd, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="roicurate")
@click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
              help="print only the totals, warnings and errors (no progress, no per-plane lines)")
@click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
              help="also print what each step read, used and took")
def cli():
    """Curate Suite2p and CaImAn ROIs with a classifier made for each pipeline."""


def _say(message):
    """A result line (stdout), left out with --quiet."""
    if verbosity() != QUIET:
        click.echo(message)


def _detail(message):
    """A --verbose line (stderr)."""
    if verbosity() == VERBOSE:
        click.echo(message, err=True)


def add_image_option(f):
    return click.option("--add-image", "add_image", multiple=True, metavar="NAME=FILE",
                        help="an extra summary image (.npy or TIFF of the frame size) as crop channel NAME, e.g. "
                             "mean_chan2=red.tif; a relative FILE is looked up in each plane folder / beside each "
                             "CaImAn file (repeatable)")(f)


def _types_option(f):
    f = click.option("--classes", "type_classes", help="cell-type models: the class names in order, comma-separated "
                     "(the last is the positive one, e.g. not_red,red); default: the names in the labels, sorted")(f)
    return click.option("--types", "types", metavar="redcell|FILE.csv",
                        help="train / score a cell-type model on these labels: 'redcell' (Suite2p's redcell.npy) or "
                             "a CSV 'roi,class' (ROI index from 0; relative paths: in each plane folder)")(f)


def _short(source):
    """'Suite2p diameter setting', '--diameter', 'ROI statistic' (the part before any parenthesis)."""
    return source.split(" (")[0]


def _progress(total, label):
    from roicurate.progress import progress
    return progress(total, label)


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
        _detail(f"{unit}: read {len(rs)} ROIs ({src.name})")
    classifiers = {}
    for pipeline in sorted({rs.pipeline for _, _, rs in units if len(rs)}):
        name = model_name or default_model(pipeline)
        if name not in by_name:
            by_name[name] = Classifier.load(name, specs, device=device)
        accept_columns(by_name[name].classes, by_name[name].positive, also_accept, f"model '{name}'")
        check_pipeline(by_name[name], pipeline, next(u for _, u, rs in units if rs.pipeline == pipeline and len(rs)),
                       any_pipeline)
        classifiers[pipeline] = by_name[name]
        _detail(f"{pipeline}: model {by_name[name].name} (sha256 {by_name[name].card['sha256'][:12]}) on {by_name[name].device}")
    written = {}
    reported = []
    n_accepted = 0
    bar = _progress(sum(len(rs) for _, _, rs in units), "classifying")
    for src, unit, rs in units:
        if not len(rs):
            _say(f"{unit}: no ROIs, nothing written")
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
            _say(f"{unit}: {s['rois']} ROIs typed by {clf.name}: {counts}"
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
        scale = "" if cur.diameter is None else f"; cell diameter {cur.diameter:.1f} px ({_short(cur.diameter_source)})"
        inputs = "" if list(cur.inputs) == ["mask"] else f"; inputs {'+'.join(cur.inputs)}"
        _say(f"{unit}: {s['rois']} ROIs, {s['accepted']} accepted, {s['rejected']} rejected{before}; "
             f"{clf.name} at threshold {s['threshold']:.3f}{rule}{counts}{scale}{inputs}"
             f"{'  [dry run: nothing written]' if dry_run else ''}")
        warning = outside_range(cur.diameter, clf.card.get("training", {}).get("reference_diameter_px"))
        if warning:
            click.echo(f"{unit}: warning: {warning}", err=True)
    bar.close()
    for src, done in written.items():
        note = src.finish(done)
        if note:
            _say(note)
    if written:
        _say(_undo_line(written, paths))
    if report_dir and reported:
        from roicurate.report import write_report
        _say(f"report: {write_report(report_dir, reported, n_explain=n_explain)}")
    n_rois = sum(len(rs) for _, _, rs in units)
    what = "typed" if types else "accepted"
    click.echo(f"done: {_count_units(src for src, _, _ in units)}, {n_rois} ROIs, {n_accepted} {what}, "
               f"{time.monotonic() - t0:.1f} s" + ("  [dry run: nothing written]" if dry_run else ""))


def _count_units(srcs):
    """'2 planes, 1 file': Suite2p units are planes, the others files."""
    from collections import Counter
    n = Counter("plane" if src.name == "suite2p" else "file" for src in srcs)
    return ", ".join(f"{k} {noun}{'s' * (k != 1)}" for noun, k in sorted(n.items(), reverse=True)) or "0 planes"


def _undo_line(written, paths):
    """Where the pipeline's original verdict is kept, and the command that puts it back."""
    kept = [str(src.backup_path(u)) for src, units in written.items() if hasattr(src, "backup_path") for u in units]
    where = "" if not kept else f" in {kept[0]}" + (f" (and {len(kept) - 1} more like it)" if len(kept) > 1 else "")
    return (f"the pipeline's original verdict is kept{where}; undo with: roicurate revert "
            + " ".join(shlex.quote(str(p)) for p in paths))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="revert even over hand edits made after roicurate wrote (they are kept "
              "beside the file)")
def revert(paths, force):
    """Put back the pipeline's original verdict (byte for byte, after verifying roicurate's backup) and remove
    roicurate's files. Says "nothing to revert" (exit 0) where nothing is curated."""
    import os

    from roicurate.plugins import source_for
    from roicurate.safeio import NothingToRevert
    for path in paths:
        if not os.path.exists(path):
            raise RoicurateError(f"{path}: does not exist")
        try:
            click.echo(f"{path}: {source_for(path).revert(path, force=force)}")
        except NothingToRevert as e:
            click.echo(str(e))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json):
    """List registered networks and trained models."""
    from roicurate.plugins import model_specs
    rows = []
    for spec in model_specs().values():
        card = json.load(open(spec.card_path)) if spec.card_path else {}
        classes = list(card.get("classes") or spec.classes) or ["(named by the labels)"]
        rows.append({"name": spec.name, "pipeline": spec.pipeline, "task": spec.task, "classes": classes,
                     "threshold": card.get("threshold"), "sha256": card.get("sha256"),
                     "trained": bool(spec.weights), "description": spec.description})
    rows.sort(key=lambda r: not r["trained"])          # trained models first, then the architectures
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    w = max([16] + [len(",".join(r["classes"])) for r in rows])
    click.echo(f"{'name':<20} {'pipeline':<8} {'classes':<{w}} {'threshold':<9} {'sha256':<12} description")
    for r in rows:
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        sha = (r["sha256"] or "-")[:12]
        desc = r["description"] + ("" if r["trained"] else " (architecture: train it with roicurate train --arch)")
        click.echo(f"{r['name']:<20} {r['pipeline']:<8} {','.join(r['classes']):<{w}} {thr:<9} {sha:<12} {desc}")


@cli.command()
def plugins():
    """List plugins, their versions and the hooks they implement."""
    from roicurate.plugins import plugin_info
    for name, version, hooks in plugin_info():
        click.echo(f"{name:<28} {version:<10} {', '.join(hooks)}")


def _parse_val(val):
    if val.strip().lower() == "none":
        return None
    try:
        return float(val)
    except ValueError:
        return [v for v in val.split(",") if v]


def _log(message):
    click.echo(message, err=True)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--pipeline", type=click.Choice(["suite2p", "caiman"]), help="only accept this pipeline's outputs")
@click.option("--arch", help="registered architecture (default: resnet50 for Suite2p, cnn2 for CaImAn)")
@click.option("--out", required=True, type=click.Path(), help="folder for NAME.safetensors + NAME.json")
@click.option("--name", default="model", show_default=True)
@click.option("--val", default="0.25", show_default=True,
              help="validation recordings: comma-separated names, a fraction of recordings, or 'none'")
@click.option("--test", help="comma-separated recordings held out of training and validation, evaluated at the end "
                             "exactly as `roicurate evaluate` does (into OUT/NAME.test/)")
@click.option("--epochs", default=20, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="peak learning rate (one-cycle schedule)")
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True),
              help="final / peak learning rate of the schedule (default: PyTorch's one-cycle, 4e-6)")
@click.option("--patience", default=6, show_default=True,
              help="early stop after this many epochs without a better validation F1")
@click.option("--seed", default=0, show_default=True,
              help="same seed, data, settings and thread count: the same weights")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (cuda when present)")
@click.option("--target-precision", type=click.FloatRange(0, 1),
              help="threshold: the lowest reaching this validation precision (default: maximum validation F1)")
@click.option("--calibrate", "calibration", type=click.Choice(["platt", "temperature", "isotonic", "none"]),
              default="platt", show_default=True, help="probability calibration, fitted on validation")
@click.option("--shape-prior", is_flag=True,
              help="add a logistic regression on five shape features to the network's logit (weighted on validation)")
@click.option("--init", "init_model", help="fine-tune: start from this model (bundled name, folder or NAME.json)")
@click.option("--freeze-until", help="fine-tune: freeze every layer below this one (e.g. layer3 for resnet50, head for cnn2)")
@click.option("--rehearse", multiple=True, metavar="PATH",
              help="fine-tune: labelled outputs of other recordings (e.g. those --init was trained on) mixed into "
                   "training only, so that the model keeps what it knew; repeat it, or quote a glob pattern")
@click.option("--rehearse-share", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True,
              max_open=True), help="share of every epoch's draws that come from the --rehearse recordings")
@click.option("--search", default=0, show_default=True, metavar="N",
              help="random hyperparameter search with N trials (coarse, then fine around the best)")
@click.option("--resume", is_flag=True, help="continue the interrupted run whose checkpoint is in --out")
@click.option("--build", "build", multiple=True, metavar="KEY=VALUE", help="architecture option, e.g. width=16")
@click.option("--suite2p-classifier", type=click.Path(exists=True),
              help="Suite2p classifier file for the --test baseline (default: the built-in one, shipped)")
@click.option("--class-rule", "class_rule_path", type=click.Path(exists=True, dir_okay=False),
              help="models with more than two classes: JSON rule mapping each ROI's ground-truth partner (object "
                   "class, IoU) to a class (default: the architecture's own rule)")
@click.option("--channels", help="crop channels, comma-separated (e.g. mask,mean,mean_chan2_corrected); default: "
              "the architecture's")
@click.option("--scale", type=click.Choice(["reference", "native"]),
              help="crops resampled so that each recording's cell diameter spans the same pixels, with scale jitter "
                   "in training (reference, the default for a new cell / not-cell network), or the recording's own pixels (native, "
                   "the default for cell types)")
@click.option("--operating-point", type=click.Choice(["validation", "out-of-lab"]), default="validation",
              show_default=True, help="choose the calibration and threshold on --val recordings, or on leave-one-lab-"
                                      "out scores (one model per lab, then one on everything; needs three labs)")
@click.option("--min-recall", type=click.FloatRange(0, 1), help="--operating-point out-of-lab: the recall every lab "
              "keeps at the threshold (default 0.85)")
@click.option("--image-dropout", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="zero the image channels of this share of training crops, so that the model also works on "
                   "recordings without those images (they then get zeros)")
@_types_option
@add_image_option
def train(paths, pipeline, arch, out, name, val, test, epochs, lr, weight_decay, batch_size, lr_decay, patience, seed,
          device, target_precision, calibration, shape_prior, init_model, freeze_until, rehearse, rehearse_share,
          search, resume, build, suite2p_classifier, class_rule_path, channels, types, type_classes, add_image,
          scale=None, operating_point="validation", min_recall=None, image_dropout=0.0):
    """Train a classifier on labelled pipeline outputs (split by recording).

    Labels: roicurate_labels.json beside each output (`roicurate label`), else a dataset labels.json, else the
    pipeline's own (curated) verdict. A cell-type architecture (task "types") trains on --types labels instead.
    --init with another --arch (e.g. a cell-type network from the bundled suite2p-resnet50) starts from the
    weights that fit; layers whose shape differs train even below --freeze-until."""
    from dataclasses import replace

    from roicurate.images import parse_image_options
    from roicurate.models import Classifier
    from roicurate.plugins import model_specs, pipeline_source
    from roicurate.train import load_labelled, train as run_train

    specs = model_specs()
    if arch and arch not in specs:
        raise RoicurateError(f"unknown architecture '{arch}' (registered: {', '.join(specs)})")
    init = Classifier.load(init_model, specs) if init_model else None
    task = specs[arch].task if arch else (init.task if init else "curate")
    if (types is not None) != (task == "types"):
        raise RoicurateError("--types trains a cell-type architecture (task 'types', see roicurate models) and such "
                             "an architecture needs --types")
    if type_classes:
        type_classes = [c for c in type_classes.split(",") if c]
    elif init and init.task == "types":
        type_classes = list(init.classes)          # fine-tuning a cell-type model: its classes, in its order
    images = parse_image_options(add_image)
    labelled = lambda found, pipe: load_labelled(found, pipe, log=_log, types=types, images=images,
                                                 type_classes=type_classes)
    sets = labelled(paths, pipeline)
    if len({rs.pipeline for rs in sets}) > 1:
        raise RoicurateError("the paths mix pipelines; train one pipeline at a time (--pipeline)")
    src = pipeline_source(sets[0].pipeline)
    if init:
        if arch and arch != init.card["arch"]:
            _log(f"--init {init_model} ({init.card['arch']}) into --arch {arch}: the weights that fit are copied")
        if init.card.get("pipeline") not in (None, "any", src.name):
            _log(f"note: --init {init_model} was trained on {init.card['pipeline']} ROIs; fine-tuning on {src.name}")
    elif freeze_until or rehearse:
        option = "--freeze-until" if freeze_until else "--rehearse"
        raise RoicurateError(f"{option} needs --init (a model to fine-tune)")
    arch = arch or (init.card["arch"] if init else src.default_arch)
    kwargs = {}
    for item in build:
        key, _, value = item.partition("=")
        kwargs[key] = json.loads(value) if value else None
    spec = init.spec if init and arch == init.card["arch"] else specs[arch]
    rule = None if task == "types" else \
        _class_rule(class_rule_path, init.card.get("class_rule") if init else spec.class_rule, spec.classes)
    # rehearsal: labelled outputs of other recordings, mixed into fine-tuning (quoted glob patterns expanded)
    old = labelled([p for pattern in rehearse for p in (sorted(glob.glob(pattern)) or [pattern])], src.name) \
        if rehearse else None
    if rule is not None:
        from roicurate.labels import attach_labels
        sets = [attach_labels(rs, log=_log, class_rule=rule) for rs in sets]
        if old:
            old = [attach_labels(rs, log=_log, class_rule=rule) for rs in old]
    crop = init.crop if init and arch == init.card["arch"] else spec.crop or src.crop
    if channels:
        if init and arch == init.card["arch"]:
            raise RoicurateError("--channels: a fine-tuned model keeps its channels; give --arch for another input")
        crop = replace(crop, channels=tuple(c for c in channels.split(",") if c))
    if scale and init and arch == init.card["arch"] and scale != crop.scale:
        raise RoicurateError("--scale: a fine-tuned model keeps its crop scale; give --arch for another input")
    if not (init and arch == init.card["arch"]):
        # cell / not cell: the cell's size relative to the recording's cells; cell types: the images' intensities
        # (measured on the two-channel simulations, where reference-scaled crops ranked worse), native pixels
        crop = replace(crop, scale=scale or ("native" if task == "types" else "reference"),
                       optional_images=bool(image_dropout))
    if "size" not in kwargs and "size" in spec.build.__code__.co_varnames:
        kwargs["size"] = crop.size
    hp = {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "lr_decay": lr_decay,
          "patience": patience}
    held_out = [v for v in test.split(",") if v] if test else None
    card = run_train(sets, spec, crop, _parse_val(val), out, name, hp=hp, seed=seed, device=device,
                     target_precision=target_precision, build_kwargs=kwargs, calibration=calibration, init=init,
                     freeze_until=freeze_until, search=search, test=held_out, resume=resume,
                     suite2p_classifier=suite2p_classifier, shape_prior=shape_prior, class_rule=rule, rehearse=old,
                     rehearse_share=rehearse_share, operating_point=operating_point, min_recall=min_recall,
                     image_dropout=image_dropout, log=_log)
    c = json.load(open(card))
    v = c.get("validation")
    msg = f"{card}: threshold {c['threshold']:.3f} ({c['threshold_rule']})"
    if v:
        msg += (f"; validation precision {v['pooled']['precision']:.3f} recall {v['pooled']['recall']:.3f} "
                f"F1 {v['pooled']['f1']:.3f} ROC AUC {_num(v['pooled']['roc_auc'])}")
    click.echo(msg)
    if test:
        t = json.load(open(f"{out}/{name}.test/metrics.json"))
        _print_evaluation(t, f"{out}/{name}.test")


def _class_rule(path, default, classes, required=True):
    """The class rule a K-class model trains or is evaluated with: ``path`` (--class-rule), else ``default``
    (the architecture's or the card's); None for a two-class model (and, unless ``required``, when there is none:
    evaluation on cell / not cell only)."""
    from roicurate.labels import read_class_rule
    if len(classes) <= 2:
        if path:
            raise RoicurateError(f"--class-rule: the model has only the classes {', '.join(classes)}")
        return None
    rule = read_class_rule(path) if path else default
    if rule is None and required:
        raise RoicurateError(f"the model has {len(classes)} classes ({', '.join(classes)}) but no class rule; "
                             f"give one with --class-rule FILE.json")
    return rule


def _num(v, fmt=".3f"):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


def _print_evaluation(numbers, out_dir=None):
    """The table `roicurate evaluate` prints: the model per recording, pooled and macro; the baselines pooled."""
    cols = ("precision", "recall", "f1", "roc_auc", "pr_auc", "ece")
    click.echo(f"{'':<44} {'ROIs':>5} {'cells':>5} " + " ".join(f"{c:>9}" for c in cols))
    row = lambda label, m: click.echo(f"{label[-44:]:<44} {m.get('n', ''):>5} {m.get('n_cell', ''):>5} "
                                      + " ".join(f"{_num(m.get(c)):>9}" for c in cols))
    for rec, m in numbers["per_recording"].items():
        row(rec, m)
    row(f"model, pooled (threshold {numbers['threshold']:.3f})", numbers["pooled"])
    row("model, mean per recording", numbers["macro"])
    from roicurate.baselines import NAMES
    for k, b in numbers["baselines"].items():
        row(f"{NAMES.get(k, k)}, pooled", b["pooled"])
    best = numbers.get("best_threshold")
    if best and not math.isnan(best["f1"]) and best["f1"] > numbers["pooled"]["f1"]:
        click.echo(f"on these ROIs the best threshold is {best['threshold']:.3f} (pooled F1 {best['f1']:.3f}): "
                   f"`apply --threshold {best['threshold']:.3f}` uses it; check it on sessions you did not pick it on")
    if "classes" in numbers:
        _print_classes(numbers["classes"]["pooled"])
    if out_dir:
        click.echo(f"numbers, per-ROI scores and figures in {out_dir}")


def _print_classes(m):
    """Per-class precision / recall / F1 and the confusion matrix of a K-class model (most probable class)."""
    names = m["classes"]
    w = max(len(c) for c in names) + 2
    click.echo(f"\n{m['n']} ROIs with class labels: accuracy {_num(m['accuracy'])} (majority class "
               f"{_num(m['majority_rate'])}), macro-F1 {_num(m['macro_f1'])}")
    click.echo(f"{'class':<{w}} {'ROIs':>5} {'precision':>9} {'recall':>9} {'F1':>9}   predicted as: "
               + " ".join(f"{c:>{w}}" for c in names))
    for c, row in zip(names, m["confusion_matrix"]):
        pc = m["per_class"][c]
        click.echo(f"{c:<{w}} {pc['support']:>5} {_num(pc['precision']):>9} {_num(pc['recall']):>9} "
                   f"{_num(pc['f1']):>9}                 " + " ".join(f"{v:>{w}}" for v in row))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "model_name", required=True,
              help="registered model name, or a folder / NAME.json of a trained model")
@click.option("--pipeline", type=click.Choice(["suite2p", "caiman"]), help="only accept this pipeline's outputs")
@click.option("--threshold", type=click.FloatRange(0, 1), help="accept ROIs with probability >= this (default: the model's)")
@click.option("--out", type=click.Path(), help="folder for metrics.json, scores.csv and roc/pr/reliability PNGs")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--suite2p-classifier", type=click.Path(exists=True),
              help="Suite2p classifier file for the built-in baseline (default: the one Suite2p ships)")
@click.option("--class-rule", "class_rule_path", type=click.Path(exists=True, dir_okay=False),
              help="models with more than two classes: JSON rule giving the ROIs' classes (default: the model card's)")
@click.option("--types", "types", metavar="redcell|FILE.csv", help="cell-type models: the labels to score against "
              "('redcell' or a CSV 'roi,class', as for train)")
@add_image_option
def evaluate(paths, model_name, pipeline, threshold, out, device, suite2p_classifier, class_rule_path, types,
             add_image):
    """Score a model on labelled pipeline outputs, per recording and pooled, against the baselines (accept all,
    the pipeline's own verdict, Suite2p's built-in classifier) on the same ROIs. A model with more than two
    classes is also scored per class where the labels name object classes (confusion matrix). A cell-type model
    is scored on --types labels, against accept-all and the pipeline's own red-cell probability."""
    from roicurate.evaluate import evaluate_model, write_evaluation
    from roicurate.images import parse_image_options
    from roicurate.models import Classifier
    from roicurate.train import load_labelled
    clf = Classifier.load(model_name, device=device)
    if (types is not None) != (clf.task == "types"):
        raise RoicurateError(f"--types scores a cell-type model, and model '{clf.name}' "
                             f"{'is one: give --types' if clf.task == 'types' else 'is not'}")
    rule = None if types else _class_rule(class_rule_path, clf.card.get("class_rule"), clf.classes, required=False)
    sets = load_labelled(paths, pipeline, log=_log, class_rule=rule, types=types, type_classes=clf.classes if types
                         else None, images=parse_image_options(add_image))
    bar = _progress(sum(len(rs) for rs in sets), "scoring")
    numbers, table = evaluate_model(clf, sets, threshold, suite2p_classifier=suite2p_classifier, progress=bar.update)
    bar.close()
    if out:
        write_evaluation(out, numbers, table)
    _print_evaluation(numbers, out)


@cli.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--truth", "truths", multiple=True, required=True, type=click.Path(exists=True),
              help="ground-truth masks, Neurofinder regions.json; one per plane, in plane order, for a suite2p/ folder")
@click.option("--classes", "classes", multiple=True, type=click.Path(exists=True),
              help="classes.json saying which regions are cells (default: classes.json beside the truth file, "
                   "if any; else every region is a cell)")
@click.option("--cell-class", "cell_classes", multiple=True, default=("soma",), show_default=True,
              help="class names in --classes that count as cells")
@click.option("--iou-threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--binarize", type=click.FloatRange(0, 1),
              help="ROI pixel kept if weight > this x ROI max (default: 0 for Suite2p, 0.2 for CaImAn)")
@click.option("--recording", help="recording name, keeps planes together in train/validation splits")
def label(path, truths, classes, cell_classes, iou_threshold, binarize, recording):
    """Label every ROI under PATH from hand-drawn masks (one-to-one Hungarian matching on IoU) and write
    roicurate_labels.json beside the pipeline output; `train` and `evaluate` use it before the pipeline's verdict."""
    from pathlib import Path
    from roicurate import labels as lab
    from roicurate.sources import read_units
    units = read_units([path])
    if len(truths) != len(units):
        raise RoicurateError(f"{path} holds {len(units)} ROI sets ({', '.join(Path(u).name for _, u, _ in units)}) "
                             f"but {len(truths)} --truth files were given; give one per ROI set, in this order")
    if classes and len(classes) != len(truths):
        raise RoicurateError(f"give one --classes file per --truth file ({len(truths)}), or none")
    jobs = []
    for i, ((_, unit, rs), truth_path) in enumerate(zip(units, truths)):
        truth = lab.read_regions(truth_path, rs.shape)
        cls_path = classes[i] if classes else (Path(truth_path).parent / "classes.json")
        is_cell, names = (lab.read_classes(cls_path, truth.origin["ids"], cell_classes)
                          if Path(cls_path).exists() else (None, None))
        rec = lab.label_from_truth(rs, truth, is_cell, iou_threshold, binarize, names)
        jobs.append((unit, rs, truth, truth_path, cls_path if names else None, rec))
    for unit, rs, truth, truth_path, cls_path, rec in jobs:    # everything read and matched before writing
        written = lab.write_own_labels(rs, rec, truth_path, cls_path, recording)
        a, ai = rec["assigned_gt"], rec["assigned_iou"]
        other = sum(1 for g, v, l in zip(a, ai, rec["label"]) if g >= 0 and v >= iou_threshold and not l)
        extra = f"; {other} matched a non-cell object" if cls_path else ""
        dropped = truth.origin["dropped_pixels"]
        click.echo(f"{unit}: {rec['n_rois']} ROIs, {rec['n_label1']} matched one-to-one to a cell at IoU >= "
                   f"{iou_threshold:g} (truth: {rec['n_gt_cells']} cells of {rec['n_gt']} regions"
                   f"{', classes from ' + str(cls_path) if cls_path else ''}){extra}"
                   f"{f'; {dropped} truth pixels outside the frame ignored' if dropped else ''}; wrote {written}")


def main():
    from roicurate.plugins import pm
    pm.hook.register_commands(cli=cli)
    cli()


if __name__ == "__main__":
    main()
