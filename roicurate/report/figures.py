"""The figures of a report: score histogram, outlines on the field of view, curves against labels, one row of
panels per explained ROI (model input, image, saliency, occlusion) and the per-class galleries.

Each function draws one PNG and returns its path; ``page.py`` puts them on the page. Every roicurate figure (these,
the evaluation's, plugins') is made with the two helpers ``figure`` and ``save``: matplotlib's object API, no
pyplot, no global backend change.
"""
import contextlib
import time

import numpy as np

from roicurate.crops import CropSpec, make_crops
from roicurate.evaluate import pr_auc, pr_curve, prf, roc_auc, roc_curve
from roicurate.scale import source_binarize


def figure(w, h):
    """A ``w`` x ``h`` inch matplotlib Figure on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi=100, tight=True):
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None, facecolor="white")
    return path


ACCEPTED, REJECTED = "#3ee03e", "#ff33cc"         # green / magenta: told apart with red-green colour blindness
FOV_IMAGES = ("mean", "mean_enhanced", "corr", "max")


def pipeline_name(roiset):
    """The display name of the pipeline that found ``roiset``'s ROIs (e.g. "Suite2p"), else "the pipeline"."""
    from roicurate.plugins import sources
    src = sources().get(roiset.pipeline)
    return src.display_name if src is not None and src.display_name else "the pipeline"


def accepted_classes_label(u):
    """What the threshold is compared with: the positive class, plus the classes accepted too (--also-accept)."""
    return " + ".join(u.curation.accepted_classes)


def _pname(u):
    return u.curation.classes[u.curation.positive]


def outline_pixels(roiset, binarize=0.0):
    """(roi, y, x) of every boundary pixel: a mask pixel with a 4-neighbour outside its own ROI's mask.
    Vectorised over all ROIs (sorted pixel keys + searchsorted), so overlapping ROIs each keep their outline."""
    keep = roiset.binary(binarize)
    Ly, Lx = roiset.shape
    keys = np.unique((roiset.roi_index[keep].astype(np.int64) * Ly + roiset.y[keep]) * Lx + roiset.x[keep])
    roi, rest = np.divmod(keys, Ly * Lx)
    y, x = np.divmod(rest, Lx)
    edge = np.zeros(len(keys), bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < Ly) & (nx >= 0) & (nx < Lx)
        nkey = (roi * Ly + ny) * Lx + nx
        pos = np.minimum(np.searchsorted(keys, nkey), max(len(keys) - 1, 0))
        edge |= ~(inside & (keys[pos] == nkey))
    return roi[edge], y[edge], x[edge]


def histogram(u, path):
    s, thr = u.curation.accept_score, u.curation.threshold
    fig = figure(7, 3)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 41)
    if u.before is not None:
        b, pipe = np.asarray(u.before, bool), pipeline_name(u.roiset)
        ax.hist([s[b], s[~b]], bins, stacked=True, color=["#4c72b0", "#c0c0c0"],
                label=[f"{pipe} had accepted ({b.sum()})", f"{pipe} had rejected ({(~b).sum()})"])
    else:
        ax.hist(s, bins, color="#4c72b0", label=f"all ROIs ({len(s)})")
    ax.axvline(thr, color="k", ls="--", lw=1.5)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title(f"threshold {thr:.3f}:  ← rejected | accepted →", fontsize=9)
    ax.set_xlabel(f"P({accepted_classes_label(u)}) from {u.classifier.name}")
    ax.set_ylabel("number of ROIs (log scale)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return save(fig, path)


def _fov_image(rs):
    name = next((n for n in FOV_IMAGES if n in rs.images), None)
    if name is None:
        return np.zeros(rs.shape), "a blank frame (this output has no summary image)"
    img = np.asarray(rs.images[name], np.float64)
    lo, hi = np.nanpercentile(img, [1, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1), f"the {name} image"


def fov(u, path, numbered=()):
    rs, acc = u.roiset, np.asarray(u.curation.accepted, bool)
    img, what = _fov_image(rs)
    roi, y, x = outline_pixels(rs, source_binarize(rs))
    rgba = np.zeros(rs.shape + (4,))
    from matplotlib.colors import to_rgba
    for sel, colour in ((~acc[roi], REJECTED), (acc[roi], ACCEPTED)):   # accepted drawn last, on top
        rgba[y[sel], x[sel]] = to_rgba(colour)
    Ly, Lx = rs.shape
    w = float(np.clip(Lx / 60, 6, 10))
    fig = figure(w, w * Ly / Lx + 0.4)
    ax = fig.add_axes([0, 0, 1, 1 - 0.4 / (w * Ly / Lx + 0.4)])
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(rgba, interpolation="nearest")
    from matplotlib.patches import Patch
    from matplotlib.patheffects import withStroke
    cy = rs.centroids()
    for i in numbered:
        ax.text(cy[i, 1], cy[i, 0], str(i), color="yellow", fontsize=7, ha="center", va="center",
                path_effects=[withStroke(linewidth=2, foreground="black")])
    ax.set_axis_off()
    ax.legend(handles=[Patch(color=ACCEPTED, label=f"accepted ({acc.sum()})"),
                       Patch(color=REJECTED, label=f"rejected ({(~acc).sum()})")],
              loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=9, frameon=False)
    save(fig, path, dpi=120)
    return what


def roc_pr_lines(ax_roc, ax_pr, series):
    """Draw ROC and precision-recall curves onto two axes, the one way every roicurate figure draws them: each of
    ``series`` (dicts: ``roc`` (fpr, tpr), ``pr`` (precision, recall) as ``evaluate.roc_curve`` / ``pr_curve`` give
    them, ``roc_label``, ``pr_label``, optional ``lw`` and ``color``) as a line on the ROC axes and a step
    function on the PR axes (precision holds until the next threshold), then the chance diagonal of ROC."""
    for c in series:
        style = {k: c[k] for k in ("lw", "color") if k in c}
        fpr, tpr = c["roc"]
        ax_roc.plot(fpr, tpr, label=c["roc_label"], **style)
        p, r = c["pr"]
        ax_pr.step(np.r_[0, r], np.r_[p[:1] if len(p) else [1.0], p], where="pre", label=c["pr_label"], **style)
    ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")


def curves(u, path):
    """ROC, precision-recall and the confusion matrix at the threshold, for ROIs with a known label."""
    known = u.labels >= 0
    y, s = u.labels[known] > 0, u.curation.score[known]
    acc = np.asarray(u.curation.accepted, bool)[known]
    fig = figure(12, 3.6)
    a1, a2, a3 = fig.subplots(1, 3)
    roc_pr_lines(a1, a2, [{"roc": roc_curve(y, s)[:2], "pr": pr_curve(y, s)[:2], "color": "#4c72b0",
                           "roc_label": f"{u.classifier.name} (AUC {roc_auc(y, s):.3f})",
                           "pr_label": f"{u.classifier.name} (AP {pr_auc(y, s):.3f})"}])
    for ax, (mx, my) in ((a1, ("fpr", "recall")), (a2, ("recall", "precision"))):
        pts = [(acc, "k", "o", f"roicurate at threshold {u.curation.threshold:.3f}")]
        if u.before is not None:
            pts.append((np.asarray(u.before, bool)[known], "#dd8452", "s", f"{pipeline_name(u.roiset)}'s own verdict"))
        for verdict, c, mk, lab in pts:
            m = prf(y, verdict)
            val = {"fpr": m["fp"] / max(m["fp"] + m["tn"], 1), "recall": m["recall"], "precision": m["precision"]}
            ax.plot(val[mx], val[my], mk, color=c, ms=7, label=lab)
    a1.set(xlabel="false-positive rate (non-cells accepted)", ylabel="recall (cells accepted)", title="ROC")
    a2.set(xlabel="recall (cells accepted)", ylabel="precision (accepted that are cells)", title="precision-recall",
           ylim=(0, 1.02))
    for ax in (a1, a2):
        ax.legend(fontsize=7, loc="lower right")
    m = prf(y, acc)
    cm = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]])
    a3.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        a3.text(j, i, str(v), ha="center", va="center", fontsize=12, color="white" if v > cm.max() / 2 else "black")
    a3.set_xticks([0, 1], ["accepted", "rejected"])
    a3.set_yticks([0, 1], ["labelled cell", "labelled not cell"])
    a3.set_title(f"at threshold {u.curation.threshold:.3f}")
    fig.tight_layout()
    return save(fig, path)


def _outline(mask):
    return mask > (0.2 * mask.max() if mask.max() > 0 else 1)


def outline_segments(mask):
    """(n, 2, 2) line segments (x, y) along the pixel edges between a binary mask and its outside: the exact outline
    of the pixels, drawn as one LineCollection (cheaper than a contour, and it never cuts a pixel)."""
    m = np.pad(np.asarray(mask, bool), 1)
    segs = []
    for dy, dx in ((1, 0), (0, 1)):                     # edges between rows, then between columns
        a, b = m[dy:, dx:], m[:m.shape[0] - dy, :m.shape[1] - dx]
        ys, xs = np.nonzero(a != b)
        y, x = ys - 1 + 0.5 * dy, xs - 1 + 0.5 * dx    # the shared edge's centre in the unpadded crop
        if dy:
            segs.append(np.stack([np.stack([x - 0.5, y], 1), np.stack([x + 0.5, y], 1)], 1))
        else:
            segs.append(np.stack([np.stack([x, y - 0.5], 1), np.stack([x, y + 0.5], 1)], 1))
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


class _Panels:
    """One figure for every ROI panel of a unit: its axes, images, outlines and colour bar are made once and
    updated per ROI (building a matplotlib figure cost more than drawing it)."""

    def __init__(self, u, ex, context):
        from matplotlib.collections import LineCollection
        spec = u.classifier.crop
        self.mask_in = list(spec.channels).index("mask") if "mask" in spec.channels else None
        # (title, colour map, which outline: "crop", "context" or None)
        self.panels = [(f"model input: {c}", "gray", None if c == "mask" else "crop") for c in spec.channels]
        if context.get("image") is not None:
            self.panels.append((f"{context['image_name']} image (context)", "gray", "context"))
        if ex["saliency"] is not None:
            self.panels.append(("saliency (guided backprop)", "magma", "crop"))
        self.panels.append((f"occlusion: drop in P({_pname(u)})", "RdBu_r", "crop"))
        width = 1.75 * len(self.panels) + 0.6
        self.fig = figure(width, 2.0)
        S = spec.size
        self.images, self.lines, self.empty_note = [], [], None
        for j, (title, cmap, outline) in enumerate(self.panels):
            ax = self.fig.add_subplot(1, len(self.panels), j + 1)
            im = ax.imshow(np.zeros((S, S)), cmap=cmap, interpolation="nearest")
            self.images.append(im)
            lc = None
            if outline:
                lc = LineCollection([], colors="cyan", linewidths=0.7)
                ax.add_collection(lc)
            self.lines.append(lc)
            ax.set_xlim(-0.5, S - 0.5), ax.set_ylim(S - 0.5, -0.5)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
            if cmap == "RdBu_r":
                cb = self.fig.colorbar(im, cax=ax.inset_axes([1.04, 0, 0.06, 1]))
                cb.ax.tick_params(labelsize=6)
            if cmap == "magma":
                self.empty_note = ax.text(0.5, 0.5, f"no evidence for\n'{_pname(u)}' anywhere", transform=ax.transAxes,
                                          color="white", ha="center", va="center", fontsize=7, visible=False)
        self.fig.subplots_adjust(wspace=0.1, left=0.01, right=1 - 0.62 / width, top=0.9, bottom=0.01)  # colour bar

    def draw(self, ex, k, context, path):
        crop = ex["crops"][k]
        crop_outline = _outline(crop[self.mask_in] if self.mask_in is not None else context["mask"][k])
        data = list(crop)
        if context.get("image") is not None:
            data.append(context["image"][k])
        if ex["saliency"] is not None:
            data.append(ex["saliency"][k])
        data.append(ex["occlusion"][k])
        for (title, cmap, outline), im, lc, img in zip(self.panels, self.images, self.lines, data):
            im.set_data(img)
            if cmap == "RdBu_r":
                lim = max(float(np.abs(img).max()), 0.02)
                im.set_clim(-lim, lim)
            elif cmap == "magma":
                im.set_clim(0, float(img.max()) or 1)
                self.empty_note.set_visible(not img.any())
            else:
                lo, hi = float(np.min(img)), float(np.max(img))
                im.set_clim(lo, hi if hi > lo else lo + 1)
            if lc is not None:
                lc.set_segments(outline_segments(crop_outline if outline == "crop" else _outline(context["mask"][k])))
        return save(self.fig, path, dpi=100, tight=False)   # a fixed layout: half the drawing time of "tight"


def roi_panel(u, ex, k, path, context):
    """Model input, the image around the ROI (when there is one), saliency and occlusion for ROI ``ex['index'][k]``;
    ROI outline on every panel. ``context`` (from :func:`context_windows`) keeps the figure for the next ROI."""
    if context.get("figure") is None:
        context["figure"] = _Panels(u, ex, context)
    return context["figure"].draw(ex, k, context, path)


def context_windows(u, index):
    """The summary image and a binary mask around each ROI, centred like a default crop: what a person would
    look at in the pipeline's GUI (the model may not see the image at all)."""
    rs, S = u.roiset, u.classifier.crop.size
    mask = make_crops(rs, CropSpec(S, ("mask",), binarize=source_binarize(rs)), index)[:, 0]
    name = next((n for n in FOV_IMAGES if n in rs.images), None)
    image = None if name is None else make_crops(rs, CropSpec(S, (name,), image_norm="none"), index)[:, 0]
    return {"mask": mask, "image": image, "image_name": name}


def class_gallery(u, index, k, path, columns=8):
    """The model's input for the ROIs in ``index`` (members of class ``k``), with ROI number, P(class) and the
    verdict (title colour) above each."""
    crops = make_crops(u.roiset, u.classifier.crop, index)[:, 0]
    cur = u.curation
    rows = -(-len(index) // columns)
    fig = figure(1.3 * columns, 1.45 * rows)
    for j, i in enumerate(index):
        ax = fig.add_subplot(rows, columns, j + 1)
        ax.imshow(crops[j], cmap="gray", interpolation="nearest")
        ax.set_title(f"{i}: {cur.probabilities[i, k]:.2f}", fontsize=7,
                     color=ACCEPTED if cur.accepted[i] else REJECTED)
        ax.set_xticks([]), ax.set_yticks([])
    return save(fig, path, dpi=90)


@contextlib.contextmanager
def timed(timings, step):
    """Add the wall-clock and CPU seconds the block takes to ``timings[step]`` (when ``timings`` is a dict): the
    breakdown that benchmarks/report_speed.py prints."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        if timings is not None:
            wall, cpu = timings.get(step, (0.0, 0.0))
            timings[step] = (wall + time.perf_counter() - t0, cpu + time.process_time() - c0)


def _progress(total, desc, enabled):
    from roicurate.progress import progress
    return progress(total, desc, enabled=enabled)


def explain_panels(u, index, folder, occ, progress=True, timings=None):
    """Explain the ROIs in ``index`` and draw one PNG each into ``folder``: ({roi: file name}, explain's dict)."""
    from roicurate.explain import explain
    folder.mkdir(parents=True, exist_ok=True)
    with timed(timings, "explain: saliency + occlusion"):
        bar = _progress(len(index), f"explaining {folder.name}", progress)
        ex = explain(u.classifier, u.roiset, index, progress=bar.update, **occ)
        bar.close()
    with timed(timings, "explain: one figure per ROI"):
        context = context_windows(u, index)
        bar = _progress(len(index), f"drawing {folder.name}", progress)
        panels = {}
        for k, i in enumerate(index):
            panels[int(i)] = roi_panel(u, ex, k, folder / f"roi{i}.png", context).name
            bar.update(1)
        bar.close()
    return panels, ex
