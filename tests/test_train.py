"""`roicurate train`: splits by recording, determinism, fine-tuning, checkpoint/resume, search, held-out numbers.
Small cnn2 runs (1-2 epochs) on three labelled recordings made from the bundled Suite2p example
(conftest.suite2p_sessions)."""
import csv
import json

import numpy as np
import pytest
import torch
from conftest import cli_run as run
from safetensors.torch import load_file

from roicurate import RoicurateError
from roicurate.crops import CropSpec
from roicurate.models import Classifier, save_model
from roicurate.safeio import sha256_file
from roicurate.plugins import model_specs
from roicurate.training.data import load_labelled, split_by_recording, stack
from roicurate.training.fit import fit, freeze_below


@pytest.fixture(scope="module")
def sims(suite2p_sessions):
    return [suite2p_sessions[i] for i in (1, 2, 3)]


def quick(sims, out, *extra):
    return run("train", *sims[:2], "--arch", "cnn2", "--epochs", "1", "--val", "s2p_sim2", "--out", out, *extra)


def test_same_seed_same_weights(sims, tmp_path):
    quick(sims, tmp_path / "a", "--seed", "3")
    quick(sims, tmp_path / "b", "--seed", "3")
    quick(sims, tmp_path / "c", "--seed", "4")
    digest = {k: sha256_file(tmp_path / k / "model.safetensors") for k in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]
    card = json.loads((tmp_path / "a/model.json").read_text())
    assert card["sha256"] == digest["a"] and card["training"]["recordings"] == ["s2p_sim1"]
    assert card["training"]["validation_recordings"] == ["s2p_sim2"] and not (tmp_path / "a/model.ckpt.pt").exists()
    assert card["calibration"]["method"] == "platt" and card["calibration"]["folded"]
    # the folder is a model `apply` and `evaluate` take
    assert Classifier.load(str(tmp_path / "a")).threshold == card["threshold"]


def test_val_by_names_and_fraction_never_splits_a_recording(sims):
    sets = load_labelled(sims)              # 4 ROI sets; s2p_sim2's two planes are one recording
    assert [rs.recording for rs in sets] == ["s2p_sim1", "s2p_sim2", "s2p_sim2", "s2p_sim3"]
    for val in ([["s2p_sim2"]] + [0.34] * 1 + [0.5, 0.66]):
        for seed in range(6):
            tr, va = split_by_recording(sets, val, seed)
            a, b = {rs.recording for rs in tr}, {rs.recording for rs in va}
            assert a and b and not a & b and a | b == {"s2p_sim1", "s2p_sim2", "s2p_sim3"}
            assert len(tr) + len(va) == 4
    assert [rs.path[-6:] for rs in split_by_recording(sets, ["sim2"])[1]] == ["plane0", "plane1"]
    with pytest.raises(RoicurateError, match="no recording matches"):
        split_by_recording(sets, ["nope"])
    with pytest.raises(RoicurateError, match="at least 2 recordings"):
        split_by_recording(sets[:1], 0.5)


def test_finetune_freezes_everything_below_the_layer(sims, tmp_path):
    """A small ResNet (batch norm included) saved as a model, fine-tuned with --freeze-until layer3."""
    from roicurate_plugins.nets import resnet50
    torch.manual_seed(0)
    card = {"arch": "resnet50", "build_kwargs": {"width": 2, "first_stride": 2}, "pipeline": "suite2p",
            "crop": CropSpec(64, binarize=0.0).to_dict(), "classes": ["not_cell", "cell"], "threshold": 0.5}
    save_model(tmp_path / "base", "base", resnet50(width=2, first_stride=2), card)
    run("train", sims[1], "--init", tmp_path / "base", "--freeze-until", "layer3", "--epochs", "1",
        "--val", "none", "--out", tmp_path / "ft", "--lr", "0.01", "--batch-size", "16")
    before, after = load_file(tmp_path / "base/base.safetensors"), load_file(tmp_path / "ft/model.safetensors")
    below = [k for k in before if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")]
    above = [k for k in before if k.split(".")[0] in ("layer3", "layer4", "fc")]
    assert below and above and before.keys() == after.keys()
    for k in below:                      # weights and batch-norm running statistics
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert sum(not torch.equal(before[k], after[k]) for k in above if k.startswith("layer3")) > 0
    ft = json.loads((tmp_path / "ft/model.json").read_text())
    assert ft["training"]["init"]["name"] == "base" and ft["training"]["freeze_until"] == "layer3"
    assert ft["build_kwargs"] == card["build_kwargs"]
    # no validation recording (one video of a new lab): every epoch runs, threshold from the training ROIs
    assert "training" in ft["threshold_rule"] and "validation" not in ft and ft["calibration"] is None
    r = run("train", *sims[:2], "--init", tmp_path / "base", "--freeze-until", "layer9", "--out", tmp_path / "x", ok=False)
    assert r.exit_code != 0 and "no such layer" in r.output and "layer4" in r.output


def test_freeze_below_names():
    from roicurate_plugins.nets import cnn2
    net = cnn2(size=50)
    frozen = freeze_below(net, "head.4")
    assert frozen == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
                      "head.1.weight", "head.1.bias"]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["head.4.weight", "head.4.bias"]


def test_resume_continues_exactly(sims, tmp_path):
    """Interrupted after epoch 1 of 2, resumed: the same weights as an uninterrupted run."""
    sets = load_labelled(sims[:2])
    tr, va = split_by_recording(sets, ["s2p_sim2"])
    crop = CropSpec(64, binarize=0.0)
    x_tr, y_tr = stack(tr, crop)
    x_va, y_va = stack(va, crop)
    spec = model_specs()["cnn2"]
    hp = {"epochs": 2, "lr": 1e-3, "batch_size": 32}

    def build():
        torch.manual_seed(0)
        return spec.build(size=64)

    straight = build()
    fit(straight, x_tr, y_tr, x_va, y_va, hp, log=lambda m: None)

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    ckpt = tmp_path / "m.ckpt.pt"
    net = build()
    with pytest.raises(Stop):
        fit(net, x_tr, y_tr, x_va, y_va, hp, log=lambda m: None, checkpoint=ckpt, config={"a": 1}, callback=stop)
    net = build()
    hist = fit(net, x_tr, y_tr, x_va, y_va, hp, log=lambda m: None, checkpoint=ckpt, config={"a": 1}, resume=True)
    assert [h["epoch"] for h in hist] == [1, 2]
    for (k, a), b in zip(straight.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(RoicurateError, match="other data or settings"):
        fit(build(), x_tr, y_tr, x_va, y_va, hp, checkpoint=ckpt, config={"a": 2}, resume=True)


def test_search_keeps_a_table_of_every_trial(sims, tmp_path):
    r = quick(sims, tmp_path / "s", "--search", "3", "--calibrate", "isotonic")
    with open(tmp_path / "s/model.search.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows] == ["coarse", "coarse", "fine"]
    card = json.loads((tmp_path / "s/model.json").read_text())
    best = max(card["training"]["search"], key=lambda t: t["val_f1"])
    assert card["training"]["lr"] == best["lr"] and card["training"]["batch_size"] == best["batch_size"]
    assert card["calibration"]["method"] == "isotonic" and "| trial |" in r.output


def test_held_out_numbers_match_a_separate_evaluate(sims, tmp_path):
    """Trained on s2p_sim1 (validation s2p_sim2), tested on s2p_sim3: train's numbers == `roicurate evaluate`."""
    r = run("train", *sims, "--arch", "cnn2", "--epochs", "2", "--val", "s2p_sim2", "--test", "s2p_sim3",
            "--out", tmp_path / "m", "--target-precision", "0.95")
    assert "model, pooled" in r.output
    run("evaluate", sims[2], "--model", tmp_path / "m", "--out", tmp_path / "e")
    assert (tmp_path / "m/model.test/metrics.json").read_text() == (tmp_path / "e/metrics.json").read_text()
    assert (tmp_path / "m/model.test/scores.csv").read_text() == (tmp_path / "e/scores.csv").read_text()
    run("evaluate", sims[1], "--model", tmp_path / "m", "--out", tmp_path / "v")
    card = json.loads((tmp_path / "m/model.json").read_text())
    val = json.loads((tmp_path / "v/metrics.json").read_text())
    for k in ("precision", "recall", "f1", "roc_auc", "pr_auc", "ece"):
        assert card["validation"]["pooled"][k] == pytest.approx(val["pooled"][k], nan_ok=True)
    assert card["training"]["test_recordings"] == ["s2p_sim3"] and "s2p_sim3" not in card["training"]["recordings"]


def test_user_errors_are_one_line(sims, tmp_path):
    for args, msg in ((("--freeze-until", "head"), "needs --init"), (("--val", "s2p_sim9"), "no recording matches"),
                      (("--test", "s2p_sim1,s2p_sim2"), "nothing is left to train on"),
                      (("--arch", "nope"), "unknown architecture")):
        r = run("train", *sims[:2], "--epochs", "1", "--out", tmp_path / "x", *args, ok=False)
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) <= 2, r.output


def test_rehearsal_draws_the_old_recordings_as_their_share_and_never_validates_on_them(sims, tmp_path):
    """Fine-tuning on a new recording with --rehearse: the old recordings only train, as --rehearse-share of every
    epoch's draws (with the class balance of what is drawn); the threshold comes from the new ROIs alone."""
    from roicurate.training.fit import _loss
    from roicurate.training.data import with_rehearsal
    x, y = np.zeros((30, 1, 4, 4), np.float32), (np.arange(30) < 10).astype(np.float32)
    xr, yr = np.ones((90, 1, 4, 4), np.float32), (np.arange(90) < 60).astype(np.float32)
    xa, ya, draw = with_rehearsal(x, y, (xr, yr), 0.25)
    assert len(ya) == 120 and draw.sum() == pytest.approx(1) and draw[30:].sum() == pytest.approx(0.25)
    assert with_rehearsal(x, y, None, 0.25)[2] is None
    # expected cells per epoch: 0.75 * 10/30 + 0.25 * 60/90 = 5/12 -> pos_weight 7/5
    loss, _ = _loss(torch.nn.Flatten(), np.zeros((2, 1, 1, 1), np.float32), ya, "cpu", draw)
    assert float(loss.pos_weight) == pytest.approx(7 / 5)
    quick(sims, tmp_path / "base")
    pattern = str(sims[0].parent.parent / "s2p_sim*/suite2p")          # a quoted glob: s2p_sim2 is in both
    r = run("train", sims[1], "--init", tmp_path / "base", "--rehearse", pattern, "--val", "none", "--epochs", "1",
            "--out", tmp_path / "x", ok=False)
    assert r.exit_code == 1 and "--rehearse: s2p_sim2 also in the training paths" in r.output, r.output
    r = run("train", sims[1], "--init", tmp_path / "base", "--rehearse", sims[0], "--rehearse", sims[2],
            "--rehearse-share", "0.3", "--val", "none", "--epochs", "1", "--out", tmp_path / "ft")
    assert "rehearsal:" in r.output and "30% of every epoch" in r.output
    card = json.loads((tmp_path / "ft/model.json").read_text())
    t = card["training"]
    assert t["rehearsal"]["recordings"] == ["s2p_sim1", "s2p_sim3"] and t["rehearsal"]["share"] == 0.3
    assert t["recordings"] == ["s2p_sim2"] and t["n_train"] == sum(len(rs) for rs in load_labelled([sims[1]]))
    assert "out-of-fold" in card["threshold_rule"]
    r = run("train", sims[1], "--rehearse", sims[0], "--epochs", "1", "--val", "none", "--out", tmp_path / "x",
            ok=False)
    assert r.exit_code == 1 and "--rehearse needs --init" in r.output, r.output
