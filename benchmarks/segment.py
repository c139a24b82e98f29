"""The README table of `roicurate segment`: the bundled U-Net on the held-out simulated recordings (never seen in
training, checkpoint or threshold choice), with and without 8-fold test-time augmentation, next to the trivial
baseline (threshold the normalised mean image; threshold and minimum size chosen on the same validation
recordings as the model's), and how many of the U-Net's 'possibly missed cells' are real somata.

    python benchmarks/segment.py [--model unet-mean] [--threads 2] [--repeat 3] [--split test|val]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splits import DATA  # noqa: E402
from train_unet import SPLIT, images  # noqa: E402

from roicurate.scale import source_binarize  # noqa: E402
from roicurate.plugins import sources  # noqa: E402
from roicurate_plugins.unet import scoring as ev  # noqa: E402
from roicurate_plugins.unet import missed_objects  # noqa: E402
from roicurate_plugins.unet.model import Segmenter, normalise  # noqa: E402



def pipeline_output(name):
    """(source name, path) of the pipeline run behind a simulated image ('s2p_sim2/plane1', 'caiman_sim3')."""
    rec, _, plane = name.partition("/")
    if rec.startswith("s2p_sim"):
        return "suite2p", DATA / "sim" / rec / "suite2p" / (plane or "plane0")
    return "caiman", DATA / "sim" / rec / "caiman" / "cnmf_refit_evaluated.hdf5"


def timed(f, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def row(label, s, sec="–"):
    return (f"| {label} | {s['n_truth']} | {s['n_pred']} | {s['precision']:.3f} | {s['recall']:.3f} | **{s['f1']:.3f}** "
            f"| {s['inclusion']:.3f} | {s['exclusion']:.3f} | {s['pixel_iou']:.3f} | {sec} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="unet-mean")
    ap.add_argument("--split", default="test", choices=("test", "val"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="time each image this many times (median)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    seg = Segmenter.load(a.model)
    base = seg.card["baseline"]
    methods = {"U-Net": [], "U-Net + 8-fold TTA": [], "threshold the mean image (baseline)": []}
    seconds = {k: [] for k in methods}
    per_image = []
    for rec in SPLIT[a.split]:
        for name, img, truth in images(rec, seg.image):
            for label, tta in (("U-Net", False), ("U-Net + 8-fold TTA", True)):
                labels, sec = timed(lambda: seg.objects(seg.probability(img, tta)), a.repeat)
                methods[label].append(ev.score(truth, ev.regions_from_labels(labels), img.shape))
                seconds[label].append(sec)
            labels, sec = timed(lambda: ev.label_objects(normalise(img, *seg.percentiles) >= base["threshold"],
                                                         base["min_size"]), a.repeat)
            methods["threshold the mean image (baseline)"].append(ev.score(truth, ev.regions_from_labels(labels),
                                                                           img.shape))
            seconds["threshold the mean image (baseline)"].append(sec)
            per_image.append(name)
    print(f"model {seg.card['name']} (sha256 {seg.card['sha256'][:12]}), threshold {seg.threshold:.2f}, "
          f"min size {seg.min_size} px; baseline threshold {base['threshold']:.2f} (normalised), min size "
          f"{base['min_size']} px; {a.split} recordings: {', '.join(per_image)}; torch {torch.__version__}, "
          f"{a.threads} threads\n")
    print("| method | recording | cells | objects | precision | recall | F1 | inclusion | exclusion | pixel IoU "
          "| s / image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, scores in methods.items():
        for name, s, sec in zip(per_image, scores, seconds[label]):
            print(row(f"{label} | {name}", s, f"{sec:.3f}"))
        print(row(f"{label} | **pooled**", ev.pooled(scores), f"{np.mean(seconds[label]):.3f}"))

    print("\nPossibly missed cells (`--missed`: U-Net objects no pipeline ROI touches), against the truth:\n")
    print("| recording | pipeline ROIs | somata without a pipeline ROI (centre within 5 px) | U-Net objects "
          "| possibly missed | of which real somata | of which somata without a pipeline ROI |")
    print("|---|---|---|---|---|---|---|")
    for name, truth in ((n, t) for rec in SPLIT[a.split] for n, _, t in images(rec, seg.image)):
        src_name, path = pipeline_output(name)
        rs = sources()[src_name].read(path)
        prob = seg.probability(rs.images[seg.image])
        regions = ev.regions_from_labels(seg.objects(prob))
        found, _ = missed_objects(regions, prob, rs)
        keep = rs.binary(source_binarize(rs))
        rois = [np.stack([rs.y[i:j][keep[i:j]], rs.x[i:j][keep[i:j]]], 1) for i, j in zip(rs.indptr[:-1], rs.indptr[1:])]
        no_roi = ev.neurofinder_match(truth, rois) < 0
        hit = ev.neurofinder_match(truth, [np.asarray(m["coordinates"]) for m in found]) if found else \
            np.full(len(truth), -1)
        print(f"| {name} ({src_name}) | {len(rs)} | {int(no_roi.sum())} of {len(truth)} | {len(regions)} | "
              f"{len(found)} | {int((hit >= 0).sum())} | {int(((hit >= 0) & no_roi).sum())} |")


if __name__ == "__main__":
    main()
