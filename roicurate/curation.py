"""Curation: a classifier's verdict on one RoiSet — what writers write and reports show."""
from dataclasses import dataclass

import numpy as np


@dataclass
class Curation:
    probabilities: np.ndarray    # (N, K), columns follow ``classes``
    accepted: np.ndarray         # (N,) bool
    threshold: float
    classes: tuple
    positive: int                # column of ``probabilities`` that is compared with the threshold
    model: dict                  # name, sha256, arch of the model card

    @property
    def score(self):
        """Probability of the accepted class, one per ROI."""
        return self.probabilities[:, self.positive]

    @property
    def uncertain(self):
        """ROI indices, the ones closest to the threshold first."""
        return np.argsort(np.abs(self.score - self.threshold), kind="stable")

    def summary(self):
        return {"rois": int(len(self.accepted)), "accepted": int(self.accepted.sum()),
                "rejected": int((~self.accepted).sum()), "threshold": float(self.threshold)}


def curate(roiset, classifier, threshold=None, progress=None):
    proba = classifier.predict_proba(roiset, progress=progress)
    thr = classifier.threshold if threshold is None else float(threshold)
    pos = classifier.positive
    card = classifier.card
    return Curation(proba, proba[:, pos] >= thr, thr, classifier.classes, pos,
                    {"name": card["name"], "sha256": card["sha256"], "arch": card["arch"],
                     "source": card.get("source", card["name"])})
