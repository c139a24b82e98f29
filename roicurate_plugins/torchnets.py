"""The torch networks of the built-in plugins, in one module that only a model build imports.

The plugin modules (``nets``, ``fourclass``, ``unet``) register their models and commands without importing torch,
so that ``roicurate --help``, ``roicurate models`` and every one-line error start in a fraction of a second; their
build functions import this module on first use. What the networks are is documented where they are registered.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

LEVELS = 4      # U-Net: down/up levels (unet.model.LEVELS says the same for the padding in unet.model.probability)


# ---- nets: ResNet50 and cnn2 ----
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


# ---- fourclass: VGG-style networks ----
DEPTHS = {13: 2, 16: 3, 19: 4}     # convolutions in each of the 128-, 256- and 256-channel stages


class VGG(nn.Module):
    """VGG-style network: ``features`` (3x3 convolutions + batch norm + ReLU, 2x2 max-pools) and ``head``
    (two hidden fully connected layers with dropout, then the class logits)."""

    def __init__(self, in_channels=1, n_out=4, size=50, depth=16, width=1.0, fc=512, dropout=0.5, batch_norm=True):
        super().__init__()
        n = DEPTHS[depth]
        blocks = [(32, 32, 64, 64), (128,) * n, (256,) * n, (256,) * n]
        layers, cin = [], in_channels
        for block in blocks:
            for c in block:
                c = max(1, int(round(c * width)))
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=not batch_norm)]
                layers += [nn.BatchNorm2d(c)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                cin = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = size // 2 // 2 // 2 // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, fc), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(fc, n_out))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.features(x))


# ---- unet ----
def _block(cin, cout, dropout):
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
              nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Dropout2d(dropout)) if dropout else nn.Sequential(*layers)


class UNet(nn.Module):
    """(N, C, H, W) -> (N, 1, H, W) logits; H and W must be multiples of 16 (``probability`` pads)."""

    def __init__(self, in_channels=1, width=16, dropout=0.1):
        super().__init__()
        ch = [width * 2 ** i for i in range(LEVELS + 1)]
        self.down = nn.ModuleList(_block(in_channels if i == 0 else ch[i - 1], ch[i], dropout) for i in range(LEVELS))
        self.bottom = _block(ch[LEVELS - 1], ch[LEVELS], dropout)
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, 2) for i in reversed(range(LEVELS)))
        self.merge = nn.ModuleList(_block(2 * ch[i], ch[i], 0) for i in reversed(range(LEVELS)))
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)
