"""Issue 16 item 13: the occlusion a report runs (windows that change nothing skipped, the rest batched through the
architecture's inference form) gives the naive method's maps: every window, one by one, through the plain network."""
import numpy as np
import pytest

from roicurate import explain
from roicurate.models import Classifier
from roicurate.plugins import model_specs, sources


@pytest.fixture(scope="module")
def plane(example_suite2p):
    return sources()["suite2p"].read(example_suite2p / "plane1")


def naive(clf, roiset, index, window=5, sample=None, occlude=None):
    """Occlusion written the obvious way: every patch position (or ``sample`` random ones), plain network; NaN at
    the positions not computed."""
    import torch
    from roicurate.crops import make_crops
    S = clf.crop.size
    hide = torch.tensor([occlude is None or c in occlude for c in clf.crop.channels])[None, :, None, None]
    centres = explain.patch_centres(S, 1)
    masks = explain.patch_masks(centres, S, window)
    if sample:
        pick = np.random.default_rng(0).choice(len(centres), sample, replace=False)
        masks, centres = masks[pick], centres[pick]
    prior = clf.prior_logits(roiset.subset(index))
    out = np.full((len(index), S, S), np.nan, np.float32)
    with torch.inference_mode():
        for k, i in enumerate(index):
            x = torch.from_numpy(make_crops(roiset, clf.crop, [i]))
            pk = None if prior is None else prior[k]
            base = float(explain.scores(clf, x, "proba", pk)[0])
            for start in range(0, len(masks), 256):
                m = torch.from_numpy(masks[start:start + 256])[:, None]
                occluded = torch.where(m & hide, torch.tensor(0.0), x)
                c = centres[start:start + 256]
                out[k, c[:, 0], c[:, 1]] = base - explain.scores(clf, occluded, "proba", pk).float().numpy()
    return out


@pytest.mark.parametrize("name,n,sample", [("suite2p-resnet50", 1, 800), ("caiman-cnn2", 3, None)])
def test_fast_occlusion_equals_the_naive_one(plane, name, n, sample):
    clf = Classifier.load(name, model_specs())
    p = clf.predict_proba(plane)[:, clf.positive]
    index = np.argsort(np.abs(p - clf.threshold))[:n]            # closest calls: the maps are not all zero
    fast = explain.occlusion(clf, plane, index)
    want = naive(clf, plane, index, sample=sample)
    done = ~np.isnan(want)
    np.testing.assert_allclose(fast[done], want[done], atol=2e-5)
    assert np.abs(want[done]).max() > 1e-3
    # hiding the mask alone (what a report does): windows over the empty part of the mask are skipped, exactly
    fast_mask = explain.occlusion(clf, plane, index, occlude=("mask",))
    want_mask = naive(clf, plane, index, sample=sample, occlude=("mask",))
    np.testing.assert_allclose(fast_mask[done], want_mask[done], atol=2e-5)
    assert (fast_mask[done] == 0).sum() > 100 and np.abs(want_mask[done]).max() > 1e-3
    if sample is None:     # everywhere, too, with the same code minus both shortcuts (cheap for cnn2 only)
        plain = explain.occlusion(clf, plane, index, skip_unchanged=False, fast=False)
        np.testing.assert_allclose(fast, plain, atol=2e-5)
