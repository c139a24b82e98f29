"""``roicurate apply``: classify every ROI and write the verdict in the pipeline's own format. A thin layer over
``roicurate.api.iter_apply``: it parses the options and prints each unit's lines as the API yields them."""
import click

from roicurate.cli.common import (Printer, add_image_option, cli, emit, json_mode, log, note, recursive_option,
                                  say)


class _Closing(Printer):
    """Also prints the totals when the API is done."""

    def finished(self, totals):
        note(totals.done_line)
        if self.as_json:
            emit(totals.record())


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_name", help="registered model name, or a folder / NAME.json of a trained model")
@click.option("--threshold", type=click.FloatRange(0, 1), help="accept ROIs with probability >= this (default: the model's)")
@click.option("--operating-point", "operating_point", metavar="NAME",
              help="use the threshold of this named operating point of the model card (its operating_points, e.g. "
                   "recall, balanced, precision); default: the card's own threshold; not with --threshold")
@click.option("--tta", is_flag=True, help="test-time augmentation: average the model over the eight rotations/flips "
              "of each crop (eight times the network work)")
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
          also_accept, redcell, add_image, diameter=None, recursive=False, as_json=False, operating_point=None,
          tta=False):
    """Classify every ROI under PATHS and write the verdict in the pipeline's own format.

    PATHS are Suite2p plane folders, suite2p/ folders (every planeN, and combined/ is rebuilt) or CaImAn
    .hdf5 files (with --recursive: folders to search). Everything is read and checked first: if any input is bad,
    nothing is written. A cell-type model (task "types") writes its class probabilities beside the verdict instead
    (Suite2p: roicurate_types.npy, class names in roicurate.json) and leaves iscell.npy alone."""
    from roicurate.api import iter_apply
    if as_json:
        json_mode()
    results = iter_apply(*paths, model=model_name, threshold=threshold, dry_run=dry_run, force=force,
                         diameter=diameter, device=device, recursive=recursive, also_accept=also_accept,
                         as_cnn_preds=as_cnn_preds, redcell=redcell, add_image=add_image, any_pipeline=any_pipeline,
                         report=report_dir, explain=n_explain, events=_Closing(as_json),
                         operating_point=operating_point, tta=tta)
    for result in results:
        for message in result.notes:
            note(message)
        for warning in result.warnings:
            log(warning)
        say(result.line)
        if as_json:
            emit(result.record())
