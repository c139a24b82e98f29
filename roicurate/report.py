"""One HTML page a scientist can read without the docs: what the classifier kept and dropped, and why.

``write_report(out, units)`` writes ``out/index.html`` and, beside it, one folder of PNG figures per unit
(plane or CaImAn file). Figures are drawn with matplotlib's object API (no pyplot, no global backend change);
the page itself has no scripts and links nothing outside ``out``.
"""
import contextlib
import copy
import functools
import html
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roicurate import RoicurateError, __version__
from roicurate.crops import CropSpec, make_crops
from roicurate.evaluate import pr_auc, pr_curve, prf, roc_auc, roc_curve
from roicurate.figures import figure, save
from roicurate.labels import match_binarize
from roicurate.rois import RoiSet

_e = functools.partial(html.escape, quote=False)     # text, never attribute values
ACCEPTED, REJECTED = "#3ee03e", "#ff33cc"         # green / magenta: told apart with red-green colour blindness
FOV_IMAGES = ("mean", "mean_enhanced", "corr", "max")


@dataclass
class ReportSection:
    """What a ``register_report_sections`` plugin returns for one plane: a title, an HTML fragment (the plugin
    escapes its own text) and the PNG files it wrote into the plane's figure folder, shown below the fragment."""

    title: str
    html: str
    figures: list = field(default_factory=list)     # [(file name in the folder, alt text)]


@dataclass
class ReportUnit:
    """One plane / file of a report: its ROIs, the verdict, the model, and what is known besides."""

    name: str                          # what the section is called (the plane folder or file path)
    roiset: RoiSet
    curation: object                   # roicurate.curation.Curation
    classifier: object                 # roicurate.models.Classifier
    before: np.ndarray | None = None   # the pipeline's own verdict before roicurate (None: unknown)
    labels: np.ndarray | None = None   # 1 cell, 0 not a cell, -1 unknown
    label_source: str | None = None
    notes: list = field(default_factory=list)

    @classmethod
    def build(cls, name, roiset, curation, classifier, before=None, labels=None, label_source=None, notes=()):
        """Fill in ``before`` (default: the RoiSet's pipeline verdict) and, unless given, the labels
        (from the dataset's labels.json / roicurate_labels.json)."""
        labels, source = (labels, label_source) if labels is not None else labels_for(roiset)
        return cls(str(name), roiset, curation, classifier, roiset.pipeline_accepted if before is None else before,
                   labels, source, list(notes))


def labels_for(roiset):
    """(labels or None, where they came from): labels the RoiSet carries, else roicurate's / the dataset's
    label files. The pipeline's own verdict is never a label here: the report compares against it separately."""
    if roiset.labels is not None:
        labels = np.asarray(roiset.labels)
        if roiset.origin.get("label_classes") is not None:     # class labels: the positive class is the cell
            from roicurate.labels import cell_labels
            labels = np.where(labels >= 0, cell_labels(roiset), -1)
        return labels, roiset.origin.get("label_source") or "labels"
    from roicurate.labels import attach_labels
    probe = copy.copy(roiset)
    probe.origin = dict(roiset.origin)
    try:
        attach_labels(probe, use_pipeline=False)
    except (RoicurateError, OSError, ValueError, KeyError) as e:
        return None, f"labels not used: {e}"
    return probe.labels, probe.origin.get("label_source")


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


def check_can_write(out):
    """Raise RoicurateError now (before anything else is written) if a report could not be written to ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RoicurateError(f"{out}: exists and is not a folder")
    parent = next(p for p in [out, *out.parents] if p.exists())
    from roicurate.sources import check_dir_writable
    check_dir_writable(parent)


# ---- figures ---------------------------------------------------------------------------------------------
def _pname(u):
    return u.curation.classes[u.curation.positive]


def _aname(u):
    """What the threshold is compared with: the positive class, plus the classes accepted too (--also-accept)."""
    return " + ".join(u.curation.accepted_classes)


def histogram(u, path):
    s, thr = u.curation.accept_score, u.curation.threshold
    fig = figure(7, 3)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 41)
    if u.before is not None:
        b = np.asarray(u.before, bool)
        ax.hist([s[b], s[~b]], bins, stacked=True, color=["#4c72b0", "#c0c0c0"],
                label=[f"{_pipe(u)} had accepted ({b.sum()})", f"{_pipe(u)} had rejected ({(~b).sum()})"])
    else:
        ax.hist(s, bins, color="#4c72b0", label=f"all ROIs ({len(s)})")
    ax.axvline(thr, color="k", ls="--", lw=1.5)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title(f"threshold {thr:.3f}:  ← rejected | accepted →", fontsize=9)
    ax.set_xlabel(f"P({_aname(u)}) from {u.classifier.name}")
    ax.set_ylabel("number of ROIs (log scale)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return save(fig, path)


def _pipe(u):
    return pipeline_name(u.roiset)


def pipeline_name(roiset):
    from roicurate.plugins import sources
    src = sources().get(roiset.pipeline)
    return src.display_name if src is not None and src.display_name else "the pipeline"


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
    roi, y, x = outline_pixels(rs, match_binarize(rs))
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


def curves(u, path):
    """ROC, precision-recall and the confusion matrix at the threshold, for ROIs with a known label."""
    known = u.labels >= 0
    y, s = u.labels[known] > 0, u.curation.score[known]
    acc = np.asarray(u.curation.accepted, bool)[known]
    fig = figure(12, 3.6)
    a1, a2, a3 = fig.subplots(1, 3)
    fpr, tpr, _ = roc_curve(y, s)
    a1.plot(fpr, tpr, color="#4c72b0", label=f"{u.classifier.name} (AUC {roc_auc(y, s):.3f})")
    p, r, _ = pr_curve(y, s)
    a2.plot(np.r_[0, r], np.r_[p[0] if len(p) else 1, p], color="#4c72b0",
            label=f"{u.classifier.name} (AP {pr_auc(y, s):.3f})")
    for ax, (mx, my) in ((a1, ("fpr", "recall")), (a2, ("recall", "precision"))):
        pts = [(acc, "k", "o", f"roicurate at threshold {u.curation.threshold:.3f}")]
        if u.before is not None:
            pts.append((np.asarray(u.before, bool)[known], "#dd8452", "s", f"{_pipe(u)}'s own verdict"))
        for verdict, c, mk, lab in pts:
            m = prf(y, verdict)
            val = {"fpr": m["fp"] / max(m["fp"] + m["tn"], 1), "recall": m["recall"], "precision": m["precision"]}
            ax.plot(val[mx], val[my], mk, color=c, ms=7, label=lab)
    a1.plot([0, 1], [0, 1], ":", color="gray")
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
    mask = make_crops(rs, CropSpec(S, ("mask",), binarize=match_binarize(rs)), index)[:, 0]
    name = next((n for n in FOV_IMAGES if n in rs.images), None)
    image = None if name is None else make_crops(rs, CropSpec(S, (name,), image_norm="none"), index)[:, 0]
    return {"mask": mask, "image": image, "image_name": name}


# ---- the page --------------------------------------------------------------------------------------------
def _slugs(units):
    seen, out = {}, []
    for u in units:
        p = Path(u.name)
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.stem if p.suffix else p.name) or "unit"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


@contextlib.contextmanager
def _timed(timings, step):
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


def _examples(cur, n_explain, n_examples):
    s, acc = cur.accept_score, np.asarray(cur.accepted, bool)
    gallery = cur.uncertain[:n_explain]
    order = np.argsort(-s, kind="stable")
    sure_acc = order[acc[order]][:n_examples]
    sure_rej = order[~acc[order]][::-1][:n_examples]
    union = list(dict.fromkeys(int(i) for i in np.concatenate([gallery, sure_acc, sure_rej])))
    return gallery, sure_acc, sure_rej, np.asarray(union, np.int64)


def _verdict(flag):
    return "accepted" if flag else "rejected"


def _caption(u, i):
    cur = u.curation
    bits = [f"<b>ROI {i}</b>", f"P({_aname(u)}) = {cur.accept_score[i]:.3f}",
            f"<span class='{_verdict(cur.accepted[i])}'>{_verdict(cur.accepted[i])}</span>"]
    if u.before is not None:
        same = bool(u.before[i]) == bool(cur.accepted[i])
        bits.append(f"{_pipe(u)} had {_verdict(u.before[i])}" + ("" if same else " <b>(changed)</b>"))
    if len(cur.classes) > 2:
        k = int(cur.probabilities[i].argmax())
        bits.append(f"most probable: {_e(cur.classes[k])} ({cur.probabilities[i, k]:.2f})")
    if u.labels is not None and u.labels[i] >= 0:
        bits.append("label: " + ("cell" if u.labels[i] > 0 else "not a cell"))
    return " · ".join(bits)


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


def class_section(u, slug, folder, per_class=24):
    """Models with more than two classes: the ROIs per class (each counted under its most probable class), how
    many of them were accepted, and a gallery per class (its most probable members first)."""
    cur = u.curation
    top = cur.probabilities.argmax(1) if len(cur.probabilities) else np.zeros(0, np.int64)
    acc = np.asarray(cur.accepted, bool)
    rows = "".join(f"<tr><th>{_e(c)}</th><td>{int((top == k).sum())}</td><td>{int((acc & (top == k)).sum())}</td>"
                   f"</tr>" for k, c in enumerate(cur.classes))
    parts = [f"<h3>Classes</h3><p>{u.classifier.name} gives each ROI a probability per class; here every ROI counts "
             f"under its most probable class. Accepted: P({_e(_aname(u))}) &ge; {cur.threshold:.3f}.</p>"
             f"<table><tr><th>class</th><th>ROIs</th><th>accepted</th></tr>{rows}</table>"]
    for k, c in enumerate(cur.classes):
        members = np.flatnonzero(top == k)
        shown = members[np.argsort(-cur.probabilities[members, k], kind="stable")][:per_class]
        if not len(shown):
            parts.append(f"<h4>{_e(c)}</h4><p>no ROI has this as its most probable class</p>")
            continue
        class_gallery(u, shown, k, folder / f"class{k}.png")
        more = f" (the {len(shown)} most probable shown)" if len(shown) < len(members) else ""
        parts.append(f"<h4>{_e(c)}: {len(members)} ROIs{more}</h4><p>Model input; above each: ROI number and "
                     f"P({_e(c)}), green if accepted, magenta if rejected.</p>"
                     f"<img src='{slug}/class{k}.png' alt='ROIs most probably {_e(c)}'>")
    return "".join(parts)


def _gallery(u, slug, idx, panels, empty="none"):
    items = "".join(f"<figure><figcaption>{_caption(u, int(i))}</figcaption>"
                    f"<img src='{slug}/{panels[int(i)]}' alt='explanation of ROI {int(i)}'></figure>" for i in idx)
    return items or f"<p>{empty}</p>"


def explain_panels(u, index, folder, occ, progress=True, timings=None):
    """Explain the ROIs in ``index`` and draw one PNG each into ``folder``: ({roi: file name}, explain's dict)."""
    from roicurate.explain import explain
    folder.mkdir(parents=True, exist_ok=True)
    with _timed(timings, "explain: saliency + occlusion"):
        bar = _progress(len(index), f"explaining {folder.name}", progress)
        ex = explain(u.classifier, u.roiset, index, progress=bar.update, **occ)
        bar.close()
    with _timed(timings, "explain: one figure per ROI"):
        context = context_windows(u, index)
        bar = _progress(len(index), f"drawing {folder.name}", progress)
        panels = {}
        for k, i in enumerate(index):
            panels[int(i)] = roi_panel(u, ex, k, folder / f"roi{i}.png", context).name
            bar.update(1)
        bar.close()
    return panels, ex


def _section(u, out, slug, n_explain, n_examples, occ, progress, timings=None):
    folder = out / slug
    rs, cur, clf = u.roiset, u.curation, u.classifier
    gallery, sure_acc, sure_rej, union = _examples(cur, n_explain, n_examples)
    panels, ex = explain_panels(u, union, folder, occ, progress, timings)
    with _timed(timings, "score histogram + field of view"):
        histogram(u, folder / "scores.png")
        fov_what = fov(u, folder / "fov.png", numbered=gallery[:30])
    n, acc = len(rs), np.asarray(cur.accepted, bool)
    e = _e
    rows = [("ROIs", n)]
    if u.before is not None:
        b = np.asarray(u.before, bool)
        rows += [(f"accepted by {_pipe(u)} (before)", f"{b.sum()} ({b.mean():.0%})")]
    rows += [("accepted by roicurate (after)", f"{acc.sum()} ({acc.mean():.0%})"),
             ("rejected by roicurate", f"{(~acc).sum()} ({(~acc).mean():.0%})")]
    if u.before is not None:
        rows += [(f"{_pipe(u)} accepted → roicurate rejected", int((b & ~acc).sum())),
                 (f"{_pipe(u)} rejected → roicurate accepted", int((~b & acc).sum()))]
    card = clf.card
    thr_note = card.get("threshold_rule", "")
    if abs(cur.threshold - clf.threshold) > 1e-12:
        thr_note = f"set by hand; the model's own threshold is {clf.threshold:.3f}"
    rows += [("model", f"{card['name']} ({card.get('arch', '?')}, sha256 {str(card.get('sha256', ''))[:12]})"),
             ("threshold", f"{cur.threshold:.3f}" + (f" ({thr_note})" if thr_note else "")),
             ("model input", f"{clf.crop.size}x{clf.crop.size} crop: {', '.join(clf.crop.channels)}")]
    table = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    notes = "".join(f"<p class='note'>{e(x)}</p>" for x in u.notes)
    if ex["saliency_error"]:
        notes += f"<p class='note'>Saliency not shown: {e(ex['saliency_error'])}</p>"
    parts = [f"<section id='{slug}'><h2>{e(u.name)}</h2>{notes}<table>{table}</table>",
             "<h3>Scores</h3><p>How sure the model is about each ROI. ROIs right of the dashed line are kept.</p>",
             f"<img src='{slug}/scores.png' alt='score histogram'>",
             f"<h3>Field of view</h3><p>Every ROI's outline on {e(fov_what)} ({rs.shape[0]} x {rs.shape[1]} "
             f"pixels), coloured by roicurate's verdict. Yellow numbers: the {min(30, len(gallery))} ROIs closest to "
             "the threshold (shown below).</p>",
             f"<img src='{slug}/fov.png' alt='field of view with ROI outlines'>"]
    with _timed(timings, "curves against labels, class galleries"):
        parts.append(_labels_html(u, slug, folder))
        if len(cur.classes) > 2:
            parts.append(class_section(u, slug, folder))
    if u.before is not None and (b & ~acc).any():
        dropped = ", ".join(str(i) for i in np.flatnonzero(b & ~acc))
        k = int((b & ~acc).sum())
        parts.append(f"<details><summary>The {k} ROI{'s' * (k != 1)} {_pipe(u)} had accepted and roicurate "
                     f"rejected (click to list)</summary><p>{dropped}</p></details>")
    with _timed(timings, "plugin sections (U-Net: possibly missed cells)"):
        parts.append(plugin_sections(u, slug, folder))
    which = f"all {n} ROIs" if len(gallery) == n else f"the {len(gallery)} ROIs nearest the threshold"
    parts += [f"<h3>Closest calls: {which}, closest to {cur.threshold:.3f} first</h3>"
              "<p>The ROIs the model was least sure about: the ones worth a human look.</p>",
              f"<div class='gallery'>{_gallery(u, slug, gallery, panels)}</div>",
              f"<h3>Confident accepts (highest P({_aname(u)}))</h3>",
              f"<div class='gallery'>{_gallery(u, slug, sure_acc, panels, 'none: every ROI was rejected')}</div>",
              f"<h3>Confident rejects (lowest P({_aname(u)}))</h3>",
              f"<div class='gallery'>{_gallery(u, slug, sure_rej, panels, 'none: every ROI was accepted')}</div>",
              "</section>"]
    toc = (f"<li><a href='#{slug}'>{e(u.name)}</a>: {n} ROIs, {acc.sum()} accepted, {(~acc).sum()} rejected"
           + (f" ({_pipe(u)} had accepted {int(np.sum(u.before))})" if u.before is not None else "") + "</li>")
    return "".join(parts), toc


def plugin_sections(u, slug, folder):
    """The sections plugins add (``register_report_sections``), in registration order. A section that cannot be
    drawn for this plane (a RoicurateError) becomes a one-line note instead of stopping the report."""
    from roicurate.plugins import report_sections
    parts = []
    for name, section in report_sections().items():
        try:
            got = section.render(u.roiset, u.curation, folder)
        except RoicurateError as e:
            parts.append(f"<h3>{_e(getattr(section, 'title', name))}</h3><p class='note'>Not shown: {_e(str(e))}</p>")
            continue
        if got is None:
            continue
        missing = [f for f, _ in got.figures if not (folder / f).is_file()]
        if missing:
            raise RoicurateError(f"report section '{name}' did not write {', '.join(missing)}")
        imgs = "".join(f"<img src='{slug}/{html.escape(f)}' alt='{html.escape(alt)}'>" for f, alt in got.figures)
        parts.append(f"<h3>{_e(got.title)}</h3>{got.html}{imgs}")
    return "".join(parts)


def _labels_html(u, slug, folder):
    if u.labels is None:
        why = f" ({_e(u.label_source)})" if u.label_source else ""
        return (f"<h3>Against labels</h3><p class='note'>No labels for these ROIs{why}, so no ROC/PR curves. "
                "For curves, label ROIs with <code>roicurate label</code> or run <code>roicurate report PATH --out DIR "
                "--truth regions.json</code> with ground-truth masks.</p>")
    lab = np.asarray(u.labels)
    known = lab >= 0
    if len(np.unique(lab[known] > 0)) < 2:
        return "<h3>Against labels</h3><p class='note'>The labels have a single class: no curves.</p>"
    curves(u, folder / "curves.png")
    y = lab[known] > 0
    rows = [("roicurate", prf(y, np.asarray(u.curation.accepted, bool)[known]))]
    if u.before is not None:
        rows.append((f"{_pipe(u)}'s own verdict", prf(y, np.asarray(u.before, bool)[known])))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
                   f"<td>{m['f1']:.3f}</td></tr>" for k, m in rows)
    return (f"<h3>Against labels</h3><p>{known.sum()} labelled ROIs ({y.sum()} cells) from "
            f"{_e(str(u.label_source))}.</p><table><tr><th></th><th>precision</th><th>recall</th>"
            f"<th>F1</th></tr>{body}</table>"
            f"<img src='{slug}/curves.png' alt='ROC, precision-recall, confusion matrix'>")


HOW_TO_READ = """<div class='how'><b>How to read this report.</b> roicurate gave every ROI a score, P(cell):
near 1 means the classifier thinks it is a cell body, near 0 that it is not. ROIs scoring at or above the
<i>threshold</i> are accepted (written back as cells), the rest are rejected. Each ROI's row of panels shows:
<ul><li><b>model input</b>: exactly what the classifier saw, the ROI centred and its neighbours removed;</li>
<li><b>image</b>: the recording's summary image around the ROI, for your own judgement (not always seen by the
model);</li><li><b>saliency</b> (guided backpropagation): bright pixels are those whose increase would most
raise P(cell);</li><li><b>occlusion</b>: how much P(cell) drops when a {window}x{window}-pixel patch centred on
that pixel is blanked. <span style='color:#b2182b'>Red</span> = that part of the ROI made the model say
<i>cell</i>; <span style='color:#2166ac'>blue</span> = it argued against.</li></ul>
The cyan line is the ROI's outline. ROI numbers are 0-based positions in the pipeline's ROI list
(Suite2p stat.npy, as in the Suite2p GUI; CaImAn estimates.A columns).</div>"""

CSS = """body{font-family:system-ui,sans-serif;max-width:1500px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
img{max-width:100%}.how{background:#f4f6fa;padding:.7em 1em;border-radius:6px;font-size:.92em}
.note{color:#8a5a00}.gallery{display:flex;flex-wrap:wrap;gap:.4em 1.2em}
.gallery figure{margin:.3em 0;width:600px;max-width:100%;border-top:1px solid #ddd}figcaption{font-size:.9em}
.how ul{margin:.3em 0}
.accepted{color:#1a8f1a;font-weight:bold}.rejected{color:#c0189a;font-weight:bold}section{margin-top:2em}"""


def write_report(out, units, n_explain=50, n_examples=4, window=5, stride=1, fill=0.0, progress=True,
                 title="roicurate report", timings=None):
    """Write ``out/index.html`` (+ one PNG folder per unit) and return its path.

    ``units``: ReportUnit objects or ``(name, roiset, curation, classifier)`` tuples. Explains the
    ``n_explain`` ROIs closest to the threshold and the ``n_examples`` most confident accepts and rejects.
    ``timings``: a dict that gets the seconds spent per step, added up over the units."""
    import datetime
    check_can_write(out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    units = [u if isinstance(u, ReportUnit) else ReportUnit.build(*u) for u in units]
    # the outline's share: hiding the mask only keeps occlusion cheap for models with an image channel (which no
    # window leaves unchanged); `roicurate explain` hides every channel
    occ = {"window": window, "stride": stride, "fill": fill, "occlude": ("mask",)}
    sections, toc = [], []
    for u, slug in zip(units, _slugs(units)):
        body, line = _section(u, out, slug, n_explain, n_examples, occ, progress, timings)
        sections.append(body)
        toc.append(line)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"
            f"<p>Written by roicurate {__version__} on {when}.</p>{HOW_TO_READ.format(window=window)}"
            f"<ul>{''.join(toc)}</ul>{''.join(sections)}</body></html>\n")
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"

