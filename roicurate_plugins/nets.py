"""Networks in plain torch (torchvision has no CPU build here) and the models built on them.

* ``resnet50``: the Suite2p network of the published study — ResNet50 (bottleneck blocks 3-4-6-3) with one
  input channel per crop channel, a 5x5 first convolution, no max-pool, one sigmoid output. ``width`` scales
  every layer's channel count (64 in the study; the bundled model records what it used in its card).
* ``cnn2``: the small two-layer CNN of the CaImAn study: two blocks of 3x3 convolution + ReLU + 2x2
  max-pool, then a dense head.

Every network returns logits of shape (N, n_out); ``n_out == 1`` means one sigmoid output. Both architectures
also register an ``inference`` form that ``Classifier.predict_proba`` runs: the same logits (to float rounding)
for less work, built from the current weights on every call (``fuse_bn``, ``WindowedCNN2``).
"""
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from roicurate.hookspecs import hookimpl
from roicurate.crops import CropSpec
from roicurate.models import ModelSpec

WEIGHTS = Path(__file__).parent / "weights"


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet with bottleneck blocks; layer names follow torchvision (conv1, layer1..layer4, fc) so that
    ``--freeze-until layer3`` means the same thing as in the transfer-learning literature."""

    def __init__(self, in_channels=1, n_out=1, blocks=(3, 4, 6, 3), width=64, first_kernel=5, first_stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, first_kernel, first_stride, first_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin, layers = width, []
        for i, n in enumerate(blocks):
            w = width * 2 ** i
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w * Bottleneck.expansion
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, n_out)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: each block starts as identity
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CNN2(nn.Module):
    """Two 3x3 conv + ReLU + max-pool blocks and a dense head (the CaImAn study's small network)."""

    def __init__(self, in_channels=1, n_out=1, size=50, channels=(32, 64), hidden=128, dropout=0.5):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        flat = c2 * (size // 4) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.head(self.features(x))


def fuse_bn(resnet):
    """A copy of ``resnet`` for inference with every BatchNorm folded into the convolution before it: one pass
    less over every activation map."""
    net = copy.deepcopy(resnet)
    pairs = [(net, "conv1", "bn1")]
    for block in net.modules():
        if isinstance(block, Bottleneck):
            pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv, bn in pairs:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return net


class WindowedCNN2(nn.Module):
    """``cnn2`` for inference, computed only where a crop is not zero: a mask crop is empty outside its ROI, and
    there every activation is the network's response to an empty crop. Each batch runs the convolutions on the
    smallest window that holds its non-zero pixels and their receptive fields, and the dense layer on the features
    that differ from the empty crop's; the logits are the plain network's (to float rounding). Batches of
    similar-sized ROIs (``predict_proba`` sorts them) keep the windows small. Max-pooling comes before the ReLU
    here: the same values (ReLU is monotonic), a quarter of them to rectify."""

    def __init__(self, cnn):
        super().__init__()
        self.conv1, _, self.pool1, self.conv2, _, self.pool2 = cnn.features
        self.fc, self.rest = cnn.head[1], cnn.head[2:]
        self.empty = None

    def _empty(self, x):
        """The empty crop's pooled map (zero-padded as conv2 sees it), features and dense-layer output."""
        if self.empty is None or self.empty[0] != x.shape[1:]:
            pooled = F.relu(self.pool1(self.conv1(x.new_zeros(1, *x.shape[1:]))))
            feats = F.relu(self.pool2(self.conv2(pooled)))
            self.empty = x.shape[1:], F.pad(pooled, (1, 1, 1, 1)), feats, self.fc(feats.flatten(1))
        return self.empty[1:]

    def forward(self, x):
        empty_pooled, empty_feats, empty_hidden = self._empty(x)
        busy = x.ne(0).any(1).any(0)
        if not busy.any():
            return self.rest(empty_hidden.repeat(len(x), 1))      # a copy: the head's ReLU works in place
        rows, cols = busy.any(1).nonzero()[:, 0], busy.any(0).nonzero()[:, 0]
        P, Q = empty_pooled.shape[-1] - 2, empty_feats.shape[-1]
        (p0, p1), (q0, q1) = _cells(rows[0], rows[-1], P), _cells(cols[0], cols[-1], P)
        (c0, c1), (d0, d1) = _cells(p0, p1, Q), _cells(q0, q1, Q)
        # pooled cells p0..p1 see input rows 2p0-1 .. 2p1+2, zero outside the busy ones (and conv1's own zero
        # padding past the crop's edge: hence pad by one and convolve without padding)
        x = F.pad(x, (1, 1, 1, 1))[:, :, 2 * p0:2 * p1 + 4, 2 * q0:2 * q1 + 4]
        pooled = F.relu(self.pool1(F.conv2d(x, self.conv1.weight, self.conv1.bias)))
        # feature cells c0..c1 see pooled cells 2c0-1 .. 2c1+2: the empty crop's values around the window
        region = empty_pooled[:, :, 2 * c0:2 * c1 + 4, 2 * d0:2 * d1 + 4].expand(len(x), -1, -1, -1)
        region = region.contiguous(memory_format=torch.channels_last)
        region[:, :, p0 + 1 - 2 * c0:p1 + 2 - 2 * c0, q0 + 1 - 2 * d0:q1 + 2 - 2 * d0] = pooled
        feats = F.relu(self.pool2(F.conv2d(region, self.conv2.weight, self.conv2.bias)))
        changed = (feats - empty_feats[:, :, c0:c1 + 1, d0:d1 + 1]).flatten(1)
        weight = self.fc.weight.view(-1, *empty_feats.shape[1:])[:, :, c0:c1 + 1, d0:d1 + 1].flatten(1)
        return self.rest(torch.addmm(empty_hidden, changed, weight.t()))


def _cells(first, last, n):
    """The cells of a 3x3 convolution + 2x2 max-pool (cell i sees input positions 2i-1 .. 2i+2, n cells) that
    see any input position from ``first`` to ``last``."""
    return max(0, (int(first) - 1) // 2), min(n - 1, (int(last) + 1) // 2)


def resnet50(in_channels=1, n_out=1, width=64, first_stride=1, **_):
    return ResNet(in_channels, n_out, (3, 4, 6, 3), width=width, first_kernel=5, first_stride=first_stride)


def cnn2(in_channels=1, n_out=1, size=50, **kw):
    return CNN2(in_channels, n_out, size=size, **kw)


def bundled(name, pipeline, build, description):
    """A trained model shipped in weights/: its crop, classes, threshold, positive class and class rule come from
    its card. None when the files are not there."""
    weights = WEIGHTS / f"{name}.safetensors"
    card_path = weights.with_suffix(".json")
    if not card_path.exists():
        return None
    card = json.loads(card_path.read_text())
    return ModelSpec(name, pipeline, build, crop=CropSpec.from_dict(card["crop"]), classes=tuple(card["classes"]),
                     threshold=float(card["threshold"]), weights=str(weights), build_kwargs=card.get("build_kwargs", {}),
                     description=description, positive_class=card.get("positive_class"),
                     class_rule=card.get("class_rule"))


@hookimpl
def register_models(register):
    register(ModelSpec("resnet50", "any", resnet50, inference=fuse_bn,
                       description="ResNet50 (3-4-6-3 bottlenecks), 5x5 first conv, no max-pool, sigmoid output"))
    register(ModelSpec("cnn2", "any", cnn2, inference=WindowedCNN2,
                       description="two 3x3 conv + max-pool blocks and a dense head"))
    for spec in (
        bundled("suite2p-resnet50", "suite2p", resnet50, "default Suite2p model (mask + max projection, 64x64, at the cell scale)"),
        bundled("caiman-cnn2", "caiman", cnn2, "default CaImAn model (mask + max projection, 50x50, at the cell scale)"),
    ):
        if spec is not None:
            register(spec)
