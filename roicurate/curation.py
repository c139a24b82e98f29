"""Curation: a classifier's verdict on one RoiSet — what writers write and reports show."""
from dataclasses import dataclass

import numpy as np

from roicurate import RoicurateError


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
    def uncertain(self):
        """ROI indices, the ones closest to the threshold first."""
        return np.argsort(np.abs(self.accept_score - self.threshold), kind="stable")

    def class_counts(self):
        """{class: number of ROIs for which it is the most probable class}."""
        top = np.bincount(self.probabilities.argmax(1), minlength=len(self.classes)) if len(self.probabilities) \
            else np.zeros(len(self.classes), np.int64)
        return {c: int(n) for c, n in zip(self.classes, top)}

    def summary(self):
        out = {"rois": int(len(self.accepted)), "accepted": int(self.accepted.sum()),
               "rejected": int((~self.accepted).sum()), "threshold": float(self.threshold),
               "inputs": list(self.inputs), "reference_diameter": self.diameter,
               "diameter_source": self.diameter_source or None}
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


def curate(roiset, classifier, threshold=None, progress=None, also_accept=()):
    """Classify ``roiset``; accepted = P(positive class) + P(each ``also_accept`` class) >= threshold."""
    from roicurate.scale import reference_diameter
    also = accept_columns(classifier.classes, classifier.positive, also_accept, f"model '{classifier.name}'")
    proba = classifier.predict_proba(roiset, progress=progress)
    thr = classifier.threshold if threshold is None else float(threshold)
    pos = classifier.positive
    card = classifier.card
    cur = Curation(proba, np.zeros(len(proba), bool), thr, classifier.classes, pos,
                   {"name": card["name"], "sha256": card["sha256"], "arch": card["arch"],
                    "source": card.get("source", card["name"])}, also, inputs_used(roiset, classifier.crop))
    if classifier.crop.scale == "reference":
        cur.diameter, cur.diameter_source = reference_diameter(roiset), roiset.diameter_source
    cur.accepted = cur.accept_score >= thr
    return cur
