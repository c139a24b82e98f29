"""The reference cell diameter of a recording: what makes a crop mean the same thing whatever the microscope's
zoom. A model whose crop spec says ``scale="reference"`` resamples every crop so that this diameter spans
``CropSpec.scaled_diameter`` pixels, and its shape features measure areas relative to it.

Where the reference comes from, first that applies:

1. ``apply --diameter PX`` (or any caller that sets ``roiset.diameter``);
2. the pipeline's own setting, where the user set it: Suite2p's ``diameter``, CaImAn's ``gSig`` (the sources read
   them and leave the defaults alone: a default says nothing about this recording);
3. a statistic of the ROIs that junk does not fool: the equivalent diameter of the ROI at the 75th percentile of
   area (masks binarised as their source declares: ``source_binarize``). On the shared labelled sets it lies within 0.87-1.05x
   the median diameter of the labelled cells, including neurofinder.04.00 where 87 % of the 691 ROIs are tiny
   junk (its plain median diameter is half the cells').
"""
import numpy as np

from roicurate.common import RoicurateError

PERCENTILE = 75
SOURCE_STATISTIC = f"ROI statistic (equivalent diameter at the {PERCENTILE}th percentile of ROI area)"
SOURCE_OVERRIDE = "--diameter"


def equivalent_diameter(area):
    return 2 * np.sqrt(np.asarray(area, float) / np.pi)


def source_binarize(roiset):
    """How the masks of ``roiset`` are binarised wherever a mask counts as its pixels (areas, outlines, matching
    drawn masks): the binarisation its source declares in its crop spec (``Source.crop``; the published protocols:
    Suite2p lam > 0, CaImAn A > 0.2 x max), as a fraction of each ROI's maximum weight; 0.0 where it declares none."""
    from roicurate.plugins import sources
    src = sources().get(roiset.source)
    frac = None if src is None or src.crop is None else src.crop.binarize
    return 0.0 if frac is None else float(frac)


def roi_statistic(roiset):
    """The statistic of rule 3 above, in pixels (None for a recording without ROIs)."""
    if not len(roiset):
        return None
    keep = roiset.binary(source_binarize(roiset))
    area = np.bincount(roiset.roi_index[keep], minlength=len(roiset))
    return float(equivalent_diameter(max(np.percentile(area, PERCENTILE), 1.0)))


def set_diameter(roiset, px, source):
    """Give ``roiset`` its reference diameter (checked: a positive, finite number of pixels)."""
    try:
        px = float(px)
    except (TypeError, ValueError):
        px = float("nan")
    if not np.isfinite(px) or not 1 <= px <= 1000:
        raise RoicurateError(f"{roiset.path or 'input'}: reference cell diameter {px} px from {source} "
                             f"is not a diameter between 1 and 1000 px")
    roiset.diameter, roiset.diameter_source = px, source
    return roiset


def reference_diameter(roiset):
    """The recording's reference cell diameter in pixels (rules above), set on the RoiSet the first time it is
    asked for, so that every later crop, subset and report of the recording uses the same one."""
    if roiset.diameter is None:
        d = roi_statistic(roiset)
        if d is None:
            return None
        set_diameter(roiset, d, SOURCE_STATISTIC)
    return roiset.diameter


def zoom(roiset, scaled_diameter, factor=1.0):
    """How much to magnify the recording's pixels so that its reference diameter (times ``factor``, the scale
    jitter of training) spans ``scaled_diameter`` crop pixels; clipped to 0.25-4x."""
    d = reference_diameter(roiset)
    if d is None:
        return 1.0
    return float(np.clip(scaled_diameter / (d * factor), 0.25, 4.0))


def outside_range(diameter, trained):
    """A warning line when ``diameter`` lies outside the ``[low, high]`` reference diameters a model was trained
    on (by more than its 25 % scale jitter), else None."""
    if not trained or diameter is None:
        return None
    low, high = trained
    if diameter < low / 1.25 or diameter > high * 1.25:
        return (f"reference cell diameter {diameter:.1f} px is outside what the model was trained on "
                f"({low:.1f}-{high:.1f} px); check it, or give the right one with --diameter PX")
    return None
