"""PNG figures of an evaluation: ROC and precision-recall curves (the model and every baseline with a score),
and the model's reliability diagram. matplotlib is imported here only, and only when figures are written."""
import numpy as np

from roicurate.evaluate import ECE_BINS, pr_curve, reliability, roc_curve

LABELS = {"model": "model", "accept_all": "accept all", "pipeline": "pipeline's own", "suite2p_builtin": "Suite2p built-in"}


def _curves(numbers, table):
    """(key, label, scores) of everything with a ranking score (accept-all has none)."""
    out = [("model", f"model ({numbers['model'].get('name')})", table["model"])]
    for k in numbers.get("baselines", {}):
        s = table[f"{k}_score"]
        if len(np.unique(s)) > 1:
            out.append((k, LABELS.get(k, k), s))
    return out


def write_figures(out, numbers, table):
    """Write roc.png, pr.png and reliability.png into ``out``; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    y = table["label"].astype(bool)
    pooled = lambda k: (numbers if k == "model" else numbers["baselines"][k])["pooled"]
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k, label, s in _curves(numbers, table):
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label}: AUC {pooled(k)['roc_auc']:.3f}", lw=2 if k == "model" else 1)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({len(y)} ROIs, pooled)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    paths.append(_save(fig, out / "roc.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k, label, s in _curves(numbers, table):
        p, r, _ = pr_curve(y, s)
        ax.step(np.r_[0, r], np.r_[p[:1], p], where="pre", label=f"{label}: AP {pooled(k)['pr_auc']:.3f}",
                lw=2 if k == "model" else 1)
    m = pooled("model")
    ax.plot([m["recall"]], [m["precision"]], "o", color="k", label=f"model at threshold {numbers['threshold']:.2f}")
    ax.axhline(y.mean(), color="0.7", lw=0.8, ls="--", label=f"accept all: precision {y.mean():.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall (pooled)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7)
    paths.append(_save(fig, out / "pr.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    n, conf, frac = reliability(y, table["model"], ECE_BINS)
    ok = n > 0
    edges = np.linspace(0, 1, ECE_BINS + 1)
    ax.bar(edges[:-1][ok], frac[ok], width=1 / ECE_BINS, align="edge", alpha=0.6, edgecolor="k", lw=0.5,
           label="fraction of cells")
    ax.plot(conf[ok], frac[ok], "o-", color="C1", ms=3, label="mean score vs fraction")
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xlabel="model score (probability of cell)", ylabel="fraction of cells",
           title=f"reliability (ECE {m['ece']:.3f}, {numbers['model'].get('calibration')})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    paths.append(_save(fig, out / "reliability.png"))
    return paths


def _save(fig, path):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
