"""Named operating points (roicurate/training/points.py), checked against a plain loop over every threshold."""
import numpy as np
import pytest

from roicurate.training.outoflab import nested_metrics
from roicurate.training.points import PRECISION, PRECISION_RECALL_FLOOR, choose_points


def three_labs(seed=0, noisy_lab=1.0):
    """Three labs of 300 ROIs with different cell fractions; lab c's scores overlap by ``noisy_lab``."""
    rng = np.random.default_rng(seed)
    y, q, g = [], [], []
    for lab, frac, spread in (("a", 0.8, 0.6), ("b", 0.4, 0.6), ("c", 0.6, noisy_lab)):
        yy = rng.random(300) < frac
        z = np.where(yy, 1.0, -1.0) + rng.normal(0, spread, 300)
        y.append(yy)
        q.append(1 / (1 + np.exp(-z)))
        g += [lab] * 300
    return np.concatenate(y), np.concatenate(q), np.array(g)


def lab_numbers(y, q, g, t):
    """{lab: (precision, recall, F1, accept-all F1)} at threshold t, by hand."""
    out = {}
    for lab in np.unique(g):
        yy, acc = y[g == lab], q[g == lab] >= t
        tp = (yy & acc).sum()
        p = tp / acc.sum() if acc.sum() else 1.0
        r = tp / yy.sum()
        out[lab] = (p, r, 2 * p * r / (p + r) if tp else 0.0, 2 * yy.mean() / (1 + yy.mean()))
    return out


def pooled_f1(y, q, t):
    acc = q >= t
    return 2 * (acc & y).sum() / (acc.sum() + y.sum())


def test_points_follow_their_rules():
    y, q, g = three_labs()
    pts = choose_points(y, q, g)
    assert set(pts) == {"recall", "balanced", "precision"}
    # recall: every lab >= 0.85 there, and the next higher score would break it for some lab
    t = pts["recall"]["threshold"]
    assert min(r for _, r, _, _ in lab_numbers(y, q, g, t).values()) >= 0.85
    above = q[q > t].min()
    assert min(r for _, r, _, _ in lab_numbers(y, q, g, above).values()) < 0.85
    # balanced: the best pooled F1 among thresholds where every lab beats accepting all
    ok = [s for s in np.unique(q) if all(f >= base for _, _, f, base in lab_numbers(y, q, g, s).values())]
    best = max(ok, key=lambda s: pooled_f1(y, q, s))
    assert pts["balanced"]["threshold"] == pytest.approx(best)
    assert pts["balanced"]["pooled_f1"] == pytest.approx(pooled_f1(y, q, best))
    assert "accept-all" in pts["balanced"]["rule"]
    # precision: reachable here; the lowest threshold with every lab's precision >= 0.9 (recall floor kept)
    reach = [s for s in np.unique(q) if all(p >= PRECISION and r >= PRECISION_RECALL_FLOOR
                                            for p, r, _, _ in lab_numbers(y, q, g, s).values())]
    assert pts["precision"]["threshold"] == pytest.approx(min(reach))
    assert pts["precision"]["lowest_lab_precision"] >= PRECISION
    assert pts["recall"]["threshold"] < pts["precision"]["threshold"]


def test_an_unreachable_precision_is_stated_with_what_was_reached():
    y, q, g = three_labs(noisy_lab=6.0)          # lab c: scores nearly independent of the label
    pts = choose_points(y, q, g)
    p = pts["precision"]
    assert p["lowest_lab_precision"] < PRECISION
    assert f"{p['lowest_lab_precision']:.2f}" in p["rule"] and "no threshold" in p["rule"]
    kept = {lab: n for lab, n in lab_numbers(y, q, g, p["threshold"]).items()}
    assert min(r for _, r, _, _ in kept.values()) >= PRECISION_RECALL_FLOOR
    assert min(pr for pr, _, _, _ in kept.values()) == pytest.approx(p["lowest_lab_precision"])


def test_nested_points_choose_each_lab_on_the_others():
    y, q, g = three_labs()
    nested = nested_metrics(y, q, None, g)["points"]
    for name in ("recall", "balanced", "precision"):
        assert set(nested[name]) == {"a", "b", "c"}
    # lab a's precision point comes from labs b and c alone: changing lab a's scores leaves it unchanged
    q2 = q.copy()
    q2[g == "a"] = q2[g == "a"] ** 3
    again = nested_metrics(y, q2, None, g)["points"]
    assert again["precision"]["a"]["threshold"] == nested["precision"]["a"]["threshold"]
    assert again["precision"]["b"]["threshold"] != nested["precision"]["b"]["threshold"]
