"""Networks in plain torch (torchvision has no CPU build here) and the models built on them.

* ``resnet50``: the Suite2p network of the published study — ResNet50 (bottleneck blocks 3-4-6-3) with one
  input channel per crop channel, a 5x5 first convolution, no max-pool, one sigmoid output. ``width`` scales
  every layer's channel count (64 in the study; the bundled model records what it used in its card).
* ``cnn2``: the small two-layer CNN of the CaImAn study: two blocks of 3x3 convolution + ReLU + 2x2
  max-pool, then a dense head.

Every network returns logits of shape (N, n_out); ``n_out == 1`` means one sigmoid output.
"""
import json
from pathlib import Path

import torch
from torch import nn

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


def resnet50(in_channels=1, n_out=1, width=64, first_stride=1, **_):
    return ResNet(in_channels, n_out, (3, 4, 6, 3), width=width, first_kernel=5, first_stride=first_stride)


def cnn2(in_channels=1, n_out=1, size=50, **kw):
    return CNN2(in_channels, n_out, size=size, **kw)


def _bundled(name, arch, pipeline, build, description):
    """A trained model shipped in weights/: its crop, classes and threshold come from its card."""
    weights = WEIGHTS / f"{name}.safetensors"
    card_path = weights.with_suffix(".json")
    if not card_path.exists():
        return None
    card = json.loads(card_path.read_text())
    return ModelSpec(name, pipeline, build, crop=CropSpec.from_dict(card["crop"]), classes=tuple(card["classes"]),
                     threshold=float(card["threshold"]), weights=str(weights), build_kwargs=card.get("build_kwargs", {}),
                     description=description)


@hookimpl
def register_models(register):
    register(ModelSpec("resnet50", "any", resnet50,
                       description="ResNet50 (3-4-6-3 bottlenecks), 5x5 first conv, no max-pool, sigmoid output"))
    register(ModelSpec("cnn2", "any", cnn2, description="two 3x3 conv + max-pool blocks and a dense head"))
    for spec in (
        _bundled("suite2p-resnet50", "resnet50", "suite2p", resnet50, "default Suite2p model (mask crops, 64x64)"),
        _bundled("caiman-cnn2", "cnn2", "caiman", cnn2, "default CaImAn model (mask crops, 50x50)"),
    ):
        if spec is not None:
            register(spec)
