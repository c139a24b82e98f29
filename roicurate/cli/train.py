"""``roicurate train``: a classifier from labelled pipeline outputs."""
import glob
import json

import click

from roicurate.common import RoicurateError
from roicurate.cli.common import add_image_option, class_rule, cli, echo, log, num, pipeline_option, types_option
from roicurate.cli.evaluate import print_evaluation


def parse_val(val):
    if val.strip().lower() == "none":
        return None
    try:
        return float(val)
    except ValueError:
        return [v for v in val.split(",") if v]


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@pipeline_option
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
@click.option("--head", is_flag=True,
              help="--operating-point out-of-lab: a stacked head (logistic regression on the network's logit and six "
                   "shape features) fitted on the leave-one-lab-out scores, its named points chosen on its output")
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
@types_option
@add_image_option
def train(paths, pipeline, arch, out, name, val, test, epochs, lr, weight_decay, batch_size, lr_decay, patience, seed,
          device, target_precision, calibration, shape_prior, head, init_model, freeze_until, rehearse, rehearse_share,
          search, resume, build, suite2p_classifier, class_rule_path, channels, types, type_classes, add_image,
          scale=None, operating_point="validation", min_recall=None, image_dropout=0.0):
    """Train a classifier on labelled pipeline outputs (split by recording).

    Labels: roicurate_labels.json beside each output (`roicurate label`), else a dataset labels.json, else the
    pipeline's own (curated) verdict. A cell-type architecture (task "types") trains on --types labels instead.
    --init with another --arch (e.g. a cell-type network from the bundled suite2p-resnet50) starts from the
    weights that fit; layers whose shape differs train even below --freeze-until."""
    from roicurate.images import parse_image_options
    from roicurate.plugins import model_specs, pipeline_source
    from roicurate.training.arch import same_network
    from roicurate.training.data import load_labelled
    from roicurate.training.train import train as run_train

    specs = model_specs()
    init, task, type_classes = model_to_start_from(specs, arch, init_model, types, type_classes)
    images = parse_image_options(add_image)
    labelled = lambda found, pipe: load_labelled(found, pipe, log=log, types=types, images=images,
                                                 type_classes=type_classes)
    sets = labelled(paths, pipeline)
    if len({rs.pipeline for rs in sets}) > 1:
        raise RoicurateError("the paths mix pipelines; train one pipeline at a time (--pipeline)")
    src = pipeline_source(sets[0].pipeline)
    arch = architecture_name(arch, init, init_model, src, freeze_until, rehearse)
    same = same_network(init, arch)           # fine-tuning init's own network: its spec and crop as they are
    kwargs = {}
    for item in build:
        key, _, value = item.partition("=")
        kwargs[key] = json.loads(value) if value else None
    spec = init.spec if same else specs[arch]
    rule = None if task == "types" else \
        class_rule(class_rule_path, init.card.get("class_rule") if init else spec.class_rule, spec.classes)
    # rehearsal: labelled outputs of other recordings, mixed into fine-tuning (quoted glob patterns expanded)
    old = labelled([p for pattern in rehearse for p in (sorted(glob.glob(pattern)) or [pattern])], src.name) \
        if rehearse else None
    if rule is not None:
        from roicurate.labels import attach_labels
        sets = [attach_labels(rs, log=log, class_rule=rule) for rs in sets]
        if old:
            old = [attach_labels(rs, log=log, class_rule=rule) for rs in old]
    crop = init.crop if same else training_crop(spec.crop or src.crop, channels, scale, task, image_dropout)
    if same and (channels or (scale and scale != crop.scale)):
        option = "--channels" if channels else "--scale"
        what = "channels" if channels else "crop scale"
        raise RoicurateError(f"{option}: a fine-tuned model keeps its {what}; give --arch for another input")
    if "size" not in kwargs and "size" in spec.build.__code__.co_varnames:
        kwargs["size"] = crop.size
    hp = {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size, "lr_decay": lr_decay,
          "patience": patience}
    held_out = [v for v in test.split(",") if v] if test else None
    card = run_train(sets, spec, crop, parse_val(val), out, name, hp=hp, seed=seed, device=device,
                     target_precision=target_precision, build_kwargs=kwargs, calibration=calibration, init=init,
                     freeze_until=freeze_until, search=search, test=held_out, resume=resume,
                     suite2p_classifier=suite2p_classifier, shape_prior=shape_prior, head=head, class_rule=rule, rehearse=old,
                     rehearse_share=rehearse_share, operating_point=operating_point, min_recall=min_recall,
                     image_dropout=image_dropout, log=log)
    say_trained(card, out, name, test)


def model_to_start_from(specs, arch, init_model, types, type_classes):
    """(the --init Classifier or None, the task trained, the cell-type classes); one-line errors for an unknown
    --arch and for --types without a cell-type architecture (or the reverse)."""
    from roicurate.models import Classifier
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
    return init, task, type_classes


def architecture_name(arch, init, init_model, src, freeze_until, rehearse):
    """--arch, else --init's architecture, else the pipeline's default; says what fine-tuning will do."""
    if init:
        if arch and arch != init.card["arch"]:
            log(f"--init {init_model} ({init.card['arch']}) into --arch {arch}: the weights that fit are copied")
        if init.card.get("pipeline") not in (None, "any", src.name):
            log(f"note: --init {init_model} was trained on {init.card['pipeline']} ROIs; fine-tuning on {src.name}")
    elif freeze_until or rehearse:
        option = "--freeze-until" if freeze_until else "--rehearse"
        raise RoicurateError(f"{option} needs --init (a model to fine-tune)")
    return arch or (init.card["arch"] if init else src.default_arch)


def training_crop(crop, channels, scale, task, image_dropout):
    """The crop of a new network: ``crop`` (the architecture's, else the source's) with --channels, and its scale:
    cell / not cell: the cell's size relative to the recording's cells; cell types: the images' intensities
    (measured on the two-channel simulations, where reference-scaled crops ranked worse), native pixels."""
    from dataclasses import replace
    if channels:
        crop = replace(crop, channels=tuple(c for c in channels.split(",") if c))
    return replace(crop, scale=scale or ("native" if task == "types" else "reference"),
                   optional_images=bool(image_dropout))


def say_trained(card, out, name, test):
    """The closing line (threshold, validation numbers) and, with --test, the held-out evaluation's table."""
    c = json.load(open(card))
    v = c.get("validation")
    msg = f"{card}: threshold {c['threshold']:.3f} ({c['threshold_rule']})"
    if v:
        msg += (f"; validation precision {v['pooled']['precision']:.3f} recall {v['pooled']['recall']:.3f} "
                f"F1 {v['pooled']['f1']:.3f} ROC AUC {num(v['pooled']['roc_auc'])}")
    echo(msg)
    if test:
        t = json.load(open(f"{out}/{name}.test/metrics.json"))
        print_evaluation(t, f"{out}/{name}.test")
