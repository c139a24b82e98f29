"""Five shape features per ROI (area, compactness, aspect ratio, eccentricity, solidity), computed from the
binarised masks alone so that they mean the same for every pipeline. Used by the logistic-regression baseline and
by a model's optional *shape prior*: a logistic regression on these features, fitted on the training recordings,
whose logit is added to the network's (weighted on validation, see ``roicurate train --shape-prior``)."""
import numpy as np
from scipy.spatial import ConvexHull, QhullError

FEATURES = ("log_area", "compactness", "aspect_ratio", "eccentricity", "solidity")
RELATIVE = ("log_relative_area",) + FEATURES[1:]   # area over the reference cell's (roicurate/scale.py)


def shape_features(roiset, binarize=0.0, relative=False):
    """(N, 5) features; ``relative``: the log of each area over the recording's reference cell area instead of
    the log area in pixels, so that the features mean the same at every zoom."""
    keep = roiset.binary(binarize)
    idx, y, x = roiset.roi_index[keep], roiset.y[keep].astype(float), roiset.x[keep].astype(float)
    n = len(roiset)
    area = np.bincount(idx, minlength=n).astype(float)
    a = np.maximum(area, 1)
    cy, cx = np.bincount(idx, y, n) / a, np.bincount(idx, x, n) / a
    dy, dx = y - cy[idx], x - cx[idx]
    syy = np.bincount(idx, dy * dy, n) / a + 1 / 12
    sxx = np.bincount(idx, dx * dx, n) / a + 1 / 12
    sxy = np.bincount(idx, dx * dy, n) / a
    tr, det = syy + sxx, syy * sxx - sxy ** 2
    disc = np.sqrt(np.maximum(tr ** 2 / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-9)
    # compactness as Suite2p defines it: mean distance from the centre relative to a disk of the same area
    r = np.bincount(idx, np.sqrt(dy * dy + dx * dx), n) / a
    r_disk = (2 / 3) * np.sqrt(a / np.pi)
    solidity = np.ones(n)
    starts = np.r_[0, np.cumsum(area)].astype(int)
    for i in range(n):
        pts = np.stack([y[starts[i]:starts[i + 1]], x[starts[i]:starts[i + 1]]], 1)
        if len(pts) >= 3:
            corners = (pts[:, None, :] + np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]])[None]).reshape(-1, 2)
            try:
                solidity[i] = area[i] / ConvexHull(corners).volume
            except QhullError:
                pass
    log_a = np.log(a) - (reference_log_area(roiset) if relative else 0.0)
    return np.stack([log_a, r / np.maximum(r_disk, 1e-9), np.sqrt(l1 / l2), np.sqrt(1 - l2 / l1), solidity], 1)


def reference_log_area(roiset):
    """The log area of the recording's reference cell (a disk of its reference diameter, roicurate/scale.py): what
    ``relative`` features subtract from each ROI's log area."""
    from roicurate.scale import reference_diameter
    d = reference_diameter(roiset) or 1.0
    return np.log(np.pi / 4 * d * d)


def fit_prior(X, y, binarize=0.0, C=1.0, relative=False):
    """A card's ``shape_prior``: L2-regularised logistic regression (liblinear, the intercept penalised too) on
    standardised features ``X`` (N, 5)."""
    from roicurate.baselines import liblinear_logistic
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    w = liblinear_logistic((X - mean) / scale, np.asarray(y) > 0, C=C)
    return {"features": list(RELATIVE if relative else FEATURES), "binarize": float(binarize), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": w[:-1].tolist(), "intercept": float(w[-1])}


def scale_prior(prior, weight):
    """The same prior with its logit multiplied by ``weight``."""
    return dict(prior, coef=[c * weight for c in prior["coef"]], intercept=prior["intercept"] * weight)


def prior_logit(prior, roiset):
    """(N,) the prior's logit for every ROI of ``roiset``."""
    X = shape_features(roiset, prior["binarize"], relative=prior["features"][0] == RELATIVE[0])
    return ((X - prior["mean"]) / np.asarray(prior["scale"])) @ np.asarray(prior["coef"]) + prior["intercept"]
