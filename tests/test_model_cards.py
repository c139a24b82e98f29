"""Issue 16 items 10, 15 (model side), 17: model cards are validated before anything is built; a segmentation model
is not offered as a classifier; trained weights follow the umask."""
import json
import math
import os
import shutil
import stat

import pytest

from roicurate import RoicurateError
from roicurate.models import Classifier, read_card, validate_card
from roicurate.plugins import model_specs


def _copy(tiny_model, tmp_path, **changes):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    card = json.loads((d / "tiny.json").read_text())
    for key, value in changes.items():
        parts = key.split("__")
        target = card
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = value
    (d / "tiny.json").write_text(json.dumps(card))
    return d


BAD = [
    ({"build_kwargs__width": 1e5}, "build_kwargs.width"),
    ({"build_kwargs__size": 0}, "build_kwargs.size"),
    ({"crop__size": 0}, "crop.size"),
    ({"crop__size": 64.5}, "crop.size"),
    ({"crop__channels": []}, "crop.channels"),
    ({"crop__binarize": 2}, "crop.binarize"),
    ({"threshold": "abc"}, "threshold"),
    ({"threshold": 5}, "threshold"),
    ({"threshold": -1}, "threshold"),
    ({"classes": []}, "classes"),
    ({"classes": ["cell", "cell"]}, "classes"),
    ({"build_kwargs": [1, 2]}, "build_kwargs"),
    ({"build_kwargs__size": [[64]]}, "build_kwargs.size"),
    ({"positive_class": "neuron"}, "positive_class"),
    ({"calibration": {"method": "platt", "a": "x", "b": 0}}, "calibration.a"),
    ({"calibration": {"method": "magic"}}, "calibration"),
    ({"shape_prior": {"coef": [1, 2]}}, "shape_prior"),
    ({"sha256": "not hex"}, "sha256"),
    ({"name": 3}, "name"),
]


@pytest.mark.parametrize("changes,field", BAD, ids=[f for _, f in BAD])
def test_bad_cards_are_one_line_errors_naming_the_field(tiny_model, tmp_path, changes, field):
    d = _copy(tiny_model, tmp_path, **changes)
    with pytest.raises(RoicurateError) as e:
        Classifier.load(str(d))
    msg = str(e.value)
    assert "\n" not in msg and str(d / "tiny.json") in msg and f"'{field}" in msg


def test_nan_threshold_is_refused(tiny_model, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    text = (d / "tiny.json").read_text()
    card = json.loads(text)
    card["threshold"] = math.nan
    (d / "tiny.json").write_text(json.dumps(card))          # json writes NaN, and json.load reads it back
    with pytest.raises(RoicurateError, match="'threshold' is nan"):
        read_card(d / "tiny.json")


def test_unknown_crop_field_is_one_line(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path, crop__wobble=3)
    with pytest.raises(RoicurateError, match="'crop' is not a crop this roicurate knows") as e:
        Classifier.load(str(d))
    assert "\n" not in str(e.value)


def test_build_kwargs_the_architecture_cannot_take(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path, build_kwargs__colour="red")
    with pytest.raises(RoicurateError, match="do not build architecture 'cnn2'"):
        Classifier.load(str(d))


BUNDLED = ("suite2p-resnet50", "caiman-cnn2", "caiman-vgg16-4c", "unet-mean")     # roicurate_plugins/weights/


def test_bundled_cards_are_valid():
    specs = model_specs()
    with_cards = {name: spec.card_path for name, spec in specs.items() if spec.card_path}
    missing = [name for name in BUNDLED if name not in with_cards]
    assert not missing, f"bundled model cards not found: {missing}"
    for name in BUNDLED:
        path = with_cards[name]
        assert os.path.basename(path) == f"{name}.json" and os.path.isfile(path), path
    for name, path in with_cards.items():                      # every card found, the four bundled ones included
        validate_card(json.loads(open(path).read()), path)


def test_segmentation_model_is_not_a_classifier():
    specs = model_specs()
    with pytest.raises(RoicurateError, match="'unet-mean' is a segmentation model") as e:
        Classifier.load("unet-mean", specs)
    assert "unet-mean" not in str(e.value).split("usable here:")[1]
    with pytest.raises(RoicurateError, match="unknown model") as e:
        Classifier.load("nope", specs)
    assert "unet-mean" not in str(e.value) and "suite2p-resnet50" in str(e.value)


def test_weights_and_card_follow_the_umask(tmp_path):
    from conftest import save_tiny_model
    old = os.umask(0o022)
    try:
        card = save_tiny_model(tmp_path / "a")
    finally:
        os.umask(old)
    for p in (tmp_path / "a" / "tiny.safetensors", card):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644, p
    old = os.umask(0o077)
    try:
        save_tiny_model(tmp_path / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "b" / "tiny.safetensors").st_mode) == 0o600


@pytest.mark.parametrize("name", ["suite2p-resnet50", "caiman-cnn2"])
def test_bundled_cell_models_name_their_operating_points(name):
    """recall (the default), balanced and precision, each with its rule, and every lab's nested numbers at each."""
    card = json.loads(open(model_specs()[name].card_path).read())
    points = card["operating_points"]
    assert list(points) == ["recall", "balanced", "precision"]
    assert points["recall"]["threshold"] == card["threshold"] and points["recall"]["rule"] == card["threshold_rule"]
    assert points["precision"]["threshold"] > points["recall"]["threshold"]
    labs = set(card["out_of_lab"]["labs"])
    assert len(labs) >= 4
    for point in points:
        assert set(card["out_of_lab"]["nested"]["points"][point]) == labs
