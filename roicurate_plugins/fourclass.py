"""Built-in plugin: four-class networks — neuron / doubtful / process / noise.

A study of CaImAn components (50x50 crops) relabelled "non-neuron" into *process* (dendrites: worth keeping for
some analyses) and *noise*, and "unsure" into *doubtful*, then trained VGG-style networks of 13, 16 and 19 weight
layers (the 16-layer one best, 90.3 % four-class accuracy; a plain CNN 80 %). Registered here:

* ``vgg13-4c``, ``vgg16-4c``, ``vgg19-4c``: conv 32-32-64-64, pool, 128 x n, pool, 256 x n, pool, 256 x n, pool
  (n = 2, 3, 4: 10, 13, 16 convolutions), then FC ``fc`` - FC ``fc`` - FC 4 (``--build fc=1024`` for the wider
  head), 3x3 convolutions with batch norm, dropout 0.5 after each hidden FC layer. For 50x50 (CaImAn) or 64x64
  (Suite2p) crops; ``width`` scales every convolution's channels.
* ``resnet50-4c``: the ResNet50 of ``nets.py`` with four outputs, at 1/4 width with a stride-2 first convolution
  (as ``suite2p-resnet50``; ``--build width=64 --build first_stride=1`` for the full network).
* ``cnn2-4c``: the plain two-layer CNN of ``nets.py`` with four outputs (the study's baseline).
* ``caiman-vgg16-4c``: ``vgg16-4c`` trained on simulated CaImAn runs (``benchmarks/train_fourclass.py``).

Every architecture carries :data:`SIM_CLASS_RULE`, the rule ``roicurate train`` uses to derive the four classes
from ground truth with object classes (the simulations' ``soma`` / ``process`` / ``out_of_focus``), unless
``--class-rule`` names another. ``roicurate apply --also-accept process`` accepts processes too.
"""
from roicurate.hookspecs import hookimpl
from roicurate.models import ModelSpec
from roicurate_plugins.nets import bundled, cnn2, resnet50

CLASSES = ("neuron", "doubtful", "process", "noise")

# How a ROI's one-to-one ground-truth partner (Hungarian assignment on IoU, the datasets' label protocol) makes
# its class; the first matching rule wins, ROIs without a partner or matched by no rule are noise.
SIM_CLASS_RULE = {
    "classes": list(CLASSES),
    "positive": "neuron",
    "rules": [
        {"class": "neuron", "truth_classes": ["soma"], "min_iou": 0.5},
        {"class": "doubtful", "truth_classes": ["soma"], "min_iou": 0.1},
        {"class": "process", "truth_classes": ["process"], "min_iou": 0.1},
    ],
    "default": "noise",
    "note": "neuron: the partner is a soma at IoU >= 0.5 (the datasets' cell label); doubtful: a soma at "
            "0.1 <= IoU < 0.5 (part of a cell, or a cell merged with something else); process: a dendrite/axon "
            "at IoU >= 0.1; noise: everything else (out-of-focus blobs, no partner, IoU < 0.1)",
}


def _vgg(*args):              # the network lives in torchnets.py: registering the models must not import torch
    from roicurate_plugins.torchnets import VGG
    return VGG(*args)


def vgg13_4c(in_channels=1, n_out=4, size=50, width=1.0, fc=512, dropout=0.5, batch_norm=True):
    return _vgg(in_channels, n_out, size, 13, width, fc, dropout, batch_norm)


def vgg16_4c(in_channels=1, n_out=4, size=50, width=1.0, fc=512, dropout=0.5, batch_norm=True):
    return _vgg(in_channels, n_out, size, 16, width, fc, dropout, batch_norm)


def vgg19_4c(in_channels=1, n_out=4, size=50, width=1.0, fc=512, dropout=0.5, batch_norm=True):
    return _vgg(in_channels, n_out, size, 19, width, fc, dropout, batch_norm)


def resnet50_4c(in_channels=1, n_out=4, width=16, first_stride=2):
    return resnet50(in_channels, n_out, width=width, first_stride=first_stride)


def cnn2_4c(in_channels=1, n_out=4, size=50, **kw):
    return cnn2(in_channels, n_out, size=size, **kw)


def _arch(name, build, description):
    return ModelSpec(name, "any", build, classes=CLASSES, positive_class="neuron", class_rule=SIM_CLASS_RULE,
                     description=description)


@hookimpl
def register_models(register):
    register(_arch("vgg13-4c", vgg13_4c, "VGG-13-style (10 conv + 3 FC), four classes"))
    register(_arch("vgg16-4c", vgg16_4c, "VGG-16-style (13 conv + 3 FC), four classes"))
    register(_arch("vgg19-4c", vgg19_4c, "VGG-19-style (16 conv + 3 FC), four classes"))
    register(_arch("resnet50-4c", resnet50_4c, "ResNet50 at 1/4 width, stride-2 first conv, four classes"))
    register(_arch("cnn2-4c", cnn2_4c, "two 3x3 conv + max-pool blocks and a dense head, four classes"))
    spec = bundled("caiman-vgg16-4c", "caiman", vgg16_4c,
                   "four-class CaImAn model (neuron/doubtful/process/noise; mask crops, 50x50; simulations only)")
    if spec is not None:
        register(spec)
