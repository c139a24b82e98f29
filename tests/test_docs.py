"""The manual stays complete: every command (built-in and plugin) and every option is documented, the command
reference is generated from the commands themselves, every benchmark a measurement page names exists, every link
resolves, the README stays a front page, and the plugin example in the docs runs. None of this needs Sphinx; the
build itself (test_docs_build) runs when Sphinx is installed, and must run when ROICURATE_REQUIRE_DOCS=1."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MEASUREMENT_PAGES = ("accuracy.md", "speed.md", "reliability.md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)


def doc_pages():
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 10, f"the manual has only {len(pages)} pages in {DOCS}"
    return pages


def docs_text():
    return "\n".join(p.read_text() for p in doc_pages())


def commands():
    """{'apply': command, 'train': command, ...} after plugins added theirs, as ``roicurate.cli.main`` does."""
    from roicurate.cli import cli
    from roicurate.plugins import pm
    pm.hook.register_commands(cli=cli)
    found = {}

    def walk(group, prefix=""):
        for name, cmd in group.commands.items():
            found[prefix + name] = cmd
            if isinstance(cmd, click.Group):
                walk(cmd, prefix + name + " ")
    walk(cli)
    return found


def long_options(cmd):
    return sorted({o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts
                   if o.startswith("--")})


def test_commands_include_the_plugins_commands():
    names = set(commands())
    builtin = {"apply", "revert", "status", "models", "plugins", "label", "train", "evaluate"}
    from_plugins = {"report", "explain", "segment"}          # roicurate_plugins/report_commands.py, unet.py
    assert builtin | from_plugins <= names, sorted(builtin | from_plugins - names)


def test_commands_page_generates_the_reference_from_the_click_group():
    text = (DOCS / "commands.md").read_text()
    block = re.search(r"```\{eval-rst\}\n(.*?)```", text, re.S)
    assert block, "docs/commands.md has no eval-rst block"
    assert re.search(r"^\.\. click:: roicurate\.cli:cli$", block.group(1), re.M)
    assert re.search(r"^\s+:nested: full$", block.group(1), re.M)
    assert "sphinx_click" in (DOCS / "conf.py").read_text()


def test_conf_registers_the_plugins_commands_before_sphinx_click_reads_cli():
    """In a fresh interpreter, running docs/conf.py leaves on ``cli`` every command ``roicurate`` has at run time."""
    code = "import runpy; ns = runpy.run_path('docs/conf.py'); print(' '.join(sorted(ns['cli'].commands)))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert set(p.stdout.split()) == set(commands()), p.stdout


def test_every_command_has_a_prose_section():
    headings = [title for _, title in HEADING.findall(docs_text())]
    missing = [name for name in commands()
               if not any(re.search(rf"\broicurate {re.escape(name)}\b", h) for h in headings)]
    assert not missing, f"no '## roicurate NAME' section in docs/*.md for: {missing}"


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_is_named_in_the_docs(name):
    text = docs_text()
    options = long_options(commands()[name])
    assert "--quiet" in options and "--verbose" in options       # every command has at least these
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert not missing, f"roicurate {name}: options not named in docs/*.md: {missing}"


def test_measurement_pages_name_benchmarks_that_exist():
    for page in MEASUREMENT_PAGES:
        named = set(re.findall(r"benchmarks/([A-Za-z0-9_]+\.py)", (DOCS / page).read_text()))
        assert named, f"docs/{page} names no benchmarks/*.py script"
        missing = sorted(n for n in named if not (ROOT / "benchmarks" / n).is_file())
        assert not missing, f"docs/{page} names scripts that do not exist: {missing}"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert 50 <= len(lines) <= 300, len(lines)


def test_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands_ = re.findall(r"```bash\n(python3 -m venv .*?)\n```", readme)
    assert len(commands_) == 2, commands_             # install + demo, and the tests
    assert commands_[1] in (ROOT / ".ci" / "run").read_text()


def slug(title):
    """MyST's (and GitHub's) heading anchor: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def check_links(page):
    """[(link, why)] for every relative link of ``page`` whose file or heading anchor does not exist."""
    bad = []
    links = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    for target in links:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append((target, "no such file"))
        elif anchor and file.suffix == ".md" and anchor not in {slug(t) for _, t in HEADING.findall(file.read_text())}:
            bad.append((target, f"no heading with that anchor in {file.name}"))
    return links, bad


def test_readme_links_resolve():
    links, bad = check_links(ROOT / "README.md")
    assert sum(link.startswith("docs/") for link in links) >= 5, links
    assert not bad, bad


def test_docs_links_resolve():
    n = 0
    for page in doc_pages() + [ROOT / "CHANGELOG.md"]:
        links, bad = check_links(page)
        n += len(links)
        assert not bad, (page.name, bad)
    assert n >= 30, n


def test_every_page_is_in_a_toctree():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([a-z0-9-]+)$", "\n".join(re.findall(r"```\{toctree\}\n(.*?)```", index, re.S)), re.M))
    pages = {p.stem for p in doc_pages()} - {"index"}
    assert pages and pages <= listed, sorted(pages - listed)
    assert "../CHANGELOG.md" in (DOCS / "changelog.md").read_text()


def test_the_plugin_example_in_the_docs_runs(tmp_path):
    """The example plugin of docs/plugins.md, as printed there: its model builds and runs, its image is computed
    from a real Suite2p plane, and its command counts that plane's ROIs."""
    import numpy as np
    import torch

    from roicurate.plugins import image_providers, model_specs, pm
    from roicurate.sources import read_units
    code = re.search(r"```python\n(# roicurate_lab\.py\n.*?)```", (DOCS / "plugins.md").read_text(), re.S)
    assert code, "docs/plugins.md has no '# roicurate_lab.py' example"
    (tmp_path / "roicurate_lab.py").write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("roicurate_lab", tmp_path / "roicurate_lab.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    plane = ROOT / "examples" / "s2p_sim2" / "suite2p" / "plane0"
    pm.register(plugin, "docs-example-lab")
    try:
        assert "lab-net" in model_specs() and "mean_z" in image_providers()
        net = model_specs()["lab-net"].build(in_channels=2, n_out=1)
        assert tuple(net(torch.zeros(3, 2, 64, 64)).shape) == (3, 1)
        roiset = read_units([plane])[0][2]
        z = image_providers()["mean_z"].compute(roiset)
        assert z.shape == roiset.shape and abs(float(np.mean(z))) < 1e-3
        group = click.Group()
        pm.hook.register_commands(cli=group)
        result = CliRunner().invoke(group, ["count-rois", str(plane)])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{plane}: {len(roiset)} ROIs" and len(roiset) > 0
    finally:
        pm.unregister(name="docs-example-lab")
    assert "lab-net" not in model_specs()


def test_docs_build(tmp_path):
    """The manual builds with warnings as errors (the command CI runs as its own step)."""
    missing = [m for m in ("sphinx", "myst_parser", "sphinx_click", "furo") if importlib.util.find_spec(m) is None]
    if missing:
        why = f"docs build needs {', '.join(missing)} (pip install -r docs/requirements.txt)"
        if os.environ.get("ROICURATE_REQUIRE_DOCS") == "1":
            pytest.fail(why + "; ROICURATE_REQUIRE_DOCS is set")
        pytest.skip(why)
    p = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                        str(tmp_path / "html")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    html = (tmp_path / "html" / "commands.html").read_text()
    missing = [name for name in commands() if f'id="roicurate-{name.replace(" ", "-")}"' not in html]
    assert not missing, f"the generated reference lacks: {missing}"
