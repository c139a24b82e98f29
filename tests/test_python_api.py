"""The Python API (roicurate/api/): ``roicurate.predict / apply / status / revert`` on the bundled example (two
Suite2p planes, copied), with the bundled default model: what it returns is what the command writes and prints,
a dry run changes no byte, a round trip gives the original bytes back, bad input is one line naming the file."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import roicurate
from conftest import cli_run, one_line_error, tree_hashes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "s2p_sim2" / "suite2p"


@pytest.fixture
def s2p(tmp_path):
    """A writable copy of the bundled suite2p/ folder (plane0, plane1, combined)."""
    dst = tmp_path / "suite2p"
    shutil.copytree(EXAMPLE, dst)
    return dst


def n_rois(plane):
    return len(np.load(plane / "stat.npy", allow_pickle=True))


def test_predict_is_what_apply_writes(s2p):
    plane = s2p / "plane0"
    before = tree_hashes(s2p)
    p = roicurate.predict(plane)
    assert tree_hashes(s2p) == before                               # predict writes nothing
    assert isinstance(p, np.ndarray) and p.dtype == np.float64 and p.shape == (n_rois(plane),)
    assert ((p >= 0) & (p <= 1)).all() and p.min() < 0.5 < p.max()
    [r] = roicurate.apply(plane)
    iscell = np.load(plane / "iscell.npy")
    assert iscell.dtype == np.float64 and np.array_equal(iscell[:, 1], p)
    assert np.array_equal(r.probabilities, p) and np.array_equal(r.accepted, iscell[:, 0] > 0.5)
    assert np.array_equal(r.accepted, p >= r.threshold)
    assert (r.path, r.source, r.pipeline, r.model, r.dry_run) == (str(plane), "suite2p", "suite2p",
                                                                  "suite2p-resnet50", False)
    assert r.backup == str(plane / "iscell_suite2p.npy") and str(plane / "iscell.npy") in r.written
    assert r.model_sha256 and len(r.model_sha256) == 64 and r.reference_diameter > 0
    assert r.line.startswith(f"{plane}: {len(p)} ROIs, {int(r.accepted.sum())} accepted")
    assert r.record()["accepted"] == int(iscell[:, 0].sum())


def test_dry_run_changes_no_byte_and_prints_what_the_command_prints(s2p, capsys):
    before = tree_hashes(s2p)
    results = roicurate.apply(s2p, dry_run=True)
    assert tree_hashes(s2p) == before
    assert capsys.readouterr() == ("", "")                         # a library call prints nothing
    assert [r.path for r in results] == [str(s2p / "plane0"), str(s2p / "plane1")]
    listed = roicurate.apply([s2p / "plane0", s2p / "plane1"], dry_run=True)      # one list, e.g. a glob's
    assert [r.line for r in listed] == [r.line for r in results]
    assert all(r.dry_run and r.written == () and r.backup is None for r in results)
    assert [r.rois for r in results] == [n_rois(s2p / "plane0"), n_rois(s2p / "plane1")]
    printed = cli_run("apply", s2p, "--dry-run").output.splitlines()
    assert printed[:2] == [r.line for r in results] and "[dry run: nothing written]" in results[0].line
    assert tree_hashes(s2p) == before


def test_apply_status_revert_round_trip(s2p):
    before = tree_hashes(s2p)
    assert [r.state for r in roicurate.status(s2p)] == ["not curated", "not curated"]
    results = roicurate.apply(s2p, threshold=0.5)
    assert [r.threshold for r in results] == [0.5, 0.5]
    rows = roicurate.status(s2p)
    assert [(r.path, r.state, r.model, r.threshold) for r in rows] == [
        (str(s2p / p), "curated", "suite2p-resnet50", 0.5) for p in ("plane0", "plane1")]
    assert rows[0].line.startswith(f"{s2p / 'plane0'}: curated by suite2p-resnet50 at threshold 0.500 on ")
    assert rows[0].record()["type"] == "unit" and rows[0].backup == str(s2p / "plane0" / "iscell_suite2p.npy")
    combined = np.load(s2p / "combined" / "iscell.npy")            # combined/ rebuilt from the planes
    assert np.array_equal(combined, np.concatenate([np.load(s2p / p / "iscell.npy") for p in ("plane0", "plane1")]))
    assert tree_hashes(s2p) != before
    [undone] = roicurate.revert(s2p)
    assert undone.reverted and undone.path == str(s2p) and "restored" in undone.message
    assert tree_hashes(s2p) == before
    assert [r.state for r in roicurate.status(s2p)] == ["not curated", "not curated"]
    [again] = roicurate.revert(s2p)
    assert not again.reverted and "nothing to revert" in again.line


def test_hand_edits_kept_and_warned(s2p):
    plane = s2p / "plane1"
    roicurate.apply(plane)
    iscell = np.load(plane / "iscell.npy")
    iscell[0, 0] = 1 - iscell[0, 0]                               # a click in the Suite2p GUI
    np.save(plane / "iscell.npy", iscell)
    assert [r.state for r in roicurate.status(plane)] == ["edited since"]
    one_line_error(lambda: roicurate.apply(plane), str(plane / "iscell.npy"), "--force")
    with pytest.warns(roicurate.RoicurateWarning, match="hand edits kept in") as caught:
        [r] = roicurate.apply(plane, force=True)
    [note] = r.notes
    assert str(caught[0].message) == note
    kept = Path(note.rsplit(" ", 1)[1])
    assert kept.parent == plane and np.array_equal(np.load(kept), iscell)


def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(s2p):
    stat = s2p / "plane1" / "stat.npy"
    stat.write_bytes(stat.read_bytes()[:200])                     # truncated
    before = tree_hashes(s2p)
    one_line_error(lambda: roicurate.apply(s2p), str(stat))      # plane0 is fine, but checked before any write
    assert tree_hashes(s2p) == before
    one_line_error(lambda: roicurate.predict(s2p / "plane1"), str(stat))
    one_line_error(lambda: roicurate.predict(s2p / "plane7"), "plane7")
    one_line_error(lambda: roicurate.revert(s2p / "missing"), "missing", "does not exist")
    one_line_error(lambda: roicurate.apply(), "no path given")
    one_line_error(lambda: roicurate.status(42), "paths must be str or os.PathLike")
    one_line_error(lambda: roicurate.apply(s2p / "plane0", threshold=1.5), "threshold 1.5")
    one_line_error(lambda: roicurate.apply(s2p / "plane0", redcell=True), "--redcell")
    one_line_error(lambda: roicurate.apply(s2p / "plane0", model="no-such-model"), "no-such-model")
    assert tree_hashes(s2p) == before


def test_predict_refuses_a_path_with_several_units(s2p):
    msg = one_line_error(lambda: roicurate.predict(s2p), str(s2p / "plane0"), str(s2p / "plane1"), "2 units")
    assert "dry_run=True" in msg


def test_iter_apply_yields_each_plane_before_classifying_the_next(s2p):
    """160 planes print 160 lines as they go: the first result comes before the second plane is classified."""
    from roicurate.api import Events, iter_apply
    seen = []

    class Counting(Events):
        def progress(self, total, desc):
            seen.append(("total", total))

            class Bar:
                def update(self, k=1):
                    seen.append(("update", k))

                def clear(self):
                    pass

                def close(self):
                    seen.append(("close",))
            return Bar()

        def finished(self, totals):
            seen.append(("finished", totals))

    n0, n1 = n_rois(s2p / "plane0"), n_rois(s2p / "plane1")
    classified = lambda: sum(event[1] for event in seen if event[0] == "update")      # noqa: E731
    results = iter_apply(s2p, dry_run=True, events=Counting())
    first = next(results)
    assert first.path == str(s2p / "plane0") and seen[0] == ("total", n0 + n1)
    assert classified() == n0                                       # plane1 not classified yet
    rest = list(results)
    assert [r.path for r in rest] == [str(s2p / "plane1")]
    assert classified() == n0 + n1 and ("close",) in seen
    kind, totals = seen[-1]
    assert kind == "finished" and (totals.units, totals.rois, totals.written_units) == (2, n0 + n1, 0)
    assert totals.accepted == int(first.accepted.sum() + rest[0].accepted.sum())
    assert totals.done_line.startswith(f"done: 2 planes, {n0 + n1} ROIs") and totals.lines == ()


def test_import_roicurate_stays_light():
    code = ("import sys, roicurate; roicurate.apply; roicurate.UnitResult; import roicurate.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_public_api_is_documented():
    """Every public function and result class has a docstring that names its parameters (docs/python-api.md
    renders them with autodoc)."""
    import inspect
    for name in ("apply", "predict", "revert", "status"):
        f = getattr(roicurate, name)
        doc = inspect.getdoc(f)
        assert "Returns:" in doc and "Raises:" in doc, name
        for param in inspect.signature(f).parameters:
            assert param in doc, (name, param)
    for cls in (roicurate.UnitResult, roicurate.RevertResult, roicurate.StatusResult):
        doc = inspect.getdoc(cls)
        for field in cls.__dataclass_fields__:
            assert field in doc, (cls.__name__, field)
    assert {"apply", "predict", "revert", "status", "RoicurateError"} <= set(dir(roicurate))
