"""The U-Net behind ``roicurate segment`` and its ``unet`` image: the network, the normalisation of its input
image and ``Segmenter``, a trained U-Net with its card (per-pixel probability, then objects).

The network (after U-Net2DS, Neuron 2019 / the Neurofinder U-Nets): 4 down and 4 up blocks of two 3x3
convolution + batch norm + ReLU, 2x2 max-pool down, 2x2 transposed convolution up, skip connections, spatial
dropout after every down block and the bottleneck, one logit per pixel. ``width`` is the first block's channel
count (doubling per level): the literature's half-width network is ``width=32`` (7.8 M parameters, 15.5 MB in
fp16); the bundled ``unet-mean`` uses ``width=16`` (1.9 M, 3.9 MB) so that it trains in minutes on a 2-core CPU.
One input channel: the mean image, the one summary image both pipelines keep (CaImAn files have no max
projection), normalised per image by its 1st and 99th percentiles.

``benchmarks/train_unet.py`` trains it; ``roicurate_plugins/unet/`` (the plugin) runs it.
"""
import numpy as np

from roicurate import RoicurateError
from roicurate.crops import dihedral
from roicurate_plugins.unet import scoring as ev

MODEL = "unet-mean"
ARCH = "unet"
CLASSES = ("background", "neuron")
LEVELS = 4


def unet(in_channels=1, width=16, dropout=0.1, **_):
    """The U-Net (torchnets.UNet: (N, C, H, W) -> (N, 1, H, W) logits, H and W multiples of 16)."""
    from roicurate_plugins.torchnets import UNet
    return UNet(in_channels, width, dropout)


def normalise(image, low=1.0, high=99.0):
    """float32 image mapped so that its ``low`` and ``high`` percentiles become 0 and 1."""
    image = np.asarray(image, np.float32)
    lo, hi = np.percentile(image, [low, high])
    if not hi > lo:
        raise RoicurateError("the image is flat (its 1st and 99th percentiles are equal): nothing to segment")
    return (image - lo) / (hi - lo)


class Segmenter:
    """A trained U-Net with its card: ``probability(image, tta)`` and ``objects(probability)``."""

    def __init__(self, module, card):
        missing = [k for k in ("min_size", "input") if k not in card]
        if missing:
            raise RoicurateError(f"model card of '{card['name']}' has no {', '.join(missing)} (not written by "
                                 f"benchmarks/train_unet.py?)")
        self.module = module.eval()
        self.card = card
        self.threshold = float(card["threshold"])
        self.min_size = int(card["min_size"])
        self.image = card["input"]["image"]
        self.percentiles = tuple(card["input"]["percentiles"])

    @classmethod
    def load(cls, name_or_path=MODEL):
        from roicurate.models import load_weights, read_card, resolve_model_files
        from roicurate.plugins import model_specs
        weights, card_path = resolve_model_files(str(name_or_path), model_specs())
        card = read_card(card_path)
        if card["arch"] != ARCH:
            raise RoicurateError(f"{card_path}: model '{card['name']}' is a '{card['arch']}' ROI classifier, "
                                 f"not a U-Net segmentation model")
        module, digest = load_weights(weights, card, unet)
        card["sha256"] = digest
        return cls(module, card)

    def probability(self, image, tta=False):
        """(H, W) float32 neuron probability; ``tta`` averages the 8 rotations/flips of the image."""
        return probability(self.module, normalise(image, *self.percentiles), tta)

    def objects(self, prob, threshold=None, min_size=None):
        """Label image of the objects: probability >= threshold, 8-connected, at least ``min_size`` pixels."""
        thr = self.threshold if threshold is None else threshold
        return ev.label_objects(prob >= thr, self.min_size if min_size is None else min_size)


def probability(module, image, tta=False):
    """Sigmoid output of ``module`` on a normalised (H, W) image, reflect-padded to a multiple of 16."""
    import torch
    from torch.nn import functional as F
    H, W = image.shape
    step = 2 ** LEVELS
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    x = F.pad(x, (0, -W % step, 0, -H % step), mode="reflect")
    with torch.inference_mode():
        ks = range(8) if tta else (0,)
        p = sum(dihedral(torch.sigmoid(module(dihedral(x, k))), k, inverse=True) for k in ks) / len(ks)
    return p[0, 0, :H, :W].numpy().astype(np.float32)

