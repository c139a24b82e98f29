"""Shared fixtures: where the shared datasets live, writable copies of them, and a whole-folder fingerprint."""
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

# only the built-in plugins, whatever else is installed: results do not depend on the machine (roicurate/plugins.py)
os.environ.setdefault("ROICURATE_LOAD_PLUGINS", "")


def shared_path():
    """The shared/ folder checked out beside the repository (ROICURATE_SHARED overrides)."""
    env = os.environ.get("ROICURATE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def datasets():
    root = shared_path() / "datasets"
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set ROICURATE_SHARED)")
    return root


def make_writable(folder):
    for dirpath, dirnames, filenames in os.walk(folder):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IRUSR)


@pytest.fixture
def copy_dataset(datasets, tmp_path):
    """copy_dataset("sim/s2p_sim2/suite2p") -> a writable copy of that folder under tmp_path."""
    def copy(rel, name=None):
        dst = tmp_path / (name or Path(rel).name)
        shutil.copytree(datasets / rel, dst)
        make_writable(dst)
        return dst
    return copy


def tree_hashes(folder):
    """{relative path: sha256} of every file under ``folder``: compare before/after to prove nothing changed."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_run(*args, ok=True):
    """``roicurate ARGS`` in-process, as installed: ``main()`` first lets plugins add their commands and options
    (e.g. unet's segment). ``ok``: assert it exited 0."""
    from click.testing import CliRunner

    from roicurate.cli import cli
    from roicurate.plugins import pm
    pm.hook.register_commands(cli=cli)
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def hash_tree():
    return tree_hashes


def save_tiny_model(folder, pipeline="suite2p", name="tiny", seed=0):
    """An untrained cnn2 saved as a real model (safetensors + card): fast and deterministic, for I/O tests."""
    import torch

    from roicurate.crops import CropSpec
    from roicurate.models import save_model
    from roicurate_plugins.nets import cnn2
    size, binz = (64, 0.0) if pipeline == "suite2p" else (50, 0.2)
    torch.manual_seed(seed)
    card = {"arch": "cnn2", "build_kwargs": {"size": size}, "pipeline": pipeline,
            "crop": CropSpec(size, binarize=binz).to_dict(), "classes": ["not_cell", "cell"], "threshold": 0.5}
    return save_model(folder, name, cnn2(size=size), card)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Folder holding tiny.safetensors + tiny.json for Suite2p-sized crops."""
    folder = tmp_path_factory.mktemp("tiny_model")
    save_tiny_model(folder)
    return folder


def one_line_error(call, *names):
    """Run ``call``; it must raise a RoicurateError of one line naming every one of ``names``. Returns the message."""
    from roicurate import RoicurateError
    with pytest.raises(RoicurateError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for name in names:
        assert name in msg, msg
    return msg
