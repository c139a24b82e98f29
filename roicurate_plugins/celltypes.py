"""Cell-type networks: tell apart the kinds of cells a lab has marked, from a crop of the ROI mask, the functional
mean image and a second (structural) channel, e.g. mCherry in inhibitory neurons, as in the two-channel
transfer-learning study (ResNet on GCaMP + structural patches, retrained from a chosen layer upward).

The class names are the lab's: they come from the training labels (``roicurate train --types redcell`` or
``--types cell_types.csv``), not from here. The output is written beside the pipeline's verdict (Suite2p:
roicurate_types.npy, and with ``apply --redcell`` its redcell.npy), never into it. No model is bundled: which cells
carry the marker, and how it looks, differ from lab to lab, so a lab trains its own (ResNet50 at a quarter width,
as the bundled Suite2p model), then retrains its upper third on new sessions::

    roicurate train */suite2p --arch celltype-resnet50 --build width=16 --build first_stride=2 --types redcell \
        --out lab_types/
    roicurate train new/*/suite2p --types redcell --init lab_types/ --freeze-until layer3 --out lab_types2/

Starting from the bundled cell / not-cell network (``--init suite2p-resnet50``) works but did worse than from
scratch on the simulated recordings (benchmarks/celltypes.py): its filters never saw an image.
"""
from roicurate.crops import CropSpec
from roicurate.hookspecs import hookimpl
from roicurate.models import ModelSpec
from roicurate_plugins.nets import WindowedCNN2, cnn2, fuse_bn, resnet50

CHANNELS = ("mask", "mean", "mean_chan2")   # Suite2p's meanImg, meanImg_chan2; else --add-image mean_chan2=FILE
CROP = CropSpec(size=64, channels=CHANNELS)


@hookimpl
def register_models(register):
    register(ModelSpec("celltype-resnet50", "any", resnet50, crop=CROP, classes=(), task="types", inference=fuse_bn,
                       description="cell types: ResNet50 on mask + mean + structural-channel crops, 64x64"))
    register(ModelSpec("celltype-cnn2", "any", cnn2, crop=CROP, classes=(), task="types", inference=WindowedCNN2,
                       description="cell types: two conv blocks on mask + mean + structural-channel crops, 64x64"))
