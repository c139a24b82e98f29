import numpy as np
import pytest

from roicurate import RoicurateError
from roicurate.crops import CropSpec, DerivedImage, make_crops
from roicurate.hookspecs import hookimpl
from roicurate.plugins import image_providers, pm, sources
from roicurate.rois import RoiSet


def square(cy, cx, r, w=1.0):
    yy, xx = np.mgrid[cy - r:cy + r + 1, cx - r:cx + r + 1]
    return yy.ravel(), xx.ravel(), np.full(yy.size, w, np.float32)


def roiset(parts, shape=(100, 120), **kw):
    return RoiSet.from_pixels(shape, [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], **kw)


def naive_crop(rs, i, size, binarize):
    """Loop version of the mask channel, written independently, to check the vectorised one."""
    out = np.zeros((size, size), np.float32)
    sl = slice(rs.indptr[i], rs.indptr[i + 1])
    y, x, w = rs.y[sl], rs.x[sl], rs.weight[sl]
    keep = w > binarize * w.max() if binarize is not None else np.ones(len(w), bool)
    ww = keep.astype(float) if binarize is not None else w
    cy = int(np.rint((ww * y).sum() / ww.sum()))
    cx = int(np.rint((ww * x).sum() / ww.sum()))
    for yy, xx, v in zip(y, x, (keep.astype(np.float32) if binarize is not None else w / w.max())):
        a, b = yy - cy + size // 2, xx - cx + size // 2
        if 0 <= a < size and 0 <= b < size:
            out[a, b] = v
    return out


def test_target_centred_others_removed():
    rs = roiset([square(50, 60, 3), square(52, 66, 2, 5.0)])
    c = make_crops(rs, CropSpec(size=64))
    assert c.shape == (2, 1, 64, 64) and c.dtype == np.float32
    # ROI 0 fills a 7x7 square centred at (32, 32); ROI 1's pixels (only 6 px away) are absent
    assert c[0, 0, 29:36, 29:36].min() == 1 and c[0, 0].sum() == 49
    assert c[1, 0].max() == 1 and c[1, 0].sum() == 25   # weights scaled to max 1


def test_border_rois_are_zero_padded():
    rs = roiset([square(2, 3, 2), square(97, 117, 2)])
    c = make_crops(rs, CropSpec(size=64))
    assert c[0, 0].sum() == 25 and c[1, 0].sum() == 25
    assert c[0, 0, :28].sum() == 0   # rows above the frame edge stay zero


def test_matches_independent_loop_weighted_and_binarised():
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(30):
        cy, cx = rng.integers(0, 100), rng.integers(0, 120)
        y, x, _ = square(cy, cx, int(rng.integers(1, 6)))
        ok = (y >= 0) & (y < 100) & (x >= 0) & (x < 120)
        parts.append((y[ok], x[ok], rng.random(ok.sum()).astype(np.float32) + 0.01))
    rs = roiset(parts)
    for binarize in (None, 0.0, 0.5):
        c = make_crops(rs, CropSpec(size=50, binarize=binarize))
        for i in range(len(rs)):
            np.testing.assert_allclose(c[i, 0], naive_crop(rs, i, 50, binarize), rtol=1e-6)


def test_image_channels_are_windows_of_the_frame():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    rs = roiset([square(50, 60, 1)], images={"mean": img})
    c = make_crops(rs, CropSpec(size=8, channels=("mask", "mean"), image_norm="none"))
    np.testing.assert_array_equal(c[0, 1], img[46:54, 56:64])
    z = make_crops(rs, CropSpec(size=8, channels=("mean",)))[0, 0]
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3


def test_missing_image_is_a_clear_error():
    rs = roiset([square(50, 60, 1)])
    with pytest.raises(RoicurateError, match="'corr' image"):
        make_crops(rs, CropSpec(channels=("mask", "corr")))


def test_subset_of_rois():
    rs = roiset([square(20, 20, 1), square(50, 60, 2), square(80, 90, 3)])
    c = make_crops(rs, CropSpec(size=32), index=[2, 0])
    assert c[0, 0].sum() == 49 and c[1, 0].sum() == 9


# ---- images computed by plugins (register_images) ----------------------------------------------------------------
class Ratio:
    """A third-party-style plugin: one derived image, max / mean, counting how often it is computed."""

    def __init__(self):
        self.calls = 0

    def compute(self, rs):
        self.calls += 1
        return rs.images["max"] / np.maximum(rs.images["mean"], 1e-6)

    @hookimpl
    def register_images(self, register):
        register(DerivedImage("max_over_mean", self.compute, "max / mean"))


@pytest.fixture
def ratio_plugin():
    plugin = Ratio()
    pm.register(plugin, "test-ratio-image")
    yield plugin
    pm.unregister(plugin)


def test_a_plugin_image_is_a_crop_channel_computed_once_per_roiset(example_suite2p, ratio_plugin):
    rs = sources()["suite2p"].read(example_suite2p / "plane1")
    assert "max_over_mean" not in rs.images and "max_over_mean" in image_providers()
    spec = CropSpec(size=32, channels=("mask", "max_over_mean"), binarize=0.0, image_norm="none")
    batches = [make_crops(rs, spec, np.arange(i, min(i + 16, len(rs)))) for i in range(0, len(rs), 16)]
    assert len(batches) > 1 and ratio_plugin.calls == 1        # the first batch computed it, the others reused it
    want = rs.images["max"] / np.maximum(rs.images["mean"], 1e-6)
    np.testing.assert_array_equal(rs.images["max_over_mean"], want.astype(np.float32))
    crops = np.concatenate(batches)
    c = np.rint(rs.centroids(0.0)).astype(int)          # lam > 0 pixels, equal weights: the mask channel's centre
    padded = np.pad(want.astype(np.float32), 16)
    for i in range(0, len(rs), 9):
        np.testing.assert_array_equal(crops[i, 1], padded[c[i, 0]:c[i, 0] + 32, c[i, 1]:c[i, 1] + 32])
        np.testing.assert_array_equal(crops[i, 0], make_crops(rs, CropSpec(32, binarize=0.0), [i])[0, 0])
    sub = rs.subset([3, 1])                             # a subset shares the images: no second computation
    make_crops(sub, spec)
    assert ratio_plugin.calls == 1


def test_missing_image_names_the_recording_and_the_providers(geometry_only_plane, ratio_plugin):
    rs = sources()["suite2p"].read(geometry_only_plane)    # masks only, no images
    with pytest.raises(RoicurateError) as e:
        make_crops(rs, CropSpec(channels=("mask", "corr")))
    msg = str(e.value)
    assert "plane0: the model needs the 'corr' image" in msg and "it has: none" in msg
    assert "max_over_mean" in msg and "unet" in msg and "\n" not in msg
    with pytest.raises(RoicurateError, match="cannot compute the 'max_over_mean' image") as e:
        make_crops(rs, CropSpec(channels=("mask", "max_over_mean")))
    assert "'max'" in str(e.value) and "\n" not in str(e.value)
    assert ratio_plugin.calls == 1 and "max_over_mean" not in rs.images     # a failure is not cached


def test_dihedral_gives_the_eight_rotations_flips_and_undoes_each():
    """One function for training's augmentation and the U-Net's test-time augmentation."""
    import torch

    from roicurate.crops import dihedral
    x = torch.arange(2 * 1 * 5 * 4, dtype=torch.float32).reshape(2, 1, 5, 4)     # non-square
    square = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    outs = [dihedral(square, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    for k, o in enumerate(outs):
        assert torch.equal(dihedral(o, k, inverse=True), square)
    assert torch.equal(dihedral(x, 4), torch.flip(x, (3,)))
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, (2, 3)))
