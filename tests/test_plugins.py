"""Plugins: a plugin registered in-process adds a source and a model and goes away when unregistered (as llm's
tests do); a third-party model never becomes a pipeline's default; ROICURATE_LOAD_PLUGINS chooses which installed
plugins load."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from roicurate import RoicurateError
from roicurate.hookspecs import hookimpl
from roicurate.models import ModelSpec
from roicurate.plugins import default_model, model_specs, pipelines, pm, source_for, sources
from roicurate.rois import RoiSet
from roicurate.sources import Source, read_units


class SquaresSource(Source):
    """A made-up pipeline: a .squares file holds one 2x2 ROI per line 'y x' on a 32x32 frame."""
    name = "squares"
    description = "a .squares file"
    display_name, default_model, default_arch = "Squares", "squares-model", "cnn2"

    def detect(self, path):
        return str(path).endswith(".squares")

    def read(self, path):
        corners = np.loadtxt(path, dtype=int, ndmin=2)
        ys = [[y, y, y + 1, y + 1] for y, _ in corners]
        xs = [[x, x + 1, x, x + 1] for _, x in corners]
        return RoiSet.from_pixels((32, 32), ys, xs, pipeline="squares")


class SquaresPlugin:
    @hookimpl
    def register_sources(self, register):
        register(SquaresSource())

    @hookimpl
    def register_models(self, register):
        # a trained Suite2p model from a third party: installed, listed, but never Suite2p's default
        register(ModelSpec("lab-suite2p-model", "suite2p", build=None, weights="/nowhere/lab.safetensors"))
        register(ModelSpec("squares-model", "squares", build=None, weights="/nowhere/squares.safetensors"))


@pytest.fixture
def squares_plugin():
    plugin = SquaresPlugin()
    pm.register(plugin, name="squares-plugin")
    try:
        yield plugin
    finally:
        pm.unregister(name="squares-plugin")


def test_registered_plugin_adds_a_source_and_models_then_goes(squares_plugin, tmp_path):
    f = tmp_path / "a.squares"
    f.write_text("3 4\n10 20\n")
    assert source_for(f).name == "squares" and "squares" in pipelines()
    [(src, unit, rs)] = read_units([f])
    assert (src.name, unit, len(rs), rs.source, rs.pipeline, rs.path) == ("squares", str(f), 2, "squares",
                                                                         "squares", str(f))
    assert rs.recording == str(f)                          # the source's default: the unit is its own recording
    assert default_model("squares") == "squares-model"
    assert {"lab-suite2p-model", "squares-model"} <= set(model_specs())
    pm.unregister(name="squares-plugin")
    assert "squares" not in sources() and "lab-suite2p-model" not in model_specs()
    with pytest.raises(RoicurateError, match="a.squares: not a pipeline output"):
        source_for(f)
    pm.register(squares_plugin, name="squares-plugin")     # for the fixture to unregister


def test_a_plugin_model_never_becomes_the_default(squares_plugin):
    assert default_model("suite2p") == "suite2p-resnet50" and default_model("caiman") == "caiman-cnn2"
    with pytest.raises(RoicurateError, match="no installed source speaks for pipeline 'unknown'"):
        default_model("")


def test_pipeline_option_takes_the_registered_sources(squares_plugin, tmp_path):
    from conftest import cli_run
    r = cli_run("evaluate", tmp_path, "--model", "x", "--pipeline", "nosuch", ok=False)
    assert r.exit_code == 2 and "'nosuch' is not a registered pipeline (choose from caiman, squares, suite2p)" \
        in r.output


def _fake_distribution(root):
    """An installed distribution 'roicurate-fakeplugin' whose entry point (group roicurate) registers a model."""
    (root / "fakeplugin_mod.py").write_text(
        "from roicurate.hookspecs import hookimpl\nfrom roicurate.models import ModelSpec\n\n"
        "@hookimpl\ndef register_models(register):\n"
        "    register(ModelSpec('fake-arch', 'any', build=None, description='from the fake plugin'))\n")
    info = root / "roicurate_fakeplugin-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: roicurate-fakeplugin\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[roicurate]\nfakeplugin = fakeplugin_mod\n")


@pytest.mark.parametrize("load, listed", [(None, True), ("", False), ("roicurate-fakeplugin", True)])
def test_load_plugins_switch(tmp_path, load, listed):
    _fake_distribution(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ROICURATE_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    if load is not None:
        env["ROICURATE_LOAD_PLUGINS"] = load
    p = subprocess.run([sys.executable, "-m", "roicurate", "plugins"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert ("fakeplugin" in p.stdout and "0.3" in p.stdout) == listed
    assert "roicurate_plugins.suite2p" in p.stdout                   # the built-ins always load
    m = subprocess.run([sys.executable, "-m", "roicurate", "models", "--json"], capture_output=True, text=True,
                       env=env)
    assert ("fake-arch" in {r["name"] for r in json.loads(m.stdout)}) == listed


def test_load_plugins_names_a_missing_package(tmp_path):
    env = dict(os.environ, ROICURATE_LOAD_PLUGINS="roicurate-nosuchplugin")
    p = subprocess.run([sys.executable, "-m", "roicurate", "plugins"], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and p.stderr.strip() == ("roicurate: error: ROICURATE_LOAD_PLUGINS names "
                                                      "'roicurate-nosuchplugin', which is not installed")
