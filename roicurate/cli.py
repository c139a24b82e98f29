"""The ``roicurate`` command. Every user-facing error is one line on stderr and a non-zero exit status."""
import json
import sys

import click

from roicurate import RoicurateError, __version__


def _fail(e):
    click.echo(f"roicurate: error: {e}", err=True)
    sys.exit(1)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RoicurateError as e:
            _fail(e)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="roicurate")
def cli():
    """Curate Suite2p and CaImAn ROIs with a classifier made for each pipeline."""


def default_model(source_name, specs):
    for spec in specs.values():
        if spec.weights and spec.pipeline == source_name:
            return spec.name
    raise RoicurateError(f"no trained model for {source_name} is installed; pass --model")


def _progress(total, label):
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="ROI", file=sys.stderr, disable=None, leave=False)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_name", help="registered model name, or a folder / NAME.json of a trained model")
@click.option("--threshold", type=click.FloatRange(0, 1), help="accept ROIs with probability >= this (default: the model's)")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--dry-run", is_flag=True, help="classify and print the summary, write nothing")
@click.option("--force", is_flag=True, help="overwrite a verdict that was edited by hand after roicurate wrote it")
@click.option("--as-cnn-preds", is_flag=True, help="CaImAn: also store the probabilities in estimates/cnn_preds")
def apply(paths, model_name, threshold, device, dry_run, force, as_cnn_preds):
    """Classify every ROI under PATHS and write the verdict in the pipeline's own format.

    PATHS are Suite2p plane folders, suite2p/ folders (every planeN, and combined/ is rebuilt) or CaImAn
    .hdf5 files. Everything is read and checked first: if any input is bad, nothing is written."""
    from roicurate.curation import curate
    from roicurate.models import Classifier
    from roicurate.plugins import model_specs, source_for

    units = []
    for path in paths:
        src = source_for(path)
        for unit in src.expand(path):
            rs = src.read(unit)
            if not dry_run and len(rs):
                src.check_writable(unit, force=force)
            units.append((src, unit, rs))
    specs = model_specs()
    classifiers = {}
    written = {}
    bar = _progress(sum(len(rs) for _, _, rs in units), "classifying")
    for src, unit, rs in units:
        if not len(rs):
            click.echo(f"{unit}: no ROIs, nothing written")
            continue
        name = model_name or default_model(src.name, specs)
        if name not in classifiers:
            classifiers[name] = Classifier.load(name, specs, device=device)
        clf = classifiers[name]
        cur = curate(rs, clf, threshold, progress=bar.update)
        if not dry_run:
            extra = {"as_cnn_preds": True} if as_cnn_preds else {}
            src.write(unit, rs, cur, force=force, **extra)
            written.setdefault(src, []).append(unit)
        before = "" if rs.pipeline_accepted is None else f" (pipeline accepted {int(rs.pipeline_accepted.sum())})"
        s = cur.summary()
        bar.clear()
        click.echo(f"{unit}: {s['rois']} ROIs, {s['accepted']} accepted, {s['rejected']} rejected{before}; "
                   f"{clf.name} at threshold {s['threshold']:.3f}{'  [dry run: nothing written]' if dry_run else ''}")
    bar.close()
    for src, done in written.items():
        src.finish(done)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def revert(paths):
    """Put back the pipeline's original verdict (byte for byte) and remove roicurate's files."""
    from roicurate.plugins import source_for
    for path in paths:
        click.echo(f"{path}: {source_for(path).revert(path)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models(as_json):
    """List registered networks and trained models."""
    from roicurate.plugins import model_specs
    rows = []
    for spec in model_specs().values():
        card = json.load(open(spec.card_path)) if spec.card_path else {}
        rows.append({"name": spec.name, "pipeline": spec.pipeline, "classes": list(spec.classes),
                     "threshold": card.get("threshold"), "sha256": card.get("sha256"),
                     "trained": bool(spec.weights), "description": spec.description})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'name':<20} {'pipeline':<8} {'classes':<16} {'threshold':<9} {'sha256':<12} description")
    for r in rows:
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        sha = (r["sha256"] or "-")[:12]
        desc = r["description"] + ("" if r["trained"] else " (architecture: train it with roicurate train --arch)")
        click.echo(f"{r['name']:<20} {r['pipeline']:<8} {','.join(r['classes']):<16} {thr:<9} {sha:<12} {desc}")


@cli.command()
def plugins():
    """List plugins, their versions and the hooks they implement."""
    from roicurate.plugins import plugin_info
    for name, version, hooks in plugin_info():
        click.echo(f"{name:<28} {version:<10} {', '.join(hooks)}")


def _parse_val(val):
    try:
        return float(val)
    except ValueError:
        return [v for v in val.split(",") if v]


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--pipeline", type=click.Choice(["suite2p", "caiman"]), help="only accept this pipeline's outputs")
@click.option("--arch", help="registered architecture (default: resnet50 for Suite2p, cnn2 for CaImAn)")
@click.option("--out", required=True, type=click.Path(), help="folder for NAME.safetensors + NAME.json")
@click.option("--name", default="model", show_default=True)
@click.option("--val", default="0.25", show_default=True,
              help="validation recordings: comma-separated names (substrings) or a fraction of recordings")
@click.option("--epochs", default=20, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--target-precision", type=click.FloatRange(0, 1),
              help="threshold: the lowest reaching this validation precision (default: maximum validation F1)")
@click.option("--build", "build", multiple=True, metavar="KEY=VALUE", help="architecture option, e.g. width=16")
def train(paths, pipeline, arch, out, name, val, epochs, lr, weight_decay, batch_size, seed, device,
          target_precision, build):
    """Train a classifier on labelled pipeline outputs (split by recording)."""
    from roicurate.plugins import model_specs, source_for, sources
    from roicurate.train import load_labelled, train as run_train

    sets = load_labelled(paths, pipeline)
    src = sources()[sets[0].origin["source"]] if not pipeline else sources()[pipeline]
    if len({rs.origin["source"] for rs in sets}) > 1:
        raise RoicurateError("the paths mix pipelines; train one pipeline at a time (--pipeline)")
    specs = model_specs()
    arch = arch or {"suite2p": "resnet50", "caiman": "cnn2"}.get(src.name)
    if arch not in specs:
        raise RoicurateError(f"unknown architecture '{arch}' (registered: {', '.join(specs)})")
    kwargs = {}
    for item in build:
        key, _, value = item.partition("=")
        kwargs[key] = json.loads(value) if value else None
    spec = specs[arch]
    crop = spec.crop or src.crop
    if "size" not in kwargs and "size" in spec.build.__code__.co_varnames:
        kwargs["size"] = crop.size
    card = run_train(sets, spec, crop, _parse_val(val), out, name, epochs=epochs, lr=lr, weight_decay=weight_decay,
                     batch_size=batch_size, seed=seed, device=device, target_precision=target_precision,
                     build_kwargs=kwargs, log=lambda m: click.echo(m, err=True))
    c = json.load(open(card))
    v = c["validation"]["pooled"]
    click.echo(f"{card}: threshold {c['threshold']:.3f} ({c['threshold_rule']}); validation precision "
               f"{v['precision']:.3f} recall {v['recall']:.3f} F1 {v['f1']:.3f} ROC AUC {v['roc_auc']:.3f}")


def main():
    from roicurate.plugins import pm
    pm.hook.register_commands(cli=cli)
    cli()


if __name__ == "__main__":
    main()
