"""One HTML page a scientist can read without the docs: what the classifier kept and dropped, and why.

``write_report(out, units)`` writes ``out/index.html`` and, beside it, one folder of PNG figures per unit
(plane or CaImAn file). Figures are drawn with matplotlib's object API (no pyplot, no global backend change);
the page itself has no scripts and links nothing outside ``out``.
"""
import copy
import functools
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError, __version__
from roicurate.evaluate import prf
from roicurate.report.figures import (accepted_classes_label, class_gallery, curves, explain_panels, fov, histogram,
                                      pipeline_name, timed)
from roicurate.rois import RoiSet

_e = functools.partial(html.escape, quote=False)     # text, never attribute values


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


def check_can_write(out):
    """Raise RoicurateError now (before anything else is written) if a report could not be written to ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RoicurateError(f"{out}: exists and is not a folder")
    parent = next(p for p in [out, *out.parents] if p.exists())
    from roicurate.sources import check_dir_writable
    check_dir_writable(parent)


# ---- the page --------------------------------------------------------------------------------------------
def unit_slugs(units):
    """One folder name per unit, from its name (a plane folder's name, a file's stem), unique within the report:
    the figures of unit ``k`` go to ``out/slugs[k]/`` and its section is ``#slugs[k]``."""
    seen, out = {}, []
    for u in units:
        p = Path(u.name)
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.stem if p.suffix else p.name) or "unit"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


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


def head_shares(u, index):
    """{ROI: 'network +2.10 · area in pixels -0.31 · ...'}: what each input of the model's stacked head
    (roicurate/head.py) added to the ROI's logit, for the ROIs in ``index``; {} for a model without a head."""
    head = u.classifier.card.get("head")
    if head is None or not len(index):
        return {}
    from roicurate.calibrate import logit
    from roicurate.head import contributions, describe
    from roicurate.scale import reference_diameter
    reference_diameter(u.roiset)            # the whole recording's reference cell, not the subset's
    index = np.asarray(index, np.int64)
    p = u.curation.probabilities[index, u.classifier.positive]
    rows = contributions(head, u.roiset.subset(index), logit(p))
    return {int(i): describe(head, row) for i, row in zip(index, rows)}


def _caption(u, i, shares=None):
    cur = u.curation
    bits = [f"<b>ROI {i}</b>", f"P({accepted_classes_label(u)}) = {cur.accept_score[i]:.3f}",
            f"<span class='{_verdict(cur.accepted[i])}'>{_verdict(cur.accepted[i])}</span>"]
    if u.before is not None:
        same = bool(u.before[i]) == bool(cur.accepted[i])
        bits.append(f"{pipeline_name(u.roiset)} had {_verdict(u.before[i])}" + ("" if same else " <b>(changed)</b>"))
    if len(cur.classes) > 2:
        k = int(cur.probabilities[i].argmax())
        bits.append(f"most probable: {_e(cur.classes[k])} ({cur.probabilities[i, k]:.2f})")
    if u.labels is not None and u.labels[i] >= 0:
        bits.append("label: " + ("cell" if u.labels[i] > 0 else "not a cell"))
    caption = " · ".join(bits)
    if shares and i in shares:
        caption += f"<br><small>logit = {_e(shares[i])}</small>"
    return caption


def class_section(u, slug, folder, per_class=24):
    """Models with more than two classes: the ROIs per class (each counted under its most probable class), how
    many of them were accepted, and a gallery per class (its most probable members first)."""
    cur = u.curation
    top = cur.probabilities.argmax(1) if len(cur.probabilities) else np.zeros(0, np.int64)
    acc = np.asarray(cur.accepted, bool)
    rows = "".join(f"<tr><th>{_e(c)}</th><td>{int((top == k).sum())}</td><td>{int((acc & (top == k)).sum())}</td>"
                   f"</tr>" for k, c in enumerate(cur.classes))
    accepted = _e(accepted_classes_label(u))
    parts = [f"<h3>Classes</h3><p>{u.classifier.name} gives each ROI a probability per class; here every ROI counts "
             f"under its most probable class. Accepted: P({accepted}) &ge; {cur.threshold:.3f}.</p>"
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


def gallery_html(u, slug, idx, panels, empty="none", shares=None):
    """One captioned figure per ROI in ``idx``: ``panels`` maps an ROI to its PNG in the folder ``slug`` (from
    :func:`~roicurate.report.figures.explain_panels`); ``empty`` is said when ``idx`` is empty; ``shares``: the
    head's per-input shares of each ROI's logit (:func:`head_shares`)."""
    items = "".join(f"<figure><figcaption>{_caption(u, int(i), shares)}</figcaption>"
                    f"<img src='{slug}/{panels[int(i)]}' alt='explanation of ROI {int(i)}'></figure>" for i in idx)
    return items or f"<p>{empty}</p>"


def _section(u, out, slug, n_explain, n_examples, occ, progress, timings=None):
    folder = out / slug
    rs, cur, clf = u.roiset, u.curation, u.classifier
    gallery, sure_acc, sure_rej, union = _examples(cur, n_explain, n_examples)
    panels, ex = explain_panels(u, union, folder, occ, progress, timings)
    shares = head_shares(u, union)
    with timed(timings, "score histogram + field of view"):
        histogram(u, folder / "scores.png")
        fov_what = fov(u, folder / "fov.png", numbered=gallery[:30])
    n, acc = len(rs), np.asarray(cur.accepted, bool)
    e, pipe = _e, pipeline_name(rs)
    rows = [("ROIs", n)]
    if u.before is not None:
        b = np.asarray(u.before, bool)
        rows += [(f"accepted by {pipe} (before)", f"{b.sum()} ({b.mean():.0%})")]
    rows += [("accepted by roicurate (after)", f"{acc.sum()} ({acc.mean():.0%})"),
             ("rejected by roicurate", f"{(~acc).sum()} ({(~acc).mean():.0%})")]
    if u.before is not None:
        rows += [(f"{pipe} accepted → roicurate rejected", int((b & ~acc).sum())),
                 (f"{pipe} rejected → roicurate accepted", int((~b & acc).sum()))]
    card = clf.card
    thr_note = card.get("threshold_rule", "")
    point = clf.operating_points.get(cur.operating_point or "")
    if cur.operating_point:
        thr_note = f"operating point '{cur.operating_point}'" + (f": {point['rule']}" if point else "")
    elif abs(cur.threshold - clf.threshold) > 1e-12:
        thr_note = f"set by hand; the model's own threshold is {clf.threshold:.3f}"
    rows += [("model", f"{card['name']} ({card.get('arch', '?')}, sha256 {str(card.get('sha256', ''))[:12]})"
                       + (", test-time augmentation (8 rotations/flips)" if cur.tta else "")),
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
    with timed(timings, "curves against labels, class galleries"):
        parts.append(_labels_html(u, slug, folder))
        if len(cur.classes) > 2:
            parts.append(class_section(u, slug, folder))
    if u.before is not None and (b & ~acc).any():
        dropped = ", ".join(str(i) for i in np.flatnonzero(b & ~acc))
        k = int((b & ~acc).sum())
        parts.append(f"<details><summary>The {k} ROI{'s' * (k != 1)} {pipe} had accepted and roicurate "
                     f"rejected (click to list)</summary><p>{dropped}</p></details>")
    with timed(timings, "plugin sections (U-Net: possibly missed cells)"):
        parts.append(plugin_sections(u, slug, folder))
    which = f"all {n} ROIs" if len(gallery) == n else f"the {len(gallery)} ROIs nearest the threshold"
    parts += [f"<h3>Closest calls: {which}, closest to {cur.threshold:.3f} first</h3>"
              "<p>The ROIs the model was least sure about: the ones worth a human look.</p>",
              f"<div class='gallery'>{gallery_html(u, slug, gallery, panels, shares=shares)}</div>",
              f"<h3>Confident accepts (highest P({accepted_classes_label(u)}))</h3>",
              f"<div class='gallery'>{gallery_html(u, slug, sure_acc, panels, 'none: every ROI was rejected', shares)}</div>",
              f"<h3>Confident rejects (lowest P({accepted_classes_label(u)}))</h3>",
              f"<div class='gallery'>{gallery_html(u, slug, sure_rej, panels, 'none: every ROI was accepted', shares)}</div>",
              "</section>"]
    toc = (f"<li><a href='#{slug}'>{e(u.name)}</a>: {n} ROIs, {acc.sum()} accepted, {(~acc).sum()} rejected"
           + (f" ({pipe} had accepted {int(np.sum(u.before))})" if u.before is not None else "") + "</li>")
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
        rows.append((f"{pipeline_name(u.roiset)}'s own verdict", prf(y, np.asarray(u.before, bool)[known])))
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
A model with a stacked head (its card's <code>head</code>) adds under each ROI the line <i>logit = ...</i>:
what the network and each shape feature added to the ROI's log-odds of being a cell, against an average training
ROI (largest first; <i>baseline</i>: the head's intercept); P(cell) is the sigmoid of their sum.
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
    for u, slug in zip(units, unit_slugs(units)):
        body, line = _section(u, out, slug, n_explain, n_examples, occ, progress, timings)
        sections.append(body)
        toc.append(line)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return _write_page(out, title, title, f"<p>Written by roicurate {__version__} on {when}.</p>"
                       f"{HOW_TO_READ.format(window=window)}<ul>{''.join(toc)}</ul>{''.join(sections)}")


def write_explanations(out, units, index=None, n=50, window=5, stride=1, fill=0.0, progress=True):
    """For each unit: one PNG per ROI in ``index`` (default: the ``n`` closest to the threshold) and
    ``explanations.npz`` with the arrays; ``out/index.html`` shows them all. Returns the page's path."""
    out, parts = Path(out), []
    for u, slug in zip(units, unit_slugs(units)):
        idx = u.curation.uncertain[:n] if index is None else np.asarray(index, np.int64)
        panels, ex = explain_panels(u, idx, out / slug, {"window": window, "stride": stride, "fill": fill}, progress)
        arrays = {k: v for k, v in ex.items() if isinstance(v, np.ndarray)}
        np.savez_compressed(out / slug / "explanations.npz", **arrays)
        parts.append(f"<section><h2>{_e(u.name)}</h2><p>model {_e(u.classifier.name)}"
                     f", threshold {u.curation.threshold:.3f}</p>"
                     f"<div class='gallery'>{gallery_html(u, slug, idx, panels, shares=head_shares(u, idx))}</div></section>")
    return _write_page(out, "roicurate explain", "Why roicurate decided what it did",
                       f"{HOW_TO_READ.format(window=window)}{''.join(parts)}")


def _write_page(out, title, heading, body):
    """Write ``out/index.html``: one self-contained page (the CSS inline, no scripts) and return its path."""
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title><style>{CSS}"
            f"</style></head><body><h1>{_e(heading)}</h1>{body}</body></html>\n")
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"

