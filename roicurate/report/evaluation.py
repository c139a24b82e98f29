"""PNG figures: the evaluation's ROC and precision-recall curves (the model and every baseline with a score), the
model's reliability diagram and, for a K-class model, its confusion matrix; and the two helpers every roicurate
figure is made with (matplotlib's object API: no pyplot, no global backend change)."""
import numpy as np

LABELS = {"model": "model", "accept_all": "accept all", "pipeline": "pipeline's own", "suite2p_builtin": "Suite2p built-in"}


def figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi=100, tight=True):
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None, facecolor="white")
    return path


def write_figures(out, numbers, curves):
    """Write roc.png, pr.png and reliability.png into ``out``; returns their paths. ``curves``: what
    ``evaluate.curves`` computed (this module draws, it computes no metric)."""
    pooled = lambda k: (numbers if k == "model" else numbers["baselines"][k])["pooled"]
    label = lambda k: f"model ({numbers['model'].get('name')})" if k == "model" else LABELS.get(k, k)
    paths = []

    fig = figure(4.5, 4.5)
    ax = fig.add_subplot()
    for k, c in curves["scores"].items():
        fpr, tpr = c["roc"]
        ax.plot(fpr, tpr, label=f"{label(k)}: AUC {pooled(k)['roc_auc']:.3f}", lw=2 if k == "model" else 1)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({curves['n']} ROIs, pooled)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    paths.append(save(fig, out / "roc.png", dpi=110))

    fig = figure(4.5, 4.5)
    ax = fig.add_subplot()
    for k, c in curves["scores"].items():
        p, r = c["pr"]
        ax.step(np.r_[0, r], np.r_[p[:1], p], where="pre", label=f"{label(k)}: AP {pooled(k)['pr_auc']:.3f}",
                lw=2 if k == "model" else 1)
    m = pooled("model")
    ax.plot([m["recall"]], [m["precision"]], "o", color="k", label=f"model at threshold {numbers['threshold']:.2f}")
    frac_all = curves["cell_fraction"]
    ax.axhline(frac_all, color="0.7", lw=0.8, ls="--", label=f"accept all: precision {frac_all:.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall (pooled)", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7)
    paths.append(save(fig, out / "pr.png", dpi=110))

    fig = figure(4.5, 4.5)
    ax = fig.add_subplot()
    n, conf, frac = curves["reliability"]
    bins = curves["bins"]
    ok = n > 0
    edges = np.linspace(0, 1, bins + 1)
    ax.bar(edges[:-1][ok], frac[ok], width=1 / bins, align="edge", alpha=0.6, edgecolor="k", lw=0.5,
           label="fraction of cells")
    ax.plot(conf[ok], frac[ok], "o-", color="C1", ms=3, label="mean score vs fraction")
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xlabel="model score (probability of cell)", ylabel="fraction of cells",
           title=f"reliability (ECE {m['ece']:.3f}, {numbers['model'].get('calibration')})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    paths.append(save(fig, out / "reliability.png", dpi=110))
    if "classes" in numbers:
        paths.append(confusion_figure(numbers["classes"]["pooled"], out / "confusion.png"))
    return paths


def confusion_figure(m, path, title="pooled"):
    """The K x K confusion matrix of ``evaluate.class_metrics`` (rows: true class, columns: predicted)."""
    cm, names = np.asarray(m["confusion_matrix"]), m["classes"]
    k = len(names)
    fig = figure(1.2 * k + 1.6, 1.1 * k + 1.2)
    ax = fig.add_subplot()
    ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        frac = v / max(cm[i].sum(), 1)
        ax.text(j, i, str(v), ha="center", va="center", fontsize=10, color="white" if frac > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class (most probable)", ylabel="labelled class",
           title=f"{title}: accuracy {m['accuracy']:.3f} (majority class {m['majority_rate']:.3f})")
    ax.title.set_fontsize(9)
    return save(fig, path, dpi=110)

