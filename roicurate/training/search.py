"""Random hyperparameter search scored by validation F1: a coarse phase over the whole space, then a fine phase
around the best coarse trial. Every trial trains from the same initial weights with the same seed, so trials
differ only by their hyperparameters; every trial is kept in a table (``NAME.search.csv`` and the card).
Draws: scikit-learn's ``ParameterSampler`` with ``scipy.stats.loguniform`` ranges, from one seeded RandomState."""
import csv
import math
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError

# name: (low, high) sampled log-uniformly, or a tuple of choices
SPACE = {
    "lr": (1e-4, 1e-2),
    "weight_decay": (1e-6, 1e-2),
    "batch_size": [16, 32, 64, 128],
    "lr_decay": (1e-4, 1.0),          # final / peak learning rate of the one-cycle schedule
}
FINE_SPAN = 10 ** 0.5                 # fine phase: within x/÷ this factor of the best value (log-uniform)
COLUMNS = ("trial", "phase", "lr", "weight_decay", "batch_size", "lr_decay", "val_f1", "val_roc_auc",
           "best_epoch", "epochs_run", "seconds")


def space(around=None):
    """SPACE as scikit-learn's ``ParameterSampler`` takes it (``scipy.stats.loguniform`` for ranges, lists of
    choices); with ``around`` (a previous draw) its neighbourhood: ranges narrowed to within x/÷ FINE_SPAN of the
    value, choices to the value and its neighbours in the list."""
    from scipy.stats import loguniform
    out = {}
    for name, dom in SPACE.items():
        if isinstance(dom, list):
            i = None if around is None else dom.index(around[name])
            out[name] = dom if i is None else dom[max(i - 1, 0):i + 2]
        else:
            lo, hi = dom
            if around is not None:
                lo, hi = max(lo, around[name] / FINE_SPAN), min(hi, around[name] * FINE_SPAN)
            out[name] = loguniform(lo, hi)
    return out


def sample(random_state, around=None):
    """One draw (a dict in SPACE's order) from :func:`space`; ``random_state``: a ``numpy.random.RandomState``."""
    from sklearn.model_selection import ParameterSampler
    hp = next(iter(ParameterSampler(space(around), n_iter=1, random_state=random_state)))
    return {name: (int(hp[name]) if isinstance(dom, list) else float(hp[name])) for name, dom in SPACE.items()}


def random_search(n_trials, run_trial, seed=0, log=print, table_path=None):
    """``run_trial(hp) -> (val_f1, val_roc_auc, history, module, seconds)``.
    Returns (best hp, its module, its history, the rows of every trial).

    The first ceil(n/2) trials sample the whole space; the rest sample around the best so far."""
    if n_trials < 1:
        raise RoicurateError("--search needs at least 1 trial")
    random_state = np.random.RandomState(seed)
    n_coarse = math.ceil(n_trials / 2)
    rows, best = [], None
    for t in range(n_trials):
        phase = "coarse" if t < n_coarse else "fine"
        hp = sample(random_state, None if phase == "coarse" else best[0])
        log(f"trial {t + 1}/{n_trials} ({phase}): " + ", ".join(f"{k} {v:.3g}" for k, v in hp.items()))
        f1, auc, history, module, seconds = run_trial(hp)
        best_epoch = 1 + int(np.nanargmax([h["val_f1"] for h in history])) if history else 0
        rows.append(dict(trial=t + 1, phase=phase, **hp, val_f1=f1, val_roc_auc=auc, best_epoch=best_epoch,
                         epochs_run=len(history), seconds=round(seconds, 1)))
        log(f"trial {t + 1}: validation F1 {f1:.3f}, ROC AUC {auc:.3f}")
        if best is None or f1 > best[1]:
            best = (hp, f1, module, history)
        if table_path:
            write_table(table_path, rows)
    return best[0], best[2], best[3], rows


def write_table(path, rows):
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def format_table(rows):
    head = "| " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)
