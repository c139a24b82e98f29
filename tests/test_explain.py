"""Saliency (guided backprop) and occlusion: exact on models whose answer is known, and meaningful on a trained one."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from roicurate import RoicurateError, explain
from roicurate.crops import CropSpec, make_crops
from roicurate.hookspecs import hookimpl
from roicurate.models import Classifier, ModelSpec, save_model
from roicurate.plugins import model_specs, pm, sources
from roicurate_plugins.nets import cnn2, resnet50


def classifier(module, size, channels=("mask",), classes=("not_cell", "cell"), **crop):
    card = {"name": "t", "arch": "t", "crop": CropSpec(size, channels, binarize=0.0, **crop).to_dict(),
            "classes": list(classes), "threshold": 0.5, "sha256": "-"}
    return Classifier(module, card, None)


@pytest.fixture(scope="module")
def plane(example_suite2p):
    return sources()["suite2p"].read(example_suite2p / "plane0")


class _GuidedFn(torch.autograd.Function):
    """Reference guided ReLU, written the textbook way: grad * (input > 0) * (grad > 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


def _reference(module, x):
    saved = {}
    for m in module.modules():
        if isinstance(m, nn.ReLU):
            saved[m] = m.forward
            m.forward = _GuidedFn.apply
    try:
        x = x.clone().requires_grad_(True)
        module(x)[:, 0].sum().backward()
        return x.grad
    finally:
        for m, f in saved.items():
            m.forward = f


@pytest.mark.parametrize("build", [lambda: resnet50(width=4), lambda: cnn2(size=32, channels=(4, 8), hidden=8)],
                         ids=["resnet50 (one ReLU module reused)", "cnn2"])
def test_guided_backprop_matches_the_textbook_definition_and_restores_the_network(build):
    torch.manual_seed(0)
    module = build().eval()
    for m in module.modules():            # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.weight.data.uniform_(0.5, 1.5)
    module.relu_inplace_probe = nn.ReLU(inplace=True)       # an in-place ReLU (unused) must keep its flag
    x = torch.rand(3, 1, 32, 32)
    got = explain.guided_backprop(module, x, lambda logits: logits[:, 0])
    want = _reference(module, x)
    assert got.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    plain = x.clone().requires_grad_(True)
    module(plain)[:, 0].sum().backward()
    assert not torch.allclose(plain.grad, got)          # the hooks really changed the backward pass
    # the network is exactly as before: no hooks, parameters still trainable, flags kept
    assert all(not m._backward_hooks for m in module.modules())
    assert all(p.requires_grad for p in module.parameters())
    assert module.relu_inplace_probe.inplace and not module.training


def test_guided_backprop_restores_the_network_when_the_target_fails():
    module = cnn2(size=32, channels=(4, 8), hidden=8).eval()

    def broken(logits):
        raise ValueError("boom")

    with pytest.raises(ValueError):
        explain.guided_backprop(module, torch.rand(1, 1, 32, 32), broken)
    assert all(not m._backward_hooks for m in module.modules())
    assert all(p.requires_grad for p in module.parameters())


def test_guided_backprop_needs_relu_modules(plane):
    class FunctionalRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 30 * 30, 1)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    clf = classifier(FunctionalRelu(), 32)
    with pytest.raises(RoicurateError, match="nn.ReLU"):
        explain.saliency(clf, plane, [0])
    ex = explain.explain(clf, plane, [0, 1])            # occlusion still works; saliency says why it is missing
    assert ex["saliency"] is None and "nn.ReLU" in ex["saliency_error"] and ex["occlusion"].shape == (2, 32, 32)


def test_saliency_target_is_the_accepted_class(plane):
    """1-output nets: +logit when the positive class is last, -logit when it is first; K outputs: its column."""
    torch.manual_seed(0)
    net = cnn2(size=32, channels=(4, 8), hidden=8)
    pos_last = explain.saliency(classifier(net, 32), plane, [0, 1], reduce=None)
    clf_first = classifier(net, 32)
    clf_first.card["positive_class"] = "not_cell"
    pos_first = explain.saliency(clf_first, plane, [0, 1], reduce=None)
    assert not np.allclose(pos_last, pos_first)
    x = torch.from_numpy(make_crops(plane, clf_first.crop, [0, 1]))
    np.testing.assert_allclose(pos_first, explain.guided_backprop(net.eval(), x, lambda l: -l[:, 0]).numpy(),
                               rtol=1e-5, atol=1e-7)
    four = cnn2(size=32, n_out=4, channels=(4, 8), hidden=8)
    clf4 = classifier(four, 32, classes=("neuron", "doubtful", "process", "noise"))
    clf4.card["positive_class"] = "neuron"
    np.testing.assert_allclose(explain.saliency(clf4, plane, [2], reduce=None),
                               explain.guided_backprop(four.eval(), torch.from_numpy(make_crops(plane, clf4.crop, [2])),
                                                       lambda l: l[:, 0]).numpy(), rtol=1e-5, atol=1e-7)


class _Linear(nn.Module):
    """score = sum(w * x): the drop from occluding a patch is known exactly."""

    def __init__(self, channels, size):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3))[:, None]


@pytest.mark.parametrize("stride", [1, 3])
def test_occlusion_map_is_the_drop_of_the_patch_centred_on_each_pixel(plane, stride):
    S = 32
    clf = classifier(_Linear(2, S), S, channels=("mask", "mean"))
    fill = np.array([0.0, 0.5], np.float32)
    idx = [3, 7, 20]
    occ = explain.occlusion(clf, plane, idx, window=5, stride=stride, fill=fill, score="logit")
    x = make_crops(plane, clf.crop, idx)
    w = clf.module.w.detach().numpy()[0]
    # the patch centred on (i, j) covers rows i-2..i+2: a 5x5 box sum of w * (x - fill), zero outside the crop
    want = ndimage.correlate(((x - fill[None, :, None, None]) * w).sum(1), np.ones((1, 5, 5)), mode="constant")
    c = np.arange(0, S, stride)
    np.testing.assert_allclose(occ[:, c][:, :, c], want[:, c][:, :, c], rtol=1e-4, atol=1e-3)
    near = np.minimum(np.rint(np.arange(S) / stride).astype(int) * stride, c[-1])     # other pixels: nearest centre
    np.testing.assert_array_equal(occ, occ[:, near][:, :, near])


@pytest.mark.parametrize("fill, window, stride", [(0.0, 5, 1), (0.3, 5, 1), (0.0, 4, 2)])
def test_skipping_patches_that_change_nothing_is_exact(plane, fill, window, stride):
    """The shortcut (patches already equal to fill are not evaluated) gives what brute force gives."""
    torch.manual_seed(0)
    clf = classifier(cnn2(size=32, channels=(4, 8), hidden=8), 32)
    idx = [0, 5]
    got = explain.occlusion(clf, plane, idx, window=window, stride=stride, fill=fill, batch_size=100)
    centres = explain.patch_centres(32, stride)
    masks = explain.patch_masks(centres, 32, window)
    x = torch.from_numpy(make_crops(plane, clf.crop, idx))
    with torch.inference_mode():
        for k in range(len(idx)):
            occluded = torch.where(torch.from_numpy(masks)[:, None], torch.tensor(fill), x[k:k + 1])
            want = explain.scores(clf, x[k:k + 1]) - explain.scores(clf, occluded)
            np.testing.assert_allclose(got[k][centres[:, 0], centres[:, 1]], want.numpy(), atol=2e-6)


def test_rois_are_checked(plane):
    clf = classifier(cnn2(size=32, channels=(4, 8), hidden=8), 32)
    with pytest.raises(RoicurateError, match=f"no ROI {len(plane)}"):
        explain.occlusion(clf, plane, [0, len(plane)])


# ---- a trained model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(caiman_sessions):
    """A small cnn2 trained for a few seconds on the simulated CaImAn recordings 1 and 2 (weighted mask crops; label:
    the component is a simulated soma, not a process or a blob), judged on recording 3, which it never saw."""
    import caiman_files
    src = sources()["caiman"]

    def labelled(i):
        rs = src.read(caiman_sessions[i] / "caiman/cnmf_refit_evaluated.hdf5")
        rs.labels = (caiman_files.simulate(i - 1)["kind"] == "soma").astype(np.int64)       # seeds 0, 1, 2
        return rs
    sets = [labelled(1), labelled(2)]
    crop = CropSpec(64, ("mask",), binarize=0.0)
    x = torch.from_numpy(np.concatenate([make_crops(rs, crop) for rs in sets]))
    y = torch.from_numpy(np.concatenate([rs.labels for rs in sets]).astype(np.float32))
    torch.manual_seed(0)
    net = cnn2(size=64, channels=(8, 16), hidden=32, dropout=0.0)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 32):
            b = order[i:i + 32]
            xb = torch.rot90(x[b], int(torch.randint(0, 4, (1,), generator=g)), (2, 3))
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y[b])
            opt.zero_grad(), loss.backward(), opt.step()
    clf = classifier(net.eval(), 64)
    test = labelled(3)
    p = clf.predict_proba(test)[:, 1]
    assert ((p >= 0.5) == (test.labels > 0)).mean() > 0.85, "the fixture model did not learn"
    return clf, test, p


def _roi_masks(clf, rs, idx, grow=3):
    m = make_crops(rs, clf.crop, idx)[:, 0] > 0
    return m, np.array([ndimage.binary_dilation(k, iterations=grow) for k in m])


def test_occluding_the_roi_itself_lowers_its_score_more_than_occluding_background(trained):
    clf, rs, p = trained
    accepted = np.flatnonzero(p >= 0.5)
    idx = accepted[np.linspace(0, len(accepted) - 1, 24).astype(int)]       # spread over the whole plane
    occ = explain.occlusion(clf, rs, idx)
    mask, grown = _roi_masks(clf, rs, idx)
    inside = np.array([o[m].mean() for o, m in zip(occ, mask)])
    background = np.array([o[~g].mean() for o, g in zip(occ, grown)])
    assert (inside > background).mean() >= 0.8, (inside, background)
    assert np.median(inside) > 0.01


def test_saliency_concentrates_inside_the_dilated_mask(trained):
    clf, rs, p = trained
    idx = np.flatnonzero(p >= 0.5)
    sal = explain.saliency(clf, rs, idx)
    assert sal.shape == (len(idx), 64, 64) and (sal >= 0).all()
    _, grown = _roi_masks(clf, rs, idx)
    density_in = np.array([s[g].mean() for s, g in zip(sal, grown)])
    density_out = np.array([s[~g].mean() for s, g in zip(sal, grown)])
    assert (density_in > 3 * density_out).mean() >= 0.8
    share = np.array([s[g].sum() / s.sum() for s, g in zip(sal, grown)])
    assert np.median(share) > 0.5 > np.median(grown.mean((1, 2)))     # most of the mass on < 1/2 of the crop


# ---- any registered model, plugin models included -------------------------------------------------------------
class TinyPluginNet(nn.Module):
    def __init__(self, in_channels=1, size=40):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                                  nn.Flatten(), nn.Linear(64, 2))

    def forward(self, x):
        return self.body(x)


class _Plugin:
    @hookimpl
    def register_models(self, register):
        register(ModelSpec("tiny-plugin-net", "any", TinyPluginNet, crop=CropSpec(40, binarize=0.0)))


def test_explanations_for_a_plugin_model_loaded_by_name(tmp_path, plane):
    pm.register(_Plugin(), "test-explain-plugin")
    try:
        spec = model_specs()["tiny-plugin-net"]
        card = {"arch": spec.name, "build_kwargs": {"size": 40}, "crop": spec.crop.to_dict(),
                "classes": ["not_cell", "cell"], "threshold": 0.5}
        clf = Classifier.load(save_model(tmp_path, "mine", spec.build(), card))
        ex = explain.explain(clf, plane, [4, 9])
    finally:
        pm.unregister(name="test-explain-plugin")
    assert ex["saliency"].shape == ex["occlusion"].shape == (2, 40, 40) and ex["crops"].shape == (2, 1, 40, 40)
    np.testing.assert_allclose(ex["scores"], clf.predict_proba(plane.subset([4, 9]))[:, 1], rtol=1e-5)


@pytest.mark.parametrize("name", ["suite2p-resnet50", "caiman-cnn2"])
def test_bundled_models_explain(name, example_suite2p, caiman_files):
    specs = model_specs()
    if name not in specs:
        pytest.skip(f"bundled model {name} is not installed yet")
    clf = Classifier.load(name, specs)
    path = {"suite2p": example_suite2p / "plane0", "caiman": caiman_files["evaluated"]}[specs[name].pipeline]
    rs = sources()[specs[name].pipeline].read(path)
    ex = explain.explain(clf, rs, [0, 1], stride=4)
    S = clf.crop.size
    assert ex["saliency"].shape == ex["occlusion"].shape == (2, S, S) and np.isfinite(ex["occlusion"]).all()
