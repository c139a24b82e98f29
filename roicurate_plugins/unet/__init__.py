"""Built-in plugin: ``roicurate segment``, a U-Net that finds somata in a summary image.

    roicurate segment suite2p/plane0 --out seg/                      # the plane's mean image (ops meanImg)
    roicurate segment cnmf.hdf5 --out seg/ --tta                     # CaImAn: the mean of its model of the movie
    roicurate segment mean.npy --out seg/ --truth regions.json       # an image file (.npy, .npz, .tif) + scores
    roicurate segment suite2p/plane0 --out seg/ --missed             # cells the pipeline has no ROI for

The network, its input and the trained model are in ``unet/model.py``; the scores against ground truth in
``unet/scoring.py``.

It writes, into ``--out``: ``probability.npy`` (float32 per-pixel neuron probability), ``probability.png``,
``regions.json`` (threshold + 8-connected components + minimum size, Neurofinder format) and ``segment.json``
(what was run, on what, and the scores against ``--truth``); ``--missed`` adds ``missed.json`` + ``missed.png``.

Where it helps the classifier, through the core's generic hooks (nothing in roicurate's core knows about this
module):

* ``register_images``: the image ``unet``, the bundled ``unet-mean``'s neuron probability map of the recording's
  mean image (no TTA), a crop channel for any classifier (computed once per recording);
* ``register_models``: the bundled U-Net for ``roicurate models``, and the architectures ``cnn2-unet`` (CaImAn,
  50x50) and ``cnn2-unet-64`` (Suite2p, 64x64): ``cnn2`` on two channels, the mask and that map's window;
* ``register_report_sections``: "Possibly missed cells" in the HTML report, the U-Net objects no pipeline ROI
  touches (``missed_objects``);
* ``register_commands``: ``roicurate segment``.
"""
import functools
import json
import time
from pathlib import Path

import click
import numpy as np

from roicurate import RoicurateError
from roicurate.cli.common import echo
from roicurate.crops import CropSpec, DerivedImage, summary_image
from roicurate.hookspecs import hookimpl
from roicurate.images import check_image, read_image_file
from roicurate.models import ModelSpec
from roicurate_plugins.unet import scoring as ev
from roicurate_plugins.unet.model import MODEL, Segmenter, unet

WEIGHTS = Path(__file__).parents[1] / "weights"
SEGMENT_IMAGE_FILES = (".npy", ".npz", ".tif", ".tiff")  # the image files segment reads (.npz: the array --image names)


# ---- input ---------------------------------------------------------------------------------------------------
def _check_image(image, where):
    image = check_image(image, where)
    if min(image.shape) < 16:
        raise RoicurateError(f"{where}: the image is {image.shape[0]}x{image.shape[1]}; at least 16x16 is needed")
    return image


def _read_image_file(path, kind):
    if path.suffix.lower() != ".npz":
        return read_image_file(path)
    try:
        with np.load(path, allow_pickle=False) as d:
            if kind not in d:
                raise RoicurateError(f"{path}: has no '{kind}' array (has: {', '.join(d.files) or 'none'}); "
                                     f"pass --image")
            return d[kind]
    except RoicurateError:
        raise
    except Exception as e:  # numpy and zipfile raise many types for truncated or foreign files
        raise RoicurateError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None


def read_input(path, kind="mean"):
    """(image, RoiSet or None) from an image file or a Suite2p plane / CaImAn file (its ``kind`` summary image)."""
    from roicurate.plugins import sources
    from roicurate.sources import read_units
    p = Path(path)
    if not p.exists():
        raise RoicurateError(f"{path}: no such file or folder")
    if p.is_file() and p.suffix.lower() in SEGMENT_IMAGE_FILES:
        return _check_image(_read_image_file(p, kind), path), None
    try:
        units = read_units([path])
    except RoicurateError:
        if any(src.detect(path) for src in sources().values()):
            raise                                   # a pipeline output that cannot be read: its own message
        raise RoicurateError(f"{path}: not a Suite2p plane, a CaImAn .hdf5 file or an image file "
                             f"({', '.join(SEGMENT_IMAGE_FILES)})") from None
    if len(units) != 1:
        raise RoicurateError(f"{path}: holds {len(units)} planes ({', '.join(Path(u).name for _, u, _ in units)}); "
                             f"segment one plane folder at a time")
    rs = units[0][2]
    if kind not in rs.images:
        raise RoicurateError(f"{path}: has no '{kind}' summary image (has: {', '.join(sorted(rs.images)) or 'none'})")
    return _check_image(rs.images[kind], f"{path} ({kind} image)"), rs


# ---- possibly missed cells -------------------------------------------------------------------------------------
def missed_objects(regions, prob, roiset, max_overlap=0.0):
    """The objects whose pixels lie in pipeline ROIs (binarised as the labelling protocol does: Suite2p lam > 0,
    CaImAn A > 0.2 x max) for at most ``max_overlap`` of their area: cells the pipeline may have missed."""
    from roicurate.scale import source_binarize
    covered = np.zeros(roiset.shape, bool)
    keep = roiset.binary(source_binarize(roiset))
    covered[roiset.y[keep], roiset.x[keep]] = True
    out = []
    for i, r in enumerate(regions):
        frac = float(covered[r[:, 0], r[:, 1]].mean())
        if frac <= max_overlap:
            out.append({"id": str(i), "centre": [round(float(v), 2) for v in r.mean(0)], "area": len(r),
                        "mean_probability": round(float(prob[r[:, 0], r[:, 1]].mean()), 4),
                        "covered_fraction": round(frac, 4), "coordinates": r.tolist()})
    return out, covered


# ---- figures -----------------------------------------------------------------------------------------------------
def _show(ax, image, title):
    lo, hi = np.percentile(image, [1, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def probability_figure(path, image, prob, labels, title):
    from roicurate.report.figures import figure, save
    fig = figure(13, 4.6)
    ax = fig.add_subplot(1, 3, 1)
    _show(ax, image, title)
    ax = fig.add_subplot(1, 3, 2)
    im = ax.imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("neuron probability", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax = fig.add_subplot(1, 3, 3)
    _show(ax, image, f"{int(labels.max())} objects")
    if labels.any():
        ax.contour(labels > 0, levels=[0.5], colors="lime", linewidths=0.6)
    return save(fig, path, dpi=110)


def missed_figure(path, image, covered, missed, shape):
    from roicurate.report.figures import figure, save
    fig = figure(7, 7)
    ax = fig.add_subplot()
    _show(ax, image, f"{len(missed)} possibly missed cells (red): U-Net objects outside the pipeline's ROIs (cyan)")
    if covered.any():
        ax.contour(covered, levels=[0.5], colors="cyan", linewidths=0.5)
    if missed:
        ax.contour(ev.union_mask([np.asarray(m["coordinates"]) for m in missed], shape), levels=[0.5],
                   colors="red", linewidths=0.8)
        for m in missed:
            ax.text(m["centre"][1], m["centre"][0], m["id"], color="yellow", fontsize=6, ha="center", va="center")
    return save(fig, path, dpi=110)


# ---- the command -------------------------------------------------------------------------------------------------
def _prepare_out(out):
    from roicurate.sources import check_dir_writable
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RoicurateError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RoicurateError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    check_dir_writable(out)
    return out


@click.command("segment")
@click.argument("path", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="folder for probability.npy/.png, regions.json, segment.json")
@click.option("--model", "model_name", default=MODEL, show_default=True,
              help="registered U-Net model, or a folder / NAME.json trained with benchmarks/train_unet.py")
@click.option("--image", "kind", help="summary image of a plane/CaImAn file/.npz to use (default: the model's, mean)")
@click.option("--tta", is_flag=True, help="average the 8 rotations/flips of the image (8x slower)")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), help="probability threshold (default: the model's)")
@click.option("--min-size", type=click.IntRange(1), help="drop objects smaller than this many pixels (default: the model's)")
@click.option("--truth", type=click.Path(), help="ground-truth regions.json to score against (cells only when a "
                                                 "classes.json is beside it)")
@click.option("--distance", default=ev.NEUROFINDER_DISTANCE, show_default=True, type=click.FloatRange(0, min_open=True),
              help="--truth: centres closer than this (pixels) match, as in Neurofinder")
@click.option("--missed", is_flag=True, help="Suite2p plane / CaImAn file: list objects no pipeline ROI covers "
                                             "(missed.json + missed.png)")
@click.option("--missed-overlap", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="--missed: an object counts as missed while pipeline ROIs cover at most this fraction of it")
def segment(path, out, model_name, kind, tta, threshold, min_size, truth, distance, missed, missed_overlap):
    """Per-pixel neuron probability and neuron masks (regions.json) from a summary image with a U-Net.

    PATH is a Suite2p plane folder, a CaImAn .hdf5 file (their mean image is used) or an image file: .npy,
    .npz (the array named by --image), single-page .tif."""
    seg = Segmenter.load(model_name)
    kind = kind or seg.image
    image, roiset = read_input(path, kind)
    if missed and roiset is None:
        raise RoicurateError("--missed needs a Suite2p plane or CaImAn file (pipeline ROIs), not an image file")
    truth_regions, truth_note = ev.read_truth(truth, image.shape) if truth else (None, None)
    t0 = time.perf_counter()
    try:
        prob = seg.probability(image, tta)
    except RoicurateError as e:
        raise RoicurateError(f"{path}: {e}") from None
    labels = seg.objects(prob, threshold, min_size)
    seconds = time.perf_counter() - t0
    regions = ev.regions_from_labels(labels)
    out = _prepare_out(out)
    np.save(out / "probability.npy", prob)
    (out / "regions.json").write_text(json.dumps(ev.regions_json(regions)) + "\n")
    probability_figure(out / "probability.png", image, prob, labels, f"{Path(path).name}: {kind} image")
    summary = {"input": str(Path(path).resolve()), "image": kind, "shape": list(image.shape), "model": seg.card["name"],
               "sha256": seg.card["sha256"], "tta": tta, "threshold": seg.threshold if threshold is None else threshold,
               "min_size": seg.min_size if min_size is None else min_size, "objects": len(regions),
               "seconds": round(seconds, 3), "files": ["probability.npy", "probability.png", "regions.json"]}
    echo(f"{path}: {len(regions)} objects ({seg.card['name']}, {kind} image, threshold {summary['threshold']:.3f}"
               f"{', 8-fold TTA' if tta else ''}, {seconds:.2f} s) -> {out / 'regions.json'}")
    if truth_regions:
        s = ev.score(truth_regions, regions, image.shape, distance)
        summary["evaluation"] = dict(s, truth=truth_note)
        echo(f"vs {truth_note}: precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f} "
                   f"(centres within {distance:g} px), inclusion {s['inclusion']:.3f} exclusion {s['exclusion']:.3f}, "
                   f"pixel IoU {s['pixel_iou']:.3f}")
    if missed:
        found, covered = missed_objects(regions, prob, roiset, missed_overlap)
        (out / "missed.json").write_text(json.dumps(found) + "\n")
        missed_figure(out / "missed.png", image, covered, found, image.shape)
        summary.update(missed=len(found), missed_overlap=missed_overlap)
        summary["files"] += ["missed.json", "missed.png"]
        how = "no pipeline ROI touches" if missed_overlap == 0 else \
            f"pipeline ROIs cover for at most {missed_overlap:.0%} of their area"
        echo(f"possibly missed cells: {len(found)} U-Net objects that {how} -> {out / 'missed.json'}")
    (out / "segment.json").write_text(json.dumps(summary, indent=1) + "\n")


# ---- where it helps the classifier: a crop channel and a report section -------------------------------------------
CHANNEL = "unet"
# the map is a probability already (0..1 on every recording): its windows are not standardised, so that "no cell
# here" stays 0 instead of becoming amplified noise
UNET_CROPS = {"caiman": CropSpec(50, ("mask", CHANNEL), binarize=0.2, image_norm="none"),
              "suite2p": CropSpec(64, ("mask", CHANNEL), binarize=0.0, image_norm="none")}


@functools.lru_cache(maxsize=2)
def bundled_unet(name=MODEL):
    """The loaded U-Net (once per process: the report and every crop batch share it)."""
    return Segmenter.load(name)


def probability_map(roiset):
    """The ``unet`` image: the bundled U-Net's neuron probability for every pixel of the recording's mean image."""
    seg = bundled_unet()
    if seg.image not in roiset.images:
        raise RoicurateError(f"the U-Net reads the '{seg.image}' image, which this recording does not have "
                             f"(it has: {', '.join(roiset.images) or 'none'})")
    return seg.probability(_check_image(roiset.images[seg.image], f"'{seg.image}' image"))


class MissedCells:
    """Report section: U-Net objects that no pipeline ROI touches."""

    name = "unet-missed-cells"
    title = "Possibly missed cells (U-Net)"

    def render(self, roiset, curation, folder):
        from roicurate.report import ReportSection, pipeline_name
        seg = bundled_unet()
        if seg.image not in roiset.images:
            return ReportSection(self.title, f"<p class='note'>Not run: this recording has no {seg.image} image, which "
                                             f"the U-Net ({seg.card['name']}) looks for cells in.</p>")
        prob = summary_image(roiset, CHANNEL)          # the crop channel's map when a classifier already used it
        regions = ev.regions_from_labels(seg.objects(prob))
        found, covered = missed_objects(regions, prob, roiset)
        missed_figure(folder / "missed.png", roiset.images[seg.image], covered, found, roiset.shape)
        pipe = pipeline_name(roiset)
        rows = "".join(f"<tr><td>{m['id']}</td><td>{m['centre'][0]:.0f}, {m['centre'][1]:.0f}</td><td>{m['area']}</td>"
                       f"<td>{m['mean_probability']:.2f}</td></tr>" for m in found)
        table = (f"<details><summary>List the {len(found)} (click)</summary><table><tr><th>object</th><th>centre "
                 f"(y, x)</th><th>pixels</th><th>mean P(neuron)</th></tr>{rows}</table></details>") if found else ""
        text = (f"<p><b>{len(found)}</b> of the {len(regions)} cell bodies the U-Net <code>{seg.card['name']}</code> "
                f"finds in the {seg.image} image lie outside every {pipe} ROI (red outlines; {pipe}'s ROIs in cyan, "
                f"accepted or not). These are candidate cells the pipeline did not segment: roicurate can only "
                f"accept or reject ROIs, so a cell listed here is in no curated output. Check them in the image; "
                f"re-running the pipeline with other settings, or drawing them by hand, are the ways to add them. "
                f"Treat the list as hints, not a count: on the real labelled Neurofinder recordings a third to "
                f"nine tenths of such objects were labelled cells, depending on the lab (manual: Segmentation; "
                f"<code>roicurate segment PATH --out DIR --missed</code> writes the list as missed.json, with "
                f"every object's pixels).</p>")
        alt = f"{len(found)} possibly missed cells outlined on the {seg.image} image"
        return ReportSection(self.title, text + table, [("missed.png", alt)])


# ---- hooks -----------------------------------------------------------------------------------------------------
@hookimpl
def register_models(register):
    card_path = WEIGHTS / f"{MODEL}.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        register(ModelSpec(MODEL, "any", unet, classes=tuple(card["classes"]), threshold=float(card["threshold"]),
                           weights=str(card_path.with_suffix(".safetensors")), build_kwargs=card.get("build_kwargs", {}),
                           positive_class="neuron", task="segmentation",
                           description="U-Net on the mean image, per-pixel (roicurate segment; not a crop classifier)"))
    from roicurate_plugins.nets import cnn2
    register(ModelSpec("cnn2-unet", "caiman", cnn2, crop=UNET_CROPS["caiman"],
                       description="cnn2 on the mask and the U-Net probability map (50x50, CaImAn)"))
    register(ModelSpec("cnn2-unet-64", "suite2p", cnn2, crop=UNET_CROPS["suite2p"],
                       description="cnn2 on the mask and the U-Net probability map (64x64, Suite2p)"))


@hookimpl
def register_images(register):
    register(DerivedImage(CHANNEL, probability_map, f"{MODEL}'s neuron probability map of the mean image"))


@hookimpl
def register_report_sections(register):
    register(MissedCells())


@hookimpl
def register_commands(cli):
    cli.add_command(segment)
