"""The faster forms `apply` runs give the plain networks' scores, and the CaImAn writer does not copy the original."""
import os
import shutil

import numpy as np
import pytest
import torch

from roicurate import RoicurateError
from roicurate.crops import make_crops
from roicurate.curation import Curation
from roicurate.models import Classifier
from roicurate.plugins import sources
from roicurate_plugins.nets import WindowedCNN2, cnn2, fuse_bn, resnet50



def blobs(n, size, rng):
    """Binary crops holding one random blob each, some cut by the crop's edges, some in a corner only."""
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        r = int(rng.integers(1, size // 3))
        cy, cx = rng.integers(-r, size + r, 2)
        yy, xx = np.ogrid[:size, :size]
        x[i, 0] = torch.from_numpy(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32))
    return x


@pytest.mark.parametrize("size", [50, 51, 49, 32])
def test_windowed_cnn2_gives_the_plain_logits(size):
    torch.manual_seed(size)
    rng = np.random.default_rng(size)
    net = cnn2(size=size).eval()
    fast = WindowedCNN2(net)
    with torch.inference_mode():
        x = blobs(40, size, rng)
        batches = [x, x[:1], x[:5].contiguous(memory_format=torch.channels_last), torch.zeros(3, 1, size, size)]
        # one pixel in each corner: the window reaches every edge of the frame
        corner = torch.zeros(4, 1, size, size)
        for i, (a, b) in enumerate([(0, 0), (0, -1), (-1, 0), (-1, -1)]):
            corner[i, 0, a, b] = 1
        for batch in batches + [corner] + [x[i:i + 1] for i in range(len(x))]:
            torch.testing.assert_close(fast(batch), net(batch), atol=1e-5, rtol=1e-5)


def test_windowed_cnn2_with_an_image_channel():
    """An image channel is non-zero everywhere: the window is the whole crop, still the same logits."""
    torch.manual_seed(0)
    net = cnn2(in_channels=2, size=50).eval()
    x = torch.cat([blobs(8, 50, np.random.default_rng(0)), torch.randn(8, 1, 50, 50)], 1)
    with torch.inference_mode():
        torch.testing.assert_close(WindowedCNN2(net)(x), net(x), atol=1e-5, rtol=1e-5)


def test_fused_resnet_gives_the_plain_logits():
    torch.manual_seed(0)
    net = resnet50(width=8, first_stride=2)
    for m in net.modules():          # batch-norm statistics and scales that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = blobs(6, 64, np.random.default_rng(1))
    with torch.inference_mode():
        fused = fuse_bn(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())     # the plain module is left as it was


@pytest.mark.parametrize("name", ["caiman-cnn2", "suite2p-resnet50"])
def test_bundled_models_score_as_the_plain_network(caiman_files, example_suite2p, name):
    """``predict_proba`` (fast form, ROIs batched by size) == the plain module on every crop in input order."""
    path = caiman_files["evaluated"] if "caiman" in name else example_suite2p / "plane1"
    rs = sources()["caiman" if "caiman" in name else "suite2p"].read(path)
    clf = Classifier.load(name, batch_size=16)
    p = clf.predict_proba(rs)
    with torch.inference_mode():
        direct = clf.logits_to_proba(clf.module(torch.from_numpy(make_crops(rs, clf.crop))), clf.prior_logits(rs))
    np.testing.assert_allclose(p, direct, atol=1e-5)
    np.testing.assert_allclose(Classifier.load(name, fast=False).predict_proba(rs), direct, atol=1e-5)


def curation(n):
    score = np.linspace(0, 1, n)
    return Curation(np.stack([1 - score, score], 1), score >= 0.5, 0.5, ("not_cell", "cell"), 1,
                    {"name": "t", "sha256": "0"})


def test_caiman_backup_is_an_independent_copy(caiman_files, tmp_path):
    """The first write keeps the original as an independent copy (never a hard link: a program still writing to
    the original must not write into the backup, issue #16) and replaces the file."""
    p = tmp_path / "cnmf.hdf5"
    shutil.copyfile(caiman_files["evaluated"], p)
    os.chmod(p, 0o644)
    original, inode = p.read_bytes(), os.stat(p).st_ino
    src = sources()["caiman"]
    rs = src.read(p)
    src.write(p, rs, curation(len(rs)))
    backup = p.with_name("cnmf.roicurate-backup.hdf5")
    assert backup.read_bytes() == original and os.stat(backup).st_ino != inode
    assert os.stat(p).st_ino != inode and os.stat(backup).st_nlink == 1
    assert sorted(os.listdir(tmp_path)) == sorted([p.name, backup.name])


def test_caiman_failed_write_leaves_no_backup(caiman_files, tmp_path, monkeypatch):
    """A write that fails at its os.replace takes the new backup back: one line, the folder is as it was."""
    p = tmp_path / "cnmf.hdf5"
    shutil.copyfile(caiman_files["evaluated"], p)
    os.chmod(p, 0o644)
    original = p.read_bytes()
    src = sources()["caiman"]
    rs = src.read(p)

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RoicurateError, match="disk full"):
        src.write(p, rs, curation(len(rs)))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [p.name] and p.read_bytes() == original
