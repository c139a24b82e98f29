"""Why a classifier said what it said, as plain arrays in crop coordinates (what ``roicurate.report.figures`` draws).

* ``saliency``: guided backpropagation (Springenberg et al. 2015). The gradient of the positive-class logit
  with respect to the crop, where every ReLU's backward pass lets only positive gradients through. It is
  built with backward hooks on the network's ``torch.nn.ReLU`` *modules*, removed again afterwards, so it
  works for any registered network, plugin models included, **as long as the network's ReLUs are
  ``nn.ReLU`` modules** (a functional ``F.relu`` / ``torch.relu`` call cannot be hooked; a module reused
  several times, like ResNet's ``self.relu``, is fine). A network without any ``nn.ReLU`` gets a
  ``RoicurateError``, never a silently different map.
* ``occlusion``: a ``window x window`` patch (5x5 by default) slides over the crop with ``stride``; at each
  position the patch is set to ``fill`` and the map records how much the model's score *drops*
  (score of the crop - score of the occluded crop). Positive = those pixels were evidence *for* the accepted
  class; negative = evidence against it. All positions of one ROI are evaluated in batches.

Both use the classifier's own crops (``make_crops(roiset, clf.crop, index)``) and its own module, so they
explain exactly what ``Classifier.predict_proba`` saw.
"""
import numpy as np

from roicurate.common import RoicurateError
from roicurate.crops import make_crops


def _torch():
    import torch
    return torch


def target_logit(clf, logits):
    """The logit of the accepted class: the single output of a 1-output (sigmoid) network — negated if the
    positive class is the first one — or that class's column of a K-output network."""
    if logits.shape[1] == 1:
        return logits[:, 0] if clf.positive == len(clf.classes) - 1 else -logits[:, 0]
    return logits[:, clf.positive]


def _index(roiset, index):
    index = np.arange(len(roiset)) if index is None else np.atleast_1d(np.asarray(index, np.int64))
    bad = index[(index < 0) | (index >= len(roiset))]
    if len(bad):
        raise RoicurateError(f"{roiset.path or 'input'}: no ROI {bad[0]} (it has {len(roiset)} ROIs, "
                             f"numbered 0 to {len(roiset) - 1})")
    return index


class _GuidedReLU:
    """Context manager: while active, every ``nn.ReLU`` of ``module`` passes back only positive gradients.
    Leaves the module exactly as it found it (hooks removed, ``inplace`` flags and parameter
    ``requires_grad`` restored) even when the backward pass fails."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        nn = _torch().nn
        self.relus = [m for m in self.module.modules() if isinstance(m, nn.ReLU)]
        if not self.relus:
            raise RoicurateError(f"guided backpropagation needs the network's ReLUs as torch.nn.ReLU modules; "
                                 f"{type(self.module).__name__} has none (F.relu calls cannot be hooked)")
        self.inplace = [m.inplace for m in self.relus]
        self.grad = [p.requires_grad for p in self.module.parameters()]
        self.handles = []
        try:
            for m in self.relus:
                m.inplace = False          # full backward hooks refuse in-place outputs
                self.handles.append(m.register_full_backward_hook(_clamp_positive))
            for p in self.module.parameters():
                p.requires_grad_(False)    # only the input's gradient is wanted
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for m, flag in zip(self.relus, self.inplace):
            m.inplace = flag
        for p, flag in zip(self.module.parameters(), self.grad):
            p.requires_grad_(flag)
        return False


def _clamp_positive(module, grad_input, grad_output):
    # ReLU's own backward already zeroed the gradient where the input was negative; keep its positive part
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


def guided_backprop(module, x, target):
    """Guided-backprop gradient of ``target(module(x))`` (one value per sample) w.r.t. ``x`` (a float tensor);
    returns a tensor shaped like ``x``. ``module`` should be in eval mode."""
    torch = _torch()
    with _GuidedReLU(module), torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = target(module(x))
        (grad,) = torch.autograd.grad(out.sum(), x)
    return grad.detach()


def saliency(clf, roiset, index=None, reduce="abs", batch_size=64, progress=None):
    """Guided-backprop saliency of the ROIs in ``index`` (all when None), in crop coordinates.

    ``reduce="abs"``: (n, S, S) float32, the largest |gradient| over the crop's channels (what is drawn);
    ``reduce=None``: the raw (n, C, S, S) gradients. ``progress(k)`` is called as ROIs are done."""
    torch = _torch()
    index = _index(roiset, index)
    module = clf.module
    was_training = module.training
    module.eval()
    out = []
    try:
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            x = torch.from_numpy(make_crops(roiset, clf.crop, idx)).to(clf.device)
            g = guided_backprop(module, x, lambda logits: target_logit(clf, logits)).float().cpu().numpy()
            out.append(np.abs(g).max(1) if reduce == "abs" else g)
            if progress:
                progress(len(idx))
    finally:
        module.train(was_training)
    S, C = clf.crop.size, len(clf.crop.channels)
    empty = np.zeros((0, S, S) if reduce == "abs" else (0, C, S, S), np.float32)
    return np.concatenate(out).astype(np.float32) if out else empty


def scores(clf, x, kind="proba", prior=None, module=None):
    """Score of a batch of crops (tensor): ``proba`` = probability of the accepted class (what the threshold
    is compared with; ``prior``: the ROIs' shape-prior logits when the model has one, see
    ``Classifier.prior_logits``), ``logit`` = the network's logit (does not saturate for confident ROIs).
    ``module``: the network to run (default: the classifier's plain one)."""
    logits = (module or clf.module)(x)
    if kind == "logit":
        return target_logit(clf, logits)
    if kind != "proba":
        raise RoicurateError(f"unknown score '{kind}' (known: proba, logit)")
    if prior is not None:
        prior = np.broadcast_to(prior, (len(logits),))
    return _torch().from_numpy(clf.logits_to_proba(logits, prior)[:, clf.positive])


def _prior(clf, roiset, index):
    """The shape-prior logits of the ROIs in ``index`` (None for a model without a prior). The prior depends on
    the ROI's mask, not on the crop: occlusion leaves it unchanged, so the maps show the network's share."""
    return clf.prior_logits(roiset.subset(index))       # per-ROI features: the selected ROIs alone suffice


def patch_centres(size, stride=1):
    """(P, 2) centres of the occlusion patches: a grid of pixels (0, stride, 2*stride ...) on both axes."""
    c = np.arange(0, size, stride)
    cy, cx = np.meshgrid(c, c, indexing="ij")
    return np.stack([cy.ravel(), cx.ravel()], 1)


def patch_masks(centres, size, window=5):
    """(P, S, S) bool: the ``window x window`` patch centred on each centre, clipped at the crop's edge."""
    lo, r = centres - window // 2, np.arange(size)
    iny = (r[None, :] >= lo[:, :1]) & (r[None, :] < lo[:, :1] + window)
    inx = (r[None, :] >= lo[:, 1:]) & (r[None, :] < lo[:, 1:] + window)
    return iny[:, :, None] & inx[:, None, :]


def _touched(changed, centres, window):
    """Which patches contain at least one pixel of the boolean (S, S) image ``changed`` (integral image)."""
    S = changed.shape[0]
    ii = np.pad(changed.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    lo = np.clip(centres - window // 2, 0, S)
    hi = np.clip(centres - window // 2 + window, 0, S)
    return (ii[hi[:, 0], hi[:, 1]] - ii[lo[:, 0], hi[:, 1]] - ii[hi[:, 0], lo[:, 1]] + ii[lo[:, 0], lo[:, 1]]) > 0


def occlusion(clf, roiset, index=None, window=5, stride=1, fill=0.0, score="proba", batch_size=64,
              progress=None, skip_unchanged=True, fast=True, occlude=None):
    """Occlusion maps (n, S, S) float32 of the ROIs in ``index`` (all when None), in crop coordinates.

    ``fill``: the value an occluded pixel gets, one number or one per crop channel (0 = background for a
    mask channel, the window mean for a z-scored image channel). With ``stride`` > 1 each pixel takes the
    value of the nearest patch centre. Patches that already hold ``fill`` everywhere (the empty part of a
    mask-only crop) are not evaluated (``skip_unchanged``): the occluded crop *is* the crop, so their drop is
    exactly 0. ``fast``: run the architecture's ``inference`` form (e.g. batch norm folded into the convolutions:
    the same scores to float rounding, as ``predict_proba`` runs it); both are the naive method's answer, for less
    work (tests/test_fast_occlusion.py). ``occlude``: the names of the crop channels a patch hides (default: all);
    hiding only ``mask`` asks what the outline contributes, and for a model with an image channel it keeps the
    skipping above (an image is nowhere equal to the fill). ``progress(k)`` is called as ROIs are done."""
    torch = _torch()
    index = _index(roiset, index)
    S, C = clf.crop.size, len(clf.crop.channels)
    fill = np.broadcast_to(np.asarray(fill, np.float32).ravel(), (C,)) if np.size(fill) in (1, C) else None
    if fill is None:
        raise RoicurateError(f"occlusion fill: give one value or one per crop channel ({C})")
    if window < 1 or stride < 1:
        raise RoicurateError(f"occlusion window ({window}) and stride ({stride}) must be >= 1")
    centres = patch_centres(S, stride)
    fill_t = torch.from_numpy(fill.copy()).to(clf.device)[None, :, None, None]
    hide = np.ones(C, bool) if occlude is None else np.isin(clf.crop.channels, list(occlude))
    if not hide.any():
        raise RoicurateError(f"occlusion: the model has no channel {', '.join(occlude)} "
                             f"(its channels: {', '.join(clf.crop.channels)})")
    hide_t = torch.from_numpy(hide).to(clf.device)[None, :, None, None]
    grid = np.arange(0, S, stride)
    near = np.minimum(np.rint(np.arange(S) / stride).astype(np.int64), len(grid) - 1)   # nearest centre per pixel
    out = np.zeros((len(index), S, S), np.float32)
    prior = _prior(clf, roiset, index)
    module = clf.module
    was_training = module.training
    module.eval()
    inference = getattr(clf.spec, "inference", None) if fast else None
    try:
        with torch.inference_mode():
            net = inference(module).eval() if inference else module
            for k, i in enumerate(index):
                c = make_crops(roiset, clf.crop, [i])
                crop = torch.from_numpy(c).to(clf.device)                           # (1, C, S, S)
                pk = None if prior is None else prior[k]
                base = float(scores(clf, crop, score, pk, net)[0])
                # a patch that already holds the fill value everywhere changes nothing: its drop is exactly 0
                # (most of a mask-only crop), so only the other positions go through the network
                live = np.flatnonzero(_touched((c[0][hide] != fill[hide, None, None]).any(0), centres, window)) \
                    if skip_unchanged else np.arange(len(centres))
                drops = np.zeros(len(centres), np.float32)
                for start in range(0, len(live), batch_size):
                    pos = live[start:start + batch_size]
                    m = torch.from_numpy(patch_masks(centres[pos], S, window)).to(clf.device)[:, None]
                    x = torch.where(m & hide_t, fill_t, crop).contiguous(memory_format=torch.channels_last)
                    drops[pos] = base - scores(clf, x, score, pk, net).float().cpu().numpy()
                out[k] = drops.reshape(len(grid), len(grid))[near][:, near]
                if progress:
                    progress(1)
    finally:
        module.train(was_training)
    return out


def explain(clf, roiset, index=None, window=5, stride=1, fill=0.0, score="proba", progress=None, occlude=None):
    """Everything a report panel needs for the ROIs in ``index``, as a dict of arrays:
    ``index`` (n,), ``crops`` (n, C, S, S), ``scores`` (n,) probability of the accepted class,
    ``saliency`` (n, S, S) or None when the network has no ``nn.ReLU`` modules (``saliency_error`` says why),
    ``occlusion`` (n, S, S)."""
    import torch
    index = _index(roiset, index)
    crops = make_crops(roiset, clf.crop, index)
    prior = _prior(clf, roiset, index)
    with torch.inference_mode():
        p = np.concatenate([np.zeros(0)] + [scores(clf, torch.from_numpy(crops[i:i + 256]).to(clf.device), "proba",
                                                   None if prior is None else prior[i:i + 256]).double().cpu().numpy()
                                            for i in range(0, len(index), 256)])
    result = {"index": index, "crops": crops, "scores": p, "saliency": None, "saliency_error": None}
    try:
        result["saliency"] = saliency(clf, roiset, index)
    except RoicurateError as e:
        result["saliency_error"] = str(e)
    result["occlusion"] = occlusion(clf, roiset, index, window=window, stride=stride, fill=fill, score=score,
                                    progress=progress, occlude=occlude)
    return result
