"""Shared fixtures: the data the tests run on, writable copies of it, and a whole-folder fingerprint.

Every unit and format test runs from a bare clone: on the bundled Suite2p example (``examples/s2p_sim2/suite2p``,
a real Suite2p 1.1.0 run) and on CaImAn files built here in ``cnm.save()``'s layout (``caiman_files.py``).
Only tests that need the real labelled sets of ``../shared/datasets`` carry the ``datasets`` marker; they skip
when the sets are absent, and fail instead with ``ROICURATE_REQUIRE_DATASETS=1`` (CI)."""
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

# only the built-in plugins, whatever else is installed: results do not depend on the machine (roicurate/plugins.py)
os.environ.setdefault("ROICURATE_LOAD_PLUGINS", "")
# no periodic progress lines (every 10 s by default) in commands the tests run: on a loaded machine a slow run would
# print them and a check that stderr holds one error line would depend on the machine's speed. The progress tests
# set their own interval.
os.environ.setdefault("ROICURATE_PROGRESS_SECONDS", "100000")


def shared_path():
    """The shared/ folder checked out beside the repository (ROICURATE_SHARED overrides)."""
    env = os.environ.get("ROICURATE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SUITE2P = REPO / "examples" / "s2p_sim2" / "suite2p"     # plane0 (34 ROIs), plane1 (27), combined/


def datasets_root():
    return shared_path() / "datasets"


def pytest_collection_modifyitems(config, items):
    """A test that reads the shared datasets must say so with the ``datasets`` marker (so ``-m "not datasets"``
    is exactly what runs from a clone)."""
    unmarked = [item.nodeid for item in items
                if "datasets" in getattr(item, "fixturenames", ()) and item.get_closest_marker("datasets") is None]
    if unmarked:
        raise pytest.UsageError("uses the shared datasets without @pytest.mark.datasets: " + ", ".join(unmarked))


def pytest_runtest_setup(item):
    """Skip a ``datasets`` test when the shared datasets are absent; fail it with ROICURATE_REQUIRE_DATASETS=1."""
    if item.get_closest_marker("datasets") is None or datasets_root().is_dir():
        return
    msg = f"shared datasets not found at {datasets_root()} (set ROICURATE_SHARED)"
    if os.environ.get("ROICURATE_REQUIRE_DATASETS") == "1":
        pytest.fail(msg + " (ROICURATE_REQUIRE_DATASETS=1)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def datasets():
    """The shared datasets folder (only for tests marked ``datasets``: the marker skips them when it is absent)."""
    return datasets_root()


def make_writable(folder):
    for dirpath, dirnames, filenames in os.walk(folder):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IRUSR)


@pytest.fixture
def copy_dataset(datasets, tmp_path):
    """copy_dataset("sim/s2p_sim2/suite2p") -> a writable copy of that shared-datasets folder under tmp_path."""
    def copy(rel, name=None):
        dst = tmp_path / (name or Path(rel).name)
        shutil.copytree(datasets / rel, dst)
        make_writable(dst)
        return dst
    return copy


@pytest.fixture(scope="session")
def example_suite2p():
    """The bundled Suite2p example (read only: copy it with ``copy_example`` before writing)."""
    return EXAMPLE_SUITE2P


@pytest.fixture
def copy_example(tmp_path):
    """copy_example() -> a writable copy of examples/s2p_sim2/suite2p; copy_example("plane0") -> of one plane
    (``name`` renames the copy)."""
    def copy(rel="", name=None):
        src = EXAMPLE_SUITE2P / rel
        dst = tmp_path / (name or src.name)
        shutil.copytree(src, dst)
        make_writable(dst)
        return dst
    return copy


def write_labels_json(session, planes=("plane0", "plane1"), every=5):
    """A dataset ``labels.json`` (the layout of ../shared/datasets: ``rois[<ROI file>].label``) in the session folder
    around ``suite2p/``: Suite2p's own verdict with every ``every``-th ROI flipped, as a person's curation would
    differ from it. Returns {plane: labels}."""
    import json

    import numpy as np
    labels = {}
    for plane in planes:
        lab = (np.load(session / "suite2p" / plane / "iscell.npy")[:, 0] > 0.5).astype(int)
        lab[::every] = 1 - lab[::every]
        labels[plane] = lab
    rois = {f"suite2p/{plane}/stat.npy": {"label": lab.tolist()} for plane, lab in labels.items()}
    (session / "labels.json").write_text(json.dumps({"recording": session.name, "rois": rois}))
    return labels


@pytest.fixture(scope="session")
def caiman_files(tmp_path_factory):
    """{"evaluated", "evaluated_seed1", "selected", "shape_only": path} of small CaImAn files in cnm.save()'s
    layout (tests/caiman_files.py), built once and read only: copy them with ``copy_caiman`` before writing."""
    import caiman_files as build
    folder = tmp_path_factory.mktemp("caiman_files")
    paths = {"evaluated": build.write_evaluated(folder / "cnmf_refit_evaluated.hdf5"),
             "evaluated_seed1": build.write_evaluated(folder / "cnmf_refit_evaluated_seed1.hdf5", seed=1),
             "selected": build.write_selected(folder / "cnmf_selected.hdf5"),
             "shape_only": build.write_shape_only(folder / "estimates.hdf5")}
    for path in paths.values():
        os.chmod(path, 0o444)
    return paths


@pytest.fixture(scope="session")
def geometry_only_plane(tmp_path_factory):
    """A plane as the labelled real sets keep Suite2p's masks: stat.npy with binary lam, ops.npy with the frame
    geometry only, every ROI a cell in iscell.npy, no traces (built from the example's plane0)."""
    import numpy as np
    plane = tmp_path_factory.mktemp("geometry_only") / "plane0"
    plane.mkdir()
    stat = np.load(EXAMPLE_SUITE2P / "plane0" / "stat.npy", allow_pickle=True)
    keep = ("ypix", "xpix", "lam", "med", "npix", "soma_crop", "npix_soma", "compact", "radius", "aspect_ratio",
            "footprint", "npix_norm", "overlap")
    geometry = np.array([dict({k: s[k] for k in keep}, lam=np.ones(len(s["ypix"]), np.float32)) for s in stat])
    np.save(plane / "stat.npy", geometry)
    np.save(plane / "ops.npy", {"Ly": 128, "Lx": 128, "yrange": [0, 128], "xrange": [0, 128], "diameter": [12.0, 12.0]})
    np.save(plane / "iscell.npy", np.ones((len(stat), 2)))
    return plane


@pytest.fixture(scope="session")
def suite2p_sessions(tmp_path_factory):
    """{1, 2, 3: suite2p/ folder} of three labelled recordings made from the bundled example, laid out like the
    shared datasets (``s2p_sim<i>/suite2p`` + ``s2p_sim<i>/labels.json``): s2p_sim1 holds the example's plane0,
    s2p_sim2 both planes + combined/, s2p_sim3 the example's plane1 as its plane0; labels are Suite2p's verdict
    with every 3rd, 5th, 4th ROI flipped (write_labels_json). Read only."""
    root = tmp_path_factory.mktemp("suite2p_sessions")
    sessions = {i: root / f"s2p_sim{i}" / "suite2p" for i in (1, 2, 3)}
    shutil.copytree(EXAMPLE_SUITE2P, sessions[2])
    for i, plane in ((1, "plane0"), (3, "plane1")):
        shutil.copytree(EXAMPLE_SUITE2P / plane, sessions[i] / "plane0")
        for name in ("db.npy", "settings.npy"):
            shutil.copyfile(EXAMPLE_SUITE2P / name, sessions[i] / name)
    for i, every in ((1, 3), (2, 5), (3, 4)):
        write_labels_json(sessions[i].parent, ("plane0", "plane1") if i == 2 else ("plane0",), every)
    return sessions


def simulation_folder(s2p, out):
    """``out`` laid out as a simulation that make_two_channel reads, from the one-plane Suite2p folder ``s2p``:
    ``truth/regions.json`` whose objects are the ROIs' own masks (lam > 0), ``truth/classes.json`` calling the ROIs
    Suite2p accepted somata and the rest processes, and ``labels.json`` matching each ROI to its own object (label 1
    for the somata)."""
    import json

    import numpy as np
    shutil.copytree(s2p, out / "suite2p")
    make_writable(out)
    stat = np.load(out / "suite2p/plane0/stat.npy", allow_pickle=True)
    soma = np.load(out / "suite2p/plane0/iscell.npy")[:, 0] > 0.5
    regions = [{"id": str(i), "coordinates": [[int(y), int(x)] for y, x, w in zip(s["ypix"], s["xpix"], s["lam"]) if w > 0]}
               for i, s in enumerate(stat)]
    (out / "truth").mkdir()
    (out / "truth/regions.json").write_text(json.dumps(regions))
    (out / "truth/classes.json").write_text(json.dumps(
        {"classes": {str(i): "soma" if c else "process" for i, c in enumerate(soma)}, "cell_classes": ["soma"]}))
    record = {"label": soma.astype(int).tolist(), "matched_gt": [i if c else -1 for i, c in enumerate(soma)]}
    (out / "labels.json").write_text(json.dumps({"recording": out.name, "rois": {"suite2p/plane0/stat.npy": record}}))
    return out


@pytest.fixture(scope="session")
def caiman_sessions(tmp_path_factory):
    """{1, 2, 3: folder} of labelled CaImAn recordings (``caiman_sim<i>/caiman/cnmf_refit_evaluated.hdf5`` +
    ``labels.json`` holding the simulation's truth, seeds 0, 1, 2), laid out like the shared datasets'; read only."""
    import caiman_files as build
    root = tmp_path_factory.mktemp("caiman_sessions")
    sessions = {}
    for i in (1, 2, 3):
        sessions[i] = root / f"caiman_sim{i}"
        os.chmod(build.write_labelled_session(sessions[i], seed=i - 1), 0o444)
    return sessions


@pytest.fixture
def copy_caiman(caiman_files, tmp_path):
    """copy_caiman("evaluated") -> a writable copy under tmp_path (named like the original unless ``name``)."""
    def copy(kind, name=None):
        src = caiman_files[kind]
        dst = tmp_path / (name or src.name)
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
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


def save_tiny_model(folder, pipeline="suite2p", name="tiny", seed=0, threshold=0.5, operating_points=None):
    """An untrained cnn2 saved as a real model (safetensors + card): fast and deterministic, for I/O tests.
    ``operating_points``: {name: threshold} for the card's ``operating_points`` (``threshold`` must be one)."""
    import torch

    from roicurate.crops import CropSpec
    from roicurate.models import save_model
    from roicurate_plugins.nets import cnn2
    size, binz = (64, 0.0) if pipeline == "suite2p" else (50, 0.2)
    torch.manual_seed(seed)
    card = {"arch": "cnn2", "build_kwargs": {"size": size}, "pipeline": pipeline,
            "crop": CropSpec(size, binarize=binz).to_dict(), "classes": ["not_cell", "cell"], "threshold": threshold}
    if operating_points:
        card["operating_points"] = {k: {"threshold": t, "rule": f"test point {k}"} for k, t in operating_points.items()}
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
