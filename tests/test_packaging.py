"""What a non-editable install gets: the wheel holds every module, data file, weight and the licences; the console
script is declared; the version and the changelog move with the bundled weights.

The wheel is built here with ``pip wheel --no-build-isolation`` (no download); CI also builds the sdist and the
wheel with ``python -m build`` and runs the installed wheel from a fresh venv outside the checkout
(``.ci/check_wheel.sh``)."""
import configparser
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import roicurate

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("roicurate", "roicurate_plugins")


def package_files():
    """Every file of the two packages that a checkout holds (git's list where there is one), bytecode aside."""
    try:
        out = subprocess.run(["git", "ls-files", *PACKAGES], cwd=REPO, capture_output=True, text=True, check=True)
        files = out.stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("*") if p.is_file()]
    return sorted(f for f in files if "__pycache__" not in f and not f.endswith(".pyc"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list(out.glob("roicurate-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_module_data_file_and_weight(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files()
    assert "roicurate/cli/apply.py" in expected and "roicurate_plugins/weights/suite2p-resnet50.safetensors" in expected
    missing = [f for f in expected if f not in names]
    assert not missing, f"left out of the wheel: {missing}"


def test_wheel_carries_both_licences_and_the_metadata(wheel):
    z = zipfile.ZipFile(wheel)
    dist_info = f"roicurate-{roicurate.__version__}.dist-info"
    names = set(z.namelist())
    for licence in ("LICENSE", "MODEL_LICENSE"):
        assert f"{dist_info}/licenses/{licence}" in names, sorted(n for n in names if "dist-info" in n)
        assert z.read(f"{dist_info}/licenses/{licence}") == (REPO / licence).read_bytes()
    metadata = z.read(f"{dist_info}/METADATA").decode()
    assert f"Version: {roicurate.__version__}" in metadata
    assert "License-Expression: GPL-3.0-or-later" in metadata
    assert "Classifier: Intended Audience :: Science/Research" in metadata
    entry_points = configparser.ConfigParser()
    entry_points.read_string(z.read(f"{dist_info}/entry_points.txt").decode())
    assert entry_points["console_scripts"]["roicurate"] == "roicurate.cli:main"


def test_the_gpl_text_is_the_licence_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert 'license = "GPL-3.0-or-later"' in (REPO / "pyproject.toml").read_text()


def test_model_licence_names_every_bundled_model():
    terms = (REPO / "MODEL_LICENSE").read_text()
    cards = sorted((REPO / "roicurate_plugins" / "weights").glob("*.json"))
    assert len(cards) == 4, cards
    for card in cards:
        assert card.stem in terms, f"MODEL_LICENSE says nothing of {card.stem}"


def test_changelog_has_this_version_and_every_bundled_weight():
    """A new set of weights (a new sha256) or a new version without a changelog entry fails here."""
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## .*\b{re.escape(roicurate.__version__)}\b", changelog, re.M), \
        f"CHANGELOG.md has no heading for version {roicurate.__version__}"
    cards = sorted((REPO / "roicurate_plugins" / "weights").glob("*.json"))
    assert cards
    for card in cards:
        digest = json.loads(card.read_text())["sha256"]
        assert digest[:12] in changelog, f"CHANGELOG.md does not name {card.stem}'s weights (sha256 {digest[:12]})"
