"""The roicurate command end to end, on copies of real Suite2p output (the bundled example), through the installed console script."""
import json
import subprocess
import sys

import numpy as np
import pytest


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "roicurate.cli", *map(str, args)], capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_apply_suite2p_folder_all_planes_and_combined(copy_example, tiny_model, hash_tree):
    s2p = copy_example()
    originals = {p: (s2p / p / "iscell.npy").read_bytes() for p in ("plane0", "plane1", "combined")}
    p = run("apply", s2p, "--model", tiny_model)
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(lines) == 4 and "plane0: 34 ROIs" in lines[0] and "plane1: 27 ROIs" in lines[1]
    assert f"kept in {s2p / 'plane0' / 'iscell_suite2p.npy'} (and 1 more like it); undo with: roicurate revert " \
           f"{s2p}" in lines[2]
    assert lines[3].startswith("done: 2 planes, 61 ROIs, ")
    planes = []
    for plane in ("plane0", "plane1"):
        isc = np.load(s2p / plane / "iscell.npy")
        assert isc.dtype == np.float64 and isc.shape == (len(np.load(s2p / plane / "stat.npy", allow_pickle=True)), 2)
        assert set(np.unique(isc[:, 0])) <= {0.0, 1.0}
        assert np.array_equal(isc[:, 0] == 1, isc[:, 1] >= 0.5)
        assert (s2p / plane / "iscell_suite2p.npy").read_bytes() == originals[plane]
        card = json.loads((s2p / plane / "roicurate.json").read_text())
        assert card["model"]["name"] == "tiny"
        planes.append(isc)
    np.testing.assert_array_equal(np.load(s2p / "combined" / "iscell.npy"), np.concatenate(planes))

    # a second run with another threshold keeps the FIRST original as the backup
    run("apply", s2p / "plane0", "--model", tiny_model, "--threshold", "0.9")
    assert (s2p / "plane0" / "iscell_suite2p.npy").read_bytes() == originals["plane0"]
    assert np.array_equal(np.load(s2p / "plane0" / "iscell.npy")[:, 0] == 1, np.load(s2p / "plane0" / "iscell.npy")[:, 1] >= 0.9)

    run("revert", s2p)
    for plane, data in originals.items():
        assert (s2p / plane / "iscell.npy").read_bytes() == data
        assert not (s2p / plane / "iscell_suite2p.npy").exists()


def test_dry_run_writes_nothing(copy_example, tiny_model, hash_tree):
    plane = copy_example("plane1")
    before = hash_tree(plane)
    p = run("apply", plane, "--model", tiny_model, "--dry-run")
    assert "dry run" in p.stdout and hash_tree(plane) == before


def test_one_bad_input_stops_everything_before_writing(copy_example, tiny_model, hash_tree, tmp_path):
    good = copy_example("plane1", "good")
    bad = copy_example("plane0", "bad")
    np.save(bad / "iscell.npy", np.load(bad / "iscell.npy")[:-1])
    before = {d: hash_tree(d) for d in (good, bad)}
    p = run("apply", good, bad, "--model", tiny_model, ok=False)
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("roicurate: error:") and "bad" in err[0]
    assert {d: hash_tree(d) for d in (good, bad)} == before


@pytest.mark.parametrize("args, message", [
    (("apply", "{plane}", "--model", "no-such-model"), "unknown model"),
    (("apply", "{tmp}/nothing-here"), "not a pipeline output"),
    (("revert", "{tmp}/nothing-here"), "does not exist"),
])
def test_user_errors_are_one_line(copy_example, tmp_path, hash_tree, args, message):
    plane = copy_example("plane0")
    before = hash_tree(plane)
    p = run(*[a.format(plane=plane, tmp=tmp_path) for a in args], ok=False)
    assert p.returncode != 0 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert hash_tree(plane) == before


def test_models_and_plugins_listing():
    names = {r["name"] for r in json.loads(run("models", "--json").stdout)}
    assert {"resnet50", "cnn2"} <= names
    out = run("plugins").stdout
    assert "roicurate_plugins.suite2p" in out and "register_sources" in out and "register_models" in out


def test_third_party_plugin_registers_like_a_builtin(tmp_path):
    """A plugin module registered with the plugin manager adds a model and a command."""
    (tmp_path / "labplugin.py").write_text(
        "import click\n"
        "from roicurate.hookspecs import hookimpl\n"
        "from roicurate.models import ModelSpec\n"
        "from roicurate_plugins.nets import cnn2\n"
        "@hookimpl\n"
        "def register_models(register):\n"
        "    register(ModelSpec('lab-cnn', 'suite2p', cnn2, description='our lab net'))\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    @cli.command()\n"
        "    def hello():\n"
        "        click.echo('hello from the lab')\n")
    code = ("import sys; sys.path.insert(0, %r); import labplugin; from roicurate.plugins import pm; "
            "pm.register(labplugin); from roicurate.cli import main; main()") % str(tmp_path)
    p = subprocess.run([sys.executable, "-c", code, "models"], capture_output=True, text=True)
    assert p.returncode == 0 and "lab-cnn" in p.stdout and "our lab net" in p.stdout
    p = subprocess.run([sys.executable, "-c", code, "hello"], capture_output=True, text=True)
    assert p.stdout.strip() == "hello from the lab"
