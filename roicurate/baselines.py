"""What a model is compared with, on the same ROIs: accepting everything, the pipeline's own verdict, and
Suite2p's built-in classifier re-implemented from its published procedure (no Suite2p needed).

Each baseline returns ``(score, accepted)`` per ROI, or None where it does not apply.

Suite2p's built-in classifier (suite2p/classification/classifier.py, identical in 0.14 and 1.1.0): for each
feature (``skew``, ``npix_norm``, ``compact`` — those the ROIs have), 100 grid nodes at the quantiles of the
training values; for each of the 99 bins the fraction of cells among the training ROIs sorted into it, smoothed
by ``gaussian_filter(p, (2, 0))``; a value becomes log(p) - log(1 - p) of its bin (clipped to the grid, NaN to the
lowest node; a value at or below the training minimum lands in the last bin, a quirk kept on purpose); a logistic
regression (scikit-learn ``LogisticRegression(C=100, solver="liblinear")``, the same call) on those log-odds gives
the probability.

The training set is Suite2p's ``classifiers/classifier.npy`` (GPL-3.0, from the suite2p package), shipped as
``roicurate/data/suite2p_classifier.npz`` (made once by scripts/convert_suite2p_classifier.py; see
roicurate/data/README.md). Suite2p puts ROIs into bins with ``np.argsort``, whose order of equal values depends on
the CPU's numpy sort kernels; the shipped file keeps the order Suite2p 1.1.0 produced for the reference datasets,
so the result is the same on every machine.
"""
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from roicurate.common import RoicurateError

BUILTIN_FILE = Path(__file__).parent / "data" / "suite2p_classifier.npz"
SUITE2P_KEYS = ("skew", "npix_norm", "compact")
NAMES = {"accept_all": "accept all", "pipeline": "pipeline's own verdict", "suite2p_builtin": "Suite2p built-in",
         "pipeline_red": "pipeline's red-cell probability"}


# ---- the simple ones ------------------------------------------------------------------------------------------
def accept_all(roiset):
    n = len(roiset)
    return np.ones(n), np.ones(n, bool)


def pipeline_verdict(roiset):
    """The verdict the pipeline itself made (before any ``roicurate apply``) and its score where it has one
    (Suite2p's classifier probability; CaImAn's ``cnn_preds`` when its CNN ran, else its ``SNR_comp``), else None."""
    accepted, score = original_verdict(roiset)
    return None if accepted is None else (score, accepted)


def original_verdict(roiset):
    """(accepted, score) as the pipeline wrote them: its source reads roicurate's backup when ``apply`` replaced them."""
    from roicurate.plugins import sources
    src = sources().get(roiset.source)
    if src is None or not roiset.path:
        return roiset.pipeline_accepted, None
    return src.original_verdict(roiset.path, roiset)


# ---- Suite2p's built-in classifier ----------------------------------------------------------------------------
def load_suite2p_training(path=None):
    """(stats (n, k) float64, keys, iscell (n,), order or None) of a Suite2p classifier training set.

    ``path`` None is the shipped built-in set; a ``.npz`` is read without pickle; a ``.npy`` is Suite2p's own
    pickled format (a user's ``classifier_user.npy``), unpickled only because the user named it."""
    path = Path(path) if path else BUILTIN_FILE
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as d:
                stats, keys, iscell = d["stats"], [str(k) for k in d["keys"]], d["iscell"]
                order = d["order"] if "order" in d else None
        else:
            from roicurate.plaindata import load_npy     # plain data only: a shared classifier file runs no code
            d = load_npy(path).item()
            stats, keys, iscell, order = d["stats"], list(d["keys"]), d["iscell"], None
    except FileNotFoundError:
        raise RoicurateError(f"{path}: Suite2p classifier file is missing") from None
    except Exception as e:
        raise RoicurateError(f"{path}: not a Suite2p classifier file ({e.__class__.__name__}: {e})") from None
    stats = np.asarray(stats, np.float64)
    if stats.ndim != 2 or stats.shape != (len(iscell), len(keys)):
        raise RoicurateError(f"{path}: stats, keys and iscell do not fit together")
    return stats, keys, np.asarray(iscell), order


class Suite2pClassifier:
    """Suite2p's classifier fitted on ``keys`` (a subset of the training set's keys, in the training set's order)."""

    def __init__(self, stats, keys, iscell, order=None, use=SUITE2P_KEYS):
        ikey = [i for i, k in enumerate(keys) if k in use]
        if not ikey:
            raise RoicurateError(f"the Suite2p classifier has none of the features {', '.join(use)}")
        self.keys = [keys[i] for i in ikey]
        x = stats[:, ikey]
        isort = (order[:, ikey] if order is not None else np.argsort(x, axis=0)).astype(np.int64)
        nodes, n = 100, len(x)
        ix = np.linspace(0, n - 1, nodes).astype("int32")
        self.grid = np.sort(x, axis=0)[ix]
        p = np.zeros((nodes - 1, len(ikey)))
        for j in range(nodes - 1):
            p[j] = iscell[isort[ix[j]:ix[j + 1]]].mean(0)
        self.p = gaussian_filter(p, (2.0, 0))
        self.w = liblinear_logistic(self._logp(x), np.asarray(iscell) > 0.5, C=100.0)

    def _logp(self, x):
        x = np.array(x, np.float64)
        out = np.zeros(x.shape)
        for k in range(x.shape[1]):
            g = self.grid[:, k]
            v = np.clip(x[:, k], g[0], g[-1])
            v[np.isnan(v)] = g[0]
            ibin = np.digitize(v, g, right=True) - 1
            out[:, k] = np.log(self.p[ibin, k] + 1e-6) - np.log(1 - self.p[ibin, k] + 1e-6)
        return out

    def predict_proba(self, features):
        """P(cell) for per-ROI features {key: (N,)}."""
        x = np.stack([np.asarray(features[k], np.float64) for k in self.keys], 1)
        z = self._logp(x) @ self.w[:-1] + self.w[-1]
        return 1 / (1 + np.exp(-z))


@lru_cache(maxsize=16)
def _classifier(path, keys):
    return Suite2pClassifier(*load_suite2p_training(path), use=keys)


def suite2p_builtin(roiset, classifier_file=None):
    """Suite2p's classifier on Suite2p ROI sets: the keys of ``skew, npix_norm, compact`` the ROIs have (as
    Suite2p intersects them with ``stat[0]``); accepted when P > 0.5 (Suite2p's ``iscell[:, 0]``)."""
    if roiset.pipeline != "suite2p":
        return None
    keys = tuple(k for k in SUITE2P_KEYS if k in roiset.features)
    if not keys:
        return None
    p = _classifier(str(classifier_file) if classifier_file else None, keys).predict_proba(roiset.features)
    return p, p > 0.5


def all_baselines(roiset, suite2p_classifier=None, task="curate"):
    """{name: (score, accepted)} for the baselines that apply to ``roiset`` (the pipeline's score may be None).
    For a cell-type model (``task`` "types", positive class e.g. ``red``): accept all, and the pipeline's own
    red-cell probability and label (Suite2p's redcell.npy) unless those are the labels themselves."""
    if task == "types":
        red = roiset.features.get("redcell_prob")
        own = red is not None and roiset.origin.get("type_labels") != "redcell"
        out = {"accept_all": accept_all(roiset),
               "pipeline_red": (red, roiset.features["redcell"] > 0.5) if own else None}
    else:
        out = {"accept_all": accept_all(roiset), "pipeline": pipeline_verdict(roiset),
               "suite2p_builtin": suite2p_builtin(roiset, suite2p_classifier)}
    return {k: v for k, v in out.items() if v is not None}


# ---- liblinear's logistic regression ------------------------------------------------------------------------------
def liblinear_logistic(x, y, C):
    """[w..., intercept] of scikit-learn's ``LogisticRegression(C=C, solver="liblinear")`` on (x, y): L2 on the
    weights and on the intercept too (liblinear fits it as a feature of value 1, ``intercept_scaling=1``), with
    liblinear's own stopping rule: the coefficients Suite2p gets, not just the optimum."""
    from sklearn.linear_model import LogisticRegression
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        raise RoicurateError("a logistic regression needs both cells and non-cells to fit")
    fitted = LogisticRegression(C=C, solver="liblinear").fit(np.asarray(x, np.float64), y)
    return np.r_[fitted.coef_[0], fitted.intercept_[0]]
