"""Issue 16, what a new user hit: -h, progress where stderr is not a terminal, --quiet / --verbose, the totals line,
a model made for another pipeline, apply --report --explain N, train naming its label sources, start-up time."""
import json
import subprocess
import sys

import numpy as np
import pytest


def run(*args, ok=True, env=None):
    import os
    p = subprocess.run([sys.executable, "-m", "roicurate.cli", *map(str, args)], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_short_help_everywhere():
    from conftest import cli_run
    assert "Commands:" in cli_run("-h").output
    for cmd in ("apply", "revert", "train", "report", "segment"):
        r = cli_run(cmd, "-h")
        assert "-h, --help" in r.output and "--quiet" in r.output, cmd


def test_device_defaults_to_auto():
    from conftest import cli_run
    for cmd in ("apply", "train", "evaluate", "report", "explain"):
        assert "--device TEXT" in cli_run(cmd, "-h").output
        assert "[default: auto]" in cli_run(cmd, "-h").output.split("--device", 1)[1].split("--", 1)[0], cmd


def test_progress_lines_quiet_verbose_and_totals(copy_example, tiny_model):
    s2p = copy_example()
    # stderr is a pipe here: tqdm would print nothing, so progress comes as plain lines
    p = run("apply", s2p, "--model", tiny_model, "--dry-run", env={"ROICURATE_PROGRESS_SECONDS": "0"})
    err = p.stderr.strip().splitlines()
    assert err and all(line.startswith("classifying: ") for line in err), p.stderr
    assert err[-1].startswith("classifying: 61/61 ROIs (100%)") and err[-1].endswith(", done")
    out = p.stdout.strip().splitlines()
    assert out[-1].startswith("done: 2 planes, 61 ROIs, ") and "accepted" in out[-1]
    # --quiet: the totals line only; --verbose: what was read and which model ran where
    p = run("apply", s2p, "--model", tiny_model, "--dry-run", "--quiet", env={"ROICURATE_PROGRESS_SECONDS": "0"})
    assert p.stderr == "" and len(p.stdout.strip().splitlines()) == 1 and p.stdout.startswith("done: ")
    p = run("-q", "apply", s2p / "plane0", "--model", tiny_model, "--dry-run")
    assert p.stderr == "" and p.stdout.startswith("done: 1 plane, 34 ROIs")
    p = run("apply", s2p / "plane0", "--model", tiny_model, "--dry-run", "-v")
    assert "plane0: read 34 ROIs (suite2p)" in p.stderr and "model tiny (sha256 " in p.stderr


def test_line_progress_is_periodic(capsys):
    from roicurate.progress import LineProgress
    import time
    bar = LineProgress(100, "classifying", every=3600)
    for _ in range(10):
        bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""             # shorter than the interval: the result lines say it all
    bar = LineProgress(4, "x", every=0.01)
    bar.update(1)
    time.sleep(0.02)
    bar.update(1)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err.splitlines() == ["x: 2/4 ROIs (50%), 0 s", "x: 4/4 ROIs (100%), 0 s, done"]


def test_model_for_another_pipeline_is_refused(copy_example, tmp_path, hash_tree):
    from conftest import save_tiny_model
    plane = copy_example("plane0")
    model = save_tiny_model(tmp_path / "cm", pipeline="caiman")
    before = hash_tree(plane)
    p = run("apply", plane, "--model", model, ok=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "made for caiman ROIs" in lines[0] and "--any-pipeline" in lines[0]
    assert hash_tree(plane) == before
    p = run("apply", plane, "--model", "caiman-cnn2", "--dry-run", ok=False)
    assert p.returncode == 1 and "made for caiman ROIs" in p.stderr
    run("apply", plane, "--model", model, "--any-pipeline", "--dry-run")


def test_unet_is_not_offered_as_a_classifier(copy_example):
    plane = copy_example("plane0")
    p = run("apply", plane, "--model", "unet-mean", ok=False)
    assert "segmentation model" in p.stderr and "not registered" not in p.stderr
    p = run("apply", plane, "--model", "nope", ok=False)
    assert "unknown model" in p.stderr and "unet-mean" not in p.stderr


def test_apply_report_explain_n(copy_example, tiny_model, tmp_path):
    plane = copy_example("plane0")
    run("apply", plane, "--model", tiny_model)                        # the untrained model's scores, then its
    threshold = float(np.median(np.load(plane / "iscell.npy")[:, 1]))  # median: both verdicts have examples
    run("apply", plane, "--model", tiny_model, "--threshold", repr(threshold), "--report", tmp_path / "rep",
        "--explain", "1")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Closest calls: the 1 ROIs nearest the threshold" in page
    # one explained ROI per figure: the closest call, and the 4 surest accepted and 4 surest rejected (--examples 4)
    iscell = np.load(plane / "iscell.npy")
    score, accepted = iscell[:, 1], iscell[:, 0] == 1
    assert accepted.sum() >= 4 and (~accepted).sum() >= 4
    order = np.argsort(-score, kind="stable")
    closest = np.argsort(np.abs(score - threshold), kind="stable")[:1]
    shown = set(np.concatenate([closest, order[accepted[order]][:4], order[~accepted[order]][::-1][:4]]).tolist())
    assert len(shown) in (8, 9)
    assert sorted(p.name for p in (tmp_path / "rep" / "plane0").glob("roi*.png")) == sorted(f"roi{i}.png" for i in shown)


def test_importing_the_cli_and_its_commands_does_not_import_torch():
    code = ("import sys; from roicurate.cli import cli; from roicurate.plugins import pm, model_specs; "
            "pm.hook.register_commands(cli=cli); model_specs(); print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr


def test_train_says_where_every_label_comes_from(example_suite2p, tmp_path):
    import shutil
    from conftest import cli_run, make_writable
    a, b = tmp_path / "a" / "suite2p", tmp_path / "b" / "suite2p"
    shutil.copytree(example_suite2p, a, ignore=shutil.ignore_patterns("plane1", "combined"))   # one plane
    shutil.copytree(example_suite2p, b)                            # no labels.json beside these copies
    make_writable(tmp_path)
    iscell = np.load(b / "plane0" / "iscell.npy")
    iscell[0, 0] = 1 - iscell[0, 0]                               # flipped in the GUI: a person looked
    np.save(b / "plane0" / "iscell.npy", iscell)
    r = cli_run("train", a, b, "--arch", "cnn2", "--epochs", "1", "--val", "b", "--calibrate", "none",
                "--out", tmp_path / "m")
    out = r.output
    assert f"labels of {a / 'plane0'}: Suite2p's iscell.npy as its built-in classifier wrote it" in out
    assert f"labels of {b / 'plane0'}: Suite2p's iscell.npy, curated by hand (1 ROIs differ" in out
    assert f"labels of {b / 'plane1'}: Suite2p's iscell.npy as its built-in classifier wrote it" in out
    assert "warning: 2 of 3 units are labelled only by their pipeline's automatic classifier" in out


def test_caiman_labels_from_idx_components_are_automatic(caiman_files):
    from roicurate.labels import describe_label_source
    from roicurate.plugins import sources
    f = caiman_files["evaluated"]
    rs = sources()["caiman"].read(f)
    rs.origin["label_source"] = "pipeline verdict"
    text, automatic = describe_label_source(rs)
    assert automatic and "idx_components" in text


def test_report_notes_a_model_made_for_another_pipeline(copy_example, tmp_path):
    from conftest import save_tiny_model
    from roicurate_plugins.report_commands import load_units
    plane = copy_example("plane0")
    model = save_tiny_model(tmp_path / "cm", pipeline="caiman")
    (unit,) = load_units([plane], model_name=model)
    assert any("was made for caiman ROIs, and these are suite2p ROIs" in n for n in unit.notes)
