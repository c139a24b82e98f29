"""What ``roicurate evaluate --out`` and ``train --test`` write from ``evaluate.evaluate_model``'s numbers:
``metrics.json`` (every number), ``scores.csv`` (one row per ROI) and PNG figures: the ROC and precision-recall
curves (the model and every baseline with a score), the model's reliability diagram and, for a K-class model, its
confusion matrix."""
import csv
import json
from pathlib import Path

import numpy as np

from roicurate.evaluate import ECE_BINS, jsonable, pr_curve, reliability, roc_curve
from roicurate.report.figures import figure, roc_pr_lines, save

LABELS = {"model": "model", "accept_all": "accept all", "pipeline": "pipeline's own", "suite2p_builtin": "Suite2p built-in"}


def write_evaluation(out_dir, numbers, table):
    """``metrics.json`` (every number), ``scores.csv`` (one row per ROI) and the figures (ROC, PR, reliability)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(jsonable(numbers), indent=1, allow_nan=False) + "\n")
    extra = [c for c in table if c not in ("recording", "unit", "roi", "label")]
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["recording", "unit", "roi", "label"] + extra)
        for i in range(len(table["label"])):
            w.writerow([table["recording"][i], table["unit"][i], int(table["roi"][i]), int(table["label"][i])]
                       + [_fmt(table[c][i]) for c in extra])
    return write_figures(out, numbers, curves(numbers, table))


def curves(numbers, table):
    """What the evaluation's figures draw: the ROC and precision-recall curves of every ranking score (the model's
    and each baseline's that takes more than one value; accept-all has none) and the model's reliability bins."""
    y = table["label"].astype(bool)
    keys = ["model"] + [k for k in numbers.get("baselines", {}) if len(np.unique(table[f"{k}_score"])) > 1]
    out = {"n": int(len(y)), "cell_fraction": float(y.mean()), "bins": ECE_BINS,
           "reliability": reliability(y, table["model"], ECE_BINS), "scores": {}}
    for k in keys:
        s = table["model" if k == "model" else f"{k}_score"]
        out["scores"][k] = {"roc": roc_curve(y, s)[:2], "pr": pr_curve(y, s)[:2]}
    return out


def _fmt(v):
    return int(v) if isinstance(v, (bool, np.bool_, np.integer)) else repr(float(v))


def write_figures(out, numbers, curves):
    """Write roc.png, pr.png and reliability.png (and confusion.png for K classes) into ``out``; returns their
    paths. ``curves``: what :func:`curves` computed."""
    pooled = lambda k: (numbers if k == "model" else numbers["baselines"][k])["pooled"]
    label = lambda k: f"model ({numbers['model'].get('name')})" if k == "model" else LABELS.get(k, k)
    paths = []

    roc_fig, pr_fig = figure(4.5, 4.5), figure(4.5, 4.5)
    roc_ax, pr_ax = roc_fig.add_subplot(), pr_fig.add_subplot()
    roc_pr_lines(roc_ax, pr_ax, [dict(c, lw=2 if k == "model" else 1, roc_label=f"{label(k)}: AUC {pooled(k)['roc_auc']:.3f}",
                                      pr_label=f"{label(k)}: AP {pooled(k)['pr_auc']:.3f}")
                                 for k, c in curves["scores"].items()])
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({curves['n']} ROIs, pooled)",
               xlim=(0, 1), ylim=(0, 1.01))
    roc_ax.legend(loc="lower right", fontsize=7)
    paths.append(save(roc_fig, out / "roc.png", dpi=110))

    m = pooled("model")
    pr_ax.plot([m["recall"]], [m["precision"]], "o", color="k", label=f"model at threshold {numbers['threshold']:.2f}")
    frac_all = curves["cell_fraction"]
    pr_ax.axhline(frac_all, color="0.7", lw=0.8, ls="--", label=f"accept all: precision {frac_all:.2f}")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (pooled)", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.legend(loc="lower left", fontsize=7)
    paths.append(save(pr_fig, out / "pr.png", dpi=110))

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

