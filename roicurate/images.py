"""Summary images a user supplies beside the pipeline's own (``--add-image NAME=FILE``): a second channel the
pipeline did not record (a structural mCherry image taken after the session), a Z-projection made elsewhere ...

The image becomes ``roiset.images[NAME]``, usable as a crop channel of that name. FILE is a ``.npy`` array or a
single-page TIFF of the recording's frame size; a relative FILE is looked up beside each unit (in each plane
folder, or beside each CaImAn file), so one option serves many planes.
"""
from pathlib import Path

import numpy as np

from roicurate.common import RoicurateError

ADD_IMAGE_FILES = (".npy", ".tif", ".tiff", ".png")      # the file types --add-image reads


def check_image(image, where, shape=None):
    """float32 copy of one finite 2-D image (of ``shape`` when given), or a one-line error."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype.kind not in "fiub":
        raise RoicurateError(f"{where}: expected one 2-D numeric image, got shape {image.shape} ({image.dtype})")
    if shape is not None and image.shape != tuple(shape):
        raise RoicurateError(f"{where}: image is {image.shape[0]}x{image.shape[1]}, the recording's frame is "
                             f"{shape[0]}x{shape[1]}")
    if not np.isfinite(image).all():
        raise RoicurateError(f"{where}: the image has NaN or infinite pixels")
    return image.astype(np.float32)


def read_image_file(path):
    """The array in a ``.npy`` file or the one page of a TIFF (read with tifffile, as Suite2p and CaImAn do: any
    sample type, float32 included, and BigTIFF) or a PNG (read with Pillow, which matplotlib brings)."""
    path = Path(path)
    if not path.is_file():
        raise RoicurateError(f"{path}: image file is missing")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) > 1:
                    raise RoicurateError(f"{path}: a TIFF stack of {len(tif.pages)} pages; give one summary image "
                                         f"(e.g. the mean projection), not a movie")
                return tif.pages[0].asarray()
        from PIL import Image
        with Image.open(path) as im:
            return np.asarray(im)
    except RoicurateError:
        raise
    except Exception as e:  # numpy, tifffile and Pillow raise many types for truncated or foreign files
        raise RoicurateError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None


def parse_image_options(items):
    """[(name, file)] from ``NAME=FILE`` strings."""
    out = []
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise RoicurateError(f"--add-image {item}: expected NAME=FILE (e.g. mean_chan2=red.tif)")
        if name == "mask" or name.startswith("mask_"):
            raise RoicurateError(f"--add-image {item}: '{name}' is a mask channel name; choose another")
        if Path(file).suffix.lower() not in ADD_IMAGE_FILES:
            raise RoicurateError(f"--add-image {item}: FILE must be one of {', '.join(ADD_IMAGE_FILES)}")
        out.append((name, file))
    return out


def beside_unit(roiset, file):
    """``file`` as given when absolute, else in the RoiSet's plane folder (or beside its CaImAn file)."""
    if Path(file).is_absolute():
        return Path(file)
    where = Path(roiset.path or ".")
    return (where if where.is_dir() else where.parent) / file


def add_images(roiset, images):
    """Put each ``(name, file)`` of ``images`` into ``roiset.images``; returns the RoiSet."""
    for name, file in images:
        path = beside_unit(roiset, file)
        roiset.images[name] = check_image(read_image_file(path), path, roiset.shape)
    return roiset
