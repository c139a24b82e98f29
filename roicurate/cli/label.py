"""``roicurate label``: labels for every ROI from hand-drawn masks."""
import click

from roicurate.common import RoicurateError
from roicurate.cli.common import cli, echo


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
        echo(f"{unit}: {rec['n_rois']} ROIs, {rec['n_label1']} matched one-to-one to a cell at IoU >= "
                   f"{iou_threshold:g} (truth: {rec['n_gt_cells']} cells of {rec['n_gt']} regions"
                   f"{', classes from ' + str(cls_path) if cls_path else ''}){extra}"
                   f"{f'; {dropped} truth pixels outside the frame ignored' if dropped else ''}; wrote {written}")


