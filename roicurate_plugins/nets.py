"""Networks in plain torch (torchvision has no CPU build here; the code is in torchnets.py, imported on first build)

* ``resnet50``: the Suite2p network of the published study — ResNet50 (bottleneck blocks 3-4-6-3) with one
  input channel per crop channel, a 5x5 first convolution, no max-pool, one sigmoid output. ``width`` scales
  every layer's channel count (64 in the study; the bundled model records what it used in its card).
* ``cnn2``: the small two-layer CNN of the CaImAn study: two blocks of 3x3 convolution + ReLU + 2x2
  max-pool, then a dense head.

Every network returns logits of shape (N, n_out); ``n_out == 1`` means one sigmoid output. Both architectures
also register an ``inference`` form that ``Classifier.predict_proba`` runs: the same logits (to float rounding)
for less work, built from the current weights on every call (``fuse_bn``, ``WindowedCNN2``).
"""
import json
from pathlib import Path

from roicurate.hookspecs import hookimpl
from roicurate.crops import CropSpec
from roicurate.models import ModelSpec

WEIGHTS = Path(__file__).parent / "weights"


# The networks live in torchnets.py, imported on first build: registering them must not import torch.
def resnet50(in_channels=1, n_out=1, width=64, first_stride=1, **_):
    from roicurate_plugins.torchnets import ResNet
    return ResNet(in_channels, n_out, (3, 4, 6, 3), width=width, first_kernel=5, first_stride=first_stride)


def cnn2(in_channels=1, n_out=1, size=50, **kw):
    from roicurate_plugins.torchnets import CNN2
    return CNN2(in_channels, n_out, size=size, **kw)


def fuse_bn(resnet):
    """A copy of ``resnet`` for inference with every BatchNorm folded into the convolution before it."""
    from roicurate_plugins import torchnets
    return torchnets.fuse_bn(resnet)


def WindowedCNN2(cnn):  # noqa: N802 (builds torchnets.WindowedCNN2: cnn2 computed only where a crop is not zero)
    from roicurate_plugins import torchnets
    return torchnets.WindowedCNN2(cnn)


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
        bundled("caiman-cnn2", "caiman", cnn2, "default CaImAn model (mask + max projection, 50x50, at the cell scale; head on shape)"),
    ):
        if spec is not None:
            register(spec)
