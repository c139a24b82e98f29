import json

import numpy as np
import pytest
import torch

from roicurate import RoicurateError
from roicurate.models import Classifier
from roicurate.safeio import sha256_file
from roicurate.plugins import model_specs, sources
from roicurate_plugins.nets import cnn2, resnet50


def test_networks_shapes_and_layer_names():
    x = torch.zeros(2, 1, 64, 64)
    r = resnet50(width=8).eval()
    assert r(x).shape == (2, 1)
    names = {n for n, _ in r.named_children()}
    assert {"conv1", "layer1", "layer2", "layer3", "layer4", "fc"} <= names
    assert r.conv1.kernel_size == (5, 5) and not any(isinstance(m, torch.nn.MaxPool2d) for m in r.modules())
    blocks = [len(getattr(r, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 6, 3]      # ResNet50's bottleneck counts
    assert resnet50(in_channels=3, width=8)(torch.zeros(1, 3, 64, 64)).shape == (1, 1)
    assert cnn2(size=50)(torch.zeros(2, 1, 50, 50)).shape == (2, 1)


def test_full_resnet50_has_the_published_size():
    n = sum(p.numel() for p in resnet50(width=64).parameters())
    assert 23.4e6 < n < 23.6e6    # torchvision's ResNet50 minus the 1000-class head and 3-channel stem


def test_saved_model_roundtrip_without_pickle(tiny_model, suite2p_sessions):
    card = json.loads((tiny_model / "tiny.json").read_text())
    assert card["sha256"] == sha256_file(tiny_model / "tiny.safetensors")
    raw = (tiny_model / "tiny.safetensors").read_bytes()
    assert b"pickle" not in raw[:2000] and raw[8:9] == b"{"      # safetensors: length + JSON header
    clf = Classifier.load(str(tiny_model))
    rs = sources()["suite2p"].read(suite2p_sessions[2] / "plane0")
    p = clf.predict_proba(rs)
    assert p.shape == (len(rs), 2) and np.allclose(p.sum(1), 1)
    # batching does not change the answer
    clf.batch_size = 7
    np.testing.assert_allclose(clf.predict_proba(rs), p, atol=1e-6)


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    import shutil
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    w = d / "tiny.safetensors"
    b = bytearray(w.read_bytes())
    b[-1] ^= 0xFF
    w.write_bytes(bytes(b))
    with pytest.raises(RoicurateError, match="sha256"):
        Classifier.load(str(d))


def test_unknown_model_and_architecture_only():
    with pytest.raises(RoicurateError, match="unknown model 'nope'"):
        Classifier.load("nope")
    with pytest.raises(RoicurateError, match="without trained weights"):
        Classifier.load("cnn2")


def test_bundled_models_are_registered_with_cards():
    specs = model_specs()
    for name, spec in specs.items():
        if spec.weights:
            card = json.loads(open(spec.card_path).read())
            for key in ("arch", "crop", "classes", "threshold", "threshold_rule", "training", "sha256"):
                assert key in card, (name, key)
            assert "validation" in card or "out_of_lab" in card, name      # where its numbers were measured
            assert card["sha256"] == sha256_file(spec.weights)
            assert set(card["training"]["recordings"]).isdisjoint(card["training"]["validation_recordings"])
