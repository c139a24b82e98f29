"""One review session: a unit, the model's calibrated verdict on it, the person's answers, and the pictures the page
shows. No web code here (``app.py`` serves it); every answer goes through roicurate/review_answers.py at once."""
import io
import threading
from pathlib import Path

import numpy as np

from roicurate import RoicurateError
from roicurate import review_answers

TRACE_POINTS = 1500          # a trace is sent as at most this many (min, max) pairs
SCALE = 3                    # crop pictures: each pixel drawn as SCALE x SCALE


class ReviewSession:
    """``unit``: a ``roicurate.report.ReportUnit`` (ROIs, curation, classifier) of ``src``'s ``path``."""

    def __init__(self, src, path, unit, cache):
        self.src, self.path, self.unit, self.cache = src, path, unit, Path(cache)
        self.roiset, self.curation = unit.roiset, unit.curation
        self.n = len(self.roiset)
        self.order = [int(i) for i in self.curation.review_order]
        self.lock = threading.Lock()          # one answer at a time
        self.draw_lock = threading.Lock()     # one picture at a time (matplotlib figures, the model's explanation)
        self.pictures = {}
        self.centroids = self.roiset.centroids()
        record = review_answers.read_record(src.review_path(path))
        problem = record is not None and review_answers.mismatch(record, self.roiset)
        self.note = f"{src.review_path(path)}: {problem}; it is kept aside at the first answer" if problem else ""
        self.answers = [] if record is None or problem else record["answers"]

    # ---- state ---------------------------------------------------------------------------------------------
    def human(self):
        """int8 (N,): the answers now, -1 where none."""
        return review_answers.human_labels({"answers": self.answers}, self.n)

    def progress(self):
        """reviewed, left, errors found (answers that differ from the model's verdict) and the errors still
        expected (sum of P(model wrong) over the ROIs nobody answered, from the calibrated probabilities)."""
        human = self.human()
        done = human >= 0
        model = self.curation.model_accepted
        wrong = np.where(model, 1 - self.curation.accept_score, self.curation.accept_score)
        return {"reviewed": int(done.sum()), "left": int((~done).sum()),
                "errors_found": int((done & ((human == 1) != model)).sum()),
                "errors_expected_left": round(float(wrong[~done].sum()), 2)}

    def state(self):
        cur = self.curation
        return {"unit": str(self.path), "rois": self.n, "order": self.order, "threshold": float(cur.threshold),
                "model": cur.model.get("name"), "classes": cur.accepted_classes, "shape": list(self.roiset.shape),
                "answers": [{"roi": a["roi"], "label": a["label"]} for a in self.answers],
                "human": self.human().tolist(), "model_accepted": cur.model_accepted.tolist(),
                "probability": np.round(cur.accept_score, 4).tolist(), "progress": self.progress(),
                "file": str(self.src.review_path(self.path)), "note": self.note,
                "has_trace": self.roiset.traces is not None}

    def check_roi(self, roi):
        if not 0 <= roi < self.n:
            raise RoicurateError(f"ROI {roi}: this unit has ROIs 0 to {self.n - 1}")
        return roi

    def roi(self, roi):
        """What the page shows beside the pictures of one ROI."""
        self.check_roi(roi)
        cur = self.curation
        p = float(cur.accept_score[roi])
        model = bool(cur.model_accepted[roi])
        return {"roi": roi, "probability": round(p, 4), "model_accepted": model, "human": int(self.human()[roi]),
                "p_model_wrong": round(1 - p if model else p, 4), "rank": self.order.index(roi),
                "centroid": [round(float(v), 1) for v in self.centroids[roi]],
                "npix": int(self.roiset.npix[roi])}

    # ---- answers (written at once) ---------------------------------------------------------------------------
    def answer(self, roi, label):
        self.check_roi(roi)
        with self.lock:
            record = review_answers.answer(self.src, self.path, self.roiset, roi, label)
            self.answers, self.note = record["answers"], ""
        return self.state()

    def undo(self):
        with self.lock:
            record, roi = review_answers.undo(self.src, self.path, self.roiset)
            self.answers, self.note = record["answers"], ""
        return dict(self.state(), undone=roi)

    # ---- pictures --------------------------------------------------------------------------------------------
    def trace(self, roi):
        """{"min", "max"}: the ROI's trace as at most TRACE_POINTS bins (min and max of each), or None."""
        self.check_roi(roi)
        if self.roiset.traces is None:
            return None
        f = np.asarray(self.roiset.traces[roi], np.float64)
        bins = np.array_split(f, min(TRACE_POINTS, len(f))) if len(f) else []
        return {"min": [round(float(b.min()), 3) for b in bins], "max": [round(float(b.max()), 3) for b in bins],
                "frames": int(len(f))}

    def picture(self, kind, roi=None):
        """PNG bytes: "crop" (the summary image around ROI ``roi`` with its outline), "fov" (the whole field of
        view with every outline, once), "why" (the report's panel: model input, saliency, occlusion; drawn by
        roicurate/report/figures.py)."""
        key = (kind, roi)
        if key not in self.pictures:
            if roi is not None:
                self.check_roi(roi)
            draw = {"crop": self._crop, "fov": self._fov, "why": self._why}[kind]
            with self.draw_lock:
                self.pictures[key] = draw(roi)
        return self.pictures[key]

    def _crop(self, roi):
        from roicurate.report.figures import context_windows
        ctx = context_windows(self.unit, [roi])
        mask = ctx["mask"][0] > 0
        img = ctx["image"][0] if ctx["image"] is not None else mask.astype(np.float64)
        lo, hi = np.percentile(img, [1, 99.5])
        grey = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)
        rgb = np.repeat(np.kron(grey, np.ones((SCALE, SCALE)))[..., None], 3, 2)
        big = np.kron(mask, np.ones((SCALE, SCALE), bool))
        inner = big.copy()
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            inner &= np.roll(big, shift, axis)
        rgb[big & ~inner] = (0.0, 1.0, 1.0)             # the outline, one picture pixel wide, in cyan
        return _png(rgb)

    def _fov(self, _roi=None):
        """The whole frame (one picture pixel per image pixel: the page marks an ROI at its centroid), every
        outline in the report's colours for the model's verdict: green accepted, magenta rejected."""
        from matplotlib.colors import to_rgb

        from roicurate.report.figures import ACCEPTED, FOV_IMAGES, REJECTED, outline_pixels
        rs = self.roiset
        name = next((n for n in FOV_IMAGES if n in rs.images), None)
        img = np.zeros(rs.shape) if name is None else np.asarray(rs.images[name], np.float64)
        lo, hi = np.nanpercentile(img, [1, 99.5]) if name else (0.0, 1.0)
        rgb = np.repeat(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)[..., None], 3, 2)
        roi, y, x = outline_pixels(rs)
        acc = self.curation.model_accepted[roi]
        rgb[y[~acc], x[~acc]] = to_rgb(REJECTED)
        rgb[y[acc], x[acc]] = to_rgb(ACCEPTED)
        return _png(np.nan_to_num(rgb))

    def _why(self, roi):
        from roicurate.report.figures import explain_panels
        occ = {"window": 5, "stride": 2, "fill": 0.0, "occlude": ("mask",)}
        panels, _ = explain_panels(self.unit, np.array([roi]), self.cache / "why", occ, progress=False)
        return (self.cache / "why" / panels[roi]).read_bytes()


def _png(rgb):
    from matplotlib.image import imsave
    buf = io.BytesIO()
    imsave(buf, np.clip(rgb, 0, 1), format="png")
    return buf.getvalue()
