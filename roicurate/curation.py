"""Curation: a classifier's verdict on one RoiSet — what writers write and reports show."""
from dataclasses import dataclass

import numpy as np

from roicurate.common import RoicurateError


@dataclass
class Curation:
    probabilities: np.ndarray    # (N, K), columns follow ``classes``
    accepted: np.ndarray         # (N,) bool
    threshold: float
    classes: tuple
    positive: int                # column of ``probabilities`` that counts as a cell (iscell's probability column)
    model: dict                  # name, sha256, arch of the model card
    also_accept: tuple = ()      # further columns whose probability counts towards acceptance (``--also-accept``)
    inputs: tuple = ("mask",)    # the crop channels the recording gave the model (a missing optional image is not)
    diameter: float | None = None   # the reference cell diameter the crops were scaled by (None: native pixels)
    diameter_source: str = ""
    human: np.ndarray | None = None     # review answers (int8 (N,): 1 cell, 0 not, -1 none); they set ``accepted``
    operating_point: str | None = None  # the card's operating point the threshold is (None: a custom threshold)
    tta: bool = False                   # probabilities averaged over the eight rotations/flips of each crop

    @property
    def score(self):
        """Probability of the positive class, one per ROI."""
        return self.probabilities[:, self.positive]

    @property
    def accept_columns(self):
        return (self.positive, *self.also_accept)

    @property
    def accepted_classes(self):
        """Names of the classes whose probabilities add up to the accept score."""
        return [self.classes[i] for i in self.accept_columns]

    @property
    def accept_score(self):
        """What is compared with the threshold: the probability of the positive class plus those of the classes
        accepted too (the probability that the ROI belongs to any accepted class)."""
        return self.probabilities[:, list(self.accept_columns)].sum(1)

    @property
    def model_accepted(self):
        """The model's own verdict (``accepted`` before the review answers)."""
        return self.accept_score >= self.threshold

    @property
    def expected_error(self):
        """P(the verdict written is wrong), per ROI, from the calibrated probabilities: 1 - p for an ROI the model
        accepts, p for one it rejects, 0 where a person answered."""
        p = self.accept_score
        wrong = np.where(self.model_accepted, 1 - p, p)
        return wrong if self.human is None else np.where(np.asarray(self.human) >= 0, 0.0, wrong)

    @property
    def uncertain(self):
        """ROI indices, the ones closest to the threshold first."""
        return np.argsort(np.abs(self.accept_score - self.threshold), kind="stable")

    @property
    def review_order(self):
        """ROI indices in the order ``roicurate review`` shows them: closest to the threshold first (``uncertain``).
        benchmarks/review.py measured it against the order by P(verdict wrong) (``expected_error``), the pipeline's
        index order and a random one: it lifted F1 the most on every lab (docs/review.md)."""
        return self.uncertain

    def class_counts(self):
        """{class: number of ROIs for which it is the most probable class}."""
        top = np.bincount(self.probabilities.argmax(1), minlength=len(self.classes)) if len(self.probabilities) \
            else np.zeros(len(self.classes), np.int64)
        return {c: int(n) for c, n in zip(self.classes, top)}

    def human_record(self):
        """What writers record about the review answers: {"reviewed", "cell", "not_cell", "overruled" (answers that
        differ from the model's verdict)}; all zero when nobody reviewed."""
        from roicurate.review_answers import human_summary
        return dict(human_summary(self.human), overruled=0 if self.human is None else
                    int(((np.asarray(self.human) >= 0) & (self.accepted != self.model_accepted)).sum()))

    def summary(self):
        out = {"rois": int(len(self.accepted)), "accepted": int(self.accepted.sum()),
               "rejected": int((~self.accepted).sum()), "threshold": float(self.threshold),
               "operating_point": self.operating_point, "tta": self.tta,
               "inputs": list(self.inputs), "reference_diameter": self.diameter,
               "diameter_source": self.diameter_source or None}
        if self.human is not None:
            out["human"] = self.human_record()
        if len(self.classes) > 2:
            out["classes"] = self.class_counts()
        return out


def accept_columns(classes, positive, also_accept, model_name="the model"):
    """Column indices of the classes named in ``also_accept`` (the positive class itself is dropped); a name the
    model does not have is an error."""
    cols = []
    for name in also_accept:
        if name not in classes:
            raise RoicurateError(f"--also-accept {name}: {model_name} has no class '{name}' "
                                 f"(its classes: {', '.join(classes)})")
        i = list(classes).index(name)
        if i != positive and i not in cols:
            cols.append(i)
    return tuple(cols)


def inputs_used(roiset, crop):
    """The crop channels ``roiset`` gives a model (an optional image it lacks is left out: zeros go in)."""
    from roicurate.crops import has_image
    return tuple(c for c in crop.channels if c == "mask" or not crop.optional_images or has_image(roiset, c))


def check_one_of(threshold, operating_point):
    """A custom threshold and a named operating point exclude each other."""
    if threshold is not None and operating_point is not None:
        raise RoicurateError(f"--threshold {threshold} and --operating-point {operating_point}: give one or the "
                             f"other, not both")


def choose_threshold(classifier, threshold=None, operating_point=None):
    """(threshold, operating point name): ``threshold`` is a custom one (no point); ``operating_point`` names one of
    the card's points; neither: the card's threshold and its default point (None for a card without points)."""
    check_one_of(threshold, operating_point)
    if operating_point is not None:
        return classifier.threshold_at(operating_point), operating_point
    if threshold is not None:
        return float(threshold), None
    return classifier.threshold, classifier.default_point


def curate(roiset, classifier, threshold=None, progress=None, also_accept=(), also_columns=None,
           operating_point=None):
    """Classify ``roiset``; accepted = P(positive class) + P(each ``also_accept`` class) >= threshold, except where
    a person answered in ``roicurate review`` (``roiset.human``): there the answer is the verdict, always.
    ``threshold`` / ``operating_point``: see ``choose_threshold``. ``also_columns``: ``accept_columns`` of
    ``also_accept`` for this classifier, where the caller has them already (``apply`` checks them once per run,
    before the first write)."""
    from roicurate.scale import reference_diameter
    also = also_columns if also_columns is not None else \
        accept_columns(classifier.classes, classifier.positive, also_accept, f"model '{classifier.name}'")
    thr, point = choose_threshold(classifier, threshold, operating_point)
    proba = classifier.predict_proba(roiset, progress=progress)
    pos = classifier.positive
    card = classifier.card
    cur = Curation(proba, np.zeros(len(proba), bool), thr, classifier.classes, pos,
                   {"name": card["name"], "sha256": card["sha256"], "arch": card["arch"],
                    "source": card.get("source", card["name"])}, also, inputs_used(roiset, classifier.crop),
                   operating_point=point, tta=bool(getattr(classifier, "tta", False)))
    if classifier.crop.scale == "reference":
        cur.diameter, cur.diameter_source = reference_diameter(roiset), roiset.diameter_source
    cur.accepted = cur.model_accepted
    if roiset.human is not None:
        cur.human = np.asarray(roiset.human, np.int8).copy()
        cur.accepted = np.where(cur.human >= 0, cur.human == 1, cur.accepted)
    return cur
